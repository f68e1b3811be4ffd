// The statistics on the map: the MapLibre source of a layer's shapes (its PMTiles
// archive) and the layers that draw them from each area's feature state (fills,
// hatching for suppressed areas, outlines, the dashed outline of uncertain medians, the
// selected area).
import { drawnOpacity, fillColor, hatchOpacity, uncertainOpacity } from "./metrics.js";

export const SOURCE = "stats";
export const LAYERS = {
  fill: "areas-fill",
  hatch: "areas-suppressed",
  line: "areas-line",
  uncertain: "areas-uncertain",
  casing: "areas-selected-casing",
  selected: "areas-selected",
};
export const HATCH = "hatch";

/** An 8×8 diagonal hatch on a light grey, for suppressed areas. */
export function hatchImage() {
  const size = 8;
  const data = new Uint8Array(size * size * 4);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const on = (x + y) % size < 2;
      const i = (y * size + x) * 4;
      const [r, g, b] = on ? [60, 64, 67] : [214, 217, 220];
      data.set([r, g, b, 255], i);
    }
  }
  return { width: size, height: size, data };
}

/** The statistics' layers for a view (fills, hatching for suppressed cells,
 * boundaries, the selected area's outline): `info` is the layer's entry in index.json,
 * `metric` the measure shown, `view` the map's state (direction, ISP, area), `basemap`
 * whether a basemap is under them. */
export function statsLayers(info, metric, view, basemap) {
  const common = { source: SOURCE, "source-layer": info.tiles?.source_layer || info.id };
  const selected = ["==", ["get", "id"], view.area || ""];
  const everyArea = info.type !== "h3";
  return [
    {
      id: LAYERS.fill,
      type: "fill",
      ...common,
      paint: {
        "fill-color": fillColor(metric, view.direction, view.isp),
        "fill-opacity": drawnOpacity(basemap ? 0.78 : 0.92, everyArea),
      },
    },
    {
      id: LAYERS.hatch,
      type: "fill",
      ...common,
      paint: { "fill-pattern": HATCH, "fill-opacity": hatchOpacity(metric, view.direction, view.isp) },
    },
    {
      id: LAYERS.line,
      type: "line",
      ...common,
      paint: {
        "line-color": "#4a4f57",
        "line-width": ["interpolate", ["linear"], ["zoom"], 4, 0.3, 9, 1],
        "line-opacity": drawnOpacity(1, everyArea),
      },
    },
    {
      // A dashed outline where the median's 95 % interval is wide (few tests).
      id: LAYERS.uncertain,
      type: "line",
      ...common,
      paint: {
        "line-color": "#1b1b1b",
        "line-width": 2.5,
        "line-dasharray": [1.5, 1],
        "line-opacity": uncertainOpacity(metric, view.direction, view.isp),
      },
    },
    { id: LAYERS.casing, type: "line", ...common, filter: selected, paint: { "line-color": "#000", "line-width": 5 } },
    { id: LAYERS.selected, type: "line", ...common, filter: selected, paint: { "line-color": "#fff", "line-width": 2 } },
  ];
}

// Feature state is keyed by the `id` property: H3 indexes do not fit a JavaScript number.
export const statsSource = (shapesUrl) => ({ type: "vector", url: `pmtiles://${shapesUrl}`, promoteId: "id" });

/** Without a basemap: the statistics on a plain background, in the first style, so
 * that the tiles load while the map starts. */
export function plainStyle(shapesUrl, layers) {
  return {
    version: 8,
    name: "Plain",
    sources: { [SOURCE]: statsSource(shapesUrl) },
    layers: [{ id: "background", type: "background", paint: { "background-color": "#e9edf2" } }, ...layers],
  };
}

/** The paint that follows the measure, direction and ISP shown (set without
 * rebuilding the layers): [layer, property, value] triples. */
export function statsPaint(metric, view) {
  return [
    [LAYERS.fill, "fill-color", fillColor(metric, view.direction, view.isp)],
    [LAYERS.hatch, "fill-opacity", hatchOpacity(metric, view.direction, view.isp)],
    [LAYERS.uncertain, "line-opacity", uncertainOpacity(metric, view.direction, view.isp)],
  ];
}
