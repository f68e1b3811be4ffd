// The time series of an area (loaded on first use): median download and upload in
// Mbps on the left axis, each in a band of its 95 % confidence interval, median
// latency in ms on the right. Periods without a published value are gaps, never joined
// across; a table of the values follows.
import uPlot from "uplot";
import { formatDate, t, tPlural } from "../common/i18n.js";
import { DIRECTIONS, PERIOD_KINDS } from "../common/vocabulary.js";
import { formatCount, formatInterval, formatMbps, formatMs, ispLabel, periodLabel } from "./metrics.js";
import { h } from "../common/dom.js";

/** A period's label on the time axis: `Mar 7`, `Mar 2025`, `Q1 2025`, `2025` (in the
 * page's language). */
function shortLabel(label) {
  let m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(label);
  if (m) return formatDate(new Date(Date.UTC(+m[1], +m[2] - 1, +m[3])), { month: "short", day: "numeric" });
  m = /^(\d{4})-(\d{2})$/.exec(label);
  if (m) return formatDate(new Date(Date.UTC(+m[1], +m[2] - 1, 1)), { month: "short", year: "numeric" });
  m = /^(\d{4})-Q(\d)$/.exec(label);
  if (m) return t("period.quarter", { quarter: m[2], year: m[1] });
  return label;
}

// Okabe–Ito colours, told apart by the common colour-vision deficiencies; the lines
// also differ in dash.
const LINES = [
  { key: "median", direction: "download", label: "chart.download_median", scale: "mbps", stroke: "#0072b2", dash: null },
  { key: "median", direction: "upload", label: "chart.upload_median", scale: "mbps", stroke: "#d55e00", dash: [6, 4] },
  { key: "rtt_median", direction: "download", label: "chart.latency_median", scale: "ms", stroke: "#1b1b1b", dash: [2, 3] },
];

// The medians' 95 % intervals, drawn as bands in their line's colour.
const BANDS = [
  { direction: "download", label: "chart.download_interval", fill: "rgba(0, 114, 178, 0.15)" },
  { direction: "upload", label: "chart.upload_interval", fill: "rgba(213, 94, 0, 0.15)" },
];

