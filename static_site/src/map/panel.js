// The panel of a selected area: its numbers and sample sizes, a time series, the
// distribution of its throughput, and its ISPs side by side — all from the API, asked
// only once an area is selected. Suppressed numbers read "insufficient data", never 0.
import { fetchJson } from "../common/config.js";
import { language, nameOf, t, tPlural, withLanguage } from "../common/i18n.js";
import { h } from "../common/dom.js";
import { ALL_ISPS, DIRECTIONS } from "../common/vocabulary.js";
import { histogramSvg } from "./histogram.js";
import {
  directionText as dir,
  formatAmount,
  formatCount,
  formatInterval,
  formatMbps,
  formatMs,
  formatRatio,
  formatShare,
  ispLabel,
  periodLabel,
  satisfiedShare,
} from "./metrics.js";

/** How a suppressed number reads, in the page's language. */
const insufficient = () => t("panel.insufficient");

/** 1st, 2nd, 3rd, 4th … (1.º, 2.º … in Spanish): `panel.ordinal.<rule>`. */
function ordinal(n) {
  const rule = new Intl.PluralRules(language(), { type: "ordinal" }).select(n);
  return t(`panel.ordinal.${rule}`, { n: formatCount(n) });
}

function message(text, cls = "muted") {
  return h("p", { class: cls }, text);
}

