# The catalog: range map, moves, load samples, decisions, API keys. Multi-AZ:
# every router refreshes its map from here and the rebalancer's leader lock and
# move state machine live here.

locals {
  identifier = "${var.name}-catalog"
  db_name    = "shardline_catalog"
  username   = "shardline"
  family     = "postgres${split(".", var.engine_version)[0]}"
}

resource "aws_db_subnet_group" "this" {
  name       = local.identifier
  subnet_ids = var.subnet_ids
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${local.identifier}-"
  family      = local.family
  description = "Shardline catalog"

  parameter {
    name  = "rds.force_ssl"
    value = var.require_tls ? "1" : "0"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "500"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  # Leader election holds a session-level advisory lock: a dead rebalancer's
  # session must end quickly so the standby takes over.
  parameter {
    name  = "tcp_keepalives_idle"
    value = "30"
  }
  parameter {
    name  = "tcp_keepalives_interval"
    value = "10"
  }
  parameter {
    name  = "tcp_keepalives_count"
    value = "3"
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "random_password" "master" {
  length  = 40
  special = false
}

resource "aws_cloudwatch_log_group" "postgresql" {
  for_each = toset(["postgresql", "upgrade"])

  name              = "/aws/rds/instance/${local.identifier}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_db_instance" "this" {
  #checkov:skip=CKV2_AWS_69:rds.force_ssl follows var.require_tls (default false) because Shardline's PostgreSQL clients cannot negotiate TLS yet (sqlx without a TLS feature, tokio-postgres NoTls); the catalog is reachable only from the service security groups inside private subnets. Flip require_tls when the clients gain rustls.
  identifier     = local.identifier
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class

  db_name  = local.db_name
  username = local.username
  password = random_password.master.result
  port     = 5432

  allocated_storage     = var.allocated_storage_gb
  max_allocated_storage = var.max_allocated_storage_gb
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = var.kms_key_arn

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [var.security_group_id]
  publicly_accessible    = false
  multi_az               = var.multi_az
  parameter_group_name   = aws_db_parameter_group.this.name

  iam_database_authentication_enabled = var.iam_database_authentication
  backup_retention_period             = var.backup_retention_days
  backup_window                       = "03:00-04:00"
  maintenance_window                  = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot               = true
  deletion_protection                 = var.deletion_protection
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${local.identifier}-final"
  auto_minor_version_upgrade          = true

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = var.kms_key_arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 15
  monitoring_role_arn                   = var.monitoring_role_arn
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]

  depends_on = [aws_cloudwatch_log_group.postgresql]
}

resource "aws_secretsmanager_secret" "url" {
  #checkov:skip=CKV2_AWS_57:No rotation: every service reads the catalog URL once at start and has no hook to re-read a rotated password; a test environment lives for hours, and destroying it deletes the secret.
  name_prefix             = "${local.identifier}-url-"
  description             = "PostgreSQL URL of the Shardline catalog"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "url" {
  secret_id     = aws_secretsmanager_secret.url.id
  secret_string = "postgres://${local.username}:${random_password.master.result}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/${local.db_name}"
}
