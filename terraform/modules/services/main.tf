# The shardline binary as ECS Fargate services: router and edges (autoscaled,
# behind internal load balancers), the rebalancer (leader + standby), one
# replicator per shard, and a one-off bootstrap task (`shardline init`). Secrets come from Secrets
# Manager / SSM through the task execution role, never through plain variables.

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  image      = "${aws_ecr_repository.shardline.repository_url}:${var.image_tag}"
  region     = data.aws_region.current.name
  components = toset(["router", "edge", "rebalancer", "replicator", "bootstrap"])
}

resource "aws_ecr_repository" "shardline" {
  name                 = "${var.name}/shardline"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }
}

resource "aws_ecr_lifecycle_policy" "shardline" {
  repository = aws_ecr_repository.shardline.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "keep the 20 newest images"
      selection    = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = 20 }
      action       = { type = "expire" }
    }]
  })
}

resource "aws_cloudwatch_log_group" "exec" {
  name              = "/shardline/${var.name}/ecs-exec"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  configuration {
    execute_command_configuration {
      kms_key_id = var.kms_key_arn
      logging    = "OVERRIDE"
      log_configuration {
        cloud_watch_encryption_enabled = true
        cloud_watch_log_group_name     = aws_cloudwatch_log_group.exec.name
      }
    }
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_cloudwatch_log_group" "service" {
  for_each = local.components

  name              = "/shardline/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

# The rebalancer's policy knobs, read at start with --policy-config.
resource "aws_ssm_parameter" "policy" {
  name        = "/shardline/${var.name}/policy.toml"
  description = "Shardline rebalancer policy knobs (docs/rebalancer.md)"
  type        = "SecureString"
  key_id      = var.kms_key_arn
  value       = var.policy_config_toml
}

# ---- IAM ---------------------------------------------------------------------

data "aws_iam_policy_document" "ecs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

# Execution role: pulls images, writes logs, reads exactly the secrets injected.
data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "PullShardline"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [aws_ecr_repository.shardline.arn]
  }
  statement {
    sid = "PullThroughCache"
    actions = [
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchImportUpstreamImage",
      "ecr:CreateRepository",
    ]
    resources = ["arn:aws:ecr:${local.region}:${data.aws_caller_identity.current.account_id}:repository/ecr-public/*"]
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for g in aws_cloudwatch_log_group.service : "${g.arn}:*"]
  }
  statement {
    sid       = "Secrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = concat([var.catalog_url_secret_arn, aws_secretsmanager_secret.admin_key.arn], values(var.shard_dsn_secret_arns))
  }
  statement {
    sid       = "PolicyParameter"
    actions   = ["ssm:GetParameters"]
    resources = [aws_ssm_parameter.policy.arn]
  }
  statement {
    sid       = "Decrypt"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-ecs-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
}

resource "aws_iam_role_policy" "execution" {
  name   = "shardline-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# Task role: what the running containers may call: remote-write metrics, ECS Exec.
data "aws_iam_policy_document" "task" {
  statement {
    sid       = "RemoteWriteMetrics"
    actions   = ["aps:RemoteWrite"]
    resources = [var.amp_workspace_arn]
  }
  statement {
    sid = "EcsExec"
    actions = [
      "ssmmessages:CreateControlChannel",
      "ssmmessages:CreateDataChannel",
      "ssmmessages:OpenControlChannel",
      "ssmmessages:OpenDataChannel",
    ]
    resources = ["*"]
  }
  statement {
    sid       = "ExecSessionLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.exec.arn}:*"]
  }
  statement {
    sid       = "ExecSessionKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-ecs-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
}

resource "aws_iam_role_policy" "task" {
  name   = "shardline-task"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# ---- Admin API key ------------------------------------------------------------
# An admin-scope key in Shardline's format (sl_<12 hex>_<64 hex>) for the load
# test and operators; the catalog stores only its SHA-256 (docs/cloud.md,
# bootstrap). Never an output: read it from Secrets Manager.

resource "random_id" "admin_key_prefix" {
  byte_length = 6
}

resource "random_id" "admin_key_secret" {
  byte_length = 32
}

resource "aws_secretsmanager_secret" "admin_key" {
  #checkov:skip=CKV2_AWS_57:No rotation: an API key is rotated by creating a new key in the catalog (shardline keys) and revoking the old one, which a Secrets Manager rotation Lambda cannot do; the environment lives for hours.
  name_prefix             = "${var.name}-admin-api-key-"
  description             = "Shardline admin API key (sl_...) for the load test and operators"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "admin_key" {
  secret_id     = aws_secretsmanager_secret.admin_key.id
  secret_string = "sl_${random_id.admin_key_prefix.hex}_${random_id.admin_key_secret.hex}"
}
