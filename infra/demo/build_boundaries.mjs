#!/usr/bin/env node
// Builds real boundaries of a U.S. state, or of some of its counties, from the npm
// package us-atlas (U.S. Census Bureau cartographic boundaries, 1:10,000,000, TopoJSON
// in lon/lat): the demo's Washington State, and `piecewise init`'s places.
//
// Usage:
//   node build_boundaries.mjs OUT_DIR
//       the demo: Washington State's 39 counties (wa-counties.geojson) and outline
//       (wa-state.geojson)
//   node build_boundaries.mjs OUT_DIR --state FIPS [--counties FIPS,FIPS...] --prefix P
//       the state's counties, or the ones listed, as P-counties.geojson, and their
//       outline (the state's, or the listed counties' union) as P-state.geojson
//   node build_boundaries.mjs --list
//       every state and county us-atlas has, as JSON on stdout:
//       {"states": [{"id", "name"}], "counties": [{"id", "name", "state"}]}
//
// Counties have properties {GEOID: 5-digit county FIPS, NAME}; the outline {GEOID, NAME}.
// Output is deterministic (features sorted by GEOID, coordinates rounded to 1e-6 degree,
// rings wound per RFC 7946: exterior counter-clockwise, holes clockwise), so running it
// twice gives byte-identical files. Each file is written to a temporary file in OUT_DIR
// and renamed into place, so a reader never sees a partial file.

import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import process from "node:process";

const require = createRequire(import.meta.url);
const topojson = require("topojson-client");
const us = require("us-atlas/counties-10m.json");

// The demo's state, when no other is asked for.
const DEMO = { state: "53", prefix: "wa", counties: 39 };

function round6(x) {
  return Math.round(x * 1e6) / 1e6;
}

// Twice the signed area of a ring (shoelace); > 0 means counter-clockwise in lon/lat.
function signedArea2(ring) {
  let s = 0;
  for (let i = 0, n = ring.length - 1; i < n; i++) {
    s += ring[i][0] * ring[i + 1][1] - ring[i + 1][0] * ring[i][1];
  }
  return s;
}

function samePoint(a, b) {
  return a[0] === b[0] && a[1] === b[1];
}

// Round a ring, drop repeated points and zero-width spikes (A→B→A, which the 1:10M
// simplification leaves in a few places, e.g. on the Chelan–Kittitas line), close it,
// and wind it per RFC 7946.
function cleanRing(ring, exterior) {
  const pts = ring.map(([x, y]) => [round6(x), round6(y)]);
  if (pts.length > 1 && samePoint(pts[0], pts[pts.length - 1])) pts.pop();
  let out = [];
  for (const p of pts) {
    if (out.length && samePoint(out[out.length - 1], p)) continue;
    if (out.length > 1 && samePoint(out[out.length - 2], p)) {
      out.pop();
      continue;
    }
    out.push(p);
  }
  // Spikes and repeats across the ring's start.
  let changed = true;
  while (changed && out.length > 3) {
    changed = false;
    const n = out.length;
    for (let i = 0; i < n; i++) {
      const prev = out[(i - 1 + n) % n];
      const next = out[(i + 1) % n];
      if (samePoint(prev, out[i]) || samePoint(prev, next)) {
        out = out.filter((_, j) => j !== i);
        changed = true;
        break;
      }
    }
  }
  out.push([out[0][0], out[0][1]]);
  const ccw = signedArea2(out) > 0;
  if (ccw !== exterior) out.reverse();
  return out;
}

// A ring left with under three distinct points (a sliver that merging or the spike
// removal closes up) is no area: a hole is dropped, and a polygon with such a shell too.
const isRing = (ring) => ring.length >= 4;

function cleanPolygon(rings) {
  const [shell, ...holes] = rings.map((ring, i) => cleanRing(ring, i === 0));
  return isRing(shell) ? [shell, ...holes.filter(isRing)] : null;
}

function cleanGeometry(geometry) {
  if (geometry.type === "Polygon") {
    const polygon = cleanPolygon(geometry.coordinates);
    if (!polygon) throw new Error("a polygon with no area");
    return { type: "Polygon", coordinates: polygon };
  }
  if (geometry.type === "MultiPolygon") {
    const polygons = geometry.coordinates.map(cleanPolygon).filter((p) => p);
    if (!polygons.length) throw new Error("a multipolygon with no area");
    return { type: "MultiPolygon", coordinates: polygons };
  }
  throw new Error(`unexpected geometry type ${geometry.type}`);
}

