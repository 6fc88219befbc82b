variable "name" {
  description = "Name prefix of every resource (e.g. shardline-test)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC; split into one private /20 (or smaller) subnet per availability zone."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be a valid IPv4 CIDR of size /20 or larger."
  }
}

variable "zone_suffixes" {
  description = "Availability zones of the private subnets, as letters appended to the region (a, b, c -> us-east-1a, ...): a fixed set, so a zone AWS adds later never changes the layout."
  type        = list(string)
  default     = ["a", "b", "c"]

  validation {
    condition     = length(var.zone_suffixes) >= 2 && length(var.zone_suffixes) <= 6 && alltrue([for z in var.zone_suffixes : can(regex("^[a-z]$", z))]) && length(distinct(var.zone_suffixes)) == length(var.zone_suffixes)
    error_message = "zone_suffixes must list 2-6 distinct single letters."
  }
}

variable "kms_key_arn" {
  description = "ARN of the customer-managed KMS key that encrypts the flow-log group."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "log_retention_days" {
  description = "Retention of the VPC flow-log group, in days (one of the values CloudWatch Logs accepts)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, ..., 365, ...)."
  }
}

variable "client_cidrs" {
  description = "CIDRs allowed to reach the internal load balancers (router, edge, rebalancer admin) on port 80, e.g. a VPN or peered network. The VPC's own CIDR is always allowed through the ops security group only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.client_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "client_cidrs must be valid IPv4 CIDRs and must not be 0.0.0.0/0 (the load balancers are internal)."
  }
}

variable "otlp_cidrs" {
  description = "CIDRs of the OTLP collector the services export traces to (ports 4317-4318); empty when no OTLP endpoint is used."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.otlp_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "otlp_cidrs must be valid IPv4 CIDRs other than 0.0.0.0/0."
  }
}

variable "interface_endpoints" {
  description = "AWS services reached through interface VPC endpoints (the subnets have no internet route): image pulls, logs, secrets, SSM sessions, managed Prometheus remote write."
  type        = list(string)
  default     = ["ecr.api", "ecr.dkr", "logs", "secretsmanager", "ssm", "ssmmessages", "ec2messages", "aps-workspaces", "sts"]

  validation {
    condition     = length(var.interface_endpoints) > 0 && alltrue([for s in var.interface_endpoints : can(regex("^[a-z0-9.-]+$", s))])
    error_message = "interface_endpoints must be a non-empty list of service short names such as ecr.api."
  }
}
