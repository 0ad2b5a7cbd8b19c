// Lab commands make mount namespaces, start daemons, bind ports and edit root's ssh config: root only.
import { OffloadError } from "../errors.js";

export function assertRoot(what: string): void {
  if (process.getuid?.() !== 0) {
    throw new OffloadError(`${what} must run as root (it mounts each builder's own /nix and starts its sshd)`, {
      code: "lab-needs-root",
      fix: "run it with sudo, or as root in a CI container",
    });
  }
}
