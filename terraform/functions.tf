# Each function's staged folder (make build) zipped, uploaded under its hash to the
# sources bucket, deployed. A change in one folder changes one object name, and so
# redeploys that function only.

data "archive_file" "source" {
  for_each         = local.sources
  type             = "zip"
  source_dir       = "${var.build_dir}/${each.key}"
  output_path      = "${path.module}/.build/${each.key}.zip"
  output_file_mode = "0644"
}

resource "google_storage_bucket_object" "source" {
  for_each = local.sources
  name     = "functions/${each.key}-${data.archive_file.source[each.key].output_sha256}.zip"
  bucket   = google_storage_bucket.sources.name
  source   = data.archive_file.source[each.key].output_path

  lifecycle {
    precondition {
      condition     = filesha256("${var.build_dir}/${each.key}/piecewise.toml") == filesha256(var.config_file)
      error_message = "The staged ${each.key} folder holds another config than config_file: run `make build DEPLOY_CONFIG=${var.config_file}` again."
    }
    precondition {
      condition     = local.deploy.config_sha256 == filesha256(var.config_file)
      error_message = "${var.build_dir}/deploy.json was written for another config than config_file: run `make build DEPLOY_CONFIG=${var.config_file}` again."
    }
  }
}

resource "google_service_account" "function" {
  for_each     = local.functions
  account_id   = "${var.prefix}-${each.key}"
  display_name = "Piecewise ${each.key} function"
  depends_on   = [google_project_service.apis]
}

# Builds the functions' images, instead of the default Compute Engine or Cloud Build
# account and their project-wide roles: it reads the function sources, writes the build
# logs and the images in this deployment's repository, and nothing else (iam.tf).
resource "google_service_account" "build" {
  account_id   = "${var.prefix}-build"
  display_name = "Piecewise function builds"
  depends_on   = [google_project_service.apis]
}

locals {
  env = {
    ingest = {
      PIECEWISE_CONFIG      = "piecewise.toml"
      PIECEWISE_TOPIC       = google_pubsub_topic.ingested.id
      PIECEWISE_DATES_TOPIC = google_pubsub_topic.dates.id
    }
    "ingest-date" = {
      PIECEWISE_CONFIG = "piecewise.toml"
      PIECEWISE_TOPIC  = google_pubsub_topic.ingested.id
    }
    aggregate = { PIECEWISE_CONFIG = "piecewise.toml" }
    api = {
      PIECEWISE_CONFIG = "piecewise.toml"
      # functions-framework runs gunicorn with WORKERS processes of THREADS threads each
      # (its defaults: one worker, four threads per CPU). One worker per whole CPU, and
      # threads enough for the instance's concurrency.
      WORKERS = local.api_workers
      THREADS = tostring(ceil(var.function_sizes["api"].concurrency / local.api_workers))
      # glibc gives each of a worker's threads a malloc arena of its own, up to eight
      # per CPU: freed memory stays spread over them, so a worker whose caches are full
      # still grew by 12-20 MiB over 20,000 queries, 2-8 MiB with two arenas (and was
      # 17-37 MiB smaller to start with, in one sitting). docs/deploy.md, The API function.
      MALLOC_ARENA_MAX = "2"
    }
    survey = { PIECEWISE_CONFIG = "piecewise.toml" }
  }
  api_workers = tostring(max(1, floor(tonumber(var.function_sizes["api"].cpu))))
  secret_env = {
    # Only where the config downloads from MaxMind with the key: a secret the function
    # names must have a version, or its instances do not start.
    ingest = { for k, v in { (local.geoip_license_key_env) = google_secret_manager_secret.maxmind_license_key.secret_id } : k => v if local.deploy.license_key_needed }
    # The planner refreshes the GeoIP database; a date worker uses the stored one.
    "ingest-date" = {}
    aggregate     = {}
    api           = {}
    survey        = { (local.survey_salt_env) = google_secret_manager_secret.survey_salt.secret_id }
  }
}

