// The wiring of config-bad.test.ts's in-process checks: the real `offload` executable, for
// a broken config with a location and for --json, exits 1 with one clean message.
import { copyFileSync, chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { runCli } from "./support/cli.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const CORPUS = fileURLToPath(new URL("./fixtures/bad-configs", import.meta.url));
const GOOD = `import { buildMachine } from "offload";\nexport default [buildMachine({ name: "a", systems: ["x86_64-linux"] })];\n`;

let dir: string;
beforeAll(() => {
  dir = makeSafeDir("bad-configs-cli");
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
