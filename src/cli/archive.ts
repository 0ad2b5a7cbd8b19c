// `offload archive export|import`: signed archives of store paths, like `guix archive`,
// in Nix's own export format so `nix-store --import` reads them too.
import type { Command } from "commander";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { OffloadError } from "../errors.js";
import { readSecretKeyFile } from "../nix/keys.js";
import { readAcl } from "../store/acl.js";
import { exportArchive, pathsToExport, resolveStorePath } from "../store/archive-export.js";
import { importArchive } from "../store/archive-import.js";
import { aclPath, secretKeyPath } from "../files/config-dir.js";
import { openLocalStore } from "../store/local-store.js";
import { guixArchiveExport, guixArchiveImport } from "./guix.js";

interface ExportOptions {
  recursive?: boolean;
  store?: string;
  key?: string;
  guix?: boolean;
}

function refuseStoreWithGuix(options: { store?: string; guix?: boolean }): void {
  if (options.guix && options.store !== undefined) {
    throw new OffloadError("--store names a Nix store; with --guix the store is guix-daemon's", {
      code: "usage",
      fix: "drop --store (GUIX_DAEMON_SOCKET selects another guix-daemon)",
    });
  }
}

async function exportCommand(paths: string[], options: ExportOptions): Promise<void> {
  if (process.stdout.isTTY) {
    throw new OffloadError("refusing to write a binary archive to the terminal", {
      code: "usage",
      fix: `offload archive export ${paths.join(" ")} > archive.nixexport`,
    });
  }
  refuseStoreWithGuix(options);
  if (options.guix) return guixArchiveExport(paths, options);
  const secretKey = await readSecretKeyFile(options.key ?? secretKeyPath());
  const storePaths = await Promise.all(paths.map((argument) => resolveStorePath(argument)));
  const store = await openLocalStore({ store: options.store });
  try {
    const infos = await pathsToExport(store.client, storePaths, options.recursive ?? false);
    await pipeline(Readable.from(exportArchive(store.client, infos, secretKey)), process.stdout);
    process.stderr.write(`offload: exported ${infos.length} path(s), signed by ${secretKey.name}\n`);
  } finally {
    await store.close();
  }
}

async function importCommand(options: { store?: string; guix?: boolean }): Promise<void> {
  if (process.stdin.isTTY) {
    throw new OffloadError("no archive on standard input (it is a terminal)", {
      code: "usage",
      fix: "offload archive import < archive.nixexport",
    });
  }
  refuseStoreWithGuix(options);
  if (options.guix) return guixArchiveImport();
  const acl = aclPath();
  const trustedKeys = await readAcl(acl);
  if (trustedKeys.length === 0) {
    throw new OffloadError(`no keys are authorized in ${acl}, so no archive can be imported`, {
      code: "empty-acl",
      fix: "offload authorize /path/to/the/exporting/machine's/signing-key.pub",
    });
  }
  const imported = await importArchive(process.stdin, { trustedKeys, store: options.store });
  for (const item of imported) process.stdout.write(`${item.path}\n`);
  const added = imported.filter((item) => item.added).length;
  const signers = [...new Set(imported.map((item) => item.signer))].join(", ");
  process.stderr.write(
    `offload: imported ${added} path(s)${imported.length > added ? `, ${imported.length - added} already present` : ""}` +
      (signers ? `; signed by ${signers}\n` : "\n"),
  );
}

export function registerArchive(program: Command): void {
  const archive = program.command("archive").description("signed archives of store paths (Nix export format)");
  archive
    .command("export")
    .description("write PATHs as a signed export stream to standard output, dependencies first")
    .argument("<paths...>", "store paths (or links to them, like ./result)")
    .option("-r, --recursive", "include the whole closure of the paths")
    .option("--store <store>", "read from this Nix store (e.g. a chroot store directory) instead of the default")
    .option("--key <file>", "secret key to sign with (default: signing-key.sec in the config dir)")
    .option("--guix", "from the Guix store, as a Guix archive signed with guix-signing-key.sec (`guix archive --import` reads it)")
    .action(exportCommand);
  archive
    .command("import")
    .description("verify a signed archive from standard input against the ACL, then import it (all or nothing)")
    .option("--store <store>", "import into this Nix store (e.g. a chroot store directory) instead of the default")
    .option("--guix", "a Guix archive (`guix archive --export`), checked against guix-acl, into the Guix store through guix-daemon")
    .action(importCommand);
}
