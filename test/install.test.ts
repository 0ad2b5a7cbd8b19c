// `offload install` / `uninstall` with fakes (files under a temporary root, a recorded
// daemon, a recorded systemd): the file per version, what is printed, idempotence, exact
// reversal, refusals. The real daemons: install-e2e.test.ts.
import { afterEach, beforeEach, describe, expect, test } from "@jest/globals";
import { chmodSync, existsSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { eventText } from "../src/cli/install.js";
import { OffloadError } from "../src/errors.js";
import { install, nixConfLine, uninstall, XDG_NIX_CONF as XDG, type InstallEvent } from "../src/store/hook-install.js";
import { fakeNix, snapshot, writeTree, type FakeSpec } from "./support/fake-nix.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const HOOK = "/opt/offload/bin/offload-hook.js";
const NIX_CONF = "sandbox = false\nmax-jobs = 4\n";

let root: string;
beforeEach(() => {
  root = makeSafeDir("install");
  writeTree(root, { "/etc/nix/nix.conf": NIX_CONF, [HOOK]: "#!/usr/bin/env node\n" });
});
afterEach(() => removeDir(root));

/** Runs install or uninstall against a fake; returns the printed lines and the error, if any. */
async function run(action: typeof install, fake: ReturnType<typeof fakeNix>, dryRun = false, hook = HOOK): Promise<{ lines: string[]; error?: OffloadError }> {
  const events: InstallEvent[] = [];
  try {
    await action({ system: fake.system, hook, dryRun, say: (e) => events.push(e), restartWaitMs: 1000 });
    return { lines: events.map((e) => eventText(e, dryRun)) };
  } catch (error) {
    return { lines: events.map((e) => eventText(e, dryRun)), error: error as OffloadError };
  }
}

const nixConf = () => readFileSync(join(root, "etc/nix/nix.conf"), "utf8");
const xdgConf = () => readFileSync(join(root, XDG), "utf8");

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

describe("Nix 2.26 (2.25–2.33): the line in /etc/xdg/nix/nix.conf", () => {
  test("systemd: the line (and the directory nix/), restart; idempotent; uninstall restores the tree byte for byte", async () => {
    writeTree(root, { "/etc/xdg/user-dirs.conf": "enabled=True\n" });
    const before = snapshot(root);
    const fake = fakeNix(root, { version: "2.26.3", systemd: true });
    const first = await run(install, fake);
    expect(first.error).toBeUndefined();
    expect(first.lines).toEqual([
      "/etc/xdg/nix: created (a directory)",
      `${XDG}: added line 1: build-hook = ${HOOK} # added by offload install, which created this file and /etc/xdg/nix`,
      "ran: systemctl restart nix-daemon.service",
      `nix-daemon 2.26.3 (pid 101, nix-daemon.service) runs offload's hook (${XDG}:1)`,
    ]);
    expect(xdgConf()).toBe(`${nixConfLine(HOOK, ["/etc/xdg/nix"])}\n`);
    expect(statSync(join(root, "etc/xdg/nix")).mode & 0o777).toBe(0o755);
    expect(statSync(join(root, XDG)).mode & 0o777).toBe(0o644);
    expect(nixConf()).toBe(NIX_CONF);

    expect(await run(install, fake)).toEqual({ lines: [`nothing to change: nix-daemon 2.26.3 (pid 101, nix-daemon.service) runs offload's hook (${XDG}:1)`] });

    const removed = await run(uninstall, fake);
    expect(removed.error).toBeUndefined();
    expect(removed.lines).toEqual([
      `${XDG}: removed line 1: ${nixConfLine(HOOK, ["/etc/xdg/nix"])}`,
      `${XDG}: deleted (empty: offload install had created it)`,
      "/etc/xdg/nix: deleted (empty: offload install had created it)",
      "ran: systemctl restart nix-daemon.service",
      "nix-daemon 2.26.3 (pid 102, nix-daemon.service) runs Nix's own build-remote (build-hook is not set)",
    ]);
    expect(snapshot(root)).toEqual(before);
    expect(fake.systemctl).toEqual([["restart", "nix-daemon.service"], ["restart", "nix-daemon.service"]]);
  });

  test("what it created is recorded in the line: /etc/xdg too; kept when offload moves; a directory holding other files stays; a file of its own is edited exactly", async () => {
    const empty = snapshot(root);
    const fake = fakeNix(root, { version: "2.29.0", daemon: false });
    expect((await run(install, fake)).lines).toEqual([
      "/etc/xdg: created (a directory)",
      "/etc/xdg/nix: created (a directory)",
      `${XDG}: added line 1: ${nixConfLine(HOOK, ["/etc/xdg/nix", "/etc/xdg"])}`,
      `nix 2.29.0 (no nix-daemon runs: root's builds use the store directly) runs offload's hook (${XDG}:1)`,
    ]);
    // Offload moved: its line is replaced, still saying what install created.
    const moved = "/srv/offload/bin/offload-hook.js";
    writeTree(root, { [moved]: "#!/usr/bin/env node\n" });
    const again = await run(install, fake, false, moved);
    expect(again.lines.slice(0, 2)).toEqual([`${XDG}: removed line 1: ${nixConfLine(HOOK, ["/etc/xdg/nix", "/etc/xdg"])}`, `${XDG}: added line 1: ${nixConfLine(moved, ["/etc/xdg/nix", "/etc/xdg"])}`]);
    removeDir(join(root, "srv"));
    expect((await run(uninstall, fake)).lines.slice(0, 4)).toEqual([
      `${XDG}: removed line 1: ${nixConfLine(moved, ["/etc/xdg/nix", "/etc/xdg"])}`,
      `${XDG}: deleted (empty: offload install had created it)`,
      "/etc/xdg/nix: deleted (empty: offload install had created it)",
      "/etc/xdg: deleted (empty: offload install had created it)",
    ]);
    expect(snapshot(root)).toEqual(empty);

    // Someone else's file next to ours: the directories stay.
    await run(install, fake);
    writeTree(root, { "/etc/xdg/nix/registry.json": "{}\n" });
    expect((await run(uninstall, fake)).lines.slice(1, 3)).toEqual([`${XDG}: deleted (empty: offload install had created it)`, "left as it is: /etc/xdg/nix, which offload install had created and which holds other files now"]);
    expect(existsSync(join(root, "etc/xdg/nix/registry.json"))).toBe(true);
    removeDir(join(root, "etc/xdg"));

    // A file that was there: the line goes after its last (unterminated) line, and comes off exactly.
    writeTree(root, { [XDG]: "max-jobs = 2" });
    chmodSync(join(root, XDG), 0o600);
    const own = snapshot(root);
    expect((await run(install, fake)).lines[0]).toBe(`${XDG}: added line 2: ${nixConfLine(HOOK)}`);
    expect(xdgConf()).toBe(`max-jobs = 2\n${nixConfLine(HOOK)}`);
    expect(statSync(join(root, XDG)).mode & 0o777).toBe(0o600);
    expect((await run(uninstall, fake)).lines[0]).toBe(`${XDG}: removed line 2: ${nixConfLine(HOOK)}`);
    expect(snapshot(root)).toEqual(own);
  });

  test("without systemd: the line, then the exact command to restart the daemon; restarted so, it runs the hook", async () => {
    const before = snapshot(root);
    const fake = fakeNix(root, { version: "2.26.3" });
    const installed = await run(install, fake);
    expect(installed.lines).toEqual(["/etc/xdg: created (a directory)", "/etc/xdg/nix: created (a directory)", `${XDG}: added line 1: ${nixConfLine(HOOK, ["/etc/xdg/nix", "/etc/xdg"])}`]);
    expect(installed.error).toMatchObject({
      code: "daemon-restart-needed",
      message: "nix-daemon 2.26.3 (pid 100, not started by systemd) must be restarted to read the change, and systemd did not start it: offload cannot restart it",
      fix: "restart nix-daemon as it was started: kill 100; /usr/bin/nix-daemon --daemon &",
    });
    fake.restartByHand();
    expect(await run(install, fake)).toEqual({ lines: [`nothing to change: nix-daemon 2.26.3 (pid 101, not started by systemd) runs offload's hook (${XDG}:1)`] });
    const removed = await run(uninstall, fake);
    expect(removed.lines).toHaveLength(4);
    expect(removed.error).toMatchObject({ code: "daemon-restart-needed", message: expect.stringContaining("must be restarted to stop running offload's hook"), fix: "restart nix-daemon as it was started: kill 101; /usr/bin/nix-daemon --daemon &" });
    expect(snapshot(root)).toEqual(before);
  });

  test("refused with the reason and the fix: an environment that leaves the file out, a later setting of another hook, a line offload did not write", async () => {
    const before = snapshot(root);
    const outByFiles = await run(install, fakeNix(root, { version: "2.26.3", daemon: { env: { NIX_USER_CONF_FILES: "/srv/nix.conf" } } }));
    expect(outByFiles.error).toMatchObject({
      code: "user-conf-not-read",
      message: `nix-daemon 2.26.3 (pid 100, not started by systemd) does not read ${XDG}, where Nix 2.25–2.33 take build-hook from (they ignore it in nix.conf): NIX_USER_CONF_FILES="/srv/nix.conf" in nix-daemon's environment leaves it out`,
      fix: `remove NIX_USER_CONF_FILES from nix-daemon's environment (or add ${XDG} to it), restart nix-daemon, then run offload install again`,
    });
    const outByDirs = await run(install, fakeNix(root, { version: "2.26.3", daemon: false, env: { XDG_CONFIG_DIRS: "/opt/xdg" } }));
    expect(outByDirs.error).toMatchObject({ code: "user-conf-not-read", fix: "remove XDG_CONFIG_DIRS from root's environment (or add /etc/xdg to it), then run offload install again" });
    expect(outByDirs.error!.message).toContain('XDG_CONFIG_DIRS="/opt/xdg" in root\'s environment leaves it out');
    // Environments that still name it are fine.
    for (const env of [{ XDG_CONFIG_DIRS: "/etc/xdg/" }, { NIX_USER_CONF_FILES: `/srv/nix.conf:${XDG}` }]) {
      const dry = await run(install, fakeNix(root, { version: "2.26.3", daemon: { env } }), true);
      expect(dry.lines[2]).toBe(`${XDG}: would add line 1: ${nixConfLine(HOOK, ["/etc/xdg/nix", "/etc/xdg"])}`);
      expect(dry.error).toMatchObject({ code: "daemon-restart-needed" });
    }

    writeTree(root, { "/opt/xdg/nix/nix.conf": "build-hook = /opt/hook\n", "/root/.config/nix/nix.conf": "build-hook = /root/hook\n" });
    const earlierDir = await run(install, fakeNix(root, { version: "2.26.3", daemon: false, env: { XDG_CONFIG_DIRS: "/opt/xdg:/etc/xdg", HOME: "/nowhere" } }));
    expect(earlierDir.error).toMatchObject({ code: "build-hook-overridden", message: `/opt/xdg/nix/nix.conf:1 sets build-hook = /opt/hook, which overrides ${XDG}`, fix: "remove build-hook there, then run offload install again" });
    const rootsOwn = await run(install, fakeNix(root, { version: "2.26.3", systemd: true }));
    expect(rootsOwn.error).toMatchObject({ code: "build-hook-overridden", message: `/root/.config/nix/nix.conf:1 sets build-hook = /root/hook, which overrides ${XDG}` });
    removeDir(join(root, "root"));
    removeDir(join(root, "opt/xdg"));
    const nixConfig = await run(install, fakeNix(root, { version: "2.26.3", daemon: { env: { NIX_CONFIG: "build-hook = /x" } } }));
    expect(nixConfig.error).toMatchObject({
      code: "build-hook-overridden",
      message: `NIX_CONFIG in the environment of nix-daemon 2.26.3 (pid 100, not started by systemd) sets build-hook = /x, which overrides ${XDG}`,
      fix: `remove build-hook there (or set it to ${HOOK}), then run offload install again`,
    });
    expect(snapshot(root)).toEqual(before);

    writeTree(root, { [XDG]: "build-hook = /usr/local/bin/other-hook\n" });
    const foreign = await run(install, fakeNix(root, { version: "2.26.3", systemd: true }));
    expect(foreign.error).toMatchObject({ code: "build-hook-foreign", message: `${XDG}:1 already sets build-hook = /usr/local/bin/other-hook, a line offload install did not write: it leaves it alone` });
    expect((await run(uninstall, fakeNix(root, { version: "2.26.3", systemd: true }))).lines[0]).toBe(`left as it is: ${XDG}:1 sets build-hook = /usr/local/bin/other-hook, a line offload install did not write`);
    expect(xdgConf()).toBe("build-hook = /usr/local/bin/other-hook\n");
  });

  test("a build-hook line in nix.conf, which this Nix ignores, is no obstacle; uninstall removes offload's lines from both files", async () => {
    // Offload installed under Nix 2.24, then Nix upgraded to 2.26: its nix.conf line no longer counts.
    writeFileSync(join(root, "etc/nix/nix.conf"), `${NIX_CONF}${nixConfLine(HOOK)}\n`);
    const fake = fakeNix(root, { version: "2.26.3", systemd: true });
    expect((await run(install, fake)).lines.slice(-2)).toEqual(["ran: systemctl restart nix-daemon.service", `nix-daemon 2.26.3 (pid 101, nix-daemon.service) runs offload's hook (${XDG}:1)`]);
    expect((await run(uninstall, fake)).lines.slice(0, 2)).toEqual([`/etc/nix/nix.conf: removed line 3: ${nixConfLine(HOOK)}`, `${XDG}: removed line 1: ${nixConfLine(HOOK, ["/etc/xdg/nix", "/etc/xdg"])}`]);
    expect(nixConf()).toBe(NIX_CONF);
    expect(existsSync(join(root, "etc/xdg"))).toBe(false);
  });

  test("after an upgrade to 2.34 the line in /etc/xdg still counts (a user config file): nothing to change", async () => {
    const before = snapshot(root);
    await run(install, fakeNix(root, { version: "2.26.3", systemd: true }));
    const upgraded = fakeNix(root, { version: "2.34.8", systemd: true });
    expect((await run(install, upgraded)).lines).toEqual([`nothing to change: nix-daemon 2.34.8 (pid 100, nix-daemon.service) runs offload's hook (${XDG}:1)`]);
    expect((await run(uninstall, upgraded)).lines.at(-1)).toBe("nix-daemon 2.34.8 (pid 101, nix-daemon.service) runs Nix's own build-remote (build-hook is not set)");
    expect(snapshot(root)).toEqual(before);
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
    expect((await run(install, fake)).lines[0]).toBe(`/etc/nix/nix.conf: added line 1: ${nixConfLine(HOOK, [])}`);
    expect((await run(uninstall, fake)).lines.slice(0, 2)).toEqual([`/etc/nix/nix.conf: removed line 1: ${nixConfLine(HOOK, [])}`, "/etc/nix/nix.conf: deleted (empty: offload install had created it)"]);
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
    expect(overridden.error).toMatchObject({ code: "build-hook-overridden", message: "NIX_CONFIG in the environment of nix-daemon 2.34.8 (pid 100, not started by systemd) sets build-hook = /x, which overrides /etc/nix/nix.conf" });

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
    expect(dry.lines).toEqual([
      "/etc/xdg: would create (a directory)",
      "/etc/xdg/nix: would create (a directory)",
      `${XDG}: would add line 1: ${nixConfLine(HOOK, ["/etc/xdg/nix", "/etc/xdg"])}`,
      "would run: systemctl restart nix-daemon.service",
    ]);
    expect(fake.systemctl).toEqual([]);
    expect(snapshot(root)).toEqual(before);
    await run(install, fake);
    const installed = snapshot(root);
    expect((await run(uninstall, fake, true)).lines).toEqual([
      `${XDG}: would remove line 1: ${nixConfLine(HOOK, ["/etc/xdg/nix", "/etc/xdg"])}`,
      `${XDG}: would delete (empty: offload install had created it)`,
      "/etc/xdg/nix: would delete (empty: offload install had created it)",
      "/etc/xdg: would delete (empty: offload install had created it)",
      "would run: systemctl restart nix-daemon.service",
    ]);
    expect(snapshot(root)).toEqual(installed);
  });
});
