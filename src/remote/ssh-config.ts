// Resolves a machine record against ~/.ssh/config so Host aliases work as they do for ssh
// (Nix 2.8's machines file has no port syntax, so users rely on aliases).

import { readdirSync, readFileSync } from "node:fs";
import { userInfo } from "node:os";
import { basename, dirname, isAbsolute, join } from "node:path";
import SSHConfig from "ssh-config";
import { OffloadError } from "../errors.js";
import { knownHostsName } from "./host-keys.js";

export interface SshTargetSpec {
  /** The machine's name, for messages; where to connect when `host` is absent. */
  name: string;
  /** Host name, address or ~/.ssh/config alias to connect to. */
  host?: string;
  port?: number;
  user?: string;
  /** Path of the private key; overrides the alias's IdentityFile. */
  privateKey?: string;
}

export interface ResolvedSshTarget {
  /** The machine's name as configured. */
  name: string;
  /** Where to connect: the alias's HostName, else the name. */
  host: string;
  port: number;
  user: string;
  /** Candidate private keys, in the order ssh tries them. */
  identityFiles: string[];
  /** Where they came from: a machine record's key must be usable; config and default keys are tried in turn, as ssh does. */
  keySource: "machine" | "ssh-config" | "default";
  /** Name looked up in known_hosts: HostKeyAlias as is, else host or `[host]:port` (ssh's rule). */
  knownHostsName: string;
  /** UserKnownHostsFile then GlobalKnownHostsFile of the config, else ssh's defaults. */
  knownHostsFiles: string[];
}

export interface SshConfigOptions {
  /** Default: ~/.ssh/config of the user running offload. */
  sshConfigPath?: string;
  /** Read after the user's config, as ssh does. Default /etc/ssh/ssh_config; null skips it. */
  systemSshConfigPath?: string | null;
  /** Home directory for `~` and default keys. Default: the passwd home (ssh ignores $HOME). */
  homeDir?: string;
}

const MAX_INCLUDE_DEPTH = 16; // ssh's READCONF_MAX_DEPTH

function readConfigFile(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new OffloadError(`cannot read SSH config ${path}: ${(error as Error).message}`, { code: "ssh-config", fix: `ls -l ${path}`, cause: error });
  }
}

/** Files an Include argument names: relative to `base`, with `*`/`?` globs in the last component, sorted like glob(3). */
function includedFiles(argument: string, base: string, home: string): string[] {
  const expanded = argument === "~" || argument.startsWith("~/") ? home + argument.slice(1) : argument;
  const absolute = isAbsolute(expanded) ? expanded : join(base, expanded);
  const name = basename(absolute);
  if (!/[*?]/.test(name)) return [absolute];
  let entries: string[];
  try {
    entries = readdirSync(dirname(absolute));
  } catch {
    return [];
  }
  const pattern = new RegExp(
    `^${name
      .replace(/[.+^${}()|[\]\\]/g, "\\$&")
      .replace(/\*/g, ".*")
      .replace(/\?/g, ".")}$`,
  );
  return entries
    .filter((entry) => pattern.test(entry) && !entry.startsWith("."))
    .sort()
    .map((entry) => join(dirname(absolute), entry));
}

/**
 * The config text with Include directives replaced by the files they name (the ssh-config
 * package parses Include but does not follow it). An Include inside a Host or Match block
 * applies only there, so that block's header is repeated after the included text.
 */
function expandIncludes(text: string, base: string, home: string, depth: number): string {
  const out: string[] = [];
  let header: string | undefined;
  for (const line of text.split("\n")) {
    const directive = /^\s*(\w+)\s*(?:=\s*|\s)(.*)$/.exec(line);
    const keyword = directive?.[1]?.toLowerCase();
    if (keyword === "host" || keyword === "match") header = line;
    if (keyword !== "include") {
      out.push(line);
      continue;
    }
    if (depth >= MAX_INCLUDE_DEPTH) {
      throw new OffloadError(`SSH config Include nesting is deeper than ${MAX_INCLUDE_DEPTH}`, { code: "ssh-config", fix: "remove the Include loop" });
    }
    for (const argument of directive![2]!
      .trim()
      .split(/\s+/)
      .map((word) => word.replace(/^"(.*)"$/, "$1"))) {
      for (const file of includedFiles(argument, base, home)) {
        const included = readConfigFile(file);
        if (included !== undefined) out.push(expandIncludes(included, base, home, depth + 1));
      }
    }
    if (header !== undefined) out.push(header);
  }
  return out.join("\n");
}

