// The map's credit: config.json's `attribution` (the config's text, with MaxMind's when
// the config's database names the ISPs), and the MaxMind credits the published data
// keeps in index.json's `sources`. ISP names published with a MaxMind database stay
// public after `[geoip]` changes or goes, and the GeoLite licence asks for its notice
// wherever they are shown. The wording is the server's (piecewise.ingest.geoip).

/** `text` followed by each MaxMind source of `sources` it does not credit already. */
export function credit(text, sources) {
  let out = typeof text === "string" ? text : "";
  for (const source of Array.isArray(sources) ? sources : []) {
    const name = source?.name;
    if (typeof name !== "string" || !name.startsWith("MaxMind")) continue;
    const notice = typeof source.notice === "string" && source.notice ? source.notice : null;
    // A notice is credited as written; a source without one by any mention of MaxMind.
    if (notice ? out.includes(notice) : /maxmind/i.test(out)) continue;
    const line = `ISP names: ${notice || name}`;
    out = out ? `${out} · ${line}` : line;
  }
  return out;
}
