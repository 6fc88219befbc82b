# Internal load balancers: router (payments API), edge (reads), admin (the
# rebalancer's admin API and dashboard). Plain HTTP inside the VPC: the loadtest
# and the operator CLI take http:// URLs only (loadtest::endpoints).

locals {
  balancers = {
    router     = { port = 8080, health = "/readyz", deny_metrics = true } # or var.router_health_path
    edge       = { port = 8090, health = "/readyz", deny_metrics = true }
    rebalancer = { port = 8070, health = "/readyz", deny_metrics = false }
  }
}

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:No ALB access logs: a load test sends millions of requests and per-request logs would cost more than they tell; the router's request metrics (by route and status, in AMP) and the ALB's CloudWatch metrics (5xx alarm) cover what is needed.
  #checkov:skip=CKV2_AWS_20:No HTTP-to-HTTPS redirect: the listeners are plain HTTP on purpose (shardline loadtest and the CLI accept only http:// URLs; internal load balancers, no domain or certificate in a throwaway test environment).
  #checkov:skip=CKV2_AWS_28:No WAF: the load balancers are internal (private subnets, reachable from the ops tasks and the client CIDRs only) and every payments/admin request is authenticated by an API key.
  for_each = local.balancers

  name                       = "${var.name}-${each.key == "rebalancer" ? "admin" : each.key}"
  internal                   = true
  load_balancer_type         = "application"
  subnets                    = var.subnet_ids
  security_groups            = [var.security_group_ids["alb"]]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  idle_timeout               = 60
}

resource "aws_lb_target_group" "this" {
  #checkov:skip=CKV_AWS_378:HTTP to the targets: traffic stays inside the VPC between the internal load balancer and the task, and the services serve plain HTTP (no TLS listener in Shardline).
  for_each = local.balancers

  name                 = "${var.name}-${each.key == "rebalancer" ? "admin" : each.key}"
  port                 = each.value.port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = data.aws_subnet.first.vpc_id
  deregistration_delay = 30

  health_check {
    path                = each.key == "router" ? var.router_health_path : each.value.health
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

data "aws_subnet" "first" {
  id = var.subnet_ids[0]
}

resource "aws_lb_listener" "this" {
  #checkov:skip=CKV_AWS_2:HTTP listener on an internal load balancer: shardline loadtest and the CLI accept only http:// URLs (loadtest endpoints check), and there is no domain or certificate in a throwaway test environment.
  #checkov:skip=CKV_AWS_103:No TLS on this listener (see CKV_AWS_2), so no TLS policy to set.
  for_each = local.balancers

  load_balancer_arn = aws_lb.this[each.key].arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this[each.key].arn
  }
}

# /metrics is for the sidecar on localhost, not for clients of the load balancer.
resource "aws_lb_listener_rule" "deny_metrics" {
  for_each = { for k, v in local.balancers : k => v if v.deny_metrics }

  listener_arn = aws_lb_listener.this[each.key].arn
  priority     = 10

  condition {
    path_pattern {
      values = ["/metrics"]
    }
  }

  action {
    type = "fixed-response"
    fixed_response {
      content_type = "text/plain"
      message_body = "not here"
      status_code  = "404"
    }
  }
}
