output "identifier" {
  description = "RDS instance identifier of the catalog."
  value       = aws_db_instance.this.identifier
}

output "address" {
  description = "Host name of the catalog."
  value       = aws_db_instance.this.address
}

output "url_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the catalog's postgres:// URL."
  value       = aws_secretsmanager_secret.url.arn
}
