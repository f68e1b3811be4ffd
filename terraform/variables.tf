variable "project" {
  description = "Google Cloud project id (billing enabled)."
  type        = string
}

variable "region" {
  description = "Region of the functions, buckets, topic and scheduler job."
  type        = string
  default     = "us-central1"
}

variable "prefix" {
  description = "Prefix of every name (buckets get the project id after it, to be globally unique)."
  type        = string
  default     = "piecewise"
  validation {
    # Service account ids are at most 30 characters: prefix + "-aggregate-run".
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.prefix))
    error_message = "prefix: 2 to 16 lowercase letters, digits and -, starting with a letter."
  }
}

variable "schedule" {
  description = "When Cloud Scheduler calls ingest (cron, in schedule_time_zone). M-Lab's day lands by about 08:00 UTC."
  type        = string
  default     = "30 9 * * *"
}

variable "schedule_time_zone" {
  description = "Time zone of the schedule."
  type        = string
  default     = "Etc/UTC"
}

variable "config_file" {
  description = "The piecewise TOML the functions get: the same file given to `make build DEPLOY_CONFIG=...` (its staged copy is checked against it)."
  type        = string
}

variable "build_dir" {
  description = "Where `make build` staged the function folders."
  type        = string
  default     = "../build/functions"
}

variable "site_origins" {
  description = "Origins whose pages may read the public bucket with Range requests (CORS). The data is public: \"*\" lets anyone's map use it."
  type        = list(string)
  default     = ["*"]
}

variable "firestore_location" {
  description = "Firestore location (a region such as us-central1, or a multi-region such as nam5)."
  type        = string
  default     = "nam5"
}

variable "bigquery_location" {
  description = "Location of the BigQuery dataset of the scale engine; M-Lab's tables are in US."
  type        = string
  default     = "US"
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete non-empty buckets. Off: empty them first (docs/deploy.md)."
  type        = bool
  default     = false
}

variable "function_sizes" {
  description = "Per function: memory, CPUs, timeout (s), most instances, concurrent requests per instance."
  type = map(object({
    memory        = string
    cpu           = string
    timeout       = number
    max_instances = number
    concurrency   = number
  }))
  default = {
    # One run at a time (the store lock); enrichment and Parquet of a day's tests.
    ingest = { memory = "4Gi", cpu = "2", timeout = 1800, max_instances = 1, concurrency = 1 }
    # One date per instance (its lock keeps a date to one worker); instances side by side.
    "ingest-date" = { memory = "4Gi", cpu = "2", timeout = 540, max_instances = 10, concurrency = 1 }
    # DuckDB over the periods holding the dates; 540 s is the most an event function gets.
    aggregate = { memory = "8Gi", cpu = "2", timeout = 540, max_instances = 1, concurrency = 1 }
    # Read-only; one gunicorn worker per CPU (a Python process runs on one core at a
    # time), each with its own caches of decoded files and answers (api.data_cache_mb,
    # default 768 MiB, and api.response_cache_mb): memory for two of them and headroom.
    api = { memory = "4Gi", cpu = "2", timeout = 60, max_instances = 10, concurrency = 16 }
    # Small posts, I/O bound on Firestore.
    survey = { memory = "512Mi", cpu = "1", timeout = 30, max_instances = 5, concurrency = 8 }
  }
  # A map given replaces the default whole: every function must be in it.
  validation {
    condition     = length(setsubtract(["ingest", "ingest-date", "aggregate", "api", "survey"], keys(var.function_sizes))) == 0
    error_message = "function_sizes must size every function: ingest, ingest-date, aggregate, api and survey (a map given replaces the default whole)."
  }
  # Cloud Functions' limits: 540 s for a function an event triggers, 3600 s over HTTP;
  # Cloud Scheduler waits 1800 s at most for ingest, which must answer within that.
  validation {
    condition = alltrue([
      for name, size in var.function_sizes :
      size.timeout >= (name == "ingest" ? 15 : 1) && size.timeout <= (contains(["aggregate", "ingest-date"], name) ? 540 : (name == "ingest" ? 1800 : 3600))
    ])
    error_message = "function_sizes: a timeout is at most 540 s for aggregate and ingest-date (event functions), 15 to 1800 s for ingest (the scheduler's shortest and longest wait) and at most 3600 s for api and survey."
  }
}

variable "billing_account" {
  description = "The project's billing account (XXXXXX-XXXXXX-XXXXXX): with monthly_budget, a budget of this project's costs whose alerts email the account's Billing Account Administrators and Users. Empty: no budget."
  type        = string
  default     = ""
  validation {
    condition     = var.billing_account == "" || can(regex("^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$", var.billing_account))
    error_message = "billing_account is a billing account id, six capital letters or digits three times with dashes (gcloud billing projects describe PROJECT), or empty for no budget."
  }
}

variable "monthly_budget" {
  description = "The project's monthly budget, in whole units of the billing account's currency: an email at half of it, at 90 % and at all of it spent, and when the month's forecast passes it. 0: no budget. Alerts only: nothing is stopped (source.maximum_bytes_per_run caps a run)."
  type        = number
  default     = 0
  validation {
    condition     = var.monthly_budget >= 0 && floor(var.monthly_budget) == var.monthly_budget
    error_message = "monthly_budget is a whole number of the billing account's currency units (0: no budget)."
  }
}
