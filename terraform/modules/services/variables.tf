variable "name" {
  description = "Name prefix of every resource (e.g. shardline-test)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "image_tag" {
  description = "Tag of the shardline image in this environment's ECR repository (pushed before apply; tags are immutable)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag)) && var.image_tag != "latest"
    error_message = "image_tag must be a valid Docker tag other than latest (tags are immutable; use a commit id)."
  }
}

variable "subnet_ids" {
  description = "Private subnets of the tasks and the internal load balancers."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must name at least two subnets."
  }
}

variable "security_group_ids" {
  description = "Security group ID per role from the network module (alb, router, edge, rebalancer, replicator, ops)."
  type        = map(string)

  validation {
    condition     = alltrue([for k in ["alb", "router", "edge", "rebalancer", "replicator", "ops"] : contains(keys(var.security_group_ids), k)])
    error_message = "security_group_ids must contain alb, router, edge, rebalancer, replicator and ops."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the image repository, logs, the policy parameter and ECS Exec sessions."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "catalog_url_secret_arn" {
  description = "Secrets Manager ARN of the catalog's postgres:// URL (injected as SHARDLINE_CATALOG_URL)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:", var.catalog_url_secret_arn))
    error_message = "catalog_url_secret_arn must be a Secrets Manager ARN."
  }
}

variable "shard_dsn_secret_arns" {
  description = "Shard id => Secrets Manager ARN of its postgres:// URL; one replicator runs per shard."
  type        = map(string)

  validation {
    condition     = length(var.shard_dsn_secret_arns) >= 1 && alltrue([for id, arn in var.shard_dsn_secret_arns : can(regex("^s[0-9]{1,3}$", id)) && can(regex("^arn:aws[a-z-]*:secretsmanager:", arn))])
    error_message = "shard_dsn_secret_arns must map shard ids (s1, s2, ...) to Secrets Manager ARNs."
  }
}

variable "nats_url" {
  description = "NATS client URL (one server: nats://host:4222; the client discovers the rest of the cluster)."
  type        = string

  validation {
    condition     = can(regex("^nats://", var.nats_url))
    error_message = "nats_url must start with nats://."
  }
}

variable "otlp_endpoint" {
  description = "OTLP endpoint the services export traces to (OTEL_EXPORTER_OTLP_ENDPOINT); empty: no export."
  type        = string
  default     = ""

  validation {
    condition     = var.otlp_endpoint == "" || can(regex("^https?://", var.otlp_endpoint))
    error_message = "otlp_endpoint must be empty or an http(s):// URL."
  }
}

variable "amp_remote_write_url" {
  description = "Amazon Managed Service for Prometheus remote-write URL the metrics sidecars send to."
  type        = string

  validation {
    condition     = can(regex("^https://aps-workspaces\\.[a-z0-9-]+\\.amazonaws\\.com/workspaces/ws-[0-9a-f-]+/api/v1/remote_write$", var.amp_remote_write_url))
    error_message = "amp_remote_write_url must be an AMP workspace remote_write URL."
  }
}

variable "amp_workspace_arn" {
  description = "ARN of the AMP workspace (the task role may remote-write to it only)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:aps:", var.amp_workspace_arn))
    error_message = "amp_workspace_arn must be an AMP workspace ARN."
  }
}

variable "collector_image" {
  description = "AWS Distro for OpenTelemetry collector image (through the ECR pull-through cache) that scrapes each task's /metrics."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com/.+:.+$", var.collector_image))
    error_message = "collector_image must be an ECR image reference with a tag."
  }
}

variable "policy_config_toml" {
  description = "The rebalancer's policy knobs (TOML, docs/rebalancer.md); stored as an encrypted SSM parameter and passed with --policy-config."
  type        = string
  default     = "interval = 10\nmax_concurrent_moves = 2\nbyte_budget_per_hour = 4294967296\n"

  validation {
    condition     = length(var.policy_config_toml) < 4096
    error_message = "policy_config_toml must be shorter than 4096 characters (an SSM standard parameter)."
  }
}

variable "router" {
  description = "Router tasks: Fargate CPU units and memory (MiB), autoscaling bounds and CPU target (percent)."
  type = object({
    cpu        = number
    memory     = number
    min_count  = number
    max_count  = number
    cpu_target = number
  })
  default = { cpu = 1024, memory = 2048, min_count = 2, max_count = 8, cpu_target = 60 }

  validation {
    condition     = var.router.min_count >= 1 && var.router.max_count >= var.router.min_count && var.router.cpu_target >= 20 && var.router.cpu_target <= 90 && contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.router.cpu)
    error_message = "router needs min_count >= 1, max_count >= min_count, cpu_target 20-90 and a Fargate cpu value."
  }
}

