// `offload lab up|down|status`: loopback builders on this machine (each a host of its own: its
// /nix/store, Nix version, sshd and signing key) for tests, demos and benchmarks. See src/lab/.
import type { Command } from "commander";
import { InvalidArgumentError } from "commander";
import { builderSpecsFrom } from "../lab/builder-spec.js";
import { isNixRelease, NIX_RELEASES, type NixRelease } from "../lab/host.js";
import { guixLabUp, type GuixLab } from "../lab/guix-lab.js";
import { DEFAULT_LAB_DIR, labDown, labStatus, labUp } from "../lab/index.js";
import type { LabStatus } from "../lab/index.js";
import { DEFAULT_BUILDERS, DEFAULT_FIRST_ADDRESS, DEFAULT_PORT, DEFAULT_PREFIX } from "../lab/options.js";
import { OffloadError } from "../errors.js";
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
  nix?: NixRelease;
  guix?: boolean;
  jobs?: number;
}

function integer(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError("not a whole number");
  return Number(value);
}

function nixRelease(value: string): NixRelease {
  if (!isNixRelease(value)) throw new InvalidArgumentError(`not one of ${NIX_RELEASES.join(", ")}`);
  return value;
}

function formatStatus(status: LabStatus): string {
  const rows = status.builders.map((builder) => [
    builder.name,
    `${builder.address}:${builder.port}`,
    builder.nix,
    builder.hostRunning ? "running" : "stopped",
    builder.running ? `running (pid ${builder.pid})` : "stopped",
    builder.reachable ? "reachable" : "unreachable",
    builder.signingKeyName,
    [...builder.features, ...builder.mandatoryFeatures.map((feature) => `${feature}(mandatory)`)].join(",") || "-",
  ]);
  const header = ["BUILDER", "ADDRESS", "NIX", "HOST", "SSHD", "TCP", "SIGNING KEY", "FEATURES"];
  return [`lab ${status.dir}: OFFLOAD_CONFIG_DIR=${status.configDir}, Nix builders @${status.nixMachines}`, formatTable(header, rows)].join("\n");
}

/** What to do with a Guix lab: its records, and how to point offload-guix and `guix offload` at it. */
function formatGuixLab(lab: GuixLab): string {
  const rows = lab.builders.map((builder) => [builder.name, `${builder.ssh!.address}:${builder.ssh!.port}`, builder.dir]);
  return [
    `Guix lab ${lab.dir}:`,
    formatTable(["BUILDER", "ADDRESS", "DIRECTORY"], rows),
    `offload's records (${lab.machinesFile}; rewritten by each lab up --guix: do not edit it):`,
    ...lab.records.map((record) => `  ${record},`),
    "offload as guix-daemon's hook: start guix-daemon with",
    `  GUIX=<offload>/bin/offload-guix OFFLOAD_CONFIG_DIR=${lab.configDir}`,
    `  (or import ${JSON.stringify(lab.machinesFile)} from /etc/offload/machines.ts); each builder trusts ${lab.configDir}/guix-signing-key.pub`,
    `Guix's own offload to the same builders: cp ${lab.machinesScm} /etc/guix/machines.scm on the Guix master, then there`,
    ...lab.builders.map((builder) => `  guix archive --authorize < ${builder.dir}/etc-guix/signing-key.pub`),
    "  and authorize its /etc/guix/signing-key.pub on each builder (done for this machine's, if it has one)",
    "",
  ].join("\n");
}

