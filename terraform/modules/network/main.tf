# Private-only network: no internet gateway, no NAT. Images, logs, secrets and
# metrics go through VPC endpoints; container images from public registries come
# through ECR pull-through cache rules (ECR fetches them, not the VPC).

data "aws_region" "current" {}

data "aws_availability_zones" "pinned" {
  state = "available"

  filter {
    name   = "zone-name"
    values = [for z in var.zone_suffixes : "${data.aws_region.current.name}${z}"]
  }
}

locals {
  azs     = data.aws_availability_zones.pinned.names
  zones   = length(var.zone_suffixes)
  newbits = 20 - tonumber(split("/", var.vpc_cidr)[1])

  # Who talks to whom. Each flow becomes an ingress rule on `to` and an egress
  # rule on `from`, both naming the other security group: nothing is opened to a
  # CIDR except the load balancers' client CIDRs, the endpoints and S3.
  flows = {
    alb_router          = { from = "alb", to = "router", port = 8080, what = "router API behind the load balancer" }
    alb_edge            = { from = "alb", to = "edge", port = 8090, what = "edge read API behind the load balancer" }
    alb_rebalancer      = { from = "alb", to = "rebalancer", port = 8070, what = "rebalancer admin API and dashboard behind the load balancer" }
    ops_alb             = { from = "ops", to = "alb", port = 80, what = "load test and operator tasks to the load balancers" }
    router_catalog      = { from = "router", to = "catalog", port = 5432, what = "router reads the range map and API keys, writes load samples" }
    router_shard        = { from = "router", to = "shard", port = 5432, what = "router transactions on the owning shard" }
    rebalancer_catalog  = { from = "rebalancer", to = "catalog", port = 5432, what = "move state machine, leader lock, policy decisions" }
    rebalancer_shard    = { from = "rebalancer", to = "shard", port = 5432, what = "publications, subscriptions, fencing, verification" }
    replicator_shard    = { from = "replicator", to = "shard", port = 5432, what = "logical decoding of the shard (pgoutput slot)" }
    replicator_nats     = { from = "replicator", to = "nats", port = 4222, what = "publish committed transactions to JetStream" }
    edge_nats           = { from = "edge", to = "nats", port = 4222, what = "consume the CDC streams" }
    edge_catalog        = { from = "edge", to = "catalog", port = 5432, what = "edge reads the range map" }
    ops_catalog         = { from = "ops", to = "catalog", port = 5432, what = "migrations and the load test verifier" }
    ops_shard           = { from = "ops", to = "shard", port = 5432, what = "migrations and the load test verifier" }
    shard_shard         = { from = "shard", to = "shard", port = 5432, what = "a move subscribes the target shard to the source" }
    nats_nats_routes    = { from = "nats", to = "nats", port = 6222, what = "NATS cluster routes" }
    router_endpoints    = { from = "router", to = "endpoints", port = 443, what = "AWS APIs through VPC endpoints" }
    edge_endpoints      = { from = "edge", to = "endpoints", port = 443, what = "AWS APIs through VPC endpoints" }
    rebalancer_endpoint = { from = "rebalancer", to = "endpoints", port = 443, what = "AWS APIs through VPC endpoints" }
    replicator_endpoint = { from = "replicator", to = "endpoints", port = 443, what = "AWS APIs through VPC endpoints" }
    ops_endpoints       = { from = "ops", to = "endpoints", port = 443, what = "AWS APIs through VPC endpoints" }
    nats_endpoints      = { from = "nats", to = "endpoints", port = 443, what = "AWS APIs through VPC endpoints (SSM, ECR, logs)" }
  }

  groups = {
    alb        = "internal load balancers (router, edge, rebalancer admin)"
    router     = "router tasks"
    edge       = "edge tasks"
    rebalancer = "rebalancer tasks (leader and standby)"
    replicator = "replicator tasks (one per shard)"
    ops        = "one-off tasks: migrations, load test"
    catalog    = "catalog database"
    shard      = "shard databases"
    nats       = "NATS JetStream nodes"
    endpoints  = "interface VPC endpoints"
  }

  # Everything that pulls images or reads S3 (image layers, reports, OS packages).
  s3_clients = ["router", "edge", "rebalancer", "replicator", "ops", "nats"]
  otlp_clients = {
    for pair in setproduct(["router", "edge", "rebalancer", "replicator", "ops"], var.otlp_cidrs) :
    "${pair[0]}_${replace(pair[1], "/[./]/", "_")}" => { group = pair[0], cidr = pair[1] }
  }
  alb_clients = { for c in var.client_cidrs : replace(c, "/[./]/", "_") => c }
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = var.name }
}

