output "url" {
  description = "NATS client URL listing every node (nats://a:4222,nats://b:4222,...)."
  value       = join(",", [for a in local.addresses : "nats://${a}:4222"])
}

output "addresses" {
  description = "Fixed private addresses of the nodes."
  value       = local.addresses
}

output "instance_ids" {
  description = "EC2 instance IDs of the nodes."
  value       = aws_instance.node[*].id
}
