// `offload check` for a Guix build machine: its guix-daemon reached through its socket over
// SSH (as the hook reaches it), then a signed round trip both ways without a build: a
// made-up store item signed with offload's Guix key goes in (the machine's /etc/guix/acl must
// list that key), and comes back exported and signed by the machine (its key must be pinned
// in machines.ts or in offload's Guix ACL). The machine's guix-daemon checks the first
// signature; offload checks the second.
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BuildMachine } from "../../types/index.js";
import { asOffloadError, OffloadError } from "../errors.js";
import { guixPublicKeyPath, type GuixPublicKey, type GuixSecretKey } from "../guix/keys.js";
import { GuixDaemon } from "../store/guix-daemon.js";
import { DEFAULT_GUIX_SOCKET, GUIX_STORE_DIR } from "../guix/paths.js";
import { signedExport } from "../store/guix-land.js";
import { checkGuixSignature, signHash } from "../guix/signature.js";
import { readExportStream, writeExportStream, type ExportItem } from "../nix/export-stream.js";
import { dumpPath } from "../nix/nar.js";
import { encodeNix32 } from "../nix/nix32.js";
import { greetGuixDaemon, guixDaemonSocket } from "../agent/guix-link.js";
import { oneLine, readNixStoreVersion } from "../remote/probes.js";
import { runRemote } from "../remote/remote-command.js";
import { guixMachineTrustedKeys, guixOutputFixes } from "../store/machine-trust.js";
import type { SshConnection } from "../remote/ssh.js";

/** What the Guix steps need of `offload check`'s context. */
export interface GuixCheckKeys {
  /** offload's Guix key, or why it cannot be used; undefined when no Guix machine is checked. */
  guixKey: GuixSecretKey | OffloadError | undefined;
  /** offload's Guix ACL. */
  guixAcl: readonly GuixPublicKey[];
}

/**
 * The machine's guix-daemon, greeted over a forwarded socket. When there is none, says
 * whether the machine runs Nix instead (its record then needs daemon: "nix").
 */
export async function connectGuixDaemon(machine: BuildMachine, ssh: SshConnection): Promise<GuixDaemon> {
  const socket = guixDaemonSocket(machine);
  try {
    return await greetGuixDaemon(machine, ssh);
  } catch (error) {
    const failure = asOffloadError(error);
    const nix = await readNixStoreVersion(ssh).catch(() => undefined);
    if (nix?.found) {
      throw new OffloadError(`no guix-daemon at ${socket} on ${machine.name}, which runs Nix ${nix.version} (${oneLine(failure.message)})`, {
        code: "daemon-mismatch",
        fix: `set daemon: "nix" for ${machine.name} in machines.ts (or point remoteStore at its guix-daemon's socket)`,
        cause: error,
      });
    }
    throw new OffloadError(`cannot reach guix-daemon at ${socket} on ${machine.name}: ${oneLine(failure.message)}`, {
      code: "guix-daemon-unreachable",
      fix: `start guix-daemon on ${machine.name} (herd start guix-daemon, or systemctl start guix-daemon), or set remoteStore to its socket`,
      cause: error,
    });
  }
}

/** On a machine recorded as Nix without nix-store: whether it runs guix-daemon instead (the record then needs daemon: "guix"). */
export async function runsGuixDaemon(ssh: SshConnection): Promise<boolean> {
  const result = await runRemote(ssh, `test -S ${DEFAULT_GUIX_SOCKET}`, 10_000).catch(() => undefined);
  return result?.code === 0;
}

/** The signed round trip; returns the id of the machine's key that signed the way back. */
export async function guixRoundTrip(machine: BuildMachine, daemon: GuixDaemon, keys: GuixCheckKeys): Promise<string> {
  if (keys.guixKey instanceof OffloadError) throw keys.guixKey;
  const key = keys.guixKey;
  if (!key) throw new OffloadError("offload's Guix key was not read", { code: "internal" });
  const trusted = guixMachineTrustedKeys(machine, keys.guixAcl);
  const work = await mkdtemp(join(tmpdir(), "offload-check-"));
  try {
    const nonce = `${Date.now().toString(36)}-${randomBytes(8).toString("hex")}`;
    const file = join(work, "nonce");
    await writeFile(file, `${nonce}\n`);
    const hash = encodeNix32(createHash("sha256").update(`offload-check:${nonce}`).digest().subarray(0, 20));
    const path = `${GUIX_STORE_DIR}/${hash}-offload-check-${nonce}`;
    const item = { path, references: [], nar: dumpPath(file), signature: (itemHash: Buffer) => signHash(itemHash, key) };
    await daemon.importPaths(writeExportStream([item], GUIX_STORE_DIR)).catch((error: unknown) => {
      const failure = asOffloadError(error);
      throw new OffloadError(
        `${machine.name}'s guix-daemon refused a test item signed with offload's Guix key ${key.publicKey.id}: ${oneLine(failure.message.replace(/^guix-daemon: /, ""))}`,
        {
          code: "guix-key-not-authorized",
          fix: `on ${machine.name}: guix archive --authorize < (the contents of ${guixPublicKeyPath()} here)`,
          cause: error,
        },
      );
    });
    const items: ExportItem[] = [];
    for await (const received of readExportStream(signedExport(daemon, [path]), { spoolDir: work, storeDir: GUIX_STORE_DIR })) items.push(received);
    const verdict = checkGuixSignature(items[0]?.signatureBytes, items[0]!.itemHash, path, trusted);
    if (verdict.valid) return verdict.key.id;
    throw new OffloadError(`what ${machine.name} signs is not accepted here: ${verdict.reason}`, {
      code: `guix-${verdict.code}`,
      fix: guixOutputFixes(machine)[verdict.code],
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
