// `offload check` for one machine: the steps in order, each a small named function that
// either passes with a detail line, warns, or fails with one OffloadError naming cause and
// fix. A failure skips only the steps that need what failed; nothing is thrown out of here.
import { GUIX_STORE_DIR } from "../guix/paths.js";
import type { BuildMachine } from "../../types/index.js";
import { asOffloadError, OffloadError, type FailureCode } from "../errors.js";
import { clockSkew, diskLow, nixStoreMissing, notTrusted, overloaded } from "../select/failures.js";
import type { PublicKey, SecretKey } from "../nix/keys.js";
import { DEFAULT_STORE_DIR } from "../nix/store-path.js";
import type { GuixDaemon } from "../store/guix-daemon.js";
import { guixDaemonSocket } from "../agent/guix-link.js";
import { machineStoreDir, oneLine, readClockSkew, readDiskSpace, readNixConfig, readNixStoreVersion, storeFilesDir, readLoad } from "../remote/probes.js";
import { connectMachine, type SshConnection } from "../remote/ssh.js";
import { machineTrustedKeys } from "../store/machine-trust.js";
import { openServeSession, type ServeSession } from "../store/serve-session.js";
import { connectGuixDaemon, guixRoundTrip, runsGuixDaemon, type GuixCheckKeys } from "./guix-steps.js";
import { compareCapabilities, remoteCapabilities, testSystem, type RemoteCapabilities } from "./capabilities.js";
import { signedRoundTrip } from "./round-trip.js";
import { isTrusted } from "./trust.js";

export const STEPS = ["connect", "nix-store", "store", "capabilities", "round-trip", "load", "disk", "clock"] as const;
export type StepName = (typeof STEPS)[number];

export interface StepResult {
  step: StepName;
  status: "ok" | "warn" | "fail" | "skipped";
  /** What was found (ok), or the cause (warn, fail, skipped). */
  detail: string;
  code?: string;
  fix?: string;
  seconds: number;
}

export interface MachineReport {
  machine: string;
  ok: boolean;
  seconds: number;
  steps: StepResult[];
  /** What the machine told us, for --json. */
  facts: {
    nixVersion?: string;
    systems?: string[];
    features?: string[];
    load?: number;
    freeBytes?: number;
    clockSkew?: number;
    signer?: string;
    /** The SSH login, when its Nix trusts it: it builds, and takes paths without checking their signatures. */
    trustedUser?: string;
  };
}

export interface CheckContext extends GuixCheckKeys {
  /** Our signing key, or why it cannot be used (the round trip then fails with that). */
  signingKey: SecretKey | OffloadError;
  acl: readonly PublicKey[];
  /** Below this much free space in the remote store, the disk step fails. */
  minFreeBytes: number;
  /** Seconds of clock difference beyond which the clock step fails. */
  maxClockSkew: number;
}

/** Seconds a step may take; the round trip includes a build (its own limit is 120 s). */
const STEP_TIMEOUT_S = 60;
const ROUND_TRIP_TIMEOUT_S = 180;

/** A step's outcome when it does not fail: the detail line, and a warning if any. */
type Passed = { detail: string; warning?: OffloadError };

