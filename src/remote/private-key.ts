// Loads the SSH client key with the checks ssh itself makes, but failing with a fix
// instead of a prompt: the build hook has no terminal to ask for a passphrase.

import { readFileSync } from "node:fs";
import ssh2 from "ssh2";
import type { ParsedKey } from "ssh2";
import { checkKeyFile, deniedToUser, unreadable } from "./key-file.js";

export interface ClientKey {
  path: string;
  /** File contents, handed to ssh2 as is. */
  data: Buffer;
  /** `"<type> <base64> <comment>"`: what belongs in the remote authorized_keys. */
  publicLine: string;
}

export function loadClientKey(path: string): ClientKey {
  checkKeyFile(path);
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (error) {
    throw (
      deniedToUser(path, error) ??
      unreadable(path, `cannot be read: ${(error as Error).message}`, `ls -l ${path}   (it must be readable by the user running the nix daemon)`, error)
    );
  }
  const parsed = ssh2.utils.parseKey(data);
  if (parsed instanceof Error) {
    if (/passphrase|encrypted/i.test(parsed.message)) {
      throw unreadable(
        path,
        "is protected by a passphrase, which the build hook cannot enter",
        `ssh-keygen -p -N '' -f ${path}   (removes the passphrase; or set privateKey to a dedicated key without one)`,
      );
    }
    throw unreadable(path, `is not a private key ssh2 understands: ${parsed.message}`, `ssh-keygen -y -f ${path}   (must print the public key)`, parsed);
  }
  const key: ParsedKey = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key.isPrivateKey()) throw unreadable(path, "holds a public key, not a private key", `point privateKey at the file without .pub`);
  const comment = key.comment === "" ? "offload" : key.comment;
  return { path, data, publicLine: `${key.type} ${key.getPublicSSH().toString("base64")} ${comment}` };
}
