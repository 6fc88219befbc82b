provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "shardline"
      Environment = var.name
      ManagedBy   = "terraform"
    }
  }
}