function loadConfig(userPath: string, systemPath: string | null, home: string): SSHConfig | undefined {
  // First value wins, so the user's config goes first; relative Includes resolve per file's origin.
  const user = readConfigFile(userPath);
  const system = systemPath === null ? undefined : readConfigFile(systemPath);
  const parts = [
    user === undefined ? "" : expandIncludes(user, join(home, ".ssh"), home, 0),
    system === undefined ? "" : `Host *\n${expandIncludes(system, "/etc/ssh", home, 0)}`,
  ];
  return user === undefined && system === undefined ? undefined : SSHConfig.parse(parts.join("\n"));
}

function first(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** The `~` and `%` tokens ssh expands in IdentityFile. */
function expandPath(path: string, home: string, tokens: Record<string, string>): string {
  const tilde = path === "~" || path.startsWith("~/") ? home + path.slice(1) : path;
  return tilde.replace(/%(.)/g, (whole, letter: string) => (letter === "%" ? "%" : (tokens[letter] ?? whole)));
}

export function resolveSshTarget(spec: SshTargetSpec, options: SshConfigOptions = {}): ResolvedSshTarget {
  const home = options.homeDir ?? userInfo().homedir;
  const systemPath = options.systemSshConfigPath === undefined ? "/etc/ssh/ssh_config" : options.systemSshConfigPath;
  const config = loadConfig(options.sshConfigPath ?? `${home}/.ssh/config`, systemPath, home);
  // Match exec would run shell commands from the config inside the build hook; ssh's other criteria suffice.
  const alias = spec.host ?? spec.name;
  const computed = config?.compute(alias, { ignoreCase: true, matchExec: false }) ?? {};
  // offload connects directly; silently bypassing a jump host would reach the wrong network.
  for (const directive of ["proxyjump", "proxycommand"]) {
    const value = first(computed[directive]);
    if (value !== undefined && value.toLowerCase() !== "none") {
      throw new OffloadError(
        `${spec.name}: the SSH config sets ${directive === "proxyjump" ? "ProxyJump" : "ProxyCommand"} ${value}, which offload does not support`,
        {
          code: "ssh-config",
          fix: `make ${spec.name} reachable directly (name its address as HostName), or build through a machine that is`,
        },
      );
    }
  }
  const host = first(computed.hostname)?.replace(/%h/g, alias) ?? alias;
  const configPort = first(computed.port);
  const port = spec.port ?? (configPort === undefined ? 22 : Number(configPort));
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new OffloadError(`SSH port of ${spec.name} is not a valid port: ${configPort}`, {
      code: "ssh-config",
      fix: `fix the Port line of Host ${alias} in ${options.sshConfigPath ?? "~/.ssh/config"}`,
    });
  }
  const user = spec.user ?? first(computed.user) ?? "root";
  const tokens = { d: home, u: userInfo().username, h: host, r: user, p: String(port), n: alias };
  const configured = ([] as string[])
    .concat(computed.identityfile ?? [])
    .filter((file) => file.toLowerCase() !== "none")
    .map((file) => expandPath(file, home, tokens));
  const keySource = spec.privateKey !== undefined ? "machine" : configured.length > 0 ? "ssh-config" : "default";
  const identityFiles =
    spec.privateKey !== undefined ? [spec.privateKey] : configured.length > 0 ? configured : [`${home}/.ssh/id_ed25519`, `${home}/.ssh/id_rsa`];
  const files = (value: string | string[] | undefined, defaults: string[]) =>
    value === undefined
      ? defaults
      : ([] as string[])
          .concat(value)
          .flatMap((line) => line.split(/\s+/))
          .filter((file) => file !== "" && file.toLowerCase() !== "none")
          .map((file) => expandPath(file, home, tokens));
  const knownHostsFiles = [
    ...files(computed.userknownhostsfile, [`${home}/.ssh/known_hosts`, `${home}/.ssh/known_hosts2`]),
    ...files(computed.globalknownhostsfile, ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"]),
  ];
  return {
    name: spec.name,
    host,
    port,
    user,
    identityFiles,
    keySource,
    knownHostsName: first(computed.hostkeyalias) ?? knownHostsName(host, port),
    knownHostsFiles,
  };
}
