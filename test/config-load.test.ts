// machines.ts loading end to end: examples, defaults, record locations, the cache and init.
// In-process; cli-executable.test.ts has the cache's skipping of TypeScript, which only a
// process of its own can show.
import { chmodSync, cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { registerCheck } from "../src/cli/check.js";
import { registerInit } from "../src/cli/init.js";
import { loadConfig } from "../src/config/load.js";
import { runCommandAsCli } from "./support/run-command.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const EXAMPLES = fileURLToPath(new URL("../config-examples", import.meta.url));

let dir: string;
beforeAll(() => {
  dir = makeSafeDir("config-load");
  cpSync(EXAMPLES, join(dir, "examples"), { recursive: true });
});
afterAll(() => removeDir(dir));

const examples = ["single-machine.ts", "fleet-from-host-list.ts", "mixed-arch-features.ts", "with-helpers/machines.ts"];

test.each(examples)("config-examples/%s passes check --static", async (example) => {
  const result = await runCommandAsCli(registerCheck, ["check", "--static", "--config", join(dir, "examples", example)], {
    OFFLOAD_CACHE_DIR: join(dir, "cache"),
  });
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
  expect(result.stdout).toMatch(/^NAME\s+ADDRESS\s+SYSTEMS\s+SLOTS\s+SPEED\s+FEATURES/m);
});

test("records get their defaults and keep what was written", async () => {
  const loaded = await loadConfig({ config: join(dir, "examples", "mixed-arch-features.ts"), cacheDir: false });
  const byName = new Map(loaded.machines.map((m) => [m.name, m]));
  expect(loaded.machines.map((m) => m.name)).toEqual(["x86-big", "arm", "bench", "old-x86"]);
  expect(byName.get("x86-big")).toMatchObject({
    port: 2222,
    user: "nix",
    parallelBuilds: 8,
    speed: 2.5,
    overloadThreshold: 0.8,
    enabled: true,
    mandatoryFeatures: [],
  });
  expect(byName.get("arm")).toMatchObject({ parallelBuilds: 4, speed: 1.2, overloadThreshold: 0.9, features: [], useSubstitutes: false, connectTimeout: 10 });
  expect(byName.get("bench")).toMatchObject({ parallelBuilds: 1, speed: 1, overloadThreshold: null, mandatoryFeatures: ["benchmark"] });
  expect(byName.get("old-x86")?.enabled).toBe(false);
  expect(loaded.local).toBeUndefined();
});

test("a computed fleet with a local machine, helpers and process.env", async () => {
  const fleet = await loadConfig({ config: join(dir, "examples", "fleet-from-host-list.ts"), cacheDir: false });
  expect(fleet.local).toMatchObject({ kind: "local-machine", speed: 3, enabled: true });
  expect(fleet.machines.map((m) => [m.name, m.parallelBuilds])).toEqual([
    ["aquamarine", 3],
    ["ruby", 2],
    ["kana", 2],
  ]);

  const config = join(dir, "examples", "with-helpers", "machines.ts");
  const cacheDir = join(dir, "cache-env");
  try {
    process.env.OFFLOAD_SITE = "lab";
    const lab = await loadConfig({ config, cacheDir });
    expect(lab.machines.map((m) => m.name)).toEqual(["lab-node1", "lab-node2"]);
    // The cache holds the compiled code, not the result: the environment is read on every load.
    process.env.OFFLOAD_SITE = "prod";
    const prod = await loadConfig({ config, cacheDir });
    expect(prod.fromCache).toBe(true);
    expect(prod.machines.map((m) => m.name)).toEqual(["prod-node1", "prod-node2"]);
  } finally {
    delete process.env.OFFLOAD_SITE;
  }
});

test.each([
  ["process.env and console (light globals)", `const user = process.env.BUILD_USER ?? "nix"; console.log("loading");`],
  ["a node: module (full @types/node)", `import { hostname } from "node:os"; const user = hostname() ? "nix" : "root";`],
  ["a Node global nobody foresaw (retried with @types/node)", `const user = structuredClone({ u: "nix" }).u;`],
])("configs using Node type-check: %s", async (_label, prelude) => {
  const config = join(dir, `node-${_label.length}.ts`);
  writeFileSync(
    config,
    `import { buildMachine } from "offload";\n${prelude}\nexport default [buildMachine({ name: "a", user, systems: ["x86_64-linux"] })];\n`,
  );
  const loaded = await loadConfig({ config, cacheDir: false });
  expect(loaded.machines[0]?.user).toBe("nix");
});

test("a config sees the environment it is loaded for (a served hook's, not the agent's) and cannot end the process loading it", async () => {
  const config = join(dir, "env-and-exit.ts");
  writeFileSync(
    config,
    // A node: import brings in the full @types/node, where process.exit exists (the light globals have none).
    `import { buildMachine } from "offload";\nimport { hostname } from "node:os";\nif (process.env.SITE === "exit" && hostname()) process.exit(3);\nexport default [buildMachine({ name: process.env.SITE ?? "none", systems: ["x86_64-linux"] })];\n`,
  );
  const loaded = await loadConfig({ config, cacheDir: false, env: { ...process.env, SITE: "lab" } });
  expect(loaded.machines.map((m) => m.name)).toEqual(["lab"]);
  await expect(loadConfig({ config, cacheDir: false, env: { ...process.env, SITE: "exit" } })).rejects.toMatchObject({
    code: "config-threw",
    message: expect.stringContaining("process.exit() in a config"),
  });
  // Nor through an import of node:process.
  const imported = join(dir, "import-process.ts");
  writeFileSync(
    imported,
    `import { buildMachine } from "offload";\nimport proc from "node:process";\nimport { exit } from "process";\nif (proc.env.SITE === "exit") proc.exit(3);\nif (proc.env.SITE === "bare") exit(4);\nexport default [buildMachine({ name: proc.env.SITE ?? "none", systems: ["x86_64-linux"] })];\n`,
  );
  expect((await loadConfig({ config: imported, cacheDir: false, env: { ...process.env, SITE: "lab" } })).machines.map((m) => m.name)).toEqual(["lab"]);
  for (const site of ["exit", "bare"])
    await expect(loadConfig({ config: imported, cacheDir: false, env: { ...process.env, SITE: site } })).rejects.toMatchObject({
      code: "config-threw",
      message: expect.stringContaining("process.exit() in a config"),
    });
});

test("an async default export is awaited", async () => {
  const config = join(dir, "async.ts");
  writeFileSync(
    config,
    `import { buildMachine } from "offload";\nexport default (async () => { await null; return [buildMachine({ name: "later", systems: ["x86_64-linux"] })]; })();\n`,
  );
  const loaded = await loadConfig({ config, cacheDir: false });
  expect(loaded.machines.map((m) => m.name)).toEqual(["later"]);
});

test("a cache directory others can write is not trusted", async () => {
  const cacheDir = join(dir, "cache-open");
  const config = join(dir, "examples", "single-machine.ts");
  await loadConfig({ config, cacheDir });
  expect((await loadConfig({ config, cacheDir })).fromCache).toBe(true);
  chmodSync(cacheDir, 0o777);
  expect((await loadConfig({ config, cacheDir })).fromCache).toBe(false);
});

test("offload init writes a template that checks and an editor tsconfig", async () => {
  const target = join(dir, "init");
  const init = await runCommandAsCli(registerInit, ["init", target]);
  expect(init.code).toBe(0);
  const tsconfig = JSON.parse(readFileSync(join(target, "tsconfig.json"), "utf8"));
  expect(tsconfig.compilerOptions.paths.offload[0]).toMatch(/types\/index\.d\.ts$/);
  expect(readFileSync(tsconfig.compilerOptions.paths.offload[0], "utf8")).toContain("export declare function buildMachine");
  const check = await runCommandAsCli(registerCheck, ["check", "--static", "--config", join(target, "machines.ts")], { OFFLOAD_CACHE_DIR: join(dir, "cache") });
  expect(check.stderr).toBe("");
  expect(check.stdout).toContain("0 machines");
  const again = await runCommandAsCli(registerInit, ["init", target]);
  expect(again.code).toBe(1);
  expect(again.stderr).toContain("already exists");
});
