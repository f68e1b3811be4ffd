// What the map can colour areas by, their class breaks and colours, how numbers are
// written, and the MapLibre expressions that read them from each area's feature state
// (the period's numbers, joined to the shapes in the browser).
import { clockText, formatDate, formatNumber, nameOf, t } from "../common/i18n.js";
import { ALL_ISPS, PERIOD_KINDS } from "../common/vocabulary.js";

// Viridis, 8 steps: sequential, readable by the common colour-vision deficiencies,
// and none of its colours is the grey of "insufficient data" or the white of "no tests".
export const PALETTE = ["#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725"];
export const SUPPRESSED_COLOR = "#9aa0a6";
export const NO_DATA_COLOR = "#ffffff";

// Numbers are written for the page's language (common/i18n.js), when they are shown.
const nf = (digits) => ({ format: (v) => formatNumber(v, { maximumFractionDigits: digits }) });
const int = nf(0);
/** A configured limit as it was written (no grouping), in the language's digits. */
const plain = (v) => formatNumber(v, { useGrouping: false, maximumFractionDigits: 6 });

/** Throughput in Mbps: one decimal under 10, whole numbers above. */
export function formatMbps(v) {
  return v == null ? "–" : `${(v < 10 ? nf(1) : int).format(v)} Mbps`;
}
export function formatMs(v) {
  return v == null ? "–" : `${nf(1).format(v)} ms`;
}
/** A percentage as the language writes it ("45%", "45 %"). */
export function formatPercent(n) {
  return t("format.percent", { n });
}
export function formatShare(v) {
  return v == null ? "–" : formatPercent(int.format(v * 100));
}
/** A 95 % interval's bounds, `low to high` in `format`'s unit ("–" without one). */
export function formatInterval(low, high, format) {
  return low == null || high == null ? "–" : t("format.interval", { low: format(low), high: format(high) });
}
export function formatCount(v) {
  return v == null ? "–" : int.format(v);
}

/** A use case's limits in words (index.json `thresholds`, an entry with an `id`). */
export function useCaseNeeds(u) {
  const both = u.rtt_ms != null ? [t("use_case.rtt_at_most", { ms: plain(u.rtt_ms) })] : [];
  const down = [
    ...(u.download != null ? [t("use_case.at_least", { mbps: plain(u.download) })] : []),
    ...both,
    ...(u.loss != null ? [t("use_case.loss_at_most", { share: formatPercent(nf(2).format(u.loss * 100)) })] : []),
  ];
  const up = [...(u.upload != null ? [t("use_case.at_least", { mbps: plain(u.upload) })] : []), ...both];
  const parts = [];
  if (down.length) parts.push(t("use_case.downloads", { needs: down.join(", ") }));
  if (up.length) parts.push(t("use_case.uploads", { needs: up.join(", ") }));
  return parts.join("; ");
}

/**
 * The map's measures. `stat` is the statistic's name in the tiles and the API;
 * `breaks` the lower bounds of the classes after the first, per direction.
 */
export function metricsFor(thresholds) {
  const metrics = [
    {
      id: "median",
      stat: "median",
      label: t("measure.median"),
      unit: "Mbps",
      note: t("measure.median_note"),
      breaks: { download: [10, 25, 50, 100, 200, 500, 1000], upload: [3, 10, 20, 50, 100, 200, 500] },
      format: formatMbps,
      short: (v) => int.format(v),
    },
    {
      id: "rtt_median",
      stat: "rtt_median",
      label: t("measure.rtt_median"),
      unit: "ms",
      note: t("measure.rtt_median_note"),
      breaks: { download: [10, 20, 30, 40, 60, 80, 120], upload: [10, 20, 30, 40, 60, 80, 120] },
      format: formatMs,
      short: (v) => int.format(v),
    },
  ];
  for (const u of thresholds || []) {
    metrics.push({
      id: u.column,
      stat: u.column,
      label: u.id ? t("measure.use_case", { use_case: nameOf(u) }) : t("measure.threshold", { label: u.label }),
      unit: "%",
      note: u.id ? useCaseNeeds(u) : t("measure.threshold_note", { download: plain(u.download), upload: plain(u.upload) }),
      threshold: u,
      breaks: { download: [0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99], upload: [0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99] },
      format: formatShare,
      short: (v) => int.format(v * 100),
    });
  }
  metrics.push({
    id: "tests",
    stat: "tests",
    label: t("measure.tests"),
    unit: t("measure.tests_unit"),
    note: t("measure.tests_note"),
    breaks: { download: [50, 100, 200, 500, 1000, 2000, 5000], upload: [50, 100, 200, 500, 1000, 2000, 5000] },
    format: formatCount,
    short: (v) => int.format(v),
  });
  return metrics;
}

