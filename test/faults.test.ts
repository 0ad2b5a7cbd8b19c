// Faults on the way, against the real things: a master host (Nix 2.8) runs nix-build through
// offload-hook; its builders (Nix 2.8 and 2.34, real sshd) each live in a network namespace
// of their own (src/lab/network.ts). Links are cut mid-upload, mid-build and mid-download,
// sshd is killed, a builder is frozen, its store fills up, the hook is SIGKILLed. Each time
// the build must fail within a bound with one line naming the cause (or fail over, or ride
// it out), with nothing partial valid in any store, its slot free and no scratch left; and
// at the end nothing of the lab remains on this machine.
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import {
  clearFaults,
  cutLink,
  dropPackets,
  LAB_NETWORK,
  linkCounters,
  restoreLink,
  runInHost,
  shapeLink,
  sshArgs,
  startHost,
  stopHost,
} from "../src/lab/index.js";
import type { LabBuilder } from "../src/lab/index.js";
import { tcpReachable } from "../src/remote/tcp.js";
import { signal } from "../src/lab/processes.js";
import {
  LAB_UP_TIMEOUT_MS,
  addBlob,
  allSlotsFree,
  faultLabLeftovers,
  faultLabNamespaces,
  freezeBuilder,
  hookPids,
  landingHook,
  isValidIn,
  killRemoteNixStore,
  killSshd,
  outputPath,
  processesInHost,
  restartSshd,
  restartWithStore,
  scratchLeft,
  receivedBytes,
  startFaultLab,
  stopFaultLab,
  verifyStore,
  waitFor,
  type BuildOutcome,
  type FaultBuild,
  type FaultLab,
} from "./support/faults.js";

const exec = promisify(execFile);

/** max-silent-time of the builds whose transfers are cut: how long the hook lets a transfer stand still. */
const SILENCE = 10;
const SILENT = ["--option", "max-silent-time", String(SILENCE)];
/** A 20 MiB output or 40 MiB input takes 10 to 20 s at this rate: time to strike in the middle. */
const SLOW = { kbit: 16_000 };
const MiB = 1 << 20;

let fl: FaultLab | undefined;
let a: LabBuilder; // Nix 2.8, speed 2: chosen first
let b: LabBuilder; // Nix 2.34, speed 1: where builds fail over to

beforeAll(async () => {
  fl = await startFaultLab("faults", {
    builders: 2,
    builderSpecs: [
      { speed: 2, features: [], mandatoryFeatures: [], nix: "2.8" },
      { speed: 1, features: [], mandatoryFeatures: [], nix: "2.34" },
    ],
  });
  [a, b] = fl.lab.builders as [LabBuilder, LabBuilder];
}, LAB_UP_TIMEOUT_MS);

afterAll(async () => {
  if (fl) for (const builder of fl.lab.builders) await clearFaults(builder.host).catch(() => undefined);
  await stopFaultLab(fl);
}, 120_000);

function lab(): FaultLab {
  return fl!;
}

