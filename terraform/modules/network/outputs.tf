output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "IPv4 CIDR of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Private subnet IDs, one per availability zone, in zone order."
  value       = aws_subnet.private[*].id
}

output "private_subnet_cidrs" {
  description = "Private subnet CIDRs, in the same order as private_subnet_ids."
  value       = aws_subnet.private[*].cidr_block
}

output "availability_zones" {
  description = "Availability zones of the private subnets, in the same order."
  value       = local.azs
}

output "security_group_ids" {
  description = "Security group ID per role: alb, router, edge, rebalancer, replicator, ops, catalog, shard, nats, endpoints."
  value       = { for k, sg in aws_security_group.this : k => sg.id }
}
