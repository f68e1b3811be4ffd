// The distribution of a cell's throughput as an SVG bar chart on a log scale (the
// histogram's buckets are log-spaced, so the bars are of equal width).
import { formatNumber, t } from "../common/i18n.js";
import { formatCount, formatMbps } from "./metrics.js";

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text != null) node.textContent = text;
  return node;
}

/** `buckets`: [{lower, upper, count}], in Mbps. */
export function histogramSvg(buckets, what) {
  const W = 320;
  const H = 150;
  const m = { left: 8, right: 8, top: 8, bottom: 30 };
  const lo = Math.log10(buckets[0].lower);
  const hi = Math.log10(buckets[buckets.length - 1].upper);
  const span = Math.max(hi - lo, 1e-9);
  const xs = (v) => m.left + ((Math.log10(v) - lo) / span) * (W - m.left - m.right);
  const maxCount = Math.max(...buckets.map((b) => b.count));
  const ys = (c) => H - m.bottom - (c / maxCount) * (H - m.top - m.bottom);
  const total = buckets.reduce((a, b) => a + b.count, 0);
  // The range holding the middle half of the tests, for the text alternative.
  let acc = 0;
  let q1 = null;
  let q3 = null;
  for (const b of buckets) {
    acc += b.count;
    if (q1 == null && acc >= total * 0.25) q1 = b.lower;
    if (q3 == null && acc >= total * 0.75) q3 = b.upper;
  }
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "histogram",
    role: "img",
    "aria-label": t("histogram.label", {
      what,
      tests: formatCount(total),
      low: formatMbps(buckets[0].lower),
      high: formatMbps(buckets[buckets.length - 1].upper),
      q1: formatMbps(q1),
      q3: formatMbps(q3),
    }),
  });
  for (const b of buckets) {
    const x0 = xs(b.lower);
    const x1 = xs(b.upper);
    const rect = svg("rect", { x: x0, y: ys(b.count), width: Math.max(1, x1 - x0 - 0.5), height: H - m.bottom - ys(b.count), fill: "#0072b2" });
    rect.append(svg("title", {}, t("histogram.bar", { low: formatMbps(b.lower), high: formatMbps(b.upper), tests: formatCount(b.count) })));
    root.append(rect);
  }
  root.append(svg("line", { x1: m.left, x2: W - m.right, y1: H - m.bottom, y2: H - m.bottom, stroke: "#1b1b1b" }));
  for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) {
    const v = 10 ** e;
    const x = xs(v);
    root.append(svg("line", { x1: x, x2: x, y1: H - m.bottom, y2: H - m.bottom + 4, stroke: "#1b1b1b" }));
    root.append(svg("text", { x, y: H - m.bottom + 16, "text-anchor": "middle", "font-size": 11, fill: "#1b1b1b" }, v >= 1 ? formatCount(v) : formatNumber(v)));
  }
  root.append(svg("text", { x: W - m.right, y: H - 2, "text-anchor": "end", "font-size": 11, fill: "#4a4f57" }, t("histogram.axis")));
  return root;
}
