// offload run by a user other than the build hook's (root): commands that log in as the hook
// does refuse with one line saying to run as root, instead of a crash on the hook's slot
// secret or a complaint about an SSH key that only root may read; `check --static` and
// `explain` work where they can.
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateKeyPair } from "../src/nix/keys.js";
import { recordFacts } from "../src/select/machine-facts.js";
import { acquireSlot, type Slot } from "../src/select/slots.js";
import { readableCli, runCli } from "./support/cli.js";
import { removeDir } from "./support/safe-dir.js";
import { writeMachinesTs } from "./support/lab-config.js";

const NOBODY = 65534;
const HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHI3/c8yvZiRIrPlNbVW/z785mqAXJJm8sNfG6PuzdS";

let dir: string;
let env: NodeJS.ProcessEnv;
let bin: string;
let held: Slot;

beforeAll(async () => {
  // Not under root's home, which others cannot enter; laid out as an install would be, all root's.
  dir = mkdtempSync("/var/lib/offload-non-root-test-");
  chmodSync(dir, 0o755);
  const configDir = join(dir, "etc");
  const stateDir = join(dir, "state");
  mkdirSync(configDir, { mode: 0o755 });
  mkdirSync(join(dir, "root-only"), { mode: 0o700 });
  writeFileSync(join(dir, "root-only", "id_builders"), "not read: its directory is root's\n", { mode: 0o600 });
  writeFileSync(join(configDir, "signing-key.sec"), generateKeyPair("non-root-test-1").exportSecret(), { mode: 0o600 });
  const record = { name: "b0", host: "127.0.0.1", port: 9, systems: ["x86_64-linux"], hostKey: HOST_KEY };
  writeMachinesTs(configDir, [{ ...record, privateKey: join(dir, "root-only", "id_builders") }]);
  mkdirSync(join(dir, "plain"), { mode: 0o755 });
  writeMachinesTs(join(dir, "plain"), [record, { ...record, name: "b1", speed: 2 }, { ...record, name: "b2", speed: 3 }]);
  env = { OFFLOAD_CONFIG_DIR: configDir, OFFLOAD_STATE_DIR: stateDir };
  bin = readableCli(NOBODY, dir);
  // The hook has run: its state dir and slot secret exist.
  await (await acquireSlot(stateDir, "b0", 1))!.release();
  // Now b1's only slot is busy and b2 failed a moment ago: root's explain would pick b0.
  held = (await acquireSlot(stateDir, "b1", 1, "/nix/store/00000000000000000000000000000000-held.drv"))!;
  recordFacts(stateDir, "b2", { failure: { message: "connection to 127.0.0.1 refused", at: Date.now() } });
});

afterAll(async () => {
  await held?.release();
  removeDir(dir);
});

const asNobody = (args: string[]) => runCli(args, env, undefined, NOBODY, bin);

test.each([
  ["status", ["status"]],
  ["check", ["check"]],
])("offload %s: one line, run as root", async (_name, args) => {
  const result = await asNobody(args);
  expect(result.code).toBe(1);
  const command = `offload ${args.join(" ")}`;
  expect(result.stderr).toBe(
    `offload: run as root: \`${command}\` shows what the build hook sees, and the hook runs as root (the owner of ${env.OFFLOAD_STATE_DIR}), with its SSH keys, known_hosts and build slots\n` +
      `  fix: sudo ${command}\n`,
  );
});

test("check --static: a key only root may read is blamed on who runs offload, not on the key", async () => {
  const result = await asNobody(["check", "--static"]);
  expect(result.code).toBe(1);
  expect(result.stderr).toContain(
    `privateKey: SSH private key ${join(dir, "root-only", "id_builders")} is not readable by nobody: run offload as root, as the build hook runs`,
  );
  expect(result.stderr).not.toMatch(/ls -l|bug in offload/);
});

test("check --static works for anyone otherwise (without a writable cache)", async () => {
  const result = await asNobody(["check", "--static", "--config", join(dir, "plain", "machines.ts")]);
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
  expect(result.stdout).toMatch(/^b0\s+127\.0\.0\.1:9\s+x86_64-linux/m);
});

test("explain: the decision from machines.ts and the recorded facts, read-only; the slots it cannot see, in one line", async () => {
  const plain = join(dir, "plain", "machines.ts");
  const args = ["explain", "--system", "x86_64-linux", "--max-jobs", "0", "--config", plain];
  const stateFiles = () => readdirSync(env.OFFLOAD_STATE_DIR!, { recursive: true }).sort();
  const before = stateFiles();
  const result = await asNobody([...args, "--json"]);
  expect(stateFiles()).toEqual(before);
  expect(result.stderr).toBe(
    `offload: build slots in use are not seen: only root may read ${env.OFFLOAD_STATE_DIR}/slot-secret, from which their names derive; ` +
      "this decision takes every slot as free (run as root to see them)\n",
  );
  expect(result.code).toBe(0);
  const explained = JSON.parse(result.stdout) as { verdict: string; slotsSeen: boolean; machines: { machine: string; code: string }[] };
  expect(explained).toMatchObject({ verdict: "accept", slotsSeen: false });
  // b2's failure is read from the state dir; b1's held slot is not seen, so b1 (faster than b0) wins.
  expect(Object.fromEntries(explained.machines.map((m) => [m.machine, m.code]))).toEqual({ b1: "chosen", b0: "slower", b2: "unreachable" });
  // Root sees the slot.
  const asRoot = await runCli([...args, "--json"], env);
  expect(JSON.parse(asRoot.stdout)).toMatchObject({
    slotsSeen: true,
    machines: expect.arrayContaining([{ machine: "b1", code: "slots-full", detail: expect.any(String), fix: expect.any(String) }]),
  });
});
