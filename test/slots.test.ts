// Build slots: kernel locks that free themselves when their holder dies, with names no
// other local user can guess.
import { spawn } from "node:child_process";
import { readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildMachine } from "../src/config/records.js";
import { slotFreesWithin } from "../src/select/current-state.js";
import { derivationName, recordDuration } from "../src/select/durations.js";
import { acquireSlot, heldSlots, slotHolders } from "../src/select/slots.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

let dir: string;
beforeAll(() => {
  dir = makeSafeDir("slots");
});
afterAll(() => removeDir(dir));

test("slots are taken in order, counted, and described by their holders", async () => {
  const a = await acquireSlot(dir, "m", 2, "/nix/store/aaaa-x.drv");
  const b = await acquireSlot(dir, "m", 2);
  expect([a?.index, b?.index]).toEqual([0, 1]);
  expect(await acquireSlot(dir, "m", 2)).toBeUndefined();
  expect(await heldSlots(dir, "m", 2)).toBe(2);
  const holders = await slotHolders(dir, "m", 2);
  expect(holders[0]).toMatchObject({ pid: process.pid, drvPath: "/nix/store/aaaa-x.drv" });
  expect(holders[1]?.pid).toBe(process.pid);
  await a!.release();
  expect((await slotHolders(dir, "m", 2))[0]).toBeUndefined();
  expect(await heldSlots(dir, "m", 2)).toBe(1);
  expect((await acquireSlot(dir, "m", 2))?.index).toBe(0);
  // Another machine's slots, and another state dir's, are separate.
  expect((await acquireSlot(dir, "other", 1))?.index).toBe(0);
  const elsewhere = makeSafeDir("slots-elsewhere");
  expect((await acquireSlot(elsewhere, "m", 1))?.index).toBe(0);
  removeDir(elsewhere);
});

/** A separate process that takes `machine`'s one slot and says so. */
async function holderProcess(machine: string) {
  const module = fileURLToPath(new URL("../src/select/slots.ts", import.meta.url));
  writeFileSync(
    join(dir, `holder-${machine}.ts`),
    `import { acquireSlot } from ${JSON.stringify(module)};\nconst slot = await acquireSlot(${JSON.stringify(dir)}, ${JSON.stringify(machine)}, 1, "/nix/store/aaaa-held.drv");\nconsole.log(slot ? "held" : "busy");\nsetInterval(() => {}, 1000);\n`,
  );
  const child = spawn(process.execPath, [fileURLToPath(new URL("../scripts/run-ts.mjs", import.meta.url)), join(dir, `holder-${machine}.ts`)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const said = await new Promise<string>((resolve) => child.stdout!.once("data", (chunk: Buffer) => resolve(chunk.toString().trim())));
  expect(said).toBe("held");
  return child;
}

test("a holder that is stopped (SIGSTOP) still counts as holding, and asking what it builds does not hang", async () => {
  const child = await holderProcess("stopped");
  try {
    expect((await slotHolders(dir, "stopped", 1))[0]).toMatchObject({ drvPath: "/nix/store/aaaa-held.drv" });
    child.kill("SIGSTOP");
    const asked = Date.now();
    const [holder] = await slotHolders(dir, "stopped", 1);
    expect(Date.now() - asked).toBeLessThan(1000);
    expect(holder).toBeDefined(); // held, by someone who did not say what
    expect(await heldSlots(dir, "stopped", 1)).toBe(1);
  } finally {
    child.kill("SIGKILL");
  }
});

test("a holder killed with SIGKILL frees its slot at once", async () => {
  // A separate process takes the slot, reports, and is then killed without any cleanup.
  const child = await holderProcess("victim");
  expect(await acquireSlot(dir, "victim", 1)).toBeUndefined();
  child.kill("SIGKILL");
  await new Promise((resolve) => child.once("exit", resolve));
  expect((await acquireSlot(dir, "victim", 1))?.index).toBe(0);
});

test("slot names derive from a secret only the state dir's owner can read", () => {
  const secret = join(dir, "slot-secret");
  expect(statSync(secret).mode & 0o777).toBe(0o600);
  expect(readFileSync(secret)).toHaveLength(32);
});

test("the slot wait asks a full machine's holders at most once a second", async () => {
  const machine = buildMachine({ name: "asked", systems: ["x86_64-linux"], parallelBuilds: 1 });
  recordDuration(dir, derivationName("/nix/store/aaaa-long.drv"), 3600);
  const long = (await acquireSlot(dir, "asked", 1, "/nix/store/aaaa-long.drv"))!;
  expect(await slotFreesWithin(dir, [machine], 2)).toBe(false); // an hour to go
  await long.release();
  const unknown = (await acquireSlot(dir, "asked", 1, "/nix/store/bbbb-new.drv"))!;
  // A build of unknown length may end any moment, but the answer of a moment ago stands…
  expect(await slotFreesWithin(dir, [machine], 2)).toBe(false);
  // …for at most a second.
  await new Promise((resolve) => setTimeout(resolve, 1100));
  expect(await slotFreesWithin(dir, [machine], 2)).toBe(true);
  await unknown.release();
});
