// Which build hook this machine's Nix really runs: the version rules over nix.conf (with
// includes), the user config files and NIX_CONFIG; the daemon found and its verdict for
// `offload check`, with fakes (the real daemons: install-e2e.test.ts).
import { afterEach, beforeEach, describe, expect, test } from "@jest/globals";
import { chownSync, mkdirSync, symlinkSync, utimesSync } from "node:fs";
import { checkDaemon, daemonLine } from "../src/check/daemon.js";
import { effectiveBuildHook, parseNixVersion, type HookAssignment } from "../src/nix/daemon-version.js";
import { parseProcStat } from "../src/files/proc-stat.js";
import { hookVerdict, inspectLocalNix, isDaemonCommand, personalConfFile, userConfFiles } from "../src/store/local-daemon.js";
import { parseNixConf } from "../src/store/nix-conf.js";
import { fakeNix, writeTree } from "./support/fake-nix.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const HOOK = "/opt/offload/bin/offload-hook.js";
const v = (text: string) => parseNixVersion(`nix (Nix) ${text}`)!;
const at = (layer: HookAssignment["layer"], value: string, where: string = layer): HookAssignment => ({ layer, value, where });

describe("effective build-hook: versions × where it is set", () => {
  const conf = at("nix.conf", "/conf/hook", "/etc/nix/nix.conf:3");
  const user = at("user-conf", "/user/hook", "/root/.config/nix/nix.conf:1");
  const env = at("NIX_CONFIG", "/env/hook");
  const cases: [string, HookAssignment[], string | undefined][] = [
    // [versions], assignments, hook each version runs (undefined: Nix's own build-remote)
    ["nothing set", [], undefined],
    ["nix.conf", [conf], "/conf/hook"],
    ["NIX_CONFIG", [env], "/env/hook"],
    ["nix.conf and NIX_CONFIG", [conf, env], "/env/hook"],
    ["a system-wide user config file (/etc/xdg/nix/nix.conf)", [at("user-conf", "/user/hook", "/etc/xdg/nix/nix.conf:1")], "/user/hook"],
    ["root's user nix.conf (offload install for 2.25–2.33)", [user], "/user/hook"],
    ["nix.conf and user nix.conf", [conf, user], "/user/hook"],
  ];
  const honours = ["2.8.0", "2.24.15", "2.34.0", "2.34.8", "2.35.2"];
  const resets = ["2.25.0", "2.26.3", "2.28.5", "2.29.0", "2.33.6"];

  test.each(cases)("%s", (_, assignments, expected) => {
    for (const version of honours) expect([version, effectiveBuildHook(v(version), assignments).value]).toEqual([version, expected]);
    // Nix 2.25–2.33 throw nix.conf's value away; what is set after it stays.
    const reset = expected === "/conf/hook" ? undefined : expected;
    for (const version of resets) expect([version, effectiveBuildHook(v(version), assignments).value]).toEqual([version, reset]);
  });

  test("the ignored nix.conf line is named, only when nothing later sets build-hook", () => {
    expect(effectiveBuildHook(v("2.26.3"), [conf])).toEqual({ ignored: conf });
    expect(effectiveBuildHook(v("2.26.3"), [conf, env])).toEqual({ value: "/env/hook", from: env });
    expect(effectiveBuildHook(v("2.34.8"), [conf])).toEqual({ value: "/conf/hook", from: conf });
  });
});

describe("nix.conf as Nix parses it", () => {
  const files: Record<string, string> = {
    "/etc/nix/extra.conf": "build-hook = /from/include\n",
    "/etc/nix/sub/deeper.conf": "max-jobs = 2\n",
  };
  const read = (file: string) => files[file];

  test("comments anywhere, words joined by one space, includes in place (relative to the file)", () => {
    const text = "# header\nbuild-hook =   /a/hook   arg  # trailing\n\ninclude extra.conf\n!include missing.conf\ninclude sub/deeper.conf\nsandbox = false";
    const parsed = parseNixConf(text, "/etc/nix/nix.conf", read);
    expect(parsed.settings).toEqual([
      { name: "build-hook", value: "/a/hook arg", file: "/etc/nix/nix.conf", line: 2, comment: "trailing" },
      { name: "build-hook", value: "/from/include", file: "/etc/nix/extra.conf", line: 1 },
      { name: "max-jobs", value: "2", file: "/etc/nix/sub/deeper.conf", line: 1 },
      { name: "sandbox", value: "false", file: "/etc/nix/nix.conf", line: 7 },
    ]);
    expect(parsed.files).toEqual(["/etc/nix/nix.conf", "/etc/nix/extra.conf", "/etc/nix/sub/deeper.conf"]);
    expect(parseNixConf("build-hook =\n", "f", read).settings[0]!.value).toBe("");
  });

  test("what Nix refuses is refused with the place: a line without =, a missing include", () => {
    expect(() => parseNixConf("ok = 1\nbuild-hook /x\n", "/etc/nix/nix.conf", read)).toThrow(
      expect.objectContaining({ code: "nix-conf-syntax", location: { file: "/etc/nix/nix.conf", line: 2, column: 1 } }),
    );
    expect(() => parseNixConf("include nope.conf\n", "/etc/nix/nix.conf", read)).toThrow(/includes \/etc\/nix\/nope\.conf, which does not exist/);
    expect(() => parseNixConf("include nix.conf\n", "/etc/nix/nix.conf", (f) => (f === "/etc/nix/nix.conf" ? "include nix.conf\n" : undefined))).toThrow(
      /nested more than 16 deep/,
    );
  });
});