function salt(what: string): string {
  return `${what}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * The build failed, and said why in one line matching `cause`: the next line is its fix or
 * Nix's own verdict, not more text (a build log, a stack) run into it.
 */
function expectOneLineFailure(result: BuildOutcome, cause: RegExp): void {
  expect(result.code).not.toBe(0);
  const lines = result.stderr.split("\n");
  const at = lines.findIndex((line) => line.startsWith("offload: ") && cause.test(line));
  expect(lines[at] ?? result.stderr).toMatch(cause);
  expect(lines[at + 1]).toMatch(/^( {2}fix: |error: )/);
}

/** Nothing of the build is valid on the master, its hook left no scratch, every slot is free. */
async function expectNothingLeft(configDir: string, build: FaultBuild, builders: readonly LabBuilder[] = [a]): Promise<void> {
  expect(await isValidIn(lab().master, await outputPath(lab(), build))).toBe(false);
  expect(scratchLeft(lab(), configDir)).toEqual({ spool: [], landing: [] });
  expect(await allSlotsFree(configDir, builders)).toBe(true);
}

/** The build succeeded and its output, valid on the master, carries `builder`'s signature. */
async function expectBuiltBy(result: BuildOutcome, builder: LabBuilder): Promise<void> {
  expect(result.stderr).toContain(`built on ${builder.address}, signature by ${builder.name}-1 verified`);
  expect(result.code).toBe(0);
  expect(await isValidIn(lab().master, result.stdout)).toBe(true);
}

async function transferSeconds(builder: LabBuilder, bytes: number): Promise<number> {
  const started = Date.now();
  const { stdout } = await exec("ssh", sshArgs(lab().lab, builder, `head -c ${bytes} /dev/zero`), {
    encoding: "buffer",
    maxBuffer: 2 * bytes,
    timeout: 60_000,
  });
  expect(stdout.length).toBe(bytes);
  return (Date.now() - started) / 1000;
}

describe("the lab's network", () => {
  test("a builder lives at an address of its own, reachable from this machine only, where its sshd listens", async () => {
    for (const builder of [a, b]) {
      expect(builder.host.network?.address).toBe(builder.address);
      expect(builder.address.startsWith(LAB_NETWORK.split(".").slice(0, 2).join("."))).toBe(true);
      // Its namespace routes its own /30 and nothing else: no default route out.
      const { stdout } = await exec("nsenter", ["-t", String(builder.host.anchorPid), "-n", "ip", "-4", "route"]);
      expect(stdout.trim()).toBe(
        `${builder.host.network!.peer.replace(/\d+$/, (last) => String(Number(last) - 1))}/30 dev eth0 proto kernel scope link src ${builder.address}`,
      );
      expect(await tcpReachable(builder.address, builder.port)).toBe(true);
    }
    // offload's machines.ts of the lab points there.
    expect(readFileSync(lab().lab.machinesFile, "utf8")).toContain(`name: "${a.address}",\n    port: ${a.port},`);
  });

  test("shaping limits the rate, dropped packets slow a transfer down but it completes, a cut link is restored", async () => {
    const bytes = 4_000_000;
    const free = await transferSeconds(a, bytes);
    await shapeLink(a.host, { kbit: 8000 });
    const shaped = await transferSeconds(a, bytes);
    await clearFaults(a.host);
    // 4 MB at 8 Mbit/s is 4 s; unshaped, a veth moves it in a fraction of that.
    expect(shaped).toBeGreaterThan(3.5);
    expect(shaped).toBeLessThan(8);
    expect(free).toBeLessThan(2);

    await dropPackets(a.host, 10);
    expect(await transferSeconds(a, 1_000_000)).toBeLessThan(30);
    await clearFaults(a.host);

    await cutLink(a.host);
    expect(await tcpReachable(a.address, a.port, 1000)).toBe(false);
    await restoreLink(a.host);
    // Restored means reachable again soon, not necessarily at the first SYN (under load, in CI).
    let reachable = false;
    for (const deadline = Date.now() + 10_000; !reachable && Date.now() < deadline;) reachable = await tcpReachable(a.address, a.port, 1000);
    expect(reachable).toBe(true);
  });
});

interface Struck {
  configDir: string;
  build: FaultBuild;
  result: BuildOutcome;
  /** From the fault to nix-build's exit. */
  seconds: number;
}

type Phase = "upload" | "build" | "download";

/**
 * One build on builder a, and `strike` in the middle of its `phase`: the upload of a 40 MiB
 * input or the download of a 20 MiB output over a slowed link (10 to 20 s), or its remote
 * build (which talks every second for `sleep` s). `strike` gets the build's config dir. The
 * link's faults are cleared afterwards. `env` is added to the hook's environment.
 */
async function struck(
  name: string,
  phase: Phase,
  strike: (configDir: string) => Promise<unknown>,
  options: string[] = [],
  sleep = 20,
  env: Record<string, string> = {},
): Promise<Struck> {
  const configDir = lab().config(name, [a]);
  const build: FaultBuild = { salt: salt(name), ...(phase === "upload" ? { blob: await addBlob(lab(), 40) } : phase === "download" ? { mib: 20 } : { sleep }) };
  if (phase !== "build") await shapeLink(a.host, SLOW);
  try {
    const sent = (await linkCounters(a.host)).toHost;
    const building = lab().nixBuild(configDir, build, { options, env });
    const under: Record<Phase, () => Promise<boolean> | boolean> = {
      upload: async () => (await linkCounters(a.host)).toHost - sent > 4 * MiB,
      build: () => building.log().includes("building fault: 2 s"),
      download: () => receivedBytes(lab()) > 2 * MiB,
    };
    await waitFor(`the ${phase}`, under[phase]);
    await strike(configDir);
    const at = Date.now();
    const result = await building.done;
    return { configDir, build, result, seconds: (Date.now() - at) / 1000 };
  } finally {
    await clearFaults(a.host);
  }
}

describe("links cut", () => {
  test("for a few seconds mid-build: TCP rides it out and the build succeeds", async () => {
    const blip = async () => {
      await cutLink(a.host);
      await sleep(4000);
      await restoreLink(a.host);
    };
    const { result } = await struck("blip", "build", blip, [], 8);
    await expectBuiltBy(result, a);
  });

  test("mid-upload: fails after max-silent-time with the cause; the builder has no half of the input", async () => {
    const { configDir, build, result, seconds } = await struck("cut-upload", "upload", () => cutLink(a.host), SILENT);
    expect(seconds).toBeLessThan(SILENCE + 10);
    expectOneLineFailure(result, new RegExp(`sending inputs to ${a.address} stalled: no byte moved for ${SILENCE} s`));
    await expectNothingLeft(configDir, build);
    expect(await isValidIn(a.host, build.blob!)).toBe(false);
    // The link back, the same build goes through: the machine and its slots are usable again.
    await expectBuiltBy(await lab().nixBuild(configDir, build, { options: SILENT }).done, a);
    expect(await isValidIn(a.host, build.blob!)).toBe(true);
  });

  test("mid-download: fails after max-silent-time with the cause; nothing of it valid here", async () => {
    const { configDir, build, result, seconds } = await struck("cut-download", "download", () => cutLink(a.host), SILENT);
    expect(seconds).toBeLessThan(SILENCE + 10);
    expectOneLineFailure(result, new RegExp(`fetching the outputs of \\S+ from ${a.address} stalled: no byte moved for ${SILENCE} s`));
    await expectNothingLeft(configDir, build);
  });

  test("mid-build with max-silent-time: the failure names the lost connection, not a silent build", async () => {
    const { configDir, build, result, seconds } = await struck("cut-build-silent", "build", () => cutLink(a.host), SILENT, 40);
    expect(seconds).toBeLessThan(SILENCE + 20);
    await expectNothingLeft(configDir, build);
    // The build printed a line every second all along: only the link was silent.
    expect(result.stderr).not.toMatch(/seconds of silence/);
    expectOneLineFailure(result, new RegExp(`${a.address}.*(connection|unreachable|no answer)`));
  });

  test("mid-build with the daemon's defaults (no timeouts): 4 unanswered SSH keepalives end it, in one line", async () => {
    // Keepalives 2 s apart, not 15 (4 × 15 s = 75 s with the default, the same code path).
    const { configDir, build, result, seconds } = await struck("cut-build", "build", () => cutLink(a.host), [], 6, { OFFLOAD_SSH_KEEPALIVE: "2" });
    expect(seconds).toBeGreaterThanOrEqual(4 * 2 - 1);
    expect(seconds).toBeLessThan(30);
    await expectNothingLeft(configDir, build);
    expectOneLineFailure(result, new RegExp(`${a.address}: .*connection ended`));
  }, 90_000);
});

describe("a builder's processes", () => {
  test("sshd killed mid-download: fails at once naming the ended connection; restarted, the builder works again", async () => {
    try {
      // The listener, a session and its nix-store --serve at least.
      const kill = async () => expect(await killSshd(a)).toBeGreaterThanOrEqual(3);
      const { configDir, build, result, seconds } = await struck("kill-sshd", "download", kill);
      expect(seconds).toBeLessThan(10);
      expectOneLineFailure(result, new RegExp(`${a.address}: expected the reply to DumpStorePath, but the connection ended`));
      await expectNothingLeft(configDir, build);
    } finally {
      await restartSshd(a);
    }
    await expectBuiltBy(await lab().nixBuild(lab().config("after-sshd", [a]), { salt: salt("after-sshd") }).done, a);
  });

  test("the remote nix-store killed mid-build: one line naming it, without the build log run into it", async () => {
    const { configDir, build, result, seconds } = await struck("kill-nix-store", "build", async () =>
      expect(await killRemoteNixStore(a)).toBeGreaterThanOrEqual(1),
    );
    expect(seconds).toBeLessThan(10);
    await expectNothingLeft(configDir, build);
    expectOneLineFailure(
      result,
      new RegExp(`${a.address}: expected the reply to BuildDerivation, but the connection ended \\(server exited with (SIGKILL|KILL|9)`),
    );
  });

  test("a frozen builder (SIGSTOP) is passed over: the build fails over to the other one within a bound", async () => {
    const configDir = lab().config("frozen", [a, b]);
    // Warm: the agent holds a session to a, which freezing leaves open but mute.
    await expectBuiltBy(await lab().nixBuild(configDir, { salt: salt("warm-1") }).done, a);
    await expectBuiltBy(await lab().nixBuild(configDir, { salt: salt("warm-2") }).done, a);
    const thaw = await freezeBuilder(a);
    try {
      const result = await lab().nixBuild(configDir, { salt: salt("frozen") }).done;
      await expectBuiltBy(result, b);
      // The agent's warm session is probed before accepting (3 s), then a new connection gets no handshake (10 s).
      expect(result.stderr).toContain(`the agent's session to ${a.address} is dead (no answer within 3 s); connecting directly`);
      expect(result.stderr).toMatch(new RegExp(`cannot build on ${a.address}: \\S+ did not complete an SSH handshake within 10 s`));
      expect(result.seconds).toBeLessThan(30);
    } finally {
      thaw();
    }
    expect(await allSlotsFree(configDir, [a, b])).toBe(true);
  });

  test("a builder frozen mid-download: fails after max-silent-time; thawed, it builds again", async () => {
    let thaw: () => void = () => undefined;
    try {
      const { configDir, build, result, seconds } = await struck("frozen-download", "download", async () => (thaw = await freezeBuilder(a)), SILENT);
      expect(seconds).toBeLessThan(SILENCE + 10);
      expectOneLineFailure(result, new RegExp(`fetching the outputs of \\S+ from ${a.address} stalled: no byte moved for ${SILENCE} s`));
      await expectNothingLeft(configDir, build);
    } finally {
      thaw();
    }
    await expectBuiltBy(await lab().nixBuild(lab().config("thawed", [a]), { salt: salt("thawed") }, { options: SILENT }).done, a);
  });
});

