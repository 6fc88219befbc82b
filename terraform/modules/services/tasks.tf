# Task definitions and services. Every shardline container runs the same image
# with a different subcommand; router, edge and replicator tasks carry an ADOT
# collector sidecar that scrapes the container's /metrics on localhost and
# remote-writes to Amazon Managed Service for Prometheus.

locals {
  base_env = concat(
    [
      { name = "SHARDLINE_LOG_FORMAT", value = "json" },
      { name = "RUST_LOG", value = var.rust_log },
    ],
    var.otlp_endpoint == "" ? [] : [{ name = "OTEL_EXPORTER_OTLP_ENDPOINT", value = var.otlp_endpoint }],
  )
  catalog_secret = [{ name = "SHARDLINE_CATALOG_URL", valueFrom = var.catalog_url_secret_arn }]

  logs = {
    for c in local.components : c => {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.service[c].name
        "awslogs-region"        = local.region
        "awslogs-stream-prefix" = c
      }
    }
  }

  # ADOT collector configuration per scraped component: port of its /metrics.
  scrape_ports = { router = 8080, edge = 8090, replicator = 9187 }
  collector_config = {
    for c, port in local.scrape_ports : c => yamlencode({
      extensions = { sigv4auth = { region = local.region, service = "aps" } }
      receivers = {
        prometheus = {
          config = {
            scrape_configs = [{
              job_name        = "shardline-${c}"
              scrape_interval = "15s"
              metrics_path    = "/metrics"
              static_configs  = [{ targets = ["127.0.0.1:${port}"], labels = { environment = var.name, component = c } }]
            }]
          }
        }
      }
      # adds the task ARN, so series of tasks scraping 127.0.0.1 stay apart
      processors = { resourcedetection = { detectors = ["env", "ecs"] } }
      exporters = {
        prometheusremotewrite = {
          endpoint                         = var.amp_remote_write_url
          auth                             = { authenticator = "sigv4auth" }
          resource_to_telemetry_conversion = { enabled = true }
        }
      }
      service = {
        extensions = ["sigv4auth"]
        pipelines  = { metrics = { receivers = ["prometheus"], processors = ["resourcedetection"], exporters = ["prometheusremotewrite"] } }
      }
    })
  }
  collector = {
    for c in keys(local.scrape_ports) : c => {
      name                   = "metrics"
      image                  = var.collector_image
      essential              = false
      readonlyRootFilesystem = true
      environment            = [{ name = "AOT_CONFIG_CONTENT", value = local.collector_config[c] }]
      logConfiguration       = local.logs[c]
    }
  }

  # ECS Exec's agent writes under these paths; with a read-only root file system
  # they must be writable volumes (AWS documents Exec for writable roots only;
  # this is the known workaround, aws/containers-roadmap#1359).
  exec_paths  = { "exec-agents" = "/managed-agents", "exec-ssm-lib" = "/var/lib/amazon/ssm", "exec-ssm-log" = "/var/log/amazon/ssm" }
  exec_mounts = [for v, path in local.exec_paths : { sourceVolume = v, containerPath = path, readOnly = false }]

  # `init --shard s1="$SHARD_URL_S1" ...`: the URLs come from the task's secrets
  # and are expanded by the shell, never written into the task definition.
  shard_flags = join(" ", [for id in sort(keys(var.shard_dsn_secret_arns)) : "--shard \"${id}=$SHARD_URL_${upper(id)}\""])

  # The CDC stream's replicas and retention; replicators and edges get the same
  # values (whichever starts first creates the stream, one finding it different
  # updates it).
  stream_env = concat(
    [{ name = "SHARDLINE_STREAM_REPLICAS", value = tostring(var.stream_replicas) }],
    var.stream_max_age == "" ? [] : [{ name = "SHARDLINE_STREAM_MAX_AGE", value = var.stream_max_age }],
  )

  containers = {
    router = [
      {
        name                   = "router"
        image                  = local.image
        essential              = true
        readonlyRootFilesystem = true
        # router ids must differ per task: they key the load samples the policy reads
        entryPoint       = ["/bin/sh", "-c"]
        command          = ["exec shardline router --router-id \"router-$(cat /proc/sys/kernel/hostname)\""]
        portMappings     = [{ containerPort = 8080, protocol = "tcp" }]
        mountPoints      = local.exec_mounts
        environment      = concat(local.base_env, [{ name = "SHARDLINE_ROUTER_LISTEN", value = "0.0.0.0:8080" }, { name = "OTEL_SERVICE_NAME", value = "shardline-router" }])
        secrets          = local.catalog_secret
        stopTimeout      = 30
        logConfiguration = local.logs.router
      },
      local.collector.router,
    ]
    edge = [
      {
        name                   = "edge"
        image                  = local.image
        essential              = true
        readonlyRootFilesystem = true
        # a distinct edge label per task in metrics and logs
        entryPoint   = ["/bin/sh", "-c"]
        command      = ["exec shardline edge --name \"edge-$(cat /proc/sys/kernel/hostname)\""]
        portMappings = [{ containerPort = 8090, protocol = "tcp" }]
        environment = concat(local.base_env, local.stream_env, [
          { name = "SHARDLINE_EDGE_LISTEN", value = "0.0.0.0:8090" },
          { name = "SHARDLINE_EDGE_STORE", value = "/data/edge.redb" },
          { name = "SHARDLINE_NATS_URL", value = var.nats_url },
          { name = "OTEL_SERVICE_NAME", value = "shardline-edge" },
        ])
        secrets          = local.catalog_secret
        mountPoints      = concat([{ sourceVolume = "data", containerPath = "/data", readOnly = false }], local.exec_mounts)
        stopTimeout      = 30
        logConfiguration = local.logs.edge
      },
      local.collector.edge,
    ]
    rebalancer = [
      {
        name                   = "rebalancer"
        image                  = local.image
        essential              = true
        readonlyRootFilesystem = true
        entryPoint             = ["/bin/sh", "-c"]
        command                = ["printf '%s' \"$SHARDLINE_POLICY_TOML\" > /tmp/policy.toml && exec shardline rebalancer --policy-config /tmp/policy.toml"]
        portMappings           = [{ containerPort = 8070, protocol = "tcp" }]
        environment            = concat(local.base_env, [{ name = "SHARDLINE_REBALANCER_LISTEN", value = "0.0.0.0:8070" }, { name = "OTEL_SERVICE_NAME", value = "shardline-rebalancer" }])
        # SHARDLINE_API_KEY: `shardline policy ...` / `moves` through ECS Exec in this
        # container find the key in their environment, never on a logged command line
        secrets = concat(local.catalog_secret, [
          { name = "SHARDLINE_POLICY_TOML", valueFrom = aws_ssm_parameter.policy.arn },
          { name = "SHARDLINE_API_KEY", valueFrom = aws_secretsmanager_secret.admin_key.arn },
        ])
        mountPoints = concat([{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }], local.exec_mounts)
        # a move step in flight finishes or is resumed by the standby
        stopTimeout      = 60
        logConfiguration = local.logs.rebalancer
      },
    ]
    # One-off, idempotent, run on every deploy: migrates the catalog and every
    # shard, registers the shards, seeds the even range map and the shards' owned
    # ranges on a fresh catalog (a new shard joins an existing map with no
    # ranges) and imports the admin key from Secrets Manager (its hash).
    bootstrap = [
      {
        name                   = "bootstrap"
        image                  = local.image
        essential              = true
        readonlyRootFilesystem = true
        entryPoint             = ["/bin/sh", "-c"]
        command                = ["exec shardline init ${local.shard_flags} --admin-key-env SHARDLINE_BOOTSTRAP_ADMIN_KEY"]
        environment            = concat(local.base_env, [{ name = "SHARDLINE_RANGES_PER_SHARD", value = tostring(var.ranges_per_shard) }])
        secrets = concat(local.catalog_secret, [
          { name = "SHARDLINE_BOOTSTRAP_ADMIN_KEY", valueFrom = aws_secretsmanager_secret.admin_key.arn },
          ], [
          for id in sort(keys(var.shard_dsn_secret_arns)) : { name = "SHARD_URL_${upper(id)}", valueFrom = var.shard_dsn_secret_arns[id] }
        ])
        logConfiguration = local.logs.bootstrap
      },
    ]
  }

  sizes = {
    router     = { cpu = var.router.cpu, memory = var.router.memory }
    edge       = { cpu = var.edge.cpu, memory = var.edge.memory }
    rebalancer = { cpu = var.rebalancer.cpu, memory = var.rebalancer.memory }
    bootstrap  = { cpu = 512, memory = 1024 }
  }
}

