// The README's "## Install", walked in its order: its shell blocks, run line by line where
// they say they run (a lab builder for "On builder1", a master host of this machine's Nix 2.8
// with a real nix-daemon for this machine, its non-root client for "Test a build"), changed
// only where the README says what may differ:
//   <this repository> → this checkout; /opt/offload → a directory of the test ("any directory
//   only root can write to"); /usr/local/bin → the test's bin directory first on PATH ("any
//   directory on root's PATH"); /etc/offload → OFFLOAD_CONFIG_DIR ("## Commands",
//   Environment); builder1 → the lab builder's name ("stands for each of your build
//   machines"); $EDITOR → a copy of the machines.ts an administrator would write; alice → the
//   master host's client user.
// Not run here, their text checked instead:
//   - the Node.js 20 block: nodejs.org cannot be reached from here, and it would replace this
//     machine's node (which must be 20 or later for this test to run at all);
//   - `systemctl restart nix-daemon` on the builder: no systemd here, and the lab builder runs
//     no daemon (offload logs in as root, so its Nix reads nix.conf afresh each session);
//   - ssh reaches the builder by its name through the lab's ssh_config (-F), as a real one is
//     reached through DNS and root's known_hosts.
// No systemd here either for this machine's daemon: `offload install` prints the restart
// command, which the test carries out as the README says to.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CLIENT_USER, startMasterHost } from "../src/lab/index.js";
import type { Lab, LabBuilder } from "../src/lab/index.js";
import { runInHost, startNixDaemon, stopHost, type Host, type HostResult } from "../src/lab/host.js";
import { PACKAGE_ROOT } from "../src/package-root.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const README = join(PACKAGE_ROOT, "README.md");

/** The README's Install section, and the shell blocks in it, in order. */
function installSection(): { text: string; blocks: string[][] } {
  const readme = readFileSync(README, "utf8");
  const start = readme.indexOf("## Install\n");
  expect(start).toBeGreaterThanOrEqual(0);
  const text = readme.slice(start, readme.indexOf("\n## ", start + 1));
  const blocks = [...text.matchAll(/```sh\n([\s\S]*?)```/g)].map((match) => match[1]!.split("\n").filter((line) => line.trim() !== ""));
  return { text, blocks };
}

/** Passes for a command that succeeded; else fails showing the line and what it printed. */
function expectSuccess(line: string, result: HostResult): void {
  expect(result.code === 0 ? line : `${line}\nexit status ${result.code}\n${result.stdout}${result.stderr}`).toBe(line);
}

/** A line the README shows in `code spans`, as a pattern: `…` stands for anything. */
function shown(line: string): RegExp {
  return new RegExp(
    line
      .split("…")
      .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
      .join("[^']+?"),
  );
}

let lab: Lab;
let builder: LabBuilder;
let dir: string;
let master: Host | undefined;

beforeAll(async () => {
  lab = await startTestLab({ builders: 1, nix: "2.8", rootSshConfig: false });
  builder = lab.builders[0]!;
  dir = makeSafeDir("install-walk");
}, LAB_UP_TIMEOUT_MS);

afterAll(async () => {
  if (master) await stopHost(master);
  await stopTestLab(lab);
  if (dir) removeDir(dir);
});

