// Landing verified outputs in the real local store (this machine's Nix) while another
// process holds their locks, as the daemon does for the whole hook run: no waiting, the
// same registration as an ordinary import, and nothing left behind when it fails.
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { OffloadError } from "../src/errors.js";
import { generateKeyPair } from "../src/nix/keys.js";
import { signPath } from "../src/nix/signature.js";
import type { RestoredPath } from "../src/store/import-verified.js";
import { landVerified, landingDir, narInfo, registration, startLanding } from "../src/store/land.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";
import { buildTestClosure, deletePaths, isValidPath, nixPathInfo } from "./support/nix.js";

const key = generateKeyPair("land-test-1");
const FIXES = {
  unsigned: "u",
  "unknown-key": "k",
  "invalid-signature": "i",
  "duplicate-path": "d",
  "reference-order": "r",
  "missing-reference": "m",
};
let dir: string;
/** Where the tests' outputs arrive: in the landing area (on the store's file system, as the hook receives them), not named as a process's scratch. */
let arrivals: string;

beforeAll(() => {
  dir = makeSafeDir("land");
  mkdirSync(landingDir(), { recursive: true, mode: 0o700 });
  arrivals = mkdtempSync(join(landingDir(), "land-test-"));
});
afterAll(() => {
  removeDir(dir);
  rmSync(arrivals, { recursive: true, force: true });
});

/** A fresh closure lib ← app, taken out of the store again: restored and signed as outputs arrive from a builder. */
function spooledClosure(label: string): RestoredPath[] {
  const { lib, app } = buildTestClosure(label);
  const items = [lib, app].map((path): RestoredPath => {
    const info = nixPathInfo(path);
    const tree = join(arrivals, path.slice(11));
    execFileSync("sh", ["-c", 'nix-store --dump "$1" | nix-store --restore "$2"', "sh", path, tree]);
    return { ...info, signatures: [signPath(info, key)], tree };
  });
  deletePaths([app, lib]);
  return items;
}

/** Holds `<path>.lock` for every path, as the daemon holds its outputs' locks. */
function holdLocks(paths: string[]): ChildProcess {
  const script = paths.map((path, fd) => `exec ${fd + 3}>${path}.lock; flock ${fd + 3};`).join(" ") + " echo held; exec sleep 60";
  return spawn("bash", ["-c", script], { stdio: ["ignore", "pipe", "inherit"] });
}

async function lockedWhile<T>(paths: string[], body: () => Promise<T>): Promise<T> {
  const holder = holdLocks(paths);
  try {
    await new Promise((resolve) => holder.stdout!.once("data", resolve));
    return await body();
  } finally {
    holder.kill("SIGKILL");
  }
}

/** This process's staging directories still in the store's landing area. */
const leftovers = () => (existsSync(landingDir()) ? readdirSync(landingDir()).filter((name) => name.startsWith(`${process.pid}-`)) : []);

const options = (warnings: string[] = []) => ({
  trustedKeys: [key.publicKey],
  origin: "test outputs",
  fixes: FIXES,
  warn: (line: string) => void warnings.push(line),
});

test("outputs whose locks another process holds land at once, registered as an import would register them", async () => {
  const items = spooledClosure("land-ok");
  const warnings: string[] = [];
  const started = Date.now();
  const landed = await lockedWhile(
    items.map((item) => item.path),
    () => landVerified(items, options(warnings)),
  );
  expect(Date.now() - started).toBeLessThan(10_000);
  expect(warnings).toEqual([]);
  expect(landed.map((path) => [path.path, path.signer, path.added])).toEqual(items.map((item) => [item.path, "land-test-1", true]));
  for (const item of items) {
    const info = nixPathInfo(item.path);
    const { tree: _, ...expected } = item;
    expect(info).toEqual({ ...expected, contentAddress: undefined });
    execFileSync("nix-store", ["--verify-path", item.path]);
  }
  // Canonical metadata, as Nix gives every store path.
  const lib = items[0]!.path;
  expect(execFileSync("stat", ["-c", "%a %Y", join(lib, "data")], { encoding: "utf8" }).trim()).toBe("444 1");
  expect(leftovers()).toEqual([]);
  // A second landing of valid paths adds nothing.
  const again = await landVerified(items, options());
  expect(again.every((path) => !path.added)).toBe(true);
  deletePaths(items.map((item) => item.path).reverse());
});

test("a landing started ahead (as the hook starts it with the build) registers and signs the outputs once they land, and nothing for a refused landing", async () => {
  const items = spooledClosure("land-ahead");
  const ahead = startLanding();
  await new Promise((resolve) => setTimeout(resolve, 300)); // started, and waiting for its input
  const landed = await lockedWhile(
    items.map((item) => item.path),
    () => landVerified(items, { ...options(), ahead }),
  );
  expect(landed.every((path) => path.added)).toBe(true);
  for (const item of items) {
    execFileSync("nix-store", ["--verify-path", item.path]);
    expect(nixPathInfo(item.path).signatures).toEqual(item.signatures);
  }
  deletePaths(items.map((item) => item.path).reverse());

  const refused = spooledClosure("land-ahead-refused").map((item) => ({ ...item, signatures: [signPath(item, generateKeyPair("intruder-1"))] }));
  const unused = startLanding();
  await expect(landVerified(refused, { ...options(), ahead: unused })).rejects.toMatchObject({ code: "unknown-key" });
  for (const item of refused) {
    expect(isValidPath(item.path)).toBe(false);
    expect(existsSync(item.path)).toBe(false);
  }
});

