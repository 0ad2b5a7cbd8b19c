// Guix ACLs: `(acl (entry KEY (tag (guix import))) …)` (guix/pki.scm). offload's own ACL for
// Guix signatures, guix-acl in its config directory, has exactly that format, so it can be
// made from /etc/guix/acl by copying and read by Guix; and /etc/guix/acl itself is read to
// tell whether the local guix-daemon accepts what offload signs.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { OffloadError } from "../errors.js";
import { configDir } from "../files/config-dir.js";
import { checkNotWritableByOthers, ensureConfigDir, fileError, writeFileAtomic } from "../files/safety.js";
import { publicKeyFromSexp, type GuixPublicKey } from "./keys.js";
import { advancedSexp, atom, isAtom, parseSexp, sexpEquals, type Sexp } from "./sexp.js";

export function guixAclPath(dir: string = configDir()): string {
  return path.join(dir, "guix-acl");
}

/** Guix's configuration directory (its %config-directory): /etc/guix unless GUIX_CONFIGURATION_DIRECTORY says otherwise. */
export function guixConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.GUIX_CONFIGURATION_DIRECTORY || "/etc/guix";
}

const TAG: Sexp[] = [atom("tag"), [atom("guix"), atom("import")]];

function invalidAcl(file: string, message: string): OffloadError {
  return new OffloadError(`${file} is not a Guix ACL: ${message}`, {
    code: "invalid-acl",
    fix: `fix it, or remove it and authorize the keys again (offload authorize --guix KEY-FILE)`,
  });
}

/** The key S-expressions an ACL authorizes for imports, in order, as Guix's acl->public-keys reads them. */
export function parseGuixAcl(text: Buffer, file: string): Sexp[][] {
  let acl: Sexp[];
  try {
    acl = parseSexp(text);
  } catch (error) {
    throw invalidAcl(file, (error as OffloadError).message);
  }
  if (!isAtom(acl[0], "acl")) throw invalidAcl(file, "it does not start with (acl");
  return acl.slice(1).map((entry, index) => {
    const [head, key, tag] = Buffer.isBuffer(entry) ? [] : entry;
    if (Buffer.isBuffer(entry) || entry.length !== 3 || !isAtom(head, "entry") || key === undefined || Buffer.isBuffer(key) || !tag || !sexpEquals(tag, TAG)) {
      throw invalidAcl(file, `entry ${index + 1} is not (entry KEY (tag (guix import)))`);
    }
    return key;
  });
}

/** The ACL of `keys` as Guix writes it (advanced form), duplicates dropped. */
export function formatGuixAcl(keys: readonly Sexp[]): Buffer {
  const unique = keys.filter((key, index) => keys.findIndex((other) => sexpEquals(other, key)) === index);
  return advancedSexp([atom("acl"), ...unique.map((key): Sexp[] => [atom("entry"), key, TAG])]);
}

/** The key S-expressions of an ACL file; a missing file authorizes nothing. */
export async function readGuixAclEntries(file: string): Promise<Sexp[][]> {
  if (!(await checkNotWritableByOthers(file, "Guix ACL"))) return [];
  let text: Buffer;
  try {
    text = await readFile(file);
  } catch (error) {
    throw fileError(error, "read the Guix ACL", file);
  }
  return parseGuixAcl(text, file);
}

/** offload's Guix ACL as keys it can verify with; an entry of another kind is an error. */
export async function readGuixAcl(file: string = guixAclPath()): Promise<GuixPublicKey[]> {
  return (await readGuixAclEntries(file)).map((key, index) => {
    try {
      return publicKeyFromSexp(key, `entry ${index + 1} of ${file}`);
    } catch (error) {
      throw new OffloadError((error as OffloadError).message, {
        code: "invalid-acl",
        fix: `offload verifies Guix's default keys only (ECDSA on Ed25519): remove that entry from ${file}`,
      });
    }
  });
}

/** Whether the ACL in `file` lists `key` (compared as Guix does: the same S-expression). */
export async function guixAclHas(file: string, key: GuixPublicKey): Promise<boolean> {
  return (await readGuixAclEntries(file)).some((entry) => sexpEquals(entry, key.sexp));
}

/** Adds `key` to the ACL in `file` (first, as `guix archive --authorize` does); false when it was there already. */
export async function authorizeGuixKey(key: GuixPublicKey, file: string = guixAclPath()): Promise<boolean> {
  const entries = await readGuixAclEntries(file);
  if (entries.some((entry) => sexpEquals(entry, key.sexp))) return false;
  await ensureConfigDir(path.dirname(file));
  await writeFileAtomic(file, formatGuixAcl([key.sexp, ...entries]), 0o644);
  return true;
}
