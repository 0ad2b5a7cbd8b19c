// Plays the Nix 2.8 daemon's side of the hook protocol against the real offload-hook
// executable (or runHook in this process): settings, then "try" requests, byte for byte as
// derivation-goal.cc sends them.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { WireWriter } from "../../src/nix/wire.js";
import { PACKAGE_ROOT } from "../../src/package-root.js";

// From the package root, not this file: benchmarks run this module bundled elsewhere.
export const HOOK = join(PACKAGE_ROOT, "bin", "offload-hook.js");
/** The hook `offload install` sets: a script that hands the hook to the agent when one runs. */
export const SERVED_HOOK = join(PACKAGE_ROOT, "bin", "offload-hook");

export interface Try {
  amWilling: boolean;
  system: string;
  drvPath: string;
  features?: string[];
}

export interface HookRun {
  /** Replies ("decline", "postpone", "accept <machine>", …) in order. */
  replies: string[];
  /** Every stderr line that is not a reply; the text of @nix messages. */
  messages: string[];
  code: number | null;
  /** Per reply, ms since the hook was spawned and since its "try" was sent (the daemon's waiting time). */
  timings: { sinceStart: number; sinceTry: number }[];
}

export const BASE_SETTINGS: Record<string, string> = {
  system: "x86_64-linux",
  "system-features": "benchmark big-parallel kvm nixos-test",
  "max-jobs": "1",
  "max-silent-time": "0",
  timeout: "0",
  builders: "@/etc/nix/machines",
};

function settingsBytes(settings: Record<string, string>): Buffer {
  const out = new WireWriter();
  for (const [name, value] of Object.entries(settings)) out.u64(1).string(name).string(value);
  return out.u64(0).toBuffer();
}

function tryBytes(request: Try): Buffer {
  return new WireWriter()
    .string("try")
    .u64(request.amWilling ? 1 : 0)
    .string(request.system)
    .string(request.drvPath)
    .strings([...(request.features ?? [])].sort())
    .toBuffer();
}

/** One hook session as the daemon plays it: `send` gives the hook bytes, `end` closes its input. */
function conversation(tries: Try[], settings: Record<string, string>, send: (bytes: Buffer) => void, end: () => void) {
  const started = performance.now();
  const replies: string[] = [];
  const messages: string[] = [];
  const timings: HookRun["timings"] = [];
  let sentAt = started;
  let pending = "";
  let next = 0;
  let acceptName = false;
  const sendNext = () => {
    if (next < tries.length) {
      sentAt = performance.now();
      send(tryBytes(tries[next++]!));
    } else end();
  };
  const onLine = (line: string) => {
    if (acceptName) {
      replies[replies.length - 1] += ` ${line}`;
      acceptName = false;
      end(); // this test daemon sends no inputs: the hook sees end of input
      return;
    }
    if (!line.startsWith("# ")) return void messages.push(line.startsWith("@nix ") ? (JSON.parse(line.slice(5)) as { msg: string }).msg : line);
    const now = performance.now();
    timings.push({ sinceStart: now - started, sinceTry: now - sentAt });
    replies.push(line.slice(2));
    if (line === "# accept") acceptName = true;
    else if (line === "# decline-permanently") end();
    else sendNext();
  };
  return {
    /** Output of the hook on its control channel (stderr; stdout too, for a process). */
    collect(chunk: Buffer | string) {
      pending += chunk.toString();
      let newline: number;
      while ((newline = pending.indexOf("\n")) >= 0) {
        onLine(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
      }
    },
    start() {
      send(settingsBytes(settings));
      sendNext();
    },
    result: (code: number | null): HookRun => ({ replies, messages, code, timings }),
  };
}

/** Sends the tries one at a time, each after the previous reply, as the daemon does; then closes stdin. */
export function runHookTries(env: NodeJS.ProcessEnv, tries: Try[], settings: Record<string, string> = BASE_SETTINGS, hook = HOOK): Promise<HookRun> {
  return new Promise((resolve, reject) => {
    // As the daemon runs it, with its verbosity as the argument: bin/offload-hook (sh) itself, a .js entry through this node.
    const [file, args] = hook.endsWith(".js") ? [process.execPath, [hook, "0"]] : [hook, ["0"]];
    const child = spawn(file, args, { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    const session = conversation(
      tries,
      settings,
      (bytes) => child.stdin.write(bytes),
      () => child.stdin.end(),
    );
    child.stderr.on("data", session.collect);
    child.stdout.on("data", session.collect); // stdout is part of the control channel too
    child.stdin.on("error", () => undefined); // the hook may exit before reading everything
    child.on("error", reject);
    child.on("close", (code) => resolve(session.result(code)));
    session.start();
  });
}

/**
 * runHookTries in this process: runHook (src/hook/run.ts) with injected I/O, its status as
 * the code. `env` is also this process's environment while the hook runs (parts of the hook
 * read process.env). No agent is started (OFFLOAD_AGENT=0): it would be a process, and
 * agent.test.ts tests it.
 */
export async function runHookInProcess(env: NodeJS.ProcessEnv, tries: Try[], settings: Record<string, string> = BASE_SETTINGS): Promise<HookRun> {
  const { runHook } = await import("../../src/hook/run.js");
  const input = new PassThrough();
  const session = conversation(
    tries,
    settings,
    (bytes) => void input.write(bytes),
    () => void input.end(),
  );
  const saved = { ...process.env };
  Object.assign(process.env, env, { OFFLOAD_AGENT: "0" });
  try {
    session.start();
    const code = await runHook({ input, control: session.collect }, { ...process.env });
    return session.result(code);
  } finally {
    for (const name of Object.keys(process.env)) if (!(name in saved)) delete process.env[name];
    Object.assign(process.env, saved);
  }
}