/** A ratio of measured to promised speed: `0.63×`. */
export function formatRatio(v) {
  return v == null ? "–" : `${formatNumber(v, { minimumFractionDigits: 2, maximumFractionDigits: 2 })}×`;
}
/** An amount in the survey's currency (the form's unit): `63` or `0.25`. */
export function formatAmount(v) {
  return v == null ? "–" : v < 10 ? nf(2).format(v) : int.format(v);
}

/**
 * The residents' survey's measures (index.json `survey`): drawn from the survey's
 * published windows for the survey's layer; they have no direction. An area the
 * window does not list (too few responses) is hatched.
 */
export function surveyMetrics(survey) {
  if (!survey) return [];
  const both = (b) => ({ download: b, upload: b });
  return [
    {
      id: "survey_ratio",
      survey: true,
      stat: "download_ratio_median",
      label: t("measure.survey_ratio"),
      unit: "×",
      note: t("measure.survey_ratio_note"),
      breaks: both([0.25, 0.5, 0.7, 0.8, 0.9, 1, 1.1]),
      format: formatRatio,
      short: (v) => nf(2).format(v),
    },
    {
      id: "survey_cost",
      survey: true,
      stat: "monthly_cost_median",
      label: t("measure.survey_cost"),
      unit: t("measure.survey_cost_unit"),
      note: t("measure.survey_cost_note"),
      breaks: both([30, 40, 50, 60, 70, 80, 100]),
      format: formatAmount,
      short: (v) => int.format(v),
    },
    {
      id: "survey_satisfied",
      survey: true,
      stat: "satisfied_share",
      label: t("measure.survey_satisfied"),
      unit: "%",
      note: t("measure.survey_satisfied_note"),
      breaks: both([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]),
      format: formatShare,
      short: (v) => int.format(v * 100),
    },
  ];
}

/** The feature-state key of a survey statistic for an ISP (`all` or a name). */
export function surveyKey(stat, isp) {
  return isp && isp !== ALL_ISPS ? `survey:${stat}@${isp}` : `survey:${stat}`;
}

/** The share of the two highest answers of a satisfaction histogram (noisy counts),
 * or null without answers. */
export function satisfiedShare(histogram) {
  if (!histogram) return null;
  const levels = Object.keys(histogram).sort((a, b) => Number(a) - Number(b));
  const total = levels.reduce((sum, k) => sum + histogram[k], 0);
  if (!total || levels.length < 2) return null;
  return levels.slice(-2).reduce((sum, k) => sum + histogram[k], 0) / total;
}

/** The feature states of a survey window's cells: {area: {key: value}}. */
export function surveyStates(doc) {
  const out = {};
  const add = (cell, isp) => {
    const values = {
      download_ratio_median: cell.download_ratio_median ?? null,
      monthly_cost_median: cell.monthly_cost_median ?? null,
      satisfied_share: satisfiedShare(cell.satisfaction),
      responses: cell.responses,
    };
    const target = (out[cell.area] ||= {});
    for (const [stat, value] of Object.entries(values)) target[surveyKey(stat, isp)] = value;
  };
  for (const cell of doc.areas || []) add(cell, ALL_ISPS);
  for (const cell of doc.by_isp || []) add(cell, cell.isp);
  return out;
}

