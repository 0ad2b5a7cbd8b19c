// `offload status`: every machine at a glance, once or refreshed in place (--watch).
import type { Command } from "commander";
import { machineStatus, type MachineStatus } from "../check/machine-status.js";
import { loadConfig } from "../config/load.js";
import { stateDir } from "../select/state-dir.js";
import { selectMachines } from "./check.js";
import { assertHookUser } from "./hook-user.js";
import { formatTable } from "./table.js";

const WATCH_INTERVAL_MS = 2000;

interface StatusOptions {
  json?: boolean;
  watch?: boolean;
  config?: string;
}

export function registerStatus(program: Command): void {
  program
    .command("status")
    .argument("[regex]", "only the machines whose name matches")
    .description("each machine's reachability, load, build slots, free store space, uptime, clock and last build")
    .option("--json", "print the status as JSON")
    .option("--watch", `refresh in place every ${WATCH_INTERVAL_MS / 1000} s until Ctrl-C (with --json: one document per line)`)
    .option("--config <file>", "machines.ts to use (default: $OFFLOAD_CONFIG or /etc/offload/machines.ts)")
    .action(async (regex: string | undefined, options: StatusOptions) => {
      const dir = stateDir();
      assertHookUser(dir);
      const config = await loadConfig({ config: options.config });
      const machines = selectMachines(config.machines, regex);
      const gather = () => Promise.all(machines.map((machine) => machineStatus(machine, dir)));
      if (!options.watch) {
        const statuses = await gather();
        process.stdout.write(
          options.json ? `${JSON.stringify({ config: config.path, at: Date.now(), machines: statuses }, null, 2)}\n` : `${formatStatus(statuses)}\n`,
        );
        return;
      }
      for (;;) {
        const statuses = await gather();
        // For scripts, one JSON document per line; for people, home and clear screen, then the new picture.
        if (options.json) process.stdout.write(`${JSON.stringify({ config: config.path, at: Date.now(), machines: statuses })}\n`);
        else
          process.stdout.write(
            `\x1b[H\x1b[2J${new Date().toLocaleTimeString()}  offload status (every ${WATCH_INTERVAL_MS / 1000} s, Ctrl-C ends)\n${formatStatus(statuses)}\n`,
          );
        await new Promise((resolve) => setTimeout(resolve, WATCH_INTERVAL_MS));
      }
    });
}

export function formatStatus(statuses: MachineStatus[], now = Date.now()): string {
  const rows = statuses.map((s) => [
    s.machine + (s.enabled ? "" : " (disabled)"),
    s.address,
    s.reachable ? "yes" : "NO",
    s.load === undefined ? "-" : s.load.toFixed(2),
    `${s.slots.inUse}/${s.slots.total}`,
    s.store ? `${(s.store.freeBytes / 1024 ** 3).toFixed(1)}G` : "-",
    s.uptimeSeconds === undefined ? "-" : duration(s.uptimeSeconds),
    s.clockSkewSeconds === undefined ? "-" : `${s.clockSkewSeconds >= 0 ? "+" : ""}${s.clockSkewSeconds.toFixed(2)}s`,
    s.lastBuild ? `${duration((now - s.lastBuild.at) / 1000)} ago` : "-",
  ]);
  const lines = [formatTable(["MACHINE", "ADDRESS", "REACHABLE", "LOAD", "SLOTS", "FREE", "UPTIME", "CLOCK", "LAST BUILD"], rows)];
  for (const s of statuses) {
    if (s.error) lines.push(`✗ ${s.machine}: ${s.error.message}${s.error.fix ? ` — fix: ${s.error.fix}` : ""}`);
    for (const holder of s.slots.holders) {
      lines.push(
        `  ${s.machine} slot ${holder.slot}: pid ${holder.pid}${holder.drvPath ? ` building ${holder.drvPath}` : ""}${holder.since ? ` for ${duration((now - holder.since) / 1000)}` : ""}`,
      );
    }
  }
  return lines.join("\n");
}

/** "45s", "12m", "3h05m", "4d02h". */
function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, "0")}h`;
}
