variable "region" {
  description = "AWS region of the environment."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as us-east-1."
  }
}

variable "name" {
  description = "Environment name, the prefix of every resource."
  type        = string
  default     = "shardline-test"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}[a-z0-9]$", var.name))
    error_message = "name must be 3-22 characters of lower-case letters, digits and dashes, starting with a letter (load balancer names add a suffix and are limited to 32)."
  }
}

variable "image_tag" {
  description = "Tag of the shardline image pushed to the environment's ECR repository (terraform/README.md: build and push)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag)) && var.image_tag != "latest"
    error_message = "image_tag must be a valid Docker tag other than latest (use a commit id)."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture the shardline image was built for (X86_64 or ARM64)."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be a valid IPv4 CIDR."
  }
}

variable "client_cidrs" {
  description = "CIDRs (VPN, peered networks) allowed to reach the internal load balancers; the ops tasks always can."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.client_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "client_cidrs must be IPv4 CIDRs other than 0.0.0.0/0."
  }
}

variable "shard_count" {
  description = "Number of shards (s1..sN), each its own RDS for PostgreSQL instance with a replicator."
  type        = number
  default     = 3

  validation {
    condition     = var.shard_count >= 2 && var.shard_count <= 64 && floor(var.shard_count) == var.shard_count
    error_message = "shard_count must be a whole number between 2 and 64 (a move needs two shards)."
  }
}

variable "shard_instance_class" {
  description = "RDS instance class of every shard."
  type        = string
  default     = "db.r7g.large"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.shard_instance_class))
    error_message = "shard_instance_class must be an RDS class such as db.r7g.2xlarge."
  }
}

variable "shard_storage_gb" {
  description = "Initial gp3 storage of every shard in GiB."
  type        = number
  default     = 100

  validation {
    condition     = var.shard_storage_gb >= 20 && var.shard_storage_gb <= 65536
    error_message = "shard_storage_gb must be between 20 and 65536."
  }
}

variable "shard_max_storage_gb" {
  description = "Storage autoscaling ceiling of every shard in GiB (at least shard_storage_gb)."
  type        = number
  default     = 500

  validation {
    condition     = var.shard_max_storage_gb >= 20 && var.shard_max_storage_gb <= 65536
    error_message = "shard_max_storage_gb must be between 20 and 65536."
  }
}

variable "shard_iops" {
  description = "Provisioned gp3 IOPS per shard (null: gp3 baseline)."
  type        = number
  default     = null

  validation {
    condition     = var.shard_iops == null || try(var.shard_iops >= 3000 && var.shard_iops <= 64000, false)
    error_message = "shard_iops must be null or between 3000 and 64000."
  }
}

variable "shard_throughput" {
  description = "Provisioned gp3 throughput per shard in MiB/s (null: gp3 baseline; needs 400 GiB or more)."
  type        = number
  default     = null

  validation {
    condition     = var.shard_throughput == null || try(var.shard_throughput >= 125 && var.shard_throughput <= 4000, false)
    error_message = "shard_throughput must be null or between 125 and 4000."
  }
}

variable "shard_multi_az" {
  description = "Give every shard a synchronous standby (doubles the shards' cost)."
  type        = bool
  default     = false
}

variable "catalog_instance_class" {
  description = "RDS instance class of the catalog (Multi-AZ)."
  type        = string
  default     = "db.r7g.large"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.catalog_instance_class))
    error_message = "catalog_instance_class must be an RDS class such as db.r7g.large."
  }
}

variable "catalog_storage_gb" {
  description = "gp3 storage of the catalog in GiB."
  type        = number
  default     = 50

  validation {
    condition     = var.catalog_storage_gb >= 20 && var.catalog_storage_gb <= 16384
    error_message = "catalog_storage_gb must be between 20 and 16384."
  }
}

variable "postgres_version" {
  description = "PostgreSQL version of the catalog and the shards (15 or newer)."
  type        = string
  default     = "16.8"

  validation {
    condition     = can(regex("^(1[5-9])\\.[0-9]+$", var.postgres_version))
    error_message = "postgres_version must be a PostgreSQL 15+ minor version such as 16.8."
  }
}

