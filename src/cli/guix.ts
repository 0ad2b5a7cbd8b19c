// The `--guix` side of `offload keygen`, `authorize` and `archive`: keys, ACL and archives in
// Guix's formats (src/guix/), next to the Nix ones in the config directory:
//   guix-signing-key.sec / .pub   a key pair as `guix archive --generate-key` makes them
//   guix-acl                      the Guix keys whose signatures offload accepts, as /etc/guix/acl
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { OffloadError } from "../errors.js";
import { authorizeGuixKey, guixAclPath, readGuixAcl } from "../guix/acl.js";
import { exportGuixArchive, guixPathsToExport, importGuixArchive } from "../store/guix-archive.js";
import { GuixDaemon } from "../store/guix-daemon.js";
import { GUIX_STORE_DIR } from "../guix/paths.js";
import { generateGuixKeyPair, guixPublicKeyPath, guixSecretKeyPath, readGuixSecretKeyFile, type GuixPublicKey } from "../guix/keys.js";
import { resolveStorePath } from "../store/archive-export.js";
import { configDir } from "../files/config-dir.js";
import { checkNotWritableByOthers, ensureConfigDir, writeFileAtomic } from "../files/safety.js";

export async function guixKeygen(options: { force?: boolean }): Promise<void> {
  const dir = configDir();
  const secretFile = guixSecretKeyPath(dir);
  const publicFile = guixPublicKeyPath(dir);
  await ensureConfigDir(dir);
  if ((await checkNotWritableByOthers(secretFile, "Guix secret key")) && !options.force) {
    throw new OffloadError(`a Guix signing key already exists at ${secretFile}`, {
      code: "key-exists",
      fix: "offload keygen --guix --force (machines that authorized the old public key must then authorize the new one)",
    });
  }
  const key = generateGuixKeyPair();
  await writeFileAtomic(secretFile, key.exportSecret(), 0o600);
  await writeFileAtomic(publicFile, key.publicKey.toString(), 0o644);
  process.stderr.write(
    `offload: wrote ${secretFile} (mode 0600) and ${publicFile}, in Guix's format (ECDSA on Ed25519)\n` +
      `  next: on each Guix machine that imports what this one signs: guix archive --authorize < guix-signing-key.pub\n` +
      `  (here too, for \`offload archive import --guix\`: guix-daemon checks what offload hands it)\n`,
  );
  // Only the public key goes to stdout, so `offload keygen --guix | ssh host guix archive --authorize` works.
  process.stdout.write(key.publicKey.toString());
}

export async function guixAuthorize(key: GuixPublicKey): Promise<void> {
  const file = guixAclPath();
  const added = await authorizeGuixKey(key, file);
  process.stderr.write(`offload: ${added ? "authorized" : "already authorized:"} Guix key ${key.id}… in ${file}\n`);
}

export async function guixArchiveExport(paths: string[], options: { recursive?: boolean; key?: string }): Promise<void> {
  const key = await readGuixSecretKeyFile(options.key ?? guixSecretKeyPath());
  const items = await Promise.all(paths.map((argument) => resolveStorePath(argument, GUIX_STORE_DIR)));
  const daemon = await GuixDaemon.connect();
  try {
    const infos = await guixPathsToExport(daemon, items, options.recursive ?? false);
    await pipeline(Readable.from(exportGuixArchive(daemon, infos, key)), process.stdout);
    process.stderr.write(`offload: exported ${infos.length} Guix store item(s), signed by Guix key ${key.publicKey.id}…\n`);
  } finally {
    daemon.close();
  }
}

export async function guixArchiveImport(): Promise<void> {
  const file = guixAclPath();
  const acl = await readGuixAcl(file);
  if (acl.length === 0) {
    throw new OffloadError(`no Guix keys are authorized in ${file}, so no Guix archive can be imported`, {
      code: "empty-acl",
      fix: "offload authorize --guix /path/to/the/exporting/machine's/signing-key.pub   (e.g. its /etc/guix/signing-key.pub)",
    });
  }
  const key = await readGuixSecretKeyFile(guixSecretKeyPath());
  const daemon = await GuixDaemon.connect({ log: (line) => process.stderr.write(`guix-daemon: ${line}\n`) });
  try {
    const imported = await importGuixArchive(process.stdin, { acl, key, daemon });
    for (const item of imported) process.stdout.write(`${item.path}\n`);
    const added = imported.filter((item) => item.added).length;
    const signers = [...new Set(imported.map((item) => `${item.signer}…`))].join(", ");
    process.stderr.write(
      `offload: imported ${added} Guix store item(s)${imported.length > added ? `, ${imported.length - added} already present` : ""}` +
        (signers ? `; signed by Guix key ${signers}\n` : "\n"),
    );
  } finally {
    daemon.close();
  }
}