variable "edge" {
  description = "Edge tasks: CPU, memory (MiB), ephemeral storage for the redb store (GiB, 21-200), autoscaling bounds and CPU target."
  type = object({
    cpu        = number
    memory     = number
    storage_gb = number
    min_count  = number
    max_count  = number
    cpu_target = number
  })
  default = { cpu = 1024, memory = 4096, storage_gb = 100, min_count = 2, max_count = 6, cpu_target = 60 }

  validation {
    condition     = var.edge.min_count >= 1 && var.edge.max_count >= var.edge.min_count && var.edge.storage_gb >= 21 && var.edge.storage_gb <= 200 && var.edge.cpu_target >= 20 && var.edge.cpu_target <= 90 && contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.edge.cpu)
    error_message = "edge needs min_count >= 1, max_count >= min_count, storage_gb 21-200, cpu_target 20-90 and a Fargate cpu value."
  }
}

variable "rebalancer" {
  description = "Rebalancer tasks: CPU, memory (MiB) and count (2 = a leader and a standby; the catalog advisory lock elects one)."
  type = object({
    cpu    = number
    memory = number
    count  = number
  })
  default = { cpu = 512, memory = 1024, count = 2 }

  validation {
    condition     = var.rebalancer.count >= 1 && var.rebalancer.count <= 3 && contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.rebalancer.cpu)
    error_message = "rebalancer.count must be 1-3 and cpu a Fargate cpu value."
  }
}

variable "replicator" {
  description = "Replicator tasks (one per shard): CPU and memory (MiB)."
  type = object({
    cpu    = number
    memory = number
  })
  default = { cpu = 512, memory = 1024 }

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.replicator.cpu) && var.replicator.memory >= 512
    error_message = "replicator needs a Fargate cpu value and at least 512 MiB."
  }
}

variable "rust_log" {
  description = "RUST_LOG filter of every service."
  type        = string
  default     = "info"

  validation {
    condition     = length(var.rust_log) > 0
    error_message = "rust_log must not be empty."
  }
}

variable "deletion_protection" {
  description = "Deletion protection of the load balancers; set false and apply before terraform destroy."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Retention of the services' log groups, in days."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the tasks; must match the image (X86_64 for a plain docker build on x86, ARM64 for a linux/arm64 build on Graviton, about 20 % cheaper)."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "router_health_path" {
  description = "Target-group health check of the routers. /readyz (default) fails only while the range map is not loaded or no shard answers (one shard down is reported as degraded, still ready); /healthz checks the process only."
  type        = string
  default     = "/readyz"

  validation {
    condition     = contains(["/readyz", "/healthz"], var.router_health_path)
    error_message = "router_health_path must be /readyz or /healthz."
  }
}

variable "ranges_per_shard" {
  description = "Ranges per shard of the even range map the bootstrap task seeds into a catalog that has none (ignored afterwards)."
  type        = number
  default     = 4

  validation {
    condition     = var.ranges_per_shard >= 1 && var.ranges_per_shard <= 256 && floor(var.ranges_per_shard) == var.ranges_per_shard
    error_message = "ranges_per_shard must be a whole number from 1 to 256."
  }
}

variable "stream_replicas" {
  description = "Replicas of the CDC stream SHARDLINE_CDC in the JetStream cluster (at most its node count); replicators and edges create or update the stream with it."
  type        = number

  validation {
    condition     = var.stream_replicas >= 1 && var.stream_replicas <= 5 && floor(var.stream_replicas) == var.stream_replicas
    error_message = "stream_replicas must be a whole number from 1 to 5."
  }
}

variable "stream_max_age" {
  description = "Retention of the CDC stream: messages older than this (e.g. 30d, 72h) are removed; empty keeps them forever. An edge that starts empty replays the stream, so with a limit it lacks older rows."
  type        = string
  default     = ""

  validation {
    condition     = var.stream_max_age == "" || can(regex("^[1-9][0-9]{0,4}[hd]$", var.stream_max_age))
    error_message = "stream_max_age must be empty or a whole number of hours or days such as 72h or 30d."
  }
}