/** The first and last day of a period label (`2025-03` → ["2025-03-01", "2025-03-31"]). */
export function periodRange(label) {
  const pad = (n) => String(n).padStart(2, "0");
  const lastDay = (y, m) => new Date(Date.UTC(y, m, 0)).getUTCDate();
  let m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(label);
  if (m) return [label, label];
  m = /^(\d{4})-(\d{2})$/.exec(label);
  if (m) return [`${label}-01`, `${label}-${pad(lastDay(+m[1], +m[2]))}`];
  m = /^(\d{4})-Q(\d)$/.exec(label);
  if (m) {
    const first = (+m[2] - 1) * 3 + 1;
    return [`${m[1]}-${pad(first)}-01`, `${m[1]}-${pad(first + 2)}-${pad(lastDay(+m[1], first + 2))}`];
  }
  m = /^(\d{4})$/.exec(label);
  if (m) return [`${label}-01-01`, `${label}-12-31`];
  return [label, label];
}

/** The survey window a period shows: the latest that holds it whole, else the latest
 * that overlaps it; null when none does. `windows`: the survey index's entries. */
export function surveyWindowFor(windows, period) {
  const [start, end] = periodRange(period);
  const holding = windows.filter((w) => w.start <= start && end <= w.end);
  if (holding.length) return holding[holding.length - 1];
  const overlapping = windows.filter((w) => w.start <= end && start <= w.end);
  return overlapping.length ? overlapping[overlapping.length - 1] : null;
}

/** The tile property holding a statistic for a direction and ISP (`all` or a name). */
export function propertyKey(stat, direction, isp) {
  return isp && isp !== ALL_ISPS ? `${direction}_${stat}@${isp}` : `${direction}_${stat}`;
}

/** The classes of a metric for a direction: [{color, from, to, label}]. */
export function classes(metric, direction) {
  const breaks = metric.breaks[direction];
  const out = [];
  for (let i = 0; i <= breaks.length; i++) {
    const from = i === 0 ? null : breaks[i - 1];
    const to = i === breaks.length ? null : breaks[i];
    let label;
    if (from == null) label = t("legend.under", { to: metric.short(to) });
    else if (to == null) label = t("legend.or_more", { from: metric.short(from) });
    else label = t("legend.from_to", { from: metric.short(from), to: metric.short(to) });
    out.push({ color: PALETTE[i], from, to, label: metric.unit === "%" ? formatPercent(label) : `${label} ${metric.unit}` });
  }
  return out;
}

/** A number of the period joined to the area (MapLibre feature state; null if none). */
const stateOf = (key) => ["feature-state", key];

/** The fill colour of an area: a class colour, grey when suppressed, white without tests
 * (a survey measure: grey wherever the window lists no figure). */
export function fillColor(metric, direction, isp) {
  const value = stateOf(metric.survey ? surveyKey(metric.stat, isp) : propertyKey(metric.stat, direction, isp));
  const step = ["step", ["to-number", value], PALETTE[0]];
  metric.breaks[direction].forEach((b, i) => step.push(b, PALETTE[i + 1]));
  if (metric.survey) return ["case", ["!=", value, null], step, SUPPRESSED_COLOR];
  const suppressed = stateOf(propertyKey("suppressed", direction, isp));
  return ["case", ["!=", value, null], step, ["==", suppressed, true], SUPPRESSED_COLOR, NO_DATA_COLOR];
}

/** Whether an area's cell is suppressed (drawn hatched): no number, the flag set; for a
 * survey measure, no figure (too few responses). */
export function suppressedCondition(metric, direction, isp) {
  if (metric.survey) return ["==", stateOf(surveyKey(metric.stat, isp)), null];
  return ["all", ["==", stateOf(propertyKey(metric.stat, direction, isp)), null], ["==", stateOf(propertyKey("suppressed", direction, isp)), true]];
}

// A median is marked uncertain when its 95 % interval is wider than this share of it.
export const WIDE_INTERVAL = 0.5;

/** Whether an area's median is uncertain: its 95 % interval (docs/data.md) wider than
 * `WIDE_INTERVAL` of the median. Only the median measure has such marks; the hexagons
 * that summarise others at low zoom have no interval. */
export function uncertainCondition(metric, direction, isp) {
  if (metric.stat !== "median") return false;
  const [low, high, median] = ["median_low", "median_high", "median"].map((k) => stateOf(propertyKey(k, direction, isp)));
  return ["all", ["!=", low, null], ["!=", high, null], [">", ["-", ["to-number", high], ["to-number", low]], ["*", WIDE_INTERVAL, ["to-number", median]]]];
}

