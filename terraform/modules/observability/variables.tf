variable "name" {
  description = "Name prefix of every resource (e.g. shardline-test)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the Prometheus workspace and the alarm topic."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "shard_identifiers" {
  description = "Shard id => RDS instance identifier; each gets replication-slot lag, WAL disk and free storage alarms."
  type        = map(string)

  validation {
    condition     = length(var.shard_identifiers) >= 1
    error_message = "shard_identifiers must name at least one shard."
  }
}

variable "catalog_identifier" {
  description = "RDS instance identifier of the catalog."
  type        = string

  validation {
    condition     = length(var.catalog_identifier) > 0
    error_message = "catalog_identifier must not be empty."
  }
}

variable "alb_arn_suffixes" {
  description = "Load balancer name => ARN suffix (router, edge, rebalancer) for the 5xx alarms."
  type        = map(string)

  validation {
    condition     = alltrue([for k in ["router", "edge"] : contains(keys(var.alb_arn_suffixes), k)])
    error_message = "alb_arn_suffixes must contain router and edge."
  }
}

variable "rebalancer_log_group" {
  description = "Log group of the rebalancer (JSON logs); aborted moves and failed move steps are counted from it."
  type        = string

  validation {
    condition     = length(var.rebalancer_log_group) > 0
    error_message = "rebalancer_log_group must not be empty."
  }
}

variable "alarm_email" {
  description = "E-mail address subscribed to the alarm topic (empty: no subscription; subscribe something else to the topic output)."
  type        = string
  default     = ""

  validation {
    condition     = var.alarm_email == "" || can(regex("^[^@ ]+@[^@ ]+\\.[^@ ]+$", var.alarm_email))
    error_message = "alarm_email must be empty or an e-mail address."
  }
}

variable "replication_lag_alarm_bytes" {
  description = "Alarm when a shard's oldest replication slot (the CDC slot or a move's subscription) retains more WAL than this."
  type        = number
  default     = 1073741824

  validation {
    condition     = var.replication_lag_alarm_bytes >= 1048576
    error_message = "replication_lag_alarm_bytes must be at least 1 MiB."
  }
}

variable "edge_staleness_alarm_seconds" {
  description = "Alarm when an edge has applied nothing newer than this many seconds behind its shards (shardline_edge_staleness_seconds)."
  type        = number
  default     = 30

  validation {
    condition     = var.edge_staleness_alarm_seconds >= 1
    error_message = "edge_staleness_alarm_seconds must be at least 1."
  }
}

variable "error_rate_alarm" {
  description = "Alarm when the share of router responses that are 5xx over 5 minutes exceeds this (0-1)."
  type        = number
  default     = 0.01

  validation {
    condition     = var.error_rate_alarm > 0 && var.error_rate_alarm < 1
    error_message = "error_rate_alarm must be between 0 and 1."
  }
}

variable "alb_5xx_alarm_count" {
  description = "Alarm when a load balancer sees more target or load-balancer 5xx responses than this in a minute, three minutes running."
  type        = number
  default     = 50

  validation {
    condition     = var.alb_5xx_alarm_count >= 1
    error_message = "alb_5xx_alarm_count must be at least 1."
  }
}
