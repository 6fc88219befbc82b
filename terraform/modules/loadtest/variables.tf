variable "name" {
  description = "Name prefix of every resource (e.g. shardline-test)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "image" {
  description = "The shardline image reference (from the services module)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com/.+:.+$", var.image))
    error_message = "image must be an ECR image reference with a tag."
  }
}

variable "aws_cli_image" {
  description = "AWS CLI v2 image (through the ECR pull-through cache) whose container uploads the report directory to S3 after the run."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com/.+:.+$", var.aws_cli_image))
    error_message = "aws_cli_image must be an ECR image reference with a tag."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the task; must match the shardline image."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the report bucket and the log group."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "catalog_url_secret_arn" {
  description = "Secrets Manager ARN of the catalog URL (the verifier reads the catalog and, through it, every shard)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:", var.catalog_url_secret_arn))
    error_message = "catalog_url_secret_arn must be a Secrets Manager ARN."
  }
}

variable "admin_key_secret_arn" {
  description = "Secrets Manager ARN of the admin API key the load test authenticates with (SHARDLINE_API_KEY)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:", var.admin_key_secret_arn))
    error_message = "admin_key_secret_arn must be a Secrets Manager ARN."
  }
}

variable "router_url" {
  description = "Router URL (http://, the internal load balancer)."
  type        = string

  validation {
    condition     = can(regex("^http://", var.router_url))
    error_message = "router_url must be an http:// URL (shardline loadtest accepts no other)."
  }
}

variable "edge_url" {
  description = "Edge URL (http://, the internal load balancer)."
  type        = string

  validation {
    condition     = can(regex("^http://", var.edge_url))
    error_message = "edge_url must be an http:// URL."
  }
}

variable "rebalancer_url" {
  description = "Rebalancer admin API URL (for scenarios with moves and the hotspot scenario)."
  type        = string

  validation {
    condition     = can(regex("^http://", var.rebalancer_url))
    error_message = "rebalancer_url must be an http:// URL."
  }
}

variable "scenario" {
  description = "Default scenario of the task (a preset that runs against a remote system: steady, move-under-load, hotspot); override per run with containerOverrides."
  type        = string
  default     = "steady"

  validation {
    condition     = contains(["steady", "move-under-load", "hotspot"], var.scenario)
    error_message = "scenario must be steady, move-under-load or hotspot (the fault scenarios need --local)."
  }
}

variable "cpu" {
  description = "Fargate CPU units of the load generator task."
  type        = number
  default     = 4096

  validation {
    condition     = contains([1024, 2048, 4096, 8192, 16384], var.cpu)
    error_message = "cpu must be 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "memory" {
  description = "Memory of the load generator task in MiB."
  type        = number
  default     = 8192

  validation {
    condition     = var.memory >= 2048 && var.memory <= 122880
    error_message = "memory must be between 2048 and 122880 MiB."
  }
}

variable "report_retention_days" {
  description = "Days a report object is kept in the bucket (noncurrent versions: 7 days more)."
  type        = number
  default     = 90

  validation {
    condition     = var.report_retention_days >= 1 && var.report_retention_days <= 3650
    error_message = "report_retention_days must be between 1 and 3650."
  }
}

variable "force_destroy_reports" {
  description = "Let terraform destroy delete a report bucket that still holds reports."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Retention of the load test log group, in days."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts."
  }
}