test("README, Install: every step runs in the order written, and the test build is built on the builder with its signature verified", async () => {
  const { text, blocks } = installSection();
  expect(blocks.map((block) => block[0]!.split(" ").slice(0, 2).join(" "))).toEqual([
    "apt-get install",
    "nix-store --generate-binary-cache-key",
    "git clone",
    "offload install",
    "nix-build --max-jobs",
  ]);
  const [nodeBlock, builderBlock, hereBlock, installBlock, buildBlock] = blocks as [string[], string[], string[], string[], string[]];

  // Node.js 20: said, not run (see the top); this test itself runs on a Node of at least 20.
  expect(text).toContain("Debian 12's own `nodejs` is 18");
  expect(nodeBlock.join("\n")).toMatch(/https:\/\/nodejs\.org\/dist\/v20\.\d+\.\d+\/node-v20\.\d+\.\d+-linux-x64\.tar\.xz/);
  expect(Number(process.versions.node.split(".")[0])).toBeGreaterThanOrEqual(20);

  const name = builder.name;
  const configDir = join(dir, "etc-offload");
  const clone = join(dir, "opt-offload");
  const bin = join(dir, "bin");
  const work = join(dir, "work");
  const machinesTs = join(dir, "machines.ts");
  const env = { OFFLOAD_CONFIG_DIR: configDir, OFFLOAD_STATE_DIR: join(dir, "state"), OFFLOAD_CACHE_DIR: join(dir, "cache") };
  const here = (line: string) =>
    line
      .replaceAll("<this repository>", PACKAGE_ROOT)
      .replaceAll("/opt/offload", clone)
      .replaceAll("/usr/local/bin", bin)
      .replaceAll("/etc/offload", configDir)
      .replaceAll("ssh root@", `ssh -F ${lab.sshConfig} root@`)
      .replaceAll("builder1", name)
      .replaceAll("alice", CLIENT_USER);
  // What the administrator writes with $EDITOR: the builder, as offload reaches it (## machines.ts).
  writeFileSync(
    machinesTs,
    [
      'import { buildMachine } from "offload";',
      "export default [",
      // Loopback builders share this machine's CPUs: its load says nothing about the builder.
      `  buildMachine({ name: ${JSON.stringify(name)}, host: ${JSON.stringify(builder.address)}, port: ${builder.port}, user: "root", systems: [${JSON.stringify(builder.system)}], hostKey: ${JSON.stringify(builder.hostKey)}, privateKey: ${JSON.stringify(lab.clientKey)}, overloadThreshold: null }),`,
      "];",
      "",
    ].join("\n"),
    { mode: 0o644 },
  );

  // On builder1: its own signing key, in its nix.conf.
  for (const line of builderBlock) {
    if (line.startsWith("systemctl ")) continue; // see the top
    expectSuccess(line, await runInHost(builder.host, ["sh", "-c", here(line)], { timeoutMs: 30_000 }));
  }
  expect(builderBlock.some((line) => line.startsWith("systemctl restart nix-daemon"))).toBe(true);
  const builderKey = (await runInHost(builder.host, ["cat", "/etc/nix/signing-key.pub"])).stdout.trim();
  expect(builderKey).toMatch(new RegExp(`^${name}-1:`));

  // This machine: a master host whose nix-daemon knows nothing of offload yet, but the
  // environment offload's hook will need (the config dir in place of /etc/offload).
  master = await startMasterHost({ dir: join(dir, "master"), nix: "2.8", shared: [lab.dir, dir], daemonEnv: env });
  const hostEnv = { ...env, PATH: `${bin}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`, EDITOR: `cp ${machinesTs}` };
  await runInHost(master, ["mkdir", "-p", bin, work]);
  let cwd = work;
  const asRoot = async (line: string, timeoutMs = 30_000): Promise<HostResult> => {
    const result = await runInHost(master!, ["sh", "-c", `cd ${cwd} && ${here(line)}`], { env: hostEnv, timeoutMs });
    const moved = / && cd (\S+)$/.exec(here(line));
    if (moved) cwd = moved[1]!;
    return result;
  };
  for (const line of hereBlock) {
    expectSuccess(line, await asRoot(line, line.startsWith("npm ci") ? 120_000 : 30_000));
    // The README explains npm's install-scripts warning, and why not --ignore-scripts: prepare builds dist/.
    if (line.startsWith("npm ci")) expect(readFileSync(join(clone, "dist", "hook.js")).length).toBeGreaterThan(0);
  }
  expect(text).toContain("npm warn install-scripts");
  expect(readFileSync(join(configDir, "acl"), "utf8")).toContain(builderKey);

  // offload install: no systemd here, so it prints how to restart the daemon, and that is done.
  const [installLine, checkLine] = installBlock as [string, string];
  const installed = await asRoot(installLine);
  expect(installed).toMatchObject({ code: 1, stdout: expect.stringContaining(`build-hook = ${clone}/bin/offload-hook `) });
  const fix = /fix: restart nix-daemon as it was started: (kill (\d+); nix-daemon &)/.exec(installed.stderr);
  expect(text).toContain("fix: restart\nnix-daemon as it was started: kill PID; nix-daemon &");
  expect(fix).not.toBeNull();
  const stale = await asRoot(checkLine, 60_000);
  expect(stale.code).not.toBe(0);
  expect(`${stale.stdout}${stale.stderr}`).toContain(`restart nix-daemon as it was started: ${fix![1]}`);
  // `nix-daemon &` from runInHost would hold its output open: started alike, as root with the same environment.
  const killed = await runInHost(master, [
    "sh",
    "-c",
    `kill ${fix![2]}; for i in $(seq 100); do kill -0 ${fix![2]} 2>/dev/null || exit 0; sleep 0.1; done; exit 1`,
  ]);
  expect(killed).toMatchObject({ code: 0 });
  await startNixDaemon(master, { env });
  expectSuccess(checkLine, await asRoot(checkLine, 60_000));

  // Users: the client is in nix-users already (ensureUser); adduser says so and succeeds.
  const users = /`(adduser alice nix-users)`/.exec(text);
  expect(users).not.toBeNull();
  expectSuccess(users![1]!, await asRoot(users![1]!));

  // Test a build, as the client, through the daemon (found as Nix finds it: no NIX_REMOTE).
  const [buildLine] = buildBlock as [string];
  const built = await runInHost(master, ["sh", "-c", here(buildLine)], { user: CLIENT_USER, timeoutMs: 60_000 });
  expectSuccess(buildLine, built);
  const success = /It worked when it prints `([^`]+)`, then\n`([^`]+)`/.exec(text);
  expect(success).not.toBeNull();
  for (const line of [success![1]!, success![2]!]) expect(built.stderr).toMatch(shown(here(line.replaceAll("\n", " "))));
  expect(built.stdout).toMatch(/^\/nix\/store\/[^/]+-offload-test\n$/);
}, 180_000);
