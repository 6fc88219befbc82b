output "amp_workspace_arn" {
  description = "ARN of the Prometheus workspace."
  value       = aws_prometheus_workspace.this.arn
}

output "amp_remote_write_url" {
  description = "Remote-write URL of the Prometheus workspace (for the collector sidecars)."
  value       = "${aws_prometheus_workspace.this.prometheus_endpoint}api/v1/remote_write"
}

output "amp_query_url" {
  description = "Query endpoint of the Prometheus workspace (Grafana data source, awscurl)."
  value       = aws_prometheus_workspace.this.prometheus_endpoint
}

output "alarm_topic_arn" {
  description = "SNS topic every alarm publishes to."
  value       = aws_sns_topic.alarms.arn
}
