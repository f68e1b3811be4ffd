locals {
  # The staged folders (make build) and what Terraform knows of each function.
  # Each function: its folder under functions/ (`source`), its entry point in that
  # folder's main.py, and whether anyone may call it. ingest-date is the per-date worker
  # of a backfill, deployed from the ingest folder.
  functions = {
    ingest        = { source = "ingest", entry_point = "ingest", public = false }
    "ingest-date" = { source = "ingest", entry_point = "ingest_date", public = false }
    aggregate     = { source = "aggregate", entry_point = "aggregate", public = false }
    api           = { source = "api", entry_point = "api", public = true }
    survey        = { source = "survey", entry_point = "survey", public = true }
  }
  sources = toset([for f in local.functions : f.source])
  # The functions a Pub/Sub topic triggers, and the topic.
  triggers = {
    aggregate     = google_pubsub_topic.ingested.id
    "ingest-date" = google_pubsub_topic.dates.id
  }
  # What the staged config says, as the package's own loader reads it: `make build`
  # writes deploy.json beside the staged folders (infra/stage.py), since Terraform cannot
  # read TOML (a line match took `salt_env = 'X'` for the default, and an inline table
  # for nothing). Its hash of the config lets a plan refuse a stale build.
  deploy = jsondecode(file("${var.build_dir}/deploy.json"))
  # The environment variable names the config chooses (geoip.license_key_env,
  # survey.salt_env), and whether ingest needs the MaxMind key at all.
  geoip_license_key_env = local.deploy.license_key_env
  survey_salt_env       = local.deploy.salt_env
  # The survey's Firestore collection (`[survey] store = "firestore://COLLECTION"`),
  # whose rate counters get a TTL policy below; "" for a SQLite file, which a plan
  # refuses (functions.tf): an instance's disk is gone when it stops.
  survey_collection = local.deploy.survey_collection

  private_bucket = "${var.prefix}-private-${var.project}"
  public_bucket  = "${var.prefix}-public-${var.project}"
  sources_bucket = "${var.prefix}-sources-${var.project}"
  public_base    = "https://storage.googleapis.com/${google_storage_bucket.public.name}"

  # The public store as the config names it (`[stores] public`): gs://<public
  # bucket>/<folder>. That folder holds the public data (v1/...); the site's pages lie
  # beside it, at the bucket's root. The folder is all of the public bucket aggregate
  # may write (iam.tf) and where data_url points: both are read from the config the
  # functions run with, so neither can drift from it.
  public_store       = local.deploy.public_store
  public_data_prefix = startswith(local.public_store, "gs://${local.public_bucket}/") ? trim(trimprefix(local.public_store, "gs://${local.public_bucket}/"), "/") : ""

  # Cloud Functions copies each function's source object into this bucket of its own
  # (named in "Build process overview" of the Cloud Functions docs; created at the first
  # deployment, not by Terraform), and the build fetches the copy from there.
  function_source_copies = "gcf-v2-sources-${data.google_project.this.number}-${var.region}"
}

data "google_project" "this" {
  project_id = var.project
  lifecycle {
    # Checked here, where every plan reads it: on the budget, one of the two missing
    # would leave no budget to check, and none made without a word.
    precondition {
      condition     = (var.billing_account == "") == (var.monthly_budget == 0)
      error_message = "billing_account and monthly_budget go together: set both for a budget, or neither."
    }
  }
}

# --- Budget --------------------------------------------------------------------------------

locals {
  budget = var.billing_account != "" && var.monthly_budget > 0
}

# BigQuery's scans of M-Lab's views are nearly all of the bill (docs/deploy.md, What it
# costs): an email to the billing account's administrators and users at half, 90 % and
# all of the month's budget spent, and when the month's forecast passes it. An alert,
# not a cap.
resource "google_billing_budget" "project" {
  count           = local.budget ? 1 : 0
  provider        = google.billing
  billing_account = var.billing_account
  display_name    = "${var.prefix} monthly"
  budget_filter {
    projects        = ["projects/${data.google_project.this.number}"]
    calendar_period = "MONTH"
  }
  amount {
    specified_amount {
      units = tostring(var.monthly_budget)
    }
  }
  threshold_rules {
    threshold_percent = 0.5
  }
  threshold_rules {
    threshold_percent = 0.9
  }
  threshold_rules {
    threshold_percent = 1.0
  }
  threshold_rules {
    threshold_percent = 1.0
    spend_basis       = "FORECASTED_SPEND"
  }
  depends_on = [google_project_service.apis]
}

