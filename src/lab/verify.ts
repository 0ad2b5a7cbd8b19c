// Proof that a builder is usable the way clients will use it: log in through the lab's
// ssh_config, build a trivial derivation there, and see that the output landed in the
// builder's own store (its host's /nix, a directory of this machine) signed with its key.
import { access } from "node:fs/promises";
import { OffloadError } from "../errors.js";
import { onMachine } from "./host.js";
import type { Lab, LabBuilder } from "./lab.js";
import { run } from "./run.js";

/** ssh arguments that reach `builder` with the lab's own client config (no root config needed). */
export function sshArgs(lab: Lab, builder: LabBuilder, command: string): string[] {
  return ["-F", lab.sshConfig, "-o", "ConnectTimeout=10", builder.name, command];
}

// Same output every time: after the first `up` it is valid and costs nothing.
const CHECK_DERIVATION = 'derivation { name = "offload-lab-check"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo ok > $out"]; }';

function misconfigured(builder: LabBuilder, message: string): OffloadError {
  return new OffloadError(`${builder.name}: ${message}`, {
    code: "lab-builder-misconfigured",
    fix: `check ${builder.nixConf} (its /etc/nix/nix.conf) and ${builder.sshdConfig}`,
  });
}

/** Logs in, builds there and checks the output's place and signature; returns `nix-store --version`'s output. */
export async function verifyBuilder(lab: Lab, builder: LabBuilder): Promise<string> {
  const command = [
    "nix-store --version",
    `out=$(nix-build --no-out-link -E '${CHECK_DERIVATION}')`,
    'echo "$out"',
    'nix --extra-experimental-features nix-command path-info --sigs "$out"',
  ].join(" && ");
  const { stdout } = await run("ssh", sshArgs(lab, builder, command), {
    code: "lab-builder-failed",
    fix: `if ssh failed: see ${builder.logFile} and try ssh -v -F ${lab.sshConfig} ${builder.name}; if the build failed: see ${builder.nixConf}`,
  });
  const [version, output, signatures] = stdout.trim().split("\n");
  const file = output?.startsWith("/nix/store/") ? onMachine(builder.host, output) : undefined;
  if (
    file === undefined ||
    !(await access(file).then(
      () => true,
      () => false,
    ))
  ) {
    throw misconfigured(builder, `a trivial build did not land in its own store (its output: ${output ?? "none"})`);
  }
  if (!signatures?.split(/\s+/).some((signature) => signature.startsWith(`${builder.name}-1:`))) {
    throw misconfigured(builder, `its build of ${output} is not signed with its key ${builder.name}-1 (secret-key-files)`);
  }
  return version!.trim();
}
