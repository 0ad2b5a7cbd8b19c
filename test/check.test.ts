// `offload check` against real loopback builders: every step passes on healthy machines,
// machines are checked in parallel and one failure never stops the others.
import { readdirSync } from "node:fs";
import type { BuildMachine } from "../types/index.js";
import { compareCapabilities, remoteCapabilities, testSystem } from "../src/check/capabilities.js";
import { isTrusted, throughDaemon } from "../src/check/trust.js";
import { parseNixConfig, storeFilesDir } from "../src/remote/probes.js";
import type { Lab, LabBuilder } from "../src/lab/index.js";
import { createProgress } from "../src/check/progress.js";
import type { MachineReport } from "../src/check/machine-check.js";
import { readFacts, recordFacts } from "../src/select/machine-facts.js";
import { runCli } from "./support/cli.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { configEnv, labRecord, writeLabConfig } from "./support/lab-config.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

let lab: Lab;
let dir: string;
let b0: LabBuilder;
let b1: LabBuilder;

beforeAll(async () => {
  lab = await startTestLab({ builders: 2 });
  [b0, b1] = lab.builders as [LabBuilder, LabBuilder];
  dir = makeSafeDir("check");
}, LAB_UP_TIMEOUT_MS);

afterAll(async () => {
  await stopTestLab(lab);
  if (dir) removeDir(dir);
});

const STEPS = ["connect", "nix-store", "store", "capabilities", "round-trip", "load", "disk", "clock"];

/** The test derivations `offload check` made in the local store. */
const checkDrvs = () => new Set(readdirSync("/nix/store").filter((name) => /-offload-check-.*\.drv$/.test(name)));

test("healthy machines pass every step: one line per machine, the summary table, exit 0", async () => {
  const configDir = writeLabConfig(dir, "healthy", lab, [labRecord(lab, b0), labRecord(lab, b1)]);
  const before = checkDrvs();
  const result = await runCli(["check"], configEnv(dir, configDir));
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
  // Each check's test derivation is deleted once sent: checks leave nothing in the local store.
  expect([...checkDrvs()].filter((name) => !before.has(name))).toEqual([]);
  for (const builder of [b0, b1]) expect(result.stdout).toMatch(new RegExp(`^✓ ${builder.address.replace(/\./g, "\\.")}\\s+\\d+\\.\\d s$`, "m"));
  expect(result.stdout).toMatch(/^MACHINE\s+RESULT\s+STEPS\s+NIX\s+SIGNED BY\s+LOAD\s+FREE\s+CLOCK\s+TIME$/m);
  expect(result.stdout).toMatch(new RegExp(`^${b0.address.replace(/\./g, "\\.")}\\s+ok\\s+✓{8}\\s+2\\.8\\.0\\s+${b0.signingKey.split(":")[0]}`, "m"));
  expect(result.stdout).toContain("all 2 machine(s) passed");
  expect(result.stdout).toContain(
    "STEPS, in order: connect, nix-store, store, capabilities, round-trip, load, disk, clock (✓ passed, ! warning, ✗ failed, - skipped; on a Guix machine nix-store is its guix-daemon)",
  );
});

