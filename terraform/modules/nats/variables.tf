variable "name" {
  description = "Name prefix of every resource (e.g. shardline-test)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "subnet_ids" {
  description = "Private subnets, one per node, in different availability zones."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 3
    error_message = "subnet_ids must name at least three subnets (one per NATS node)."
  }
}

variable "subnet_cidrs" {
  description = "CIDRs of subnet_ids, in the same order: each node gets the fixed address .10 of its subnet so that cluster routes are static."
  type        = list(string)

  validation {
    condition     = length(var.subnet_cidrs) >= 3 && alltrue([for c in var.subnet_cidrs : can(cidrhost(c, 10))])
    error_message = "subnet_cidrs must list at least three IPv4 CIDRs with room for host .10."
  }
}

variable "security_group_id" {
  description = "The NATS security group (clients: replicators and edges on 4222; routes between nodes on 6222)."
  type        = string

  validation {
    condition     = can(regex("^sg-[0-9a-f]+$", var.security_group_id))
    error_message = "security_group_id must be a security group ID (sg-...)."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the EBS volumes and the log group."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "node_count" {
  description = "JetStream cluster size (R3 streams need 3; 5 tolerates two failures)."
  type        = number
  default     = 3

  validation {
    condition     = contains([3, 5], var.node_count)
    error_message = "node_count must be 3 or 5 (an odd JetStream meta group of at least three)."
  }
}

variable "instance_type" {
  description = "EC2 instance type of a node (Graviton types such as m7g.large select the arm64 image)."
  type        = string
  default     = "m7g.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must be an EC2 instance type such as m7g.large."
  }
}

variable "volume_size_gb" {
  description = "gp3 data volume per node in GiB (JetStream file store; the streams keep CDC history for edges that start empty)."
  type        = number
  default     = 200

  validation {
    condition     = var.volume_size_gb >= 20 && var.volume_size_gb <= 16384
    error_message = "volume_size_gb must be between 20 and 16384."
  }
}

variable "volume_iops" {
  description = "gp3 IOPS of each data volume (sync_interval: always fsyncs every message)."
  type        = number
  default     = 6000

  validation {
    condition     = var.volume_iops >= 3000 && var.volume_iops <= 16000
    error_message = "volume_iops must be between 3000 and 16000."
  }
}

variable "volume_throughput" {
  description = "gp3 throughput of each data volume in MiB/s."
  type        = number
  default     = 250

  validation {
    condition     = var.volume_throughput >= 125 && var.volume_throughput <= 1000
    error_message = "volume_throughput must be between 125 and 1000."
  }
}

variable "nats_image" {
  description = "NATS server image (2.10 or newer), pulled through the account's ECR pull-through cache of the public ECR gallery."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com/.+:.+$", var.nats_image))
    error_message = "nats_image must be an ECR image reference with a tag (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG)."
  }
}

variable "log_retention_days" {
  description = "Retention of the NATS server logs, in days."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts."
  }
}