function featureCollection(features) {
  return { type: "FeatureCollection", features };
}

function writeAtomic(file, value) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    writeFileSync(tmp, JSON.stringify(value) + "\n");
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

function usage() {
  process.stderr.write(
    "usage: node build_boundaries.mjs OUT_DIR [--state FIPS [--counties FIPS,...] --prefix NAME]\n" +
      "       node build_boundaries.mjs --list\n",
  );
  return 2;
}

function list() {
  const states = us.objects.states.geometries
    .map((g) => ({ id: String(g.id).padStart(2, "0"), name: g.properties.name }))
    .sort((a, b) => a.id.localeCompare(b.id));
  const counties = us.objects.counties.geometries
    .map((g) => {
      const id = String(g.id).padStart(5, "0");
      return { id, name: g.properties.name, state: id.slice(0, 2) };
    })
    .sort((a, b) => a.id.localeCompare(b.id));
  process.stdout.write(JSON.stringify({ states, counties }) + "\n");
  return 0;
}

function options(argv) {
  const out = { dir: null, state: null, counties: null, prefix: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--state" || arg === "--counties" || arg === "--prefix") {
      if (i + 1 >= argv.length) return null;
      out[arg.slice(2)] = argv[++i];
    } else if (arg.startsWith("--") || out.dir !== null) {
      return null;
    } else {
      out.dir = arg;
    }
  }
  return out.dir === null ? null : out;
}

function main(argv) {
  if (argv.length === 1 && argv[0] === "--list") return list();
  const opts = options(argv);
  if (!opts || (opts.state === null) !== (opts.prefix === null)) return usage();
  const demo = opts.state === null;
  const stateFips = demo ? DEMO.state : opts.state.padStart(2, "0");
  const prefix = demo ? DEMO.prefix : opts.prefix;
  if (!/^[a-z0-9][a-z0-9_-]*$/.test(prefix)) throw new Error(`bad prefix ${prefix}`);
  const outDir = path.resolve(opts.dir);
  mkdirSync(outDir, { recursive: true });

  const stateGeom = us.objects.states.geometries.find((g) => String(g.id).padStart(2, "0") === stateFips);
  if (!stateGeom) throw new Error(`state ${stateFips} is not in us-atlas`);
  const asked = opts.counties ? new Set(opts.counties.split(",").map((c) => c.trim().padStart(5, "0"))) : null;
  const geometries = us.objects.counties.geometries
    .filter((g) => String(g.id).padStart(5, "0").startsWith(stateFips))
    .filter((g) => !asked || asked.has(String(g.id).padStart(5, "0")))
    .sort((a, b) => String(a.id).localeCompare(String(b.id)));
  const counties = geometries.map((g) => ({
    type: "Feature",
    properties: { GEOID: String(g.id).padStart(5, "0"), NAME: g.properties.name },
    geometry: cleanGeometry(topojson.feature(us, g).geometry),
  }));
  if (asked) {
    const found = new Set(counties.map((f) => f.properties.GEOID));
    const missing = [...asked].filter((c) => !found.has(c));
    if (missing.length) throw new Error(`counties not in state ${stateFips}: ${missing.join(", ")}`);
  }
  if (demo && counties.length !== DEMO.counties) {
    throw new Error(`expected ${DEMO.counties} counties, found ${counties.length}`);
  }
  if (!counties.length) throw new Error(`state ${stateFips} has no counties in us-atlas`);

  // The outline: the state's own, or the union of the counties asked for.
  const outline = asked
    ? {
        type: "Feature",
        properties: { GEOID: stateFips, NAME: `${stateGeom.properties.name} (${counties.length} counties)` },
        geometry: cleanGeometry(topojson.merge(us, geometries)),
      }
    : {
        type: "Feature",
        properties: { GEOID: stateFips, NAME: stateGeom.properties.name },
        geometry: cleanGeometry(topojson.feature(us, stateGeom).geometry),
      };

  writeAtomic(path.join(outDir, `${prefix}-counties.geojson`), featureCollection(counties));
  writeAtomic(path.join(outDir, `${prefix}-state.geojson`), featureCollection([outline]));
  process.stdout.write(`wrote ${counties.length} counties and the outline to ${outDir}\n`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