resource "google_project_service" "apis" {
  for_each = toset(concat([
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "eventarc.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ], local.budget ? ["billingbudgets.googleapis.com"] : []))
  service            = each.value
  disable_on_destroy = false
}

# --- Buckets -----------------------------------------------------------------------------

# Tests Parquet, manifests, run state and GeoIP copies: never public.
resource "google_storage_bucket" "private" {
  #checkov:skip=CKV_GCP_62:Usage logs would need a logs bucket of their own; Cloud Audit Logs record access to this one.
  name                        = local.private_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  versioning {
    enabled = true
  }
  # A rewritten or deleted object stays recoverable for a week, then goes.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [google_project_service.apis]
}

# The functions' zipped sources (functions.tf), read by the build account only: no
# function's runtime account has any grant here (iam.tf).
resource "google_storage_bucket" "sources" {
  #checkov:skip=CKV_GCP_62:Usage logs would need a logs bucket of their own; Cloud Audit Logs record access to this one, and it holds only code that is in the repository.
  name                        = local.sources_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  # Objects are named by their content hash and never rewritten; a replaced one (a new
  # build of that function) stays recoverable for a week, then goes.
  versioning {
    enabled = true
  }
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }
  depends_on = [google_project_service.apis]
}

# The functions' images, built by the build account (functions.tf) and pushed here
# instead of the default gcf-artifacts repository, so that its write grant covers this
# repository only (iam.tf). Each function's most recent images are kept; older ones go.
resource "google_artifact_registry_repository" "functions" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption; the images hold the functions' open code and pinned packages, nothing secret, and a customer key would add a KMS key ring for them only.
  location      = var.region
  repository_id = "${var.prefix}-functions"
  format        = "DOCKER"
  description   = "Piecewise: the functions' images."
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s" # 30 days
    }
  }
  depends_on = [google_project_service.apis]
}

# The site (static_site/dist) at the root, the public data (<folder>/v1/...: statistics,
# tiles) under the folder the config's public store names (local.public_data_prefix).
resource "google_storage_bucket" "public" {
  #checkov:skip=CKV_GCP_62:Usage logs would need a logs bucket of their own; the data is public and rebuilt from the private bucket.
  #checkov:skip=CKV_GCP_78:Versions would only multiply the daily rewritten tiles; everything here is rebuilt from the private bucket.
  #checkov:skip=CKV_GCP_114:This bucket is public on purpose (site and aggregate data); the private one enforces prevention.
  name                        = local.public_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "inherited"
  force_destroy               = var.force_destroy
  website {
    main_page_suffix = "index.html"
  }
  # PMTiles reads byte ranges: the browser must send Range and see ETag.
  cors {
    origin          = var.site_origins
    method          = ["GET", "HEAD"]
    response_header = ["Range", "If-Match", "Content-Type", "ETag", "Content-Range", "Content-Length", "Accept-Ranges"]
    max_age_seconds = 3600
  }
  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "public_read" {
  #checkov:skip=CKV_GCP_28:The public bucket serves the site and aggregate-only data to everyone by design.
  bucket = google_storage_bucket.public.name
  role   = "roles/storage.objectViewer"
  member = "allUsers"
}

# --- Firestore, BigQuery, Pub/Sub, secrets -------------------------------------------------

resource "google_firestore_database" "survey" {
  name        = "(default)"
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"
  # `terraform destroy` leaves the database and its responses (the provider's default).
  deletion_policy = "ABANDON"
  depends_on      = [google_project_service.apis]
}

# The survey's rate counters (COLLECTION-rate, one document per client hash and window)
# are deleted by Firestore once their window has ended (`expires_at`), as the SQLite store
# prunes them: no lasting record of who posted when.
resource "google_firestore_field" "survey_rate_expiry" {
  count      = local.survey_collection == "" ? 0 : 1
  project    = var.project
  database   = google_firestore_database.survey.name
  collection = "${local.survey_collection}-rate"
  field      = "expires_at"
  ttl_config {}
  # Read by id only: no single-field index on the timestamp.
  index_config {}
}

# Where the scale engine (BigQuery aggregation of large regions) keeps its tables: the
# dataset the config names (`[aggregation] dataset`, with engine = "bigquery"), made
# here because aggregate's account may not create datasets; PREFIX_scale otherwise.
resource "google_bigquery_dataset" "scale" {
  #checkov:skip=CKV_GCP_81:Google-managed encryption; a customer key would add a KMS key ring for intermediate tables only.
  dataset_id                 = local.deploy.aggregation_dataset != "" ? local.deploy.aggregation_dataset : replace("${var.prefix}_scale", "-", "_")
  location                   = local.deploy.aggregation_location != "" ? local.deploy.aggregation_location : var.bigquery_location
  description                = "Piecewise: working tables of the scale engine."
  delete_contents_on_destroy = false
  depends_on                 = [google_project_service.apis]
}

resource "google_pubsub_topic" "ingested" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; the messages hold only dates.
  name                       = "${var.prefix}-ingested"
  message_retention_duration = "86400s"
  depends_on                 = [google_project_service.apis]
}

# One message per date of a backfill, from ingest to its per-date workers.
resource "google_pubsub_topic" "dates" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; the messages hold only dates.
  name                       = "${var.prefix}-ingest-dates"
  message_retention_duration = "86400s"
  depends_on                 = [google_project_service.apis]
}

# The values are not in Terraform (nor in its state): `gcloud secrets versions add`.
resource "google_secret_manager_secret" "maxmind_license_key" {
  secret_id = "${var.prefix}-maxmind-license-key"
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret" "survey_salt" {
  secret_id = "${var.prefix}-survey-salt"
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}
