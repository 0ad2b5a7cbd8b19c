// `offload install` / `uninstall` with fakes (files under a temporary root, a recorded
// daemon, a recorded systemd): the file per version, what is printed, idempotence, exact
// reversal, refusals. The real daemons: install-e2e.test.ts.
import { afterEach, beforeEach, describe, expect, test } from "@jest/globals";
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { eventText } from "../src/cli/install.js";
import { OffloadError } from "../src/errors.js";
import { install, nixConfLine, uninstall, type InstallEvent } from "../src/store/hook-install.js";
import { fakeNix, snapshot, writeTree, type FakeSpec } from "./support/fake-nix.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const HOOK = "/opt/offload/bin/offload-hook.js";
const NIX_CONF = "sandbox = false\nmax-jobs = 4\n";
/** Root's own user config file: the fakes' daemon has no HOME (as under systemd) and root's home is /root. */
const USER_CONF = "/root/.config/nix/nix.conf";
/** What install creates for it under an empty /root, deepest first. */
const CREATED = ["/root/.config/nix", "/root/.config"];

let root: string;
beforeEach(() => {
  root = makeSafeDir("install");
  writeTree(root, { "/etc/nix/nix.conf": NIX_CONF, [HOOK]: "#!/usr/bin/env node\n" });
  mkdirSync(join(root, "root"), { mode: 0o700 });
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
const userConf = () => readFileSync(join(root, USER_CONF), "utf8");

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
    expect(await run(uninstall, fake)).toEqual({
      lines: [`nothing to remove: nix-daemon ${version} (pid 102, nix-daemon.service) runs Nix's own build-remote (build-hook is not set)`],
    });
  });
});