function table(caption, head, rows, cls = "numbers") {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: cls },
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, ...head.map((heading, i) => h("th", { scope: "col", class: i ? "num" : null }, heading)))),
      h(
        "tbody",
        {},
        ...rows.map((r) =>
          h(
            "tr",
            {},
            ...r.map((cell, i) =>
              i === 0
                ? h("th", { scope: "row" }, cell)
                : h("td", { class: cell === insufficient() ? "num insufficient" : "num" }, cell),
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
      report.href = withLanguage(`report.html#${view.toString()}`);
    }
    q("#panel-summary").textContent = t("panel.loading_area", { area: params.name || area, period: periodLabel(period) });
    for (const id of ["#panel-numbers", "#panel-compare", "#panel-series", "#panel-histogram", "#panel-isps"]) {
      q(id).replaceChildren(message(t("panel.loading")));
    }
    this.destroyChart();

    const base = `layers/${encodeURIComponent(layer)}`;
    const areaPath = `${base}/areas/${encodeURIComponent(area)}`;
    const get = (path, query) => fetchJson(this.apiUrl(path, query), { signal: controller.signal });
    const isps = get(`${areaPath}/isps`, { period });
    const series = get(`${areaPath}/series`, { step: kind, isp });
    const histogram = get(`${base}/histogram`, { area, period, isp, direction, coarse: 10 });
    const compare = get(`${areaPath}/compare`, { period, isp, direction });
    const survey = this.loadSurvey(controller);

    const stale = () => controller !== this.controller;
    const show = async (promise, render, target) => {
      try {
        const doc = await promise;
        if (!stale()) await render(doc);
        return doc;
      } catch (err) {
        if (err.name === "AbortError" || stale()) return null;
        q(target).replaceChildren(message(t("panel.load_failed", { error: err.message }), "error"));
        return null;
      }
    };
    const [ispDoc] = await Promise.all([
      show(isps, (doc) => this.renderIsps(doc), "#panel-isps"),
      show(series, (doc) => this.renderSeries(doc), "#panel-series"),
      show(histogram, (doc) => this.renderHistogram(doc), "#panel-histogram"),
      show(compare, (doc) => this.renderCompare(doc), "#panel-compare"),
      survey,
    ]);
    if (stale()) return;
    this.root.removeAttribute("aria-busy");
    if (!ispDoc) {
      q("#panel-numbers").replaceChildren(message(t("panel.numbers_failed"), "error"));
      q("#panel-summary").textContent = t("panel.summary_failed", { area: params.name || area });
    }
  }

  /** The residents' survey, beside M-Lab's figures, where the map shows a window of it
   * (`params.surveyWindow`; the section is hidden without one). A 404 (the window not
   * in the API's release yet, or no cells for this ISP) is said in the section. */
  loadSurvey(controller) {
    const p = this.params;
    const section = this.root.querySelector("#panel-survey-section");
    if (section) section.hidden = !p.surveyWindow;
    if (!section || !p.surveyWindow) return null;
    const target = this.root.querySelector("#panel-survey");
    target.replaceChildren(message(t("panel.loading")));
    const stale = () => controller !== this.controller;
    const url = this.apiUrl(`layers/${encodeURIComponent(p.layer)}/survey`, { window: p.surveyWindow, isp: p.isp });
    return fetchJson(url, { signal: controller.signal })
      .catch((err) => {
        if (err.status === 404) return { missing: err.message, label: p.surveyWindow };
        throw err;
      })
      .then((doc) => {
        if (!stale()) this.renderSurvey(doc);
        return doc;
      })
      .catch((err) => {
        if (err.name !== "AbortError" && !stale()) target.replaceChildren(message(t("panel.load_failed", { error: err.message }), "error"));
        return null;
      });
  }

  /** The map learns which survey window it shows once the period's figures are in,
   * which may be after the panel opened (a shared link to an area): show it then. */
  setSurveyWindow(window) {
    const p = this.params;
    if (!this.isOpen || !p || (p.surveyWindow || null) === (window || null)) return;
    p.surveyWindow = window;
    this.loadSurvey(this.controller);
  }

  /** What residents of the area answered in the survey window the map shows, published
   * with noise; "too few responses" where the window does not list the area. */
  renderSurvey(doc) {
    const p = this.params;
    const target = this.root.querySelector("#panel-survey");
    const name = p.name || p.area;
    if (doc.missing) {
      target.replaceChildren(message(t("panel.survey_missing", { window: periodLabel(doc.label), reason: doc.missing })));
      return;
    }
    const when = t("panel.survey_when", { window: periodLabel(doc.label) });
    const who = p.isp === ALL_ISPS ? "" : t("panel.survey_with", { isp: p.isp });
    const cell = (doc.areas || []).find((a) => a.area === p.area);
    if (!cell) {
      target.replaceChildren(
        message(t("panel.survey_too_few", { area: name, who, when, min: formatCount(doc.min_responses) })),
      );
      return;
    }
    const types = Object.entries(cell.connection_types || {})
      .filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 3)
      .map(([type, n]) => `${this.config?.survey_choices?.connection_type?.[language()]?.[type] || type} ${formatCount(n)}`)
      .join(", ");
    const rows = [
      [t("panel.survey_responses"), formatCount(cell.responses)],
      [t("panel.survey_promised"), formatMbps(cell.advertised_download_median)],
      [t("panel.survey_measured"), formatMbps(cell.measured_download_median)],
      [t("panel.survey_ratio"), formatRatio(cell.download_ratio_median)],
      [t("panel.survey_below_half"), formatShare(cell.below_half_share)],
      [t("panel.survey_cost"), formatAmount(cell.monthly_cost_median)],
      [t("panel.survey_cost_per_mbps"), formatAmount(cell.cost_per_mbps_median)],
      [t("panel.survey_satisfied"), formatShare(satisfiedShare(cell.satisfaction))],
      [t("panel.survey_types"), types || "–"],
    ];
    target.replaceChildren(
      table(t("panel.survey_caption", { area: name, who, when }), ["", periodLabel(doc.label)], rows),
      message(t("panel.survey_note", { when, who: who ? t("panel.survey_residents", { who }) : t("panel.survey_every_isp") })),
    );
  }

  renderIsps(doc) {
    const p = this.params;
    const q = this.root.querySelector.bind(this.root);
    const name = doc.name || p.name || p.area;
    q("#panel-title").textContent = name;
    const entry = (doc.isps || []).find((e) => e.isp === p.isp);
    const ispText = ispLabel(p.isp);
    const when = p.hours ? `${periodLabel(p.period)}, ${p.hours}` : periodLabel(p.period);
    const where = `${name}, ${when}, ${ispText}`;
    const noTests = t("panel.no_tests");

    // Numbers for the chosen ISP, both directions.
    if (!entry) {
      q("#panel-numbers").replaceChildren(message(t("panel.no_tests_for", { period: periodLabel(p.period), isp: ispText })));
      q("#panel-summary").textContent = t("panel.summary_no_tests", { where });
    } else {
      const cell = (d) => entry[d];
      const sup = (d) => (entry.suppressed || []).includes(d);
      const val = (d, f, key) => {
        if (sup(d)) return insufficient();
        const c = cell(d);
        return c ? f(c[key]) : noTests;
      };
      const rows = [
        [t("panel.tests"), ...DIRECTIONS.map((d) => val(d, formatCount, "tests"))],
        [t("panel.clients"), ...DIRECTIONS.map((d) => val(d, formatCount, "clients"))],
        [t("panel.median"), ...DIRECTIONS.map((d) => val(d, formatMbps, "median"))],
        [
          // Where the median of all such tests lies, 19 times in 20 (docs/data.md).
          t("panel.median_interval"),
          ...DIRECTIONS.map((d) => (sup(d) ? insufficient() : cell(d) ? formatInterval(cell(d).median_low, cell(d).median_high, formatMbps) : noTests)),
        ],
        [
          t("panel.p10_p90"),
          ...DIRECTIONS.map((d) => (sup(d) ? insufficient() : cell(d) ? t("format.interval", { low: formatMbps(cell(d).p10), high: formatMbps(cell(d).p90) }) : noTests)),
        ],
        [t("panel.rtt_median"), ...DIRECTIONS.map((d) => val(d, formatMs, "rtt_median"))],
        [
          // Tests whose IP location is too rough for areas this small (a town's or a
          // state's centroid): counted in larger areas, not here. Null before it was kept.
          t("panel.coarse"),
          ...DIRECTIONS.map((d) => (sup(d) ? insufficient() : cell(d) ? (cell(d).coarse == null ? "–" : formatCount(cell(d).coarse)) : noTests)),
        ],
      ];
      for (const u of this.index.thresholds || []) {
        rows.push([
          u.id ? t("panel.good_enough", { use_case: nameOf(u) }) : t("panel.at_or_above", { label: u.label }),
          ...DIRECTIONS.map((d) => {
            if (sup(d)) return insufficient();
            const c = cell(d);
            if (!c) return noTests;
            const share = formatShare(c.shares?.[u.label] ?? c[u.column]);
            const low = c.shares_low?.[u.label];
            const high = c.shares_high?.[u.label];
            return low == null || high == null ? share : `${share} (${formatInterval(low, high, formatShare)})`;
          }),
        ]);
      }
      q("#panel-numbers").replaceChildren(table(t("panel.statistics_of", { where }), ["", dir("download", "_title"), dir("upload", "_title")], rows));
      const d = entry[p.direction];
      q("#panel-summary").textContent = sup(p.direction)
        ? t("panel.summary_insufficient", { where, direction: dir(p.direction, "_plural") })
        : d
          ? t("panel.summary", { where, direction: dir(p.direction), median: formatMbps(d.median), tests: tPlural("panel.tests_count", d.tests) })
          : t("panel.summary_none", { where, direction: dir(p.direction) });
    }

    // Every ISP side by side.
    const list = doc.isps || [];
    if (!list.length) {
      q("#panel-isps").replaceChildren(message(t("panel.no_tests_period")));
      return;
    }
    const fmt = (e, d, f, key) => ((e.suppressed || []).includes(d) ? insufficient() : e[d] ? f(e[d][key]) : "–");
    const rows = list.map((e) => [
      e.isp === ALL_ISPS ? t("isp.all") : e.isp,
      fmt(e, "download", formatMbps, "median"),
      fmt(e, "upload", formatMbps, "median"),
      fmt(e, "download", formatMs, "rtt_median"),
      fmt(e, "download", formatCount, "tests"),
    ]);
    q("#panel-isps").replaceChildren(
      table(
        t("panel.isps_caption", { area: name, period: periodLabel(p.period) }),
        ["panel.isp", "chart.download_median", "chart.upload_median", "chart.latency_median", "chart.download_tests"].map((key) => t(key)),
        rows,
        "numbers isps",
      ),
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
      target.replaceChildren(message(t("panel.compare_insufficient", { area: name }), "insufficient"));
      return;
    }
    if (!cell || cell.median == null) {
      target.replaceChildren(message(t("panel.compare_none", { area: name, direction: dir(p.direction) })));
      return;
    }
    const interval = (low, high) => formatInterval(low, high, formatMbps);
    const rows = [
      [t("panel.compare_median", { direction: dir(p.direction) }), formatMbps(cell.median), formatMbps(region.median)],
      [t("panel.interval"), interval(cell.median_low, cell.median_high), interval(region.median_low, region.median_high)],
      [t("panel.tests"), formatCount(cell.tests), formatCount(region.tests)],
    ];
    const verdicts = { lower: "panel.verdict_lower", higher: "panel.verdict_higher", not_distinguishable: "panel.verdict_same" };
    const verdict = t(verdicts[doc.comparison?.verdict] || "panel.verdict_unknown", { area: name });
    const parts = [
      table(t("panel.compare_caption", { area: name }), ["", name, t("panel.region")], rows),
      h("p", { class: "verdict" }, verdict),
    ];
    const r = doc.rank;
    if (r) {
      const allowed = r.possible_ranks;
      const span =
        allowed && allowed.first !== allowed.last ? t("panel.rank_span", { first: ordinal(allowed.first), last: ordinal(allowed.last) }) : "";
      const text = t("panel.rank", { rank: ordinal(r.rank), direction: dir(p.direction), of: formatCount(r.of), span });
      parts.push(h("p", { class: "rank" }, text));
    }
    const left = region.coverage && !region.coverage.complete ? region.coverage.excluded_cells : 0;
    const without = left ? t("panel.region_without", { n: formatCount(left) }) : "";
    parts.push(h("p", { class: "muted" }, t("panel.region_note", { without })));
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
    const ispText = ispLabel(p.isp);
    if (doc.suppressed) {
      target.replaceChildren(message(t("panel.histogram_insufficient", { speeds: dir(p.direction, "_speeds"), isp: ispText }), "insufficient"));
      return;
    }
    if (!doc.tests || !doc.buckets?.length) {
      target.replaceChildren(message(t("panel.histogram_none", { direction: dir(p.direction), isp: ispText, period: periodLabel(p.period) })));
      return;
    }
    target.replaceChildren(
      h("p", { class: "muted" }, t("panel.histogram_caption", { speeds: dir(p.direction, "_speeds"), tests: formatCount(doc.tests), isp: ispText, period: periodLabel(p.period) })),
      histogramSvg(doc.buckets, dir(p.direction, "_speed")),
    );
  }
}
