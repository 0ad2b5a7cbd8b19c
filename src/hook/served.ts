// A build hook served inside `offload agent` (its door: agent/hook-door.ts). It is the same
// runHook (or runGuixHook) as a hook process runs, on the same pipes: the daemon's, reopened through
// /proc/PID/fd of the waiting hook script, with the script's environment. When it is done
// its exit status goes back to the script, which exits with it.
import { closeSync, constants, fstatSync, openSync, readFileSync } from "node:fs";
import { Socket } from "node:net";
import type { SessionLender } from "../agent/agent-client.js";
import type { HookVisit } from "../agent/hook-door.js";
import { EXIT } from "../errors.js";
import { readProcStat } from "../files/proc-stat.js";
import { parentNixVersion } from "./daemon.js";
import type { HookIo } from "./protocol.js";
import { runGuixHook } from "./guix.js";
import { runHook } from "./run.js";

/** How often a served hook checks that its script still runs: the daemon stops a hook by killing it. */
const ALIVE_CHECK_MS = 250;

/** Serves one hook; never throws (a hook it cannot serve is told to run on its own). */
export async function serveHook(visit: HookVisit, log: (line: string) => void, lender: SessionLender): Promise<void> {
  const { pid } = visit;
  let opened: Opened;
  try {
    opened = openHook(visit);
  } catch (error) {
    // Nothing was read from the daemon yet: the script can still run the hook itself.
    log(`hook ${pid}: not served (${(error as Error).message}); it runs on its own`);
    visit.finish("own");
    return;
  }
  const { input, control, buildLog, env, parent, started } = opened;
  visit.taken();
  const gone = new AbortController();
  const watch = setInterval(() => {
    if (!running(pid, started)) {
      gone.abort();
      input.destroy();
    }
  }, ALIVE_CHECK_MS);
  const io = {
    input,
    control: (line: string) => void control.write(line),
    buildLog: buildLog && ((bytes: Buffer | string) => void buildLog.write(bytes)),
    stopped: gone.signal,
    lender,
  };
  let status: number = EXIT.transient;
  const since = Date.now();
  try {
    status =
      visit.dialect === "guix"
        ? await runGuixHook(visit.argv, io, env)
        : await runHook({ ...io, daemonVersion: (stateDir) => parentNixVersion(stateDir, parent) } satisfies HookIo, env);
  } finally {
    clearInterval(watch);
    input.destroy();
    // Everything said must reach the daemon before the script exits (the daemon reads the
    // pipes until every writer is gone, then collects the script's status).
    await Promise.all([flushed(control), buildLog && flushed(buildLog)]);
    log(gone.signal.aborted ? `hook ${pid}: stopped by the daemon` : `hook ${pid}: served, exit ${status}, ${Date.now() - since} ms`);
    visit.finish(String(status));
  }
}

interface Opened {
  input: Socket;
  control: Socket;
  buildLog?: Socket;
  env: NodeJS.ProcessEnv;
  /** The daemon (the script's parent). */
  parent: number;
  started: number;
}

/** The script keeps the daemon's pipes on fds 7 (to the hook) and 6 (from it; fds 0 and 2 move while it waits), the build log on 4. */
function openHook(visit: HookVisit): Opened {
  const { pid } = visit;
  const stat = readProcStat(pid);
  if (stat === undefined) throw new Error("it is gone");
  const { ppid: parent, startTicks: started } = stat;
  const env = parseEnviron(readFileSync(`/proc/${pid}/environ`));
  const fds: number[] = [];
  const pipe = (fd: number, flags: number): Socket => {
    const opened = openSync(`/proc/${pid}/fd/${fd}`, flags | constants.O_NONBLOCK);
    fds.push(opened);
    if (!fstatSync(opened).isFIFO()) throw new Error(`its fd ${fd} is not a pipe`);
    return new Socket({ fd: opened, readable: flags === constants.O_RDONLY, writable: flags !== constants.O_RDONLY });
  };
  try {
    const input = pipe(7, constants.O_RDONLY);
    const control = pipe(6, constants.O_WRONLY);
    const buildLog = visit.buildLog ? pipe(4, constants.O_WRONLY) : undefined;
    // A daemon that went away makes writes fail with EPIPE: the alive check ends the hook.
    for (const socket of [input, control, buildLog]) socket?.on("error", () => undefined);
    // Started again, the pid would be another process: only its own pipes are served.
    if (!running(pid, started)) throw new Error("it is gone");
    return { input, control, buildLog, env, parent, started };
  } catch (error) {
    for (const fd of fds) closeSync(fd);
    throw error;
  }
}

function flushed(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve();
    socket.once("close", () => resolve());
    socket.end();
  });
}

/**
 * Whether the script still runs: the same process (pid and start time) and not a zombie. A
 * killed script stays a zombie until the daemon reaps it, which it does only once every copy
 * of the hook's pipes is closed — the agent's included.
 */
function running(pid: number, started: number): boolean {
  const stat = readProcStat(pid);
  return stat !== undefined && stat.startTicks === started && stat.state !== "Z";
}

function parseEnviron(bytes: Buffer): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const entry of bytes.toString().split("\0")) {
    const at = entry.indexOf("=");
    if (at > 0) env[entry.slice(0, at)] = entry.slice(at + 1);
  }
  return env;
}