resource "aws_ecs_task_definition" "service" {
  for_each = local.containers

  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = local.sizes[each.key].cpu
  memory                   = local.sizes[each.key].memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode(each.value)

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  dynamic "ephemeral_storage" {
    for_each = each.key == "edge" ? [var.edge.storage_gb] : []
    content {
      size_in_gib = ephemeral_storage.value
    }
  }

  dynamic "volume" {
    for_each = concat(
      each.key == "edge" ? ["data"] : each.key == "rebalancer" ? ["tmp"] : [],
      each.key == "bootstrap" ? [] : keys(local.exec_paths),
    )
    content {
      name = volume.value
    }
  }
}

resource "aws_ecs_task_definition" "replicator" {
  for_each = var.shard_dsn_secret_arns

  family                   = "${var.name}-replicator-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.replicator.cpu
  memory                   = var.replicator.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions = jsonencode([
    {
      name                   = "replicator"
      image                  = local.image
      essential              = true
      readonlyRootFilesystem = true
      command                = ["replicator", "--shard", each.key]
      environment = concat(local.base_env, local.stream_env, [
        { name = "SHARDLINE_NATS_URL", value = var.nats_url },
        { name = "SHARDLINE_REPLICATOR_METRICS_LISTEN", value = "127.0.0.1:9187" },
        { name = "OTEL_SERVICE_NAME", value = "shardline-replicator" },
      ])
      secrets          = [{ name = "SHARDLINE_SHARD_URL", valueFrom = each.value }]
      mountPoints      = local.exec_mounts
      stopTimeout      = 30
      logConfiguration = local.logs.replicator
    },
    local.collector.replicator,
  ])

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  dynamic "volume" {
    for_each = keys(local.exec_paths)
    content {
      name = volume.value
    }
  }
}

