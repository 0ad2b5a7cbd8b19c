// offload-hook against a daemon played byte for byte: the replies Nix 2.8 understands for
// no machines, no eligible machine, a better local machine, full slots and machines that
// are down, and a per-build restriction through the `builders` setting. In-process (runHook
// with injected I/O); hook-process.test.ts runs the real executable, alone and under nix-build.
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import ssh2 from "ssh2";
import { generateKeyPair } from "../src/nix/keys.js";
import { acquireSlot, type Slot } from "../src/select/slots.js";
import { DEFAULTS } from "../src/defaults.js";
import { derivationName, recordDuration } from "../src/select/durations.js";
import { BASE_SETTINGS, runHookInProcess, type Try } from "./support/hook.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const DRV = "/nix/store/0mym5imlj8bclbwws3sf3d10gskmaqv0-plain-leaf.drv";
const HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHI3/c8yvZiRIrPlNbVW/z785mqAXJJm8sNfG6PuzdS";
const x86 = (amWilling: boolean, features: string[] = []): Try => ({ amWilling, system: "x86_64-linux", drvPath: DRV, features });

let dir: string;
let clientKey: string;
beforeAll(() => {
  dir = makeSafeDir("hook-protocol");
  clientKey = join(dir, "client_ed25519");
  writeFileSync(clientKey, ssh2.utils.generateKeyPairSync("ed25519").private, { mode: 0o600 }); // as ssh-keygen writes it
});
afterAll(() => removeDir(dir));

/** A config dir with keys, an ACL and the given machines.ts body; returns the hook's environment. */
function setup(name: string, machines: string | undefined): NodeJS.ProcessEnv {
  const configDir = join(dir, name);
  mkdirSync(configDir, { mode: 0o755 });
  const key = generateKeyPair(`${name}-1`);
  writeFileSync(join(configDir, "signing-key.sec"), key.exportSecret(), { mode: 0o600 });
  writeFileSync(join(configDir, "acl"), `${generateKeyPair("builder-1").publicKey.toString()}\n`, { mode: 0o644 });
  if (machines !== undefined) {
    writeFileSync(join(configDir, "machines.ts"), `import { buildMachine, localMachine } from "offload";\nexport default [\n${machines}\n];\n`, {
      mode: 0o644,
    });
  }
  return { OFFLOAD_CONFIG_DIR: configDir, OFFLOAD_STATE_DIR: join(dir, name, "state"), OFFLOAD_CACHE_DIR: join(dir, "cache") };
}

/** A machine nothing listens for (port 9 of a loopback address: connection refused at once). */
const machine = (name: string, extra = "") =>
  `buildMachine({ name: "${name}", port: 9, user: "root", systems: ["x86_64-linux"], hostKey: "${HOST_KEY}", privateKey: "${clientKey}", connectTimeout: 2${extra} }),`;

test("no machines.ts at all: decline-permanently, then exit", async () => {
  const run = await runHookInProcess(setup("none", undefined), [x86(true), x86(true)]);
  expect(run.replies).toEqual(["decline-permanently"]);
  expect(run.code).toBe(0);
});

test("an empty machine list: decline-permanently", async () => {
  const run = await runHookInProcess(setup("empty", ""), [x86(false)]);
  expect(run.replies).toEqual(["decline-permanently"]);
  expect(run.code).toBe(0);
});

test("no machine for the system or features: decline, explaining each machine", async () => {
  const env = setup(
    "ineligible",
    machine("127.0.0.2", `, features: ["kvm"]`) + machine("127.0.0.3", `, features: ["big-parallel"], mandatoryFeatures: ["benchmark"]`),
  );
  const run = await runHookInProcess(env, [{ amWilling: false, system: "aarch64-linux", drvPath: DRV }, x86(false, ["big-parallel"])]);
  expect(run.replies).toEqual(["decline", "decline"]);
  expect(run.code).toBe(0);
  const text = run.messages.join("\n");
  expect(text).toContain("no configured machine can build aarch64-linux");
  expect(text).toContain("127.0.0.2: does not build aarch64-linux (systems: x86_64-linux)");
  expect(text).toContain("127.0.0.2: lacks required feature big-parallel");
  expect(text).toContain("127.0.0.3: only takes derivations that require benchmark (mandatory)");
});