resource "google_cloudfunctions2_function" "function" {
  #checkov:skip=CKV_GCP_124:api and survey serve browsers and Cloud Scheduler calls ingest from outside any VPC (OIDC-checked: only its account may invoke); aggregate and ingest-date are internal-only.
  for_each = local.functions
  name     = "${var.prefix}-${each.key}"
  location = var.region

  build_config {
    runtime           = "python311"
    entry_point       = each.value.entry_point
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.source[each.value.source].name
      }
    }
  }

  service_config {
    available_memory                 = var.function_sizes[each.key].memory
    available_cpu                    = var.function_sizes[each.key].cpu
    timeout_seconds                  = var.function_sizes[each.key].timeout
    max_instance_count               = var.function_sizes[each.key].max_instances
    min_instance_count               = 0
    max_instance_request_concurrency = var.function_sizes[each.key].concurrency
    service_account_email            = google_service_account.function[each.key].email
    # Scheduler and browsers come from the internet; Eventarc's push is internal.
    ingress_settings               = contains(keys(local.triggers), each.key) ? "ALLOW_INTERNAL_ONLY" : "ALLOW_ALL"
    all_traffic_on_latest_revision = true
    environment_variables          = local.env[each.key]

    dynamic "secret_environment_variables" {
      for_each = local.secret_env[each.key]
      content {
        key        = secret_environment_variables.key
        project_id = var.project
        secret     = secret_environment_variables.value
        version    = "latest"
      }
    }
  }

  dynamic "event_trigger" {
    for_each = contains(keys(local.triggers), each.key) ? [local.triggers[each.key]] : []
    content {
      trigger_region        = var.region
      event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic          = event_trigger.value
      retry_policy          = "RETRY_POLICY_RETRY"
      service_account_email = google_service_account.trigger.email
    }
  }

  lifecycle {
    precondition {
      condition     = each.key != "survey" || local.survey_collection != ""
      error_message = "config_file's [survey] store is ${jsonencode(local.deploy.survey_store)}: in the cloud it must be store = \"firestore://COLLECTION\" (docs/deploy.md). A SQLite file would lie on one instance's disk, lost when it stops."
    }
  }

  depends_on = [
    google_project_iam_member.build_logs,
    google_project_iam_member.build_source_copies,
    google_storage_bucket_iam_member.build_sources,
    google_artifact_registry_repository_iam_member.build_images,
    google_secret_manager_secret_iam_member.maxmind_license_key,
    google_secret_manager_secret_iam_member.survey_salt,
  ]
}

# --- Scheduler: calls ingest daily, over HTTPS with an OIDC token -------------------------

resource "google_service_account" "scheduler" {
  account_id   = "${var.prefix}-scheduler"
  display_name = "Piecewise scheduler (invokes ingest)"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account" "trigger" {
  account_id   = "${var.prefix}-trigger"
  display_name = "Piecewise Pub/Sub trigger (invokes aggregate and ingest-date)"
  depends_on   = [google_project_service.apis]
}

resource "google_cloud_scheduler_job" "ingest" {
  name      = "${var.prefix}-ingest-daily"
  region    = var.region
  schedule  = var.schedule
  time_zone = var.schedule_time_zone
  # As long as ingest may run (at most 1800 s, the scheduler's limit): a shorter wait
  # would call it again while it runs, and the retry would meet its lock.
  attempt_deadline = "${var.function_sizes["ingest"].timeout}s"
  # Without a body, ingest fills every gap and re-reads the last days (409 while running).
  retry_config {
    retry_count          = 2
    min_backoff_duration = "600s"
  }
  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.function["ingest"].service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.function["ingest"].service_config[0].uri
    }
  }
  depends_on = [google_project_service.apis]
}

# The survey keeps a resident's address only as a salted hash (docs/survey.md): Cloud
# Run's request log of the survey function, which records each caller's address
# (`httpRequest.remoteIp`) beside the time of the post, is not kept. Its own log lines
# name no address.
resource "google_logging_project_exclusion" "survey_requests" {
  name        = "${var.prefix}-survey-requests"
  description = "Piecewise: the survey's request log (each caller's IP address) is not kept."
  filter      = "resource.type = \"cloud_run_revision\" AND resource.labels.service_name = \"${google_cloudfunctions2_function.function["survey"].name}\" AND log_id(\"run.googleapis.com/requests\")"
}
