// `offload keygen`: the signing key pair that proves to other machines (and to this one)
// which store paths this machine vouches for. Same file format as
// `nix-store --generate-binary-cache-key`, so Nix's `secret-key-files` can use it too.
import type { Command } from "commander";
import { hostname } from "node:os";
import { OffloadError } from "../errors.js";
import { generateKeyPair, validateKeyName } from "../nix/keys.js";
import {
  checkNotWritableByOthers,
  configDir,
  ensureConfigDir,
  publicKeyPath,
  secretKeyPath,
  writeFileAtomic,
} from "../store/config-dir.js";

interface KeygenOptions {
  name?: string;
  force?: boolean;
}

/** Nix's convention for key names is "<host>-<generation>". */
export function defaultKeyName(): string {
  return `${hostname()}-1`;
}

async function keygen(options: KeygenOptions): Promise<void> {
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
      `  next: copy signing-key.pub to the machines that import from this one and run \`offload authorize signing-key.pub\` there\n` +
      `  on a builder, \`secret-key-files = ${secretFile}\` in nix.conf makes Nix sign what it builds with this key\n`,
  );
  // Only the public key goes to stdout, so `offload keygen | ssh builder offload authorize` works.
  process.stdout.write(`${key.publicKey.toString()}\n`);
}

export function registerKeys(program: Command): void {
  program
    .command("keygen")
    .description("create this machine's signing key pair (signing-key.sec / signing-key.pub in the config dir)")
    .option("--name <name>", `key name, default "<hostname>-1" (here "${defaultKeyName()}")`)
    .option("--force", "replace an existing key pair")
    .action(keygen);
}
