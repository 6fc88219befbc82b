variable "name" {
  description = "Name prefix of every resource (e.g. shardline-test)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "shard_id" {
  description = "Shard id as registered in the catalog (s1, s2, ...)."
  type        = string

  validation {
    condition     = can(regex("^s[0-9]{1,3}$", var.shard_id))
    error_message = "shard_id must look like s1, s2, ... s999."
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
  description = "The shard security group (reachable from the services and from other shards only)."
  type        = string

  validation {
    condition     = can(regex("^sg-[0-9a-f]+$", var.security_group_id))
    error_message = "security_group_id must be a security group ID (sg-...)."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for storage, Performance Insights, logs and the DSN secret."
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
  description = "RDS instance class of the shard (memory-optimised Graviton recommended, e.g. db.r7g.2xlarge)."
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
  description = "Storage autoscaling ceiling in GiB (moves copy whole ranges; leave head-room above the data size)."
  type        = number
  default     = 500

  validation {
    condition     = var.max_allocated_storage_gb >= 20 && var.max_allocated_storage_gb <= 65536
    error_message = "max_allocated_storage_gb must be between 20 and 65536."
  }
}

variable "iops" {
  description = "Provisioned gp3 IOPS (null: the gp3 baseline, 3000 below 400 GiB and 12000 at or above)."
  type        = number
  default     = null

  validation {
    condition     = var.iops == null || try(var.iops >= 3000 && var.iops <= 64000, false)
    error_message = "iops must be null or between 3000 and 64000."
  }
}

variable "storage_throughput" {
  description = "Provisioned gp3 throughput in MiB/s (null: the gp3 baseline). Only settable with storage of 400 GiB or more."
  type        = number
  default     = null

  validation {
    condition     = var.storage_throughput == null || try(var.storage_throughput >= 125 && var.storage_throughput <= 4000, false)
    error_message = "storage_throughput must be null or between 125 and 4000."
  }
}

variable "multi_az" {
  description = "Run a synchronous standby in another zone (doubles the shard's cost)."
  type        = bool
  default     = false
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
  description = "Allow IAM database authentication (in addition to the password in the DSN secret)."
  type        = bool
  default     = true
}

variable "require_tls" {
  description = "Set rds.force_ssl=1. Leave false until Shardline's PostgreSQL clients speak TLS (today they connect without it; docs/cloud.md)."
  type        = bool
  default     = false
}

variable "max_concurrent_moves" {
  description = "The policy's max_concurrent_moves (cluster-wide); replication slots and workers are sized so that every one of them may involve this shard."
  type        = number
  default     = 2

  validation {
    condition     = var.max_concurrent_moves >= 1 && var.max_concurrent_moves <= 16
    error_message = "max_concurrent_moves must be between 1 and 16."
  }
}

variable "replication_headroom" {
  description = "Extra replication slots and WAL senders beyond the computed need (orphans awaiting reconciliation, manual inspection)."
  type        = number
  default     = 4

  validation {
    condition     = var.replication_headroom >= 0 && var.replication_headroom <= 64
    error_message = "replication_headroom must be between 0 and 64."
  }
}

variable "max_slot_wal_keep_size_mb" {
  description = "WAL a lagging or orphaned slot may retain before it is invalidated (protects the shard's disk; -1 = unlimited)."
  type        = number
  default     = 102400

  validation {
    condition     = var.max_slot_wal_keep_size_mb == -1 || var.max_slot_wal_keep_size_mb >= 1024
    error_message = "max_slot_wal_keep_size_mb must be -1 or at least 1024."
  }
}

variable "log_retention_days" {
  description = "Retention of the shard's exported PostgreSQL logs, in days."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts."
  }
}
