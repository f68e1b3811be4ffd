// Builds the site into dist/ (or $SITE_DIST): one bundle per page (ES modules,
// minified, shared code split into chunks), MapLibre's worker, the pages and styles
// from public/, and the files a library loads at run time (ndt7's workers).
// `node build.mjs [--dev]`. The build is written beside the target and renamed into
// place, so a server never serves half a build and a failed build leaves the old one.
import { build } from "esbuild";
import { cp, mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const target = process.env.SITE_DIST ? resolve(process.env.SITE_DIST) : join(here, "dist");
const dist = `${target}.building-${process.pid}`;
const dev = process.argv.includes("--dev");

// MapLibre is built from the TypeScript sources its package ships, its worker as an
// entry of the same build: the code the map and its workers share is then one chunk,
// loaded once, where the package's two prebuilt bundles each carry a copy of it (a
// first visit loaded about a quarter more JavaScript). Its own build compiles class
// fields as TypeScript does for its target (ES2016): declared fields are not defined.
const MAPLIBRE_SRC = "node_modules/maplibre-gl/src";
const maplibreFromSource = {
  name: "maplibre-from-source",
  setup(b) {
    b.onResolve({ filter: /^maplibre-gl$/ }, () => ({ path: join(here, MAPLIBRE_SRC, "index.ts") }));
  },
};

// Pages and their scripts; each page's HTML in public/ loads `<name>.js`. The map's
// page starts its workers from `maplibre-gl-worker.js` (src/map/main.js).
export const ENTRIES = {
  map: "src/map/main.js",
  speedtest: "src/speedtest/main.js",
  report: "src/report/main.js",
  "maplibre-gl-worker": `${MAPLIBRE_SRC}/source/worker.ts`,
};

// Loaded by a library at run time by URL, so copied as they are.
const RUNTIME_FILES = {
  "node_modules/@m-lab/ndt7/src/ndt7-download-worker.js": "ndt7-download-worker.js",
  "node_modules/@m-lab/ndt7/src/ndt7-upload-worker.js": "ndt7-upload-worker.js",
};

/**
 * The message catalogues (src/i18n/*.json) must hold the same keys, and every key the
 * pages use (`t("…")`, `tPlural("…")` in src/, `data-i18n*` in public/) must be in them:
 * the build fails otherwise, naming the keys.
 */
async function checkCatalogues() {
  const dir = join(here, "src", "i18n");
  const catalogues = {};
  for (const name of (await readdir(dir)).filter((n) => n.endsWith(".json"))) {
    catalogues[name.replace(/\.json$/, "")] = JSON.parse(await readFile(join(dir, name), "utf8"));
  }
  const keys = new Set(Object.keys(catalogues.en || {}));
  const problems = [];
  for (const [lang, catalogue] of Object.entries(catalogues)) {
    const missing = [...keys].filter((k) => !(k in catalogue));
    const extra = Object.keys(catalogue).filter((k) => !keys.has(k));
    if (missing.length) problems.push(`${lang}.json lacks ${missing.join(", ")}`);
    if (extra.length) problems.push(`${lang}.json has keys en.json lacks: ${extra.join(", ")}`);
  }
  const used = new Set();
  const prefixes = new Set([...keys].map((k) => k.split(".")[0]));
  const files = async (root, ext) =>
    (await readdir(root, { recursive: true })).filter((f) => f.endsWith(ext)).map((f) => join(root, f));
  for (const file of await files(join(here, "src"), ".js")) {
    const text = await readFile(file, "utf8");
    for (const m of text.matchAll(/\bt\("([^"]+)"/g)) used.add(m[1]);
    for (const m of text.matchAll(/\btPlural\("([^"]+)"/g)) {
      used.add(`${m[1]}.one`);
      used.add(`${m[1]}.other`);
    }
    // A key written as a string of its own ("chart.period"), under a catalogue's prefix.
    for (const m of text.matchAll(/"([a-z_]+)\.([a-z0-9_.]+)"/g)) if (prefixes.has(m[1])) used.add(`${m[1]}.${m[2]}`);
  }
  for (const file of await files(join(here, "public"), ".html")) {
    const text = await readFile(file, "utf8");
    for (const m of text.matchAll(/data-i18n(?:-html)?="([^"]+)"/g)) used.add(m[1]);
    for (const m of text.matchAll(/data-i18n-attr="([^"]+)"/g)) {
      for (const pair of m[1].split(";")) used.add(pair.split(":")[1]);
    }
  }
  // A plural message is used by its stem (`record.more`: `record.more.one`, `.other`).
  const unknown = [...used].filter((k) => !keys.has(k) && !keys.has(`${k}.other`));
  if (unknown.length) problems.push(`used but in no catalogue: ${unknown.join(", ")}`);
  if (problems.length) throw new Error(`message catalogues:\n  ${problems.join("\n  ")}`);
}

/**
 * The licences of the packages bundled into the build (read from esbuild's metafile):
 * each package's name, version, declared licence and its licence file when it ships
 * one, written as `third-party-notices.txt` beside the scripts. MapLibre's prebuilt
 * bundles carried its licence banner; built from its sources, the notice is here, with
 * those of every other package the pages ship.
 */
async function thirdPartyNotices(metafile) {
  // A file's package is that of the last node_modules in its path (a package may
  // carry copies of others in a node_modules of its own).
  const packageOf = (path) => path.match(/^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//)?.[1];
  const roots = new Set([...Object.keys(metafile.inputs), ...Object.keys(RUNTIME_FILES)].map(packageOf).filter(Boolean));
  // A copy a package carries in a node_modules of its own (built into its files, with
  // no package.json) is of the dependency npm installed under the same name.
  const installed = async (root) => {
    const name = root.match(/node_modules\/((?:@[^/]+\/)?[^/]+)$/)[1];
    for (const dir of [root, `node_modules/${name}`]) {
      try {
        return { dir, pkg: JSON.parse(await readFile(join(here, dir, "package.json"), "utf8")) };
      } catch (err) {
        if (err.code !== "ENOENT") throw err;
      }
    }
    throw new Error(`third-party notices: no package.json for ${root} nor node_modules/${name}`);
  };
  const packages = new Map();
  for (const root of roots) {
    const found = await installed(root);
    packages.set(`${found.pkg.name}@${found.pkg.version}`, found);
  }
  const sections = [];
  for (const key of [...packages.keys()].sort()) {
    const { dir: root, pkg } = packages.get(key);
    const files = (await readdir(join(here, root))).filter((f) => /^(licen[cs]e|copying|notice)/i.test(f)).sort();
    const texts = await Promise.all(files.map((f) => readFile(join(here, root, f), "utf8")));
    const repository = (typeof pkg.repository === "string" ? pkg.repository : pkg.repository?.url) || pkg.homepage;
    const author = typeof pkg.author === "string" ? pkg.author : pkg.author?.name;
    const head = [`${pkg.name} ${pkg.version}`, `Licence: ${pkg.license || "see the package"}`];
    if (author) head.push(`Author: ${author}`);
    if (repository) head.push(`Source: ${repository}`);
    const body = texts.length ? texts.map((t) => t.trim()) : ["(The package ships no licence file: its licence is the one named above, its text at the source.)"];
    sections.push([...head, "", ...body].join("\n"));
  }
  const rule = `\n\n${"-".repeat(78)}\n\n`;
  return `The site's scripts include these packages, under their licences.${rule}${sections.join(rule)}\n`;
}

/**
 * Each page's `<link rel="modulepreload" href="X.js">` followed by one for every chunk
 * X.js imports statically (transitively), so that the browser fetches them with the
 * page's script rather than after parsing it.
 */
async function preloadChunks(metafile) {
  const outputs = {};
  for (const [path, output] of Object.entries(metafile.outputs)) {
    outputs[relative(dist, resolve(here, path))] = output;
  }
  const closure = (start) => {
    const seen = new Set();
    const todo = [start];
    while (todo.length) {
      const name = todo.pop();
      if (seen.has(name) || !outputs[name]) continue;
      seen.add(name);
      for (const i of outputs[name].imports) {
        if (i.kind === "import-statement") todo.push(relative(dist, resolve(here, i.path)));
      }
    }
    seen.delete(start);
    return [...seen].sort();
  };
  for (const page of (await readdir(dist)).filter((f) => f.endsWith(".html"))) {
    const file = join(dist, page);
    const html = await readFile(file, "utf8");
    const linked = html.replace(/^(\s*)<link rel="modulepreload" href="([^"]+\.js)">$/gm, (line, indent, script) =>
      [line, ...closure(script).map((chunk) => `${indent}<link rel="modulepreload" href="${chunk}">`)].join("\n"),
    );
    if (linked !== html) await writeFile(file, linked);
  }
}

try {
  await checkCatalogues();
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
    plugins: [maplibreFromSource],
    tsconfigRaw: { compilerOptions: { useDefineForClassFields: false } },
    metafile: true,
    logLevel: "warning",
  });
  await cp(join(here, "public"), dist, { recursive: true });
  for (const [from, to] of Object.entries(RUNTIME_FILES)) {
    await cp(join(here, from), join(dist, to));
  }
  await preloadChunks(result.metafile);
  await writeFile(join(dist, "meta.json"), JSON.stringify(result.metafile));
  await writeFile(join(dist, "third-party-notices.txt"), await thirdPartyNotices(result.metafile));
  await rm(target, { recursive: true, force: true });
  await rename(dist, target);
} catch (err) {
  await rm(dist, { recursive: true, force: true });
  throw err;
}
