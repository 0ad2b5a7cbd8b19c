// SSH host keys: parsing OpenSSH public key lines, fingerprints, known_hosts lookup and the
// accept/refuse decision. Hosts are never trusted on first use: a key must be pinned in
// machines.ts or listed in a known_hosts file.

import { createHash, createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { OffloadError } from "../errors.js";

export interface OpenSshPublicKey {
  /** Key type as written in the line, e.g. "ssh-ed25519". */
  type: string;
  /** The decoded key blob (SSH wire format, starts with the type again). */
  blob: Buffer;
  comment: string;
}

export interface KnownHostEntry {
  /** `@revoked` entries refuse their key; `@cert-authority` entries are not supported and skipped. */
  revoked: boolean;
  /** The host field: comma-separated patterns, or one hashed `|1|salt|hash` entry. */
  hosts: string;
  key: OpenSshPublicKey;
  file: string;
  line: number;
}

/** The first wire string of a key blob is its type; a line whose declared type disagrees is corrupt. */
function blobType(blob: Buffer): string | undefined {
  if (blob.length < 4) return undefined;
  const length = blob.readUInt32BE(0);
  if (length === 0 || 4 + length > blob.length) return undefined;
  return blob.subarray(4, 4 + length).toString("latin1");
}

/** Parses `"<type> <base64> [comment]"`, checking that the blob really is a key of that type. */
export function parseOpenSshPublicKey(line: string): OpenSshPublicKey {
  const fields = line.trim().split(/\s+/);
  const example = 'e.g. "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA… root@builder" (the contents of the machine\'s /etc/ssh/ssh_host_ed25519_key.pub)';
  if (fields.length < 2 || fields[0] === "") {
    throw new OffloadError(`not an OpenSSH public key line: ${JSON.stringify(line)}`, {
      code: "host-key-invalid",
      fix: `write the key as "<type> <base64>", ${example}`,
    });
  }
  const [type, data] = fields as [string, string];
  const blob = /^[A-Za-z0-9+/]+={0,2}$/.test(data) ? Buffer.from(data, "base64") : Buffer.alloc(0);
  const inner = blobType(blob);
  if (inner !== type) {
    throw new OffloadError(
      inner === undefined
        ? `the base64 part of the public key ${JSON.stringify(line)} is not a valid key blob`
        : `public key line says "${type}" but its blob is a "${inner}" key`,
      { code: "host-key-invalid", fix: `copy the whole line unchanged, ${example}` },
    );
  }
  return { type, blob, comment: fields.slice(2).join(" ") };
}

/** `SHA256:<base64 without padding>`, exactly as `ssh-keygen -lf` prints it. */
export function fingerprintOf(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/** The OpenSSH line for a key blob, e.g. to tell the user what to pin. */
export function openSshLine(blob: Buffer): string {
  return `${blobType(blob) ?? "unknown"} ${blob.toString("base64")}`;
}

/** How known_hosts names a host: bare for port 22, `[host]:port` otherwise. */
export function knownHostsName(host: string, port: number): string {
  const lower = host.toLowerCase();
  return port === 22 ? lower : `[${lower}]:${port}`;
}

/** Reads known_hosts files; a missing file is simply empty, malformed lines are skipped like ssh does. */
export function readKnownHosts(files: readonly string[]): KnownHostEntry[] {
  const entries: KnownHostEntry[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new OffloadError(`cannot read known_hosts file ${file}: ${(error as Error).message}`, {
        code: "host-key-unknown",
        fix: `ls -l ${file}`,
        cause: error,
      });
    }
    text.split("\n").forEach((raw, index) => {
      let rest = raw.trim();
      if (rest === "" || rest.startsWith("#")) return;
      let revoked = false;
      if (rest.startsWith("@")) {
        const marker = rest.split(/\s+/, 1)[0];
        if (marker !== "@revoked") return;
        revoked = true;
        rest = rest.slice(marker.length).trim();
      }
      const space = rest.search(/\s/);
      if (space < 0) return;
      try {
        entries.push({ revoked, hosts: rest.slice(0, space), key: parseOpenSshPublicKey(rest.slice(space)), file, line: index + 1 });
      } catch {
        // ssh ignores lines it cannot parse; so do we.
      }
    });
  }
  return entries;
}

function globToRegExp(pattern: string): RegExp {
  const body = pattern
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${body}$`, "i");
}

/** ssh's rule: some pattern matches and no negated (`!pattern`) one does; hashed entries compare HMAC-SHA1. */
export function hostFieldMatches(hosts: string, name: string): boolean {
  if (hosts.startsWith("|1|")) {
    const [, , salt, hash] = hosts.split("|");
    if (salt === undefined || hash === undefined) return false;
    const digest = createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest("base64");
    return digest === hash;
  }
  let matched = false;
  for (const pattern of hosts.split(",")) {
    const negated = pattern.startsWith("!");
    if (globToRegExp(negated ? pattern.slice(1) : pattern).test(name)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

/** What decides whether a presented host key is acceptable. */
export interface HostKeyPolicy {
  /** The machine's name, for messages. */
  machine: string;
  /** The known_hosts name looked up, e.g. "builder" or "[127.0.0.2]:2222". */
  knownHostsName: string;
  /** `hostKey` from machines.ts; when set, known_hosts is not consulted. */
  pinned?: OpenSshPublicKey;
  /** Entries of the known_hosts files that match knownHostsName. */
  known: KnownHostEntry[];
  /** The known_hosts files consulted (for the fix text). */
  knownHostsFiles: readonly string[];
}

export function hostKeyPolicy(machine: string, name: string, pinnedLine: string | undefined, knownHostsFiles: readonly string[]): HostKeyPolicy {
  if (pinnedLine !== undefined) {
    return { machine, knownHostsName: name, pinned: parseOpenSshPublicKey(pinnedLine), known: [], knownHostsFiles };
  }
  const known = readKnownHosts(knownHostsFiles).filter((entry) => hostFieldMatches(entry.hosts, name));
  return { machine, knownHostsName: name, known, knownHostsFiles };
}

/** Key types the policy can accept, so the client offers only those and a host with several keys shows the known one. */
export function expectedKeyTypes(policy: HostKeyPolicy): string[] {
  const keys = policy.pinned ? [policy.pinned] : policy.known.filter((entry) => !entry.revoked).map((entry) => entry.key);
  return [...new Set(keys.map((key) => key.type))];
}

/** undefined when the presented key is acceptable, else the error explaining why not. */
export function checkHostKey(presented: Buffer, policy: HostKeyPolicy): OffloadError | undefined {
  const fingerprint = fingerprintOf(presented);
  const line = openSshLine(presented);
  if (policy.pinned) {
    if (policy.pinned.blob.equals(presented)) return undefined;
    return new OffloadError(
      `host key mismatch for ${policy.machine}: machines.ts pins ${policy.pinned.type} ${fingerprintOf(policy.pinned.blob)}, ` +
        `but the host presented ${blobType(presented)} ${fingerprint}. Either the machine was reinstalled or someone is intercepting the connection.`,
      {
        code: "host-key-mismatch",
        fix: `check on the machine with \`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\`; only if it prints ${fingerprint}, set hostKey: "${line}" for ${policy.machine} in machines.ts`,
      },
    );
  }
  const revoked = policy.known.find((entry) => entry.revoked && entry.key.blob.equals(presented));
  if (revoked) {
    return new OffloadError(`${policy.machine} presented host key ${fingerprint}, which ${revoked.file}:${revoked.line} marks @revoked`, {
      code: "host-key-mismatch",
      fix: `give the machine a new host key (ssh-keygen -A on it) and pin it with hostKey in machines.ts`,
    });
  }
  const trusted = policy.known.filter((entry) => !entry.revoked);
  if (trusted.some((entry) => entry.key.blob.equals(presented))) return undefined;
  if (trusted.length > 0) {
    const expected = trusted.map((entry) => `${entry.key.type} ${fingerprintOf(entry.key.blob)} (${entry.file}:${entry.line})`).join(", ");
    return new OffloadError(
      `host key mismatch for ${policy.machine}: known_hosts has ${expected}, but the host presented ${blobType(presented)} ${fingerprint}. ` +
        `Either the machine was reinstalled or someone is intercepting the connection.`,
      {
        code: "host-key-mismatch",
        fix: `check on the machine with \`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\`; only if it prints ${fingerprint}, run \`ssh-keygen -R '${policy.knownHostsName}'\` and set hostKey: "${line}" for ${policy.machine} in machines.ts`,
      },
    );
  }
  const file = policy.knownHostsFiles[0] ?? "/root/.ssh/known_hosts";
  return new OffloadError(
    `${policy.machine} is not a known host: it presented ${blobType(presented)} key ${fingerprint}, which is neither pinned in machines.ts nor listed for "${policy.knownHostsName}" in ${policy.knownHostsFiles.join(" or ")}`,
    {
      code: "host-key-unknown",
      fix: `check on the machine with \`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\`; if it prints ${fingerprint}, add hostKey: "${line}" to ${policy.machine} in machines.ts (or the line \`${policy.knownHostsName} ${line}\` to ${file})`,
    },
  );
}
