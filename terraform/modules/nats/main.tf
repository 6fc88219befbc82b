# A NATS JetStream cluster on EC2: each node has a fixed private address (static
# cluster routes) and a separate encrypted gp3 volume, so a replaced instance
# finds its stream data again. EC2 + EBS rather than Fargate + EFS: JetStream with
# sync_interval: always fsyncs every message, which wants a block device.

data "aws_region" "current" {}

locals {
  arch      = can(regex("^[a-z]+[0-9]+g[a-z]*\\.", var.instance_type)) ? "arm64" : "x86_64"
  addresses = [for i in range(var.node_count) : cidrhost(var.subnet_cidrs[i % length(var.subnet_cidrs)], 10 + floor(i / length(var.subnet_cidrs)))]
  registry  = split("/", var.nats_image)[0]
  # JetStream may use 90 % of the volume; the rest is for the file system.
  max_file_store = "${floor(var.volume_size_gb * 0.9)}GB"
}

data "aws_ssm_parameter" "ami" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${local.arch}"
}

data "aws_subnet" "node" {
  count = var.node_count
  id    = var.subnet_ids[count.index % length(var.subnet_ids)]
}

resource "aws_cloudwatch_log_group" "nats" {
  name              = "/shardline/${var.name}/nats"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "node" {
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid = "PullNatsImage"
    actions = [
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchImportUpstreamImage",
      "ecr:CreateRepository",
    ]
    resources = ["arn:aws:ecr:${data.aws_region.current.name}:*:repository/ecr-public/*"]
  }
  statement {
    sid       = "ServerLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.nats.arn}:*"]
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-nats"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "node" {
  name   = "nats-node"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.node.json
}

# Shell access through SSM Session Manager (no SSH, no key pairs).
resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.node.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "node" {
  name = "${var.name}-nats"
  role = aws_iam_role.node.name
}

resource "aws_ebs_volume" "data" {
  count = var.node_count

  availability_zone = data.aws_subnet.node[count.index].availability_zone
  size              = var.volume_size_gb
  type              = "gp3"
  iops              = var.volume_iops
  throughput        = var.volume_throughput
  encrypted         = true
  kms_key_id        = var.kms_key_arn

  tags = { Name = "${var.name}-nats-${count.index + 1}-data" }
}

resource "aws_instance" "node" {
  count = var.node_count

  ami                         = data.aws_ssm_parameter.ami.insecure_value
  instance_type               = var.instance_type
  subnet_id                   = data.aws_subnet.node[count.index].id
  private_ip                  = local.addresses[count.index]
  vpc_security_group_ids      = [var.security_group_id]
  iam_instance_profile        = aws_iam_instance_profile.node.name
  associate_public_ip_address = false
  ebs_optimized               = true
  monitoring                  = true

  user_data = templatefile("${path.module}/templates/user-data.sh.tftpl", {
    server_name    = "${var.name}-nats-${count.index + 1}"
    cluster_name   = var.name
    routes         = local.addresses
    volume_serial  = replace(aws_ebs_volume.data[count.index].id, "-", "")
    max_file_store = local.max_file_store
    registry       = local.registry
    region         = data.aws_region.current.name
    image          = var.nats_image
    log_group      = aws_cloudwatch_log_group.nats.name
  })
  user_data_replace_on_change = true

  metadata_options {
    http_tokens                 = "required"
    http_endpoint               = "enabled"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = 20
    encrypted   = true
    kms_key_id  = var.kms_key_arn
  }

  lifecycle {
    ignore_changes = [ami]
  }

  tags = { Name = "${var.name}-nats-${count.index + 1}" }
}

resource "aws_volume_attachment" "data" {
  count = var.node_count

  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.data[count.index].id
  instance_id = aws_instance.node[count.index].id
}

# A node whose host fails its system status check is recovered in place (same
# instance id, private address and volume).
resource "aws_cloudwatch_metric_alarm" "recover" {
  count = var.node_count

  alarm_name          = "${var.name}-nats-${count.index + 1}-recover"
  alarm_description   = "Recover NATS node ${count.index + 1} when its host fails"
  namespace           = "AWS/EC2"
  metric_name         = "StatusCheckFailed_System"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  dimensions          = { InstanceId = aws_instance.node[count.index].id }
  alarm_actions       = ["arn:aws:automate:${data.aws_region.current.name}:ec2:recover"]
}
