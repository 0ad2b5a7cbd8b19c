// `offload install` / `uninstall` / `check`'s daemon step against real nix-daemons of Nix 2.8
// (this machine's), 2.26 (Debian trixie) and 2.34 (Debian sid), each in a lab host (its own
// /nix and /etc/nix, and here root's home /root of its own; src/lab/host.ts), with offload run inside
// that host as root would run it. Whether a daemon really runs offload's hook is shown by the
// daemon itself: a build with --max-jobs 0 at debug level logs "starting build hook '…'" and
// the hook's reply. The hook is the real bin/offload-hook, with a config dir without
// machines.ts (it replies decline-permanently, as Nix's own build-remote does without
// machines: the build then fails for want of a machine either way), or for 2.26 after
// install with a lab builder, which then really builds.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { chmodSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import type { DaemonReport } from "../src/check/daemon.js";
import type { Lab, LabBuilder } from "../src/lab/index.js";
import { ensureUser, hostPaths, runInHost, startHost, startNixDaemon, stopHost, type Host, type HostResult, type NixRelease } from "../src/lab/host.js";
import { PACKAGE_ROOT } from "../src/package-root.js";
import { nixConfLine } from "../src/store/hook-install.js";
import { OFFLOAD_HOOK } from "../src/store/local-daemon.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const CLIENT = "offload-client";
/** Root's own user config file, where install writes for Nix 2.25–2.33: the daemons here run with HOME=/root. */
const USER_CONF = "/root/.config/nix/nix.conf";
const OFFLOAD = join(PACKAGE_ROOT, "bin", "offload.js");

interface Setup {
  host: Host;
  dir: string;
  /** The hook's config dir: no machines.ts. */
  hookConfig: string;
  /** `offload check`'s config dir: a machines.ts without machines. */
  checkConfig: string;
  originalNixConf: Buffer;
  /** What its /root holds of the real one (the test's directories, the package when under /root). */
  carried: string[];
  /** Its /root, as this machine sees it. */
  rootHome: string;
}

/** The environment of the hosts' daemons: what the hook needs, nothing that sets build-hook. */
function daemonEnv(setup: Setup, extra: Record<string, string> = {}): Record<string, string> {
  return { OFFLOAD_CONFIG_DIR: setup.hookConfig, OFFLOAD_STATE_DIR: join(setup.dir, "state"), OFFLOAD_CACHE_DIR: join(setup.dir, "cache"), ...extra };
}

async function setUp(nix: NixRelease, shared: string[] = []): Promise<Setup> {
  const dir = makeSafeDir(`install-${nix.replace(".", "-")}`);
  const host = await startHost({ name: `install-${nix.replace(".", "-")}`, nix, dir, shared });
  await ensureUser(host, CLIENT);
  // Root's Nix reads ~/.config/nix/nix.conf, and a host's /root is its root's (this machine's,
  // or one every host of that Debian root shares): the host gets a /root of its own, mounted
  // in its mount namespace only, so that nothing leaks in or out. The path stays /root, as
  // on a real machine, where a daemon's home is /root whether from HOME (started by root by
  // hand, as here) or from /etc/passwd (under systemd). It carries over what the test needs
  // from the real /root: /root/.cache, where the test directories are (support/safe-dir.ts),
  // and offload's own package when it lies under /root (a clone in root's home).
  const rootHome = join(dir, "root-home");
  const carried = ["/root/.cache", PACKAGE_ROOT].filter((path) => path.startsWith("/root/"));
  for (const path of carried) mkdirSync(join(rootHome, relative("/root", path)), { recursive: true });
  chmodSync(rootHome, 0o700);
  const binds = carried.map((path) => `mount --rbind ${path} ${join(rootHome, relative("/root", path))} && `).join("");
  const mounted = await runInHost(host, ["sh", "-c", `${binds}mount --rbind ${rootHome} /root`]);
  expect(mounted).toMatchObject({ code: 0 });
  const hookConfig = join(dir, "hook-config");
  const checkConfig = join(dir, "check-config");
  mkdirSync(hookConfig, { mode: 0o755 });
  mkdirSync(checkConfig, { mode: 0o755 });
  writeFileSync(join(checkConfig, "machines.ts"), 'import { buildMachine } from "offload";\nexport default [];\n', { mode: 0o644 });
  const setup: Setup = {
    host,
    dir,
    hookConfig,
    checkConfig,
    originalNixConf: readFileSync(hostPaths(dir).nixConf),
    rootHome,
    carried: readdirSync(rootHome).sort(),
  };
  await startNixDaemon(host, { env: daemonEnv(setup) });
  return setup;
}

