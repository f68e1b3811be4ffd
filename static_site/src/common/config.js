// The runtime config (`config.json` beside the page, written by `piecewise serve` or
// the deployment): where the API, the public data and the survey are, as URLs
// absolute or relative to the page.
import { t } from "./i18n.js";

/** Resolves a configured URL against the page; base URLs keep a trailing slash. */
export function resolveBase(url) {
  const resolved = new URL(url, window.location.href).href;
  return resolved.endsWith("/") ? resolved : `${resolved}/`;
}

/** Loads config.json; throws an Error with a message fit to show on the page. */
export async function loadConfig() {
  let response;
  try {
    response = await fetch(new URL("config.json", window.location.href), { cache: "no-cache" });
  } catch (err) {
    throw new Error(t("site.config_failed", { why: err.message }), { cause: err });
  }
  if (!response.ok) {
    throw new Error(t("site.config_failed", { why: `HTTP ${response.status}` }));
  }
  const raw = await response.json();
  const config = {
    ...raw,
    apiBase: resolveBase(raw.api_url),
    dataBase: resolveBase(raw.data_url),
    surveyBase: resolveBase(raw.survey_url),
  };
  showTableLinks(config);
  return config;
}

/**
 * The table page exists only where `piecewise serve` serves the pages (`table_url`);
 * from a bucket there is none, so the links to it (marked `data-table-link`) go.
 */
export function showTableLinks(config) {
  for (const el of document.querySelectorAll("[data-table-link]")) {
    el.hidden = !config.table_url;
  }
}

/** An API URL: `path` below the configured API base, with the non-null `params`. */
export function apiUrl(config, path, params = {}) {
  const query = Object.entries(params)
    .filter(([, v]) => v != null)
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`)
    .join("&");
  return `${config.apiBase}${path}${query ? `?${query}` : ""}`;
}

/** Fetches JSON, turning HTTP errors into Errors carrying the server's message. */
export async function fetchJson(url, options = {}) {
  const response = await fetch(url, options);
  let body;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = body?.error?.message || body?.message || `HTTP ${response.status}`;
    const err = new Error(message);
    err.status = response.status;
    err.body = body;
    throw err;
  }
  return body;
}
