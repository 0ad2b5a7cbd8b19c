// --ssh-config and --known-hosts: what a machine's name means to ssh, written into its record
// so the imported machines.ts does not depend on files offload would not read at run time.
import { realpathSync } from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import { hostFieldMatches, knownHostsName, openSshLine, readKnownHosts, type KnownHostEntry } from "../../remote/host-keys.js";
import { resolveSshTarget } from "../../remote/ssh-config.js";
import { keepAsComment, setField, type ImportedMachine, type Warn } from "./model.js";

export interface SshSources {
  /** An ssh_config whose Host aliases the machines' names may be. */
  sshConfig?: string;
  /** known_hosts files to find the machines' host keys in. */
  knownHosts: string[];
}

/** Key types in the order ssh prefers them; a pinned key should be the one the host presents first. */
const KEY_PREFERENCE = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"];

export function applySshSources(machines: ImportedMachine[], sources: SshSources, warn: Warn): void {
  const known = readKnownHosts(sources.knownHosts);
  for (const machine of machines) {
    const { name, port } = machine.options;
    if (machine.incomplete || typeof name !== "string") continue;
    const names = [knownHostsName(name, (port as number | undefined) ?? 22)];
    if (sources.sshConfig) {
      const alias = resolveAlias(machine, sources.sshConfig, warn);
      if (alias) names.unshift(alias);
    }
    if (known.length > 0)
      pinHostKey(
        machine,
        known.filter((entry) => names.some((n) => hostFieldMatches(entry.hosts, n))),
        warn,
      );
  }
}

/** Fills name, port, user and privateKey from the alias; returns the name known_hosts knows the host by. */
function resolveAlias(machine: ImportedMachine, sshConfig: string, warn: Warn): string | undefined {
  const alias = machine.options.name as string;
  let target;
  try {
    target = resolveSshTarget(
      {
        name: alias,
        port: machine.options.port as number | undefined,
        user: machine.options.user as string | undefined,
        privateKey: machine.options.privateKey as string | undefined,
      },
      { sshConfigPath: sshConfig, systemSshConfigPath: null },
    );
  } catch (error) {
    keepAsComment(machine, machine.at, `${sshConfig}: ${(error as Error).message}; not applied`, warn);
    return undefined;
  }
  const at = machine.at;
  if (target.host !== alias && readByOffload(sshConfig)) {
    machine.notes.push(`"${alias}" is a Host alias of ${sshConfig} (HostName ${target.host}), which offload reads too`);
  } else if (target.host !== alias) {
    // offload would not find the alias at run time: the record names the host itself.
    machine.notes.push(`name was "${alias}", a Host alias of ${sshConfig} (HostName ${target.host})`);
    setField(machine, "name", target.host, at, warn);
  }
  if (machine.options.port === undefined && target.port !== 22) setField(machine, "port", target.port, at, warn);
  // ssh's default user is the daemon's, root; so is offload's.
  if (machine.options.user === undefined && target.user !== "root") setField(machine, "user", target.user, at, warn);
  if (machine.options.privateKey === undefined && target.keySource === "ssh-config") {
    setField(machine, "privateKey", target.identityFiles[0], at, warn);
    if (target.identityFiles.length > 1)
      keepAsComment(machine, at, `${sshConfig} lists more IdentityFiles (${target.identityFiles.slice(1).join(", ")}): offload logs in with one key`, warn);
  }
  return target.knownHostsName;
}

/** Whether offload resolves names through this file at run time (root's, or the system's, ssh_config). */
function readByOffload(sshConfig: string): boolean {
  const real = (path: string) => {
    try {
      return realpathSync(path);
    } catch {
      return undefined;
    }
  };
  const file = real(sshConfig);
  return file !== undefined && [join(userInfo().homedir, ".ssh", "config"), "/etc/ssh/ssh_config"].some((path) => real(path) === file);
}

/** The configured host key wins; known_hosts fills one in when there is none, and is heard when it disagrees. */
function pinHostKey(machine: ImportedMachine, entries: KnownHostEntry[], warn: Warn): void {
  const trusted = entries.filter((entry) => !entry.revoked);
  const configured = machine.options.hostKey as string | undefined;
  if (configured !== undefined) {
    const blob = configured.trim().split(/\s+/)[1];
    const revoked = entries.find((entry) => entry.revoked && entry.key.blob.toString("base64") === blob);
    if (revoked) warn(machine.at, `the host key configured for ${String(machine.options.name)} is marked @revoked in ${revoked.file}:${revoked.line}`);
    else if (trusted.length > 0 && !trusted.some((entry) => entry.key.blob.toString("base64") === blob)) {
      warn(machine.at, `${trusted[0]!.file}:${trusted[0]!.line} has another host key for ${String(machine.options.name)}; kept the configured one`);
    }
    return;
  }
  if (trusted.length === 0) return;
  const rank = (entry: KnownHostEntry) => {
    const index = KEY_PREFERENCE.indexOf(entry.key.type);
    return index < 0 ? KEY_PREFERENCE.length : index;
  };
  const [best, ...others] = [...trusted].sort((a, b) => rank(a) - rank(b));
  setField(machine, "hostKey", openSshLine(best!.key.blob), machine.at, warn);
  machine.notes.push(`hostKey from ${best!.file}:${best!.line}`);
  const otherTypes = [...new Set(others.map((entry) => entry.key.type))].filter((type) => type !== best!.key.type);
  if (otherTypes.length > 0) machine.notes.push(`known_hosts also has ${otherTypes.join(", ")} keys for it: offload pins one key`);
}
