// `offload export --nix-machines | --nixos`: the loaded machines.ts as Nix's own
// configuration (a machines file, or a NixOS module), on standard output.
import { Option, type Command } from "commander";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { exportNixMachines, exportNixos } from "../config/export.js";
import { loadConfig } from "../config/load.js";
import { OffloadError } from "../errors.js";
import { OLDEST_SUPPORTED, parseNixVersion, type NixVersion } from "../nix/daemon-version.js";

interface ExportCliOptions {
  nixMachines?: boolean;
  nixos?: boolean;
  config?: string;
  nixVersion?: string;
}

export function registerExport(program: Command): void {
  program
    .command("export")
    .description("write machines.ts as a Nix machines file (--nix-machines) or a NixOS nix.buildMachines module (--nixos)")
    .addOption(new Option("--nix-machines", "a Nix 2.x machines file (for builders = @FILE)").conflicts("nixos"))
    .option("--nixos", "a NixOS module setting nix.buildMachines")
    .option("--config <file>", "machines.ts to export (default: $OFFLOAD_CONFIG or /etc/offload/machines.ts)")
    .option("--nix-version <version>", "the Nix that will read it, e.g. 2.31 (default: this machine's nix-store --version)")
    .action(async (options: ExportCliOptions) => {
      if (!options.nixMachines && !options.nixos) {
        throw new OffloadError("say what to export", {
          code: "usage",
          fix: "offload export --nix-machines > /etc/nix/machines, or offload export --nixos > builders.nix",
        });
      }
      const loaded = await loadConfig({ config: options.config });
      const { nix, nixFrom } = await targetNix(options.nixVersion);
      const exportOptions = { nix, nixFrom, config: loaded.path };
      process.stdout.write(options.nixos ? exportNixos(loaded, exportOptions) : exportNixMachines(loaded, exportOptions));
    });
}

async function targetNix(option: string | undefined): Promise<{ nix: NixVersion; nixFrom: string }> {
  if (option !== undefined) {
    const nix = parseNixVersion(`(Nix) ${option}`);
    if (!nix) throw new OffloadError(`--nix-version ${option} is not a version`, { code: "usage", fix: "write it like 2.8 or 2.31.2" });
    return { nix, nixFrom: "--nix-version" };
  }
  const output = await promisify(execFile)("nix-store", ["--version"], { timeout: 10_000 }).then(
    (r) => r.stdout,
    () => "",
  );
  const nix = parseNixVersion(output);
  if (nix) return { nix, nixFrom: "this machine's nix-store --version" };
  // Without a Nix to ask, write what every supported Nix reads.
  const { major, minor } = OLDEST_SUPPORTED;
  return {
    nix: { flavour: "Nix", major, minor, patch: 0, text: `${major}.${minor}` },
    nixFrom: "no nix-store here: the oldest Nix offload supports; --nix-version to change",
  };
}
