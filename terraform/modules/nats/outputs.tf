output "url" {
  description = "NATS client URL of the first node: Shardline's client (async-nats) takes one server address and learns the other nodes from the cluster's INFO gossip."
  value       = "nats://${local.addresses[0]}:4222"
}

output "urls" {
  description = "Client URL of every node."
  value       = [for a in local.addresses : "nats://${a}:4222"]
}

output "addresses" {
  description = "Fixed private addresses of the nodes."
  value       = local.addresses
}

output "instance_ids" {
  description = "EC2 instance IDs of the nodes."
  value       = aws_instance.node[*].id
}

output "node_count" {
  description = "JetStream cluster size (the most replicas a stream can have)."
  value       = var.node_count
}
