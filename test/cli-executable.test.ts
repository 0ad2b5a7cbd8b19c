// The real `offload` executable (dist/, from npm run build), for the wiring of what other
// tests run in-process (support/run-command.ts): an error is one clean message and exit 1
// (config-bad.test.ts), --json on stdout, standard input (import.test.ts), --help
// (cli-help.test.ts); and what only a process of its own shows: a cached config loads without
// TypeScript (config-load.test.ts).
import { chmodSync, copyFileSync, cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { runCli } from "./support/cli.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const CORPUS = fileURLToPath(new URL("./fixtures/bad-configs", import.meta.url));
const EXAMPLES = fileURLToPath(new URL("../config-examples", import.meta.url));
const TRACE = fileURLToPath(new URL("./support/trace-typescript.cjs", import.meta.url));
const GOOD = `import { buildMachine } from "offload";\nexport default [buildMachine({ name: "a", systems: ["x86_64-linux"] })];\n`;

let dir: string;
beforeAll(() => {
  dir = makeSafeDir("cli-executable");
});
afterAll(() => removeDir(dir));

test("check --static: exit 1, one `offload:` line at file:line:col with the fix, no stack trace", async () => {
  const config = join(dir, "throws-at-evaluation.ts");
  copyFileSync(join(CORPUS, "throws-at-evaluation.ts"), config);
  chmodSync(config, 0o644);
  const result = await runCli(["check", "--static", "--config", config], { OFFLOAD_CACHE_DIR: join(dir, "cache") });
  expect(result.code).toBe(1);
  expect(result.stdout).toBe("");
  expect(result.stderr).toMatch(new RegExp(`^offload: ${config.replace(/[.+]/g, "\\$&")}:4:40: .*threw Error: inventory service unavailable`));
  expect(result.stderr.match(/^offload: /gm)).toHaveLength(1);
  expect(result.stderr).not.toMatch(/^\s+at .*(\(|\s)\/.*:\d+:\d+\)?$/m);
  expect(result.stderr).not.toMatch(/this is a bug in offload|node_modules|\/dist\//);
});

test("check --static --json: exit 1, the problems with their locations on stdout", async () => {
  const config = join(dir, "json-negative-speed.ts");
  writeFileSync(config, GOOD.replace("systems:", "speed: -2, systems:"));
  const result = await runCli(["check", "--static", "--json", "--config", config], { OFFLOAD_CACHE_DIR: join(dir, "cache") });
  expect(result.code).toBe(1);
  expect(result.stderr).toBe("");
  expect(JSON.parse(result.stdout)).toMatchObject({
    ok: false,
    problems: [{ code: "config-invalid", message: 'machine "a": speed: must be a positive finite number', location: `${config}:2:43`, fix: null }],
  });
});

test("import - reads standard input", async () => {
  const result = await runCli(
    ["import", "-", "--from", "nixos-json"],
    { OFFLOAD_CACHE_DIR: join(dir, "cache") },
    '[{"hostName": "kana", "systems": ["x86_64-linux"], "maxJobs": 2}]',
  );
  expect(result.code).toBe(0);
  expect(result.stdout).toContain('// <stdin>:1:2: hostName "kana"');
  expect(result.stdout).toContain("parallelBuilds: 2,");
});

test("--help: exit 0, every command listed, an example at the end", async () => {
  const result = await runCli(["--help"]);
  expect(result.code).toBe(0);
  expect(result.stdout).toMatch(/^Usage: offload /);
  for (const command of ["init", "import", "check", "status", "explain", "lab"]) expect(result.stdout).toMatch(new RegExp(`^  ${command}\\b`, "m"));
  expect(result.stdout).toMatch(/\n\nExamples?:\n( {2}\$ offload .*\n|.*\| offload .*\n)+$/);
});

test("the cache is keyed by every input file and skips TypeScript on a hit", async () => {
  const sub = join(dir, "cached");
  cpSync(join(EXAMPLES, "with-helpers"), sub, { recursive: true });
  const config = join(sub, "machines.ts");
  const env = { OFFLOAD_CACHE_DIR: join(dir, "cache-hit"), NODE_OPTIONS: `--require ${TRACE}` };
  const cold = await runCli(["check", "--static", "--config", config], env);
  expect(cold.code).toBe(0);
  expect(cold.stderr).toContain("[trace] typescript loaded");
  expect(cold.stdout).not.toContain("(cached)");

  const warm = await runCli(["check", "--static", "--config", config], env);
  expect(warm.code).toBe(0);
  expect(warm.stderr).toBe("");
  expect(warm.stdout).toContain("(cached)");

  // Editing an imported sibling (not machines.ts itself) invalidates the cache.
  const inventory = join(sub, "inventory.ts");
  writeFileSync(inventory, readFileSync(inventory, "utf8").replace("8 * (index + 1)", "16 * (index + 1)"));
  const edited = await runCli(["check", "--static", "--config", config], env);
  expect(edited.code).toBe(0);
  expect(edited.stderr).toContain("[trace] typescript loaded");
  expect(edited.stdout).toMatch(/lab-node2\s+nix@lab-node2\s+x86_64-linux\s+16\s+4/);
});