test("a refused signature writes nothing at all", async () => {
  const items = spooledClosure("land-refused");
  const forged = items.map((item, index) => (index === 1 ? { ...item, signatures: [signPath(item, generateKeyPair("intruder-1"))] } : item));
  await expect(landVerified(forged, options())).rejects.toMatchObject({ code: "unknown-key" });
  for (const item of items) {
    expect(isValidPath(item.path)).toBe(false);
    expect(existsSync(item.path)).toBe(false);
  }
});

test("when registration fails, the written files are removed again", async () => {
  const items = spooledClosure("land-fails");
  // A nix-store that refuses to register, as a full disk or a locked database would.
  const bin = join(dir, "failing-bin");
  mkdirSync(bin, { recursive: true });
  const real = execFileSync("bash", ["-c", "command -v nix-store"], { encoding: "utf8" }).trim();
  writeFileSync(
    join(bin, "nix-store"),
    `#!/bin/sh\nfor a; do [ "$a" = --register-validity ] && { echo "error: database is full" >&2; exit 1; }; done\nexec ${real} "$@"\n`,
  );
  chmodSync(join(bin, "nix-store"), 0o755);
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
  await expect(landVerified(items, { ...options(), env })).rejects.toMatchObject({
    code: "register-failed",
    message: expect.stringContaining("database is full"),
  });
  for (const item of items) {
    expect(isValidPath(item.path)).toBe(false);
    expect(existsSync(item.path)).toBe(false);
  }
  expect(leftovers()).toEqual([]);
});

test("registration and .narinfo texts carry hash, size, deriver, references and signatures", () => {
  const item: RestoredPath = {
    path: "/nix/store/7y5cqn2v7pvvsg1szfdjmnlmll6bn6fr-app",
    deriver: "/nix/store/0mr2aglxbsn39qz9qd3lr6n7pz3zps1a-app.drv",
    references: ["/nix/store/2yijwpcbg6iz4n7sncnl2p0alxq1zk1x-lib"],
    narHash: Buffer.alloc(32, 1),
    narSize: 1234,
    signatures: ["b-1:c2ln"],
    tree: "/dev/null",
  };
  // nix32 of the hash as Nix itself prints it.
  const hash = execFileSync("nix", ["--extra-experimental-features", "nix-command", "hash", "to-base32", "--type", "sha256", item.narHash.toString("hex")], {
    encoding: "utf8",
  }).trim();
  expect(registration([item])).toBe(`${item.path}\nsha256:${hash}\n1234\n${item.deriver}\n1\n${item.references[0]}\n`);
  expect(narInfo(item)).toContain("References: 2yijwpcbg6iz4n7sncnl2p0alxq1zk1x-lib\nDeriver: 0mr2aglxbsn39qz9qd3lr6n7pz3zps1a-app.drv\nSig: b-1:c2ln\n");
});

test("a local nix-daemon that cannot serve fails the landing before anything is written", async () => {
  const items = spooledClosure("land-no-worker");
  // A nix-daemon that dies at once, as one with a locked database would.
  const bin = join(dir, "failing-daemon-bin");
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, "nix-daemon"), `#!/bin/sh\necho "error: database is locked" >&2\nexit 1\n`);
  chmodSync(join(bin, "nix-daemon"), 0o755);
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
  await expect(landVerified(items, { ...options(), env })).rejects.toMatchObject({
    code: "nix-daemon-failed",
    message: expect.stringMatching(/^nix-daemon --stdio could not query valid paths: error: database is locked$/),
  });
  for (const item of items) {
    expect(isValidPath(item.path)).toBe(false);
    expect(existsSync(item.path)).toBe(false);
  }
  expect(leftovers()).toEqual([]);
});

test("signatures that cannot be recorded leave the outputs valid, and the build log says so", async () => {
  const items = spooledClosure("land-unsigned");
  const started = startLanding();
  // The worker failing at the last step only, as one killed after the registration would.
  const refusing = new OffloadError("nix-daemon --stdio could not add signatures: it was killed", { code: "nix-daemon-failed", fix: "-" });
  const ahead = { ...started, worker: { ...started.worker, addSignatures: () => Promise.reject(refusing) } };
  const warnings: string[] = [];
  const landed = await landVerified(items, { ...options(warnings), ahead });
  expect(landed.every((path) => path.added)).toBe(true);
  expect(warnings).toEqual([
    "offload: warning: 2 output(s) are valid but their signatures were not recorded: nix-daemon --stdio could not add signatures: it was killed",
  ]);
  for (const item of items) {
    expect(isValidPath(item.path)).toBe(true);
    expect(nixPathInfo(item.path).signatures).toEqual([]);
  }
  expect(leftovers()).toEqual([]);
  deletePaths(items.map((item) => item.path).reverse());
});
