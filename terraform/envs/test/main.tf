# The Shardline test environment: network, catalog, N shards, NATS, the services,
# the load test task and observability, composed from ../../modules.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  region    = data.aws_region.current.name
  registry  = "${local.account}.dkr.ecr.${local.region}.amazonaws.com"
  shard_ids = [for i in range(var.shard_count) : "s${i + 1}"]

  policy_config_toml = join("\n", compact([
    "max_concurrent_moves = ${var.policy_max_concurrent_moves}",
    "byte_budget_per_hour = ${var.policy_byte_budget_gib_per_hour * 1073741824}",
    trimspace(var.policy_extra_toml),
  ]))
}

# ---- Shared: encryption key, RDS monitoring role, pull-through cache ----------

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:This is a KMS key policy: "*" as resource means this key only, and the account root statement is the standard delegation to IAM (without it the key becomes unmanageable).
  #checkov:skip=CKV_AWS_109:KMS key policy: "*" means this key only; the account root statement delegates to IAM, the service statements are conditioned on this account's log groups or SourceAccount.
  #checkov:skip=CKV_AWS_356:KMS key policy: "*" is the only valid resource in a key policy and denotes this key.
  statement {
    sid       = "AccountAdministration"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${local.account}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${local.region}:${local.account}:log-group:*"]
    }
  }
  statement {
    sid       = "AlarmPublishers"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com", "aps.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "Shardline ${var.name}: databases, volumes, logs, secrets, reports"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name               = "${var.name}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

# Images from the public ECR gallery (NATS, the OpenTelemetry collector, the AWS
# CLI) reach the private subnets through this cache: ECR fetches them upstream.
resource "aws_ecr_pull_through_cache_rule" "public" {
  count = var.create_pull_through_cache_rule ? 1 : 0

  ecr_repository_prefix = "ecr-public"
  upstream_registry_url = "public.ecr.aws"
}

# ---- Modules ------------------------------------------------------------------

module "network" {
  source = "../../modules/network"

  name         = var.name
  vpc_cidr     = var.vpc_cidr
  kms_key_arn  = aws_kms_key.this.arn
  client_cidrs = var.client_cidrs
  otlp_cidrs   = var.otlp_cidrs
}

module "catalog" {
  source = "../../modules/catalog"

  name                  = var.name
  subnet_ids            = module.network.private_subnet_ids
  security_group_id     = module.network.security_group_ids["catalog"]
  kms_key_arn           = aws_kms_key.this.arn
  monitoring_role_arn   = aws_iam_role.rds_monitoring.arn
  engine_version        = var.postgres_version
  instance_class        = var.catalog_instance_class
  allocated_storage_gb  = var.catalog_storage_gb
  backup_retention_days = var.backup_retention_days
  deletion_protection   = var.deletion_protection
}

module "shard" {
  source   = "../../modules/shard"
  for_each = toset(local.shard_ids)

  name                     = var.name
  shard_id                 = each.key
  subnet_ids               = module.network.private_subnet_ids
  security_group_id        = module.network.security_group_ids["shard"]
  kms_key_arn              = aws_kms_key.this.arn
  monitoring_role_arn      = aws_iam_role.rds_monitoring.arn
  engine_version           = var.postgres_version
  instance_class           = var.shard_instance_class
  allocated_storage_gb     = var.shard_storage_gb
  max_allocated_storage_gb = max(var.shard_max_storage_gb, var.shard_storage_gb)
  iops                     = var.shard_iops
  storage_throughput       = var.shard_throughput
  multi_az                 = var.shard_multi_az
  backup_retention_days    = var.backup_retention_days
  deletion_protection      = var.deletion_protection
  max_concurrent_moves     = var.policy_max_concurrent_moves
}

module "nats" {
  source = "../../modules/nats"

  name              = var.name
  subnet_ids        = module.network.private_subnet_ids
  subnet_cidrs      = module.network.private_subnet_cidrs
  security_group_id = module.network.security_group_ids["nats"]
  kms_key_arn       = aws_kms_key.this.arn
  instance_type     = var.nats_instance_type
  volume_size_gb    = var.nats_volume_gb
  nats_image        = "${local.registry}/ecr-public/docker/library/nats:${var.nats_version}"

  depends_on = [aws_ecr_pull_through_cache_rule.public]
}

module "observability" {
  source = "../../modules/observability"

  name                 = var.name
  kms_key_arn          = aws_kms_key.this.arn
  shard_identifiers    = { for id, s in module.shard : id => s.identifier }
  catalog_identifier   = module.catalog.identifier
  alb_arn_suffixes     = module.services.alb_arn_suffixes
  rebalancer_log_group = module.services.rebalancer_log_group
  alarm_email          = var.alarm_email
}

module "services" {
  source = "../../modules/services"

  name                   = var.name
  image_tag              = var.image_tag
  cpu_architecture       = var.cpu_architecture
  subnet_ids             = module.network.private_subnet_ids
  security_group_ids     = module.network.security_group_ids
  kms_key_arn            = aws_kms_key.this.arn
  catalog_url_secret_arn = module.catalog.url_secret_arn
  shard_dsn_secret_arns  = { for id, s in module.shard : id => s.dsn_secret_arn }
  nats_url               = module.nats.url
  otlp_endpoint          = var.otlp_endpoint
  amp_remote_write_url   = module.observability.amp_remote_write_url
  amp_workspace_arn      = module.observability.amp_workspace_arn
  collector_image        = "${local.registry}/ecr-public/aws-observability/aws-otel-collector:${var.collector_version}"
  policy_config_toml     = local.policy_config_toml
  router_health_path     = var.router_health_path
  deletion_protection    = var.deletion_protection
  ranges_per_shard       = var.ranges_per_shard
  stream_replicas        = min(3, module.nats.node_count)
  stream_max_age         = var.stream_max_age

  router = {
    cpu        = var.router_size.cpu
    memory     = var.router_size.memory
    min_count  = var.router_count.min
    max_count  = var.router_count.max
    cpu_target = 60
  }
  edge = {
    cpu        = var.edge_size.cpu
    memory     = var.edge_size.memory
    storage_gb = var.edge_size.storage_gb
    min_count  = var.edge_count.min
    max_count  = var.edge_count.max
    cpu_target = 60
  }

  depends_on = [aws_ecr_pull_through_cache_rule.public]
}

module "loadtest" {
  source = "../../modules/loadtest"

  name                   = var.name
  image                  = module.services.image
  aws_cli_image          = "${local.registry}/ecr-public/aws-cli/aws-cli:${var.aws_cli_version}"
  cpu_architecture       = var.cpu_architecture
  kms_key_arn            = aws_kms_key.this.arn
  catalog_url_secret_arn = module.catalog.url_secret_arn
  admin_key_secret_arn   = module.services.admin_key_secret_arn
  router_url             = module.services.router_url
  edge_url               = module.services.edge_url
  rebalancer_url         = module.services.rebalancer_url
  cpu                    = var.loadtest_size.cpu
  memory                 = var.loadtest_size.memory
  force_destroy_reports  = var.force_destroy_reports
}
