// The controls beside the map: what they offer (from index.json), how a change becomes
// a new view, the period slider, the area picker and the drawer on phones.
import { h, isShown } from "../common/dom.js";
import { t } from "../common/i18n.js";
import { ALL_ISPS } from "../common/vocabulary.js";
import { clock, kindName, layerName, periodLabel, periodStart } from "./metrics.js";

const $ = (id) => document.getElementById(id);

/** Replaces a select's options with `items`, [value, label] pairs. */
export function options(select, items) {
  select.replaceChildren(...items.map(([value, label]) => h("option", { value }, label)));
}

/** Fills the controls from the publication (`index`, its `metrics`) and wires them:
 * `view()` is the map's current state, `commit(changes)` asks for a new one,
 * `pickArea(id, name)` and `closeArea()` act on the area picker's choice, and
 * `loadAreas()` loads the picker's list when it gets focus. */
export function buildControls(index, metrics, { view, commit, pickArea, closeArea, loadAreas }) {
  options(
    $("layer"),
    index.layers.filter((l) => !l.hours).map((l) => [l.id, layerName(index, l.id)]),
  );
  options(
    $("metric"),
    metrics.map((m) => [m.id, m.label]),
  );
  const kinds = Object.keys(index.periods).filter((k) => index.periods[k]?.length);
  options(
    $("kind"),
    kinds.map((k) => [k, kindName(k)]),
  );
  options($("isp"), [[ALL_ISPS, t("isp.all")], ...(index.isps || []).map((i) => [i, i])]);
  for (const id of ["layer", "metric", "direction", "kind", "period", "isp", "area-picker"]) $(id).disabled = false;

  $("layer").addEventListener("change", (e) => commit({ layer: e.target.value, area: null }));
  if (index.evening) {
    const { start, end } = index.evening;
    $("evening-label").textContent = t("map.evening_label", { start: clock(start), end: clock(end) });
    $("evening-help").textContent = t("map.evening_help", { start: clock(start), end: clock(end), timezone: index.evening.timezone });
    $("hours-field").hidden = false;
    $("evening").disabled = false;
    $("evening").addEventListener("change", (e) => commit({ hours: e.target.checked ? "evening" : "all" }));
  }
  $("metric").addEventListener("change", (e) => commit({ metric: e.target.value }));
  $("direction").addEventListener("change", (e) => commit({ direction: e.target.value }));
  $("isp").addEventListener("change", (e) => commit({ isp: e.target.value }));
  $("kind").addEventListener("change", (e) => {
    const kind = e.target.value;
    const periods = index.periods[kind];
    // Keep the time: the newest period of the new kind that starts at or before the old one.
    const t = periodStart(view().period);
    const inside = periods.filter((p) => periodStart(p) <= t);
    commit({ kind, period: inside.length ? inside[inside.length - 1] : periods[periods.length - 1] });
  });
  const slider = $("period");
  slider.addEventListener("input", () => {
    $("period-label").textContent = periodLabel(index.periods[view().kind][Number(slider.value)]);
  });
  slider.addEventListener("change", () => {
    const period = index.periods[view().kind][Number(slider.value)];
    if (period && period !== view().period) commit({ period });
  });
  $("area-picker").addEventListener("change", (e) => {
    const id = e.target.value;
    if (!id) return closeArea();
    pickArea(id, e.target.selectedOptions[0]?.textContent);
  });
  $("area-picker").addEventListener("focus", () => loadAreas());
  $("controls").addEventListener("submit", (e) => e.preventDefault());
  // The skip link moves focus without touching the hash, which holds the map's state.
  document.querySelector(".skip-link").addEventListener("click", (e) => {
    e.preventDefault();
    if (!isShown($("controls"))) setDrawer(true); // a phone's closed drawer holds them
    $("controls").focus();
  });

  const toggle = $("drawer-toggle");
  toggle.addEventListener("click", () => setDrawer(toggle.getAttribute("aria-expanded") !== "true"));
}

/** Opens or closes the controls' drawer (phones). */
export function setDrawer(open) {
  $("drawer-toggle").setAttribute("aria-expanded", String(open));
  document.body.classList.toggle("drawer-open", open);
}

/** The controls as `state` sets them; `areaName(id)` names an area the picker's list
 * does not hold yet. */
export function syncControls(index, state, areaName) {
  $("layer").value = state.layer;
  $("evening").checked = state.hours === "evening";
  $("metric").value = state.metric;
  $("direction").value = state.direction;
  $("kind").value = state.kind;
  $("isp").value = state.isp;
  const periods = index.periods[state.kind];
  const slider = $("period");
  slider.max = String(periods.length - 1);
  slider.value = String(periods.indexOf(state.period));
  slider.disabled = periods.length < 2;
  slider.setAttribute("aria-valuetext", periodLabel(state.period));
  $("period-label").textContent = periodLabel(state.period);
  const picker = $("area-picker");
  if (state.area && ![...picker.options].some((o) => o.value === state.area)) {
    picker.append(h("option", { value: state.area }, areaName(state.area)));
  }
  picker.value = state.area || "";
}
