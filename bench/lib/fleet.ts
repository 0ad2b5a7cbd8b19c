// A generated 100-machine fleet as a machines.ts, like a big site's: mixed systems, slots,
// speeds and features, one machine with a mandatory feature, and a fast local machine.
// Nothing listens at these names: it is for deciding, not for building.
import { generateKeyPairSync } from "node:crypto";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateKeyPair } from "../../src/nix/keys.js";

export const FLEET_SIZE = 100;

export interface FleetMachine {
  name: string;
  systems: string[];
  parallelBuilds: number;
}

/** An ed25519 OpenSSH public key line, as a real fleet's config pins. */
function hostKeyLine(): string {
  const der = generateKeyPairSync("ed25519").publicKey.export({ format: "der", type: "spki" });
  const field = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  return `ssh-ed25519 ${Buffer.concat([field(Buffer.from("ssh-ed25519")), field(der.subarray(der.length - 32))]).toString("base64")}`;
}

export function fleetMachines(): FleetMachine[] {
  return Array.from({ length: FLEET_SIZE }, (_, i) => ({
    name: `node${String(i).padStart(3, "0")}.example.org`,
    systems: i % 4 === 0 ? ["aarch64-linux"] : ["x86_64-linux", "i686-linux"],
    parallelBuilds: 1 + (i % 8),
  }));
}

/** A config dir (keys, ACL, machines.ts) for the fleet plus `localMachine({ speed: localSpeed })`. */
export function writeFleetConfig(dir: string, clientKey: string, localSpeed: number): string {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  chmodSync(dir, 0o755);
  const key = generateKeyPair("bench-fleet-1");
  writeFileSync(join(dir, "signing-key.sec"), key.exportSecret(), { mode: 0o600 });
  writeFileSync(join(dir, "acl"), `${generateKeyPair("bench-builder-1").publicKey.toString()}\n`, { mode: 0o644 });
  const records = fleetMachines().map(
    (machine, i) =>
      `  buildMachine(${JSON.stringify({
        ...machine,
        user: "nix",
        hostKey: hostKeyLine(),
        privateKey: clientKey,
        speed: 1 + (i % 3) / 2,
        features: i % 5 === 0 ? ["kvm", "big-parallel"] : ["big-parallel"],
        mandatoryFeatures: i === 99 ? ["benchmark"] : [],
      })}),`,
  );
  const text = `import { buildMachine, localMachine } from "offload";\nexport default [\n  localMachine({ speed: ${localSpeed} }),\n${records.join("\n")}\n];\n`;
  writeFileSync(join(dir, "machines.ts"), text, { mode: 0o644 });
  return dir;
}
