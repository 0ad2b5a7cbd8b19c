// A build machine that lies (its nix-store replaced by test/support/hostile-serve.ts, its
// outputs signed with its real, trusted key): a real nix-build through offload-hook must
// fail with the cause in one line, import nothing, and leave no spool behind.
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { execFile, execFileSync } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { build } from "esbuild";
import { PACKAGE_ROOT } from "../src/package-root.js";
import type { Lab, LabBuilder } from "../src/lab/index.js";
import { startSshd, stopSshd } from "../src/lab/sshd.js";
import { runCli } from "./support/cli.js";
import { HOOK } from "./support/hook.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { isValidPath } from "./support/nix.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const run = promisify(execFile);
let lab: Lab;
let builder: LabBuilder;
let dir: string;
let sshdConfig: string;

beforeAll(async () => {
  lab = await startTestLab({ builders: 1 });
  builder = lab.builders[0]!;
  sshdConfig = readFileSync(builder.sshdConfig, "utf8");
  dir = makeSafeDir("hostile");
  await build({
    entryPoints: [join(PACKAGE_ROOT, "test", "support", "hostile-serve.ts")],
    outfile: join(dir, "hostile-serve.mjs"),
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    logLevel: "warning",
  });
  mkdirSync(join(dir, "bin"), { mode: 0o755 });
  // Only the serve sessions lie; `nix-store --version` and the like stay the real thing.
  const realNixStore = execFileSync("sh", ["-c", "command -v nix-store"], { encoding: "utf8" }).trim();
  writeFileSync(
    join(dir, "bin", "nix-store"),
    `#!/bin/sh\n[ "$1" = --serve ] && exec ${process.execPath} ${join(dir, "hostile-serve.mjs")} "$@"\nexec ${realNixStore} "$@"\n`,
    { mode: 0o755 },
  );
  writeFileSync(
    join(dir, "one.nix"),
    `{ salt }: derivation { name = "hostile-target"; inherit salt; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo $salt > $out" ]; }\n`,
  );
  const config = join(dir, "etc");
  mkdirSync(config, { mode: 0o755 });
  for (const file of ["signing-key.sec", "acl"]) copyFileSync(join(lab.configDir, file), join(config, file));
  chmodSync(join(config, "signing-key.sec"), 0o600);
  writeFileSync(join(config, "machines.ts"), readFileSync(lab.machinesFile, "utf8"));
}, LAB_UP_TIMEOUT_MS);

afterAll(async () => {
  await stopTestLab(lab);
  if (dir) removeDir(dir);
});

/** Restarts the builder's sshd so that its sessions run the hostile nix-store in `mode`. */
async function turnHostile(mode: string, extra = ""): Promise<void> {
  const files = { sshdConfig: builder.sshdConfig, pidFile: builder.pidFile, logFile: builder.logFile };
  writeFileSync(
    builder.sshdConfig,
    sshdConfig.replace(
      /^SetEnv (.*)$/m,
      `SetEnv $1 HOSTILE_MODE=${mode} HOSTILE_KEY=${join(builder.dir, "signing-key.sec")} PATH=${join(dir, "bin")}:/usr/bin:/bin${extra}`,
    ),
  );
  await stopSshd(files);
  await startSshd(files, builder);
}

async function nixBuild(salt: string, options: string[] = []) {
  const env = {
    ...process.env,
    OFFLOAD_CONFIG_DIR: join(dir, "etc"),
    OFFLOAD_STATE_DIR: join(dir, "state"),
    OFFLOAD_CACHE_DIR: join(dir, "cache"),
    OFFLOAD_AGENT: "0",
  };
  const args = [
    join(dir, "one.nix"),
    "--argstr",
    "salt",
    salt,
    "--option",
    "build-hook",
    HOOK,
    "--max-jobs",
    "0",
    "--option",
    "substituters",
    "",
    "--no-out-link",
    ...options,
  ];
  const started = Date.now();
  const result = await run("nix-build", args, { env, timeout: 120_000 }).then(
    ({ stderr }) => ({ ok: true, stderr }),
    (error: { stderr: string }) => ({ ok: false, stderr: error.stderr }),
  );
  const output = (await run("nix-instantiate", ["--eval", "-E", `(import ${join(dir, "one.nix")} { salt = "${salt}"; }).outPath`])).stdout
    .trim()
    .replace(/"/g, "");
  return { ...result, output, seconds: (Date.now() - started) / 1000 };
}

const spoolLeft = () => (existsSync(join(dir, "state", "spool")) ? readdirSync(join(dir, "state", "spool")) : []);

test("a path nobody asked for is refused: not even the asked-for output is imported", async () => {
  await turnHostile("extra-path");
  const result = await nixBuild(`extra-${Date.now()}`);
  expect(result.ok).toBe(false);
  expect(result.stderr).toMatch(/offered \/nix\/store\/p{32}-planted-by-builder, which is not an output of .* that was asked for; nothing imported/);
  expect(isValidPath(`/nix/store/${"p".repeat(32)}-planted-by-builder`)).toBe(false);
  expect(isValidPath(result.output)).toBe(false);
  expect(spoolLeft()).toEqual([]);
});

test("more bytes than declared: refused at the declared size, not after filling the disk", async () => {
  await turnHostile("size-lie", " HOSTILE_BYTES=268435456");
  const result = await nixBuild(`size-${Date.now()}`);
  expect(result.ok).toBe(false);
  expect(result.stderr).toMatch(/sent more than the 200 bytes it declared for .*; nothing imported/);
  expect(isValidPath(result.output)).toBe(false);
  expect(spoolLeft()).toEqual([]);
  expect(result.seconds).toBeLessThan(30);
});

test("a download that stops moving fails after max-silent-time with the cause, freeing the slot", async () => {
  await turnHostile("stall");
  const result = await nixBuild(`stall-${Date.now()}`, ["--option", "max-silent-time", "3"]);
  expect(result.ok).toBe(false);
  expect(result.stderr).toMatch(/fetching the outputs of .* stalled: no byte moved for 3 s/);
  expect(result.seconds).toBeLessThan(30);
  expect(isValidPath(result.output)).toBe(false);
  expect(spoolLeft()).toEqual([]);
});

test("a machine whose nix-store dies at start is reported with its own words", async () => {
  await turnHostile("dies");
  const result = await nixBuild(`dies-${Date.now()}`);
  expect(result.ok).toBe(false);
  expect(result.stderr).toMatch(/cannot build on .*No space left on device/);
});

test("offload check finds the same lies before any build does", async () => {
  const env = { OFFLOAD_CONFIG_DIR: join(dir, "etc"), OFFLOAD_STATE_DIR: join(dir, "state"), OFFLOAD_CACHE_DIR: join(dir, "cache") };
  for (const [mode, code] of [
    ["extra-path", "output-unasked"],
    ["size-lie", "output-size-lie"],
  ] as const) {
    await turnHostile(mode, mode === "size-lie" ? " HOSTILE_BYTES=1048576" : "");
    const check = await runCli(["check", "--json"], env);
    expect(check.code).toBe(1);
    const report = JSON.parse(check.stdout) as { machines: { steps: { step: string; status: string; code?: string; fix?: string }[] }[] };
    const roundTrip = report.machines[0]!.steps.find((step) => step.step === "round-trip")!;
    expect(roundTrip).toMatchObject({ status: "fail", code });
    expect(roundTrip.fix).toBeTruthy();
  }
});
