// Builds on a machine where the SSH user is not root and its Nix goes through that
// machine's nix-daemon: the production setup with a `nix` user. Nix 2.8's `nix-store
// --serve` cannot pass the daemon's timeouts on to a remote nix-daemon, so the hook
// enforces them itself. (Only the timeout is tested here: this daemon's store is a chroot
// store, and the serve protocol's DumpStorePath reads /nix/store/… from the filesystem, so
// outputs could not be fetched from it; on a real machine its store is /nix/store.)
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Lab, LabBuilder } from "../src/lab/index.js";
import { HOOK } from "./support/hook.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { configEnv, labRecord, writeLabConfig } from "./support/lab-config.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const run = promisify(execFile);
const USER = "offload-remote";

let lab: Lab;
let builder: LabBuilder;
let dir: string;
let shared: string;
let daemon: ChildProcess | undefined;
let env: NodeJS.ProcessEnv;

function accepts(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const connection = createConnection({ path: socket });
    connection.once("connect", () => (connection.destroy(), resolve(true)));
    connection.once("error", () => resolve(false));
  });
}

beforeAll(async () => {
  lab = await startTestLab({ builders: 1, builderSpecs: [{ features: [], speed: 1, parallelBuilds: 2 }] });
  builder = lab.builders[0]!;
  dir = makeSafeDir("hook-remote-daemon");
  execFileSync("sh", ["-c", `id ${USER} >/dev/null 2>&1 || useradd --system --shell /bin/sh --no-create-home ${USER}`]);
  execFileSync("usermod", ["-p", "*", USER]); // not locked, or sshd refuses the login outright
  // The machine's own nix-daemon: it trusts the SSH user and offload's key, signs what it builds.
  shared = `/var/lib/offload-remote-daemon-${process.pid}`;
  mkdirSync(shared, { mode: 0o755 });
  const conf = join(shared, "nix.conf");
  writeFileSync(
    conf,
    [
      `store = ${join(shared, "store")}`,
      `trusted-users = root ${USER}`,
      `trusted-public-keys = ${lab.signingKey} ${builder.signingKey}`,
      `secret-key-files = ${join(builder.dir, "signing-key.sec")}`,
      "extra-sandbox-paths = /bin /lib /lib64 /usr",
      "substituters =",
      "",
    ].join("\n"),
  );
  const socket = join(shared, "socket");
  daemon = spawn("nix-daemon", [], { env: { ...process.env, NIX_USER_CONF_FILES: conf, NIX_DAEMON_SOCKET_PATH: socket }, stdio: "ignore" });
  for (let i = 0; i < 100 && !(await accepts(socket)); i++) await new Promise((resolve) => setTimeout(resolve, 50));
  const configDir = writeLabConfig(dir, "remote-daemon", lab, [labRecord(lab, builder, { user: USER, remoteStore: `unix://${socket}` })]);
  env = { ...process.env, ...configEnv(dir, configDir) };
  writeFileSync(
    join(dir, "build.nix"),
    `{ salt, seconds }: derivation { name = "remote-daemon"; inherit salt; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo started >&2; /bin/sleep \${toString seconds}; echo $salt > $out" ]; }\n`,
  );
}, LAB_UP_TIMEOUT_MS);

afterAll(async () => {
  daemon?.kill();
  await stopTestLab(lab);
  if (dir) removeDir(dir);
  if (shared) removeDir(shared);
});

function nixBuild(salt: string, seconds: number, options: string[] = []) {
  const args = [join(dir, "build.nix"), "--argstr", "salt", salt, "--arg", "seconds", String(seconds)];
  return run("nix-build", [...args, "--option", "build-hook", HOOK, "--max-jobs", "0", "--option", "substituters", "", "--no-out-link", ...options], { env, timeout: 120_000 }).then(
    ({ stdout, stderr }) => ({ ok: true, stdout: stdout.trim(), stderr }),
    (error: { stdout: string; stderr: string }) => ({ ok: false, stdout: error.stdout.trim(), stderr: error.stderr }),
  );
}

test("the daemon's timeout is enforced although the remote nix-daemon never gets it", async () => {
  const started = Date.now();
  const result = await nixBuild(`timeout-${started}`, 60, ["--option", "timeout", "2"]);
  expect(result.ok).toBe(false);
  expect(result.stderr).toContain("started"); // the build really ran on the machine, through its daemon
  expect(result.stderr).toMatch(/timed out after 2 seconds; the machine did not stop it, so offload did/);
  expect(result.stderr).toContain("failed with exit code 101");
  expect(Date.now() - started).toBeLessThan(30_000); // not the builder's 60 s
});
