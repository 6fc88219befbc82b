variable "name" {
  description = "Name prefix of every resource (e.g. shardline-test)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "subnet_ids" {
  description = "Private subnets of the DB subnet group (at least two availability zones)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must name at least two subnets (RDS requires two availability zones)."
  }
}

variable "security_group_id" {
  description = "The catalog security group (reachable from the services and the ops tasks only)."
  type        = string

  validation {
    condition     = can(regex("^sg-[0-9a-f]+$", var.security_group_id))
    error_message = "security_group_id must be a security group ID (sg-...)."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for storage, Performance Insights, logs and the URL secret."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "monitoring_role_arn" {
  description = "IAM role RDS Enhanced Monitoring publishes with."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::", var.monitoring_role_arn))
    error_message = "monitoring_role_arn must be an IAM role ARN."
  }
}

variable "engine_version" {
  description = "PostgreSQL version on RDS (15 or newer: the shard schema and row-filtered publications need it)."
  type        = string
  default     = "16.8"

  validation {
    condition     = can(regex("^(1[5-9])\\.[0-9]+$", var.engine_version))
    error_message = "engine_version must be a PostgreSQL 15+ minor version such as 16.8."
  }
}

variable "instance_class" {
  description = "RDS instance class of the catalog (range map, moves, load samples, decisions: small and hot)."
  type        = string
  default     = "db.r7g.large"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.instance_class))
    error_message = "instance_class must be an RDS class such as db.r7g.large."
  }
}

variable "allocated_storage_gb" {
  description = "Initial gp3 storage in GiB."
  type        = number
  default     = 100

  validation {
    condition     = var.allocated_storage_gb >= 20 && var.allocated_storage_gb <= 65536
    error_message = "allocated_storage_gb must be between 20 and 65536."
  }
}

variable "max_allocated_storage_gb" {
  description = "Storage autoscaling ceiling in GiB."
  type        = number
  default     = 500

  validation {
    condition     = var.max_allocated_storage_gb >= 20 && var.max_allocated_storage_gb <= 65536
    error_message = "max_allocated_storage_gb must be between 20 and 65536."
  }
}

variable "multi_az" {
  description = "Run a synchronous standby in another zone. The catalog holds the range map and the move state machine: keep it true."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Automated backup retention in days."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 1 and 35."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the database; set false and apply before terraform destroy."
  type        = bool
  default     = true
}

variable "iam_database_authentication" {
  description = "Allow IAM database authentication (in addition to the password in the URL secret)."
  type        = bool
  default     = true
}

variable "require_tls" {
  description = "Set rds.force_ssl=1. Leave false until Shardline's PostgreSQL clients speak TLS (today they connect without it; docs/cloud.md)."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Retention of the catalog's exported PostgreSQL logs, in days."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts."
  }
}
