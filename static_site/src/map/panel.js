// The panel of a selected area: its numbers and sample sizes, a time series, the
// distribution of its throughput, and its ISPs side by side — all from the API, asked
// only once an area is selected. Suppressed numbers read "insufficient data", never 0.
import { fetchJson } from "../common/config.js";
import { histogramSvg } from "./histogram.js";
import { formatAmount, formatCount, formatInterval, formatMbps, formatMs, formatRatio, formatShare, periodLabel, satisfiedShare } from "./metrics.js";

const INSUFFICIENT = "insufficient data";
const DIRECTIONS = ["download", "upload"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

const ORDINAL = new Intl.PluralRules("en-US", { type: "ordinal" });
const SUFFIX = { one: "st", two: "nd", few: "rd", other: "th" };
/** 1st, 2nd, 3rd, 4th … */
function ordinal(n) {
  return `${formatCount(n)}${SUFFIX[ORDINAL.select(n)]}`;
}

function message(text, cls = "muted") {
  return el("p", { class: cls }, text);
}

function table(caption, head, rows, cls = "numbers") {
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      { class: cls },
      el("caption", { class: "visually-hidden" }, caption),
      el("thead", {}, el("tr", {}, ...head.map((h, i) => el("th", { scope: "col", class: i ? "num" : null }, h)))),
      el(
        "tbody",
        {},
        ...rows.map((r) =>
          el(
            "tr",
            {},
            ...r.map((cell, i) =>
              i === 0
                ? el("th", { scope: "row" }, cell)
                : el("td", { class: cell === INSUFFICIENT ? "num insufficient" : "num" }, cell),
            ),
          ),
        ),
      ),
    ),
  );
}

export class Panel {
  constructor({ root, apiUrl, index, config, onClose }) {
    this.root = root;
    this.apiUrl = apiUrl;
    this.index = index;
    this.config = config;
    this.onClose = onClose;
    this.controller = null;
    this.chart = null;
    this.isOpen = false;
    // The map's panel has a close button; the report page shows the same content
    // without one.
    root.querySelector("#panel-close")?.addEventListener("click", () => this.onClose());
    root.addEventListener("keydown", (e) => {
      if (e.key === "Escape") this.onClose();
    });
  }

  focus() {
    this.root.focus({ preventScroll: true });
  }

  close() {
    this.controller?.abort();
    this.destroyChart();
    this.root.hidden = true;
    this.isOpen = false;
    document.body.classList.remove("panel-open");
  }

  destroyChart() {
    this.chart?.destroy();
    this.chart = null;
  }

