// Which Nix runs the hook, and what follows from it: version parsing, the support range,
// where build-hook must be set, and the hook refusing an unsupported daemon before it
// reads a byte (a daemon of another protocol would never send what it waits for).
import { expect, test } from "@jest/globals";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { parentNixVersion } from "../src/hook/daemon.js";
import { runHook } from "../src/hook/run.js";
import { buildHookLocation, hookExitStatusesKept, hookSupport, parseNixVersion, type NixVersion } from "../src/nix/daemon-version.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const version = (text: string): NixVersion => parseNixVersion(text)!;

test("version lines of Nix and Lix", () => {
  expect(parseNixVersion("nix (Nix) 2.34.8\n")).toEqual({ flavour: "Nix", major: 2, minor: 34, patch: 8, text: "2.34.8" });
  expect(parseNixVersion("nix-daemon (Nix) 2.8.0")).toMatchObject({ major: 2, minor: 8, patch: 0 });
  expect(parseNixVersion("nix (Lix, like Nix) 2.93.3")).toMatchObject({ flavour: "Lix", major: 2, minor: 93 });
  expect(parseNixVersion("nix (Nix) 2.35.0pre20260101_abcdef")).toMatchObject({ minor: 35, patch: 0 });
  expect(parseNixVersion("v20.20.2")).toBeUndefined();
});

test("supported: Nix 2.8 to 2.35; refused with a reason and a fix: older, newer, Lix", () => {
  for (const text of ["2.8.0", "2.26.3", "2.29.0", "2.34.8", "2.35.2"]) expect(hookSupport(version(`nix (Nix) ${text}`))).toEqual({ supported: true });
  expect(hookSupport(version("nix (Nix) 2.3.16"))).toMatchObject({ supported: false, why: expect.stringContaining("older") });
  expect(hookSupport(version("nix (Nix) 2.36.0"))).toMatchObject({ supported: false, why: expect.stringContaining("newer") });
  expect(hookSupport(version("nix (Lix, like Nix) 2.94.0"))).toMatchObject({ supported: false, why: expect.stringContaining("Cap'n Proto") });
});

test("where build-hook takes effect, and whether exit statuses 100/101 keep their meaning", () => {
  const at = (text: string) => [buildHookLocation(version(`nix (Nix) ${text}`)), hookExitStatusesKept(version(`nix (Nix) ${text}`))];
  expect(at("2.8.0")).toEqual(["nix.conf", true]);
  expect(at("2.24.9")).toEqual(["nix.conf", true]);
  expect(at("2.25.0")).toEqual(["user-conf", true]);
  expect(at("2.26.3")).toEqual(["user-conf", true]);
  expect(at("2.29.0")).toEqual(["user-conf", false]);
  expect(at("2.33.1")).toEqual(["user-conf", false]);
  expect(at("2.34.8")).toEqual(["nix.conf", false]);
});

test("the parent's version comes from its executable once, then from the state directory", async () => {
  const dir = makeSafeDir("daemon-version");
  // A Nix process standing in for the daemon: nix-store --serve waits on its stdin.
  const parent = spawn("nix-store", ["--serve"], { stdio: ["pipe", "ignore", "ignore"] });
  try {
    await new Promise((resolve) => parent.once("spawn", resolve));
    const first = await parentNixVersion(dir, parent.pid!);
    expect(first).toMatchObject({ flavour: "Nix", major: 2 });
    const record = join(dir, "daemon-version.json");
    expect(existsSync(record)).toBe(true);
    const remembered = JSON.parse(readFileSync(record, "utf8")) as { version: NixVersion };
    expect(remembered.version).toEqual(first);
    expect(await parentNixVersion(dir, parent.pid!)).toEqual(first);
    // A process that is not a Nix (this test runner) has no version to tell.
    expect(await parentNixVersion(dir, process.pid)).toBeUndefined();
  } finally {
    parent.kill();
    removeDir(dir);
  }
});

test("started by an unsupported daemon, the hook says so in one message and exits without reading its input", async () => {
  const dir = makeSafeDir("daemon-unsupported");
  const input = new PassThrough(); // nothing ever arrives: reading would hang the test
  const lines: string[] = [];
  try {
    const status = await runHook(
      { input, control: (line) => void lines.push(line), daemonVersion: async () => version("nix (Lix, like Nix) 2.94.0") },
      { OFFLOAD_STATE_DIR: join(dir, "state"), OFFLOAD_CONFIG_DIR: join(dir, "etc") },
    );
    expect(status).toBe(1);
    expect(lines).toHaveLength(1);
    const message = JSON.parse(lines[0]!.replace(/^@nix /, "")) as { level: number; msg: string };
    expect(message.level).toBe(0);
    expect(message.msg).toMatch(/^offload: cannot be the build hook of Lix 2\.94\.0: .*Cap'n Proto.*\n {2}fix: use Nix's own build-remote/);
  } finally {
    removeDir(dir);
  }
});
