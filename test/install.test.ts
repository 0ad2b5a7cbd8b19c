// `offload install` / `uninstall` with fakes (files under a temporary root, a recorded
// daemon, a systemd whose restart applies the drop-in): the place per version, what is
// printed, idempotence, exact reversal, refusals. The real daemons: install-e2e.test.ts.
import { afterEach, beforeEach, describe, expect, test } from "@jest/globals";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { eventText } from "../src/cli/install.js";
import { OffloadError } from "../src/errors.js";
import { dropInText, install, nixConfLine, uninstall, type InstallEvent } from "../src/store/hook-install.js";
import { fakeNix, snapshot, writeTree, type FakeSpec } from "./support/fake-nix.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const HOOK = "/opt/offload/bin/offload-hook.js";
const DROP_IN = "/etc/systemd/system/nix-daemon.service.d/offload.conf";
const NIX_CONF = "sandbox = false\nmax-jobs = 4\n";

let root: string;
beforeEach(() => {
  root = makeSafeDir("install");
  writeTree(root, { "/etc/nix/nix.conf": NIX_CONF, [HOOK]: "#!/usr/bin/env node\n" });
  mkdirSync(join(root, "etc/systemd/system"), { recursive: true });
});
afterEach(() => removeDir(root));

/** Runs install or uninstall against a fake; returns the printed lines and the error, if any. */
async function run(action: typeof install, fake: ReturnType<typeof fakeNix>, dryRun = false): Promise<{ lines: string[]; error?: OffloadError }> {
  const events: InstallEvent[] = [];
  try {
    await action({ system: fake.system, hook: HOOK, dryRun, say: (e) => events.push(e), restartWaitMs: 1000 });
    return { lines: events.map((e) => eventText(e, dryRun)) };
  } catch (error) {
    return { lines: events.map((e) => eventText(e, dryRun)), error: error as OffloadError };
  }
}

const nixConf = () => readFileSync(join(root, "etc/nix/nix.conf"), "utf8");

describe.each([
  ["2.8.0", "2.8.0"],
  ["2.34.8", "2.34.8"],
  ["2.35.0", "2.35.0"],
])("Nix %s, systemd: one nix.conf line, restart", (version) => {
  const spec: FakeSpec = { version, systemd: true };

  test("install adds the line and restarts; again changes nothing; uninstall restores the tree byte for byte", async () => {
    const before = snapshot(root);
    const fake = fakeNix(root, spec);
    const first = await run(install, fake);
    expect(first.error).toBeUndefined();
    expect(first.lines).toEqual([
      `/etc/nix/nix.conf: added line 3: build-hook = ${HOOK} # added by offload install`,
      "ran: systemctl restart nix-daemon.service",
      `nix-daemon ${version} (pid 101, nix-daemon.service) runs offload's hook (/etc/nix/nix.conf:3)`,
    ]);
    expect(nixConf()).toBe(`${NIX_CONF}${nixConfLine(HOOK)}\n`);

    const second = await run(install, fake);
    expect(second).toEqual({ lines: [`nothing to change: nix-daemon ${version} (pid 101, nix-daemon.service) runs offload's hook (/etc/nix/nix.conf:3)`] });
    expect(fake.systemctl).toEqual([["restart", "nix-daemon.service"]]);

    const removed = await run(uninstall, fake);
    expect(removed.error).toBeUndefined();
    expect(removed.lines).toEqual([
      `/etc/nix/nix.conf: removed line 3: build-hook = ${HOOK} # added by offload install`,
      "ran: systemctl restart nix-daemon.service",
      `nix-daemon ${version} (pid 102, nix-daemon.service) runs Nix's own build-remote (build-hook is not set)`,
    ]);
    expect(snapshot(root)).toEqual(before);
    expect(await run(uninstall, fake)).toEqual({ lines: [`nothing to remove: nix-daemon ${version} (pid 102, nix-daemon.service) runs Nix's own build-remote (build-hook is not set)`] });
  });
});

