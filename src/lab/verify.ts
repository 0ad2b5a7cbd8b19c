// Proof that a builder is usable the way clients will use it: log in through the lab's
// ssh_config, ask that session's Nix which store and signing key it uses, and build a
// trivial derivation there (chroot stores always build sandboxed, which is what fails
// first on a machine without namespaces or without /bin/sh in the sandbox).
import { access } from "node:fs/promises";
import { OffloadError } from "../errors.js";
import type { Lab, LabBuilder } from "./lab.js";
import { run } from "./run.js";

/** ssh arguments that reach `builder` with the lab's own client config (no root config needed). */
export function sshArgs(lab: Lab, builder: LabBuilder, command: string): string[] {
  return ["-F", lab.sshConfig, "-o", "ConnectTimeout=10", builder.name, command];
}

// Same output every time: after the first `up` it is valid and costs nothing.
const CHECK_DERIVATION =
  'derivation { name = "offload-lab-check"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo ok > $out"]; }';

function misconfigured(builder: LabBuilder, message: string): OffloadError {
  return new OffloadError(`${builder.name}: ${message}`, {
    code: "lab-builder-misconfigured",
    fix: `check the SetEnv line of ${builder.sshdConfig} and ${builder.nixConf}`,
  });
}

/** Logs in, checks the session's Nix settings and builds there; returns `nix-store --version`'s output. */
export async function verifyBuilder(lab: Lab, builder: LabBuilder): Promise<string> {
  const command = [
    "nix-store --version",
    "nix --extra-experimental-features nix-command show-config",
    `nix-build --no-out-link -E '${CHECK_DERIVATION}'`,
  ].join(" && ");
  const { stdout } = await run("ssh", sshArgs(lab, builder, command), {
    code: "lab-builder-failed",
    fix:
      `if ssh failed: see ${builder.logFile} and try ssh -v -F ${lab.sshConfig} ${builder.name}; ` +
      "if the build failed: chroot-store builds always run in Nix's sandbox, which needs mount and PID " +
      `namespaces (in a container: --privileged) and /bin/sh via extra-sandbox-paths in ${builder.nixConf}`,
  });
  const lines = stdout.trim().split("\n");
  const setting = (name: string) => lines.find((line) => line.startsWith(`${name} = `))?.slice(name.length + 3);
  const expected: [string, string][] = [
    ["store", builder.storeDir],
    ["secret-key-files", `${builder.dir}/signing-key.sec`],
  ];
  for (const [name, value] of expected) {
    if (setting(name) !== value) throw misconfigured(builder, `its ssh sessions have ${name} = ${setting(name) ?? "(unset)"}, expected ${value}`);
  }
  const output = lines.at(-1)!;
  const inChroot = `${builder.storeDir}${output}`;
  if (!output.startsWith("/nix/store/") || !(await access(inChroot).then(() => true, () => false))) {
    throw misconfigured(builder, `a trivial build did not land in its chroot store (expected ${inChroot})`);
  }
  return lines[0]!.trim();
}
