// `offload lab up|down|status`: loopback builders on this machine (each its own sshd, chroot
// store and signing key) for tests, demos and benchmarks. See src/lab/.
import type { Command } from "commander";
import { InvalidArgumentError } from "commander";
import { builderSpecsFrom } from "../lab/builder-spec.js";
import { DEFAULT_LAB_DIR, labDown, labStatus, labUp } from "../lab/index.js";
import type { LabStatus } from "../lab/index.js";
import { DEFAULT_BUILDERS, DEFAULT_FIRST_ADDRESS, DEFAULT_PORT, DEFAULT_PREFIX } from "../lab/options.js";
import { formatTable } from "./table.js";

interface UpOptions {
  dir: string;
  builders?: number;
  builder?: string[];
  address: string;
  port: number;
  prefix: string;
  rootSshConfig: boolean;
  install: boolean;
}

function integer(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError("not a whole number");
  return Number(value);
}

function formatStatus(status: LabStatus): string {
  const rows = status.builders.map((builder) =>
    [
      builder.name,
      `${builder.address}:${builder.port}`,
      builder.running ? `running (pid ${builder.pid})` : "stopped",
      builder.reachable ? "reachable" : "unreachable",
      builder.signingKeyName,
      [...builder.features, ...builder.mandatoryFeatures.map((feature) => `${feature}(mandatory)`)].join(",") || "-",
      builder.storeDir,
    ],
  );
  const header = ["BUILDER", "ADDRESS", "SSHD", "TCP", "SIGNING KEY", "FEATURES", "STORE"];
  return [
    `lab ${status.dir}: OFFLOAD_CONFIG_DIR=${status.configDir}, Nix builders @${status.nixMachines}`,
    formatTable(header, rows),
  ].join("\n");
}

export function registerLab(program: Command): void {
  const lab = program.command("lab").description("local loopback builders (own sshd, chroot store, signing key) for tests and demos");
  lab
    .command("up")
    .description("create or refresh the lab and start its builders (root)")
    .option("--dir <dir>", "lab directory; its parents must not be group/world-writable", DEFAULT_LAB_DIR)
    .option("--builders <n>", `number of builders (default ${DEFAULT_BUILDERS}, or as many as --builder names)`, integer)
    .option(
      "--builder <spec>",
      'features of one builder, repeatable: "b1 features=big-parallel,kvm mandatory=benchmark speed=2 jobs=4" ' +
        "(defaults: b0 kvm,nixos-test speed 2; b1 big-parallel + mandatory benchmark; others none; jobs 2)",
      (spec: string, previous: string[] = []) => [...previous, spec],
    )
    .option("--address <address>", "loopback address of the first builder; the next ones follow", DEFAULT_FIRST_ADDRESS)
    .option("--port <port>", "port of every builder's sshd", integer, DEFAULT_PORT)
    .option("--prefix <prefix>", "builder names are <prefix>-b0, <prefix>-b1, … (ssh aliases, key names)", DEFAULT_PREFIX)
    .option("--no-root-ssh-config", "do not add `Include <dir>/ssh_config` to root's ~/.ssh/config (Nix's build-remote needs it)")
    .option("--no-install", "do not apt-get install nix-bin/openssh-server when missing")
    .action(async (options: UpOptions) => {
      const up = await labUp({
        dir: options.dir,
        builders: options.builders,
        builderSpecs: builderSpecsFrom(options.builder ?? []),
        firstAddress: options.address,
        port: options.port,
        prefix: options.prefix,
        rootSshConfig: options.rootSshConfig ? undefined : false,
        install: options.install,
        log: (line) => process.stderr.write(`offload: ${line}\n`),
      });
      process.stdout.write(`${formatStatus(await labStatus(up.dir))}\n`);
      process.stdout.write(`use it: OFFLOAD_CONFIG_DIR=${up.configDir}; ssh -F ${up.sshConfig} ${up.builders[0]!.name}\n`);
    });
  lab
    .command("down")
    .description("stop the lab's sshds and everything they run; remove its Include from root's ssh config (root)")
    .option("--dir <dir>", "lab directory", DEFAULT_LAB_DIR)
    .option("--purge", "also delete the lab directory (keys, stores, configs)")
    .action(async (options: { dir: string; purge?: boolean }) => {
      await labDown(options.dir, { purge: options.purge });
    });
  lab
    .command("status")
    .description("whether each builder's sshd runs and accepts connections")
    .option("--dir <dir>", "lab directory", DEFAULT_LAB_DIR)
    .option("--json", "print JSON")
    .action(async (options: { dir: string; json?: boolean }) => {
      const status = await labStatus(options.dir);
      process.stdout.write(options.json ? `${JSON.stringify(status, null, 2)}\n` : `${formatStatus(status)}\n`);
    });
}
