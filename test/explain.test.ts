// `offload explain` decides with the hook's own state gathering and selection function:
// held slots, fresh loads and recent failures from the state dir, machines.ts, the local
// Nix settings. Every reason a machine is passed over, with its fix; and the hook agrees.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateKeyPair } from "../src/nix/keys.js";
import { recordFacts } from "../src/select/machine-facts.js";
import { acquireSlot, type Slot } from "../src/select/slots.js";
import { runCli } from "./support/cli.js";
import { BASE_SETTINGS, runHookTries } from "./support/hook.js";
import { writeMachinesTs } from "./support/lab-config.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

let dir: string;
const slots: Slot[] = [];
const SYSTEM = "x86_64-linux";
// 127.0.0.0/8 addresses nobody listens on: explain never connects, and a hook that tries fails fast.
const machine = (name: string, changes: Record<string, unknown> = {}) => ({
  name,
  port: 1,
  systems: [SYSTEM],
  hostKey: HOST_KEY,
  overloadThreshold: 0.8,
  ...changes,
});
const HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMpzJlEoLTd2eUTr0Yx3ZzDvVm1k5sfAmRvUZX9gXy2c test";

beforeAll(() => {
  dir = makeSafeDir("explain");
});

afterAll(async () => {
  for (const slot of slots) await slot.release();
  removeDir(dir);
});

interface Explained {
  verdict: string;
  summary: string;
  local: string;
  candidates: string[];
  request: { system: string; requiredFeatures: string[]; amWilling: boolean; drvPath?: string };
  machines: { machine: string; code: string; detail: string; fix?: string }[];
}

/** A config dir with these records and a state dir; returns the environment for offload. */
function setup(name: string, records: Record<string, unknown>[], extra?: string): NodeJS.ProcessEnv {
  const configDir = join(dir, name);
  mkdirSync(configDir, { mode: 0o755 });
  writeMachinesTs(configDir, records, extra);
  // The hook will not start without its signing key.
  writeFileSync(join(configDir, "signing-key.sec"), generateKeyPair("explain-test-1").exportSecret(), { mode: 0o600 });
  return { OFFLOAD_CONFIG_DIR: configDir, OFFLOAD_STATE_DIR: join(configDir, "state"), OFFLOAD_CACHE_DIR: join(dir, "cache") };
}

async function explain(env: NodeJS.ProcessEnv, args: string[]): Promise<Explained> {
  const result = await runCli(["explain", "--json", ...args], env);
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
  return JSON.parse(result.stdout) as Explained;
}

const byMachine = (explained: Explained) => Object.fromEntries(explained.machines.map((m) => [m.machine, m.code]));

