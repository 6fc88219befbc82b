# Metrics and alarms. Services' /metrics are scraped by a collector sidecar in
# each task (services module) and remote-written to this Prometheus workspace,
# whose rules alert on replication lag, edge staleness and the router's 5xx
# share. AWS-side signals alarm in CloudWatch: RDS replication-slot lag, load
# balancer 5xx, and move failures counted from the rebalancer's JSON logs. All
# alarms go to one encrypted SNS topic.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

resource "aws_prometheus_workspace" "this" {
  alias       = var.name
  kms_key_arn = var.kms_key_arn
}

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = var.kms_key_arn
}

data "aws_iam_policy_document" "alarms" {
  statement {
    sid       = "AlarmSources"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com", "aps.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_sns_topic_policy" "alarms" {
  arn    = aws_sns_topic.alarms.arn
  policy = data.aws_iam_policy_document.alarms.json
}

resource "aws_sns_topic_subscription" "email" {
  count = var.alarm_email == "" ? 0 : 1

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

resource "aws_prometheus_alert_manager_definition" "this" {
  workspace_id = aws_prometheus_workspace.this.id
  definition = yamlencode({
    alertmanager_config = yamlencode({
      route = { receiver = "sns", group_by = ["alertname", "component"], repeat_interval = "1h" }
      receivers = [{
        name = "sns"
        sns_configs = [{
          topic_arn = aws_sns_topic.alarms.arn
          sigv4     = { region = data.aws_region.current.name }
          subject   = "shardline ${var.name}"
        }]
      }]
    })
  })
}

resource "aws_prometheus_rule_group_namespace" "shardline" {
  name         = "shardline"
  workspace_id = aws_prometheus_workspace.this.id
  data = yamlencode({
    groups = [{
      name = "shardline"
      rules = [
        {
          alert  = "ReplicatorLag"
          expr   = "max by (shard) (shardline_replicator_lag_bytes) > ${var.replication_lag_alarm_bytes}"
          "for"  = "5m"
          labels = { severity = "page", component = "replicator" }
          annotations = {
            summary = "replicator of shard {{ $labels.shard }} is {{ $value | humanize1024 }}B behind the shard's WAL"
          }
        },
        {
          alert  = "ReplicatorDown"
          expr   = "absent(shardline_replicator_confirmed_lsn)"
          "for"  = "5m"
          labels = { severity = "page", component = "replicator" }
          annotations = {
            summary = "no replicator is reporting metrics"
          }
        },
        {
          alert  = "EdgeStale"
          expr   = "max by (edge) (shardline_edge_staleness_seconds) > ${var.edge_staleness_alarm_seconds}"
          "for"  = "2m"
          labels = { severity = "page", component = "edge" }
          annotations = {
            summary = "edge {{ $labels.edge }} is {{ $value }} s stale"
          }
        },
        {
          alert  = "EdgeGaps"
          expr   = "increase(shardline_edge_gaps_total[10m]) > 0"
          labels = { severity = "ticket", component = "edge" }
          annotations = {
            summary = "an edge detected a gap in a CDC stream"
          }
        },
        {
          alert  = "RouterErrorRate"
          expr   = "sum(rate(shardline_router_requests_total{status=~\"5..\"}[5m])) / clamp_min(sum(rate(shardline_router_requests_total[5m])), 1e-9) > ${var.error_rate_alarm}"
          "for"  = "5m"
          labels = { severity = "page", component = "router" }
          annotations = {
            summary = "{{ $value | humanizePercentage }} of router responses are 5xx"
          }
        },
        {
          alert  = "RouterHoldTimeouts"
          expr   = "increase(shardline_router_hold_timeouts_total[5m]) > 0"
          labels = { severity = "ticket", component = "router" }
          annotations = {
            summary = "requests held during a cutover ran out of their hold budget (503)"
          }
        },
      ]
    }]
  })
}

# ---- CloudWatch: RDS replication slots ----------------------------------------

resource "aws_cloudwatch_metric_alarm" "slot_lag" {
  for_each = var.shard_identifiers

  alarm_name          = "${var.name}-${each.key}-replication-slot-lag"
  alarm_description   = "Shard ${each.key}: the oldest replication slot (CDC or a move's subscription) retains too much WAL; a stuck replicator or an orphaned move slot."
  namespace           = "AWS/RDS"
  metric_name         = "OldestReplicationSlotLag"
  dimensions          = { DBInstanceIdentifier = each.value }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = var.replication_lag_alarm_bytes
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "db_cpu" {
  for_each = merge(var.shard_identifiers, { catalog = var.catalog_identifier })

  alarm_name          = "${var.name}-${each.key}-cpu"
  alarm_description   = "${each.key}: CPU above 85 % for 10 minutes."
  namespace           = "AWS/RDS"
  metric_name         = "CPUUtilization"
  dimensions          = { DBInstanceIdentifier = each.value }
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 10
  threshold           = 85
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

# ---- CloudWatch: load balancer 5xx -------------------------------------------

resource "aws_cloudwatch_metric_alarm" "alb_5xx" {
  for_each = var.alb_arn_suffixes

  alarm_name          = "${var.name}-${each.key}-5xx"
  alarm_description   = "${each.key} load balancer: target plus load-balancer 5xx responses per minute."
  evaluation_periods  = 3
  threshold           = var.alb_5xx_alarm_count
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]

  metric_query {
    id          = "total"
    expression  = "FILL(target, 0) + FILL(elb, 0)"
    label       = "5xx per minute"
    return_data = true
  }

  metric_query {
    id = "target"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      dimensions  = { LoadBalancer = each.value }
      stat        = "Sum"
      period      = 60
    }
  }

  metric_query {
    id = "elb"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      dimensions  = { LoadBalancer = each.value }
      stat        = "Sum"
      period      = 60
    }
  }
}

# ---- CloudWatch: move failures from the rebalancer's logs --------------------

resource "aws_cloudwatch_log_metric_filter" "move_failures" {
  name           = "${var.name}-move-failures"
  log_group_name = var.rebalancer_log_group
  pattern        = "{ ($.fields.message = \"move aborted\") || ($.fields.message = \"move step failed\") }"

  metric_transformation {
    name          = "MoveFailures"
    namespace     = "Shardline/${var.name}"
    value         = "1"
    default_value = "0"
  }
}

resource "aws_cloudwatch_metric_alarm" "move_failures" {
  alarm_name          = "${var.name}-move-failures"
  alarm_description   = "A move was aborted or a move step failed (rebalancer logs); see shardline moves and the dashboard."
  namespace           = "Shardline/${var.name}"
  metric_name         = aws_cloudwatch_log_metric_filter.move_failures.metric_transformation[0].name
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}
