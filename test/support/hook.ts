// Plays the Nix 2.8 daemon's side of the hook protocol against the real offload-hook
// executable: settings, then "try" requests, byte for byte as derivation-goal.cc sends them.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { WireWriter } from "../../src/nix/wire.js";
import { PACKAGE_ROOT } from "../../src/package-root.js";

// From the package root, not this file: benchmarks run this module bundled elsewhere.
export const HOOK = join(PACKAGE_ROOT, "bin", "offload-hook.js");

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

/** Sends the tries one at a time, each after the previous reply, as the daemon does; then closes stdin. */
export function runHookTries(env: NodeJS.ProcessEnv, tries: Try[], settings: Record<string, string> = BASE_SETTINGS, hook = HOOK): Promise<HookRun> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [hook, "0"], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
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
        child.stdin.write(tryBytes(tries[next++]!));
      } else child.stdin.end();
    };
    const onLine = (line: string) => {
      if (acceptName) {
        replies[replies.length - 1] += ` ${line}`;
        acceptName = false;
        child.stdin.end(); // this test daemon sends no inputs: the hook sees end of input
        return;
      }
      if (!line.startsWith("# ")) return void messages.push(line.startsWith("@nix ") ? (JSON.parse(line.slice(5)) as { msg: string }).msg : line);
      const now = performance.now();
      timings.push({ sinceStart: now - started, sinceTry: now - sentAt });
      replies.push(line.slice(2));
      if (line === "# accept") acceptName = true;
      else if (line === "# decline-permanently") child.stdin.end();
      else sendNext();
    };
    const collect = (chunk: Buffer) => {
      pending += chunk.toString();
      let newline: number;
      while ((newline = pending.indexOf("\n")) >= 0) {
        onLine(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
      }
    };
    child.stderr.on("data", collect);
    child.stdout.on("data", collect); // stdout is part of the control channel too
    child.stdin.on("error", () => undefined); // the hook may exit before reading everything
    child.on("error", reject);
    child.on("close", (code) => resolve({ replies, messages, code, timings }));
    child.stdin.write(settingsBytes(settings));
    sendNext();
  });
}