test("--json: every step of every machine, with what the machine told", async () => {
  const configDir = writeLabConfig(dir, "json", lab, [labRecord(lab, b0), labRecord(lab, b1)]);
  const result = await runCli(["check", "--json"], configEnv(dir, configDir));
  expect(result.code).toBe(0);
  const report = JSON.parse(result.stdout) as { ok: boolean; config: string; machines: (MachineReport & { address: string })[] };
  expect(report.ok).toBe(true);
  expect(report.machines.map((m) => m.machine)).toEqual([b0.address, b1.address]);
  for (const [machine, builder] of [
    [report.machines[0]!, b0],
    [report.machines[1]!, b1],
  ] as const) {
    expect(machine.ok).toBe(true);
    expect(machine.address).toBe(`root@${builder.address}:${builder.port}`);
    expect(machine.steps.map((s) => [s.step, s.status])).toEqual(STEPS.map((step) => [step, "ok"]));
    // A root login takes uploads unsigned: the round trip passing proves nothing about trusted-public-keys, and says so.
    expect(machine.steps.find((s) => s.step === "round-trip")!.detail).toMatch(
      /^our signed path accepted \(without needing our key: root is trusted there, and Nix takes a trusted user's paths unsigned\), /,
    );
    expect(machine.facts).toMatchObject({ nixVersion: "2.8.0", signer: builder.signingKey.split(":")[0], systems: expect.arrayContaining([builder.system]) });
    expect(machine.facts.features!.sort()).toEqual([...builder.features, ...builder.mandatoryFeatures].sort());
    expect(machine.facts.freeBytes).toBeGreaterThan(0);
    expect(Math.abs(machine.facts.clockSkew!)).toBeLessThan(1);
  }
});

test("REGEX picks machines by name; a REGEX matching none says which names exist", async () => {
  const configDir = writeLabConfig(dir, "regex", lab, [labRecord(lab, b0), labRecord(lab, b1)]);
  const one = await runCli(["check", `${b1.address.replace(/\./g, "\\.")}$`, "--json"], configEnv(dir, configDir));
  expect((JSON.parse(one.stdout) as { machines: MachineReport[] }).machines.map((m) => m.machine)).toEqual([b1.address]);
  const none = await runCli(["check", "^nomatch$"], configEnv(dir, configDir));
  expect(none.code).toBe(1);
  expect(none.stderr).toContain("no machine name matches /^nomatch$/");
  expect(none.stderr).toContain(b0.address);
});

test("a passing check ends the hook's back-off from an earlier failure (say, a hostKey since fixed)", async () => {
  const configDir = writeLabConfig(dir, "back-off", lab, [labRecord(lab, b0)]);
  const env = configEnv(dir, configDir);
  recordFacts(env.OFFLOAD_STATE_DIR!, b0.address, { failure: { message: "host key mismatch", at: Date.now(), code: "host-key-mismatch" } });
  const result = await runCli(["check", "--json"], env);
  expect(result.code).toBe(0);
  expect(readFacts(env.OFFLOAD_STATE_DIR!, b0.address).failure).toBeUndefined();
});

test("a machine that is down fails alone: the others are still checked, exit 1", async () => {
  const configDir = writeLabConfig(dir, "one-down", lab, [labRecord(lab, b0, { port: 1 }), labRecord(lab, b1)]);
  const started = Date.now();
  const result = await runCli(["check"], configEnv(dir, configDir));
  expect(result.code).toBe(1);
  expect(result.stdout).toMatch(new RegExp(`^✗ ${b0.address.replace(/\./g, "\\.")}\\s+\\d+\\.\\d s  \\(connect failed\\)$`, "m"));
  expect(result.stdout).toMatch(new RegExp(`^✓ ${b1.address.replace(/\./g, "\\.")}`, "m"));
  // The failure is one line: cause and fix.
  const line = result.stdout.split("\n").find((l) => l.startsWith(`✗ ${b0.address} connect:`));
  expect(line).toMatch(/refused: nothing listens on port 1 — fix: start sshd/);
  expect(result.stdout).toContain("1 of 2 machine(s) failed");
  expect(Date.now() - started).toBeLessThan(30_000);
});

test("live progress on a terminal rewrites one line per machine in place", () => {
  let written = "";
  const out = { isTTY: true, write: (text: string) => ((written += text), true) } as unknown as NodeJS.WriteStream;
  const progress = createProgress(["alpha", "b"], out);
  expect(written).toBe("\x1b[2K… alpha  connecting\n\x1b[2K… b      connecting\n");
  written = "";
  progress.step("b", { step: "connect", status: "ok", detail: "", seconds: 0.1 });
  expect(written.startsWith("\x1b[2A\x1b[2K… alpha  connecting\n\x1b[2K… b      ")).toBe(true);
  expect(written).toContain("connect ok, nix-store…");
  written = "";
  progress.done({ machine: "alpha", ok: false, seconds: 1.25, facts: {}, steps: [{ step: "connect", status: "fail", detail: "", seconds: 1 }] });
  expect(written).toContain("\x1b[2K✗ alpha    1.3 s  (connect failed)\n");
});

describe("the pure parts", () => {
  test("trust: root and direct stores always; through a daemon only trusted-users (names, @groups, *)", () => {
    const base = { user: "alice", groups: ["alice", "builders"], trustedUsers: "root" };
    expect(isTrusted({ ...base, user: "root" })).toBe(true);
    expect(isTrusted(base)).toBe(false); // store auto: a non-root user goes through the daemon
    expect(isTrusted({ ...base, storeSetting: "/srv/nix" })).toBe(true); // a chroot store it opens itself
    expect(isTrusted({ ...base, storeSetting: "/srv/nix", remoteStore: "daemon" })).toBe(false); // the record wins
    expect(isTrusted({ ...base, trustedUsers: "root alice" })).toBe(true);
    expect(isTrusted({ ...base, trustedUsers: "root @builders" })).toBe(true);
    expect(isTrusted({ ...base, trustedUsers: "*" })).toBe(true);
    expect(throughDaemon({ user: "root", storeSetting: "unix:///run/nix/socket" })).toBe(true);
  });

  test("where a store keeps its files", () => {
    expect(storeFilesDir(undefined)).toBe("/nix/store");
    expect(storeFilesDir("auto")).toBe("/nix/store");
    expect(storeFilesDir("daemon")).toBe("/nix/store");
    expect(storeFilesDir("/srv/chroot/")).toBe("/srv/chroot/nix/store");
    expect(storeFilesDir("local?root=/srv/chroot")).toBe("/srv/chroot/nix/store");
  });

  test("capabilities: claims the machine lacks fail, what the record omits warns (main system only)", () => {
    const record = { name: "m", systems: ["x86_64-linux", "aarch64-linux"], features: ["kvm"], mandatoryFeatures: ["benchmark"] } as unknown as BuildMachine;
    const remote = remoteCapabilities(
      parseNixConfig(["system = x86_64-linux", "extra-platforms = i686-linux x86_64-v2-linux", "system-features = kvm big-parallel"]),
    );
    expect(remote).toEqual({ systems: ["x86_64-linux", "i686-linux", "x86_64-v2-linux"], features: ["kvm", "big-parallel"] });
    const verdict = compareCapabilities(record, remote);
    expect(verdict.failures.map((f) => f.code)).toEqual(["system-mismatch", "missing-feature"]);
    expect(verdict.failures[1]!.message).toContain("feature benchmark");
    expect(verdict.warning?.message).toBe("m's Nix has feature big-parallel, which machines.ts does not list: such builds never go there");
    expect(testSystem(record, remote)).toBe("x86_64-linux");
  });
});
