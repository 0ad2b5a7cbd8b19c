// Key pairs of a lab. Existing keys are kept, so running `lab up` again does not invalidate
// known_hosts entries, trusted keys or signatures already made.
import { chmod, readFile, rm } from "node:fs/promises";
import { run } from "./run.js";

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/** An ed25519 SSH key pair without passphrase; returns the public line ("ssh-ed25519 AAAA… comment"). */
export async function ensureSshKey(file: string, comment: string): Promise<string> {
  const publicFile = `${file}.pub`;
  let publicLine = (await readIfExists(file)) === undefined ? undefined : await readIfExists(publicFile);
  if (publicLine === undefined) {
    await rm(file, { force: true });
    await rm(publicFile, { force: true });
    await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", file]);
    publicLine = await readFile(publicFile, "utf8");
  }
  // ssh and sshd both refuse private keys that others can read.
  await chmod(file, 0o600);
  await chmod(publicFile, 0o644);
  return publicLine.trim();
}

/** A Nix signing key pair named `name`; returns the public key ("name:base64"). */
export async function ensureSigningKey(secretFile: string, publicFile: string, name: string): Promise<string> {
  let publicKey = (await readIfExists(secretFile)) === undefined ? undefined : await readIfExists(publicFile);
  if (publicKey === undefined || !publicKey.startsWith(`${name}:`)) {
    await rm(secretFile, { force: true });
    await rm(publicFile, { force: true });
    await run("nix-store", ["--generate-binary-cache-key", name, secretFile, publicFile]);
    publicKey = await readFile(publicFile, "utf8");
  }
  await chmod(secretFile, 0o600);
  await chmod(publicFile, 0o644);
  return publicKey.trim();
}
