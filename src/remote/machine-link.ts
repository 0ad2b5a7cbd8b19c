// Everything the hook needs from one machine for one build: a `nix-store --serve --write`
// session (borrowed warm from `offload agent`, else over a new SSH connection), its stderr
// (the build log), and the machine's load where a threshold needs it.
import type { BuildMachine } from "../../types/index.js";
import { withDeadline } from "../deadline.js";
import { OffloadError } from "../errors.js";
import { ServeClient } from "../store/serve.js";
import { openServeSession, readStderr, type ServeSession } from "../store/serve-session.js";
import { borrowSession } from "./agent-client.js";
import { machineStoreDir, readClockSkew, readDiskSpace } from "./probes.js";
import { runRemote } from "./remote-command.js";
import type { ConnectOptions, SshConnection } from "./ssh.js";

/** What the hook checks before building on a machine; each is absent when it could not be read. */
export interface MachineHealth {
  /** 1-minute load average per CPU (only read where an overloadThreshold applies). */
  load?: number;
  /** Free bytes on the file system of its store. */
  freeBytes?: number;
  /** Seconds its clock is ahead of ours (negative: behind). */
  clockSkew?: number;
}

export interface MachineLink {
  machine: BuildMachine;
  /** The serve session; its stderr carries the build log. */
  session: ServeSession;
  health: MachineHealth;
  close(): void;
}

export interface LinkOptions extends ConnectOptions {
  /** Borrow a warm session from the `offload agent` of this state dir (started on first use). */
  agentStateDir?: string;
}

const LOAD_TIMEOUT_MS = 3000;

/**
 * How long a borrowed session may take to answer one empty query. A warm session can have
 * died with its connection (the machine's sshd restarted) or hang (the machine frozen); it
 * is tested before the daemon is told "accept", while failing over is still possible.
 */
const WARM_SESSION_PROBE_MS = 3000;

export async function linkMachine(machine: BuildMachine, options: LinkOptions = {}, note: (line: string) => void = () => undefined): Promise<MachineLink> {
  if (options.agentStateDir) {
    const borrowed = await borrowSession(machine, options.agentStateDir).catch((error: unknown) => {
      // An agent that speaks another protocol is no reason to fail the build: connect directly.
      if (!(error instanceof OffloadError && error.code === "agent-protocol")) throw error;
      note(`offload: ${error.message}; connecting directly`);
      return undefined;
    });
    if (borrowed) {
      const { process, ready } = borrowed;
      const stderr = readStderr(process);
      const client = ServeClient.resume({ stdin: process.stdin, stdout: process.stdout, exit: process.exit, stderrTail: stderr.stderrTail }, ready.remoteVersion, { label: machine.name });
      const alive = await withDeadline(client.queryValidPaths([]), WARM_SESSION_PROBE_MS, () => new Error(`no answer within ${WARM_SESSION_PROBE_MS / 1000} s`)).then(
        () => undefined,
        (error: unknown) => (error instanceof Error ? error.message : String(error)),
      );
      if (alive === undefined) return { machine, session: { client, process, ...stderr }, health: ready.health ?? {}, close: () => process.close() };
      process.close();
      note(`offload: the agent's session to ${machine.name} is dead (${alive}); connecting directly`);
    }
  }
  // ssh2 loads only here: a hook served by the agent never needs it.
  const { connectMachine } = await import("./ssh.js");
  const connection = await connectMachine(machine, options);
  try {
    const [session, health] = await Promise.all([openServeSession(connection, { remoteStore: machine.remoteStore, label: machine.name }), readHealth(connection, machine)]);
    return {
      machine,
      session,
      health,
      close: () => {
        session.client.close();
        connection.close();
      },
    };
  } catch (error) {
    connection.close();
    throw error;
  }
}

/** Load, free store space and clock skew, read in parallel on extra channels (a probe that fails is just absent). */
export async function readHealth(connection: SshConnection, machine: BuildMachine): Promise<MachineHealth> {
  const absent = () => undefined;
  const [load, disk, clock] = await Promise.all([
    // The load matters only where a threshold applies.
    machine.overloadThreshold === null ? undefined : readLoad(connection).catch(absent),
    readDiskSpace(connection, machineStoreDir(machine)).catch(absent),
    readClockSkew(connection).catch(absent),
  ]);
  return { load, freeBytes: disk?.freeBytes, clockSkew: clock?.skew };
}

/** Normalized load: the 1-minute load average divided by the CPU count (Guix's measure). */
export async function readLoad(connection: SshConnection): Promise<number | undefined> {
  const result = await runRemote(connection, "cat /proc/loadavg; nproc", LOAD_TIMEOUT_MS);
  if (result.timedOut) return undefined;
  const [loadavg, cpus] = result.stdout.trim().split("\n");
  const load = Number(loadavg?.split(" ")[0]);
  const count = Number(cpus);
  return Number.isFinite(load) && count > 0 ? load / count : undefined;
}
