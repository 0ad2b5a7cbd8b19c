// Where offload itself is installed: the config pipeline needs its shipped types/ and the
// runtime that `import "offload"` resolves to, from source (repo) or dist/ (package).
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

function findPackageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error("offload: cannot find its own package.json");
    dir = parent;
  }
  return dir;
}

export const PACKAGE_ROOT = findPackageRoot();

/** The types machines.ts is checked against and editors complete from. */
export const TYPES_ENTRY = join(PACKAGE_ROOT, "types", "index.d.ts");

/** Minimal declarations of the Node globals configs commonly use (see the file). */
export const LIGHT_GLOBALS = join(PACKAGE_ROOT, "types", "config-globals.d.ts");

/** The module `import ... from "offload"` resolves to when a config is bundled. */
export const RUNTIME_ENTRY = existsSync(join(PACKAGE_ROOT, "src", "index.ts")) ? join(PACKAGE_ROOT, "src", "index.ts") : join(PACKAGE_ROOT, "dist", "index.js");
