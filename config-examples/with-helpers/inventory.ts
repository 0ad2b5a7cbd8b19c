// A helper module: where the machines are. In real life this might read a CMDB export.
import type { NixSystem } from "offload";

export interface RackHost {
  name: string;
  cores: number;
  systems: NixSystem[];
  hostKey: string;
}

const keys = [
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFHI3/c8yvZiRIrPlNbVW/z785mqAXJJm8sNfG6PuzdS",
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3MrvcjI6C6VHEZpPVC6A5NmnXXUEGqUDuhYIhG5fTR",
];

export function rack(site: string): RackHost[] {
  return keys.map((hostKey, index) => ({
    name: `${site}-node${index + 1}`,
    cores: 8 * (index + 1),
    systems: ["x86_64-linux"],
    hostKey,
  }));
}
