// `offload agent`: the connection keeper the hook starts on demand (see src/remote/agent.ts).
import type { Command } from "commander";
import { runAgent } from "../agent/agent.js";
import { serveHook } from "../hook/served.js";
import { ensureStateDir, stateDir } from "../select/state-dir.js";

export function registerAgent(program: Command): void {
  program
    .command("agent")
    .description("keep SSH connections and warm nix-store sessions to the build machines between builds (the hook starts it)")
    .option("--idle <seconds>", "exit after this long without builds", "60")
    .action(async (options: { idle: string }) => {
      const dir = stateDir();
      ensureStateDir(dir);
      await runAgent({ stateDir: dir, idleMs: Number(options.idle) * 1000, serveHook });
    });
}