describe("Nix 2.26 (2.25–2.33): the line in root's ~/.config/nix/nix.conf", () => {
  test("systemd: the line (and the directory nix/), restart; idempotent; uninstall restores the tree byte for byte; nothing system-wide", async () => {
    writeTree(root, { "/root/.config/htop/htoprc": "color_scheme=0\n" });
    const before = snapshot(root);
    const fake = fakeNix(root, { version: "2.26.3", systemd: true });
    const first = await run(install, fake);
    expect(first.error).toBeUndefined();
    expect(first.lines).toEqual([
      "/root/.config/nix: created (a directory)",
      `${USER_CONF}: added line 1: build-hook = ${HOOK} # added by offload install, which created this file and /root/.config/nix`,
      "ran: systemctl restart nix-daemon.service",
      `nix-daemon 2.26.3 (pid 101, nix-daemon.service) runs offload's hook (${USER_CONF}:1)`,
    ]);
    expect(userConf()).toBe(`${nixConfLine(HOOK, ["/root/.config/nix"])}\n`);
    expect(statSync(join(root, "root/.config/nix")).mode & 0o777).toBe(0o755);
    expect(statSync(join(root, USER_CONF)).mode & 0o777).toBe(0o644);
    expect(nixConf()).toBe(NIX_CONF);
    expect(existsSync(join(root, "etc/xdg"))).toBe(false);

    expect(await run(install, fake)).toEqual({
      lines: [`nothing to change: nix-daemon 2.26.3 (pid 101, nix-daemon.service) runs offload's hook (${USER_CONF}:1)`],
    });

    const removed = await run(uninstall, fake);
    expect(removed.error).toBeUndefined();
    expect(removed.lines).toEqual([
      `${USER_CONF}: removed line 1: ${nixConfLine(HOOK, ["/root/.config/nix"])}`,
      `${USER_CONF}: deleted (empty: offload install had created it)`,
      "/root/.config/nix: deleted (empty: offload install had created it)",
      "ran: systemctl restart nix-daemon.service",
      "nix-daemon 2.26.3 (pid 102, nix-daemon.service) runs Nix's own build-remote (build-hook is not set)",
    ]);
    expect(snapshot(root)).toEqual(before);
    expect(fake.systemctl).toEqual([
      ["restart", "nix-daemon.service"],
      ["restart", "nix-daemon.service"],
    ]);
  });

  test("root's home is the daemon's: its HOME (owned by root), else its passwd entry's; XDG_CONFIG_HOME; a HOME of \"/root/\" names the same file", async () => {
    writeTree(root, { "/etc/passwd": "root:x:0:0:root:/var/root:/bin/bash\n" });
    mkdirSync(join(root, "var/root"), { recursive: true, mode: 0o700 });
    mkdirSync(join(root, "srv/home"), { recursive: true, mode: 0o700 });
    const target = async (env: Record<string, string>) =>
      (await run(install, fakeNix(root, { version: "2.26.3", daemon: { env } }), true)).lines.find((line) => line.includes("would add line"));
    expect(await target({})).toBe(`/var/root/.config/nix/nix.conf: would add line 1: ${nixConfLine(HOOK, ["/var/root/.config/nix", "/var/root/.config"])}`);
    expect(await target({ HOME: "/srv/home" })).toBe(
      `/srv/home/.config/nix/nix.conf: would add line 1: ${nixConfLine(HOOK, ["/srv/home/.config/nix", "/srv/home/.config"])}`,
    );
    expect(await target({ XDG_CONFIG_HOME: "/srv/home/config" })).toBe(
      `/srv/home/config/nix/nix.conf: would add line 1: ${nixConfLine(HOOK, ["/srv/home/config/nix", "/srv/home/config"])}`,
    );
    expect(await target({ HOME: "/root/" })).toBe(`${USER_CONF}: would add line 1: ${nixConfLine(HOOK, ["/root/.config/nix", "/root/.config"])}`);
  });

  test("what it created is recorded in the line: ~/.config too; kept when offload moves; a directory holding other files stays; a file of its own is edited exactly", async () => {
    const empty = snapshot(root);
    const fake = fakeNix(root, { version: "2.29.0", daemon: false });
    expect((await run(install, fake)).lines).toEqual([
      "/root/.config: created (a directory)",
      "/root/.config/nix: created (a directory)",
      `${USER_CONF}: added line 1: ${nixConfLine(HOOK, CREATED)}`,
      `nix 2.29.0 (no nix-daemon runs: root's builds use the store directly) runs offload's hook (${USER_CONF}:1)`,
    ]);
    // Offload moved: its line is replaced, still saying what install created.
    const moved = "/srv/offload/bin/offload-hook.js";
    writeTree(root, { [moved]: "#!/usr/bin/env node\n" });
    const again = await run(install, fake, false, moved);
    expect(again.lines.slice(0, 2)).toEqual([
      `${USER_CONF}: removed line 1: ${nixConfLine(HOOK, CREATED)}`,
      `${USER_CONF}: added line 1: ${nixConfLine(moved, CREATED)}`,
    ]);
    removeDir(join(root, "srv"));
    expect((await run(uninstall, fake)).lines.slice(0, 4)).toEqual([
      `${USER_CONF}: removed line 1: ${nixConfLine(moved, CREATED)}`,
      `${USER_CONF}: deleted (empty: offload install had created it)`,
      "/root/.config/nix: deleted (empty: offload install had created it)",
      "/root/.config: deleted (empty: offload install had created it)",
    ]);
    expect(snapshot(root)).toEqual(empty);

    // Someone else's file next to ours: the directories stay.
    await run(install, fake);
    writeTree(root, { "/root/.config/nix/registry.json": "{}\n" });
    expect((await run(uninstall, fake)).lines.slice(1, 3)).toEqual([
      `${USER_CONF}: deleted (empty: offload install had created it)`,
      "left as it is: /root/.config/nix, which offload install had created and which holds other files now",
    ]);
    expect(existsSync(join(root, "root/.config/nix/registry.json"))).toBe(true);
    removeDir(join(root, "root/.config"));

    // A file that was there: the line goes after its last (unterminated) line, and comes off exactly.
    writeTree(root, { [USER_CONF]: "max-jobs = 2" });
    chmodSync(join(root, USER_CONF), 0o600);
    const own = snapshot(root);
    expect((await run(install, fake)).lines[0]).toBe(`${USER_CONF}: added line 2: ${nixConfLine(HOOK)}`);
    expect(userConf()).toBe(`max-jobs = 2\n${nixConfLine(HOOK)}`);
    expect(statSync(join(root, USER_CONF)).mode & 0o777).toBe(0o600);
    expect((await run(uninstall, fake)).lines[0]).toBe(`${USER_CONF}: removed line 2: ${nixConfLine(HOOK)}`);
    expect(snapshot(root)).toEqual(own);
  });

  test("without systemd: the line, then the exact command to restart the daemon; restarted so, it runs the hook", async () => {
    const before = snapshot(root);
    const fake = fakeNix(root, { version: "2.26.3" });
    const installed = await run(install, fake);
    expect(installed.lines).toEqual([
      "/root/.config: created (a directory)",
      "/root/.config/nix: created (a directory)",
      `${USER_CONF}: added line 1: ${nixConfLine(HOOK, CREATED)}`,
    ]);
    expect(installed.error).toMatchObject({
      code: "daemon-restart-needed",
      message:
        "nix-daemon 2.26.3 (pid 100, not started by systemd) must be restarted to read the change, and systemd did not start it: offload cannot restart it",
      fix: "restart nix-daemon as it was started: kill 100; /usr/bin/nix-daemon --daemon &",
    });
    fake.restartByHand();
    expect(await run(install, fake)).toEqual({
      lines: [`nothing to change: nix-daemon 2.26.3 (pid 101, not started by systemd) runs offload's hook (${USER_CONF}:1)`],
    });
    const removed = await run(uninstall, fake);
    expect(removed.lines).toHaveLength(4);
    expect(removed.error).toMatchObject({
      code: "daemon-restart-needed",
      message: expect.stringContaining("must be restarted to stop running offload's hook"),
      fix: "restart nix-daemon as it was started: kill 101; /usr/bin/nix-daemon --daemon &",
    });
    expect(snapshot(root)).toEqual(before);
  });

  test("refused with the reason and the fix: an environment that leaves the file out, a later setting of another hook, a line offload did not write", async () => {
    const before = snapshot(root);
    const outByFiles = await run(install, fakeNix(root, { version: "2.26.3", daemon: { env: { NIX_USER_CONF_FILES: "/srv/nix.conf" } } }));
    expect(outByFiles.error).toMatchObject({
      code: "user-conf-not-read",
      message: `nix-daemon 2.26.3 (pid 100, not started by systemd) does not read ${USER_CONF}, where Nix 2.25–2.33 take build-hook from (they ignore it in nix.conf): NIX_USER_CONF_FILES="/srv/nix.conf" in nix-daemon's environment leaves it out`,
      fix: `remove NIX_USER_CONF_FILES from nix-daemon's environment (or add ${USER_CONF} to it), restart nix-daemon, then run offload install again`,
    });
    const rootShell = await run(install, fakeNix(root, { version: "2.26.3", daemon: false, env: { NIX_USER_CONF_FILES: "" } }));
    expect(rootShell.error).toMatchObject({
      code: "user-conf-not-read",
      fix: `remove NIX_USER_CONF_FILES from root's environment (or add ${USER_CONF} to it), then run offload install again`,
    });
    // Environments that still name it are fine; XDG_CONFIG_DIRS does not matter.
    for (const env of [{ XDG_CONFIG_DIRS: "/opt/xdg" }, { NIX_USER_CONF_FILES: `/srv/nix.conf:${USER_CONF}` }]) {
      const dry = await run(install, fakeNix(root, { version: "2.26.3", daemon: { env } }), true);
      expect(dry.lines[2]).toBe(`${USER_CONF}: would add line 1: ${nixConfLine(HOOK, CREATED)}`);
      expect(dry.error).toMatchObject({ code: "daemon-restart-needed" });
    }

    // Nix applies NIX_USER_CONF_FILES' files last to first: /srv/later.conf after root's.
    writeTree(root, { "/srv/later.conf": "build-hook = /srv/hook\n" });
    const later = await run(install, fakeNix(root, { version: "2.26.3", daemon: false, env: { NIX_USER_CONF_FILES: `/srv/later.conf:${USER_CONF}` } }));
    expect(later.error).toMatchObject({
      code: "build-hook-overridden",
      message: `/srv/later.conf:1 sets build-hook = /srv/hook, which overrides ${USER_CONF}`,
      fix: "remove build-hook there, then run offload install again",
    });
    removeDir(join(root, "srv"));
    const nixConfig = await run(install, fakeNix(root, { version: "2.26.3", daemon: { env: { NIX_CONFIG: "build-hook = /x" } } }));
    expect(nixConfig.error).toMatchObject({
      code: "build-hook-overridden",
      message: `NIX_CONFIG in the environment of nix-daemon 2.26.3 (pid 100, not started by systemd) sets build-hook = /x, which overrides ${USER_CONF}`,
      fix: `remove build-hook there (or set it to ${HOOK}), then run offload install again`,
    });
    expect(snapshot(root)).toEqual(before);

    // Someone else's hook, in the file or in one applied before it (/etc/xdg): ours would override it.
    for (const file of [USER_CONF, "/etc/xdg/nix/nix.conf"]) {
      writeTree(root, { [file]: "build-hook = /usr/local/bin/other-hook\n" });
      const foreign = await run(install, fakeNix(root, { version: "2.26.3", systemd: true }));
      expect(foreign.error).toMatchObject({
        code: "build-hook-foreign",
        message: `${file}:1 already sets build-hook = /usr/local/bin/other-hook, a line offload install did not write: it leaves it alone`,
      });
      expect((await run(uninstall, fakeNix(root, { version: "2.26.3", systemd: true }))).lines[0]).toBe(
        `left as it is: ${file}:1 sets build-hook = /usr/local/bin/other-hook, a line offload install did not write`,
      );
      expect(readFileSync(join(root, file), "utf8")).toBe("build-hook = /usr/local/bin/other-hook\n");
      removeDir(join(root, file));
    }
  });

  test("a build-hook line in nix.conf, which this Nix ignores, is no obstacle; uninstall removes offload's lines from nix.conf and every user config file", async () => {
    // Offload installed under Nix 2.24, then Nix upgraded to 2.26: its nix.conf line no longer counts.
    writeFileSync(join(root, "etc/nix/nix.conf"), `${NIX_CONF}${nixConfLine(HOOK)}\n`);
    const fake = fakeNix(root, { version: "2.26.3", systemd: true });
    expect((await run(install, fake)).lines.slice(-2)).toEqual([
      "ran: systemctl restart nix-daemon.service",
      `nix-daemon 2.26.3 (pid 101, nix-daemon.service) runs offload's hook (${USER_CONF}:1)`,
    ]);
    // A line of offload's in another user config file (an earlier offload wrote /etc/xdg's) goes too.
    writeTree(root, { "/etc/xdg/nix/nix.conf": `max-jobs = 2\n${nixConfLine(HOOK)}\n` });
    expect((await run(uninstall, fake)).lines.slice(0, 6)).toEqual([
      `/etc/nix/nix.conf: removed line 3: ${nixConfLine(HOOK)}`,
      `${USER_CONF}: removed line 1: ${nixConfLine(HOOK, CREATED)}`,
      `${USER_CONF}: deleted (empty: offload install had created it)`,
      "/root/.config/nix: deleted (empty: offload install had created it)",
      "/root/.config: deleted (empty: offload install had created it)",
      `/etc/xdg/nix/nix.conf: removed line 2: ${nixConfLine(HOOK)}`,
    ]);
    expect(nixConf()).toBe(NIX_CONF);
    expect(existsSync(join(root, "root/.config"))).toBe(false);
    expect(readFileSync(join(root, "etc/xdg/nix/nix.conf"), "utf8")).toBe("max-jobs = 2\n");
  });

  test("after an upgrade to 2.34 the line in root's ~/.config/nix/nix.conf still counts (a user config file): nothing to change", async () => {
    const before = snapshot(root);
    await run(install, fakeNix(root, { version: "2.26.3", systemd: true }));
    const upgraded = fakeNix(root, { version: "2.34.8", systemd: true });
    expect((await run(install, upgraded)).lines).toEqual([
      `nothing to change: nix-daemon 2.34.8 (pid 100, nix-daemon.service) runs offload's hook (${USER_CONF}:1)`,
    ]);
    expect((await run(uninstall, upgraded)).lines.at(-1)).toBe(
      "nix-daemon 2.34.8 (pid 101, nix-daemon.service) runs Nix's own build-remote (build-hook is not set)",
    );
    expect(snapshot(root)).toEqual(before);
  });
});