async function tearDown(setup: Setup | undefined): Promise<void> {
  if (!setup) return;
  await stopHost(setup.host);
  removeDir(setup.dir);
}

/** `offload ARGS` as root inside the host. */
function offload(setup: Setup, args: string[]): Promise<HostResult> {
  return runInHost(setup.host, ["node", OFFLOAD, ...args], {
    env: { OFFLOAD_CONFIG_DIR: setup.checkConfig, OFFLOAD_CACHE_DIR: join(setup.dir, "cache"), OFFLOAD_STATE_DIR: join(setup.dir, "state") },
  });
}

async function daemonStep(setup: Setup): Promise<DaemonReport> {
  const result = await offload(setup, ["check", "--json"]);
  expect(result).toMatchObject({ stdout: expect.stringContaining('"daemon"') }); // else shows what it printed to stderr
  return (JSON.parse(result.stdout) as { daemon: DaemonReport }).daemon;
}

/** The hook the daemon runs for a non-root client's build, as the daemon logs it, and the hook's reply. */
async function hookRun(setup: Setup): Promise<{ hook: string | undefined; reply: string | undefined; output: string }> {
  const salt = `${Date.now()}-${Math.random()}`;
  const expression = `derivation { name = "install-probe"; salt = "${salt}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo > $out" ]; }`;
  const result = await runInHost(setup.host, ["nix-build", "-E", expression, "--no-out-link", "--max-jobs", "0", "-vvv"], {
    user: CLIENT,
    env: { NIX_REMOTE: "daemon" },
    timeoutMs: 60_000,
  });
  const output = result.stderr;
  expect(result.code).not.toBe(0);
  // 2.8: "unable to start any build", 2.26: "Unable to start any build", 2.34: "local builds are disabled (max-jobs = 0)".
  expect(output).toMatch(/[Uu]nable to start any build|local builds are disabled/);
  return { hook: /starting build hook '([^']*)'/.exec(output)?.[1], reply: /hook reply is '([^']*)'/.exec(output)?.[1], output };
}

/** Kills the daemon (by the pid offload reported, in the host's PID namespace), waits until it is gone (10 s at most), starts a new one with `env`. */
async function restartDaemon(setup: Setup, pid: number, env: Record<string, string> = {}): Promise<void> {
  const killed = await runInHost(setup.host, [
    "sh",
    "-c",
    `kill ${pid}; for i in $(seq 100); do kill -0 ${pid} 2>/dev/null || exit 0; sleep 0.1; done; exit 1`,
  ]);
  expect(killed).toMatchObject({ code: 0 });
  await startNixDaemon(setup.host, { env: daemonEnv(setup, env) });
}

/**
 * A plain `nix-build` (no --option) of a fresh derivation, with --max-jobs 0: it can only be
 * built by the hook. Shows that Nix started offload's hook, that the hook built it remotely
 * and landed it signed, and that the output is valid and intact in the host's store.
 */
