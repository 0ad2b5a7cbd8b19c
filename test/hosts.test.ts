// Lab hosts against the real things (root, namespaces, the Debian roots of scripts/roots.sh):
// each runs its own Nix on its own /nix/store, a master's nix-daemon serves a non-root
// client, and stopping a host leaves nothing of it running or mounted.
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { CLIENT_USER, hostPaths, onMachine, runInHost, runningHosts, startHost, startMasterHost, startNixDaemon, stopHost } from "../src/lab/index.js";
import type { Host, NixRelease } from "../src/lab/index.js";
import { isRunning, namespaceOf, processesInNamespaces } from "../src/lab/processes.js";
import { PACKAGE_ROOT } from "../src/package-root.js";
import { isValidPath } from "./support/nix.js";
import { startTicks, ticksSinceBoot } from "./support/proc-ticks.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const VERSIONS: [NixRelease, RegExp][] = [
  ["2.8", /^nix-store \(Nix\) 2\.8\.\d+$/],
  ["2.26", /^nix-store \(Nix\) 2\.26\.\d+$/],
  ["2.34", /^nix-store \(Nix\) 2\.34\.\d+$/],
];

let base: string;
const hosts = new Map<NixRelease, Host>();

function host(nix: NixRelease): Host {
  return hosts.get(nix)!;
}

beforeAll(async () => {
  base = makeSafeDir("hosts");
  for (const [nix] of VERSIONS) hosts.set(nix, await startHost({ name: `h${nix.replace(".", "-")}`, nix, dir: join(base, nix) }));
});

afterAll(async () => {
  for (const running of hosts.values()) await stopHost(running);
  if (base) removeDir(base);
});

test.each(VERSIONS)("a host of Nix %s runs that Nix", async (nix, version) => {
  const result = await runInHost(host(nix), ["nix-store", "--version"]);
  expect(result.code).toBe(0);
  expect(result.stdout.trim()).toMatch(version);
});

test("each host has its own /nix/store: a path added in one is valid there only", async () => {
  const content = `only in the 2.34 host ${randomBytes(8).toString("hex")}\n`;
  const added = await runInHost(host("2.34"), ["sh", "-c", 'f=$(mktemp -d)/data && cat > "$f" && nix-store --add "$f"'], { input: content });
  expect(added).toMatchObject({ code: 0, stderr: "" });
  const path = added.stdout.trim();
  expect(path).toMatch(/^\/nix\/store\/[0-9a-z]{32}-data$/);
  expect(readFileSync(onMachine(host("2.34"), path), "utf8")).toBe(content);
  for (const nix of ["2.8", "2.26"] as const) {
    expect((await runInHost(host(nix), ["nix-store", "--check-validity", path])).code).not.toBe(0);
    expect(existsSync(onMachine(host(nix), path))).toBe(false);
  }
  expect(isValidPath(path)).toBe(false); // nor on this machine
  expect(existsSync(path)).toBe(false);
});

test("in a Debian root, this machine's node and offload's package root are where they are outside", async () => {
  const result = await runInHost(host("2.26"), [
    "sh",
    "-c",
    `node --version && test -f ${PACKAGE_ROOT}/bin/offload-hook.js && head -1 ${PACKAGE_ROOT}/bin/offload-hook.js`,
  ]);
  expect(result).toMatchObject({ code: 0, stdout: `${process.version}\n#!/usr/bin/env node\n` });
});

test("a master host's nix-daemon serves its non-root client, who may reach the socket as a member of nix-users", async () => {
  const master = await startMasterHost({ dir: join(base, "master"), nix: "2.34" });
  try {
    const content = `from the client ${randomBytes(8).toString("hex")}\n`;
    const script = 'id -nG && f=$(mktemp -d)/client-data && cat > "$f" && nix-store --add "$f"';
    const added = await runInHost(master, ["sh", "-c", script], { user: CLIENT_USER, input: content, env: { NIX_REMOTE: "daemon" } });
    expect(added.code).toBe(0);
    const [groups, path] = added.stdout.trim().split("\n");
    expect(groups!.split(" ")).toEqual(expect.arrayContaining([CLIENT_USER, "nix-users"]));
    // The daemon (root) wrote it into the master's store.
    expect(statSync(onMachine(master, path!)).uid).toBe(0);
    expect(readFileSync(onMachine(master, path!), "utf8")).toBe(content);
    expect((await runInHost(master, ["nix-store", "--check-validity", path!])).code).toBe(0);
    expect(statSync(dirname(hostPaths(master.dir).daemonSocket)).mode & 0o777).toBe(0o770);
  } finally {
    await stopHost(master);
  }
});

test("stopping a host ends all of it (a daemon with its own mount namespace, a detached process) and leaves no mount", async () => {
  const doomed = await startHost({ name: "doomed", nix: "2.34", dir: join(base, "doomed") });
  await startNixDaemon(doomed);
  expect((await runInHost(doomed, ["sh", "-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 &"])).code).toBe(0);
  const pidNamespace = (await namespaceOf(doomed.anchorPid, "pid"))!;
  const mountNamespace = (await namespaceOf(doomed.anchorPid, "mnt"))!;
  const members = await processesInNamespaces([pidNamespace]);
  expect(members.length).toBeGreaterThanOrEqual(4); // the anchor, its sleep, the daemon, sleep 1000
  const mounts = readFileSync(`/proc/${doomed.anchorPid}/mountinfo`, "utf8");
  expect(mounts).toContain(` ${join(doomed.dir, "nix")} ${join(doomed.root, "nix")} `);

  const takenAt = ticksSinceBoot();
  const started = Date.now();
  await stopHost(doomed);
  expect(Date.now() - started).toBeLessThan(5000);
  for (const pid of members) expect(await isRunning(pid)).toBe(false);
  // Its namespaces' numbers may already be another test's host's: those processes started after.
  const left = await processesInNamespaces([pidNamespace, mountNamespace]);
  expect(left.filter((pid) => !((startTicks(pid) ?? 0) > takenAt))).toEqual([]);
  expect((await runningHosts()).map((running) => running.dir)).not.toContain(doomed.dir);
  expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(doomed.dir);
  expect(execFileSync("findmnt", ["--raw", "--noheadings", "--output", "TARGET,SOURCE"], { encoding: "utf8" })).not.toContain(doomed.dir);
  await stopHost(doomed); // again: nothing to do
});

test("a release whose Debian root was never built is refused with the command that builds it", async () => {
  const previous = process.env.OFFLOAD_ROOTS_DIR;
  process.env.OFFLOAD_ROOTS_DIR = join(base, "no-roots");
  mkdirSync(process.env.OFFLOAD_ROOTS_DIR);
  try {
    await expect(startHost({ name: "rootless", nix: "2.26", dir: join(base, "rootless") })).rejects.toMatchObject({
      code: "host-root-missing",
      fix: expect.stringContaining("bash scripts/roots.sh"),
    });
  } finally {
    if (previous === undefined) delete process.env.OFFLOAD_ROOTS_DIR;
    else process.env.OFFLOAD_ROOTS_DIR = previous;
  }
});