test("/proc details: the daemon's command line, stat with a command name of spaces and parentheses, user config files", () => {
  expect(isDaemonCommand(["/usr/bin/nix-daemon", "--daemon"])).toBe(true);
  expect(isDaemonCommand(["nix-daemon"])).toBe(true);
  expect(isDaemonCommand(["/nix/store/x-nix/bin/nix", "daemon"])).toBe(true);
  expect(isDaemonCommand(["nix", "build"])).toBe(false);
  expect(isDaemonCommand(["/usr/bin/nix", "__build-remote", "3"])).toBe(false);
  const fields = Array.from({ length: 50 }, (_, i) => String(i + 3)).join(" "); // fields 3… after the name
  expect(parseProcStat(`42 (a (b) c) ${fields}`)).toEqual({ state: "3", ppid: 4, startTicks: 22 });
  expect(personalConfFile({}, v("2.26.3"), "/root")).toBe("/root/.config/nix/nix.conf");
  expect(personalConfFile({ NIX_CONFIG_HOME: "/c", XDG_CONFIG_HOME: "/x" }, v("2.26.3"), "/root")).toBe("/c/nix.conf");
  expect(personalConfFile({ NIX_CONFIG_HOME: "/c", XDG_CONFIG_HOME: "/x" }, v("2.8.0"), "/root")).toBe("/x/nix/nix.conf"); // no NIX_CONFIG_HOME before 2.25
  expect(personalConfFile({ XDG_CONFIG_HOME: "" }, v("2.26.3"), "/root")).toBe("/nix/nix.conf"); // set but empty still counts (getEnv)
  expect(userConfFiles({}, "/root/.config/nix/nix.conf")).toEqual(["/root/.config/nix/nix.conf", "/etc/xdg/nix/nix.conf"]);
  expect(userConfFiles({ XDG_CONFIG_DIRS: "/a::/b" }, "/c/nix.conf")).toEqual(["/c/nix.conf", "/a/nix/nix.conf", "/b/nix/nix.conf"]);
  expect(userConfFiles({ NIX_USER_CONF_FILES: "/one:/two" }, "/root/.config/nix/nix.conf")).toEqual(["/one", "/two"]);
});

