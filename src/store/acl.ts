// The ACL: public keys whose signatures offload accepts when importing store paths.
// One "name:base64" Nix public key per line; "#" comments and blank lines are kept
// verbatim when the file is rewritten. Names must be unique, since a signature names
// its key and is looked up by that name (as Nix does with trusted-public-keys).
import path from "node:path";
import { OffloadError } from "../errors.js";
import { parsePublicKey, type PublicKey } from "../nix/keys.js";
import { aclPath } from "../files/config-dir.js";
import { checkNotWritableByOthers, ensureConfigDir, readTextFile, writeFileAtomic } from "../files/safety.js";

const HEADER =
  "# Public keys whose signatures `offload` accepts on import, one NAME:BASE64 per line.\n" +
  "# Edit with `offload authorize` and `offload deauthorize NAME`.\n";

interface AclLine {
  text: string;
  key?: PublicKey;
}

function parseLines(text: string, file: string): AclLine[] {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const byName = new Map<string, PublicKey>();
  return lines.map((line, index) => {
    const content = line.trim();
    if (content === "" || content.startsWith("#")) return { text: line };
    const location = { file, line: index + 1, column: line.indexOf(content) + 1 };
    let key: PublicKey;
    try {
      key = parsePublicKey(content);
    } catch (error) {
      const reason = error instanceof OffloadError ? error.message : String(error);
      throw new OffloadError(`ACL entry is not a Nix public key: ${reason}`, {
        code: "invalid-acl",
        location,
        fix: `fix or delete line ${index + 1} of ${file}`,
      });
    }
    const previous = byName.get(key.name);
    if (previous && !previous.equals(key)) {
      throw new OffloadError(`ACL has two different keys named "${key.name}"`, {
        code: "invalid-acl",
        location,
        fix: `offload deauthorize ${key.name}, then authorize the right key again`,
      });
    }
    byName.set(key.name, key);
    return { text: line, key };
  });
}

function keysOf(lines: AclLine[]): PublicKey[] {
  const keys: PublicKey[] = [];
  for (const { key } of lines) {
    if (key && !keys.some((known) => known.equals(key))) keys.push(key);
  }
  return keys;
}

async function load(file: string): Promise<AclLine[] | undefined> {
  if (!(await checkNotWritableByOthers(file, "ACL"))) return undefined;
  return parseLines(await readTextFile(file, "ACL"), file);
}

async function save(file: string, lines: AclLine[]): Promise<void> {
  await ensureConfigDir(path.dirname(file));
  await writeFileAtomic(file, lines.map((line) => `${line.text}\n`).join(""), 0o644);
}

/** The authorized keys; a missing ACL authorizes nothing. */
export async function readAcl(file: string = aclPath()): Promise<PublicKey[]> {
  return keysOf((await load(file)) ?? []);
}

/** Adds `key`; returns false when exactly this key was already authorized. */
export async function authorizeKey(key: PublicKey, file: string = aclPath()): Promise<boolean> {
  const lines = (await load(file)) ?? [{ text: HEADER.trimEnd() }];
  const sameName = keysOf(lines).find((known) => known.name === key.name);
  if (sameName?.equals(key)) return false;
  if (sameName) {
    throw new OffloadError(`the ACL already has a different key named "${key.name}"`, {
      code: "acl-name-conflict",
      fix: `offload deauthorize ${key.name} (if the old key is retired), then authorize again`,
    });
  }
  await save(file, [...lines, { text: key.toString(), key }]);
  return true;
}

/** Removes every key called `name`; returns the removed keys (empty if none). */
export async function deauthorizeKey(name: string, file: string = aclPath()): Promise<PublicKey[]> {
  const lines = await load(file);
  if (!lines) return [];
  const removed = keysOf(lines.filter((line) => line.key?.name === name));
  if (removed.length > 0)
    await save(
      file,
      lines.filter((line) => line.key?.name !== name),
    );
  return removed;
}
