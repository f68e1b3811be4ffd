output "site_url" {
  description = "The map (the public bucket's index.html)."
  value       = "${local.public_base}/index.html"
}

output "data_url" {
  description = "Base URL of the public data (site.data_url): the folder of the public bucket that the config's public store names."
  value       = "${local.public_base}/${local.public_data_prefix}/"
}

output "api_url" {
  description = "Base URL of the statistics API (site.api_url)."
  value       = "${google_cloudfunctions2_function.function["api"].service_config[0].uri}/v1"
}

output "survey_url" {
  description = "Base URL of the survey (site.survey_url)."
  value       = "${google_cloudfunctions2_function.function["survey"].service_config[0].uri}/v1/survey"
}

output "ingest_url" {
  description = "The ingest function (not public: call it with an identity token)."
  value       = google_cloudfunctions2_function.function["ingest"].service_config[0].uri
}

output "private_bucket" {
  value = google_storage_bucket.private.name
}

output "public_bucket" {
  value = google_storage_bucket.public.name
}

output "sources_bucket" {
  description = "The functions' zipped sources (read by the build account only)."
  value       = google_storage_bucket.sources.name
}

output "image_repository" {
  description = "The Artifact Registry repository of the functions' images."
  value       = google_artifact_registry_repository.functions.id
}

output "topic" {
  value = google_pubsub_topic.ingested.id
}

output "bigquery_dataset" {
  value = google_bigquery_dataset.scale.dataset_id
}

output "secrets" {
  description = "Add their values with `gcloud secrets versions add` (docs/deploy.md)."
  value = {
    maxmind_license_key = google_secret_manager_secret.maxmind_license_key.secret_id
    survey_salt         = google_secret_manager_secret.survey_salt.secret_id
  }
}