test("every slot busy with builds known to take an hour: postpone at once (no slot frees within the wait)", async () => {
  const env = setup("busy-long", machine("127.0.0.5"));
  const running = "/nix/store/00000000000000000000000000000000-hour-long.drv";
  mkdirSync(env.OFFLOAD_STATE_DIR!, { mode: 0o755 });
  recordDuration(env.OFFLOAD_STATE_DIR!, derivationName(running), 3600);
  const slot = (await acquireSlot(env.OFFLOAD_STATE_DIR!, "127.0.0.5", 1, running))!;
  try {
    const started = Date.now();
    const run = await runHookInProcess(env, [x86(false)]);
    expect(run.replies).toEqual(["postpone"]);
    expect(Date.now() - started).toBeLessThan(1000);
  } finally {
    await slot.release();
  }
});

describe("with every slot of the machine taken", () => {
  let slots: Slot[] = [];
  let env: NodeJS.ProcessEnv;
  beforeAll(async () => {
    env = setup("busy", machine("127.0.0.4", ", parallelBuilds: 2"));
    // The same kernel locks a running build would hold, taken by this process.
    for (let i = 0; i < 2; i++) slots.push((await acquireSlot(env.OFFLOAD_STATE_DIR!, "127.0.0.4", 2))!);
  });
  afterAll(async () => {
    await Promise.all(slots.map((slot) => slot.release()));
    slots = [];
  });

  test("postpone when the local machine cannot take it, decline when it can", async () => {
    const run = await runHookInProcess(env, [x86(false), x86(true)]);
    expect(run.replies).toEqual(["postpone", "decline"]);
    expect(run.messages.join("\n")).toContain("127.0.0.4: all 2 slots busy");
    // max-jobs = 0: the daemon never builds locally, so even a willing daemon must wait.
    const remoteOnly = await runHookInProcess(env, [x86(true)], { ...BASE_SETTINGS, "max-jobs": "0" });
    expect(remoteOnly.replies).toEqual(["postpone"]);
  });

  test("every slot busy with builds of unknown length: the hook holds its answer up to slotWaitS for one to free, then postpones", async () => {
    const started = Date.now();
    const run = await runHookInProcess(env, [x86(false)]);
    expect(run.replies).toEqual(["postpone"]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(DEFAULTS.slotWaitS * 1000);
  });

  test("a slot that frees while the hook waits is taken: no postpone and its poll interval", async () => {
    const started = Date.now();
    setTimeout(() => void slots.pop()!.release(), 300);
    const run = await runHookInProcess(env, [x86(false)]);
    // It went for the freed slot (nothing listens there, so the connection is refused).
    expect(run.messages.join("\n")).toContain("cannot build on 127.0.0.4");
    expect(Date.now() - started).toBeLessThan(DEFAULTS.slotWaitS * 1000);
    slots.push((await acquireSlot(env.OFFLOAD_STATE_DIR!, "127.0.0.4", 2))!);
  });

  test("a slot freed by a holder that dies is free again at once", async () => {
    await slots.pop()!.release();
    const taken = await acquireSlot(env.OFFLOAD_STATE_DIR!, "127.0.0.4", 2);
    expect(taken?.index).toBe(1);
    slots.push(taken!);
  });
});

test("the local machine competes: a faster free local machine keeps the build", async () => {
  const env = setup("local", `localMachine({ speed: 3 }),\n${machine("127.0.0.5", ", speed: 2")}`);
  const run = await runHookInProcess(env, [x86(true)]);
  expect(run.replies).toEqual(["decline"]);
  expect(run.messages.join("\n")).toContain("the local machine is free and its speed 3");
});

test("a machine that refuses connections is skipped with the reason and the fix, not retried per derivation", async () => {
  const env = setup("down", machine("127.0.0.6"));
  const first = await runHookInProcess(env, [x86(false)]);
  expect(first.replies).toEqual(["decline"]);
  const text = first.messages.join("\n");
  expect(text).toMatch(/cannot build on 127\.0\.0\.6: connection to root@127\.0\.0\.6:9 refused/);
  expect(text).toContain("fix: start sshd on 127.0.0.6");
  expect(text).toContain("every machine that can build x86_64-linux is unreachable");
  // A second hook within the back-off does not even try to connect.
  const second = await runHookInProcess(env, [x86(false)]);
  expect(second.replies).toEqual(["decline"]);
  expect(second.messages.join("\n")).not.toContain("cannot build on");
  expect(second.messages.join("\n")).toContain("127.0.0.6: unreachable: connection to root@127.0.0.6:9 refused");
  // A changed record (the fix for a wrong port or hostKey) is tried again at once, back-off or not.
  writeFileSync(
    join(env.OFFLOAD_CONFIG_DIR!, "machines.ts"),
    `import { buildMachine } from "offload";\nexport default [\n${machine("127.0.0.6", ", speed: 2")}\n];\n`,
  );
  const third = await runHookInProcess(env, [x86(false)]);
  expect(third.messages.join("\n")).toMatch(/cannot build on 127\.0\.0\.6: connection to root@127\.0\.0\.6:9 refused/);
});

test("a machine has a name of its own apart from where it is (host)", async () => {
  const env = setup(
    "named",
    `buildMachine({ name: "nc-b0", host: "127.0.0.10", port: 9, user: "root", systems: ["x86_64-linux"], hostKey: "${HOST_KEY}", privateKey: "${clientKey}", connectTimeout: 2 }),`,
  );
  const run = await runHookInProcess(env, [x86(false)]);
  expect(run.messages.join("\n")).toMatch(/cannot build on nc-b0: connection to nc-b0 \(root@127\.0\.0\.10:9\) refused/);
});

test("per-build choice through the builders setting", async () => {
  const env = setup("restrict", machine("127.0.0.7"));
  const excluded = await runHookInProcess(env, [x86(false)], { ...BASE_SETTINGS, builders: "offload:exclude=127.0.0.7" });
  expect(excluded.replies).toEqual(["decline"]);
  expect(excluded.messages.join("\n")).toContain("127.0.0.7: excluded for this build");
  const invalid = await runHookInProcess(env, [x86(false)], { ...BASE_SETTINGS, builders: "offload:olny=127.0.0.7" });
  // The build fails cleanly as taken by "offload", with the reason as its log.
  expect(invalid.replies).toEqual(["accept offload"]);
  expect(invalid.code).toBe(1);
  expect(invalid.messages.join("\n")).toContain('unknown directive "olny=127.0.0.7"');
  // A name machines.ts does not have is a mistake, not a list that rules out every machine.
  const unknown = await runHookInProcess(env, [x86(false)], { ...BASE_SETTINGS, builders: "offload:only=nc-b0" });
  expect(unknown.replies).toEqual(["accept offload"]);
  expect(unknown.messages.join("\n")).toContain(
    'no machine called "nc-b0" in machines.ts (named by builders = "offload:only=nc-b0"); its machines are 127.0.0.7',
  );
  expect(unknown.messages.join("\n")).not.toContain("not in this build's list");
});

test("builders = \"\" (--builders '', which Nix passes on from any user) means no remote builds, and says so", async () => {
  // Even a broken machines.ts does not matter then.
  const env = setup("no-builders", `buildMachine({ name: "x", systems: ["x86_64-linux"], speed: -1 }),`);
  const run = await runHookInProcess(env, [x86(true), x86(true)], { ...BASE_SETTINGS, builders: "" });
  expect(run.replies).toEqual(["decline-permanently"]);
  expect(run.code).toBe(0);
  expect(run.messages.join("\n")).toContain("offload: builders is empty (--builders '', or builders = in nix.conf), which in Nix means no remote builds");
});

test("a state directory others can write to is refused (it holds the agent's socket and the slot secret)", async () => {
  const env = setup("open-state", machine("127.0.0.8"));
  mkdirSync(env.OFFLOAD_STATE_DIR!, { mode: 0o755 });
  chmodSync(env.OFFLOAD_STATE_DIR!, 0o777);
  const run = await runHookInProcess(env, [x86(false)]);
  expect(run.replies).toEqual(["accept offload"]);
  expect(run.code).toBe(1);
  expect(run.messages.join("\n")).toContain(
    `refusing state directory ${env.OFFLOAD_STATE_DIR}: others can write to it (mode 777)\n  fix: chmod go-w ${env.OFFLOAD_STATE_DIR}`,
  );
});

test("a broken machines.ts fails loudly instead of silently building locally", async () => {
  const env = setup("broken", `buildMachine({ name: "x", systems: ["x86_64-linux"], speed: -1 }),`);
  const run = await runHookInProcess(env, [x86(true)]);
  expect(run.replies).toEqual(["accept offload"]);
  expect(run.code).toBe(1);
  expect(run.messages.join("\n")).toMatch(/offload: .*machines\.ts has 1 invalid setting\n?.*speed: must be a positive finite number/s);
});
