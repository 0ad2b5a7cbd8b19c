// Everything the hook needs from one Guix build machine for one build: a connection to its
// guix-daemon (its socket forwarded over SSH, as `guix offload` reaches it) and its health.
// Unlike `guix offload`, no Guile starts on the machine: the daemon's protocol is spoken here.
import type { BuildMachine } from "../../types/index.js";
import { withDeadline } from "../deadline.js";
import { OffloadError } from "../errors.js";
import { GuixDaemon } from "../store/guix-daemon.js";
import { DEFAULT_GUIX_SOCKET } from "../guix/paths.js";
import { readHealth, type MachineHealth } from "../remote/probes.js";
import type { ConnectOptions, SshConnection } from "../remote/ssh.js";

export interface GuixLink {
  machine: BuildMachine;
  /** The machine's guix-daemon; its log lines (a build's output) go where `daemon.log` says. */
  daemon: GuixDaemon;
  health: MachineHealth;
  close(): void;
}

/** How long the machine's guix-daemon may take to greet: a stuck daemon must not hold the build. */
const GREETING_TIMEOUT_MS = 10_000;

/** The socket a Guix machine's daemon listens on (machines.ts `remoteStore`, Guix's daemon-socket). */
export function guixDaemonSocket(machine: BuildMachine): string {
  return machine.remoteStore ?? DEFAULT_GUIX_SOCKET;
}

/** The machine's guix-daemon through its socket forwarded over `connection`, greeted within a bound. */
export async function greetGuixDaemon(machine: BuildMachine, connection: SshConnection): Promise<GuixDaemon> {
  const socket = guixDaemonSocket(machine);
  const greet = async () => {
    const stream = await connection.openSocket(socket);
    return GuixDaemon.over(stream, `${machine.name}:${socket}`).catch((error: unknown) => {
      stream.destroy();
      throw error;
    });
  };
  return withDeadline(
    greet(),
    GREETING_TIMEOUT_MS,
    () =>
      new OffloadError(`${machine.name}'s guix-daemon (${socket}) did not greet within ${GREETING_TIMEOUT_MS / 1000} s`, {
        code: "guix-daemon-unreachable",
        fix: `check guix-daemon on ${machine.name} (herd status guix-daemon, or systemctl status guix-daemon)`,
      }),
  );
}

export async function linkGuixMachine(machine: BuildMachine, options: ConnectOptions = {}): Promise<GuixLink> {
  const { connectMachine } = await import("../remote/ssh.js");
  const connection = await connectMachine(machine, options);
  try {
    const [daemon, health] = await Promise.all([greetGuixDaemon(machine, connection), readHealth(connection, machine)]);
    return {
      machine,
      daemon,
      health,
      close: () => {
        daemon.close();
        connection.close();
      },
    };
  } catch (error) {
    connection.close();
    throw error;
  }
}
