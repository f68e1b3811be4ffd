// A printable report of one area: its numbers for a period and ISP, the series, the
// distribution of its speeds, its ISPs side by side, and how the numbers were made —
// the area panel's content on a page of its own, from the public data and the API.
// The area is in the URL's hash, as on the map (`#layer=counties&area=53033&...`).
import "uplot/dist/uPlot.min.css";
import { apiUrl, fetchJson, loadConfig } from "../common/config.js";
import { dataLayerOf, eveningText, metricsFor, periodLabel, publicationNote, useCaseNeeds } from "../map/metrics.js";
import { Panel } from "../map/panel.js";
import { normalise, readHash, toHash } from "../map/state.js";

const $ = (id) => document.getElementById(id);

function fail(text) {
  const box = $("report-error");
  box.textContent = text;
  box.hidden = false;
  document.body.dataset.state = "error";
}

function paragraph(text) {
  const p = document.createElement("p");
  p.textContent = text;
  return p;
}

/** How the numbers were made, from index.json: sampling, privacy, location, sources. */
function method(index) {
  const parts = [];
  parts.push(
    paragraph(
      "The numbers are statistics of Measurement Lab (M-Lab) NDT speed tests: each test's " +
        "throughput (download or upload, Mbps), its minimum round-trip time (latency, ms) " +
        "and its loss rate. Each test is placed in an area by the location of its IP address " +
        "(IP geolocation); a test located too roughly for areas this small counts in larger " +
        "areas only.",
    ),
  );
  parts.push(
    paragraph(
      index.sampling === "one_per_client_day"
        ? "One test per client, day and direction is counted (the one M-Lab's own statistics keep), so a heavy tester counts once a day."
        : "Every test is counted.",
    ),
  );
  const priv = index.privacy || {};
  parts.push(
    paragraph(
      `Privacy: a cell (area, period, ISP and direction) is published only with at least ${priv.min_tests ?? "?"} ` +
        `tests from at least ${priv.min_clients ?? "?"} distinct clients, and cells that would let a withheld one be ` +
        "worked out are withheld too; withheld numbers read “insufficient data”. A period is published once, when " +
        "every date in it is final, and never changes after.",
    ),
  );
  parts.push(
    paragraph(
      "How sure a number is: each median and share comes with its 95% confidence interval, the range " +
        "in which the value over all such tests lies 19 times in 20; the fewer the tests, the wider it is. " +
        "The area is compared with the region (every area of the layer with published numbers, together) " +
        "by their medians: a difference is called clear only when the two intervals do not overlap.",
    ),
  );
  const cases = (index.thresholds || []).filter((t) => t.id);
  if (cases.length) {
    parts.push(paragraph("Use cases: a test is good enough for a use case when it meets all of its needs for its direction."));
    const list = document.createElement("ul");
    for (const t of cases) {
      const li = document.createElement("li");
      li.textContent = `${t.label}: ${useCaseNeeds(t)}${t.source ? ` (${t.source})` : ""}.`;
      list.append(li);
    }
    parts.push(list);
  }
  const note = publicationNote(index.publication);
  if (note) parts.push(paragraph(note));
  const release = index.release || {};
  parts.push(paragraph(`Release ${release.number ?? "?"}, made ${release.released_at ?? "?"} (UTC).`));
  const sources = document.createElement("ul");
  for (const s of index.sources || []) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = s.url;
    a.textContent = s.name;
    li.append(a, ` — ${s.provides}; licence: ${s.license}.`);
    if (s.notice) li.append(` ${s.notice}`);
    sources.append(li);
  }
  const heading = paragraph("Sources:");
  return [...parts, heading, sources];
}

async function start() {
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
    index = await fetchJson(new URL("v1/index.json", config.dataBase), { cache: "no-cache" });
  } catch (err) {
    fail(err.status === 404 ? "No data has been published yet." : `The published data could not be loaded (${err.message}).`);
    return;
  }
  if (index.project?.name) {
    $("project-name").textContent = index.project.name;
    document.title = `Report · ${index.project.name}`;
  }
  const state = normalise(readHash(), index, metricsFor(index.thresholds));
  if (!state.area) {
    fail("No area is chosen: open a report from an area's panel on the map.");
    return;
  }
  // With hours=evening, the numbers are the layer's evening twin's.
  const shown = dataLayerOf(index, state);
  const layer = (index.layers || []).find((l) => l.id === shown);
  const ispText = state.isp === "all" ? "all ISPs" : state.isp;
  $("report-context").textContent =
    `${layer?.name || state.layer} · ${periodLabel(state.period)} · ${ispText} · ${state.direction} speeds in the charts.`;
  $("map-link").href = `./${toHash(state)}`;
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
    layerName: layer?.name || shown,
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
  document.title = `${name}, ${periodLabel(state.period)} · ${index.project?.name || "Piecewise"}`;
  document.body.dataset.state = "ready";
}

start();
