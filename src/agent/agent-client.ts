// The hook's side of `offload agent`: borrow a warm serve session on a machine through the
// agent's socket, or learn that there is no agent (then start one for the builds to come,
// and let the caller connect directly this time).
import { spawn } from "node:child_process";
import { createConnection, type Socket } from "node:net";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";
import type { BuildMachine } from "../../types/index.js";
import { OffloadError, type FailureCode } from "../errors.js";
import { PACKAGE_ROOT } from "../package-root.js";
import { AGENT_SOCKET, Frame, FrameReader, frame, type AgentReady } from "./agent-frames.js";
import type { ExitStatus, RemoteProcess } from "../remote/ssh.js";

export interface BorrowedSession {
  process: RemoteProcess;
  ready: AgentReady;
}

/**
 * The agent's sessions for a hook it serves in its own process: the same warm sessions as
 * through the socket, handed over without the socket's framing and copying in between.
 */
export interface SessionLender {
  /** The state dir whose machines' facts and slots the sessions account for. */
  stateDir: string;
  borrow(machine: BuildMachine): Promise<BorrowedSession>;
}

/** A session from the agent; undefined when no agent runs (one is then started in the background). */
export async function borrowSession(machine: BuildMachine, stateDir: string): Promise<BorrowedSession | undefined> {
  const socket = await connectAgent(join(stateDir, AGENT_SOCKET));
  if (!socket) {
    startAgent();
    return undefined;
  }
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let settle: (result: { ready?: AgentReady; error?: OffloadError }) => void = () => undefined;
  const answered = new Promise<{ ready?: AgentReady; error?: OffloadError }>((resolve) => (settle = resolve));
  let resolveExit: (status: ExitStatus) => void = () => undefined;
  const exit = new Promise<ExitStatus>((resolve) => (resolveExit = resolve));

  const reader = new FrameReader((type, payload) => {
    // The hook reads stdout as it needs it (a NAR into a spool file): until then, stop reading the socket.
    if (type === Frame.Stdout) {
      if (!stdout.write(payload)) {
        socket.pause();
        stdout.once("drain", () => socket.resume());
      }
    } else if (type === Frame.Stderr) stderr.write(payload);
    else if (type === Frame.Ready || type === Frame.Error || type === Frame.Exit) {
      const value = parseFrame(payload, machine);
      if (value instanceof OffloadError) {
        settle({ error: value });
        socket.destroy();
      } else if (type === Frame.Ready) settle({ ready: value as AgentReady });
      else if (type === Frame.Error) {
        const error = value as { message: string; code: FailureCode; fix?: string };
        settle({ error: new OffloadError(error.message, { code: error.code, fix: error.fix }) });
      } else resolveExit(value as ExitStatus);
    }
  });
  socket.on("data", (chunk: Buffer) => reader.push(chunk));
  socket.on("error", () => undefined);
  socket.once("close", () => {
    settle({
      error: new OffloadError(`offload agent closed the connection to ${machine.name}`, {
        code: "unreachable",
        fix: `offload check ${machine.name}; the agent restarts on the next build (OFFLOAD_AGENT=0 connects without it)`,
      }),
    });
    resolveExit({ code: null }); // no Exit frame came: the agent or its connection died
    stdout.end();
    stderr.end();
  });
  socket.write(frame(Frame.Request, JSON.stringify({ machine })));

  const answer = await answered;
  if (answer.error) {
    socket.destroy();
    throw answer.error;
  }
  const stdin = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      socket.write(frame(Frame.Stdin, chunk), callback);
    },
    final(callback) {
      socket.write(frame(Frame.StdinEnd), callback);
    },
  });
  return { process: { stdin, stdout, stderr, exit, close: () => socket.destroy() }, ready: answer.ready! };
}

/**
 * Starts an agent for the builds to come unless one listens: what the Guix hook, which
 * borrows no sessions, does so that the next hooks are served (bin/offload-hook).
 */
export async function ensureAgent(stateDir: string): Promise<void> {
  const socket = await connectAgent(join(stateDir, AGENT_SOCKET));
  if (socket) socket.destroy();
  else startAgent();
}

/** A JSON frame from the agent; a malformed one (an agent of another version, a stray process) is an error, not a crash. */
function parseFrame(payload: Buffer, machine: BuildMachine): unknown {
  try {
    return JSON.parse(payload.toString());
  } catch {
    return new OffloadError(`offload agent sent a malformed frame for ${machine.name}`, {
      code: "agent-protocol",
      fix: "stop the running agent (pkill -f 'offload.js agent'): the next build starts a new one",
    });
  }
}

function connectAgent(path: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = createConnection({ path });
    socket.once("connect", () => resolve(socket));
    socket.once("error", () => resolve(undefined)); // none listening (ENOENT, ECONNREFUSED)
  });
}

/**
 * Starts the agent detached, in its own session. Its descriptors 0–9 are /dev/null: it must
 * not inherit the daemon's log pipe (fd 4) or stderr, or the daemon would wait for it forever.
 */
function startAgent(): void {
  const child = spawn(process.execPath, [join(PACKAGE_ROOT, "bin", "offload.js"), "agent"], {
    detached: true,
    stdio: Array.from({ length: 10 }, () => "ignore" as const),
    cwd: "/",
  });
  child.on("error", () => undefined);
  child.unref();
}
