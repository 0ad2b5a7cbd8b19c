// Lab commands start daemons, bind ports and edit root's ssh config: root only.
import { OffloadError } from "../errors.js";

export function assertRoot(what: string): void {
  if (process.getuid?.() !== 0) {
    throw new OffloadError(`${what} must run as root (it starts sshds and builds in chroot stores)`, {
      code: "lab-needs-root",
      fix: "run it with sudo, or as root in a CI container",
    });
  }
}
