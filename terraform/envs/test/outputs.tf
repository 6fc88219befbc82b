output "router_url" {
  description = "Payments API (internal load balancer; reachable from the VPC, client_cidrs and ECS tasks)."
  value       = module.services.router_url
}

output "edge_url" {
  description = "Edge read API (internal load balancer)."
  value       = module.services.edge_url
}

output "rebalancer_url" {
  description = "Rebalancer admin API and dashboard (internal load balancer; HTTP Basic with the admin key as password)."
  value       = module.services.rebalancer_url
}

output "report_bucket" {
  description = "S3 bucket of load test reports (runs/<scenario>-<unix time>/report.json and report.html)."
  value       = module.loadtest.report_bucket
}

output "ecr_repository_url" {
  description = "Push the shardline image here (tag = image_tag)."
  value       = module.services.repository_url
}

output "ecs_cluster" {
  description = "ECS cluster name (aws ecs run-task --cluster)."
  value       = module.services.cluster_name
}

output "loadtest_task_definition" {
  description = "Task definition of the load test (aws ecs run-task --task-definition)."
  value       = module.loadtest.task_definition_arn
}

output "bootstrap_task_definition" {
  description = "Task definition of the one-off bootstrap task (shardline init; idempotent, run it on every deploy)."
  value       = module.services.bootstrap_task_definition_arn
}

output "ops_network_configuration" {
  description = "awsvpcConfiguration for one-off tasks (load test, bootstrap): private subnets and the ops security group."
  value = {
    subnets        = module.network.private_subnet_ids
    securityGroups = [module.network.security_group_ids["ops"]]
    assignPublicIp = "DISABLED"
  }
}

output "admin_key_secret_arn" {
  description = "Secrets Manager ARN of the admin API key (read it with aws secretsmanager get-secret-value; never printed)."
  value       = module.services.admin_key_secret_arn
}

output "catalog_url_secret_arn" {
  description = "Secrets Manager ARN of the catalog URL."
  value       = module.catalog.url_secret_arn
}

output "shard_dsn_secret_arns" {
  description = "Shard id => Secrets Manager ARN of its URL."
  value       = { for id, s in module.shard : id => s.dsn_secret_arn }
}

output "nats_url" {
  description = "NATS client URL of the JetStream cluster."
  value       = module.nats.url
}

output "loadtest_log_group" {
  description = "Log group of the load test task."
  value       = module.loadtest.log_group
}

output "prometheus_query_url" {
  description = "Amazon Managed Prometheus query endpoint."
  value       = module.observability.amp_query_url
}

output "alarm_topic_arn" {
  description = "SNS topic of every alarm."
  value       = module.observability.alarm_topic_arn
}
