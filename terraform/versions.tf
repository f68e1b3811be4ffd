terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.4"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

# The Budget API takes a call only on behalf of a project that has it enabled (a quota
# project): with a user's credentials it has none, so the budget's calls name this one.
provider "google" {
  alias                 = "billing"
  project               = var.project
  region                = var.region
  user_project_override = true
  billing_project       = var.project
}
