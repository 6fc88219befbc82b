# `shardline loadtest` as a one-off ECS task against the environment's internal
# load balancers. The report directory (report.json + report.html) is a volume
# shared with a second container that copies it to the report bucket once the
# load test container has exited (whatever its exit status).

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  region = data.aws_region.current.name
  prefix = "runs"
}

resource "aws_s3_bucket" "reports" {
  #checkov:skip=CKV_AWS_18:No server access logs: the only writer is the load test task role and readers are operators with IAM access; a second logging bucket in a throwaway test environment adds cost and nothing to audit (CloudTrail covers the API calls).
  #checkov:skip=CKV_AWS_144:No cross-region replication: reports are reproducible test artefacts of a throwaway environment (rerun the scenario with its printed seed).
  #checkov:skip=CKV2_AWS_62:No event notifications: nothing consumes new reports automatically; operators read them with the commands in terraform/README.md.
  bucket_prefix = "${var.name}-reports-"
  force_destroy = var.force_destroy_reports
}

resource "aws_s3_bucket_public_access_block" "reports" {
  bucket                  = aws_s3_bucket.reports.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "reports" {
  bucket = aws_s3_bucket.reports.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "reports" {
  bucket = aws_s3_bucket.reports.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "reports" {
  bucket = aws_s3_bucket.reports.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "reports" {
  bucket = aws_s3_bucket.reports.id

  rule {
    id     = "expire-reports"
    status = "Enabled"
    filter {
      prefix = "${local.prefix}/"
    }
    expiration {
      days = var.report_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
  }

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "reports_tls" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.reports.arn, "${aws_s3_bucket.reports.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "reports" {
  bucket = aws_s3_bucket.reports.id
  policy = data.aws_iam_policy_document.reports_tls.json
}

resource "aws_cloudwatch_log_group" "loadtest" {
  name              = "/shardline/${var.name}/loadtest"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

data "aws_iam_policy_document" "assume" {
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

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid = "PullImages"
    actions = [
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchImportUpstreamImage",
      "ecr:CreateRepository",
    ]
    resources = [
      "arn:aws:ecr:${local.region}:${data.aws_caller_identity.current.account_id}:repository/${var.name}/*",
      "arn:aws:ecr:${local.region}:${data.aws_caller_identity.current.account_id}:repository/ecr-public/*",
    ]
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.loadtest.arn}:*"]
  }
  statement {
    sid       = "Secrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.catalog_url_secret_arn, var.admin_key_secret_arn]
  }
  statement {
    sid       = "Decrypt"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-loadtest-execution"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "execution" {
  name   = "loadtest-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# The task itself may only add reports under runs/.
data "aws_iam_policy_document" "task" {
  statement {
    sid       = "WriteReports"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.reports.arn}/${local.prefix}/*"]
  }
  statement {
    sid       = "ListForSync"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.reports.arn]
  }
  statement {
    sid       = "EncryptReports"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-loadtest-task"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "task" {
  name   = "loadtest-reports"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

locals {
  logs = {
    logDriver = "awslogs"
    options = {
      "awslogs-group"         = aws_cloudwatch_log_group.loadtest.name
      "awslogs-region"        = local.region
      "awslogs-stream-prefix" = "loadtest"
    }
  }
}

resource "aws_ecs_task_definition" "loadtest" {
  family                   = "${var.name}-loadtest"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  container_definitions = jsonencode([
    {
      name                   = "loadtest"
      image                  = var.image
      essential              = false
      readonlyRootFilesystem = true
      command = [
        "loadtest", "--scenario", var.scenario, "--quiet", "--out", "/reports",
        "--router", var.router_url, "--edge", var.edge_url, "--rebalancer", var.rebalancer_url,
      ]
      environment = [
        { name = "SHARDLINE_LOG_FORMAT", value = "json" },
        { name = "RUST_LOG", value = "info" },
      ]
      secrets = [
        { name = "SHARDLINE_CATALOG_URL", valueFrom = var.catalog_url_secret_arn },
        { name = "SHARDLINE_API_KEY", valueFrom = var.admin_key_secret_arn },
      ]
      mountPoints      = [{ sourceVolume = "reports", containerPath = "/reports", readOnly = false }]
      logConfiguration = local.logs
    },
    {
      name                   = "upload"
      image                  = var.aws_cli_image
      essential              = true
      readonlyRootFilesystem = true
      dependsOn              = [{ containerName = "loadtest", condition = "COMPLETE" }]
      command                = ["s3", "cp", "--recursive", "--only-show-errors", "/reports/", "s3://${aws_s3_bucket.reports.id}/${local.prefix}/"]
      environment            = [{ name = "HOME", value = "/tmp" }]
      mountPoints = [
        { sourceVolume = "reports", containerPath = "/reports", readOnly = true },
        { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
      ]
      logConfiguration = local.logs
    },
  ])

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  volume {
    name = "reports"
  }

  volume {
    name = "tmp"
  }
}
