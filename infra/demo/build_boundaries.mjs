#!/usr/bin/env node
// Build the demo's real boundaries for Washington State from the npm package us-atlas
// (U.S. Census Bureau cartographic boundaries, 1:10,000,000, TopoJSON in lon/lat).
//
// Usage: node build_boundaries.mjs OUT_DIR
//
// Writes:
//   OUT_DIR/wa-counties.geojson  FeatureCollection, one feature per county (39),
//                                properties {GEOID: 5-digit county FIPS, NAME}
//   OUT_DIR/wa-state.geojson     FeatureCollection with the state outline,
//                                properties {GEOID: "53", NAME: "Washington"}
//
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

const STATE_FIPS = "53";
const STATE_NAME = "Washington";
const EXPECTED_COUNTIES = 39;

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

function cleanPolygon(rings) {
  return rings.map((ring, i) => cleanRing(ring, i === 0));
}

function cleanGeometry(geometry) {
  if (geometry.type === "Polygon") {
    return { type: "Polygon", coordinates: cleanPolygon(geometry.coordinates) };
  }
  if (geometry.type === "MultiPolygon") {
    return { type: "MultiPolygon", coordinates: geometry.coordinates.map(cleanPolygon) };
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

function main(argv) {
  if (argv.length !== 1) {
    process.stderr.write("usage: node build_boundaries.mjs OUT_DIR\n");
    return 2;
  }
  const outDir = path.resolve(argv[0]);
  mkdirSync(outDir, { recursive: true });

  const counties = us.objects.counties.geometries
    .filter((g) => String(g.id).startsWith(STATE_FIPS))
    .sort((a, b) => String(a.id).localeCompare(String(b.id)))
    .map((g) => {
      const f = topojson.feature(us, g);
      return {
        type: "Feature",
        properties: { GEOID: String(g.id).padStart(5, "0"), NAME: g.properties.name },
        geometry: cleanGeometry(f.geometry),
      };
    });
  if (counties.length !== EXPECTED_COUNTIES) {
    throw new Error(`expected ${EXPECTED_COUNTIES} counties, found ${counties.length}`);
  }

  const stateGeom = us.objects.states.geometries.find((g) => String(g.id) === STATE_FIPS);
  if (!stateGeom) throw new Error(`state ${STATE_FIPS} not in us-atlas`);
  const state = {
    type: "Feature",
    properties: { GEOID: STATE_FIPS, NAME: STATE_NAME },
    geometry: cleanGeometry(topojson.feature(us, stateGeom).geometry),
  };

  writeAtomic(path.join(outDir, "wa-counties.geojson"), featureCollection(counties));
  writeAtomic(path.join(outDir, "wa-state.geojson"), featureCollection([state]));
  process.stdout.write(
    `wrote ${counties.length} counties and the state outline to ${outDir}\n`,
  );
  return 0;
}

process.exitCode = main(process.argv.slice(2));