variable "backup_retention_days" {
  description = "Automated backup retention of every database, in days."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 1 and 35."
  }
}

variable "deletion_protection" {
  description = "Deletion protection of the databases and load balancers; set false and apply before terraform destroy."
  type        = bool
  default     = true
}

variable "router_count" {
  description = "Router tasks: minimum and maximum of the autoscaled service."
  type        = object({ min = number, max = number })
  default     = { min = 2, max = 8 }

  validation {
    condition     = var.router_count.min >= 1 && var.router_count.max >= var.router_count.min && var.router_count.max <= 100
    error_message = "router_count needs 1 <= min <= max <= 100."
  }
}

variable "router_size" {
  description = "Fargate CPU units and memory (MiB) of a router task."
  type        = object({ cpu = number, memory = number })
  default     = { cpu = 1024, memory = 2048 }

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.router_size.cpu) && var.router_size.memory >= 512
    error_message = "router_size.cpu must be a Fargate CPU value and memory at least 512 MiB."
  }
}

variable "edge_count" {
  description = "Edge tasks: minimum and maximum of the autoscaled service."
  type        = object({ min = number, max = number })
  default     = { min = 2, max = 6 }

  validation {
    condition     = var.edge_count.min >= 1 && var.edge_count.max >= var.edge_count.min && var.edge_count.max <= 50
    error_message = "edge_count needs 1 <= min <= max <= 50."
  }
}

variable "edge_size" {
  description = "Fargate CPU units, memory (MiB) and ephemeral storage for the store (GiB, 21-200) of an edge task."
  type        = object({ cpu = number, memory = number, storage_gb = number })
  default     = { cpu = 1024, memory = 4096, storage_gb = 100 }

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.edge_size.cpu) && var.edge_size.storage_gb >= 21 && var.edge_size.storage_gb <= 200
    error_message = "edge_size.cpu must be a Fargate CPU value and storage_gb 21-200."
  }
}

variable "nats_instance_type" {
  description = "EC2 instance type of the three NATS nodes."
  type        = string
  default     = "m7g.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.nats_instance_type))
    error_message = "nats_instance_type must be an EC2 instance type."
  }
}

variable "nats_volume_gb" {
  description = "gp3 JetStream volume per NATS node in GiB."
  type        = number
  default     = 200

  validation {
    condition     = var.nats_volume_gb >= 20 && var.nats_volume_gb <= 16384
    error_message = "nats_volume_gb must be between 20 and 16384."
  }
}

variable "nats_version" {
  description = "Tag of the NATS server image (public ECR docker/library/nats, 2.10 or newer)."
  type        = string
  default     = "2.11.4"

  validation {
    condition     = can(regex("^2\\.(1[0-9]|[2-9][0-9])\\.[0-9]+", var.nats_version))
    error_message = "nats_version must be a NATS 2.10+ tag such as 2.11.4."
  }
}

variable "collector_version" {
  description = "Tag of the AWS Distro for OpenTelemetry collector image (public ECR aws-observability/aws-otel-collector)."
  type        = string
  default     = "v0.43.3"

  validation {
    condition     = can(regex("^v[0-9]+\\.[0-9]+\\.[0-9]+$", var.collector_version))
    error_message = "collector_version must look like v0.43.3."
  }
}

variable "aws_cli_version" {
  description = "Tag of the AWS CLI image that uploads load test reports (public ECR aws-cli/aws-cli)."
  type        = string
  default     = "2.27.0"

  validation {
    condition     = can(regex("^2\\.[0-9]+\\.[0-9]+$", var.aws_cli_version))
    error_message = "aws_cli_version must be an AWS CLI v2 version such as 2.27.0."
  }
}

variable "create_pull_through_cache_rule" {
  description = "Create the account's ECR pull-through cache rule for public ECR (prefix ecr-public); false when the account already has one."
  type        = bool
  default     = true
}

variable "policy_max_concurrent_moves" {
  description = "The rebalancer policy's max_concurrent_moves; the shards' replication slots and workers are sized from it."
  type        = number
  default     = 2

  validation {
    condition     = var.policy_max_concurrent_moves >= 1 && var.policy_max_concurrent_moves <= 16
    error_message = "policy_max_concurrent_moves must be between 1 and 16."
  }
}

