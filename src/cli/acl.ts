// `offload authorize`, `offload deauthorize`, `offload acl`: manage the keys whose
// signatures this machine accepts on import.
import type { Command } from "commander";
import { OffloadError } from "../errors.js";
import { parsePublicKey, readPublicKeyFile } from "../nix/keys.js";
import { parseGuixPublicKey, readGuixPublicKeyFile } from "../guix/keys.js";
import { guixAuthorize } from "./guix.js";
import { authorizeKey, deauthorizeKey, readAcl } from "../store/acl.js";
import { aclPath } from "../files/config-dir.js";

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  return Buffer.concat(chunks).toString("utf8");
}

async function authorize(file: string | undefined, options: { guix?: boolean } = {}): Promise<void> {
  const fromStdin = file === undefined || file === "-";
  if (fromStdin && process.stdin.isTTY) {
    throw new OffloadError("no public key given (stdin is a terminal)", {
      code: "usage",
      fix: "offload authorize /path/to/signing-key.pub   (or: ssh host cat /etc/offload/signing-key.pub | offload authorize)",
    });
  }
  if (options.guix) {
    return guixAuthorize(fromStdin ? parseGuixPublicKey(await readAll(process.stdin), "standard input") : await readGuixPublicKeyFile(file));
  }
  const key = fromStdin ? parsePublicKey(await readAll(process.stdin), "standard input") : await readPublicKeyFile(file);
  const aclFile = aclPath();
  const added = await authorizeKey(key, aclFile);
  process.stderr.write(`offload: ${added ? "authorized" : "already authorized:"} ${key.name} in ${aclFile}\n`);
}

async function deauthorize(name: string): Promise<void> {
  const file = aclPath();
  const removed = await deauthorizeKey(name, file);
  if (removed.length === 0) {
    throw new OffloadError(`no key named "${name}" in ${file}`, { code: "not-authorized", fix: "offload acl   (lists the authorized keys)" });
  }
  process.stderr.write(`offload: removed ${name} from ${file}\n`);
}

async function list(): Promise<void> {
  const file = aclPath();
  const keys = await readAcl(file);
  if (keys.length === 0) process.stderr.write(`offload: no keys authorized in ${file}\n`);
  for (const key of keys) process.stdout.write(`${key.name}\t${key.toString()}\n`);
}

export function registerAcl(program: Command): void {
  program
    .command("authorize")
    .description("trust signatures by a public key (NAME:BASE64, from FILE or standard input)")
    .argument("[file]", "public key file, or - for standard input")
    .option("--guix", "a Guix public key (e.g. /etc/guix/signing-key.pub) into offload's ACL for Guix archives (guix-acl)")
    .action(authorize);
  program.command("deauthorize").description("stop trusting the key called NAME").argument("<name>").action(deauthorize);
  program.command("acl").description("list the public keys whose signatures are accepted on import").action(list);
}