describe("Nix 2.26 (2.25–2.33): the daemon's environment", () => {
  test("systemd: a drop-in setting NIX_CONFIG, daemon-reload, restart; idempotent; uninstall removes file and directory", async () => {
    const before = snapshot(root);
    const fake = fakeNix(root, { version: "2.26.3", systemd: true });
    const first = await run(install, fake);
    expect(first.error).toBeUndefined();
    expect(first.lines).toEqual([
      `${DROP_IN}: created:\n${dropInText(HOOK, true).trimEnd().replace(/^/gm, "    ")}`,
      "ran: systemctl daemon-reload",
      "ran: systemctl restart nix-daemon.service",
      "nix-daemon 2.26.3 (pid 101, nix-daemon.service) runs offload's hook (NIX_CONFIG)",
    ]);
    expect(readFileSync(join(root, DROP_IN), "utf8")).toBe(
      [
        "# Written by offload install; offload uninstall deletes this file",
        "# and its directory, which offload install created.",
        "# Nix 2.25-2.33 ignore build-hook in nix.conf but honour NIX_CONFIG in nix-daemon's environment.",
        "[Service]",
        `Environment="NIX_CONFIG=build-hook = ${HOOK}"`,
        "",
      ].join("\n"),
    );
    expect(fake.daemon()!.env.NIX_CONFIG).toBe(`build-hook = ${HOOK}`);
    expect(nixConf()).toBe(NIX_CONF);

    expect((await run(install, fake)).lines).toEqual(["nothing to change: nix-daemon 2.26.3 (pid 101, nix-daemon.service) runs offload's hook (NIX_CONFIG)"]);

    const removed = await run(uninstall, fake);
    expect(removed.error).toBeUndefined();
    expect(removed.lines[0]).toMatch(new RegExp(`^${DROP_IN}: deleted:\n    # Written by offload install`));
    expect(removed.lines.slice(1)).toEqual([
      "/etc/systemd/system/nix-daemon.service.d: deleted:\n    (empty: offload install had created it)",
      "ran: systemctl daemon-reload",
      "ran: systemctl restart nix-daemon.service",
      "nix-daemon 2.26.3 (pid 102, nix-daemon.service) runs Nix's own build-remote (build-hook is not set)",
    ]);
    expect(snapshot(root)).toEqual(before);
    expect(fake.systemctl).toEqual([["daemon-reload"], ["restart", "nix-daemon.service"], ["daemon-reload"], ["restart", "nix-daemon.service"]]);
  });

  test("a drop-in directory that existed stays; a drop-in offload did not write, or a NIX_CONFIG it did not set, is refused", async () => {
    writeTree(root, { "/etc/systemd/system/nix-daemon.service.d/limits.conf": "[Service]\nLimitNOFILE=4096\n" });
    const before = snapshot(root);
    const fake = fakeNix(root, { version: "2.26.3", systemd: true });
    expect((await run(install, fake)).error).toBeUndefined();
    expect(readFileSync(join(root, DROP_IN), "utf8")).toBe(dropInText(HOOK, false));
    expect((await run(uninstall, fake)).error).toBeUndefined();
    expect(snapshot(root)).toEqual(before);

    writeTree(root, { [DROP_IN]: "[Service]\nEnvironment=A=b\n" });
    const foreign = await run(install, fakeNix(root, { version: "2.26.3", systemd: true }));
    expect(foreign.error).toMatchObject({ code: "drop-in-foreign", message: `${DROP_IN} exists and offload install did not write it: it leaves it alone` });
    expect((await run(uninstall, fakeNix(root, { version: "2.26.3", systemd: true }))).lines).toEqual([`left as it is: ${DROP_IN}, which offload install did not write`, expect.stringMatching(/^nothing to remove: /)]);
    expect(readFileSync(join(root, DROP_IN), "utf8")).toBe("[Service]\nEnvironment=A=b\n");

    removeDir(join(root, "etc/systemd/system/nix-daemon.service.d"));
    const other = fakeNix(root, { version: "2.29.0", systemd: true, daemon: { env: { NIX_CONFIG: "max-jobs = 8" } } });
    const refused = await run(install, other);
    expect(refused.error).toMatchObject({ code: "daemon-nix-config-foreign", fix: `add the line "build-hook = ${HOOK}" to that NIX_CONFIG (systemctl edit nix-daemon.service), then systemctl restart nix-daemon.service` });
    expect(existsSync(join(root, DROP_IN))).toBe(false);
  });

  test("without systemd: the exact command to start the daemon with, and nothing changed", async () => {
    const before = snapshot(root);
    const byHand = await run(install, fakeNix(root, { version: "2.26.3" }));
    expect(byHand.lines).toEqual([]);
    expect(byHand.error).toMatchObject({
      code: "daemon-environment",
      message: "nix-daemon 2.26.3 (pid 100, not started by systemd) ignores build-hook in nix.conf (Nix 2.25–2.33 do) and reads it only from NIX_CONFIG in its environment, and systemd did not start it: offload cannot change its environment",
      fix: `restart it with NIX_CONFIG set: kill 100; env 'NIX_CONFIG=build-hook = ${HOOK}' /usr/bin/nix-daemon --daemon &`,
    });
    const daemonless = await run(install, fakeNix(root, { version: "2.26.3", daemon: false }));
    expect(daemonless.error).toMatchObject({ code: "root-environment", fix: `add to root's shell profile (e.g. /root/.profile): export 'NIX_CONFIG=build-hook = ${HOOK}'` });
    expect(daemonless.error!.message).toContain("no nix-daemon runs, so root's builds read NIX_CONFIG from root's own environment");
    expect(snapshot(root)).toEqual(before);
    // Root's shell has it: done.
    expect((await run(install, fakeNix(root, { version: "2.26.3", daemon: false, env: { NIX_CONFIG: `build-hook = ${HOOK}` } }))).lines).toEqual([
      "nothing to change: nix 2.26.3 (no nix-daemon runs: root's builds use the store directly) runs offload's hook (NIX_CONFIG)",
    ]);
  });

  test("after an upgrade to 2.34, the drop-in still works: nothing to change", async () => {
    const fake = fakeNix(root, { version: "2.26.3", systemd: true });
    await run(install, fake);
    const upgraded = fakeNix(root, { version: "2.34.8", systemd: true, daemon: { env: { NIX_CONFIG: `build-hook = ${HOOK}` } } });
    expect((await run(install, upgraded)).lines).toEqual(["nothing to change: nix-daemon 2.34.8 (pid 100, nix-daemon.service) runs offload's hook (NIX_CONFIG)"]);
  });
});