export async function checkMachine(machine: BuildMachine, context: CheckContext, onStep: (result: StepResult) => void = () => {}): Promise<MachineReport> {
  const started = Date.now();
  const report: MachineReport = { machine: machine.name, ok: true, seconds: 0, steps: [], facts: {} };
  const add = (result: StepResult) => {
    report.steps.push(result);
    if (result.status === "fail") report.ok = false;
    onStep(result);
  };
  const step = async (name: StepName, body: () => Promise<Passed>): Promise<boolean> => {
    const begun = Date.now();
    const seconds = () => (Date.now() - begun) / 1000;
    let timer: NodeJS.Timeout | undefined;
    const limit = name === "round-trip" ? ROUND_TRIP_TIMEOUT_S : STEP_TIMEOUT_S;
    // A machine that stops answering must fail this step, not hang the whole check.
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new OffloadError(`${machine.name} did not finish the ${name} step within ${limit} s`, {
              code: "step-timeout",
              fix: `log in to ${machine.name} and look for a hung nix-store or nix-daemon (or a full disk)`,
            }),
          ),
        limit * 1000,
      );
    });
    try {
      const passed = await Promise.race([body(), timeout]);
      const warning = passed.warning;
      add(
        warning
          ? { step: name, status: "warn", detail: warning.message, code: warning.code, fix: warning.fix, seconds: seconds() }
          : { step: name, status: "ok", detail: passed.detail, seconds: seconds() },
      );
      return true;
    } catch (error) {
      const failure = asOffloadError(error);
      add({
        step: name,
        status: "fail",
        detail: oneLine(failure.message),
        code: failure.code,
        ...(failure.fix ? { fix: failure.fix } : {}),
        seconds: seconds(),
      });
      return false;
    } finally {
      clearTimeout(timer);
    }
  };
  const skip = (names: StepName[], why: string) => names.forEach((name) => add({ step: name, status: "skipped", detail: why, seconds: 0 }));

  let connection: SshConnection | undefined;
  let session: ServeSession | undefined;
  try {
    if (!(await step("connect", async () => ((connection = await connectMachine(machine)), { detail: connected(connection) })))) {
      skip(STEPS.slice(1), "needs an SSH connection");
      return report;
    }
    const ssh = connection!;
    // The shell probes do not depend on Nix: run them meanwhile.
    const resources = resourceSteps(machine, context, ssh, report);
    if (machine.daemon === "guix") {
      await guixSteps(machine, context, ssh, report, step, skip);
      for (const run of await resources(undefined)) await step(run.name, run.body);
      return report;
    }
    const nixConfig = await readNixConfig(ssh).catch(() => undefined);
    const storeSetting = nixConfig?.settings.get("store");
    if (await step("nix-store", () => nixStoreStep(machine, ssh, report))) {
      const storeOk = await step("store", async () => {
        session = await openServeSession(ssh, { remoteStore: machine.remoteStore, label: machine.name });
        return await storeStep(machine, session, nixConfig, report);
      });
      const capabilities = nixConfig ? remoteCapabilities(nixConfig.settings) : undefined;
      await step("capabilities", () => capabilitiesStep(machine, capabilities, report));
      const system = capabilities ? testSystem(machine, capabilities) : machine.systems[0];
      if (!storeOk) skip(["round-trip"], "needs a usable remote store");
      else if (!system) skip(["round-trip"], "no system of the record is one the machine builds");
      else await step("round-trip", () => roundTripStep(machine, context, session!, system, report));
    } else {
      skip(["store", "capabilities", "round-trip"], "needs nix-store on the machine");
    }
    for (const run of await resources(storeSetting)) await step(run.name, run.body);
    return report;
  } finally {
    session?.client.close();
    (connection as SshConnection | undefined)?.close();
    report.seconds = (Date.now() - started) / 1000;
  }
}

/** A Guix machine's steps: its guix-daemon in place of nix-store and the serve session; no build in the round trip. */
async function guixSteps(
  machine: BuildMachine,
  context: CheckContext,
  ssh: SshConnection,
  report: MachineReport,
  step: (name: StepName, body: () => Promise<Passed>) => Promise<boolean>,
  skip: (names: StepName[], why: string) => void,
): Promise<void> {
  let daemon: GuixDaemon | undefined;
  try {
    const reached = await step("nix-store", async () => {
      daemon = await connectGuixDaemon(machine, ssh);
      report.facts.nixVersion = `guix-daemon ${daemon.version >> 8}.${daemon.version & 0xff}`;
      return { detail: `guix-daemon (protocol ${daemon.version >> 8}.${daemon.version & 0xff}) at ${guixDaemonSocket(machine)}` };
    });
    if (!reached) {
      skip(["store", "capabilities", "round-trip"], "needs guix-daemon on the machine");
      return;
    }
    await step("store", async () => {
      await daemon!.queryValidPaths([ABSENT_GUIX_PATH]);
      return { detail: `/gnu/store answers ${ssh.target.user} (guix-daemon serves every user)` };
    });
    skip(["capabilities"], "guix-daemon does not tell its systems and features; machines.ts is taken at its word");
    await step("round-trip", async () => {
      const signer = await guixRoundTrip(machine, daemon!, context);
      report.facts.signer = signer;
      return { detail: `our signed item accepted by its guix-daemon, sent back signed by ${signer}${machine.signingKey ? " (the pinned key)" : ""}` };
    });
  } finally {
    (daemon as GuixDaemon | undefined)?.close();
  }
}

const ABSENT_GUIX_PATH = `${GUIX_STORE_DIR}/${"0".repeat(32)}-offload-check-absent`;

function connected(connection: SshConnection): string {
  const { user, host, port } = connection.target;
  return `logged in as ${user}@${host}:${port}, host key verified`;
}

