output "report_bucket" {
  description = "S3 bucket holding load test reports under runs/<scenario>-<unix time>/."
  value       = aws_s3_bucket.reports.id
}

output "task_definition_arn" {
  description = "Task definition to start with aws ecs run-task."
  value       = aws_ecs_task_definition.loadtest.arn
}

output "log_group" {
  description = "Log group of the load test task (its printed summary and verifier verdict)."
  value       = aws_cloudwatch_log_group.loadtest.name
}