describe("nix.conf edits are exact and only ever offload's", () => {
  test("a file without a final newline, and a missing file, come back exactly", async () => {
    writeFileSync(join(root, "etc/nix/nix.conf"), "sandbox = false");
    chmodSync(join(root, "etc/nix/nix.conf"), 0o640);
    const before = snapshot(root);
    const fake = fakeNix(root, { version: "2.8.0", daemon: false });
    expect((await run(install, fake)).lines).toEqual([
      `/etc/nix/nix.conf: added line 2: ${nixConfLine(HOOK)}`,
      "nix 2.8.0 (no nix-daemon runs: root's builds use the store directly) runs offload's hook (/etc/nix/nix.conf:2)",
    ]);
    expect(nixConf()).toBe(`sandbox = false\n${nixConfLine(HOOK)}`);
    expect(statSync(join(root, "etc/nix/nix.conf")).mode & 0o777).toBe(0o640);
    await run(uninstall, fake);
    expect(snapshot(root)).toEqual(before);

    removeDir(join(root, "etc/nix/nix.conf"));
    const empty = snapshot(root);
    expect((await run(install, fake)).lines[0]).toBe(`/etc/nix/nix.conf: added line 1: ${nixConfLine(HOOK, [])}`);
    expect((await run(uninstall, fake)).lines.slice(0, 2)).toEqual([
      `/etc/nix/nix.conf: removed line 1: ${nixConfLine(HOOK, [])}`,
      "/etc/nix/nix.conf: deleted (empty: offload install had created it)",
    ]);
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
    expect(result.lines.slice(0, 2)).toEqual([
      `/etc/nix/nix.conf: removed line 2: ${nixConfLine("/old/offload/bin/offload-hook.js")}`,
      `/etc/nix/nix.conf: added line 3: ${nixConfLine(HOOK)}`,
    ]);
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
    expect((await run(install, fakeNix(root, { version: "2.34.8" }))).lines).toEqual([
      expect.stringMatching(/^nothing to change: .* runs offload's hook \(\/etc\/nix\/nix\.conf:1\)$/),
    ]);
    expect((await run(uninstall, fakeNix(root, { version: "2.34.8" }))).lines.at(-1)).toMatch(
      /still runs offload's hook, set at \/etc\/nix\/nix\.conf:1, which offload install did not write$/,
    );
  });

  test("refused: a NIX_CONFIG that overrides nix.conf, a symlinked nix.conf, an unsupported Nix, not root", async () => {
    const overridden = await run(install, fakeNix(root, { version: "2.34.8", daemon: { env: { NIX_CONFIG: "build-hook = /x" } } }));
    expect(overridden.error).toMatchObject({
      code: "build-hook-overridden",
      message: "NIX_CONFIG in the environment of nix-daemon 2.34.8 (pid 100, not started by systemd) sets build-hook = /x, which overrides /etc/nix/nix.conf",
    });

    writeTree(root, { "/etc/static/nix.conf": NIX_CONF });
    removeDir(join(root, "etc/nix/nix.conf"));
    symlinkSync("../static/nix.conf", join(root, "etc/nix/nix.conf"));
    expect((await run(install, fakeNix(root, { version: "2.34.8" }))).error).toMatchObject({ code: "nix-conf-managed" });

    const lix = await run(install, fakeNix(root, { version: "Lix 2.94.0" }));
    expect(lix.error).toMatchObject({ code: "nix-version-unsupported" });
    expect(lix.error!.message).toMatch(/Cap'n Proto/);

    const fake = fakeNix(root, { version: "2.34.8" });
    expect((await run(install, { ...fake, system: { ...fake.system, uid: 1000 } })).error).toMatchObject({
      code: "permission-denied",
      fix: "run it as root (or see what it would do with --dry-run)",
    });
  });

  test("--dry-run says what would change and changes nothing", async () => {
    const before = snapshot(root);
    const fake = fakeNix(root, { version: "2.26.3", systemd: true });
    const dry = await run(install, fake, true);
    expect(dry.lines).toEqual([
      "/root/.config: would create (a directory)",
      "/root/.config/nix: would create (a directory)",
      `${USER_CONF}: would add line 1: ${nixConfLine(HOOK, CREATED)}`,
      "would run: systemctl restart nix-daemon.service",
    ]);
    expect(fake.systemctl).toEqual([]);
    expect(snapshot(root)).toEqual(before);
    await run(install, fake);
    const installed = snapshot(root);
    expect((await run(uninstall, fake, true)).lines).toEqual([
      `${USER_CONF}: would remove line 1: ${nixConfLine(HOOK, CREATED)}`,
      `${USER_CONF}: would delete (empty: offload install had created it)`,
      "/root/.config/nix: would delete (empty: offload install had created it)",
      "/root/.config: would delete (empty: offload install had created it)",
      "would run: systemctl restart nix-daemon.service",
    ]);
    expect(snapshot(root)).toEqual(installed);
  });
});
