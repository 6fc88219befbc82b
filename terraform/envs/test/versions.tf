terraform {
  required_version = ">= 1.9.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.94.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7.0"
    }
  }

  # State holds the generated database passwords and the admin API key: keep it
  # in an encrypted, versioned S3 bucket (terraform/README.md shows the init).
  backend "s3" {}
}