describe("every reason a machine is passed over", () => {
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    env = setup("reasons", [
      machine("127.0.0.21", { speed: 3, features: ["kvm"] }), // fast
      machine("127.0.0.22", { speed: 1, features: ["kvm"] }), // slow
      machine("127.0.0.23", { speed: 5 }), // busy: its only slot held
      machine("127.0.0.24", { speed: 5 }), // hot: a fresh load above its threshold
      machine("127.0.0.25", { speed: 5 }), // down: a recent connection failure
      machine("127.0.0.26", { speed: 5, enabled: false }),
      machine("127.0.0.27", { speed: 5, mandatoryFeatures: ["benchmark"] }),
      machine("127.0.0.28", { speed: 5, systems: ["aarch64-linux"] }),
    ]);
    const state = env.OFFLOAD_STATE_DIR!;
    slots.push((await acquireSlot(state, "127.0.0.23", 1, "/nix/store/00000000000000000000000000000000-held.drv"))!);
    recordFacts(state, "127.0.0.24", { load: { value: 0.95, at: Date.now() } });
    recordFacts(state, "127.0.0.25", { failure: { message: "connection to 127.0.0.25 refused", at: Date.now() } });
  });

  test("the fastest free machine is chosen; every other one says why not, with a fix", async () => {
    const explained = await explain(env, ["--system", SYSTEM, "--max-jobs", "0"]);
    expect(explained.verdict).toBe("accept");
    expect(explained.candidates).toEqual(["127.0.0.21", "127.0.0.22"]);
    expect(byMachine(explained)).toEqual({
      "127.0.0.21": "chosen",
      "127.0.0.22": "slower",
      "127.0.0.23": "slots-full",
      "127.0.0.24": "overloaded",
      "127.0.0.25": "unreachable",
      "127.0.0.26": "disabled",
      "127.0.0.27": "mandatory-feature",
      "127.0.0.28": "system",
    });
    const reason = (name: string) => explained.machines.find((m) => m.machine === name)!;
    expect(reason("127.0.0.23")).toMatchObject({ detail: "all 1 slots busy", fix: expect.stringContaining("raise parallelBuilds of 127.0.0.23") });
    expect(reason("127.0.0.24")).toMatchObject({
      detail: expect.stringContaining("load 0.95 per CPU > threshold 0.8"),
      fix: expect.stringContaining("raise overloadThreshold"),
    });
    expect(reason("127.0.0.25")).toMatchObject({
      detail: "unreachable: connection to 127.0.0.25 refused",
      fix: expect.stringContaining("offload check 127.0.0.25"),
    });
    expect(reason("127.0.0.26").fix).toContain("set enabled: true");
    expect(reason("127.0.0.27").fix).toContain("requiredSystemFeatures");
    expect(reason("127.0.0.28")).toMatchObject({
      detail: expect.stringContaining("does not build x86_64-linux"),
      fix: expect.stringContaining("add it to systems of 127.0.0.28"),
    });
    expect(explained.local).toContain("max-jobs is 0");
  });

  test("a missing feature; the text output gives one line per machine", async () => {
    const result = await runCli(["explain", "--system", SYSTEM, "--features", "kvm,big-parallel", "--max-jobs", "0"], env);
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split("\n");
    expect(lines[0]).toBe("decline: no configured machine can build x86_64-linux with features kvm, big-parallel");
    expect(lines[1]).toMatch(/^local: the local machine cannot build this: max-jobs is 0$/);
    // The cause, then the fix once.
    expect(lines).toContain(
      "✗ 127.0.0.21: lacks required feature big-parallel — fix: if 127.0.0.21 has them, add them to features of 127.0.0.21 in machines.ts (and to system-features in its nix.conf)",
    );
    expect(lines).toHaveLength(2 + 8);
  });

  test("the hook's log gives the same reasons with the same fixes", async () => {
    const features = ["big-parallel", "kvm"];
    const explained = await explain(env, ["--system", SYSTEM, "--features", features.join(","), "--max-jobs", "0"]);
    const hook = await runHookTries(env, [{ amWilling: false, system: SYSTEM, drvPath: "/nix/store/00000000000000000000000000000000-x.drv", features }], {
      ...BASE_SETTINGS,
      "max-jobs": "0",
    });
    expect(hook.replies).toEqual([explained.verdict]);
    const log = hook.messages.join("\n");
    expect(log).toContain(explained.summary);
    for (const reason of explained.machines) expect(log).toContain(`  ${reason.machine}: ${reason.detail}${reason.fix ? ` — fix: ${reason.fix}` : ""}`);
    expect(log).toMatch(/127\.0\.0\.28: does not build x86_64-linux \(systems: aarch64-linux\) — fix: if 127\.0\.0\.28 builds x86_64-linux, add it to systems/);
  });

  test("--drv: system and requiredSystemFeatures come from the derivation", async () => {
    const expression = `derivation { name = "explain-kvm"; system = "${SYSTEM}"; builder = "/bin/sh"; args = ["-c" "echo > $out"]; requiredSystemFeatures = [ "kvm" ]; }`;
    const drvPath = execFileSync("nix-instantiate", ["--expr", expression], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
    const explained = await explain(env, ["--drv", drvPath, "--max-jobs", "0"]);
    expect(explained.request).toEqual({ system: SYSTEM, requiredFeatures: ["kvm"], amWilling: false, drvPath });
    expect(byMachine(explained)).toMatchObject({ "127.0.0.21": "chosen", "127.0.0.23": "missing-feature" });
  });

  test("when every machine for the build is busy the hook waits, and explain says so", async () => {
    const args = ["--system", SYSTEM, "--max-jobs", "0"];
    const busyOnly = setup("busy-only", [machine("127.0.0.23", { speed: 5 })]);
    // Same slot, same state dir: hold it there too.
    slots.push((await acquireSlot(busyOnly.OFFLOAD_STATE_DIR!, "127.0.0.23", 1))!);
    const explained = await explain(busyOnly, args);
    expect(explained.verdict).toBe("postpone");
    const hook = await runHookTries(busyOnly, [{ amWilling: false, system: SYSTEM, drvPath: "/nix/store/00000000000000000000000000000000-x.drv" }], {
      ...BASE_SETTINGS,
      "max-jobs": "0",
    });
    expect(hook.replies).toEqual(["postpone"]);
  });
});