describe("what the daemon runs, and check's verdict", () => {
  let root: string;
  beforeEach(() => {
    root = makeSafeDir("local-daemon");
  });
  afterEach(() => removeDir(root));

  const nixConf = (lines: string[]) => writeTree(root, { "/etc/nix/nix.conf": `${lines.join("\n")}\n` });

  test("2.26 with build-hook only in nix.conf: it runs Nix's build-remote; check fails and says offload install", async () => {
    nixConf(["sandbox = false", `build-hook = ${HOOK}`]);
    const fake = fakeNix(root, { version: "2.26.3", systemd: true });
    const nix = await inspectLocalNix(fake.system);
    expect(nix.effective).toEqual({ ignored: { layer: "nix.conf", value: HOOK, where: "/etc/nix/nix.conf:2" } });
    const report = await checkDaemon(fake.system, HOOK);
    expect(report).toMatchObject({
      status: "fail",
      code: "daemon-hook-not-offload",
      fix: "offload install",
      facts: { nix: "nix-daemon", version: "2.26.3", pid: 100, unit: "nix-daemon.service", buildHook: null },
    });
    expect(daemonLine(report)).toBe(
      "✗ daemon: nix-daemon 2.26.3 (pid 100, nix-daemon.service) runs Nix's own build-remote: Nix 2.25–2.33 ignore build-hook in nix.conf (/etc/nix/nix.conf:2), not offload's hook — fix: offload install",
    );
  });

  test("2.26 with build-hook in root's ~/.config/nix/nix.conf (offload install's place): passes, naming the line; applied after nix.conf and /etc/xdg", async () => {
    nixConf(["sandbox = false", "build-hook = /ignored"]);
    writeTree(root, { "/root/.config/nix/nix.conf": `build-hook = ${HOOK} # added by offload install\n` });
    // A daemon under systemd has no HOME: root's home is its passwd entry's.
    const fake = fakeNix(root, { version: "2.26.3", systemd: true });
    const nix = await inspectLocalNix(fake.system);
    expect(nix.userConf).toBe("/root/.config/nix/nix.conf");
    expect(nix.layers.map((layer) => [layer.layer, layer.file, layer.hooks.length])).toEqual([
      ["nix.conf", "/etc/nix/nix.conf", 1],
      ["user-conf", "/etc/xdg/nix/nix.conf", 0],
      ["user-conf", "/root/.config/nix/nix.conf", 1],
    ]);
    const report = await checkDaemon(fake.system, HOOK);
    expect(report).toMatchObject({ status: "ok", facts: { version: "2.26.3", buildHook: HOOK, from: "/root/.config/nix/nix.conf:1" } });
    expect(daemonLine(report)).toBe("✓ daemon: nix-daemon 2.26.3 (pid 100, nix-daemon.service) runs offload's hook (/root/.config/nix/nix.conf:1)");

    // Written after the daemon started: it has not read it.
    const later = new Date(Date.now() + 5000);
    utimesSync(`${root}/root/.config/nix/nix.conf`, later, later);
    const stale = await checkDaemon(fake.system, HOOK);
    expect(stale).toMatchObject({
      status: "fail",
      code: "daemon-restart-needed",
      fix: "systemctl restart nix-daemon.service (or `offload install`, which restarts it)",
    });
    expect(stale.detail).toMatch(/before \/root\/\.config\/nix\/nix\.conf changed/);

    // A daemon whose NIX_USER_CONF_FILES leaves it out does not read it.
    const elsewhere = await checkDaemon(fakeNix(root, { version: "2.26.3", daemon: { env: { NIX_USER_CONF_FILES: "/opt/nix.conf" } } }).system, HOOK);
    expect(elsewhere).toMatchObject({ status: "fail", code: "daemon-hook-not-offload", facts: { buildHook: null } });
    expect(elsewhere.detail).toContain("runs Nix's own build-remote: Nix 2.25–2.33 ignore build-hook in nix.conf (/etc/nix/nix.conf:2)");
  });

  test("root's home as the daemon's Nix works it out: XDG_CONFIG_HOME, HOME when root owns it or it does not exist (any HOME before 2.10), else /etc/passwd", async () => {
    nixConf(["sandbox = false"]);
    writeTree(root, { "/etc/passwd": "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nroot:x:0:0:root:/var/root:/bin/bash\n", "/home/alice/.profile": "" });
    mkdirSync(`${root}/srv/root-home`, { recursive: true });
    chownSync(`${root}/home/alice`, 1000, 1000);
    const userConf = async (version: string, env: Record<string, string>) =>
      (await inspectLocalNix(fakeNix(root, { version, daemon: { env } }).system)).userConf;
    expect(await userConf("2.26.3", {})).toBe("/var/root/.config/nix/nix.conf");
    expect(await userConf("2.26.3", { HOME: "/srv/root-home" })).toBe("/srv/root-home/.config/nix/nix.conf");
    expect(await userConf("2.26.3", { HOME: "/nowhere" })).toBe("/nowhere/.config/nix/nix.conf");
    expect(await userConf("2.26.3", { HOME: "/home/alice" })).toBe("/var/root/.config/nix/nix.conf");
    expect(await userConf("2.8.0", { HOME: "/home/alice" })).toBe("/home/alice/.config/nix/nix.conf");
    expect(await userConf("2.26.3", { HOME: "/home/alice", XDG_CONFIG_HOME: "/etc/root-config" })).toBe("/etc/root-config/nix/nix.conf");
    // Without a daemon: root's own environment.
    expect((await inspectLocalNix(fakeNix(root, { version: "2.26.3", daemon: false, env: { HOME: "/srv/root-home" } }).system)).userConf).toBe(
      "/srv/root-home/.config/nix/nix.conf",
    );
  });

  test("2.26 with NIX_CONFIG in its environment: passes, naming NIX_CONFIG", async () => {
    nixConf(["sandbox = false"]);
    const fake = fakeNix(root, { version: "2.26.3", daemon: { env: { NIX_CONFIG: `max-jobs = 0\nbuild-hook = ${HOOK}` } } });
    const report = await checkDaemon(fake.system, HOOK);
    expect(report).toMatchObject({ status: "ok", facts: { buildHook: HOOK, from: "NIX_CONFIG" } });
    expect(daemonLine(report)).toBe("✓ daemon: nix-daemon 2.26.3 (pid 100, not started by systemd) runs offload's hook (NIX_CONFIG)");
  });

  test("2.34: nix.conf (and its includes, and NIX_CONF_DIR) count; a nix.conf changed after the daemon started means restart it", async () => {
    writeTree(root, { "/srv/nix/nix.conf": "include hooks.conf\n", "/srv/nix/hooks.conf": `build-hook = ${HOOK}\n` });
    const fake = fakeNix(root, { version: "2.34.8", daemon: { env: { NIX_CONF_DIR: "/srv/nix" } } });
    expect(await checkDaemon(fake.system, HOOK)).toMatchObject({ status: "ok", facts: { from: "/srv/nix/hooks.conf:1" } });
    const later = new Date(Date.now() + 5000);
    utimesSync(`${root}/srv/nix/hooks.conf`, later, later);
    const stale = await checkDaemon(fake.system, HOOK);
    expect(stale).toMatchObject({
      status: "fail",
      code: "daemon-restart-needed",
      fix: "restart nix-daemon as it was started: kill 100; /usr/bin/nix-daemon --daemon &",
    });
    expect(stale.detail).toMatch(
      /^nix-daemon 2\.34\.8 \(pid 100, not started by systemd\) started at \S+, before \/srv\/nix\/hooks\.conf changed \(\S+\): it may still run another build-hook/,
    );
  });

  test("a build-hook set elsewhere: the place and how to fix it", async () => {
    nixConf(["build-hook = /usr/libexec/nix/build-remote"]);
    const report = await checkDaemon(fakeNix(root, { version: "2.8.0" }).system, HOOK);
    expect(report).toMatchObject({
      status: "fail",
      code: "daemon-hook-not-offload",
      fix: "remove build-hook at /etc/nix/nix.conf:1, then run `offload install`",
    });
    expect(report.detail).toContain("runs build-hook = /usr/libexec/nix/build-remote (/etc/nix/nix.conf:1), not offload's hook");
    writeTree(root, { "/root/.config/nix/nix.conf": "build-hook = /other\n" });
    nixConf([`build-hook = ${HOOK}`]);
    expect(await checkDaemon(fakeNix(root, { version: "2.34.8" }).system, HOOK)).toMatchObject({
      status: "fail",
      fix: "remove build-hook at /root/.config/nix/nix.conf:1 (it overrides nix.conf), then run `offload install`",
    });
  });

  test("unsupported versions are their own failure, with the fix", async () => {
    nixConf([`build-hook = ${HOOK}`]);
    for (const [version, why] of [
      ["Lix 2.94.0", /Cap'n Proto/],
      ["2.36.0", /newer than the newest/],
      ["2.3.16", /older than/],
    ] as const) {
      const report = await checkDaemon(fakeNix(root, { version }).system, HOOK);
      expect(report).toMatchObject({ status: "fail", code: "nix-version-unsupported" });
      expect(report.detail).toMatch(why);
      expect(report.fix).toBeTruthy();
    }
  });

  test("no daemon: root's builds use nix directly with root's environment; not set there is a warning", async () => {
    nixConf(["sandbox = false"]);
    const none = await checkDaemon(fakeNix(root, { version: "2.8.0", daemon: false }).system, HOOK);
    expect(none).toMatchObject({ status: "warn", code: "daemon-hook-not-offload", facts: { nix: "nix", version: "2.8.0" } });
    expect(none.detail).toMatch(/^nix 2\.8\.0 \(no nix-daemon runs: root's builds use the store directly\) runs Nix's own build-remote/);
    const shell = await checkDaemon(fakeNix(root, { version: "2.26.3", daemon: false, env: { NIX_CONFIG: `build-hook = ${HOOK}` } }).system, HOOK);
    expect(shell).toMatchObject({ status: "ok", facts: { from: "NIX_CONFIG" } });
    const onDemand = await checkDaemon(fakeNix(root, { version: "2.34.8", daemon: false, systemd: true }).system, HOOK);
    expect(onDemand.detail).toMatch(/\(nix-daemon\.service is not running: systemd starts it on demand\)$/);
  });

  test("a broken nix.conf fails the step with its place", async () => {
    nixConf(["build-hook"]);
    expect(await checkDaemon(fakeNix(root, { version: "2.34.8" }).system, HOOK)).toMatchObject({
      status: "fail",
      code: "nix-conf-syntax",
      detail: "syntax error in /etc/nix/nix.conf:1: build-hook",
    });
  });

  test("hookVerdict follows symlinks: a link to offload's hook is offload's hook", async () => {
    writeTree(root, { [HOOK]: "#!/usr/bin/env node\n" });
    mkdirSync(`${root}/usr/local/bin`, { recursive: true });
    symlinkSync(`../../..${HOOK}`, `${root}/usr/local/bin/offload-hook`);
    nixConf(["build-hook = /usr/local/bin/offload-hook"]);
    expect(hookVerdict(await inspectLocalNix(fakeNix(root, { version: "2.34.8" }).system), HOOK)).toMatchObject({ ok: true });
  });
});