async function remoteBuild(setup: Setup, builder: LabBuilder, who: string, options: { user?: string; env: Record<string, string> }): Promise<HostResult> {
  const salt = `${who}-${Date.now()}-${Math.random()}`;
  const expression = `derivation { name = "install-remote"; salt = "${salt}"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo $salt > $out" ]; }`;
  const result = await runInHost(setup.host, ["nix-build", "-E", expression, "--no-out-link", "--max-jobs", "0", "-vvv"], { ...options, timeoutMs: 120_000 });
  expect(result.stderr).toContain(`starting build hook '${OFFLOAD_HOOK}'`);
  expect(result.stderr).toContain("hook reply is 'accept'");
  expect(result.stderr).toContain("signature by");
  expect(result.code).toBe(0);
  const output = result.stdout.trim();
  expect(await runInHost(setup.host, ["nix-store", "--verify-path", output])).toMatchObject({ code: 0 });
  expect(await runInHost(setup.host, ["cat", output])).toMatchObject({ stdout: `${salt}\n` });
  // Registered with the signature of the builder that built it.
  const signer = builder.signingKey.split(":")[0]!;
  expect(await runInHost(setup.host, ["nix", "--extra-experimental-features", "nix-command", "path-info", "--sigs", output])).toMatchObject({
    code: 0,
    stdout: expect.stringContaining(`${signer}:`),
  });
  return result;
}

/** The environment offload's hook needs, for root's own nix-build. */
function hookEnv(setup: Setup, configDir: string): Record<string, string> {
  return { ...daemonEnv(setup), OFFLOAD_CONFIG_DIR: configDir };
}

const nixConf = (setup: Setup) => readFileSync(hostPaths(setup.dir).nixConf);
const HOST_TIMEOUT_MS = 60_000;

