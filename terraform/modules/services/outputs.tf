output "router_url" {
  description = "URL of the router's internal load balancer (payments API)."
  value       = "http://${aws_lb.this["router"].dns_name}"
}

output "edge_url" {
  description = "URL of the edges' internal load balancer (reads)."
  value       = "http://${aws_lb.this["edge"].dns_name}"
}

output "rebalancer_url" {
  description = "URL of the rebalancer admin API and dashboard (internal load balancer)."
  value       = "http://${aws_lb.this["rebalancer"].dns_name}"
}

output "alb_arn_suffixes" {
  description = "ARN suffix per load balancer (router, edge, rebalancer): the LoadBalancer dimension of ALB metrics."
  value       = { for k, lb in aws_lb.this : k => lb.arn_suffix }
}

output "cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "cluster_arn" {
  description = "ARN of the ECS cluster."
  value       = aws_ecs_cluster.this.arn
}

output "repository_url" {
  description = "ECR repository to push the shardline image to."
  value       = aws_ecr_repository.shardline.repository_url
}

output "image" {
  description = "The shardline image reference the tasks run."
  value       = local.image
}

output "execution_role_arn" {
  description = "Task execution role (reused by the loadtest task)."
  value       = aws_iam_role.execution.arn
}

output "bootstrap_task_definition_arn" {
  description = "Task definition of the one-off bootstrap task (shardline init: migrations, shards, range map, admin key; idempotent, run it on every deploy)."
  value       = aws_ecs_task_definition.service["bootstrap"].arn
}

output "rebalancer_log_group" {
  description = "Log group of the rebalancer (move failures are counted from it)."
  value       = aws_cloudwatch_log_group.service["rebalancer"].name
}

output "log_groups" {
  description = "Log group name per component."
  value       = { for k, g in aws_cloudwatch_log_group.service : k => g.name }
}

output "admin_key_secret_arn" {
  description = "Secrets Manager ARN of the admin API key (the value is never an output)."
  value       = aws_secretsmanager_secret.admin_key.arn
}
