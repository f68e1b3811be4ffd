// The map's legend: what the colours, the hatching and the outlines of the areas mean,
// in the page's language.
import { h } from "../common/dom.js";
import { formatNumber, t } from "../common/i18n.js";
import { DIRECTIONS } from "../common/vocabulary.js";
import { holdsDirection } from "../common/shares.js";
import { NO_DATA_COLOR, WIDE_INTERVAL, classes, directionText, formatPercent, ispLabel, periodLabel } from "./metrics.js";

function swatch(style) {
  const s = h("span", { class: "swatch", "aria-hidden": "true" });
  Object.assign(s.style, style);
  return s;
}

const HATCH_SWATCH = { background: `repeating-linear-gradient(135deg, #3c4043 0 2px, #d6d9dc 2px 6px)` };

/** A legend entry: a swatch of `style` and its text. */
function legendItem(style, text, className = null) {
  return h("li", { class: className }, swatch(style), text);
}

/** The legend's colour classes of a measure. */
function classItems(metric, direction) {
  return classes(metric, direction).map((c) => legendItem({ background: c.color }, c.label));
}

/** The legend of a measure of the tests: its caption, its classes, the hatch of
 * suppressed areas, the white of areas without tests, and (for the median) the dashed
 * outline of uncertain ones. `view` has the direction, ISP and period shown; `privacy`
 * the thresholds. */
export function legend(metric, view, privacy) {
  const caption = t("legend.caption", {
    measure: metric.label,
    direction: directionText(view.direction),
    isp: ispLabel(view.isp),
    period: periodLabel(view.period),
    note: metric.note,
  });
  if (metric.threshold && !holdsDirection(metric.threshold, view.direction)) {
    // Not "no tests": the use case asks nothing of this direction, so it has no share.
    const note = t("legend.no_limit", { direction: directionText(view.direction, "_plural") });
    return { caption, items: [legendItem({ background: NO_DATA_COLOR, borderColor: "#4a4f57" }, note)] };
  }
  const items = classItems(metric, view.direction);
  items.push(
    legendItem(HATCH_SWATCH, t("legend.insufficient", { min_tests: privacy.min_tests ?? "?", min_clients: privacy.min_clients ?? "?" }), "legend-suppressed"),
    legendItem({ background: NO_DATA_COLOR, borderColor: "#4a4f57" }, t("legend.no_tests")),
  );
  if (metric.stat === "median") {
    items.push(
      legendItem({ background: "#fff", border: "2px dashed #1b1b1b" }, t("legend.uncertain", { share: formatPercent(formatNumber(WIDE_INTERVAL * 100)) }), "legend-uncertain"),
    );
  }
  return { caption, items };
}

/** The legend of a survey measure: its window (`shown`, null when the period has
 * none), its classes, and the hatch of the areas with too few responses. */
export function surveyLegend(metric, view, shown) {
  const when = shown
    ? t("legend.survey_window", { window: periodLabel(shown.label) })
    : t("legend.survey_no_window", { period: periodLabel(view.period) });
  const caption = t("legend.survey_caption", { measure: metric.label, isp: ispLabel(view.isp), when, note: metric.note });
  const items = classItems(metric, DIRECTIONS[0]);
  items.push(legendItem(HATCH_SWATCH, t("legend.survey_too_few"), "legend-suppressed"));
  return { caption, items };
}