locals {
  long_running = {
    router     = { sg = "router", count = var.router.min_count, port = 8080 }
    edge       = { sg = "edge", count = var.edge.min_count, port = 8090 }
    rebalancer = { sg = "rebalancer", count = var.rebalancer.count, port = 8070 }
  }
}

resource "aws_ecs_service" "service" {
  for_each = local.long_running

  name                              = each.key
  cluster                           = aws_ecs_cluster.this.id
  task_definition                   = aws_ecs_task_definition.service[each.key].arn
  desired_count                     = each.value.count
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  enable_execute_command            = true
  propagate_tags                    = "SERVICE"
  health_check_grace_period_seconds = 60

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [var.security_group_ids[each.value.sg]]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.this[each.key].arn
    container_name   = each.key
    container_port   = each.value.port
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    # autoscaling owns the count of routers and edges
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.this]
}

# One replicator per shard; never two at once on one slot (the second could not
# take the active slot): stop the old task before starting the new one.
resource "aws_ecs_service" "replicator" {
  for_each = var.shard_dsn_secret_arns

  name                               = "replicator-${each.key}"
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.replicator[each.key].arn
  desired_count                      = 1
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  enable_execute_command             = true
  propagate_tags                     = "SERVICE"
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [var.security_group_ids["replicator"]]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
}

resource "aws_appautoscaling_target" "this" {
  for_each = {
    router = { min = var.router.min_count, max = var.router.max_count, cpu_target = var.router.cpu_target }
    edge   = { min = var.edge.min_count, max = var.edge.max_count, cpu_target = var.edge.cpu_target }
  }

  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.service[each.key].name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = each.value.min
  max_capacity       = each.value.max
}

resource "aws_appautoscaling_policy" "cpu" {
  for_each = aws_appautoscaling_target.this

  name               = "${var.name}-${each.key}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = each.value.service_namespace
  resource_id        = each.value.resource_id
  scalable_dimension = each.value.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = each.key == "router" ? var.router.cpu_target : var.edge.cpu_target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}
