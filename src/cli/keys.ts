// `offload keygen`: the signing key pair that proves to other machines (and to this one)
// which store paths this machine vouches for. Same file format as
// `nix-store --generate-binary-cache-key`, so Nix's `secret-key-files` can use it too.
import type { Command } from "commander";
import { hostname } from "node:os";
import { OffloadError } from "../errors.js";
import { generateKeyPair, validateKeyName } from "../nix/keys.js";
import { guixKeygen } from "./guix.js";
import { configDir, publicKeyPath, secretKeyPath } from "../files/config-dir.js";
import { checkNotWritableByOthers, ensureConfigDir, writeFileAtomic } from "../files/safety.js";

interface KeygenOptions {
  name?: string;
  force?: boolean;
  guix?: boolean;
}

/** Nix's convention for key names is "<host>-<generation>". */
export function defaultKeyName(): string {
  return `${hostname()}-1`;
}

async function keygen(options: KeygenOptions): Promise<void> {
  if (options.guix) {
    if (options.name !== undefined)
      throw new OffloadError("Guix keys have no name: --name and --guix do not go together", { code: "usage", fix: "offload keygen --guix" });
    return guixKeygen(options);
  }
  const name = options.name ?? defaultKeyName();
  validateKeyName(name);
  const dir = configDir();
  const secretFile = secretKeyPath(dir);
  const publicFile = publicKeyPath(dir);
  await ensureConfigDir(dir);
  if ((await checkNotWritableByOthers(secretFile, "secret key")) && !options.force) {
    throw new OffloadError(`a signing key already exists at ${secretFile}`, {
      code: "key-exists",
      fix: "offload keygen --force (machines that authorized the old public key must then authorize the new one)",
    });
  }
  const key = generateKeyPair(name);
  await writeFileAtomic(secretFile, key.exportSecret(), 0o600);
  await writeFileAtomic(publicFile, key.publicKey.toString(), 0o644);
  process.stderr.write(
    `offload: wrote ${secretFile} (mode 0600) and ${publicFile}\n` +
      `  next: on each build machine, add this public key to trusted-public-keys in /etc/nix/nix.conf (offload signs the inputs it sends with it)\n`,
  );
  // Only the public key goes to stdout, so that scripts can pass it on (to a builder's nix.conf).
  process.stdout.write(`${key.publicKey.toString()}\n`);
}

export function registerKeys(program: Command): void {
  program
    .command("keygen")
    .description("create this machine's signing key pair (signing-key.sec / signing-key.pub in the config dir)")
    .option("--name <name>", `key name, default "<hostname>-1" (here "${defaultKeyName()}")`)
    .option("--force", "replace an existing key pair")
    .option("--guix", "a Guix key pair instead (guix-signing-key.sec / .pub, Guix's format: ECDSA on Ed25519)")
    .action(keygen);
}
