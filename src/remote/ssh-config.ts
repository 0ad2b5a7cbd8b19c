// Resolves a machine record against ~/.ssh/config so Host aliases work as they do for ssh
// (Nix 2.8's machines file has no port syntax, so users rely on aliases).

import { readFileSync } from "node:fs";
import { homedir, userInfo } from "node:os";
import SSHConfig from "ssh-config";
import { OffloadError } from "../errors.js";
import { knownHostsName } from "./host-keys.js";

export interface SshTargetSpec {
  /** Host name, address or ~/.ssh/config alias. */
  name: string;
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
  /** Candidate private keys, in order; the first existing one is used unless `explicitKey`. */
  identityFiles: string[];
  /** True when the key came from the machine record or IdentityFile: it must exist then. */
  explicitKey: boolean;
  /** Name looked up in known_hosts: HostKeyAlias as is, else host or `[host]:port` (ssh's rule). */
  knownHostsName: string;
}

export interface SshConfigOptions {
  /** Default: ~/.ssh/config of the user running offload. */
  sshConfigPath?: string;
  /** Home directory for `~` and default keys. Default: os.homedir(). */
  homeDir?: string;
}

function loadConfig(path: string): SSHConfig | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new OffloadError(`cannot read SSH config ${path}: ${(error as Error).message}`, { code: "ssh-config", fix: `ls -l ${path}`, cause: error });
  }
  return SSHConfig.parse(text);
}

function first(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** The `~` and `%` tokens ssh expands in IdentityFile. */
function expandPath(path: string, home: string, tokens: Record<string, string>): string {
  const tilde = path === "~" || path.startsWith("~/") ? home + path.slice(1) : path;
  return tilde.replace(/%(.)/g, (whole, letter: string) => (letter === "%" ? "%" : tokens[letter] ?? whole));
}

export function resolveSshTarget(spec: SshTargetSpec, options: SshConfigOptions = {}): ResolvedSshTarget {
  const home = options.homeDir ?? homedir();
  const config = loadConfig(options.sshConfigPath ?? `${home}/.ssh/config`);
  // Match exec would run shell commands from the config inside the build hook; ssh's other criteria suffice.
  const computed = config?.compute(spec.name, { ignoreCase: true, matchExec: false }) ?? {};
  const host = first(computed.hostname)?.replace(/%h/g, spec.name) ?? spec.name;
  const configPort = first(computed.port);
  const port = spec.port ?? (configPort === undefined ? 22 : Number(configPort));
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new OffloadError(`SSH port of ${spec.name} is not a valid port: ${configPort}`, { code: "ssh-config", fix: `fix the Port line of Host ${spec.name} in ${options.sshConfigPath ?? "~/.ssh/config"}` });
  }
  const user = spec.user ?? first(computed.user) ?? "root";
  const tokens = { d: home, u: userInfo().username, h: host, r: user, p: String(port), n: spec.name };
  const configured = ([] as string[])
    .concat(computed.identityfile ?? [])
    .filter((file) => file.toLowerCase() !== "none")
    .map((file) => expandPath(file, home, tokens));
  const explicitKey = spec.privateKey !== undefined || configured.length > 0;
  const identityFiles = spec.privateKey !== undefined ? [spec.privateKey] : configured.length > 0 ? configured : [`${home}/.ssh/id_ed25519`, `${home}/.ssh/id_rsa`];
  return { name: spec.name, host, port, user, identityFiles, explicitKey, knownHostsName: first(computed.hostkeyalias) ?? knownHostsName(host, port) };
}
