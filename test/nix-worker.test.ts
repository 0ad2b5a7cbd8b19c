// The local store through `nix-daemon --stdio` (this machine's Nix 2.8): the operations the
// landing uses, and what a caller is told when nix-daemon cannot serve them.
import { expect, test } from "@jest/globals";
import { generateKeyPair } from "../src/nix/keys.js";
import { signPath } from "../src/nix/signature.js";
import { startNixWorker } from "../src/store/nix-worker.js";
import { buildTestClosure, deletePaths, nixPathInfo } from "./support/nix.js";

test("adds signatures to a valid path and tells valid paths from others", async () => {
  const { lib, app } = buildTestClosure("nix-worker");
  const worker = startNixWorker();
  try {
    const missing = `${lib.slice(0, 11)}${"0".repeat(32)}-missing`;
    expect(await worker.queryValidPaths([lib, missing])).toEqual(new Set([lib]));
    const signature = signPath(nixPathInfo(lib), generateKeyPair("nix-worker-1"));
    await worker.addSignatures(lib, [signature]);
    expect(nixPathInfo(lib).signatures).toContain(signature);
    // Never asked by the landing (it signs only paths it just registered): Nix 2.8's daemon
    // dies of it (LocalStore::addSignatures dereferences the missing path's info); newer ones
    // refuse it. Either way the caller is told, and nothing waits.
    await expect(worker.addSignatures(missing, [signature])).rejects.toMatchObject({
      code: "nix-daemon-failed",
      message: expect.stringMatching(/^nix-daemon --stdio could not add signatures to \S+-missing: (it was killed by SIGSEGV|.*is not valid)/),
    });
  } finally {
    await worker.close(); // its temporary roots go with it
    deletePaths([app, lib]);
  }
});

test("path infos as the store has them; operations issued together are answered each in turn", async () => {
  const { lib, app } = buildTestClosure("nix-worker-infos");
  const worker = startNixWorker();
  try {
    const missing = `${lib.slice(0, 11)}${"1".repeat(32)}-missing`;
    const [valid, infos] = await Promise.all([worker.queryValidPaths([app, missing], { lock: true }), worker.queryPathInfos([lib, app, missing])]);
    expect(valid).toEqual(new Set([app]));
    expect([...infos.keys()]).toEqual([lib, app]);
    expect(infos.get(app)).toEqual({ ...nixPathInfo(app), contentAddress: undefined });
  } finally {
    await worker.close(); // its temporary roots go with it
    deletePaths([app, lib]);
  }
});

test("without nix-daemon on PATH, the failure names it and the fix", async () => {
  const worker = startNixWorker({ env: { ...process.env, PATH: "/nonexistent" } });
  await expect(worker.queryValidPaths(["/nix/store/00000000000000000000000000000000-x"])).rejects.toMatchObject({
    code: "nix-daemon-not-found",
    fix: "put Nix's nix-daemon on the PATH of the daemon that runs the hook",
  });
  await worker.close();
});