async function nixStoreStep(machine: BuildMachine, ssh: SshConnection, report: MachineReport): Promise<Passed> {
  const version = await readNixStoreVersion(ssh, machine.remoteStore);
  if (!version.found) {
    if (version.code === 127 && (await runsGuixDaemon(ssh))) {
      throw new OffloadError(`${machine.name} has no nix-store but runs guix-daemon`, {
        code: "daemon-mismatch",
        fix: `set daemon: "guix" for ${machine.name} in machines.ts, so that guix-daemon's builds go there (and Nix's do not)`,
      });
    }
    if (version.code === 127) throw nixStoreMissing(machine, version.stderr);
    throw new OffloadError(`nix-store --version failed on ${machine.name} (exit ${version.code ?? "signal"}): ${version.stderr || "no message"}`, {
      code: "nix-store-broken",
      fix: `run nix-store --version on ${machine.name} and repair its Nix installation`,
    });
  }
  report.facts.nixVersion = version.version;
  return { detail: `nix-store ${version.version}` };
}

/** A path nobody has: asking for it makes the server really open its store (a daemon connects only when used). */
const ABSENT_PATH = `${DEFAULT_STORE_DIR}/${"0".repeat(32)}-offload-check-absent`;

async function storeStep(
  machine: BuildMachine,
  session: ServeSession,
  nixConfig: Awaited<ReturnType<typeof readNixConfig>>,
  report: MachineReport,
): Promise<Passed> {
  try {
    await session.client.queryValidPaths([ABSENT_PATH]);
  } catch (error) {
    throw daemonRefusal(machine, nixConfig?.user ?? machine.user ?? "this user", asOffloadError(error));
  }
  const version = `${session.client.remoteVersion >> 8}.${session.client.remoteVersion & 0xff}`;
  const store = machine.remoteStore ?? nixConfig?.settings.get("store") ?? "auto";
  if (!nixConfig) return { detail: `serve protocol ${version} on store ${store}; trust unknown (no nix show-config)` };
  const trust = {
    user: nixConfig.user,
    groups: nixConfig.groups,
    storeSetting: nixConfig.settings.get("store"),
    remoteStore: machine.remoteStore,
    trustedUsers: nixConfig.settings.get("trusted-users"),
  };
  if (!isTrusted(trust)) throw notTrusted(machine, nixConfig.user, trust.trustedUsers ?? "");
  report.facts.trustedUser = nixConfig.user;
  return { detail: `serve protocol ${version} on store ${store}, user ${nixConfig.user} may build` };
}

