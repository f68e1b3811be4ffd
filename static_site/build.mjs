// Builds the site into dist/ (or $SITE_DIST): one bundle per page (ES modules,
// minified, shared code split into chunks), the pages and styles from public/, and the
// files the libraries load at run time (MapLibre's worker, ndt7's workers).
// `node build.mjs [--dev]`. The build is written beside the target and renamed into
// place, so a server never serves half a build and a failed build leaves the old one.
import { build } from "esbuild";
import { cp, mkdir, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const target = process.env.SITE_DIST ? resolve(process.env.SITE_DIST) : join(here, "dist");
const dist = `${target}.building-${process.pid}`;
const dev = process.argv.includes("--dev");

// Pages and their scripts; each page's HTML in public/ loads `<name>.js`.
export const ENTRIES = {
  map: "src/map/main.js",
  speedtest: "src/speedtest/main.js",
  report: "src/report/main.js",
};

// Loaded by the libraries at run time by URL, so copied as they are.
const RUNTIME_FILES = {
  "node_modules/maplibre-gl/dist/maplibre-gl-worker.mjs": "maplibre-gl-worker.mjs",
  "node_modules/@m-lab/ndt7/src/ndt7-download-worker.js": "ndt7-download-worker.js",
  "node_modules/@m-lab/ndt7/src/ndt7-upload-worker.js": "ndt7-upload-worker.js",
};

try {
  await rm(dist, { recursive: true, force: true });
  await mkdir(dist, { recursive: true });
  const result = await build({
    absWorkingDir: here,
    entryPoints: ENTRIES,
    outdir: dist,
    bundle: true,
    format: "esm",
    splitting: true,
    minify: !dev,
    sourcemap: true,
    target: ["es2022"],
    chunkNames: "chunks/[name]-[hash]",
    loader: { ".css": "css" },
    metafile: true,
    logLevel: "warning",
  });
  await cp(join(here, "public"), dist, { recursive: true });
  for (const [from, to] of Object.entries(RUNTIME_FILES)) {
    await cp(join(here, from), join(dist, to));
  }
  await writeFile(join(dist, "meta.json"), JSON.stringify(result.metafile));
  await rm(target, { recursive: true, force: true });
  await rename(dist, target);
} catch (err) {
  await rm(dist, { recursive: true, force: true });
  throw err;
}
