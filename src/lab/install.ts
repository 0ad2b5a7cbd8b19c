// CI machines start without Nix or sshd; the lab installs them from Debian's archive.
// Parallel labs (test suites) would collide on dpkg's lock, so installs take turns and
// each one looks again once it has the turn.
import { access, constants } from "node:fs/promises";
import { withFileLock } from "./file-lock.js";
import { run } from "./run.js";

export const SSHD = "/usr/sbin/sshd";
const PACKAGES = ["nix-bin", "openssh-server"];
// nix-store and ssh-keygen are needed too; they come with these two packages.
const REQUIRED = ["/usr/bin/nix-store", "/usr/bin/ssh-keygen", "/usr/bin/ssh", SSHD];
const LOCK = "/var/lib/offload-lab-install.lock";

async function missingPrograms(): Promise<string[]> {
  const missing = [];
  for (const file of REQUIRED) {
    if (
      !(await access(file, constants.X_OK).then(
        () => true,
        () => false,
      ))
    )
      missing.push(file);
  }
  return missing;
}

/** Installs the packages when one of their programs is missing; returns whether it did. */
export async function ensurePackages(log: (line: string) => void): Promise<boolean> {
  if ((await missingPrograms()).length === 0) return false;
  return withFileLock(LOCK, { timeoutMs: 1_200_000, staleMs: 1_800_000 }, async () => {
    const missing = await missingPrograms();
    if (missing.length === 0) return false;
    log(`installing ${PACKAGES.join(" ")} (missing: ${missing.join(", ")})`);
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    const fix = `install them by hand: apt-get update && apt-get install -y ${PACKAGES.join(" ")}`;
    // Waits for dpkg's lock instead of failing when some other apt run holds it.
    const wait = ["-o", "DPkg::Lock::Timeout=600"];
    await run("apt-get", [...wait, "update"], { env, timeoutMs: 900_000, fix, code: "lab-install-failed" });
    await run("apt-get", [...wait, "install", "-y", ...PACKAGES], { env, timeoutMs: 1_200_000, fix, code: "lab-install-failed" });
    return true;
  });
}
