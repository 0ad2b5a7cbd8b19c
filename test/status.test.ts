// `offload status` against loopback builders: a fresh look at each machine beside the local
// view (held slots and who holds them, the last successful build), once, as JSON, or watched.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { MachineStatus } from "../src/check/machine-status.js";
import type { Lab, LabBuilder } from "../src/lab/index.js";
import { recordFacts } from "../src/select/machine-facts.js";
import { acquireSlot, type Slot } from "../src/select/slots.js";
import { runCli } from "./support/cli.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { configEnv, labRecord, writeLabConfig } from "./support/lab-config.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

let lab: Lab;
let dir: string;
let b0: LabBuilder;
let b1: LabBuilder;
let env: NodeJS.ProcessEnv;
let slot: Slot;
let downName: string;
const HELD = "/nix/store/00000000000000000000000000000000-status-held.drv";

beforeAll(async () => {
  lab = await startTestLab({ builders: 2 });
  [b0, b1] = lab.builders as [LabBuilder, LabBuilder];
  dir = makeSafeDir("status");
  downName = b1.address.replace(/\d+$/, "250"); // nothing listens there
  const configDir = writeLabConfig(dir, "status", lab, [labRecord(lab, b0), labRecord(lab, b1), labRecord(lab, b1, { name: downName, port: 1 })]);
  env = configEnv(dir, configDir);
  // One of b0's two slots is held by a "running build" of this process; b1 built something a minute ago.
  slot = (await acquireSlot(env.OFFLOAD_STATE_DIR!, b0.address, b0.parallelBuilds, HELD))!;
  recordFacts(env.OFFLOAD_STATE_DIR!, b1.address, { lastBuild: { drvPath: "/nix/store/00000000000000000000000000000000-done.drv", at: Date.now() - 65_000 } });
}, LAB_UP_TIMEOUT_MS);

afterAll(async () => {
  await slot?.release();
  await stopTestLab(lab);
  if (dir) removeDir(dir);
});

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

test("the table: address, reachable, load, slots in use, free store space, uptime, clock, last build; holders and failures below", async () => {
  const result = await runCli(["status"], env);
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
  const lines = result.stdout.trim().split("\n");
  expect(lines[0]).toMatch(/^MACHINE\s+ADDRESS\s+REACHABLE\s+LOAD\s+SLOTS\s+FREE\s+UPTIME\s+CLOCK\s+LAST BUILD$/);
  expect(lines[1]).toMatch(
    new RegExp(`^${escape(b0.address)}\\s+root@${escape(b0.address)}:${b0.port}\\s+yes\\s+\\d+\\.\\d\\d\\s+1/2\\s+\\d+\\.\\dG\\s+\\S+\\s+[+-]0\\.0\\ds\\s+-$`),
  );
  expect(lines[2]).toMatch(
    new RegExp(
      `^${escape(b1.address)}\\s+root@${escape(b1.address)}:${b1.port}\\s+yes\\s+\\d+\\.\\d\\d\\s+0/2\\s+\\d+\\.\\dG\\s+\\S+\\s+[+-]0\\.0\\ds\\s+1m ago$`,
    ),
  );
  expect(lines[3]).toMatch(/^\S+\s+root@\S+:1\s+NO\s+-\s+0\/2\s+-\s+-\s+-\s+-$/);
  expect(lines).toContainEqual(expect.stringMatching(/^✗ \S+: connection to \S+ refused: nothing listens on port 1 — fix: start sshd/));
  expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^  ${escape(b0.address)} slot 0: pid ${process.pid} building ${escape(HELD)} for \\d+s$`)));
});

test("--json and REGEX", async () => {
  const result = await runCli(["status", "--json", `^(${escape(b0.address)}|${escape(downName)})$`], env);
  expect(result.code).toBe(0);
  const { machines } = JSON.parse(result.stdout) as { machines: MachineStatus[] };
  expect(machines.map((m) => m.machine)).toEqual([b0.address, downName]);
  const [up, down] = machines as [MachineStatus, MachineStatus];
  expect(up).toMatchObject({ reachable: true, enabled: true, slots: { total: 2, inUse: 1, holders: [{ slot: 0, pid: process.pid, drvPath: HELD }] } });
  expect(up.load).toBeGreaterThanOrEqual(0);
  expect(up.store).toMatchObject({ dir: "/nix/store" }); // its host's own, at the real path
  expect(up.store!.freeBytes).toBeGreaterThan(0);
  expect(up.store!.totalBytes).toBeGreaterThanOrEqual(up.store!.freeBytes);
  expect(up.uptimeSeconds).toBeGreaterThan(0);
  expect(Math.abs(up.clockSkewSeconds!)).toBeLessThan(0.5);
  expect(down).toMatchObject({ reachable: false, error: { code: "tcp-refused", fix: expect.stringContaining("start sshd") }, slots: { inUse: 0 } });
});

test("--watch refreshes in place until interrupted", async () => {
  const bin = fileURLToPath(new URL("../bin/offload.js", import.meta.url));
  const child = spawn(process.execPath, [bin, "status", "--watch", b1.address.replace(/\./g, "\\.")], { env: { ...process.env, ...env } });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const started = Date.now();
  while ((output.match(/\x1b\[H\x1b\[2J/g) ?? []).length < 2 && Date.now() - started < 15_000) await new Promise((resolve) => setTimeout(resolve, 100));
  child.kill("SIGINT");
  await new Promise((resolve) => child.once("close", resolve));
  const frames = output.split("\x1b[H\x1b[2J").filter((frame) => frame !== "");
  expect(frames.length).toBeGreaterThanOrEqual(2);
  for (const frame of frames.slice(0, 2)) {
    expect(frame).toMatch(/offload status \(every 2 s, Ctrl-C ends\)\nMACHINE\s+ADDRESS\s+REACHABLE/);
    expect(frame).toContain(b1.address);
  }
});

test("a machine that answers but is refused at login (a wrong hostKey) is reachable, with the reason below", async () => {
  const wrongKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMpzJlEoLTd2eUTr0Yx3ZzDvVm1k5sfAmRvUZX9gXy2c other";
  const configDir = writeLabConfig(dir, "wrong-key", lab, [labRecord(lab, b0, { name: "b0", host: b0.address, hostKey: wrongKey })]);
  const result = await runCli(["status"], configEnv(dir, configDir));
  const lines = result.stdout.trim().split("\n");
  expect(lines[1]).toMatch(new RegExp(`^b0\\s+root@${escape(b0.address)}:${b0.port}\\s+yes\\s+-\\s+0/2\\s+-`));
  expect(lines[2]).toMatch(/^✗ b0: host key mismatch for b0: machines\.ts pins .* — fix: .*set hostKey: /);
  const json = JSON.parse((await runCli(["status", "--json"], configEnv(dir, configDir))).stdout) as { machines: MachineStatus[] };
  expect(json.machines[0]).toMatchObject({ machine: "b0", address: `root@${b0.address}:${b0.port}`, reachable: true, error: { code: "host-key-mismatch" } });
});