/** What the remote Nix said when its daemon would not serve this login, as cause and fix; other failures unchanged. */
function daemonRefusal(machine: BuildMachine, user: string, failure: OffloadError): OffloadError {
  const socket =
    /remote store '([^']+)'|socket at '([^']+)'/
      .exec(failure.message)
      ?.slice(1)
      .find((s) => s) ?? "its socket";
  const refusal = (message: string, code: FailureCode, fix: string) => new OffloadError(message, { code, fix, cause: failure });
  // Nix 2.8's daemon hangs up on users outside allowed-users before saying anything.
  if (/not allowed to connect|cannot open connection to remote store.*(Broken pipe|Connection reset)/.test(failure.message)) {
    return refusal(
      `the nix-daemon on ${machine.name} does not let ${user} connect (allowed-users)`,
      "remote-not-trusted",
      `add ${user} to allowed-users (and to trusted-users, to build) in ${machine.name}'s /etc/nix/nix.conf, then restart its nix-daemon`,
    );
  }
  if (/cannot connect to socket at .*Permission denied/.test(failure.message)) {
    return refusal(
      `${user} may not open the nix-daemon socket ${socket} on ${machine.name}`,
      "remote-not-trusted",
      `let ${user} reach ${socket} on ${machine.name} (permissions of the socket and its directories)`,
    );
  }
  if (/cannot connect to socket at .*(No such file|Connection refused)/.test(failure.message)) {
    return refusal(`no nix-daemon listens at ${socket} on ${machine.name}`, "remote-daemon-down", `start it on ${machine.name}: systemctl start nix-daemon`);
  }
  return failure;
}

async function capabilitiesStep(machine: BuildMachine, remote: RemoteCapabilities | undefined, report: MachineReport): Promise<Passed> {
  if (!remote) {
    return {
      detail: "",
      warning: new OffloadError(`cannot read ${machine.name}'s Nix settings (nix show-config failed)`, {
        code: "nix-config-unreadable",
        fix: `make nix reachable on the non-interactive PATH of ${machine.name}`,
      }),
    };
  }
  report.facts.systems = remote.systems;
  report.facts.features = remote.features;
  const verdict = compareCapabilities(machine, remote);
  if (verdict.failures.length > 0) {
    const [first, ...more] = verdict.failures;
    // One line per cause: the first carries the fix, the others follow as problems.
    throw new OffloadError([first!, ...more].map((f) => f.message).join("; "), { code: first!.code, fix: [first!, ...more].map((f) => f.fix).join("; ") });
  }
  return {
    detail: `builds ${machine.systems.join(", ")}${remote.features.length > 0 ? ` with ${remote.features.join(", ")}` : ""}`,
    ...(verdict.warning ? { warning: verdict.warning } : {}),
  };
}

async function roundTripStep(machine: BuildMachine, context: CheckContext, session: ServeSession, system: string, report: MachineReport): Promise<Passed> {
  if (context.signingKey instanceof OffloadError) throw context.signingKey;
  const trustedKeys = machineTrustedKeys(machine, context.acl);
  const signer = await signedRoundTrip({
    machine,
    remote: session.client,
    stderrTail: session.stderrTail,
    system,
    signingKey: context.signingKey,
    trustedKeys,
  });
  report.facts.signer = signer;
  // A trusted login's uploads are not checked: passing here says nothing of trusted-public-keys.
  const accepted = report.facts.trustedUser
    ? `our signed path accepted (without needing our key: ${report.facts.trustedUser} is trusted there, and Nix takes a trusted user's paths unsigned)`
    : "our signed path accepted";
  return { detail: `${accepted}, ${system} test build fetched back signed by ${signer}` };
}

/** Starts the load, disk and clock probes; the returned function turns them into steps once the store dir is known. */
function resourceSteps(machine: BuildMachine, context: CheckContext, ssh: SshConnection, report: MachineReport) {
  const load = readLoad(ssh).catch(() => undefined);
  const clock = readClockSkew(ssh).catch(() => undefined);
  return async (storeSetting: string | undefined): Promise<{ name: StepName; body: () => Promise<Passed> }[]> => {
    const dir = machine.daemon === "guix" ? machineStoreDir(machine) : storeFilesDir(machine.remoteStore ?? storeSetting);
    const disk = await readDiskSpace(ssh, dir).catch(() => undefined);
    return [
      {
        name: "load",
        body: async () => {
          const value = await load;
          if (value === undefined)
            return {
              detail: "",
              warning: new OffloadError(`${machine.name} did not report its load`, {
                code: "load-unknown",
                fix: `check that /proc/loadavg and nproc exist on ${machine.name}`,
              }),
            };
          report.facts.load = value;
          if (machine.overloadThreshold !== null && value > machine.overloadThreshold) throw overloaded(machine, value, machine.overloadThreshold);
          return { detail: `load ${value.toFixed(2)} per CPU${machine.overloadThreshold === null ? " (load ignored)" : ` ≤ ${machine.overloadThreshold}`}` };
        },
      },
      {
        name: "disk",
        body: async () => {
          if (!disk)
            return {
              detail: "",
              warning: new OffloadError(`cannot measure free space of ${dir} on ${machine.name}`, {
                code: "disk-unknown",
                fix: `run df -Pk ${dir} on ${machine.name}`,
              }),
            };
          report.facts.freeBytes = disk.freeBytes;
          if (disk.freeBytes < context.minFreeBytes) throw diskLow(machine, dir, disk.freeBytes, context.minFreeBytes);
          return { detail: `${(disk.freeBytes / 1024 ** 3).toFixed(1)} GiB free in ${dir}` };
        },
      },
      {
        name: "clock",
        body: async () => {
          const measured = await clock;
          if (!measured)
            return {
              detail: "",
              warning: new OffloadError(`${machine.name} did not tell its time`, { code: "clock-unknown", fix: `check that date works on ${machine.name}` }),
            };
          report.facts.clockSkew = measured.skew;
          if (Math.abs(measured.skew) - measured.uncertainty > context.maxClockSkew) throw clockSkew(machine, measured.skew, context.maxClockSkew);
          return { detail: `clock ${measured.skew >= 0 ? "+" : "−"}${Math.abs(measured.skew).toFixed(3)} s (±${measured.uncertainty.toFixed(3)})` };
        },
      },
    ];
  };
}
