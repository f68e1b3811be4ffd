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
  config_text = file(var.config_file)
  # The environment variable names the config chooses (geoip.license_key_env,
  # survey.salt_env); those keys exist only in their tables, so a line match suffices.
  geoip_license_key_env = try(regex("(?m)^\\s*license_key_env\\s*=\\s*\"([A-Za-z_][A-Za-z0-9_]*)\"", local.config_text)[0], "MAXMIND_LICENSE_KEY")
  survey_salt_env       = try(regex("(?m)^\\s*salt_env\\s*=\\s*\"([A-Za-z_][A-Za-z0-9_]*)\"", local.config_text)[0], "PIECEWISE_SURVEY_SALT")

  private_bucket = "${var.prefix}-private-${var.project}"
  public_bucket  = "${var.prefix}-public-${var.project}"
  public_base    = "https://storage.googleapis.com/${google_storage_bucket.public.name}"
}

resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "eventarc.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}

# --- Buckets -----------------------------------------------------------------------------

# Tests Parquet, manifests, run state, GeoIP copies and the function sources: never public.
resource "google_storage_bucket" "private" {
  #checkov:skip=CKV_GCP_62:Usage logs would need a third bucket; Cloud Audit Logs record access to this one.
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

# The site (static_site/dist), the public data (data/v1/...: statistics, tiles): public.
resource "google_storage_bucket" "public" {
  #checkov:skip=CKV_GCP_62:Usage logs would need a third bucket; the data is public and rebuilt from the private bucket.
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

# Where the scale engine (BigQuery aggregation of large regions) keeps its tables.
resource "google_bigquery_dataset" "scale" {
  #checkov:skip=CKV_GCP_81:Google-managed encryption; a customer key would add a KMS key ring for intermediate tables only.
  dataset_id                 = replace("${var.prefix}_scale", "-", "_")
  location                   = var.bigquery_location
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
