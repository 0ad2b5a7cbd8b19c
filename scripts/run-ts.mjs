// Runs a TypeScript script (bench/, scripts/) without a separate compile step:
// bundles it with esbuild to a temporary ES module and imports it.
// Usage: node scripts/run-ts.mjs FILE.ts [ARGS...]
import { build } from "esbuild";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL, fileURLToPath } from "node:url";

const [entry, ...args] = process.argv.slice(2);
if (!entry) {
  console.error("usage: node scripts/run-ts.mjs FILE.ts [ARGS...]");
  process.exit(2);
}
const root = fileURLToPath(new URL("..", import.meta.url));
// Inside the repo so that bare imports of dependencies resolve from node_modules.
const cache = join(root, "node_modules", ".cache");
mkdirSync(cache, { recursive: true });
const outdir = mkdtempSync(join(cache, "run-ts-"));
const outfile = join(outdir, "main.mjs");
await build({
  entryPoints: [resolve(entry)],
  outfile,
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  packages: "external",
  sourcemap: "inline",
  logLevel: "warning",
});
process.argv = [process.argv[0], resolve(entry), ...args];
process.setSourceMapsEnabled(true);
try {
  await import(pathToFileURL(outfile).href);
} finally {
  rmSync(outdir, { recursive: true, force: true });
}