variable "policy_byte_budget_gib_per_hour" {
  description = "The policy's byte_budget_per_hour, in GiB: how much data autonomous moves may copy per hour."
  type        = number
  default     = 4

  validation {
    condition     = var.policy_byte_budget_gib_per_hour >= 1 && var.policy_byte_budget_gib_per_hour <= 4096
    error_message = "policy_byte_budget_gib_per_hour must be between 1 and 4096."
  }
}

variable "policy_extra_toml" {
  description = "More policy knobs as TOML lines (docs/rebalancer.md), e.g. \"tolerance = 0.15\"; must not repeat max_concurrent_moves or byte_budget_per_hour."
  type        = string
  default     = ""

  validation {
    condition     = !can(regex("(?m)^\\s*(max_concurrent_moves|byte_budget_per_hour)\\s*=", var.policy_extra_toml))
    error_message = "policy_extra_toml must not set max_concurrent_moves or byte_budget_per_hour (they have their own variables)."
  }
}

variable "otlp_endpoint" {
  description = "OTLP endpoint for traces (OTEL_EXPORTER_OTLP_ENDPOINT of every service); empty: no export."
  type        = string
  default     = ""

  validation {
    condition     = var.otlp_endpoint == "" || can(regex("^https?://", var.otlp_endpoint))
    error_message = "otlp_endpoint must be empty or an http(s):// URL."
  }
}

variable "otlp_cidrs" {
  description = "CIDRs of the OTLP collector (egress 4317-4318 from the services); empty when otlp_endpoint is empty."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.otlp_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "otlp_cidrs must be IPv4 CIDRs other than 0.0.0.0/0."
  }
}

variable "alarm_email" {
  description = "E-mail subscribed to the alarm topic (empty: none)."
  type        = string
  default     = ""

  validation {
    condition     = var.alarm_email == "" || can(regex("^[^@ ]+@[^@ ]+\\.[^@ ]+$", var.alarm_email))
    error_message = "alarm_email must be empty or an e-mail address."
  }
}

variable "loadtest_size" {
  description = "Fargate CPU units and memory (MiB) of the load test task."
  type        = object({ cpu = number, memory = number })
  default     = { cpu = 4096, memory = 8192 }

  validation {
    condition     = contains([1024, 2048, 4096, 8192, 16384], var.loadtest_size.cpu) && var.loadtest_size.memory >= 2048
    error_message = "loadtest_size.cpu must be 1024-16384 (a Fargate value) and memory at least 2048 MiB."
  }
}

variable "force_destroy_reports" {
  description = "Let terraform destroy delete the report bucket with its reports (download them first)."
  type        = bool
  default     = false
}

variable "router_health_path" {
  description = "Health check path of the router target group: /readyz (map loaded and at least one shard answers; a down shard is reported as degraded, still ready) or /healthz (process up)."
  type        = string
  default     = "/readyz"

  validation {
    condition     = contains(["/readyz", "/healthz"], var.router_health_path)
    error_message = "router_health_path must be /readyz or /healthz."
  }
}

variable "ranges_per_shard" {
  description = "Ranges per shard of the initial even range map (seeded once, by the bootstrap task, into an empty catalog)."
  type        = number
  default     = 4

  validation {
    condition     = var.ranges_per_shard >= 1 && var.ranges_per_shard <= 256 && floor(var.ranges_per_shard) == var.ranges_per_shard
    error_message = "ranges_per_shard must be a whole number from 1 to 256."
  }
}

variable "stream_max_age" {
  description = "Retention of the CDC stream (e.g. 30d); empty keeps every message. New edges start empty and replay the stream, so with a limit they lack rows older than it."
  type        = string
  default     = ""

  validation {
    condition     = var.stream_max_age == "" || can(regex("^[1-9][0-9]{0,4}[hd]$", var.stream_max_age))
    error_message = "stream_max_age must be empty or a whole number of hours or days such as 72h or 30d."
  }
}
