// `offload import FILE|-`: an existing Nix 1.x, Nix 2.x, NixOS or Guix build-machine
// configuration as a commented machines.ts, so switching to offload is one step.
import { Option, type Command } from "commander";
import { existsSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { OffloadError, formatLocation } from "../errors.js";
import { importMachines } from "../config/import/index.js";
import { FORMATS, type Format } from "../config/import/model.js";
import { writeFileAtomic } from "../files/safety.js";

interface ImportCliOptions {
  from?: Format;
  out?: string;
  force?: boolean;
  sshConfig?: string;
  knownHosts?: string[];
}

export function registerImport(program: Command): void {
  program
    .command("import")
    .argument("<file>", "the configuration to translate, or - for standard input")
    .description("translate a Nix 1.x remote-systems.conf, Nix 2.x machines file, NixOS nix.buildMachines (JSON) or Guix machines.scm into machines.ts")
    .addOption(new Option("--from <format>", "the input's format (default: detected)").choices(FORMATS))
    .option("--out <file>", "write machines.ts there instead of to standard output")
    .option("--force", "overwrite an existing --out file")
    .option("--ssh-config <file>", "ssh_config whose Host aliases the machines' names are (HostName, Port, User, IdentityFile are written into the records)")
    .option("--known-hosts <file>", "known_hosts file to take host keys from (repeatable)", (file: string, files: string[] = []) => [...files, file])
    .action(runImport);
}

async function runImport(file: string, options: ImportCliOptions): Promise<void> {
  const out = options.out === undefined ? undefined : resolve(options.out);
  if (out && existsSync(out) && !options.force) {
    throw new OffloadError(`${out} already exists`, { code: "exists", fix: "choose another --out, or add --force to replace it" });
  }
  // ssh reads a missing ssh_config or known_hosts as empty; a file named here must exist.
  for (const [option, path] of [["--ssh-config", options.sshConfig], ...(options.knownHosts ?? []).map((p) => ["--known-hosts", p])]) {
    if (path !== undefined && !existsSync(path))
      throw new OffloadError(`${option} ${path} does not exist`, { code: "import-unreadable", fix: `ls -l ${path}` });
  }
  const stdin = file === "-";
  const text = readInput(stdin ? 0 : file, stdin ? "standard input" : file);
  const result = importMachines(text, {
    from: options.from,
    file: stdin ? "<stdin>" : file,
    dir: stdin ? process.cwd() : dirname(resolve(file)),
    read: (path) => (existsSync(path) ? readInput(path, path) : undefined),
    sshConfig: options.sshConfig,
    knownHosts: options.knownHosts ?? [],
    warn: (at, message) => process.stderr.write(`offload: warning: ${formatLocation(at)}: ${message}\n`),
  });
  if (result.machines === 0) process.stderr.write(`offload: warning: no machine in ${stdin ? "standard input" : file} could be imported\n`);
  if (!out) {
    process.stdout.write(result.text);
    return;
  }
  // Not writable by others: offload refuses to run a machines.ts that is.
  await writeFileAtomic(out, result.text, 0o644);
  process.stderr.write(
    `offload: wrote ${out} (${result.machines} machine${result.machines === 1 ? "" : "s"}, from ${result.format}); check it with: offload check --static --config ${out}\n`,
  );
}

function readInput(source: string | number, name: string): string {
  try {
    return readFileSync(source, "utf8");
  } catch (error) {
    throw new OffloadError(`cannot read ${name}: ${(error as Error).message}`, { code: "import-unreadable", fix: `ls -l ${name}` });
  }
}
