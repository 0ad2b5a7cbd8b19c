// Scratch directories: removed by their process, or swept by the next one once their
// process is gone; never one of a live process.
import { expect, test } from "@jest/globals";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { keepScratch, makeScratch, removeAllScratch, sweepScratch } from "../src/files/scratch.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

test("a dead process's scratch directories are swept; this process's and live ones are kept", () => {
  const parent = join(makeSafeDir("scratch"), "spool");
  try {
    const mine = makeScratch(parent);
    const dead = spawnSync("true").pid!; // exited by now
    mkdirSync(join(parent, `${dead}-abc123`, "nested"), { recursive: true });
    mkdirSync(join(parent, "1-init")); // pid 1 is always alive
    expect(sweepScratch(parent)).toBe(1);
    expect(readdirSync(parent).sort()).toEqual(["1-init", mine.slice(parent.length + 1)].sort());
    removeAllScratch();
    expect(existsSync(mine)).toBe(false);
  } finally {
    removeDir(join(parent, ".."));
  }
});

test("sweeping a parent that does not exist yet is nothing", () => {
  expect(sweepScratch("/nonexistent/offload-spool")).toBe(0);
});

test("a kept scratch directory outlives removeAllScratch (for the next process to finish)", () => {
  const parent = join(makeSafeDir("scratch-kept"), "landing");
  try {
    const kept = makeScratch(parent);
    const other = makeScratch(parent);
    keepScratch(kept);
    removeAllScratch();
    expect(existsSync(kept)).toBe(true);
    expect(existsSync(other)).toBe(false);
  } finally {
    removeDir(join(parent, ".."));
  }
});
