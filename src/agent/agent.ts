// `offload agent`: keeps SSH connections to build machines open between builds, each with
// one `nix-store --serve --write` session already started, greeted and warmed up, so a hook
// borrows a ready session instead of paying for a handshake and a remote process start on
// every derivation (like OpenSSH's ControlPersist, plus the warm store). Hooks reach it on
// <stateDir>/agent-<version>-p<protocol>.sock (mode 0600 in a root-owned directory: it speaks for root's keys).
// One agent per state dir; it exits when idle.
//
// Everything per build rides connections already open: 4 sessions per machine are kept warm (a build never waits for a remote process to start, which costs a
// whole login shell on machines with a slow ~/.bashrc), and health is read by one shell kept
// running per connection (probes.ts HealthProbe: a round trip, no new channel). Health is
// re-read in the background while connected and written to the machine facts, so the hook
// decides on a load at most seconds old, with offload's own builds taken out (own-load.ts).
import { appendFileSync, chmodSync, existsSync, unlinkSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import type { BuildMachine } from "../../types/index.js";
import { asOffloadError } from "../errors.js";
import { recordFacts } from "../select/machine-facts.js";
import { externalLoad, OwnLoad } from "../select/own-load.js";
import { acquireSlot } from "../select/slots.js";
import { ServeClient } from "../store/serve.js";
import { serveCommand } from "../store/serve-session.js";
import type { BorrowedSession, SessionLender } from "./agent-client.js";
import { openHookDoor, type HookVisit } from "./hook-door.js";
import { AGENT_SOCKET, Frame, FrameReader, frame, type AgentReady, type AgentRequest } from "./agent-frames.js";
import type { MachineHealth } from "../remote/probes.js";
import { HealthProbe, machineStoreDir } from "../remote/probes.js";
import { connectMachine, type RemoteProcess, type SshConnection } from "../remote/ssh.js";

/** Health older than this is not handed out; it is re-read in the background after half of it. */
const HEALTH_FRESH_MS = 10_000;

/**
 * Sessions kept warm per machine, whatever its parallelBuilds: each build uses one up, the
 * daemon hands out builds a hook start apart (0.1–0.3 s), and a new session takes a login
 * (up to a second on a slow shell). Four cover that; each is an idle remote process, and
 * a big machine's 32 logins at once would be a burst.
 */
const WARM_SESSIONS = 4;

/** A remote nix-store that has been greeted and has opened its store: ready for commands. */
interface WarmSession {
  process: RemoteProcess;
  remoteVersion: number;
  /** stderr it wrote while warming up (warnings), handed on with it. */
  stderr: Buffer[];
  /** Set once the remote process has exited (a warm session can die while it waits). */
  exited: boolean;
}

interface Machine {
  connection: SshConnection;
  /** Sessions warming up or warm, oldest first; up to the machine's parallelBuilds. */
  warm: Promise<WarmSession>[];
  probe: Promise<HealthProbe>;
  /** Our builds running there (sessions lent out), and their moving average. */
  active: number;
  own: OwnLoad;
  lastUsed: number;
  health?: { value: MachineHealth; at: number };
}

export interface AgentOptions {
  stateDir: string;
  /** Close a machine's connection after this long unused, and exit when nothing is open. */
  idleMs: number;
  /** Serves a build hook handed over by bin/offload-hook (hook/served.ts), lending it sessions in this process; without it the agent opens no door. */
  serveHook?: (visit: HookVisit, log: (line: string) => void, lender: SessionLender) => Promise<void>;
}

export async function runAgent(options: AgentOptions): Promise<void> {
  // The kernel lock makes this the only agent of the state dir; it dies with the process.
  const lock = await acquireSlot(options.stateDir, "\0agent", 1);
  if (!lock) return;
  const log = (line: string) => {
    try {
      appendFileSync(join(options.stateDir, "agent.log"), `${new Date().toISOString()} ${line}\n`);
    } catch {
      // the state dir is gone: the sweep below notices and ends the agent
    }
  };
  const machines = new Map<string, Machine>();
  let clients = 0;
  let lastActivity = Date.now();

  const socketPath = join(options.stateDir, AGENT_SOCKET);
  try {
    unlinkSync(socketPath); // left by an agent that died; the lock says none is running
  } catch {
    // none there
  }
  const server = createServer((socket) => {
    clients++;
    lastActivity = Date.now();
    socket.once("close", () => {
      clients--;
      lastActivity = Date.now();
    });
    serve(socket).catch((error: unknown) => log(`client failed: ${asOffloadError(error).message}`));
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  chmodSync(socketPath, 0o600);
  log(`listening on ${socketPath} (pid ${process.pid})`);
  const serveHook = options.serveHook;
  const openDoor = (serve: NonNullable<typeof serveHook>) => {
    try {
      return openHookDoor(
        options.stateDir,
        (visit) => {
          clients++;
          lastActivity = Date.now();
          void serve(visit, log, { stateDir: options.stateDir, borrow: lendHere })
            .catch((error: unknown) => log(`hook ${visit.pid}: ${asOffloadError(error).message}`))
            .finally(() => {
              clients--;
              lastActivity = Date.now();
            });
        },
        log,
      );
    } catch (error) {
      // Hook scripts then find no door and run their hooks in processes of their own.
      log(`no door for hook scripts: ${asOffloadError(error).message}`);
      return undefined;
    }
  };
  const door = serveHook && openDoor(serveHook);

  const shutdown = (why: string) => {
    clearInterval(sweep);
    door?.close();
    for (const machine of machines.values()) machine.connection.close();
    machines.clear();
    server.close();
    void lock.release();
    log(why);
  };
  const sweep = setInterval(
    () => {
      const now = Date.now();
      // Someone removed the state dir (or the socket): nobody can reach this agent any more.
      if (!existsSync(socketPath)) return shutdown("socket removed, exiting");
      for (const [key, machine] of machines) {
        if (machine.active === 0 && now - machine.lastUsed > options.idleMs) {
          for (const warm of machine.warm)
            void warm.then(
              (session) => session.process.close(),
              () => undefined,
            );
          machine.connection.close();
          machines.delete(key);
        } else if (!machine.health || now - machine.health.at > HEALTH_FRESH_MS / 2) {
          // Fresh facts for machines the hook is not choosing too: a load read once must not keep one away for a minute.
          void refreshHealth(machine, JSON.parse(key) as BuildMachine).catch(() => undefined);
        }
      }
      if (machines.size === 0 && clients === 0 && now - lastActivity > options.idleMs) shutdown("idle, exiting");
    },
    Math.min(options.idleMs, 5000),
  );

  async function serve(socket: Socket): Promise<void> {
    // One reader for the socket's life: frames after the request wait in `early` until the relay runs.
    const early: [Frame, Buffer][] = [];
    let onFrame: (type: Frame, payload: Buffer) => void = (type, payload) => early.push([type, payload]);
    const reader = new FrameReader((type, payload) => onFrame(type, payload));
    socket.on("data", (chunk: Buffer) => reader.push(chunk));
    socket.on("error", () => undefined);
    const request = await new Promise<AgentRequest>((resolve, reject) => {
      onFrame = (type, payload) => {
        onFrame = (next, bytes) => early.push([next, bytes]);
        if (type === Frame.Request) resolve(JSON.parse(payload.toString()) as AgentRequest);
        else reject(new Error(`expected a request frame, got type ${type}`));
      };
      socket.once("close", () => reject(new Error("the client left before asking")));
    });
    let lent: Lent;
    try {
      lent = await lend(request.machine);
    } catch (error) {
      const failure = asOffloadError(error);
      socket.end(frame(Frame.Error, JSON.stringify({ message: failure.message, code: failure.code, fix: failure.fix })));
      return;
    }
    socket.write(frame(Frame.Ready, JSON.stringify(lent.ready)));
    onFrame = relay(socket, lent.session, lent.done);
    for (const [type, payload] of early.splice(0)) onFrame(type, payload);
  }

  /** A warm session on `record`'s machine, counted as one of our builds there until `done`. */
  async function lend(record: BuildMachine): Promise<Lent> {
    const { machine, session } = await borrow(JSON.stringify(record), record);
    machine.active++;
    machine.own.set(machine.active);
    // Stale health would let a full or overloaded machine through: measure again first.
    if (!machine.health || Date.now() - machine.health.at >= HEALTH_FRESH_MS) await refreshHealth(machine, record);
    let finished = false;
    const done = () => {
      if (finished) return;
      finished = true;
      machine.active--;
      machine.own.set(machine.active);
      machine.lastUsed = Date.now();
    };
    return { session, ready: { remoteVersion: session.remoteVersion, health: machine.health!.value }, done };
  }

  /** A session for a hook served in this process: the remote process itself, its warm-up stderr first. */
  async function lendHere(record: BuildMachine): Promise<BorrowedSession> {
    const { session, ready, done } = await lend(record);
    const { process } = session;
    const stderr = new PassThrough();
    for (const chunk of session.stderr) stderr.write(chunk);
    process.stderr.pipe(stderr);
    void process.exit.then(done);
    return {
      process: {
        stdin: process.stdin,
        stdout: process.stdout,
        stderr,
        exit: process.exit,
        close: () => {
          process.close(); // ends the remote command (and any build it runs)
          done();
        },
      },
      ready,
    };
  }

  /** Connections being made, so that hooks asking for the same machine at once share one. */
  const connecting = new Map<string, Promise<Machine>>();

  async function machineFor(key: string, record: BuildMachine): Promise<Machine> {
    const known = machines.get(key);
    if (known) return known;
    let pending = connecting.get(key);
    if (!pending) {
      pending = (async () => {
        const started = Date.now();
        const connection = await connectMachine(record);
        const probe = HealthProbe.start(connection, machineStoreDir(record));
        probe.catch(() => undefined); // surfaces when read
        const machine: Machine = { connection, warm: [], probe, active: 0, own: new OwnLoad(), lastUsed: Date.now() };
        machines.set(key, machine);
        log(`connected to ${record.name} in ${Date.now() - started} ms`);
        return machine;
      })().finally(() => connecting.delete(key));
      connecting.set(key, pending);
    }
    return pending;
  }

  /** Keeps WARM_SESSIONS sessions warm or warming on the machine. */
  function topUp(machine: Machine, record: BuildMachine): void {
    while (machine.warm.length < WARM_SESSIONS) {
      const session = warmUp(machine.connection, record);
      session.catch(() => undefined); // surfaces when borrowed
      machine.warm.push(session);
    }
  }

  /** A warm session on the machine, connecting first if needed; keeps the others warming. */
  async function borrow(key: string, record: BuildMachine): Promise<{ machine: Machine; session: WarmSession }> {
    for (let attempt = 0; ; attempt++) {
      const machine = await machineFor(key, record);
      topUp(machine, record);
      const pending = machine.warm.shift()!;
      try {
        // A new connection has no health yet: read it while the session warms up.
        const [session] = await Promise.all([pending, machine.health ? undefined : refreshHealth(machine, record)]);
        // A session that died while waiting (machine rebooted, sshd restarted) is no use.
        if (session.exited) throw new Error("the warm session had ended");
        machine.lastUsed = Date.now();
        topUp(machine, record);
        if (Date.now() - machine.health!.at > HEALTH_FRESH_MS / 2) void refreshHealth(machine, record).catch(() => undefined);
        return { machine, session };
      } catch (error) {
        // The connection may have died: drop it and try once more with a fresh one.
        machine.connection.close();
        if (machines.get(key) === machine) machines.delete(key);
        if (attempt > 0) throw error;
      }
    }
  }

  /** One reading of the machine's health, our own builds taken out of its load; written to its facts for the hook's decisions. */
  async function refreshHealth(machine: Machine, record: BuildMachine): Promise<void> {
    // A probe that could not start leaves health unknown (as a failed reading does), not the build failed.
    const reading = await machine.probe.then(
      (probe) => probe.read(),
      () => ({}) as Awaited<ReturnType<HealthProbe["read"]>>,
    );
    const now = Date.now();
    const { loadAverage, cpus } = reading;
    const load = loadAverage === undefined || cpus === undefined ? undefined : externalLoad(loadAverage, cpus, machine.own.value(now));
    machine.health = { value: { load, freeBytes: reading.freeBytes, clockSkew: reading.clockSkew }, at: now };
    if (load !== undefined && record.overloadThreshold !== null) recordFacts(options.stateDir, record.name, { load: { value: load, at: now } });
  }
}

/** Starts `nix-store --serve --write`, greets it and has it open its store (the first command is slow). */
async function warmUp(connection: SshConnection, record: BuildMachine): Promise<WarmSession> {
  const process = await connection.exec(serveCommand({ remoteStore: record.remoteStore }));
  let exited = false;
  void process.exit.then(() => (exited = true));
  const stderr: Buffer[] = [];
  const onStderr = (chunk: Buffer) => stderr.push(chunk);
  process.stderr.on("data", onStderr);
  // The client reads through a tap that is cut once warm: no byte of a later reply is taken.
  const tap = new PassThrough();
  const feed = (chunk: Buffer) => tap.write(chunk);
  process.stdout.on("data", feed);
  try {
    const client = await ServeClient.connect(
      { stdin: process.stdin, stdout: tap, exit: process.exit, stderrTail: () => Buffer.concat(stderr).toString() },
      { label: record.name },
    );
    await client.queryValidPaths([]);
    return {
      process,
      remoteVersion: client.remoteVersion,
      stderr,
      get exited() {
        return exited;
      },
    };
  } catch (error) {
    process.close();
    throw error;
  } finally {
    process.stdout.off("data", feed);
    process.stdout.pause();
    process.stderr.off("data", onStderr);
    process.stderr.pause();
  }
}

/** A session lent to a hook, with what the hook is told of the machine; `done` when the hook is (idempotent). */
interface Lent {
  session: WarmSession;
  ready: AgentReady;
  done: () => void;
}

/** Pipes the session to the hook's socket and back until either side ends; returns the handler of the hook's frames. */
function relay(socket: Socket, session: WarmSession, done: () => void): (type: Frame, payload: Buffer) => void {
  const { process } = session;
  for (const chunk of session.stderr) socket.write(frame(Frame.Stderr, chunk));
  // Backpressure both ways, so that memory stays bounded whatever the size of a NAR: a hook
  // that reads slowly pauses the remote output (SSH's window then stops the machine), and a
  // slow machine pauses the hook's uploads.
  const forward = (type: Frame) => (chunk: Buffer) => {
    if (socket.write(frame(type, chunk))) return;
    process.stdout.pause();
    process.stderr.pause();
    socket.once("drain", () => {
      process.stdout.resume();
      process.stderr.resume();
    });
  };
  process.stdout.on("data", forward(Frame.Stdout));
  process.stderr.on("data", forward(Frame.Stderr));
  process.stdout.resume();
  process.stderr.resume();
  void process.exit.then((status) => {
    socket.end(frame(Frame.Exit, JSON.stringify(status)));
    done();
  });
  socket.once("close", () => {
    process.close(); // the hook went away: end the remote command (and any build it runs)
    done();
  });
  return (type, payload) => {
    if (type === Frame.Stdin && !process.stdin.write(payload)) {
      socket.pause();
      process.stdin.once("drain", () => socket.resume());
    } else if (type === Frame.StdinEnd) process.stdin.end();
  };
}
