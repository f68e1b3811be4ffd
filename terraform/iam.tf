# Each principal gets what its work needs, on the one resource it works on.
# Public: the api and survey services (allUsers may invoke) and the public bucket's objects.

# --- ingest: M-Lab in BigQuery, the private bucket, the topic, the MaxMind key ----------
# M-Lab's tables are readable by the members of its discuss group, and M-Lab adds a service
# account to it on request (docs/deploy.md, step 0): no grant here can give that. Here,
# ingest runs its query jobs in this project (billed here).
resource "google_project_iam_member" "ingest_bigquery_jobs" {
  project    = var.project
  role       = "roles/bigquery.jobUser"
  member     = google_service_account.function["ingest"].member
  depends_on = [google_project_service.apis]

  lifecycle {
    precondition {
      condition     = contains(["", var.project, "measurement-lab"], local.deploy.source_project)
      error_message = "config_file's [source] project is \"${local.deploy.source_project}\": the ingest accounts may run jobs in this project, ${var.project} (granted here), or in M-Lab's, measurement-lab (granted by M-Lab); another project would refuse every query."
    }
  }
}

# Reading query results through the BigQuery Storage Read API opens a read session in
# this project (bigquery.readsessions.create); without it, results come over REST.
resource "google_project_iam_member" "ingest_bigquery_read_sessions" {
  project    = var.project
  role       = "roles/bigquery.readSessionUser"
  member     = google_service_account.function["ingest"].member
  depends_on = [google_project_service.apis]
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
# M-Lab must add this account to its discuss group too (docs/deploy.md, step 0).
resource "google_project_iam_member" "ingest_date_bigquery_jobs" {
  project    = var.project
  role       = "roles/bigquery.jobUser"
  member     = google_service_account.function["ingest-date"].member
  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "ingest_date_bigquery_read_sessions" {
  project    = var.project
  role       = "roles/bigquery.readSessionUser"
  member     = google_service_account.function["ingest-date"].member
  depends_on = [google_project_service.apis]
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

# --- aggregate: reads tests and keeps its state in the private bucket, writes the public data
resource "google_storage_bucket_iam_member" "aggregate_private" {
  bucket = google_storage_bucket.private.name
  role   = "roles/storage.objectUser"
  member = google_service_account.function["aggregate"].member
}

# The public data's folder of the public bucket, and only it: the site's pages, at the
# root, are out of reach. The folder is the one the config's public store names (main.tf,
# local.public_data_prefix), so the grant follows the config. Reads, writes (a rewrite
# deletes the old object, also under the folder) and deletes of stale files.
resource "google_storage_bucket_iam_member" "aggregate_public_data" {
  bucket = google_storage_bucket.public.name
  role   = "roles/storage.objectUser"
  member = google_service_account.function["aggregate"].member
  condition {
    title       = "public-data-only"
    description = "Objects under the public data folder, never the site's pages."
    expression  = "resource.name.startsWith('projects/_/buckets/${google_storage_bucket.public.name}/objects/${local.public_data_prefix}/')"
  }
  lifecycle {
    precondition {
      condition     = local.public_data_prefix != "" && !strcontains(local.public_data_prefix, "//")
      error_message = "config_file's [stores] public must be a folder of the public bucket, gs://${local.public_bucket}/data (docs/deploy.md), not \"${local.public_store}\": aggregate may write that folder only."
    }
  }
}

# Listing (aggregate lists the keys under a folder to drop stale files; gcsfs lists a
# key's prefix to tell a missing file from a folder) is storage.objects.list, a
# permission on the bucket, not on an object: resource.name is then the bucket's name,
# so the condition above never grants it. IAM Conditions name the prefix a list request
# asks for as the API attribute storage.googleapis.com/objectListPrefix; this grant
# admits list requests whose prefix lies in the data folder, and no other request (the
# attribute is empty for them). The public bucket's allUsers read (main.tf) admits any
# listing today; this grant keeps aggregate working if that is ever narrowed.
resource "google_storage_bucket_iam_member" "aggregate_public_list" {
  bucket = google_storage_bucket.public.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.function["aggregate"].member
  condition {
    title       = "list-public-data"
    description = "Lists of the public data folder only."
    expression  = "api.getAttribute('storage.googleapis.com/objectListPrefix', '').startsWith('${local.public_data_prefix}/')"
  }
}

# The scale engine (`[aggregation] engine = "bigquery"`) runs query and load jobs,
# billed to this project; its tables are in the dataset below, and only there. With the
# local engine aggregate runs no job, and may run none (a billed query of anything).
resource "google_project_iam_member" "aggregate_bigquery_jobs" {
  count      = local.deploy.aggregation_engine == "bigquery" ? 1 : 0
  project    = var.project
  role       = "roles/bigquery.jobUser"
  member     = google_service_account.function["aggregate"].member
  depends_on = [google_project_service.apis]
}

resource "google_bigquery_dataset_iam_member" "aggregate_scale" {
  dataset_id = google_bigquery_dataset.scale.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = google_service_account.function["aggregate"].member

  lifecycle {
    precondition {
      condition     = contains(["", var.project], local.deploy.aggregation_project)
      error_message = "config_file's [aggregation] project is \"${local.deploy.aggregation_project}\": the scale engine's dataset and jobs are in this project, ${var.project}; leave project out or name it."
    }
  }
}

# --- api: reads the public bucket through the client library ---------------------------
resource "google_storage_bucket_iam_member" "api_public" {
  bucket = google_storage_bucket.public.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.function["api"].member
}

# --- survey: Firestore documents, the salt ----------------------------------------------
# Firestore grants are per project; the project holds one database, the survey's. The
# public survey stores answers and counts posts: it creates and updates documents and
# reads one by its id (a retried write finds its own), and may not list, query or
# delete them (roles/datastore.user would let a compromised instance read every answer).
resource "google_project_iam_custom_role" "survey_writer" {
  role_id     = replace("${var.prefix}_survey_writer", "-", "_")
  title       = "Piecewise survey writer"
  description = "Create, update and get Firestore documents by id; no list, query or delete."
  permissions = [
    "datastore.databases.getMetadata",
    "datastore.entities.create",
    "datastore.entities.get",
    "datastore.entities.update",
  ]
  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "survey_firestore" {
  project    = var.project
  role       = google_project_iam_custom_role.survey_writer.id
  member     = google_service_account.function["survey"].member
  depends_on = [google_project_service.apis]
}

# aggregate publishes the survey's windows that ended: it reads the responses, never writes.
resource "google_project_iam_member" "aggregate_firestore" {
  project    = var.project
  role       = "roles/datastore.viewer"
  member     = google_service_account.function["aggregate"].member
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_iam_member" "survey_salt" {
  secret_id = google_secret_manager_secret.survey_salt.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function["survey"].member
}

# --- builds: the functions' images --------------------------------------------------------
# What Cloud Functions documents for a build service account (logs, images, sources),
# each on the one resource it concerns rather than on the project.
resource "google_project_iam_member" "build_logs" {
  project    = var.project
  role       = "roles/logging.logWriter"
  member     = google_service_account.build.member
  depends_on = [google_project_service.apis]
}

resource "google_artifact_registry_repository_iam_member" "build_images" {
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build.member
}

# The uploaded sources, where the function's storage_source names them.
resource "google_storage_bucket_iam_member" "build_sources" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

# The copies Cloud Functions makes of them in its own bucket, from which the build
# fetches (main.tf, local.function_source_copies). That bucket appears with the first
# deployment, so the grant is on the project, conditioned on the objects of that one
# bucket: a condition needs no resource to exist yet.
resource "google_project_iam_member" "build_source_copies" {
  project = var.project
  role    = "roles/storage.objectViewer"
  member  = google_service_account.build.member
  condition {
    title       = "function-source-copies"
    description = "Cloud Functions' copies of the function sources only."
    expression  = "resource.name.startsWith('projects/_/buckets/${local.function_source_copies}/objects/')"
  }
  depends_on = [google_project_service.apis]
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
