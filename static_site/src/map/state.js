// The map's state in the URL's hash (`#layer=counties&metric=median&...`), so a view
// can be shared and restored. Control changes push a history entry; map moves replace
// the current one.

import { ALL_ISPS, DIRECTIONS } from "../common/vocabulary.js";

const ORDER = ["layer", "hours", "metric", "direction", "kind", "period", "isp", "area", "map"];
const KIND_PREFERENCE = ["month", "quarter", "year", "day"];
// eslint-disable-next-line no-control-regex -- control characters are what it refuses
const AREA_ID = /^[^_/\\?#%\x00-\x1f\x7f][^/\\?#%\x00-\x1f\x7f]*$/;

/** The raw values in the current hash. */
export function readHash(hash = window.location.hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const out = {};
  for (const key of ORDER) {
    const value = params.get(key);
    if (value != null && value !== "") out[key] = value;
  }
  return out;
}

/** `zoom/lat/lng` → {zoom, center: [lng, lat]}, or null. */
export function parseView(text) {
  const m = /^(\d+(?:\.\d+)?)\/(-?\d+(?:\.\d+)?)\/(-?\d+(?:\.\d+)?)$/.exec(text || "");
  if (!m) return null;
  const zoom = Number(m[1]);
  const lat = Number(m[2]);
  const lng = Number(m[3]);
  if (zoom > 24 || Math.abs(lat) > 85.06 || Math.abs(lng) > 180) return null;
  return { zoom, center: [lng, lat] };
}

export function formatView(map) {
  const c = map.getCenter();
  const zoom = map.getZoom();
  const digits = Math.max(2, Math.ceil(Math.log2(Math.max(1, zoom))) + 1);
  return `${zoom.toFixed(2)}/${c.lat.toFixed(digits)}/${c.lng.toFixed(digits)}`;
}

/**
 * A complete, valid state from raw values and the index: anything unknown falls back
 * to a default (the first layer, median download, the newest month, all ISPs).
 */
export function normalise(raw, index, metrics) {
  // Evening twins are shown through `hours`, not as layers of their own: a link naming
  // a twin as its layer opens its layer in the evening hours.
  const layers = (index.layers || []).filter((l) => !l.hours).map((l) => l.id);
  const twin = (index.layers || []).find((l) => l.hours && l.id === raw.layer);
  if (twin) raw = { ...raw, layer: twin.layer, hours: "evening" };
  const kinds = Object.keys(index.periods || {}).filter((k) => (index.periods[k] || []).length);
  const pick = (value, allowed, fallback) => (allowed.includes(value) ? value : fallback);
  const metric = pick(raw.metric, metrics.map((m) => m.id), "median");
  // The survey's measures exist for the survey's layer, in all hours, only.
  const survey = metrics.find((m) => m.id === metric)?.survey && index.survey?.layer;
  const layer = survey && layers.includes(survey) ? survey : pick(raw.layer, layers, layers[0]);
  const direction = pick(raw.direction, DIRECTIONS, DIRECTIONS[0]);
  const defaultKind = KIND_PREFERENCE.find((k) => kinds.includes(k)) || kinds[0];
  const kind = pick(raw.kind, kinds, defaultKind);
  const periods = index.periods?.[kind] || [];
  const period = pick(raw.period, periods, periods[periods.length - 1]);
  const isp = pick(raw.isp, [ALL_ISPS, ...(index.isps || [])], ALL_ISPS);
  // Any id a boundary file may hold (piecewise.core.areas): not starting with `_`, no
  // `/ \ ? # %` or control characters, not `.` or `..`; blanks are fine.
  const area = raw.area && AREA_ID.test(raw.area) && !/^\.\.?$/.test(raw.area) ? raw.area : null;
  const view = parseView(raw.map);
  const hours = index.evening && raw.hours === "evening" && !survey ? "evening" : "all";
  return { layer, hours, metric, direction, kind, period, isp, area, view: view ? raw.map : null };
}

export function toHash(state) {
  const params = new URLSearchParams();
  for (const key of ORDER) {
    const value = key === "map" ? state.view : state[key];
    if (value != null && value !== "") params.set(key, value);
  }
  return `#${params.toString().replace(/%2F/g, "/")}`;
}

/** Writes the state to the URL: a new history entry (`push`) or in place. */
export function writeHash(state, { push = false } = {}) {
  const hash = toHash(state);
  if (hash === window.location.hash) return;
  const url = `${window.location.pathname}${window.location.search}${hash}`;
  if (push) window.history.pushState(null, "", url);
  else window.history.replaceState(null, "", url);
}
