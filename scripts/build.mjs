// Bundles the CLI, the hook and the config runtime into dist/. Dependencies stay external
// (loaded from node_modules) so typescript is only read when a command really needs it.
import { build } from "esbuild";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
// Chunk names carry content hashes: without this, every build leaves the last one's behind.
rmSync(new URL("../dist", import.meta.url), { recursive: true, force: true });

await build({
  absWorkingDir: root,
  entryPoints: {
    cli: "src/cli/main.ts",
    hook: "src/hook/main.ts",
    "guix-hook": "src/hook/guix-main.ts",
    index: "src/index.ts",
  },
  outdir: "dist",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  packages: "external",
  sourcemap: "linked",
  chunkNames: "chunks/[name]-[hash]",
  logLevel: "warning",
});

// bin/offload-hook (sh) finds the agent of its own version by this name (src/agent/agent-frames.ts AGENT_NAME).
const constant = (file, name) => new RegExp(`export const ${name} = "?([^";]+)"?;`).exec(readFileSync(new URL(`../${file}`, import.meta.url), "utf8"))[1];
writeFileSync(
  new URL("../dist/agent-name", import.meta.url),
  `agent-${constant("src/version.ts", "VERSION")}-p${constant("src/agent/agent-frames.ts", "AGENT_PROTOCOL")}\n`,
);
