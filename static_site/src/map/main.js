// The map page: each layer's shapes from its published PMTiles archive, coloured by a
// statistic of the chosen period (the period's numbers, joined to the shapes as
// feature state), the controls that choose what is shown, the legend, and the panel of
// a selected area. Its whole state is in the URL's hash (state.js).
import "maplibre-gl/dist/maplibre-gl.css";
import "uplot/dist/uPlot.min.css";
import { AttributionControl, Map as MapLibre, NavigationControl, addProtocol, prewarm, setWorkerUrl } from "maplibre-gl";
import { PMTiles, Protocol } from "pmtiles";
import { apiUrl as apiUrlOf, fetchJson, loadConfig } from "../common/config.js";
import { chooseLanguage, keepLanguage, languageMenu, nameOf, setLanguage, t, translatePage } from "../common/i18n.js";
import { ALL_ISPS, DIRECTIONS, INDEX_PATH, fillPath } from "../common/vocabulary.js";
import {
  dataLayerOf,
  directionText,
  eveningText,
  ispLabel,
  layerName,
  metricsFor,
  periodLabel,
  surveyMetrics,
  surveyStates,
  surveyWindowFor,
  publicationNote,
} from "./metrics.js";
import { credit } from "../common/credit.js";
import { h, isShown } from "../common/dom.js";
import { AreaLists } from "./arealist.js";
import { buildControls, options, setDrawer, syncControls as syncControlsTo } from "./controls.js";
import { legend, surveyLegend } from "./legend.js";
import { HATCH, LAYERS, SOURCE, hatchImage, plainStyle, statsLayers, statsPaint, statsSource } from "./layers.js";
import { Panel } from "./panel.js";
import { formatView, normalise, parseView, readHash, writeHash } from "./state.js";

const loadingText = () => t("map.loading");
const $ = (id) => document.getElementById(id);

let config;
let index;
let metrics;
let state;
let map;
let panel;
let mapLoaded = false;
// The period whose numbers the map shows ("layer/kind/period"), and the one loading.
let shownNumbers = null;
// The survey's published windows of its layer (a promise, read once), and the window
// whose figures the map shows (null: none for the period).
let surveyWindows = null;
let shownSurvey = null;
let loadingNumbers = null;
// The source the shown numbers are joined to (a style replaced whole makes a new one,
// without them), and the period whose numbers last failed to load.
let joinedTo = null;
let failedNumbers = null;
// The message of the last period whose numbers could not be loaded (cleared by the next).
let numbersFailure = null;
// The areas of each layer and period, by name, for the list beside the map.
const areaLists = new AreaLists((layer, period) =>
  fetchJson(apiUrl(`layers/${encodeURIComponent(layer)}/stats`, { period, isp: ALL_ISPS, direction: DIRECTIONS[0] })),
);

// -- messages -------------------------------------------------------------------------

function setStatus(message, { error = false } = {}) {
  const el = $("status");
  el.textContent = message || "";
  el.hidden = !message;
  el.classList.toggle("error", error);
}

function fail(message) {
  setStatus(message, { error: true });
  document.body.dataset.mapState = "error";
}

function noData(message) {
  setStatus(message || t("map.no_data"));
  document.body.dataset.mapState = "nodata";
}

/** The footer's links to the dataset: each year's Parquet file and SQLite database,
 * the newest year first (index.json `dataset`). */
function datasetLinks(dataset) {
  const years = Array.isArray(dataset?.years) ? [...dataset.years].sort((a, b) => b - a) : [];
  if (!dataset?.parquet || !dataset?.sqlite || !years.length) return;
  const link = (kind, year, text) =>
    h("a", { id: `dataset-${kind}-${year}`, href: new URL(fillPath(dataset[kind], { year }), config.dataBase).href, download: true }, text);
  const entries = years.map((year, i) => [i ? "; " : "", `${year}: `, link("parquet", year, "Parquet"), " · ", link("sqlite", year, "SQLite")]);
  $("dataset-years").replaceChildren(...entries.flat());
  $("dataset-links").hidden = false;
}

// -- helpers --------------------------------------------------------------------------

const layerInfo = (id = state.layer) => index.layers.find((l) => l.id === id);
/** The layer whose numbers are shown: the chosen one, or its evening twin (same areas). */
const dataLayer = (s = state) => dataLayerOf(index, s);
const dataLayerName = (s = state) => layerName(index, dataLayer(s));
const metricInfo = (id = state.metric) => metrics.find((m) => m.id === id);