describe.each([
  ["2.34", "2.34.8", "/usr/bin/nix __build-remote"],
  ["2.8", "2.8.0", "/usr/libexec/nix/build-remote"],
] as const)("Nix %s: build-hook in nix.conf", (release, version, nixOwnHook) => {
  let setup: Setup;
  beforeAll(async () => {
    setup = await setUp(release);
  }, HOST_TIMEOUT_MS);
  afterAll(() => tearDown(setup));

  test("check fails, install adds the line, check says restart, a restart makes the daemon run the hook; uninstall restores nix.conf byte for byte", async () => {
    const before = await daemonStep(setup);
    expect(before).toMatchObject({ status: "fail", code: "daemon-hook-not-offload", facts: { nix: "nix-daemon", version, buildHook: null } });
    expect(before.detail).toContain("Nix's own build-remote (build-hook is not set)");
    expect(before.fix).toBe("offload install");
    expect(await hookRun(setup)).toMatchObject({ hook: nixOwnHook, reply: "decline-permanently" });

    const installed = await offload(setup, ["install"]);
    const line = `build-hook = ${OFFLOAD_HOOK} # added by offload install`;
    const lineNumber = setup.originalNixConf.toString().split("\n").length;
    // No systemd here: offload cannot restart a daemon started by hand, and says how.
    expect(installed).toMatchObject({ stdout: `/etc/nix/nix.conf: added line ${lineNumber}: ${line}\n`, code: 1 });
    expect(installed.stderr).toContain(`offload: nix-daemon ${version} (pid ${before.facts.pid}, not started by systemd) must be restarted to read the change`);
    expect(installed.stderr).toContain(`fix: restart nix-daemon as it was started: kill ${before.facts.pid}; nix-daemon &`);
    expect(nixConf(setup).toString()).toBe(`${setup.originalNixConf.toString()}${line}\n`);

    const stale = await daemonStep(setup);
    expect(stale).toMatchObject({ status: "fail", code: "daemon-restart-needed" });
    expect(stale.detail).toMatch(/before \/etc\/nix\/nix\.conf changed/);

    await restartDaemon(setup, before.facts.pid!);
    const after = await daemonStep(setup);
    expect(after).toMatchObject({ status: "ok", facts: { buildHook: OFFLOAD_HOOK, from: `/etc/nix/nix.conf:${lineNumber}` } });
    expect(await hookRun(setup)).toMatchObject({ hook: OFFLOAD_HOOK, reply: "decline-permanently" });

    const again = await offload(setup, ["install"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toBe(
      `nothing to change: nix-daemon ${version} (pid ${after.facts.pid}, not started by systemd) runs offload's hook (/etc/nix/nix.conf:${lineNumber})\n`,
    );
    expect(nixConf(setup).toString()).toBe(`${setup.originalNixConf.toString()}${line}\n`);

    const removed = await offload(setup, ["uninstall"]);
    expect(removed).toMatchObject({ stdout: `/etc/nix/nix.conf: removed line ${lineNumber}: ${line}\n`, code: 1 });
    expect(removed.stderr).toContain("must be restarted to stop running offload's hook");
    expect(nixConf(setup).equals(setup.originalNixConf)).toBe(true);
    await restartDaemon(setup, after.facts.pid!);
    expect(await daemonStep(setup)).toMatchObject({ status: "fail", code: "daemon-hook-not-offload" });
    expect((await hookRun(setup)).hook).toBe(nixOwnHook);

    const nothing = await offload(setup, ["uninstall"]);
    expect(nothing.code).toBe(0);
    expect(nothing.stdout).toMatch(/^nothing to remove: nix-daemon .* runs Nix's own build-remote \(build-hook is not set\)\n$/);
  }, 120_000);
});

describe("Nix 2.26: build-hook in a user config file, root's ~/.config/nix/nix.conf for install", () => {
  let lab: Lab;
  let setup: Setup;
  beforeAll(async () => {
    lab = await startTestLab({ builders: 1, rootSshConfig: false });
    setup = await setUp("2.26", [lab.dir]);
  }, LAB_UP_TIMEOUT_MS);
  afterAll(async () => {
    await tearDown(setup);
    await stopTestLab(lab);
  });

  test("build-hook in nix.conf is ignored by the real daemon, and check says so; a user config file is not", async () => {
    const line = `build-hook = ${OFFLOAD_HOOK}`;
    writeFileSync(hostPaths(setup.dir).nixConf, `${setup.originalNixConf.toString()}${line}\n`);
    const stale = await daemonStep(setup);
    await restartDaemon(setup, stale.facts.pid!);
    const ignored = await daemonStep(setup);
    expect(ignored).toMatchObject({ status: "fail", code: "daemon-hook-not-offload", facts: { version: "2.26.3", buildHook: null } });
    expect(ignored.detail).toContain(`runs Nix's own build-remote: Nix 2.25–2.33 ignore build-hook in nix.conf (/etc/nix/nix.conf:`);
    expect(ignored.fix).toBe("offload install");
    // The daemon agrees: it starts its own build-remote despite the line.
    expect((await hookRun(setup)).hook).toBe("/usr/bin/nix __build-remote");
    writeFileSync(hostPaths(setup.dir).nixConf, setup.originalNixConf);

    // A user config file is read after the reset, so 2.26 honours build-hook there (as root's ~/.config/nix/nix.conf).
    const userConf = join(setup.dir, "user-nix.conf");
    writeFileSync(userConf, `${line}\n`);
    await restartDaemon(setup, ignored.facts.pid!, { NIX_USER_CONF_FILES: userConf });
    const user = await daemonStep(setup);
    expect(user).toMatchObject({ status: "ok", facts: { buildHook: OFFLOAD_HOOK, from: `${userConf}:1` } });
    expect(await hookRun(setup)).toMatchObject({ hook: OFFLOAD_HOOK, reply: "decline-permanently" });
    await restartDaemon(setup, user.facts.pid!);
  }, 120_000);

  test("install writes root's ~/.config/nix/nix.conf and says how to restart the daemon; restarted so, a plain nix-build goes through offload to a lab builder, as the client through the daemon (without a warning) and as root without it; uninstall restores the files", async () => {
    const before = await daemonStep(setup);
    expect(before).toMatchObject({ status: "fail", code: "daemon-hook-not-offload", facts: { version: "2.26.3" } });
    expect(readdirSync(setup.rootHome).sort()).toEqual(setup.carried);

    const installed = await offload(setup, ["install"]);
    const line = nixConfLine(OFFLOAD_HOOK, ["/root/.config/nix", "/root/.config"]);
    expect(installed).toMatchObject({
      stdout: `/root/.config: created (a directory)\n/root/.config/nix: created (a directory)\n${USER_CONF}: added line 1: ${line}\n`,
      code: 1,
    });
    expect(installed.stderr).toContain(`offload: nix-daemon 2.26.3 (pid ${before.facts.pid}, not started by systemd) must be restarted to read the change`);
    expect(installed.stderr).toContain(`fix: restart nix-daemon as it was started: kill ${before.facts.pid}; nix-daemon &`);
    expect(readFileSync(join(setup.rootHome, ".config/nix/nix.conf"), "utf8")).toBe(`${line}\n`);
    expect([".config", ".config/nix", ".config/nix/nix.conf"].map((file) => statSync(join(setup.rootHome, file)).mode & 0o777)).toEqual([0o755, 0o755, 0o644]);
    expect(nixConf(setup).equals(setup.originalNixConf)).toBe(true);

    const stale = await daemonStep(setup);
    expect(stale).toMatchObject({ status: "fail", code: "daemon-restart-needed" });
    expect(stale.detail).toContain(`before ${USER_CONF} changed`);

    // What the fix says; the daemon's hook now has the lab's builder.
    await restartDaemon(setup, before.facts.pid!, { OFFLOAD_CONFIG_DIR: lab.configDir });
    const after = await daemonStep(setup);
    expect(after).toMatchObject({ status: "ok", facts: { buildHook: OFFLOAD_HOOK, from: `${USER_CONF}:1` } });
    expect(after.detail).toBe(`nix-daemon 2.26.3 (pid ${after.facts.pid}, not started by systemd) runs offload's hook (${USER_CONF}:1)`);

    // (a) The non-root client through the daemon. Its own Nix reads its own home's files, not
    // root's: it passes no build-hook on, so the daemon has nothing to warn it about.
    const client = await remoteBuild(setup, lab.builders[0]!, "client", { user: CLIENT, env: { NIX_REMOTE: "daemon" } });
    expect(client.stderr).not.toContain("ignoring the client-specified setting 'build-hook'");
    // (b) Root without the daemon: nix-build uses the store directly, reads the same file and runs the hook itself.
    await remoteBuild(setup, lab.builders[0]!, "root", { env: hookEnv(setup, lab.configDir) });

    const again = await offload(setup, ["install"]);
    expect(again).toMatchObject({ code: 0, stdout: `nothing to change: ${after.detail}\n` });

    // A HOME root does not own: Nix 2.26 takes root's home from /etc/passwd, and so does offload.
    await restartDaemon(setup, after.facts.pid!, { HOME: `/home/${CLIENT}` });
    const unowned = await daemonStep(setup);
    expect(unowned).toMatchObject({ status: "ok", facts: { buildHook: OFFLOAD_HOOK, from: `${USER_CONF}:1` } });
    expect(await hookRun(setup)).toMatchObject({ hook: OFFLOAD_HOOK, reply: "decline-permanently" });

    const removed = await offload(setup, ["uninstall"]);
    expect(removed).toMatchObject({
      stdout: [
        `${USER_CONF}: removed line 1: ${line}`,
        `${USER_CONF}: deleted (empty: offload install had created it)`,
        "/root/.config/nix: deleted (empty: offload install had created it)",
        "/root/.config: deleted (empty: offload install had created it)",
        "",
      ].join("\n"),
      code: 1,
    });
    expect(removed.stderr).toContain("must be restarted to stop running offload's hook");
    expect(readdirSync(setup.rootHome).sort()).toEqual(setup.carried);
    expect(nixConf(setup).equals(setup.originalNixConf)).toBe(true);
    await restartDaemon(setup, unowned.facts.pid!);
    expect(await daemonStep(setup)).toMatchObject({ status: "fail", code: "daemon-hook-not-offload" });
    expect((await hookRun(setup)).hook).toBe("/usr/bin/nix __build-remote");
    expect(await offload(setup, ["uninstall"])).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(/^nothing to remove: nix-daemon 2\.26\.3 .* runs Nix's own build-remote \(build-hook is not set\)\n$/),
    });
  }, 300_000);
});
