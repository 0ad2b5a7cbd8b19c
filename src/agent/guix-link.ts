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

/**
 * SSH connections kept between builds, one per machine record: in the agent, which serves
 * one hook after another (a hook process ends after its build anyway). Each build opens its
 * own channel to the machine's guix-daemon on it, so it skips only the SSH handshake.
 */
const kept = new Map<string, { connection: Promise<SshConnection>; idle?: NodeJS.Timeout }>();
/** A kept connection unused this long is closed. */
const KEPT_IDLE_MS = 60_000;

export async function linkGuixMachine(machine: BuildMachine, options: ConnectOptions = {}): Promise<GuixLink> {
  const key = JSON.stringify(machine);
  // A kept connection may have died meanwhile (the machine rebooted): then once more, afresh.
  for (let attempt = 0; ; attempt++) {
    const reused = kept.has(key);
    const entry = kept.get(key) ?? { connection: connectFresh(machine, options) };
    kept.set(key, entry);
    clearTimeout(entry.idle);
    const drop = () => {
      if (kept.get(key) === entry) kept.delete(key);
      void entry.connection.then((connection) => connection.close()).catch(() => undefined);
    };
    try {
      const connection = await entry.connection;
      const [daemon, health] = await Promise.all([greetGuixDaemon(machine, connection), readHealth(connection, machine)]);
      return {
        machine,
        daemon,
        health,
        close: () => {
          daemon.close();
          if (kept.get(key) !== entry) return connection.close();
          entry.idle = setTimeout(drop, KEPT_IDLE_MS);
          entry.idle.unref();
        },
      };
    } catch (error) {
      drop();
      if (!reused || attempt > 0) throw error;
    }
  }
}

async function connectFresh(machine: BuildMachine, options: ConnectOptions): Promise<SshConnection> {
  // ssh2 loads only here.
  const { connectMachine } = await import("../remote/ssh.js");
  return connectMachine(machine, options);
}