# The default security group of the VPC allows nothing.
resource "aws_default_security_group" "default" {
  vpc_id = aws_vpc.this.id
}

resource "aws_subnet" "private" {
  count = local.zones

  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, local.newbits, count.index)
  map_public_ip_on_launch = false

  tags = { Name = "${var.name}-private-${local.azs[count.index]}", Tier = "private" }
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-private" }
}

resource "aws_route_table_association" "private" {
  count = local.zones

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

resource "aws_security_group" "this" {
  #checkov:skip=CKV2_AWS_5:Each group is attached in another module (services, catalog, shard, nats) through the security_group_ids output; checkov's graph does not follow this for_each map through module outputs.
  for_each = local.groups

  name        = "${var.name}-${each.key}"
  description = "Shardline ${each.value}"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${var.name}-${each.key}" }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "flow" {
  #checkov:skip=CKV_AWS_260:False positive: every flow rule names a referenced_security_group_id and no CIDR (the ops -> alb rule on port 80 included); the check only recognises cidr_ipv4 and legacy source_security_group_id.
  for_each = local.flows

  security_group_id            = aws_security_group.this[each.value.to].id
  referenced_security_group_id = aws_security_group.this[each.value.from].id
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  description                  = "from ${each.value.from}: ${each.value.what}"
}

resource "aws_vpc_security_group_egress_rule" "flow" {
  for_each = local.flows

  security_group_id            = aws_security_group.this[each.value.from].id
  referenced_security_group_id = aws_security_group.this[each.value.to].id
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
  description                  = "to ${each.value.to}: ${each.value.what}"
}

resource "aws_vpc_security_group_ingress_rule" "alb_clients" {
  for_each = local.alb_clients

  security_group_id = aws_security_group.this["alb"].id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  description       = "clients of the internal load balancers"
}

resource "aws_vpc_security_group_egress_rule" "s3" {
  for_each = toset(local.s3_clients)

  security_group_id = aws_security_group.this[each.key].id
  prefix_list_id    = aws_vpc_endpoint.s3.prefix_list_id
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "S3 through the gateway endpoint (image layers, reports, OS packages)"
}

resource "aws_vpc_security_group_egress_rule" "otlp" {
  for_each = local.otlp_clients

  security_group_id = aws_security_group.this[each.value.group].id
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = 4317
  to_port           = 4318
  description       = "OTLP traces to the collector"
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]

  tags = { Name = "${var.name}-s3" }
}

resource "aws_vpc_endpoint" "interface" {
  for_each = toset(var.interface_endpoints)

  vpc_id              = aws_vpc.this.id
  service_name        = "com.amazonaws.${data.aws_region.current.name}.${each.key}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.this["endpoints"].id]

  tags = { Name = "${var.name}-${each.key}" }
}

# Flow logs of the whole VPC (rejected and accepted), encrypted with the CMK.
resource "aws_cloudwatch_log_group" "flow" {
  name              = "/shardline/${var.name}/vpc-flow"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

data "aws_iam_policy_document" "flow_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "flow_write" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow.arn}:*"]
  }
}

resource "aws_iam_role" "flow" {
  name               = "${var.name}-vpc-flow"
  assume_role_policy = data.aws_iam_policy_document.flow_assume.json
}

resource "aws_iam_role_policy" "flow" {
  name   = "write-flow-logs"
  role   = aws_iam_role.flow.id
  policy = data.aws_iam_policy_document.flow_write.json
}

resource "aws_flow_log" "vpc" {
  vpc_id          = aws_vpc.this.id
  traffic_type    = "ALL"
  log_destination = aws_cloudwatch_log_group.flow.arn
  iam_role_arn    = aws_iam_role.flow.arn
}