/** The opacity of the dashed outline of uncertain medians. */
export function uncertainOpacity(metric, direction, isp) {
  return ["case", uncertainCondition(metric, direction, isp), 1, 0];
}

/** The opacity of the hatch layer: visible on suppressed cells only. */
export function hatchOpacity(metric, direction, isp) {
  return ["case", suppressedCondition(metric, direction, isp), 0.9, 0];
}

/** An opacity shown only on the areas the period draws (H3 layers draw only the cells
 * of the period and their parents; polygon layers draw every area). */
export function drawnOpacity(opacity, everyArea) {
  return everyArea ? opacity : ["case", ["boolean", stateOf("drawn"), false], opacity, 0];
}

/** An hour as people say it: 19 → "7 pm", 0 → "midnight". */
export function clock(hour) {
  return clockText(hour);
}

/** "evening hours (7 pm to 11 pm)", from index.json's `evening`. */
export function eveningText(evening) {
  return t("hours.evening_text", { start: clock(evening.start), end: clock(evening.end) });
}

/** A layer's name in the page's language; an evening twin's is its layer's, in the
 * evening hours. */
export function layerName(index, id) {
  const info = (index.layers || []).find((l) => l.id === id);
  if (!info) return id;
  if (!info.hours) return nameOf(info) || info.id;
  const base = index.layers.find((l) => l.id === info.layer);
  return t("map.evening_layer", { layer: base ? nameOf(base) || base.id : info.layer });
}

/** The layer whose numbers a view shows: its layer, or that layer's evening twin. */
export function dataLayerOf(index, state) {
  const info = (index.layers || []).find((l) => l.id === state.layer);
  return (state.hours === "evening" && info?.evening) || state.layer;
}

/** The label of a period for people: `2025-03` → `March 2025`. */
export function periodLabel(label) {
  let m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(label);
  if (m) return formatDate(new Date(Date.UTC(+m[1], +m[2] - 1, +m[3])), { day: "numeric", month: "long", year: "numeric" });
  m = /^(\d{4})-(\d{2})$/.exec(label);
  if (m) return formatDate(new Date(Date.UTC(+m[1], +m[2] - 1, 1)), { month: "long", year: "numeric" });
  m = /^(\d{4})-Q(\d)$/.exec(label);
  if (m) return t("period.quarter", { quarter: m[2], year: m[1] });
  return label;
}

/**
 * How fresh the published data is, from index.json's `publication`: the last date
 * published, and when the open month (or quarter, or year) appears, since each period
 * is published once, when it is final.
 */
export function publicationNote(publication) {
  if (!publication) return "";
  const parts = [];
  if (publication.complete_through) {
    parts.push(t("publication.through", { date: periodLabel(publication.complete_through) }));
  }
  const open = ["month", "quarter", "year"].find((kind) => publication.next?.[kind]);
  if (open) {
    const next = publication.next[open];
    parts.push(t("publication.next", { period: periodLabel(next.period), expected: periodLabel(next.expected) }));
  } else if (publication.end) {
    parts.push(t("publication.end", { date: periodLabel(publication.end) }));
  }
  return parts.join(" ");
}

/** The first moment of a period, in seconds since 1970 (for the chart's time axis). */
export function periodStart(label) {
  const m = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?|-Q(\d))?$/.exec(label);
  if (!m) return null;
  const month = m[4] ? (Number(m[4]) - 1) * 3 : m[2] ? Number(m[2]) - 1 : 0;
  return Date.UTC(Number(m[1]), month, m[3] ? Number(m[3]) : 1) / 1000;
}

/** A period kind's name for people ("Month"), or the kind as it is. */
export function kindName(kind) {
  return PERIOD_KINDS.includes(kind) ? t(`period.kind_${kind}`) : kind;
}

/** An ISP as a sentence says it: `all` is "all ISPs", in the page's language. */
export function ispLabel(isp) {
  return isp === ALL_ISPS ? t("isp.all_lower") : isp;
}

/** A direction as a sentence uses it: "download", or with `form` "_plural"
 * ("downloads"), "_title" ("Download"), "_speed", "_speeds". */
export function directionText(direction, form = "") {
  return t(`panel.${direction}${form}`);
}
