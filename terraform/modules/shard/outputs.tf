output "shard_id" {
  description = "Shard id (s1, s2, ...)."
  value       = var.shard_id
}

output "identifier" {
  description = "RDS instance identifier (the DBInstanceIdentifier dimension of its CloudWatch metrics)."
  value       = aws_db_instance.this.identifier
}

output "address" {
  description = "Host name of the shard."
  value       = aws_db_instance.this.address
}

output "dsn_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the shard's postgres:// URL."
  value       = aws_secretsmanager_secret.dsn.arn
}

output "replication_slots" {
  description = "max_replication_slots set on the shard (computed from max_concurrent_moves and the head-room)."
  value       = local.replication_slots
}
