# Each principal gets what its work needs, on the one resource it works on.
# Public: the api and survey services (allUsers may invoke) and the public bucket's objects.

# --- ingest: M-Lab in BigQuery, the private bucket, the topic, the MaxMind key ----------
# M-Lab's dataset is readable by any signed-in principal: running query jobs in this
# project (billed here) is the only BigQuery role ingest needs.
resource "google_project_iam_member" "ingest_bigquery_jobs" {
  project = var.project
  role    = "roles/bigquery.jobUser"
  member  = google_service_account.function["ingest"].member
}

resource "google_storage_bucket_iam_member" "ingest_private" {
  bucket = google_storage_bucket.private.name
  role   = "roles/storage.objectUser"
  member = google_service_account.function["ingest"].member
}

resource "google_pubsub_topic_iam_member" "ingest_publishes" {
  topic  = google_pubsub_topic.ingested.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.function["ingest"].member
}

# A backfill of more than one date goes out as one message per date.
resource "google_pubsub_topic_iam_member" "ingest_publishes_dates" {
  topic  = google_pubsub_topic.dates.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.function["ingest"].member
}

resource "google_secret_manager_secret_iam_member" "maxmind_license_key" {
  secret_id = google_secret_manager_secret.maxmind_license_key.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function["ingest"].member
}

# --- ingest-date: one date of a backfill; the same data as ingest, without the key -------
resource "google_project_iam_member" "ingest_date_bigquery_jobs" {
  project = var.project
  role    = "roles/bigquery.jobUser"
  member  = google_service_account.function["ingest-date"].member
}

resource "google_storage_bucket_iam_member" "ingest_date_private" {
  bucket = google_storage_bucket.private.name
  role   = "roles/storage.objectUser"
  member = google_service_account.function["ingest-date"].member
}

# The last date of a batch announces the batch to aggregate.
resource "google_pubsub_topic_iam_member" "ingest_date_publishes" {
  topic  = google_pubsub_topic.ingested.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.function["ingest-date"].member
}

# --- aggregate: reads tests and keeps its state in the private bucket, writes the public one
resource "google_storage_bucket_iam_member" "aggregate_private" {
  bucket = google_storage_bucket.private.name
  role   = "roles/storage.objectUser"
  member = google_service_account.function["aggregate"].member
}

resource "google_storage_bucket_iam_member" "aggregate_public" {
  bucket = google_storage_bucket.public.name
  role   = "roles/storage.objectUser"
  member = google_service_account.function["aggregate"].member
}

# The scale engine (`[aggregation] engine = "bigquery"`) runs query and load jobs,
# billed to this project; its tables are in the dataset below, and only there.
resource "google_project_iam_member" "aggregate_bigquery_jobs" {
  project = var.project
  role    = "roles/bigquery.jobUser"
  member  = google_service_account.function["aggregate"].member
}

resource "google_bigquery_dataset_iam_member" "aggregate_scale" {
  dataset_id = google_bigquery_dataset.scale.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.function["aggregate"].member
}

# --- api: reads the public bucket through the client library ---------------------------
resource "google_storage_bucket_iam_member" "api_public" {
  bucket = google_storage_bucket.public.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.function["api"].member
}

# --- survey: Firestore documents, the salt ----------------------------------------------
# Firestore grants are per project; the project holds one database, the survey's.
resource "google_project_iam_member" "survey_firestore" {
  project = var.project
  role    = "roles/datastore.user"
  member  = google_service_account.function["survey"].member
}

resource "google_secret_manager_secret_iam_member" "survey_salt" {
  secret_id = google_secret_manager_secret.survey_salt.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function["survey"].member
}

# --- builds: the functions' images --------------------------------------------------------
resource "google_project_iam_member" "build" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/artifactregistry.writer",
    "roles/storage.objectViewer",
  ])
  project = var.project
  role    = each.value
  member  = google_service_account.build.member
}

# --- who may invoke each function's Cloud Run service ------------------------------------
resource "google_cloud_run_service_iam_member" "scheduler_invokes_ingest" {
  location = var.region
  service  = google_cloudfunctions2_function.function["ingest"].name
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}

resource "google_cloud_run_service_iam_member" "trigger_invokes_aggregate" {
  location = var.region
  service  = google_cloudfunctions2_function.function["aggregate"].name
  role     = "roles/run.invoker"
  member   = google_service_account.trigger.member
}

resource "google_cloud_run_service_iam_member" "trigger_invokes_ingest_date" {
  location = var.region
  service  = google_cloudfunctions2_function.function["ingest-date"].name
  role     = "roles/run.invoker"
  member   = google_service_account.trigger.member
}

resource "google_cloud_run_service_iam_member" "public_invokes" {
  #checkov:skip=CKV_GCP_102:The api and the survey are the public read-only API and the public form; only they are in this set.
  for_each = { for name, f in local.functions : name => f if f.public }
  location = var.region
  service  = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
