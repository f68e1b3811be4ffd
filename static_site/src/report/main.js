// A printable report of one area: its numbers for a period and ISP, the series, the
// distribution of its speeds, its ISPs side by side, and how the numbers were made —
// the area panel's content on a page of its own, from the public data and the API.
// The area is in the URL's hash, as on the map (`#layer=counties&area=53033&...`).
import "uplot/dist/uPlot.min.css";
import { apiUrl, fetchJson, loadConfig } from "../common/config.js";
import { chooseLanguage, keepLanguage, languageMenu, nameOf, setLanguage, t, translatePage, withLanguage } from "../common/i18n.js";
import {
  dataLayerOf,
  directionText,
  eveningText,
  ispLabel,
  kindName,
  layerName,
  metricsFor,
  periodLabel,
  publicationNote,
  surveyMetrics,
  useCaseNeeds,
} from "../map/metrics.js";
import { ALL_ISPS, DIRECTIONS, INDEX_PATH } from "../common/vocabulary.js";
import { Panel } from "../map/panel.js";
import { normalise, readHash, toHash } from "../map/state.js";
import { h } from "../common/dom.js";

const $ = (id) => document.getElementById(id);

function fail(text) {
  const box = $("report-error");
  box.textContent = text;
  box.hidden = false;
  document.body.dataset.state = "error";
}

const paragraph = (text) => h("p", {}, text);

/** How the numbers were made, from index.json: sampling, privacy, location, sources. */
function method(index) {
  const parts = [];
  parts.push(paragraph(t("report.method_tests")));
  parts.push(paragraph(t(index.sampling === "one_per_client_day" ? "report.method_one_per_day" : "report.method_every_test")));
  const priv = index.privacy || {};
  parts.push(paragraph(t("report.method_privacy", { min_tests: priv.min_tests ?? "?", min_clients: priv.min_clients ?? "?" })));
  parts.push(paragraph(t("report.method_intervals")));
  const cases = (index.thresholds || []).filter((u) => u.id);
  if (cases.length) {
    parts.push(paragraph(t("report.method_use_cases")));
    parts.push(h("ul", {}, cases.map((u) => h("li", {}, `${nameOf(u)}: ${useCaseNeeds(u)}${u.source ? ` (${u.source})` : ""}.`))));
  }
  const note = publicationNote(index.publication);
  if (note) parts.push(paragraph(note));
  const release = index.release || {};
  parts.push(paragraph(t("report.release", { number: release.number ?? "?", made: release.released_at ?? "?" })));
  const sources = h(
    "ul",
    {},
    (index.sources || []).map((s) =>
      h("li", {}, h("a", { href: s.url }, s.name), t("report.source", { provides: s.provides, license: s.license }), s.notice ? ` ${s.notice}` : null),
    ),
  );
  const heading = paragraph(t("report.sources"));
  return [...parts, heading, sources];
}

// What a link may ask for that the data does not hold: the report then shows another
// (normalise's choice) and says so, since a printed report is read without its link.
// Only values the index lacks: a survey measure showing its own layer is no fallback.
function notPublished(asked, state, index) {
  const twin = (index.layers || []).find((l) => l.hours && l.id === asked.layer);
  const layers = (index.layers || []).filter((l) => !l.hours).map((l) => l.id);
  const kinds = Object.keys(index.periods || {}).filter((k) => (index.periods[k] || []).length);
  const kind = kinds.includes(asked.kind) ? asked.kind : state.kind;
  // The survey's measures are published too (the report shows the area's speeds).
  const metrics = [...metricsFor(index.thresholds), ...surveyMetrics(index.survey)];
  const missing = [];
  const check = (key, known, shown) => {
    if (asked[key] != null && !known) missing.push([key, asked[key], shown]);
  };
  check("layer", twin || layers.includes(asked.layer), layerName(index, state.layer));
  check("kind", kinds.includes(asked.kind), kindName(state.kind));
  check("period", (index.periods?.[kind] || []).includes(asked.period), periodLabel(state.period));
  check("isp", asked.isp === ALL_ISPS || (index.isps || []).includes(asked.isp), ispLabel(state.isp));
  check("metric", metrics.some((m) => m.id === asked.metric), metrics.find((m) => m.id === state.metric)?.label);
  check("direction", DIRECTIONS.includes(asked.direction), directionText(state.direction));
  if (asked.hours === "evening" && !index.evening) missing.push(["hours", asked.hours, t("report.asked.all_hours")]);
  return missing;
}

/** A notice naming each value the link asked for that is not published, and what the
 * report shows instead. */
function showFallbacks(asked, state, index) {
  const lines = notPublished(asked, state, index).map(([key, value, shown]) =>
    t("report.fallback", { what: t(`report.asked.${key}`), asked: value, shown: shown ?? "" }),
  );
  const el = $("report-fallback");
  el.textContent = lines.join(" ");
  el.hidden = lines.length === 0;
}

async function start() {
  setLanguage(chooseLanguage());
  translatePage();
  languageMenu($("lang"));
  keepLanguage();
  let config;
  try {
    config = await loadConfig();
  } catch (err) {
    fail(err.message);
    return;
  }
  $("api-link").href = `${config.apiBase}openapi.json`;
  let index;
  try {
    index = await fetchJson(new URL(INDEX_PATH, config.dataBase), { cache: "no-cache" });
  } catch (err) {
    fail(err.status === 404 ? t("report.no_data") : t("map.index_failed", { error: err.message }));
    return;
  }
  $("synthetic-note").hidden = !index.synthetic;
  if (index.project?.name) {
    $("project-name").textContent = nameOf(index.project);
    document.title = t("report.title", { project: nameOf(index.project) });
  }
  const asked = readHash();
  const state = normalise(asked, index, metricsFor(index.thresholds));
  if (!state.area) {
    fail(t("report.no_area"));
    return;
  }
  showFallbacks(asked, state, index);
  // With hours=evening, the numbers are the layer's evening twin's.
  const shown = dataLayerOf(index, state);
  $("report-context").textContent = t("report.context", {
    layer: layerName(index, shown),
    period: periodLabel(state.period),
    isp: ispLabel(state.isp),
    speeds: t(`report.${state.direction === "upload" ? "upload" : "download"}_speeds`),
  });
  $("map-link").href = withLanguage(`./${toHash(state)}`);
  $("report-method").replaceChildren(...method(index));
  $("print").addEventListener("click", () => window.print());

  const panel = new Panel({
    root: $("panel"),
    apiUrl: (path, params) => apiUrl(config, path, params),
    index,
    config,
    onClose: () => {},
  });
  await panel.open({
    layer: shown,
    layerName: layerName(index, shown),
    hours: shown === state.layer ? null : eveningText(index.evening),
    view: { layer: state.layer, hours: state.hours },
    area: state.area,
    name: null,
    kind: state.kind,
    period: state.period,
    isp: state.isp,
    direction: state.direction,
  });
  const name = $("panel-title").textContent;
  document.title = t("report.area_title", { area: name, period: periodLabel(state.period), project: nameOf(index.project) || "Piecewise" });
  document.body.dataset.state = "ready";
}

start();