describe("nix.conf edits are exact and only ever offload's", () => {
  test("a file without a final newline, and a missing file, come back exactly", async () => {
    writeFileSync(join(root, "etc/nix/nix.conf"), "sandbox = false");
    chmodSync(join(root, "etc/nix/nix.conf"), 0o640);
    const before = snapshot(root);
    const fake = fakeNix(root, { version: "2.8.0", daemon: false });
    expect((await run(install, fake)).lines).toEqual([`/etc/nix/nix.conf: added line 2: ${nixConfLine(HOOK)}`, "nix 2.8.0 (no nix-daemon runs: root's builds use the store directly) runs offload's hook (/etc/nix/nix.conf:2)"]);
    expect(nixConf()).toBe(`sandbox = false\n${nixConfLine(HOOK)}`);
    expect(statSync(join(root, "etc/nix/nix.conf")).mode & 0o777).toBe(0o640);
    await run(uninstall, fake);
    expect(snapshot(root)).toEqual(before);

    removeDir(join(root, "etc/nix/nix.conf"));
    const empty = snapshot(root);
    expect((await run(install, fake)).lines[0]).toBe(`/etc/nix/nix.conf: added line 1: ${nixConfLine(HOOK, true)}`);
    expect((await run(uninstall, fake)).lines.slice(0, 2)).toEqual([`/etc/nix/nix.conf: removed line 1: ${nixConfLine(HOOK, true)}`, "/etc/nix/nix.conf: deleted:\n    (empty: offload install had created it)"]);
    expect(snapshot(root)).toEqual(empty);
  });

  test("includes stay as they are: offload writes only in nix.conf itself", async () => {
    writeTree(root, { "/etc/nix/nix.conf": "include local.conf\n!include missing.conf\n", "/etc/nix/local.conf": "max-jobs = 2\n" });
    const before = snapshot(root);
    const fake = fakeNix(root, { version: "2.34.8", daemon: false });
    expect((await run(install, fake)).lines[0]).toBe(`/etc/nix/nix.conf: added line 3: ${nixConfLine(HOOK)}`);
    expect((await run(uninstall, fake)).lines[0]).toBe(`/etc/nix/nix.conf: removed line 3: ${nixConfLine(HOOK)}`);
    expect(snapshot(root)).toEqual(before);
  });

  test("offload moved: its own line is replaced in place of keeping two", async () => {
    writeFileSync(join(root, "etc/nix/nix.conf"), `a = 1\n${nixConfLine("/old/offload/bin/offload-hook.js")}\nb = 2\n`);
    const result = await run(install, fakeNix(root, { version: "2.34.8", daemon: false }));
    expect(result.lines.slice(0, 2)).toEqual([`/etc/nix/nix.conf: removed line 2: ${nixConfLine("/old/offload/bin/offload-hook.js")}`, `/etc/nix/nix.conf: added line 3: ${nixConfLine(HOOK)}`]);
    expect(nixConf()).toBe(`a = 1\nb = 2\n${nixConfLine(HOOK)}\n`);
  });

  test("a build-hook line offload did not write: install refuses and says why; uninstall leaves it", async () => {
    writeFileSync(join(root, "etc/nix/nix.conf"), "build-hook = /usr/libexec/nix/build-remote\n");
    const before = snapshot(root);
    const refused = await run(install, fakeNix(root, { version: "2.34.8", systemd: true }));
    expect(refused.error).toMatchObject({
      code: "build-hook-foreign",
      message: "/etc/nix/nix.conf:1 already sets build-hook = /usr/libexec/nix/build-remote, a line offload install did not write: it leaves it alone",
      fix: "remove or comment out that line, then run offload install again",
    });
    const left = await run(uninstall, fakeNix(root, { version: "2.34.8", systemd: true }));
    expect(left.lines[0]).toBe("left as it is: /etc/nix/nix.conf:1 sets build-hook = /usr/libexec/nix/build-remote, a line offload install did not write");
    expect(snapshot(root)).toEqual(before);
    // The same value offload would write, set by hand: nothing to do, and uninstall keeps it.
    writeFileSync(join(root, "etc/nix/nix.conf"), `build-hook = ${HOOK}\n`);
    expect((await run(install, fakeNix(root, { version: "2.34.8" }))).lines).toEqual([expect.stringMatching(/^nothing to change: .* runs offload's hook \(\/etc\/nix\/nix\.conf:1\)$/)]);
    expect((await run(uninstall, fakeNix(root, { version: "2.34.8" }))).lines.at(-1)).toMatch(/still runs offload's hook, set at \/etc\/nix\/nix\.conf:1, which offload install did not write$/);
  });

  test("refused: a NIX_CONFIG that overrides nix.conf, a symlinked nix.conf, an unsupported Nix, not root", async () => {
    const overridden = await run(install, fakeNix(root, { version: "2.34.8", daemon: { env: { NIX_CONFIG: "build-hook = /x" } } }));
    expect(overridden.error).toMatchObject({ code: "build-hook-overridden", message: "NIX_CONFIG in the environment of nix-daemon 2.34.8 (pid 100, not started by systemd) sets build-hook = /x, which overrides nix.conf" });

    writeTree(root, { "/etc/static/nix.conf": NIX_CONF });
    removeDir(join(root, "etc/nix/nix.conf"));
    symlinkSync("../static/nix.conf", join(root, "etc/nix/nix.conf"));
    expect((await run(install, fakeNix(root, { version: "2.34.8" }))).error).toMatchObject({ code: "nix-conf-managed" });

    const lix = await run(install, fakeNix(root, { version: "Lix 2.94.0" }));
    expect(lix.error).toMatchObject({ code: "nix-version-unsupported" });
    expect(lix.error!.message).toMatch(/Cap'n Proto/);

    const fake = fakeNix(root, { version: "2.34.8" });
    expect((await run(install, { ...fake, system: { ...fake.system, uid: 1000 } })).error).toMatchObject({ code: "permission-denied", fix: "run it as root (or see what it would do with --dry-run)" });
  });

  test("--dry-run says what would change and changes nothing", async () => {
    const before = snapshot(root);
    const fake = fakeNix(root, { version: "2.26.3", systemd: true });
    const dry = await run(install, fake, true);
    expect(dry.lines).toEqual([`${DROP_IN}: would create:\n${dropInText(HOOK, true).trimEnd().replace(/^/gm, "    ")}`, "would run: systemctl daemon-reload", "would run: systemctl restart nix-daemon.service"]);
    expect(fake.systemctl).toEqual([]);
    expect(snapshot(root)).toEqual(before);
  });
});

// systemd's own parser on the drop-in, also with a hook path that needs quoting and escaping.
const analyze = spawnSync("systemd-analyze", ["--version"]).status === 0;
(analyze ? test : test.skip)("systemd-analyze verify accepts the drop-in", () => {
  const unitDir = join(root, "etc/systemd/system");
  mkdirSync(join(unitDir, "nix-daemon.service.d"));
  writeTree(root, { "/usr/bin/nix-daemon": "#!/bin/sh\n" });
  chmodSync(join(root, "usr/bin/nix-daemon"), 0o755);
  // Debian's own unit (nix-setup-systemd) where it is installed.
  const debian = "/lib/systemd/system/nix-daemon.service";
  writeFileSync(join(unitDir, "nix-daemon.service"), existsSync(debian) ? readFileSync(debian) : "[Unit]\nDescription=Nix Daemon\n[Service]\nExecStart=@/usr/bin/nix-daemon nix-daemon --daemon\nKillMode=process\n");
  writeFileSync(join(unitDir, "nix-daemon.service.d/offload.conf"), dropInText('/opt/off load/50%"x\\y/bin/offload-hook.js', true));
  const verified = spawnSync("systemd-analyze", ["verify", `--root=${root}`, "nix-daemon.service"], { encoding: "utf8" });
  // Without a booted system it misses sysinit.target; any complaint about our file would name it.
  expect(verified.stderr).not.toMatch(/offload\.conf/);
  writeFileSync(join(unitDir, "nix-daemon.service.d/offload.conf"), '[Service]\nEnvironment="NIX_CONFIG=unbalanced\n');
  expect(spawnSync("systemd-analyze", ["verify", `--root=${root}`, "nix-daemon.service"], { encoding: "utf8" }).stderr).toMatch(/offload\.conf:2: Invalid syntax/);
});