test("the local machine is better: explain and the hook both decline", async () => {
  const env = setup("local-better", [machine("127.0.0.31", { speed: 2 })], "localMachine({ speed: 4 })");
  const explained = await explain(env, ["--system", SYSTEM, "--max-jobs", "4", "--am-willing", "1"]);
  expect(explained.verdict).toBe("decline");
  expect(explained.machines).toEqual([
    expect.objectContaining({ machine: "127.0.0.31", code: "local-better", fix: expect.stringContaining("localMachine()") }),
  ]);
  expect(explained.local).toContain("its speed 4 ≥ the best remote's");
  const hook = await runHookTries(env, [{ amWilling: true, system: SYSTEM, drvPath: "/nix/store/00000000000000000000000000000000-x.drv" }], {
    ...BASE_SETTINGS,
    "max-jobs": "4",
  });
  expect(hook.replies).toEqual(["decline"]);
  // No free local slot: the remote machine gets it.
  expect((await explain(env, ["--system", SYSTEM, "--max-jobs", "4", "--am-willing", "0"])).verdict).toBe("accept");
});

test("usage errors are messages with a fix", async () => {
  const env = setup("usage", [machine("127.0.0.41")]);
  const result = await runCli(["explain"], env);
  expect(result.code).toBe(1);
  expect(result.stderr).toMatch(/say what is being built: --system SYSTEM[^\n]*\n {2}fix: offload explain --system x86_64-linux/);
  writeFileSync(join(dir, "not-a.drv"), "nonsense");
  const bad = await runCli(["explain", "--drv", join(dir, "not-a.drv")], env);
  expect(bad.code).toBe(1);
  expect(bad.stderr).toMatch(/^offload: drv: expected "Derive\(" but found "nonsense" at offset 0 of \S+not-a\.drv$/m);
});

test("a refused login (a wrong hostKey) is reported as such, with the way out of the back-off", async () => {
  const env = setup("login-refused", [machine("127.0.0.51")]);
  const message = "127.0.0.51 (root@127.0.0.51:1) presents host key SHA256:abc, not the hostKey pinned in machines.ts";
  recordFacts(env.OFFLOAD_STATE_DIR!, "127.0.0.51", { failure: { message, at: Date.now(), code: "host-key-mismatch" } });
  const explained = await explain(env, ["--system", SYSTEM, "--max-jobs", "0"]);
  expect(explained.machines).toEqual([
    expect.objectContaining({
      code: "unreachable",
      detail: `login refused: ${message}`,
      fix: expect.stringMatching(/offload check 127\.0\.0\.51: once it passes, or once its record in machines\.ts changes/),
    }),
  ]);
});

test("what the hook would take from the builders setting and OFFLOAD_ONLY: no remote builds, or an unknown name", async () => {
  const env = setup("builders", [machine("127.0.0.61")]);
  // Nix's "no remote builders", here from the local Nix's settings.
  const empty = await explain({ ...env, NIX_CONFIG: "builders =" }, ["--system", SYSTEM]);
  expect(empty).toMatchObject({ verdict: "decline-permanently", summary: expect.stringContaining("builders is empty"), machines: [] });
  const unknown = await runCli(["explain", "--system", SYSTEM], { ...env, OFFLOAD_ONLY: "nc-b0" });
  expect(unknown.code).toBe(1);
  expect(unknown.stderr).toContain('no machine called "nc-b0" in machines.ts (named by OFFLOAD_ONLY); its machines are 127.0.0.61');
});
