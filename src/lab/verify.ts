// Proof that a builder is usable the way clients will use it: log in through the lab's
// ssh_config and ask that session's Nix which store and signing key it uses.
import { OffloadError } from "../errors.js";
import type { Lab, LabBuilder } from "./lab.js";
import { run } from "./run.js";

/** ssh arguments that reach `builder` with the lab's own client config (no root config needed). */
export function sshArgs(lab: Lab, builder: LabBuilder, command: string): string[] {
  return ["-F", lab.sshConfig, "-o", "ConnectTimeout=10", builder.name, command];
}

/** Logs in and checks the session's Nix settings; returns `nix-store --version`'s output. */
export async function verifyBuilder(lab: Lab, builder: LabBuilder): Promise<string> {
  const { stdout } = await run(
    "ssh",
    sshArgs(lab, builder, "nix-store --version && nix --extra-experimental-features nix-command show-config"),
    { code: "lab-builder-unreachable", fix: `see ${builder.logFile}; try: ssh -v -F ${lab.sshConfig} ${builder.name}` },
  );
  const lines = stdout.split("\n");
  const setting = (name: string) => lines.find((line) => line.startsWith(`${name} = `))?.slice(name.length + 3);
  const expected: [string, string][] = [
    ["store", builder.storeDir],
    ["secret-key-files", `${builder.dir}/signing-key.sec`],
  ];
  for (const [name, value] of expected) {
    if (setting(name) !== value) {
      throw new OffloadError(`${builder.name}: its ssh sessions have ${name} = ${setting(name) ?? "(unset)"}, expected ${value}`, {
        code: "lab-builder-misconfigured",
        fix: `check the SetEnv line of ${builder.sshdConfig} and ${builder.nixConf}`,
      });
    }
  }
  return lines[0]!.trim();
}
