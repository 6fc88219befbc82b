# One shard: an RDS for PostgreSQL instance whose parameter group enables logical
# replication (the replicator's CDC slot, and moves: publication on the source,
# subscription on the target), sized from the policy's concurrency.

locals {
  identifier = "${var.name}-${var.shard_id}"
  db_name    = "shardline"
  username   = "shardline"
  family     = "postgres${split(".", var.engine_version)[0]}"

  # Per move touching this shard: as source one subscription slot plus the
  # tablesync slots of the initial copy; as target one apply worker plus the
  # tablesync workers. Plus the replicator's slot, and head-room.
  sync_workers_per_subscription = 2
  per_move                      = 1 + local.sync_workers_per_subscription
  replication_slots             = 1 + var.max_concurrent_moves * local.per_move + var.replication_headroom
  wal_senders                   = local.replication_slots + 2
  logical_workers               = var.max_concurrent_moves * local.per_move + 2
  worker_processes              = local.logical_workers + 8
}

resource "aws_db_subnet_group" "this" {
  name       = local.identifier
  subnet_ids = var.subnet_ids
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${local.identifier}-"
  family      = local.family
  description = "Shardline shard ${var.shard_id}: logical replication for CDC and online moves"

  parameter {
    name         = "rds.logical_replication"
    value        = "1"
    apply_method = "pending-reboot"
  }
  parameter {
    name         = "max_replication_slots"
    value        = tostring(local.replication_slots)
    apply_method = "pending-reboot"
  }
  parameter {
    name         = "max_wal_senders"
    value        = tostring(local.wal_senders)
    apply_method = "pending-reboot"
  }
  parameter {
    name         = "max_logical_replication_workers"
    value        = tostring(local.logical_workers)
    apply_method = "pending-reboot"
  }
  parameter {
    name         = "max_worker_processes"
    value        = tostring(local.worker_processes)
    apply_method = "pending-reboot"
  }
  parameter {
    name  = "max_sync_workers_per_subscription"
    value = tostring(local.sync_workers_per_subscription)
  }
  parameter {
    name  = "max_slot_wal_keep_size"
    value = tostring(var.max_slot_wal_keep_size_mb)
  }
  parameter {
    name  = "rds.force_ssl"
    value = var.require_tls ? "1" : "0"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_replication_commands"
    value = "1"
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
  #checkov:skip=CKV_AWS_157:Multi-AZ is var.multi_az (default false): a test shard's standby doubles its cost and HA is not what the environment tests; shard loss is exercised by the loadtest failover scenario. Set multi_az=true for a production-shaped run.
  #checkov:skip=CKV2_AWS_69:rds.force_ssl follows var.require_tls (default false) because Shardline's PostgreSQL clients cannot negotiate TLS yet (sqlx without a TLS feature, tokio-postgres NoTls); the shard is reachable only from the service security groups inside private subnets. Flip require_tls when the clients gain rustls.
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
  iops                  = var.iops
  storage_throughput    = var.storage_throughput
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

  tags = { Shard = var.shard_id }

  depends_on = [aws_cloudwatch_log_group.postgresql]
}

# The shard's DSN (with its password) for the replicator and migrations; the
# router and the rebalancer read shard DSNs from the catalog.
resource "aws_secretsmanager_secret" "dsn" {
  #checkov:skip=CKV2_AWS_57:No rotation: the DSN is also stored in the catalog's shards table and Shardline has no hook to re-read a rotated password; a test environment lives for hours, and destroying it deletes the secret.
  name_prefix             = "${local.identifier}-dsn-"
  description             = "PostgreSQL URL of shard ${var.shard_id}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "dsn" {
  secret_id     = aws_secretsmanager_secret.dsn.id
  secret_string = "postgres://${local.username}:${random_password.master.result}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/${local.db_name}"
}
