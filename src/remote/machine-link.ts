// Everything the hook needs from one machine for one build: an SSH connection, a
// `nix-store --serve --write` session on it, the session's stderr (the build log), and a
// fresh reading of the machine's load taken on a second channel while the session starts.
import type { BuildMachine } from "../../types/index.js";
import { openServeSession, type ServeSession } from "../store/serve-session.js";
import { runRemote } from "./remote-command.js";
import { connectMachine, type ConnectOptions, type SshConnection } from "./ssh.js";

export interface MachineLink {
  machine: BuildMachine;
  connection: SshConnection;
  session: ServeSession;
  /** 1-minute load average per CPU, if the machine answered quickly. */
  load?: number;
  /** The last few KiB of the session's stderr. */
  stderrTail(): string;
  /** Receives the session's stderr as it arrives (the remote build log). */
  onStderr(listener: (chunk: Buffer) => void): void;
  close(): void;
}

const STDERR_TAIL = 8192;
const LOAD_TIMEOUT_MS = 3000;

export async function linkMachine(machine: BuildMachine, options: ConnectOptions = {}): Promise<MachineLink> {
  const connection = await connectMachine(machine, options);
  let tail = "";
  const listeners: ((chunk: Buffer) => void)[] = [];
  try {
    const [session, load] = await Promise.all([
      openServeSession(connection, { remoteStore: machine.remoteStore, label: machine.name, stderrTail: () => tail }).then((session) => {
        session.process.stderr.on("data", (chunk: Buffer) => {
          tail = (tail + chunk.toString()).slice(-STDERR_TAIL);
          for (const listener of listeners) listener(chunk);
        });
        return session;
      }),
      readLoad(connection),
    ]);
    return {
      machine,
      connection,
      session,
      load,
      stderrTail: () => tail,
      onStderr: (listener) => listeners.push(listener),
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

/** Normalized load: the 1-minute load average divided by the CPU count (Guix's measure). */
export async function readLoad(connection: SshConnection): Promise<number | undefined> {
  const result = await runRemote(connection, "cat /proc/loadavg; nproc", LOAD_TIMEOUT_MS);
  if (result.timedOut) return undefined;
  const [loadavg, cpus] = result.stdout.trim().split("\n");
  const load = Number(loadavg?.split(" ")[0]);
  const count = Number(cpus);
  return Number.isFinite(load) && count > 0 ? load / count : undefined;
}