describe("stores and hooks", () => {
  test("a builder's store fills up mid-upload: one line with the cause and a fix; nothing half-imported on either side", async () => {
    await restartWithStore(lab().lab, b, 64);
    try {
      const configDir = lab().config("store-full", [b]);
      const blob = await addBlob(lab(), 100);
      const build = { salt: salt("store-full"), blob };
      const result = await lab().nixBuild(configDir, build).done;
      expect(result.seconds).toBeLessThan(60);
      expectOneLineFailure(result, new RegExp(`${b.address}: .*No space left on device`));
      await expectNothingLeft(configDir, build, [b]);
      expect(await isValidIn(b.host, blob)).toBe(false);
      expect(await verifyStore(b.host)).toEqual({ code: 0, complaints: [] });
      // What to do about it, as for every other failure the hook reports.
      expect(result.stderr).toMatch(new RegExp(`No space left on device\n {2}fix: .*(nix-collect-garbage|free)`));
    } finally {
      await restartWithStore(lab().lab, b, undefined);
    }
  });

  test("a hook SIGKILLed mid-download leaves its half-received outputs in the landing area; the next hook sweeps them and the store verifies", async () => {
    const { configDir, build, result } = await struck("kill-hook", "download", async (dir) => signal((await landingHook(lab(), dir))!, "SIGKILL"));
    expect(result.code).not.toBe(0);
    expect(scratchLeft(lab(), configDir).landing).toHaveLength(1); // what a killed hook cannot clean up
    await expectBuiltBy(await lab().nixBuild(configDir, { salt: salt("sweeper") }).done, a);
    await expectNothingLeft(configDir, build);
    expect(await verifyStore(lab().master)).toEqual({ code: 0, complaints: [] });
  });

  test("a hook SIGKILLed while its outputs land leaves a landing dir; the next hook sweeps it and the store verifies", async () => {
    const configDir = lab().config("kill-landing", [a]);
    const build = { salt: salt("kill-landing"), mib: 128 };
    const landing = join(lab().master.dir, "nix", "store", ".offload-landing");
    const building = lab().nixBuild(configDir, build);
    // Landing 128 MiB takes a few hundred ms: watch closely for its directory, then strike.
    const deadline = Date.now() + 120_000;
    let struck = false;
    while (!struck && Date.now() < deadline) {
      if (existsSync(landing) && readdirSync(landing).length > 0) {
        for (const pid of hookPids(configDir)) signal(pid, "SIGKILL");
        struck = true;
      } else await new Promise((resolve) => setImmediate(resolve));
    }
    expect(struck).toBe(true);
    expect((await building.done).code).not.toBe(0);
    expect(scratchLeft(lab(), configDir).landing.length).toBeGreaterThanOrEqual(1);
    await expectBuiltBy(await lab().nixBuild(configDir, { salt: salt("landing-sweeper") }).done, a);
    await expectNothingLeft(configDir, build);
    expect(await verifyStore(lab().master)).toEqual({ code: 0, complaints: [] });
  }, 180_000);
});

