// The corpus of broken configs: each must fail `offload check --static` with exit 1 and
// one clear message (at the right file:line:col when there is one), never a stack trace.
// In-process: the `check` command with what src/cli/main.ts makes of its error (no CLI that
// loads TypeScript per config); config-bad-cli.test.ts runs the real executable for the wiring.
import { chmodSync, chownSync, copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { registerCheck } from "../src/cli/check.js";
import { runCommandAsCli, type CommandResult } from "./support/run-command.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const CORPUS = fileURLToPath(new URL("./fixtures/bad-configs", import.meta.url));
const GOOD = `import { buildMachine } from "offload";\nexport default [buildMachine({ name: "a", systems: ["x86_64-linux"] })];\n`;

let dir: string;
beforeAll(() => {
  dir = makeSafeDir("bad-configs");
});
afterAll(() => removeDir(dir));

function check(config: string): Promise<CommandResult> {
  return runCommandAsCli(registerCheck, ["check", "--static", "--config", config], { OFFLOAD_CACHE_DIR: join(dir, "cache"), OFFLOAD_EVAL_TIMEOUT: "1" });
}

function expectOneCleanFailure(result: CommandResult): void {
  expect(result.code).toBe(1);
  expect(result.stdout).toBe("");
  expect(result.stderr).toMatch(/^offload: /);
  expect(result.stderr.match(/^offload: /gm)).toHaveLength(1);
  // No stack trace of the tool itself, and no internal-error marker.
  expect(result.stderr).not.toMatch(/^\s+at .*(\(|\s)\/.*:\d+:\d+\)?$/m);
  expect(result.stderr).not.toMatch(/this is a bug in offload|node_modules|\/dist\//);
}

const corpus = readdirSync(CORPUS).filter((name) => name.endsWith(".ts"));
/** Each corpus file's failure as printed, by file. */
const failures = new Map<string, string>();

describe.each(corpus)("%s", (name) => {
  test("fails with its message at its location", async () => {
    const text = readFileSync(join(CORPUS, name), "utf8");
    const expected = new RegExp(/^\/\/ expect: (.*)$/m.exec(text)![1]!, "s");
    const at = /^\/\/ at: (\d+:\d+)$/m.exec(text)?.[1];
    const config = join(dir, name);
    copyFileSync(join(CORPUS, name), config);
    chmodSync(config, 0o644);
    const result = await check(config);
    expectOneCleanFailure(result);
    expect(result.stderr).toMatch(expected);
    if (at) expect(result.stderr).toContain(`${config}:${at}: `);
    failures.set(name, result.stderr.replaceAll(config, "<config>"));
  });
});

test("the corpus fails in at least 30 different ways", () => {
  // Run after the corpus (jest runs a file's tests in order): what failed, and how differently.
  expect([...failures.keys()].sort()).toEqual([...corpus].sort());
  expect(new Set(failures.values()).size).toBeGreaterThanOrEqual(30);
});

describe("configs broken on disk", () => {
  const cases: [string, (file: string) => void, RegExp][] = [
    ["empty file", (f) => writeFileSync(f, ""), /is empty\n\s+fix: run `offload init DIR`/],
    ["only whitespace and no export", (f) => writeFileSync(f, "\n\n   \n"), /is empty/],
    [
      "non-UTF-8 bytes",
      (f) => writeFileSync(f, Buffer.concat([Buffer.from("// caf"), Buffer.from([0xe9]), Buffer.from("\n" + GOOD)])),
      /:1:7: .* is not valid UTF-8/,
    ],
    ["world-writable config", (f) => (writeFileSync(f, GOOD), chmodSync(f, 0o666)), /file .* is world-writable.*\n\s+fix: chmod go-w /],
    ["group-writable config", (f) => (writeFileSync(f, GOOD), chmodSync(f, 0o664)), /is group-writable/],
    [
      "config owned by another user",
      (f) => (writeFileSync(f, GOOD), chownSync(f, 4242, 4242)),
      /owned by uid 4242, not root or the invoking user\n\s+fix: chown root /,
    ],
    [
      "missing private key file",
      (f) => writeFileSync(f, GOOD.replace(`systems:`, `privateKey: "${f}.nokey", systems:`)),
      /privateKey: SSH private key .*\.nokey does not exist/,
    ],
    [
      "private key readable by others",
      (f) => {
        writeFileSync(`${f}.key`, "-----BEGIN OPENSSH PRIVATE KEY-----\n", { mode: 0o644 });
        chmodSync(`${f}.key`, 0o644);
        writeFileSync(f, GOOD.replace(`systems:`, `privateKey: "${f}.key", systems:`));
      },
      /privateKey: SSH private key .*\.key is accessible by others \(mode 0644\)/,
    ],
  ];
  test.each(cases)("%s", async (label, make, expected) => {
    const sub = join(dir, label.replace(/\W+/g, "-"));
    mkdirSync(sub, { mode: 0o755 });
    const config = join(sub, "machines.ts");
    make(config);
    const result = await check(config);
    expectOneCleanFailure(result);
    expect(result.stderr).toMatch(expected);
  });

  test("world-writable parent directory", async () => {
    const parent = join(dir, "open-parent");
    mkdirSync(join(parent, "etc"), { recursive: true });
    chmodSync(parent, 0o777);
    writeFileSync(join(parent, "etc", "machines.ts"), GOOD);
    const result = await check(join(parent, "etc", "machines.ts"));
    expectOneCleanFailure(result);
    expect(result.stderr).toContain(`directory ${parent} is world-writable, and this code runs as root\n  fix: chmod go-w ${parent}`);
  });

  test("world-writable imported sibling", async () => {
    const sub = join(dir, "open-sibling");
    mkdirSync(sub, { mode: 0o755 });
    writeFileSync(join(sub, "hosts.ts"), `export const hosts = ["a"];\n`);
    chmodSync(join(sub, "hosts.ts"), 0o666);
    writeFileSync(
      join(sub, "machines.ts"),
      `import { buildMachine } from "offload";\nimport { hosts } from "./hosts.ts";\nexport default hosts.map((name) => buildMachine({ name, systems: ["x86_64-linux"] }));\n`,
    );
    const result = await check(join(sub, "machines.ts"));
    expectOneCleanFailure(result);
    expect(result.stderr).toContain(`file ${join(sub, "hosts.ts")} is world-writable`);
  });

  test("missing config file", async () => {
    const result = await check(join(dir, "does-not-exist.ts"));
    expectOneCleanFailure(result);
    expect(result.stderr).toMatch(/no machines config at .*does-not-exist.ts \(from --config\)\n\s+fix: /);
  });

  test("--json reports problems with locations", async () => {
    const config = join(dir, "json-negative-speed.ts");
    writeFileSync(config, GOOD.replace("systems:", "speed: -2, systems:"));
    const result = await runCommandAsCli(registerCheck, ["check", "--static", "--json", "--config", config], { OFFLOAD_CACHE_DIR: join(dir, "cache") });
    expect(result.code).toBe(1);
    expect(result.stderr).toBe("");
    const report = JSON.parse(result.stdout);
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([
      { code: "config-invalid", message: 'machine "a": speed: must be a positive finite number', location: `${config}:2:43`, fix: null },
    ]);
  });
});