  /** Shows an area: `params` has layer, layerName, area, name, kind, period, isp, direction,
   * `hours` (how to say the evening hours, when the layer is an evening twin) and
   * `view` (the map's `layer` and `hours`, for the report's link). */
  async open(params) {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    this.params = params;
    const { layer, area, kind, period, isp, direction } = params;
    const q = this.root.querySelector.bind(this.root);
    this.root.hidden = false;
    this.isOpen = true;
    this.root.setAttribute("aria-busy", "true");
    document.body.classList.add("panel-open");
    q("#panel-title").textContent = params.name || area;
    const report = q("#panel-report");
    if (report) {
      // The report's view names the layer and the hours as the map's URL does.
      const shown = params.view || { layer, hours: "all" };
      const view = new URLSearchParams({ layer: shown.layer, kind, period, isp, direction, area });
      if (shown.hours === "evening") view.set("hours", "evening");
      report.href = `report.html#${view.toString()}`;
    }
    q("#panel-summary").textContent = `Loading ${params.name || area}, ${periodLabel(period)}…`;
    for (const id of ["#panel-numbers", "#panel-compare", "#panel-series", "#panel-histogram", "#panel-isps"]) {
      q(id).replaceChildren(message("Loading…"));
    }
    this.destroyChart();

    const base = `layers/${encodeURIComponent(layer)}`;
    const areaPath = `${base}/areas/${encodeURIComponent(area)}`;
    const get = (path, query) => fetchJson(this.apiUrl(path, query), { signal: controller.signal });
    const isps = get(`${areaPath}/isps`, { period });
    const series = get(`${areaPath}/series`, { step: kind, isp });
    const histogram = get(`${base}/histogram`, { area, period, isp, direction, coarse: 10 });
    const compare = get(`${areaPath}/compare`, { period, isp, direction });
    // The residents' survey, beside M-Lab's figures, where the map shows a window of it.
    const surveySection = q("#panel-survey-section");
    if (surveySection) surveySection.hidden = !params.surveyWindow;
    // A 404 (the window not in the API's release yet, or no cells for this ISP) is said
    // in the section, not as a failure.
    const survey = params.surveyWindow
      ? get(`${base}/survey`, { window: params.surveyWindow, isp }).catch((err) => {
          if (err.status === 404) return { missing: err.message, label: params.surveyWindow };
          throw err;
        })
      : null;
    if (survey) q("#panel-survey").replaceChildren(message("Loading…"));

    const stale = () => controller !== this.controller;
    const show = async (promise, render, target) => {
      try {
        const doc = await promise;
        if (!stale()) await render(doc);
        return doc;
      } catch (err) {
        if (err.name === "AbortError" || stale()) return null;
        q(target).replaceChildren(message(`Could not be loaded: ${err.message}`, "error"));
        return null;
      }
    };
    const [ispDoc] = await Promise.all([
      show(isps, (doc) => this.renderIsps(doc), "#panel-isps"),
      show(series, (doc) => this.renderSeries(doc), "#panel-series"),
      show(histogram, (doc) => this.renderHistogram(doc), "#panel-histogram"),
      show(compare, (doc) => this.renderCompare(doc), "#panel-compare"),
      survey && show(survey, (doc) => this.renderSurvey(doc), "#panel-survey"),
    ]);
    if (stale()) return;
    this.root.removeAttribute("aria-busy");
    if (!ispDoc) {
      q("#panel-numbers").replaceChildren(message("The numbers could not be loaded.", "error"));
      q("#panel-summary").textContent = `${params.name || area}: the numbers could not be loaded.`;
    }
  }