export function drawSeries(target, doc, params) {
  const periods = doc.periods || [];
  const x = periods.map((_, i) => i);
  const find = (d) => (doc.series || []).find((s) => s.direction === d);
  const columns = LINES.map((l) => {
    const s = find(l.direction);
    return periods.map((_, i) => s?.[l.key]?.[i] ?? null);
  });
  // Each band as two series, its upper then its lower bound (uPlot fills between).
  const bounds = BANDS.flatMap((b) => {
    const s = find(b.direction);
    return ["median_high", "median_low"].map((key) => periods.map((_, i) => s?.[key]?.[i] ?? null));
  });
  const tests = testsByDirection(find, periods.length);
  const published = columns[0].filter((v) => v != null).length;
  const ispText = ispLabel(params.isp);
  const kind = PERIOD_KINDS.includes(params.kind) ? params.kind : "period";

  const caption = h(
    "p",
    { class: "muted" },
    published
      ? t("chart.caption", { periods: tPlural(`chart.count_${kind}`, periods.length), isp: ispText, published: formatCount(published) })
      : t("chart.caption_none", { isp: ispText, kind: t(`chart.any_${kind}`) }),
  );
  const box = h("div", {
    class: "uplot-box",
    role: "img",
    "aria-label": t("chart.label", { area: doc.name || doc.area, kind: t(`chart.by_${kind}`), isp: ispText }),
  });
  target.append(caption, box);

  const width = Math.max(260, Math.floor(target.clientWidth || 320));
  const opts = {
    width,
    height: 220,
    legend: { live: true },
    cursor: { points: { size: 7 } },
    scales: { x: { time: false, range: (u, min, max) => [min - 0.5, max + 0.5] }, mbps: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] }, ms: { range: (u, min, max) => [0, Math.max(1, max * 1.2)] } },
    series: [
      { label: t(params.kind === "day" ? "period.kind_day" : "chart.period"), value: (u, v, si, i) => (i == null ? "–" : periodLabel(periods[i])) },
      ...LINES.map((l) => ({
        label: t(l.label),
        scale: l.scale,
        stroke: l.stroke,
        width: 2,
        dash: l.dash || undefined,
        spanGaps: false,
        points: { show: true, size: 5, fill: l.stroke },
        value: (u, v) => (v == null ? "–" : l.scale === "ms" ? formatMs(v) : formatMbps(v)),
      })),
      ...BANDS.flatMap((b) =>
        ["upper", "lower"].map((end) => ({
          label: t(`chart.${end}`, { band: t(b.label) }),
          scale: "mbps",
          stroke: "transparent",
          width: 0,
          spanGaps: false,
          points: { show: false },
          value: (u, v) => (v == null ? "–" : formatMbps(v)),
        })),
      ),
    ],
    // Series 1 to 3 are the lines; each band's bounds follow, upper first.
    bands: BANDS.map((b, i) => ({ series: [LINES.length + 1 + 2 * i, LINES.length + 2 + 2 * i], fill: b.fill })),
    axes: [
      {
        stroke: "#1b1b1b",
        grid: { stroke: "#e3e7ec" },
        incrs: [1, 2, 3, 4, 6, 7, 12, 14, 30, 60, 91, 182, 365],
        values: (u, splits) => splits.map((v) => (Number.isInteger(v) && periods[v] ? shortLabel(periods[v]) : "")),
      },
      { scale: "mbps", label: "Mbps", stroke: "#1b1b1b", grid: { stroke: "#e3e7ec" }, size: 50 },
      { scale: "ms", label: "ms", side: 1, stroke: "#1b1b1b", grid: { show: false }, size: 45 },
    ],
  };
  const chart = new uPlot(opts, [x, ...columns, ...bounds], box);
  const observer = new ResizeObserver(() => {
    const w = Math.max(260, Math.floor(target.clientWidth));
    if (w && Math.abs(w - chart.width) > 2) chart.setSize({ width: w, height: 220 });
  });
  observer.observe(target);

  // The same values as a table, for screen readers and for copying.
  const head = [
    "chart.period",
    "chart.download_median",
    "chart.download_interval",
    "chart.upload_median",
    "chart.upload_interval",
    "chart.latency_median",
    "chart.download_tests",
    "chart.upload_tests",
  ].map((key) => t(key));
  const rows = periods.map((p, i) => [
    periodLabel(p),
    fmtOr(columns[0][i], formatMbps),
    formatInterval(bounds[1][i], bounds[0][i], formatMbps),
    fmtOr(columns[1][i], formatMbps),
    formatInterval(bounds[3][i], bounds[2][i], formatMbps),
    fmtOr(columns[2][i], formatMs),
    fmtOr(tests.download[i], formatCount),
    fmtOr(tests.upload[i], formatCount),
  ]);
  const tbl = h(
    "table",
    { class: "numbers series" },
    h("thead", {}, h("tr", {}, head.map((text, i) => h("th", { scope: "col", class: i ? "num" : null }, text)))),
    h(
      "tbody",
      {},
      rows.map((cells) => h("tr", {}, cells.map((c, j) => (j ? h("td", { class: "num" }, c) : h("th", { scope: "row" }, c))))),
    ),
  );
  target.append(h("details", {}, h("summary", {}, t("chart.table_summary")), h("div", { class: "table-wrap" }, tbl)));

  return {
    destroy() {
      observer.disconnect();
      chart.destroy();
    },
    uplot: chart,
  };
}

function fmtOr(v, f) {
  return v == null ? t("chart.no_value") : f(v);
}

function testsByDirection(find, n) {
  const out = {};
  for (const d of DIRECTIONS) {
    const s = find(d);
    out[d] = Array.from({ length: n }, (_, i) => s?.tests?.[i] ?? null);
  }
  return out;
}