/** The archive of a layer's shapes (the same for every period). */
function shapesUrl(s = state) {
  return new URL(layerInfo(s.layer).tiles.shapes, config.dataBase).href;
}

/** The numbers of a layer's period, joined to its shapes. */
function numbersUrl(s = state) {
  const path = fillPath(index.paths.tiles, { layer: dataLayer(s), kind: s.kind, period: s.period });
  return new URL(path, config.dataBase).href;
}

const numbersKey = (s = state) => `${dataLayer(s)}/${s.kind}/${s.period}`;

function apiUrl(path, params) {
  return apiUrlOf(config, path, params);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// -- the map --------------------------------------------------------------------------

/** The statistics' layers for the current state. */
const currentLayers = () => statsLayers(layerInfo(), metricInfo(), state, Boolean(config.basemap_style));

/** Adds the statistics to the style (under a basemap's labels, if it has any). */
function addStatsLayers() {
  const before = map.getStyle().layers.find((l) => l.type === "symbol")?.id;
  map.addSource(SOURCE, statsSource(shapesUrl()));
  for (const layer of currentLayers()) map.addLayer(layer, before);
  shownNumbers = null;
  loadNumbers();
}

function removeStatsLayers() {
  for (const id of Object.values(LAYERS)) if (map.getLayer(id)) map.removeLayer(id);
  if (map.getSource(SOURCE)) map.removeSource(SOURCE);
  shownNumbers = null;
}

function updatePaint() {
  for (const [layer, property, value] of statsPaint(metricInfo(), state)) map.setPaintProperty(layer, property, value);
}

/** Joins the current period's numbers to the layer's shapes (once they are loaded,
 * the previous period's are replaced at once, so that no mix of two is drawn). */
async function loadNumbers() {
  const key = numbersKey();
  const source = map?.getSource(SOURCE);
  if (!source || (key === shownNumbers && source === joinedTo) || key === loadingNumbers) return;
  loadingNumbers = key;
  failedNumbers = null;
  document.body.dataset.mapState = "loading";
  const sourceLayer = layerInfo().tiles?.source_layer || state.layer;
  let doc;
  let survey;
  try {
    [doc, survey] = await Promise.all([fetchJson(numbersUrl()), loadSurvey()]);
  } catch (err) {
    if (loadingNumbers !== key) return;
    loadingNumbers = null;
    failedNumbers = key;
    // Not the last period's colours (nor its survey window) under this one's name:
    // none, and the reason.
    if (map.getSource(SOURCE)) map.removeFeatureState({ source: SOURCE, sourceLayer });
    shownNumbers = null;
    shownSurvey = null;
    updateLegend();
    numbersFailure = t("map.numbers_failed", { period: periodLabel(state.period), error: err.message });
    fail(numbersFailure);
    return;
  }
  if (loadingNumbers !== key) return; // another period was chosen meanwhile
  loadingNumbers = null;
  if (key !== numbersKey() || !map.getSource(SOURCE)) return;
  map.removeFeatureState({ source: SOURCE, sourceLayer });
  const states = {};
  for (const [id, numbers] of Object.entries(doc.features || {})) states[id] = { ...numbers, drawn: true };
  for (const [id, figures] of Object.entries(survey.states)) states[id] = { ...(states[id] || {}), ...figures };
  for (const [id, values] of Object.entries(states)) map.setFeatureState({ source: SOURCE, sourceLayer, id }, values);
  shownNumbers = key;
  joinedTo = map.getSource(SOURCE);
  if (numbersFailure && $("status").textContent === numbersFailure) setStatus("");
  numbersFailure = null;
  shownSurvey = survey.window;
  if (panel.isOpen) panel.setSurveyWindow(surveyShown() ? shownSurvey?.label || null : null);
  updateLegend();
  map.triggerRepaint();
}

/** Whether a view shows the survey's figures: its layer, in all hours. */
const surveyShown = (s = state) => Boolean(index.survey) && s.layer === index.survey.layer && s.hours === "all";

/** The survey's figures for the period (its layer, all hours only): the window that
 * shows it and the feature states of its cells; none elsewhere or without a window.
 * A survey that cannot be read leaves the map's own numbers drawn. */
async function loadSurvey(s = state) {
  const none = { window: null, states: {} };
  if (!surveyShown(s)) return none;
  surveyWindows ||= fetchJson(new URL(index.survey.index, config.dataBase), { cache: "no-cache" })
    .then((doc) => (doc.windows || []).filter((w) => w.layer === index.survey.layer))
    .catch(() => {
      surveyWindows = null; // asked again with the next period
      return [];
    });
  const chosen = surveyWindowFor(await surveyWindows, s.period);
  if (!chosen) return none;
  try {
    const doc = await fetchJson(new URL(chosen.path, config.dataBase));
    return { window: chosen, states: surveyStates(doc) };
  } catch {
    return none;
  }
}

function updateSelection() {
  const selected = ["==", ["get", "id"], state.area || ""];
  map.setFilter(LAYERS.casing, selected);
  map.setFilter(LAYERS.selected, selected);
}

async function createMap() {
  const protocol = new Protocol();
  addProtocol("pmtiles", protocol.tile);
  const view = parseView(state.view);
  const options = {
    container: "map",
    style: config.basemap_style || plainStyle(shapesUrl(), currentLayers()),
    attributionControl: false,
    dragRotate: false,
    pitchWithRotate: false,
    touchPitch: false,
    maxZoom: 14,
  };
  if (view) {
    options.center = view.center;
    options.zoom = view.zoom;
  } else {
    // Frame the published areas: the archive's header (one small range request that
    // the protocol then reuses for the tiles).
    const archive = new PMTiles(shapesUrl());
    protocol.add(archive);
    try {
      const h = await archive.getHeader();
      options.bounds = [
        [h.minLon, h.minLat],
        [h.maxLon, h.maxLat],
      ];
      options.fitBoundsOptions = { padding: 16 };
    } catch (err) {
      fail(t("map.tiles_failed", { error: err.message }));
      options.center = [0, 20];
      options.zoom = 1;
    }
  }
  map = new MapLibre(options);
  window.piecewiseMap = map;
  map.touchZoomRotate.disableRotation();
  map.keyboard.disableRotation();
  map.addControl(new NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new AttributionControl({ compact: true, customAttribution: escapeHtml(config.attribution || "") }), "bottom-right");
  describeMap();

  let fellBack = !config.basemap_style;
  map.on("error", (e) => {
    if (!mapLoaded && !fellBack) {
      // The basemap is unreachable (offline, say): boundaries on a plain background.
      fellBack = true;
      map.setStyle(plainStyle(shapesUrl(), currentLayers()));
      return;
    }
    const url = e?.source?.url || e?.error?.url || "";
    if (String(url).includes(".pmtiles") || e?.sourceId === SOURCE) {
      setStatus(t("map.tiles_failed", { error: e.error?.message || "error" }), { error: true });
    }
  });
  // The hatch of suppressed areas, made here rather than loaded from a sprite.
  map.setMissingStyleImageResolver((id) => {
    if (id === HATCH && !map.hasImage(HATCH)) map.addImage(HATCH, hatchImage(), { pixelRatio: 2 });
  });
  map.on("style.load", () => {
    // The plain style carries the shapes: their numbers are joined now, while the tiles
    // load, so that the first frame drawn has its colours (a style replaced by a diff
    // keeps the source and what was joined to it; a new source is joined again).
    if (!map.getSource(SOURCE)) addStatsLayers();
    else loadNumbers();
  });
  map.on("load", () => {
    mapLoaded = true;
    // The state may have changed while the map started.
    if (map.getSource(SOURCE)?.url !== `pmtiles://${shapesUrl()}`) {
      removeStatsLayers();
      addStatsLayers();
    } else {
      updatePaint();
      updateSelection();
      // Joined at the style's load, or on their way; a failure then is not asked again
      // here (the next choice of period asks again).
      if (failedNumbers !== numbersKey()) loadNumbers();
    }
  });
  map.once("idle", () => {
    if ($("status").textContent === loadingText()) setStatus("");
  });
  map.on("idle", () => {
    if (loadingNumbers || shownNumbers !== numbersKey()) return; // the period's numbers are on their way
    document.body.dataset.mapState = "idle";
    if (!areaLists.has(dataLayer(), state.period)) loadAreaList();
  });
  map.on("movestart", () => {
    document.body.dataset.mapState = "loading";
  });
  map.on("zoomend", updateZoomNote);
  map.on("moveend", () => {
    state.view = formatView(map);
    writeHash(state);
  });
  map.on("click", LAYERS.fill, (e) => onMapClick(e));
  map.on("mouseenter", LAYERS.fill, () => {
    map.getCanvas().style.cursor = "pointer";
  });
  map.on("mouseleave", LAYERS.fill, () => {
    map.getCanvas().style.cursor = "";
  });
}

function onMapClick(e) {
  const feature = e.features?.[0];
  if (!feature) return;
  const info = layerInfo();
  const p = feature.properties;
  if (info.type === "h3" && !feature.state?.drawn) return; // a cell without tests in the period
  if (info.type === "h3" && p.resolution != null && Number(p.resolution) < info.resolution) {
    // A coarser hexagon drawn at this zoom: zoom in to the layer's own hexagons.
    map.easeTo({ center: e.lngLat, zoom: (info.tiles?.maxzoom ?? info.resolution + 2) + 0.01 });
    setStatus(t("map.zoomed_in"));
    setTimeout(() => setStatus(""), 4000);
    return;
  }
  selectArea(p.id, p.name);
  // Keep the clicked point clear of the panel.
  const inset = panelInsets();
  const canvas = map.getCanvas();
  const dx = inset.right && e.point.x > canvas.clientWidth - inset.right - 24 ? e.point.x - (canvas.clientWidth - inset.right) / 2 : 0;
  const dy = inset.bottom && e.point.y > canvas.clientHeight - inset.bottom - 24 ? e.point.y - (canvas.clientHeight - inset.bottom) / 2 : 0;
  if (dx || dy) map.panBy([dx, dy]);
}

const isPhone = () => window.matchMedia("(max-width: 700px)").matches;

/** How much of the map the open panel covers: its right side, or on phones its bottom
 * (the sheet grows to 62% of the screen as its content loads). */
function panelInsets() {
  const p = $("panel");
  if (p.hidden) return { right: 0, bottom: 0 };
  if (isPhone()) {
    const mapBottom = map.getContainer().getBoundingClientRect().bottom;
    const sheetTop = Math.min(p.getBoundingClientRect().top, window.innerHeight * 0.38);
    return { right: 0, bottom: Math.max(0, mapBottom - sheetTop) };
  }
  return { right: p.getBoundingClientRect().width, bottom: 0 };
}

/** Brings an area chosen from the list into view (when its shape is in the loaded tiles). */
function revealArea(id) {
  if (!mapLoaded) return;
  const info = layerInfo();
  const features = map.querySourceFeatures(SOURCE, {
    sourceLayer: info.tiles?.source_layer || info.id,
    filter: ["==", ["get", "id"], id],
  });
  if (!features.length) return;
  let [w, s, e, n] = [180, 90, -180, -90];
  const visit = (c) => {
    if (typeof c[0] === "number") {
      w = Math.min(w, c[0]);
      e = Math.max(e, c[0]);
      s = Math.min(s, c[1]);
      n = Math.max(n, c[1]);
    } else c.forEach(visit);
  };
  for (const f of features) visit(f.geometry.coordinates);
  const inset = panelInsets();
  const canvas = map.getCanvas();
  const a = map.project([w, n]);
  const b = map.project([e, s]);
  const clear = a.x >= 0 && a.y >= 0 && b.x <= canvas.clientWidth - inset.right && b.y <= canvas.clientHeight - inset.bottom;
  if (clear) return;
  map.fitBounds(
    [
      [w, s],
      [e, n],
    ],
    {
      padding: { top: 30, left: 30, right: 30 + inset.right, bottom: 30 + inset.bottom },
      maxZoom: Math.max(map.getZoom(), 6),
      duration: 400,
    },
  );
}

// -- state ----------------------------------------------------------------------------

function commit(changes, { push = true } = {}) {
  const prev = state;
  const next = { ...state, ...changes };
  // The survey's measures are of its layer in all hours (as `normalise` reads a link):
  // choosing one shows that; another layer or the evening leaves them for the median.
  if (index.survey && metricInfo(next.metric)?.survey) {
    if ("metric" in changes) Object.assign(next, { layer: index.survey.layer, hours: "all" });
    else if (next.layer !== index.survey.layer || next.hours !== "all") next.metric = "median";
  }
  if (next.layer !== prev.layer) next.area = null;
  state = next;
  writeHash(state, { push });
  applyState(prev);
}

/** The map canvas's accessible name says what it shows; its description where the same is in text. */
function describeMap() {
  if (!map) return;
  const canvas = map.getCanvas();
  canvas.setAttribute(
    "aria-label",
    t("map.label", {
      measure: metricInfo().label.toLowerCase(),
      direction: directionText(state.direction),
      layer: dataLayerName().toLowerCase(),
      period: periodLabel(state.period),
      isp: ispLabel(state.isp),
    }),
  );
  canvas.setAttribute("aria-describedby", "map-help");
}

function applyState(prev) {
  syncControls();
  updateLegend();
  updateZoomNote();
  updateLinks();
  describeMap();
  if (map && mapLoaded) {
    document.body.dataset.mapState = "loading";
    if (!prev || prev.layer !== state.layer) {
      removeStatsLayers();
      addStatsLayers();
    } else {
      updatePaint();
      updateSelection();
      loadNumbers();
    }
    if (!areaLists.has(dataLayer(), state.period)) loadAreaList();
    else fillAreaPicker();
  }
  const panelKeys = ["layer", "hours", "kind", "period", "isp", "direction", "area"];
  if (!state.area) panel.close();
  else if (!prev || panelKeys.some((k) => prev[k] !== state[k]) || !panel.isOpen) openPanel();
}

function openPanel(name) {
  panel.open({
    layer: dataLayer(),
    layerName: dataLayerName(),
    hours: dataLayer() === state.layer ? null : eveningText(index.evening),
    view: { layer: state.layer, hours: state.hours },
    area: state.area,
    name: name || areaName(state.area),
    kind: state.kind,
    period: state.period,
    isp: state.isp,
    direction: state.direction,
    metric: metricInfo(),
    // The survey window the map shows, for the panel's residents' section.
    surveyWindow: surveyShown() ? shownSurvey?.label || null : null,
  });
}

function areaName(id) {
  const list = areaLists.get(dataLayer(), state.period);
  return list?.find((a) => a.id === id)?.name || id;
}

function selectArea(id, name, { focusPanel = true } = {}) {
  if (!id) return;
  if (id === state.area && panel.isOpen) {
    if (focusPanel) panel.focus();
    return;
  }
  state = { ...state, area: id };
  writeHash(state, { push: true });
  syncControls();
  if (mapLoaded) updateSelection();
  openPanel(name);
  if (focusPanel) panel.focus();
}

function closeArea() {
  if (!state.area) return;
  // Focus goes back to the list of areas rather than to nowhere (on a phone, where that
  // list is in the closed drawer, to the drawer's button).
  if ($("panel").contains(document.activeElement)) (isShown($("area-picker")) ? $("area-picker") : $("drawer-toggle")).focus();
  state = { ...state, area: null };
  writeHash(state, { push: true });
  syncControls();
  if (mapLoaded) updateSelection();
  panel.close();
}

// -- controls -------------------------------------------------------------------------

/** The area picker's choice: on a phone the drawer closes, so that the map and the
 * area's sheet show. */
function pickArea(id, name) {
  const drawer = isPhone() && document.body.classList.contains("drawer-open");
  if (drawer) setDrawer(false);
  selectArea(id, name, { focusPanel: drawer });
  // After the drawer's closing has resized the map.
  requestAnimationFrame(() => {
    map?.resize();
    revealArea(id);
  });
}

const syncControls = () => syncControlsTo(index, state, areaName);

async function loadAreaList() {
  try {
    await areaLists.load(dataLayer(), state.period);
  } catch (err) {
    const help = $("area-picker-help");
    help.dataset.usual ??= help.textContent;
    help.textContent = t("map.areas_failed", { error: err.message });
    return;
  }
  const help = $("area-picker-help");
  if (help.dataset.usual != null) help.textContent = help.dataset.usual; // the list came
  fillAreaPicker();
}

function fillAreaPicker() {
  const list = areaLists.get(dataLayer(), state.period);
  if (!list) return;
  const picker = $("area-picker");
  if (picker.dataset.key === `${dataLayer()}/${state.period}`) {
    picker.value = state.area || "";
    return;
  }
  // Two areas of one name (two Washington Counties) are told apart by their ids.
  const named = new Map();
  for (const a of list) named.set(a.name, (named.get(a.name) || 0) + 1);
  const label = (a) => (a.name === a.id ? a.id : named.get(a.name) > 1 ? `${a.name} (${a.id})` : a.name);
  options(picker, [["", t("map.choose_area")], ...list.map((a) => [a.id, label(a)])]);
  picker.dataset.key = `${dataLayer()}/${state.period}`;
  syncControls();
}

// -- legend and links -----------------------------------------------------------------

function updateLegend() {
  const metric = metricInfo();
  const view = { direction: state.direction, isp: state.isp, period: state.period };
  const { caption, items } = metric.survey
    ? surveyLegend(metric, view, shownSurvey)
    : legend(metric, view, index.privacy || config.privacy || {});
  $("legend-caption").textContent = caption;
  $("legend-items").replaceChildren(...items);
}

/** H3 layers draw coarser hexagons below their own zoom: say what they are. */
function updateZoomNote() {
  const info = layerInfo();
  const note = $("legend-note");
  const coarse = info.type === "h3" && map && map.getZoom() < (info.tiles?.maxzoom ?? info.resolution + 2);
  note.hidden = !coarse;
  note.textContent = coarse ? t("legend.coarse_hexagons") : "";
}

function updateLinks() {
  const csv = $("csv-link");
  csv.href = apiUrl(`layers/${encodeURIComponent(dataLayer())}/stats`, { period: state.period, isp: state.isp, format: "csv" });
  csv.setAttribute("download", `${dataLayer()}-${state.period}-${state.isp === ALL_ISPS ? ALL_ISPS : state.isp.replace(/[^\w.-]+/g, "_")}.csv`);
  csv.setAttribute("aria-label", t("map.csv_label", { layer: dataLayerName().toLowerCase(), period: periodLabel(state.period), isp: ispLabel(state.isp) }));
  const q = new URLSearchParams({ layer: dataLayer(), kind: state.kind, period: state.period, isp: state.isp, direction: state.direction });
  $("table-link").href = `table?${q}`;
}

// -- start ----------------------------------------------------------------------------

async function main() {
  setLanguage(chooseLanguage());
  translatePage();
  languageMenu($("lang"));
  keepLanguage();
  setWorkerUrl(new URL("maplibre-gl-worker.js", window.location.href).href);
  // Start the map's workers while the config and the index load.
  prewarm();
  try {
    config = await loadConfig();
  } catch (err) {
    fail(err.message);
    return;
  }
  if (config.project?.name) {
    $("project-name").textContent = nameOf(config.project);
    document.title = t("map.title", { project: nameOf(config.project) });
  }
  $("api-link").href = `${config.apiBase}openapi.json`;
  if (config.attribution) $("attribution").textContent = config.attribution;
  const priv = config.privacy || {};
  $("privacy-note").textContent = t("map.privacy", { min_tests: priv.min_tests ?? "?", min_clients: priv.min_clients ?? "?" });

  try {
    index = await fetchJson(new URL(INDEX_PATH, config.dataBase), { cache: "no-cache" });
  } catch (err) {
    if (err.status === 404) noData();
    else fail(t("map.index_failed", { error: err.message }));
    return;
  }
  config.attribution = credit(config.attribution, index.sources);
  if (config.attribution) $("attribution").textContent = config.attribution;
  $("freshness").textContent = publicationNote(index.publication);
  $("synthetic-note").hidden = !index.synthetic;
  datasetLinks(index.dataset);
  const kinds = Object.keys(index.periods || {}).filter((k) => index.periods[k]?.length);
  if (!index.layers?.length || !kinds.length) {
    noData();
    return;
  }
  metrics = [...metricsFor(index.thresholds), ...surveyMetrics(index.survey)];
  state = normalise(readHash(), index, metrics);
  writeHash(state);
  panel = new Panel({
    root: $("panel"),
    apiUrl,
    index,
    config,
    onClose: closeArea,
  });
  buildControls(index, metrics, { view: () => state, commit, pickArea, closeArea, loadAreas: loadAreaList });
  applyState(null);
  setStatus(loadingText());
  window.addEventListener("popstate", () => {
    const prev = state;
    state = normalise(readHash(), index, metrics);
    const view = parseView(state.view);
    if (view && map && state.view !== prev.view) map.jumpTo(view);
    applyState(prev);
  });
  try {
    await createMap();
  } catch (err) {
    fail(t("map.map_failed", { error: err.message }));
  }
}

main();
