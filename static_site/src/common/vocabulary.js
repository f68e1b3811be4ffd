// The names the pages share with the public data, defined once (their Python twin is
// src/piecewise/core/vocabulary.py; tests/test_vocabulary.py checks that both agree).
// Paths other than the index's own come from index.json's `paths`.

/** The two directions of a test, in the order the files list them. */
export const DIRECTIONS = ["download", "upload"];
/** The ISP key of cells over every ISP. */
export const ALL_ISPS = "all";
/** The kinds of period, finest first. */
export const PERIOD_KINDS = ["day", "month", "quarter", "year"];
/** The public data's index, under the data's base URL: everything else is found from it. */
export const INDEX_PATH = "v1/index.json";

/** A path of index.json's `paths` (`{layer}`-style placeholders) filled with `values`. */
export function fillPath(template, values) {
  return template.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? encodeURIComponent(values[name]) : whole));
}