  /** What residents of the area answered in the survey window the map shows, published
   * with noise; "too few responses" where the window does not list the area. */
  renderSurvey(doc) {
    const p = this.params;
    const target = this.root.querySelector("#panel-survey");
    const name = p.name || p.area;
    if (doc.missing) {
      target.replaceChildren(message(`The residents' survey of ${periodLabel(doc.label)} has no figures here: ${doc.missing}.`));
      return;
    }
    const when = `the residents' survey of ${periodLabel(doc.label)}`;
    const who = p.isp === "all" ? "" : ` with ${p.isp}`;
    const cell = (doc.areas || []).find((a) => a.area === p.area);
    if (!cell) {
      target.replaceChildren(
        message(`Too few residents of ${name}${who} answered ${when} to publish their answers (at least ${formatCount(doc.min_responses)}, counted with noise).`),
      );
      return;
    }
    const types = Object.entries(cell.connection_types || {})
      .filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([type, n]) => `${type} ${formatCount(n)}`)
      .join(", ");
    const rows = [
      ["Responses", formatCount(cell.responses)],
      ["Promised download (median)", formatMbps(cell.advertised_download_median)],
      ["Measured download, linked tests (median)", formatMbps(cell.measured_download_median)],
      ["Measured against promised (median)", formatRatio(cell.download_ratio_median)],
      ["Getting under half of what was promised", formatShare(cell.below_half_share)],
      ["Monthly cost (median)", formatAmount(cell.monthly_cost_median)],
      ["Cost per promised Mbps (median)", formatAmount(cell.cost_per_mbps_median)],
      ["Satisfied (the two highest answers)", formatShare(satisfiedShare(cell.satisfaction))],
      ["Connection types (most answered)", types || "–"],
    ];
    target.replaceChildren(
      table(`What residents of ${name}${who} say, ${when}`, ["", periodLabel(doc.label)], rows),
      message(
        `From ${when}, ${who ? `residents${who}` : "every ISP"}: each figure is drawn with noise so that no single answer can be read off (docs/survey.md); "–" where too few gave it. Measured speeds come only from tests linked by their M-Lab IDs.`,
      ),
    );
  }

  renderIsps(doc) {
    const p = this.params;
    const q = this.root.querySelector.bind(this.root);
    const name = doc.name || p.name || p.area;
    q("#panel-title").textContent = name;
    const entry = (doc.isps || []).find((e) => e.isp === p.isp);
    const ispText = p.isp === "all" ? "all ISPs" : p.isp;
    const when = p.hours ? `${periodLabel(p.period)}, ${p.hours}` : periodLabel(p.period);
    const where = `${name}, ${when}, ${ispText}`;

    // Numbers for the chosen ISP, both directions.
    if (!entry) {
      q("#panel-numbers").replaceChildren(message(`No tests in ${periodLabel(p.period)} for ${ispText}.`));
      q("#panel-summary").textContent = `${where}: no tests.`;
    } else {
      const cell = (d) => entry[d];
      const sup = (d) => (entry.suppressed || []).includes(d);
      const val = (d, f, key) => {
        if (sup(d)) return INSUFFICIENT;
        const c = cell(d);
        return c ? f(c[key]) : "no tests";
      };
      const rows = [
        ["Tests", ...DIRECTIONS.map((d) => val(d, formatCount, "tests"))],
        ["Distinct clients", ...DIRECTIONS.map((d) => val(d, formatCount, "clients"))],
        ["Median speed", ...DIRECTIONS.map((d) => val(d, formatMbps, "median"))],
        [
          // Where the median of all such tests lies, 19 times in 20 (docs/data.md).
          "Median, 95% interval",
          ...DIRECTIONS.map((d) => (sup(d) ? INSUFFICIENT : cell(d) ? formatInterval(cell(d).median_low, cell(d).median_high, formatMbps) : "no tests")),
        ],
        [
          "10th to 90th percentile",
          ...DIRECTIONS.map((d) => (sup(d) ? INSUFFICIENT : cell(d) ? `${formatMbps(cell(d).p10)} to ${formatMbps(cell(d).p90)}` : "no tests")),
        ],
        ["Median latency", ...DIRECTIONS.map((d) => val(d, formatMs, "rtt_median"))],
        [
          // Tests whose IP location is too rough for areas this small (a town's or a
          // state's centroid): counted in larger areas, not here. Null before it was kept.
          "Located too roughly to count here",
          ...DIRECTIONS.map((d) => (sup(d) ? INSUFFICIENT : cell(d) ? (cell(d).coarse == null ? "–" : formatCount(cell(d).coarse)) : "no tests")),
        ],
      ];
      for (const t of this.index.thresholds || []) {
        rows.push([
          t.id ? `Good enough for ${t.label}` : `At or above ${t.label} Mbps`,
          ...DIRECTIONS.map((d) => {
            if (sup(d)) return INSUFFICIENT;
            const c = cell(d);
            if (!c) return "no tests";
            const share = formatShare(c.shares?.[t.label] ?? c[t.column]);
            const low = c.shares_low?.[t.label];
            const high = c.shares_high?.[t.label];
            return low == null || high == null ? share : `${share} (${formatInterval(low, high, formatShare)})`;
          }),
        ]);
      }
      q("#panel-numbers").replaceChildren(table(`Statistics of ${where}`, ["", "Download", "Upload"], rows));
      const d = entry[p.direction];
      q("#panel-summary").textContent = sup(p.direction)
        ? `${where}: insufficient data for ${p.direction}s (too few tests or clients to publish).`
        : d
          ? `${where}: median ${p.direction} ${formatMbps(d.median)} from ${formatCount(d.tests)} tests.`
          : `${where}: no ${p.direction} tests.`;
    }

    // Every ISP side by side.
    const list = doc.isps || [];
    if (!list.length) {
      q("#panel-isps").replaceChildren(message("No tests in this period."));
      return;
    }
    const fmt = (e, d, f, key) => ((e.suppressed || []).includes(d) ? INSUFFICIENT : e[d] ? f(e[d][key]) : "–");
    const rows = list.map((e) => [
      e.isp === "all" ? "All ISPs" : e.isp,
      fmt(e, "download", formatMbps, "median"),
      fmt(e, "upload", formatMbps, "median"),
      fmt(e, "download", formatMs, "rtt_median"),
      fmt(e, "download", formatCount, "tests"),
    ]);
    q("#panel-isps").replaceChildren(
      table(`ISPs in ${name}, ${periodLabel(p.period)}`, ["ISP", "Download median", "Upload median", "Latency median", "Download tests"], rows, "numbers isps"),
    );
  }

  /** This area against the region as a whole (every published area of the layer). */
  renderCompare(doc) {
    const p = this.params;
    const target = this.root.querySelector("#panel-compare");
    const name = doc.name || p.name || p.area;
    const region = doc.region;
    const cell = doc.cell;
    if (doc.suppressed) {
      target.replaceChildren(message(`${name}: ${INSUFFICIENT} to compare with the region.`, "insufficient"));
      return;
    }
    if (!cell || cell.median == null) {
      target.replaceChildren(message(`No ${p.direction} tests in ${name} to compare with the region.`));
      return;
    }
    const interval = (low, high) => formatInterval(low, high, formatMbps);
    const rows = [
      [`Median ${p.direction}`, formatMbps(cell.median), formatMbps(region.median)],
      ["95% interval", interval(cell.median_low, cell.median_high), interval(region.median_low, region.median_high)],
      ["Tests", formatCount(cell.tests), formatCount(region.tests)],
    ];
    const verdicts = {
      lower: `${name}'s median is lower than the region's: the two 95% intervals do not overlap.`,
      higher: `${name}'s median is higher than the region's: the two 95% intervals do not overlap.`,
      not_distinguishable: "No clear difference from the region: the two 95% intervals overlap.",
    };
    const verdict = verdicts[doc.comparison?.verdict] || "Too few tests to tell whether it differs from the region.";
    const parts = [
      table(`${name} compared with the region`, ["", name, "Region"], rows),
      el("p", { class: "verdict" }, verdict),
    ];
    const r = doc.rank;
    if (r) {
      const allowed = r.possible_ranks;
      const span =
        allowed && allowed.first !== allowed.last
          ? `; with its interval, anywhere from ${ordinal(allowed.first)} to ${ordinal(allowed.last)}`
          : "";
      const text = `${ordinal(r.rank)} fastest median ${p.direction} of ${formatCount(r.of)} areas with published numbers${span}.`;
      parts.push(el("p", { class: "rank" }, text));
    }
    const left = region.coverage && !region.coverage.complete ? region.coverage.excluded_cells : 0;
    const without = left ? `; ${formatCount(left)} area-periods with too few tests to publish are left out` : "";
    parts.push(el("p", { class: "muted" }, `The region: every area of this layer with published numbers, together${without}.`));
    target.replaceChildren(...parts);
  }

  async renderSeries(doc) {
    const p = this.params;
    const target = this.root.querySelector("#panel-series");
    const { drawSeries } = await import("./chart.js");
    if (this.params !== p) return;
    target.replaceChildren();
    this.chart = drawSeries(target, doc, p);
  }

  renderHistogram(doc) {
    const p = this.params;
    const target = this.root.querySelector("#panel-histogram");
    const ispText = p.isp === "all" ? "all ISPs" : p.isp;
    if (doc.suppressed) {
      target.replaceChildren(message(`${p.direction[0].toUpperCase()}${p.direction.slice(1)} speeds, ${ispText}: ${INSUFFICIENT} (too few tests or clients to publish).`, "insufficient"));
      return;
    }
    if (!doc.tests || !doc.buckets?.length) {
      target.replaceChildren(message(`No ${p.direction} tests for ${ispText} in ${periodLabel(p.period)}.`));
      return;
    }
    target.replaceChildren(
      el("p", { class: "muted" }, `${p.direction[0].toUpperCase()}${p.direction.slice(1)} speeds of ${formatCount(doc.tests)} tests, ${ispText}, ${periodLabel(p.period)}.`),
      histogramSvg(doc.buckets, `${p.direction} speed`),
    );
  }
}
