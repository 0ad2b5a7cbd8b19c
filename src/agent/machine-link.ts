// Everything the hook needs from one machine for one build: a `nix-store --serve --write`
// session (borrowed warm from `offload agent`, else over a new SSH connection), its stderr
// (the build log), and the machine's load where a threshold needs it.
import type { BuildMachine } from "../../types/index.js";
import { withDeadline } from "../deadline.js";
import { OffloadError } from "../errors.js";
import { ServeClient } from "../store/serve.js";
import { openServeSession, readStderr, type ServeSession } from "../store/serve-session.js";
import { borrowSession, type SessionLender } from "./agent-client.js";
import { readHealth, type MachineHealth } from "../remote/probes.js";
import type { ConnectOptions } from "../remote/ssh.js";

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
  /** The agent's sessions in this process, for a hook the agent serves (instead of its socket). */
  lender?: SessionLender;
}

/**
 * How long a borrowed session may take to answer one empty query. A warm session can have
 * died with its connection (the machine's sshd restarted) or hang (the machine frozen); it
 * is tested before the daemon is told "accept", while failing over is still possible.
 */
const WARM_SESSION_PROBE_MS = 3000;

export async function linkMachine(machine: BuildMachine, options: LinkOptions = {}, note: (line: string) => void = () => undefined): Promise<MachineLink> {
  if (options.agentStateDir) {
    const borrowed = await (options.lender ? options.lender.borrow(machine) : borrowSession(machine, options.agentStateDir)).catch((error: unknown) => {
      // An agent that speaks another protocol is no reason to fail the build: connect directly.
      if (!(error instanceof OffloadError && error.code === "agent-protocol")) throw error;
      note(`offload: ${error.message}; connecting directly`);
      return undefined;
    });
    if (borrowed) {
      const { process, ready } = borrowed;
      const stderr = readStderr(process);
      const client = ServeClient.resume(
        { stdin: process.stdin, stdout: process.stdout, exit: process.exit, stderrTail: stderr.stderrTail },
        ready.remoteVersion,
        { label: machine.name },
      );
      const alive = await withDeadline(
        client.queryValidPaths([]),
        WARM_SESSION_PROBE_MS,
        () => new Error(`no answer within ${WARM_SESSION_PROBE_MS / 1000} s`),
      ).then(
        () => undefined,
        (error: unknown) => (error instanceof Error ? error.message : String(error)),
      );
      if (alive === undefined) return { machine, session: { client, process, ...stderr }, health: ready.health ?? {}, close: () => process.close() };
      process.close();
      note(`offload: the agent's session to ${machine.name} is dead (${alive}); connecting directly`);
    }
  }
  // ssh2 loads only here: a hook served by the agent never needs it.
  const { connectMachine } = await import("../remote/ssh.js");
  const connection = await connectMachine(machine, options);
  try {
    const [session, health] = await Promise.all([
      openServeSession(connection, { remoteStore: machine.remoteStore, label: machine.name }),
      readHealth(connection, machine),
    ]);
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
