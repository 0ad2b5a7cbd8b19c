// The agent's door for hooks: bin/offload-hook (a sh script, which starts in a millisecond
// where a Node hook takes 60–100 ms) writes one line per build hook into a FIFO, and the
// agent serves that hook in its own process, on the daemon's pipes (reopened through /proc).
// The daemon waits for a hook's first answer before it asks about the next build, so a
// batch of N builds pays N hook starts: that start is what the door takes away.
//
// A line is `PID STATUS-FIFO LOG DIALECT ARGS…`: the hook script's pid, the FIFO on which it
// waits for its exit status (in the state dir's HOOKS_DIR), "4" when the daemon gave it a build log on
// fd 4, whose hook it is (nix, or guix with guix-daemon's arguments after `offload`).
import { spawnSync } from "node:child_process";
import { chmodSync, closeSync, constants, fstatSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { Socket } from "node:net";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { OffloadError } from "../errors.js";
import { ensureSafeDir } from "../files/safety.js";
import { AGENT_PID, HOOK_DOOR, HOOKS_DIR } from "./agent-frames.js";

/** A hook that asked to be served. */
export interface HookVisit {
  pid: number;
  /** Whether the daemon opened fd 4 (the build log) for the hook. */
  buildLog: boolean;
  dialect: "nix" | "guix";
  /** The hook's arguments (guix-daemon's; Nix's mean nothing to the hook). */
  argv: string[];
  /** Tells the waiting script that the agent serves its hook; only then may the daemon's pipes be read. */
  taken(): void;
  /** Tells the waiting script its exit status, or "own" (before `taken` only): run the hook yourself. The last word. */
  finish(text: string): void;
}

export interface HookDoor {
  close(): void;
}

/**
 * Opens the door: the FIFO and the pid file the script checks. `serve` gets each hook and
 * must end it with `visit.finish` (after `visit.taken`, unless it answers "own").
 */
export function openHookDoor(stateDir: string, serve: (visit: HookVisit) => void, log: (line: string) => void): HookDoor {
  const door = join(stateDir, HOOK_DOOR);
  const hooks = join(stateDir, HOOKS_DIR);
  // Status FIFOs of hooks that died before they were served: nobody waits on them.
  rmSync(hooks, { recursive: true, force: true });
  ensureSafeDir(hooks, "hooks directory", "state-unsafe");
  chmodSync(hooks, 0o700);
  rmSync(door, { force: true });
  mkfifo(door);
  // Read and write: the FIFO then never reports end of file between two hooks.
  const fd = openSync(door, constants.O_RDWR | constants.O_NONBLOCK);
  const input = new Socket({ fd, readable: true, writable: false });
  const lines = createInterface({ input });
  let closing = false;
  lines.on("line", (line) => {
    const visit = parseVisit(line, hooks);
    if (!visit) return log(`ignored a malformed line on ${door}: ${JSON.stringify(line.slice(0, 200))}`);
    const status = openStatus(visit.fifo);
    if (status === undefined) return log(`hook ${visit.pid} left before it was served`);
    const say = (text: string) => {
      try {
        writeSync(status, `${text}\n`);
      } catch {
        // the script is gone: its hook is stopped (served.ts notices)
      }
    };
    const finish = (text: string) => {
      say(text);
      closeSync(status);
    };
    // Closing: a hook that came in at the last moment runs on its own.
    if (closing) return finish("own");
    serve({ ...visit, taken: () => say("taken"), finish });
  });
  const pidFile = join(stateDir, AGENT_PID);
  writeFileSync(pidFile, `${process.pid}\n`, { mode: 0o644 });
  return {
    close() {
      // The pid file first: a script that finds none runs the hook itself. One that found it
      // just before may still write its line: it is read for a moment longer and answered.
      rmSync(pidFile, { force: true });
      rmSync(door, { force: true });
      closing = true;
      setTimeout(() => {
        lines.close();
        input.destroy();
      }, LAST_LINES_MS).unref();
    },
  };
}

/** How long a closing door still reads lines from scripts that found it open. */
const LAST_LINES_MS = 200;

function parseVisit(line: string, hooks: string): (Omit<HookVisit, "taken" | "finish"> & { fifo: string }) | undefined {
  const match = /^(\d+) (\S+) (4?) (nix|guix)((?: \S+)*)$/.exec(line);
  if (!match) return undefined;
  const fifo = match[2]!;
  // Only a FIFO of the hooks directory: the line must not make the agent open anything else.
  if (dirname(fifo) !== hooks || fifo.endsWith("/..")) return undefined;
  return { pid: Number(match[1]), fifo, buildLog: match[3] === "4", dialect: match[4] as "nix" | "guix", argv: match[5]!.split(" ").filter(Boolean) };
}

/**
 * Opens the hook's status FIFO for writing: the script holds it open for reading before it
 * writes its line, and its last read ends with end of file once the agent's descriptor is
 * closed — when it has written the status, or died. Undefined when the script is gone or
 * gave up waiting.
 */
function openStatus(fifo: string): number | undefined {
  try {
    const fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
    if (fstatSync(fd).isFIFO()) return fd;
    closeSync(fd);
  } catch {
    // gone
  }
  return undefined;
}

function mkfifo(path: string): void {
  // Node has no mkfifo(3); coreutils' mkfifo is wherever the hook script runs.
  const { status, stderr } = spawnSync("mkfifo", ["-m", "600", path], { encoding: "utf8" });
  if (status !== 0) {
    throw new OffloadError(`cannot make the agent's FIFO ${path}: ${stderr.trim() || `mkfifo exited with ${status}`}`, {
      code: "state-unsafe",
      fix: "mkfifo (coreutils) must be on the agent's PATH; hooks run in their own process meanwhile",
    });
  }
}
