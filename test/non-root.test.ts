// offload run by a user other than the build hook's (root): commands that show what the hook
// sees refuse with one line saying to run as root, instead of a crash on the hook's slot
// secret or a complaint about an SSH key that only root may read; `check --static` works
// where it can.
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateKeyPair } from "../src/nix/keys.js";
import { acquireSlot } from "../src/select/slots.js";
import { readableCli, runCli } from "./support/cli.js";
import { removeDir } from "./support/safe-dir.js";
import { writeMachinesTs } from "./support/lab-config.js";

const NOBODY = 65534;
const HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHI3/c8yvZiRIrPlNbVW/z785mqAXJJm8sNfG6PuzdS";

let dir: string;
let env: NodeJS.ProcessEnv;
let bin: string;

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
  writeMachinesTs(join(dir, "plain"), [record]);
  env = { OFFLOAD_CONFIG_DIR: configDir, OFFLOAD_STATE_DIR: stateDir };
  bin = readableCli(NOBODY, dir);
  // The hook has run: its state dir and slot secret exist.
  await (await acquireSlot(stateDir, "b0", 1))!.release();
});

afterAll(() => removeDir(dir));

const asNobody = (args: string[]) => runCli(args, env, undefined, NOBODY, bin);

test.each([
  ["status", ["status"]],
  ["explain", ["explain", "--system", "x86_64-linux"]],
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
  expect(result.stderr).toContain(`privateKey: SSH private key ${join(dir, "root-only", "id_builders")} is not readable by nobody: run offload as root, as the build hook runs`);
  expect(result.stderr).not.toMatch(/ls -l|bug in offload/);
});

test("check --static works for anyone otherwise (without a writable cache)", async () => {
  const result = await asNobody(["check", "--static", "--config", join(dir, "plain", "machines.ts")]);
  expect(result.stderr).toBe("");
  expect(result.code).toBe(0);
  expect(result.stdout).toMatch(/^b0\s+127\.0\.0\.1:9\s+x86_64-linux/m);
});