describe("landing", () => {
  test("outputs larger than this machine's free store space are refused before a byte is fetched, with a fix", async () => {
    // A master whose /nix is a 64 MiB tmpfs: its store cannot take a 100 MiB output.
    const small = await startHost({
      name: "small-master",
      nix: "2.8",
      dir: join(lab().lab.dir, "small-master"),
      shared: [lab().lab.dir, lab().dir],
      storeMiB: 64,
    });
    try {
      const configDir = lab().config("small-master", [a]);
      const before = (await linkCounters(a.host)).fromHost;
      const result = await lab().nixBuild(configDir, { salt: salt("small-master"), mib: 100 }, { on: small }).done;
      expectOneLineFailure(result, /the outputs of \S+ need 100\.0 MiB in \/nix\/store, but it has only [0-9.]+ MiB free here; nothing fetched/);
      expect(result.stderr).toMatch(/ {2}fix: free space on this machine: nix-collect-garbage -d/);
      // The build's own traffic, not 100 MiB of NAR.
      expect((await linkCounters(a.host)).fromHost - before).toBeLessThan(MiB);
    } finally {
      await stopHost(small);
    }
  });

  test("a hook SIGKILLed after registering its outputs but before recording their signatures: the next hook records them", async () => {
    // A `nix-store` whose registration, once done, does not exit widens the moment between
    // landing's two steps (register-validity, then the signatures: src/store/land.ts) to as
    // long as the test wants.
    const bin = join(lab().dir, "lingering-registration");
    mkdirSync(bin, { mode: 0o755 });
    const realNixStore = (await exec("sh", ["-c", "command -v nix-store"])).stdout.trim();
    writeFileSync(
      join(bin, "nix-store"),
      `#!/bin/sh\ncase " $* " in *" --register-validity "*) ${realNixStore} "$@" || exit; touch ${bin}/registered; exec sleep 20;; esac\nexec ${realNixStore} "$@"\n`,
      { mode: 0o755 },
    );
    const configDir = lab().config("kill-before-sigs", [a]);
    const build = { salt: salt("kill-before-sigs") };
    const path = await outputPath(lab(), build);
    const building = lab().nixBuild(configDir, build, { env: { PATH: `${bin}:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` } });
    try {
      await waitFor("the registration", () => existsSync(join(bin, "registered")));
      signal((await landingHook(lab(), configDir))!, "SIGKILL");
      expect((await building.done).code).not.toBe(0);
      // Registered (verified) before the kill, its signatures written down in the landing area:
      // the next hook, whatever it builds, records them before anything else.
      expect(await isValidIn(lab().master, path)).toBe(true);
      await expectBuiltBy(await lab().nixBuild(configDir, { salt: salt("after-kill-before-sigs") }).done, a);
      const signatures = (await runInHost(lab().master, ["nix", "--extra-experimental-features", "nix-command", "path-info", "--sigs", path])).stdout;
      expect(signatures).toMatch(new RegExp(`\\s${a.name}-1:`));
    } finally {
      for (const pid of await processesInHost(lab().master, `sleep 20`)) signal(pid, "SIGKILL");
    }
  });
});

test("stopped, the fault lab leaves nothing: no host, process, mount, link, route or directory", async () => {
  const stopped = lab();
  const namespaces = await faultLabNamespaces(stopped);
  expect(namespaces.filter((namespace) => namespace.startsWith("net:"))).toHaveLength(2);
  fl = undefined;
  await stopFaultLab(stopped);
  expect(await faultLabLeftovers(stopped, namespaces)).toEqual([]);
});
