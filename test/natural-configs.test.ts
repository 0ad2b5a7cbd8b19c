// machines.ts files written the way people write code — tables, maps over host lists, the
// environment, helper modules, spreads, readonly tuples, async lists — type-check and load
// without casts; editors still complete the known systems and features; and a malformed
// value computed at run time is still reported at its file:line.
import { cpSync, readdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type * as TS from "typescript";
import { loadConfig } from "../src/config/load.js";
import { OffloadError, formatError } from "../src/errors.js";
import { TYPES_ENTRY } from "../src/package-root.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const NATURAL = fileURLToPath(new URL("./fixtures/natural", import.meta.url));

let dir: string;
beforeAll(() => {
  dir = makeSafeDir("natural");
  cpSync(NATURAL, dir, { recursive: true });
});
afterAll(() => removeDir(dir));

const load = (name: string) => loadConfig({ config: join(dir, name), cacheDir: false });

const configs = readdirSync(NATURAL).filter((name) => name.endsWith(".ts"));
/** The machines each config loaded to, by file. */
const loadedMachines = new Map<string, string>();

test.each(configs)("%s type-checks, evaluates and validates", async (name) => {
  const loaded = await load(name);
  expect(loaded.machines.length).toBeGreaterThan(0);
  loadedMachines.set(name, JSON.stringify(loaded.machines));
});

test("a dozen of them loaded, to a dozen different fleets", () => {
  // Run after the loads above (jest runs a file's tests in order).
  expect([...loadedMachines.keys()].sort()).toEqual([...configs].sort());
  expect(new Set(loadedMachines.values()).size).toBeGreaterThanOrEqual(12);
});

test("what they evaluate to", async () => {
  const systems = async (name: string) => (await load(name)).machines.map((m) => [m.name, m.systems]);
  expect(await systems("arch-table.ts")).toEqual([
    ["aquamarine", ["x86_64-linux", "i686-linux"]],
    ["ruby", ["aarch64-linux"]],
  ]);
  expect((await load("helper-module.ts")).machines.map((m) => [m.name, m.parallelBuilds, m.speed, m.features])).toEqual([
    ["x1", 8, 1, ["kvm", "nixos-test"]],
    ["a1", 4, 0.5, []],
  ]);
  expect((await load("flatmap-filter.ts")).machines.map((m) => [m.name, m.features])).toEqual([
    ["n1", ["kvm", "big-parallel"]],
    ["n3", ["benchmark"]],
  ]);
  expect((await load("spread-defaults.ts")).machines.map((m) => [m.name, m.privateKey, m.overloadThreshold])).toEqual([
    ["alpha", undefined, 0.9],
    ["beta", undefined, 0.9],
    ["gamma", undefined, 0.9],
  ]);
  expect((await load("async-computed.ts")).machines.map((m) => m.name)).toEqual(["async-1", "async-2"]);
});

test("environment-dependent fields follow the environment", async () => {
  const saved = { ...process.env };
  try {
    Object.assign(process.env, { OFFLOAD_TEST_SYSTEMS: "aarch64-linux", OFFLOAD_TEST_USER: "ci", OFFLOAD_TEST_PORT: "2200", OFFLOAD_TEST_DISABLE: "1" });
    const loaded = await load("env-dependent.ts");
    expect(loaded.machines[0]).toMatchObject({ name: "builder.example.org", user: "ci", port: 2200, systems: ["aarch64-linux"], enabled: false });
  } finally {
    process.env = saved;
  }
});

test("a malformed value computed at run time is reported at its file:line", async () => {
  const config = join(dir, "computed-bad.ts");
  writeFileSync(
    config,
    `import { buildMachine } from "offload";\nconst arches = "x86_64-linux aarch64-linux".split(",");\nexport default [\n  buildMachine({ name: "m", systems: arches, features: "kvm big-parallel".split(",") }),\n];\n`,
  );
  const error = await load("computed-bad.ts").then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(OffloadError);
  const text = formatError(error as OffloadError);
  expect(text).toContain(`${config}:4:29: machine "m": systems: has "x86_64-linux aarch64-linux", which is not a system type of the form "arch-os"`);
  expect(text).toContain(`${config}:4:46: machine "m": features: has an ill-formed feature name "kvm big-parallel"`);
});

describe("editors still complete the known values", () => {
  const ts: typeof TS = createRequire(import.meta.url)("typescript");

  /** The completions an editor shows at the end of `prefix`, in a config checked against offload's types. */
  function completionsAt(prefix: string): string[] {
    const file = join(dir, "editing.ts");
    const text = `import { buildMachine, localMachine } from "offload";\nexport default [${prefix}`;
    const host: TS.LanguageServiceHost = {
      getCompilationSettings: () => ({
        strict: true,
        module: ts.ModuleKind.ESNext,
        moduleResolution: ts.ModuleResolutionKind.Bundler,
        paths: { offload: [TYPES_ENTRY] },
        types: [],
      }),
      getScriptFileNames: () => [file],
      getScriptVersion: () => "1",
      getScriptSnapshot: (name) => ts.ScriptSnapshot.fromString(name === file ? text : (ts.sys.readFile(name) ?? "")),
      getCurrentDirectory: () => dir,
      getDefaultLibFileName: (options) => ts.getDefaultLibFilePath(options),
      fileExists: (name) => name === file || ts.sys.fileExists(name),
      readFile: (name) => (name === file ? text : ts.sys.readFile(name)),
    };
    const completions = ts.createLanguageService(host).getCompletionsAtPosition(file, text.length, {});
    return completions?.entries.map((entry) => entry.name) ?? [];
  }

  test.each([
    ['buildMachine({ name: "a", systems: ["', ["x86_64-linux", "aarch64-linux", "aarch64-darwin"]],
    ['buildMachine({ name: "a", systems: ["x86_64-linux"], features: ["', ["kvm", "big-parallel", "nixos-test"]],
    ['buildMachine({ name: "a", systems: ["x86_64-linux"], mandatoryFeatures: ["', ["benchmark"]],
    ['localMachine({ features: ["', ["kvm"]],
  ])("%s", (prefix, expected) => {
    expect(completionsAt(prefix)).toEqual(expect.arrayContaining(expected));
  });
});
