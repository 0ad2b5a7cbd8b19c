// CI machines start without Nix or sshd; the lab installs them from Debian's archive.
import { access, constants } from "node:fs/promises";
import { run } from "./run.js";

export const SSHD = "/usr/sbin/sshd";
const PACKAGES = ["nix-bin", "openssh-server"];
// nix-store and ssh-keygen are needed too; they come with these two packages.
const REQUIRED = ["/usr/bin/nix-store", "/usr/bin/ssh-keygen", "/usr/bin/ssh", SSHD];

async function executable(file: string): Promise<boolean> {
  try {
    await access(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Installs the packages when one of their programs is missing; returns whether it did. */
export async function ensurePackages(log: (line: string) => void): Promise<boolean> {
  const missing = [];
  for (const file of REQUIRED) if (!(await executable(file))) missing.push(file);
  if (missing.length === 0) return false;
  log(`installing ${PACKAGES.join(" ")} (missing: ${missing.join(", ")})`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const fix = `install them by hand: apt-get update && apt-get install -y ${PACKAGES.join(" ")}`;
  await run("apt-get", ["update"], { env, timeoutMs: 600_000, fix, code: "lab-install-failed" });
  await run("apt-get", ["install", "-y", ...PACKAGES], { env, timeoutMs: 1_200_000, fix, code: "lab-install-failed" });
  return true;
}