export function registerLab(program: Command): void {
  const lab = program.command("lab").description("local loopback builders (each its own host: /nix/store, Nix version, sshd, signing key) for tests and demos");
  lab
    .command("up")
    .description(
      "create or refresh the lab and start its builders (root); writes in its directory (and an Include in root's ssh config), never in /etc/offload",
    )
    .option("--dir <dir>", "lab directory; its parents must not be group/world-writable", DEFAULT_LAB_DIR)
    .option("--builders <n>", `number of builders (default ${DEFAULT_BUILDERS}, or as many as --builder names)`, integer)
    .option(
      "--builder <spec>",
      'features of one builder, repeatable: "b1 features=big-parallel,kvm mandatory=benchmark speed=2 jobs=4 nix=2.34" ' +
        "(defaults: b0 kvm,nixos-test speed 2; b1 big-parallel + mandatory benchmark; others none; jobs 2; nix as --nix)",
      (spec: string, previous: string[] = []) => [...previous, spec],
    )
    .option("--nix <release>", `Nix of the builders: 2.8 (this machine's) or, from Debian roots of scripts/roots.sh, 2.26 or 2.34 (default 2.8)`, nixRelease)
    .option("--address <address>", "loopback address of the first builder; the next ones follow", DEFAULT_FIRST_ADDRESS)
    .option("--port <port>", "port of every builder's sshd", integer, DEFAULT_PORT)
    .option("--prefix <prefix>", "builder names are <prefix>-b0, <prefix>-b1, … (ssh aliases, key names)", DEFAULT_PREFIX)
    .option("--no-root-ssh-config", "do not add `Include <dir>/ssh_config` to root's ~/.ssh/config (Nix's build-remote needs it)")
    .option("--no-install", "do not apt-get install nix-bin/openssh-server when missing")
    .option(
      "--guix",
      "Guix build machines instead (guix 1.5.0 of the sid root: own /gnu/store, guix-daemon, signing key, sshd); writes offload's machines.ts and a machines.scm for `guix offload`",
    )
    .option("--jobs <n>", "with --guix: build slots of every builder (parallelBuilds, parallel-builds); default 1", integer)
    .action(async (options: UpOptions) => {
      if (options.guix) {
        if (options.nix !== undefined || options.builder !== undefined) {
          throw new OffloadError("--nix and --builder describe Nix builders; a Guix lab takes --builders, --address, --port, --prefix and --jobs", {
            code: "usage",
            fix: "offload lab up --guix --builders 2",
          });
        }
        const lab = await guixLabUp({
          dir: options.dir,
          builders: options.builders,
          firstAddress: options.address,
          port: options.port,
          prefix: options.prefix,
          parallelBuilds: options.jobs,
          log: (line) => process.stderr.write(`offload: ${line}\n`),
        });
        process.stdout.write(formatGuixLab(lab));
        return;
      }
      if (options.jobs !== undefined)
        throw new OffloadError("--jobs goes with --guix; Nix builders take jobs=N in --builder", {
          code: "usage",
          fix: 'offload lab up --builder "b0 jobs=4"',
        });
      const up = await labUp({
        dir: options.dir,
        builders: options.builders,
        builderSpecs: builderSpecsFrom(options.builder ?? []),
        nix: options.nix,
        firstAddress: options.address,
        port: options.port,
        prefix: options.prefix,
        rootSshConfig: options.rootSshConfig ? undefined : false,
        install: options.install,
        log: (line) => process.stderr.write(`offload: ${line}\n`),
      });
      process.stdout.write(`${formatStatus(await labStatus(up.dir))}\n`);
      process.stdout.write(
        [
          `use it from /etc/offload/machines.ts (${up.machinesFile} is rewritten by each lab up: do not edit it):`,
          `  import lab from ${JSON.stringify(up.machinesFile)};`,
          "  export default [...lab, /* your machines */];",
          `or alone, with the lab's own key and ACL: OFFLOAD_CONFIG_DIR=${up.configDir}`,
          `a builder's shell: ssh -F ${up.sshConfig} ${up.builders[0]!.name}`,
          "",
        ].join("\n"),
      );
    });
  lab
    .command("down")
    .description("stop the lab's builders (hosts, sshds and everything they run); remove its Include from root's ssh config (root)")
    .option("--dir <dir>", "lab directory", DEFAULT_LAB_DIR)
    .option("--purge", "also delete the lab directory (keys, stores, configs)")
    .action(async (options: { dir: string; purge?: boolean }) => {
      await labDown(options.dir, { purge: options.purge });
    });
  lab
    .command("status")
    .description("whether each builder's host and sshd run and accept connections")
    .option("--dir <dir>", "lab directory", DEFAULT_LAB_DIR)
    .option("--json", "print JSON")
    .action(async (options: { dir: string; json?: boolean }) => {
      const status = await labStatus(options.dir);
      process.stdout.write(options.json ? `${JSON.stringify(status, null, 2)}\n` : `${formatStatus(status)}\n`);
    });
}
