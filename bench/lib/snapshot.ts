// The offload the benchmarks measure: a private copy of the built package (package.json,
// bin/, dist/, types/), taken once per run. Others rebuilding dist/ in the same checkout
// while a benchmark runs (the build cleans dist/ first) would otherwise fail builds midway
// or mix two versions in one run. It lives under node_modules/.cache so that its bare
// imports still resolve from the checkout's node_modules; the agent it starts is its own too.
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { PACKAGE_ROOT } from "../../src/package-root.js";

let root: string | undefined;

export function snapshotRoot(): string {
  if (root === undefined) {
    const dir = mkdtempSync(join(PACKAGE_ROOT, "node_modules", ".cache", "offload-bench-"));
    for (const part of ["package.json", "bin", "dist", "types"]) cpSync(join(PACKAGE_ROOT, part), join(dir, part), { recursive: true });
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
    root = dir;
  }
  return root;
}

/** offload-hook of the snapshot: what `--option build-hook` points at. */
export function snapshotHook(): string {
  return join(snapshotRoot(), "bin", "offload-hook");
}
