// One timed nix-build in each of the ways the benchmarks compare: through offload-hook,
// through Nix's own build-remote (the lab's machines file), or locally with no hook at all.
import { spawn } from "node:child_process";
import type { BenchLab } from "./lab.js";
import { offloadEnv } from "./lab.js";
import { snapshotHook } from "./snapshot.js";

export type Builder =
  /** offload-hook as the daemon's build-hook; `maxJobs` undefined keeps nix.conf's max-jobs. */
  | { kind: "offload"; configDir?: string; maxJobs?: number }
  /**
   * Nix 2.8's build-remote with the lab's machines file (or `machines`), building nothing
   * locally; `env` adds to its environment (e.g. NIX_SSHOPTS).
   */
  | { kind: "nix"; machines?: string; env?: NodeJS.ProcessEnv }
  /**
   * Local only: the floor of what a build costs on this machine. Nix 2.8 cannot switch the hook
   * off (an empty build-hook is executed), so no builders: its hook declines for good at once.
   */
  | { kind: "local" };

export interface TimedBuild {
  ms: number;
  /** Output paths, one per line of nix-build's stdout. */
  outputs: string[];
  /** stderr lines with the time they arrived (ms after the start), for breakdowns. */
  lines: { at: number; text: string }[];
}

// No substituters: loopback only, and a substitution would not be a build.
const COMMON = ["--option", "substituters", "", "--no-out-link"];

function builderArgs(bench: BenchLab, builder: Builder): { args: string[]; env: NodeJS.ProcessEnv } {
  switch (builder.kind) {
    case "offload":
      return {
        args: ["--option", "build-hook", snapshotHook(), ...(builder.maxJobs === undefined ? [] : ["--max-jobs", String(builder.maxJobs)])],
        env: offloadEnv(bench, builder.configDir),
      };
    case "nix":
      return { args: ["--option", "builders", `@${builder.machines ?? bench.lab.nixMachines}`, "--max-jobs", "0"], env: { ...process.env, ...builder.env } };
    case "local":
      return { args: ["--option", "builders", "", "--max-jobs", "1"], env: process.env };
  }
}

/** Runs nix-build on `expression` (a file and its arguments); throws with nix-build's last lines if it fails. */
export function timedNixBuild(bench: BenchLab, builder: Builder, expression: string[]): Promise<TimedBuild> {
  const { args, env } = builderArgs(bench, builder);
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const since = () => Number(process.hrtime.bigint() - started) / 1e6;
    const child = spawn("nix-build", [...expression, ...args, ...COMMON], { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let partial = "";
    const lines: TimedBuild["lines"] = [];
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => {
      const at = since();
      const parts = (partial + chunk.toString()).split("\n");
      partial = parts.pop()!;
      for (const text of parts) lines.push({ at, text });
    });
    child.on("error", reject);
    child.on("close", (code) => {
      const ms = since();
      if (partial) lines.push({ at: ms, text: partial });
      if (code === 0) return resolve({ ms, outputs: stdout.trim().split("\n").filter(Boolean), lines });
      const tail = lines
        .slice(-8)
        .map((line) => `  ${line.text}`)
        .join("\n");
      reject(new Error(`nix-build (${builder.kind}) exited with ${code}:\n${tail}`));
    });
  });
}
