// `offload check`: load machines.ts through the whole pipeline and show what it defines.
import type { Command } from "commander";
import type { BuildMachine } from "../../types/index.js";
import { loadConfig, type LoadedConfig } from "../config/load.js";
import { OffloadError, asOffloadError, formatLocation } from "../errors.js";
import { formatTable } from "./table.js";

interface CheckOptions {
  static?: boolean;
  config?: string;
  json?: boolean;
}

export function registerCheck(program: Command): void {
  program
    .command("check")
    .description("type-check, evaluate and validate machines.ts, then list its machines")
    .option("--static", "check the configuration only, without contacting the machines")
    .option("--config <file>", "machines.ts to use (default: $OFFLOAD_CONFIG or /etc/offload/machines.ts)")
    .option("--json", "print the result as JSON")
    .action(async (options: CheckOptions) => {
      if (!options.static) {
        throw new OffloadError("remote checks of each machine are not available in this version", {
          code: "unsupported",
          fix: "run `offload check --static`",
        });
      }
      await checkStatic(options);
    });
}

async function checkStatic(options: CheckOptions): Promise<void> {
  let loaded: LoadedConfig;
  try {
    loaded = await loadConfig({ config: options.config });
  } catch (error) {
    if (!options.json) throw error;
    const failure = asOffloadError(error);
    const problems = failure.problems.length > 0 ? failure.problems : [failure];
    process.stdout.write(`${JSON.stringify({ ok: false, error: failure.message, problems: problems.map(problemJson) }, null, 2)}\n`);
    process.exitCode = 1;
    return;
  }
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ ok: true, config: loaded.path, machines: loaded.machines, local: loaded.local ?? null }, null, 2)}\n`);
    return;
  }
  process.stdout.write(`${loaded.path}: ${loaded.machines.length} machine${loaded.machines.length === 1 ? "" : "s"}${loaded.fromCache ? " (cached)" : ""}\n`);
  if (loaded.machines.length > 0) process.stdout.write(`${machineTable(loaded.machines)}\n`);
  if (loaded.local) process.stdout.write(`local machine: speed ${loaded.local.speed}${loaded.local.enabled ? "" : " (disabled)"}\n`);
}

function problemJson(problem: OffloadError) {
  return {
    code: problem.code,
    message: problem.message,
    location: problem.location ? formatLocation(problem.location) : null,
    fix: problem.fix ?? null,
  };
}

export function machineAddress(machine: BuildMachine): string {
  return `${machine.user ? `${machine.user}@` : ""}${machine.name}${machine.port ? `:${machine.port}` : ""}`;
}

function machineTable(machines: BuildMachine[]): string {
  const rows = machines.map((m) => [
    m.name + (m.enabled ? "" : " (disabled)"),
    machineAddress(m),
    m.systems.join(","),
    String(m.parallelBuilds),
    String(m.speed),
    [...m.features, ...m.mandatoryFeatures.map((f) => `${f}!`)].join(",") || "-",
  ]);
  return `${formatTable(["NAME", "ADDRESS", "SYSTEMS", "SLOTS", "SPEED", "FEATURES (! = mandatory)"], rows)}`;
}
