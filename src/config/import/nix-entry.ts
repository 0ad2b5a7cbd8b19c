// One Nix build machine, whichever file it came from (Nix 1.x remote-systems.conf, a Nix 2.x
// machines file or `builders` value, NixOS's nix.buildMachines), as a machines.ts record.
// The meanings follow Nix's src/libstore/machines.cc (2.8 … 2.35).
import type { SourceLocation } from "../../errors.js";
import { parseOpenSshPublicKey } from "../../remote/host-keys.js";
import { importError, keepAsComment, newMachine, setField, type ImportedMachine, type Warn } from "./model.js";

/** The eight columns of a machines line, already parsed; undefined is Nix's `-` (its default). */
export interface NixMachineEntry {
  at: SourceLocation;
  source: string;
  /** Where each column is, for messages about it. */
  columnAt: (column: number) => SourceLocation;
  storeUri: string;
  systems?: string[];
  sshKey?: string;
  maxJobs?: number;
  speedFactor?: number;
  supportedFeatures?: string[];
  mandatoryFeatures?: string[];
  /** base64 of an OpenSSH public key line. */
  publicHostKey?: string;
  /** Columns after the eighth, which Nix ignores. */
  extra: string[];
}

export interface StoreUri {
  scheme: string;
  user?: string;
  host: string;
  port?: number;
  params: [string, string][];
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const WHOLE = /^\d+$/;
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/** A whitespace-separated word of a machines line. */
export interface Token {
  text: string;
  at: SourceLocation;
}

/** The words of `text` (one entry of a line that starts at `at`), with their positions. */
export function tokenize(text: string, at: SourceLocation): Token[] {
  return [...text.matchAll(/\S+/g)].map((m) => ({ text: m[0], at: { ...at, column: at.column + m.index! } }));
}

/**
 * The columns of a machines line; Nix 1.x and 2.x share them. `-` (Nix 2's "default") leaves
 * a column unset. Nix 1.x had no default for max jobs: a line without it was never used.
 */
export function entryFromColumns(tokens: Token[], source: string, defaultMaxJobs: number | undefined): NixMachineEntry {
  const at = tokens[0]!.at;
  const value = (i: number) => (tokens[i] === undefined || tokens[i]!.text === "-" ? undefined : tokens[i]!.text);
  const list = (i: number) =>
    value(i)
      ?.split(",")
      .filter((item) => item !== "");
  const number = (i: number, what: string, pattern: RegExp) => {
    const text = value(i);
    if (text === undefined) return undefined;
    if (!pattern.test(text))
      throw importError(tokens[i]!.at, `column ${i + 1} (${what}) must be ${pattern === WHOLE ? "a whole number" : "a number"}, not ${JSON.stringify(text)}`);
    return Number(text);
  };
  return {
    at,
    source,
    columnAt: (i) => tokens[i]?.at ?? at,
    storeUri: tokens[0]!.text,
    systems: list(1),
    sshKey: value(2),
    maxJobs: number(3, "max jobs", WHOLE) ?? defaultMaxJobs,
    speedFactor: number(4, "speed factor", DECIMAL),
    supportedFeatures: list(5),
    mandatoryFeatures: list(6),
    publicHostKey: value(7),
    extra: tokens.slice(8).map((token) => token.text),
  };
}

/** Nix's special store names: machines.cc prepends ssh:// to anything else without `://` or `/`. */
const LOCAL_STORES = /^(auto|daemon|local)(\?|$)|^\?/;

/**
 * A store URI as Nix reads a machine's: `[ssh://|ssh-ng://][user@]host[:port][?k=v&…]`, the
 * host an IPv6 address either bare (Nix before 2.31) or in brackets. undefined when it is not
 * an SSH store (a path, `daemon`, `http://`…).
 */
export function parseStoreUri(uri: string): StoreUri | undefined {
  if (LOCAL_STORES.test(uri) || (!uri.includes("://") && uri.includes("/"))) return undefined;
  const match = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)(\?[^#]*)?$/i.exec(uri.includes("://") ? uri : `ssh://${uri}`);
  if (!match || (match[1] !== "ssh" && match[1] !== "ssh-ng")) return undefined;
  const [, scheme, authority, query] = match;
  const at = authority!.lastIndexOf("@");
  const hostPort = authority!.slice(at + 1);
  const address =
    /^\[([^\]]+)\](?::(\d+))?$/.exec(hostPort) ??
    /^([^:]+):(\d+)$/.exec(hostPort) ??
    (hostPort.split(":").length === 2 || /[[\]]/.test(hostPort) ? null : [hostPort, hostPort]);
  if (!address || address[1] === "") return undefined;
  const params = (query ?? "")
    .slice(1)
    .split("&")
    .filter((pair) => pair !== "")
    .map((pair): [string, string] => {
      const equals = pair.indexOf("=");
      return equals < 0 ? [decode(pair), ""] : [decode(pair.slice(0, equals)), decode(pair.slice(equals + 1))];
    });
  return {
    scheme: scheme!,
    ...(at < 0 ? {} : { user: decode(authority!.slice(0, at)) }),
    host: address[1]!,
    ...(address[2] ? { port: Number(address[2]) } : {}),
    params,
  };
}

/** The inverse of parseStoreUri; `host` is written as given (bracket an IPv6 address when adding a port). */
export function formatStoreUri(uri: StoreUri): string {
  const query = uri.params.map(([key, value]) => `${key}=${value.replace(/[%&=#?;\s]/g, (c) => encodeURIComponent(c))}`).join("&");
  return `${uri.scheme}://${uri.user === undefined ? "" : `${uri.user}@`}${uri.host}${uri.port === undefined ? "" : `:${uri.port}`}${query ? `?${query}` : ""}`;
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** The system Nix fills in for a machine with no systems: the local one (Nix's `system` setting). */
export function localSystemType(): string {
  const arch: Record<string, string> = { x64: "x86_64", arm64: "aarch64", ia32: "i686", arm: "armv7l", riscv64: "riscv64", ppc64: "powerpc64le" };
  return `${arch[process.arch] ?? process.arch}-${process.platform}`;
}

/** Query parameters Nix sets itself for build machines, meaningless in a machines file. */
const INTERNAL_PARAMS = new Set(["max-connections", "log-fd", "system-features"]);

export function machineFromNixEntry(entry: NixMachineEntry, warn: Warn): ImportedMachine {
  const machine = newMachine(entry.at, entry.source);
  const uri = parseStoreUri(entry.storeUri);
  if (entry.storeUri === "-") throw importError(entry.at, "the first column must name the machine (a store URI such as ssh://nix@builder), not -");
  if (!uri) {
    machine.incomplete = true;
    keepAsComment(machine, entry.at, `${entry.storeUri} is not an SSH store: offload builds only over SSH; not imported`, warn);
    return machine;
  }
  const set = (field: Parameters<typeof setField>[1], value: unknown, column = 0) => setField(machine, field, value, entry.columnAt(column), warn);
  set("name", uri.host);
  if (uri.port !== undefined) {
    set("port", uri.port);
    machine.notes.push(`port ${uri.port}: Nix reads ports in store URIs from 2.31 on; offload on any version`);
  }
  if (uri.user !== undefined) set("user", uri.user);
  if (uri.scheme === "ssh-ng")
    machine.notes.push("was ssh-ng:// (the daemon protocol): offload always builds through `nix-store --serve` over SSH, as ssh:// does");

  const param = (key: string) => uri.params.find(([k]) => k === key)?.[1];
  for (const [key, value] of uri.params) {
    if (key === "ssh-key" || key === "base64-ssh-public-host-key" || key === "remote-store" || INTERNAL_PARAMS.has(key)) continue;
    if (key === "compress") machine.notes.push(`${key}=${value}: offload does not compress SSH (set Compression in root's ssh_config if wanted)`);
    else keepAsComment(machine, entry.at, `store setting ${key}=${value} has no offload equivalent; not imported`, warn);
  }
  const remoteStore = param("remote-store");
  if (remoteStore !== undefined) set("remoteStore", remoteStore);

  if (entry.systems === undefined) {
    machine.notes.push(`no systems given: Nix's default is this machine's system, ${localSystemType()}`);
    set("systems", [localSystemType()], 1);
  } else {
    set("systems", [...new Set(entry.systems)], 1);
  }
  // The column wins over the URI's ssh-key, as in machines.cc.
  const sshKey = entry.sshKey ?? param("ssh-key");
  if (sshKey !== undefined) set("privateKey", sshKey, entry.sshKey === undefined ? 0 : 2);

  if (entry.maxJobs === 0) {
    set("enabled", false, 3);
    keepAsComment(machine, entry.columnAt(3), "no build slots (max jobs 0, or none in Nix 1.x): Nix never builds there; imported disabled", warn);
  } else if (entry.maxJobs !== undefined && entry.maxJobs !== 1) {
    set("parallelBuilds", entry.maxJobs, 3);
  }
  if (entry.speedFactor !== undefined) {
    if (entry.speedFactor < 0) throw importError(entry.columnAt(4), `speed factor ${entry.speedFactor} is negative (Nix: "speed factor must be >= 0")`);
    // Nix reads 0 as 1; 1 is offload's default too.
    if (entry.speedFactor !== 0 && entry.speedFactor !== 1) set("speed", entry.speedFactor, 4);
  }
  if (entry.supportedFeatures?.length) set("features", [...new Set(entry.supportedFeatures)], 5);
  if (entry.mandatoryFeatures?.length) set("mandatoryFeatures", [...new Set(entry.mandatoryFeatures)], 6);

  const hostKeyColumn = entry.publicHostKey === undefined ? 0 : 7;
  const hostKey = entry.publicHostKey ?? param("base64-ssh-public-host-key");
  if (hostKey !== undefined) set("hostKey", decodeHostKey(hostKey, entry.columnAt(hostKeyColumn)), hostKeyColumn);
  if (entry.extra.length > 0) keepAsComment(machine, entry.columnAt(8), `extra columns ignored by Nix: ${entry.extra.join(" ")}`, warn);
  return machine;
}

/** Nix's host key column: `base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub`, i.e. a whole OpenSSH line. */
function decodeHostKey(base64: string, at: SourceLocation): string {
  const line = BASE64.test(base64) ? Buffer.from(base64, "base64").toString("utf8").trim() : undefined;
  if (line === undefined)
    throw importError(at, `public host key ${JSON.stringify(base64)} is not base64 (Nix wants \`base64 -w0 /etc/ssh/ssh_host_ed25519_key.pub\`)`);
  try {
    parseOpenSshPublicKey(line);
  } catch (error) {
    throw importError(at, `public host key decodes to ${JSON.stringify(line.slice(0, 60))}, not an OpenSSH public key line: ${(error as Error).message}`);
  }
  return line;
}

/** base64 of a host key line, as Nix's column 8 and NixOS's publicHostKey want it. */
export function encodeHostKey(line: string): string {
  return Buffer.from(line, "utf8").toString("base64");
}
