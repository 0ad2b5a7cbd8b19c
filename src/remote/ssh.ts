// One SSH connection to a build machine (ssh2, no ssh binary): host key verified before
// anything is sent, every failure mapped to an OffloadError with a stable code and a fix.

import { Client } from "ssh2";
import type { ClientChannel, ConnectConfig } from "ssh2";
import { userInfo } from "node:os";
import type { Duplex, Readable, Writable } from "node:stream";
import { OffloadError } from "../errors.js";
import { checkHostKey, expectedKeyTypes, hostKeyPolicy } from "./host-keys.js";
import { loadClientKey } from "./private-key.js";
import type { ClientKey } from "./private-key.js";
import { resolveSshTarget } from "./ssh-config.js";
import type { ResolvedSshTarget, SshTargetSpec } from "./ssh-config.js";

export interface MachineTarget extends SshTargetSpec {
  /** OpenSSH public key line the host must present (machines.ts `hostKey`). */
  hostKey?: string;
  /** Seconds for TCP connect + SSH handshake + authentication. Default 10. */
  connectTimeout?: number;
}

export interface ConnectOptions {
  /** Default ~/.ssh/config. */
  sshConfigPath?: string;
  /** Default /etc/ssh/ssh_config; null skips it. */
  systemSshConfigPath?: string | null;
  /** Replaces the config's UserKnownHostsFile/GlobalKnownHostsFile and ssh's defaults (~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts, …2). */
  knownHostsFiles?: string[];
  /** Home directory for `~`, default keys and known_hosts. Default: the passwd home, as ssh uses. */
  homeDir?: string;
}

export interface ExitStatus {
  /** Exit code, or null when killed by a signal or when the connection died first. */
  code: number | null;
  signal?: string;
}

export interface RemoteProcess {
  stdin: Writable;
  stdout: Readable;
  /** Not consumed here: the caller decides (the build log travels on it). */
  stderr: Readable;
  /** Settles when the channel closes; never rejects. */
  exit: Promise<ExitStatus>;
  /** Closes the channel; sshd then hangs up on the remote command. */
  close(): void;
}

export interface SshConnection {
  readonly target: ResolvedSshTarget;
  exec(command: string): Promise<RemoteProcess>;
  /** A byte stream to the Unix socket `path` on the machine (OpenSSH's direct-streamlocal, as `ssh -L` to a socket). */
  openSocket(path: string): Promise<Duplex>;
  close(): void;
}

// OpenSSH host key types → the signature algorithms ssh2 negotiates for them.
const HOST_KEY_ALGORITHMS: Record<string, string[]> = {
  "ssh-ed25519": ["ssh-ed25519"],
  "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
  "ecdsa-sha2-nistp256": ["ecdsa-sha2-nistp256"],
  "ecdsa-sha2-nistp384": ["ecdsa-sha2-nistp384"],
  "ecdsa-sha2-nistp521": ["ecdsa-sha2-nistp521"],
};

/**
 * The keys to offer, in order. A machine record's privateKey must be usable. Keys from
 * IdentityFile or ssh's defaults are tried in turn like ssh does, skipping missing and
 * unusable ones; only when none is usable is that an error (the most telling one).
 */
function clientKeys(target: ResolvedSshTarget): ClientKey[] {
  if (target.keySource === "machine") return [loadClientKey(target.identityFiles[0]!)];
  const keys: ClientKey[] = [];
  const problems: OffloadError[] = [];
  for (const path of target.identityFiles) {
    try {
      keys.push(loadClientKey(path));
    } catch (error) {
      if (!(error instanceof OffloadError)) throw error;
      if (!/does not exist/.test(error.message)) problems.push(error);
    }
  }
  if (keys.length > 0) return keys;
  if (problems[0]) throw problems[0];
  throw new OffloadError(`no SSH private key for ${target.name}: none of ${target.identityFiles.join(", ")} exists`, {
    code: "key-file-unreadable",
    fix: `ssh-keygen -t ed25519 -N '' -f ${target.identityFiles[0]}   (or set privateKey for ${target.name} in machines.ts)`,
  });
}

function describe(target: ResolvedSshTarget): string {
  const where = `${target.user}@${target.host}:${target.port}`;
  return target.host === target.name ? where : `${target.name} (${where})`;
}

function networkError(error: NodeJS.ErrnoException & { level?: string }, target: ResolvedSshTarget, timeout: number): OffloadError {
  const where = describe(target);
  switch (error.code) {
    case "ECONNREFUSED":
      return new OffloadError(`connection to ${where} refused: nothing listens on port ${target.port}`, {
        code: "tcp-refused",
        fix: `start sshd on ${target.host} (systemctl start sshd) or set the right port for ${target.name}`,
        cause: error,
      });
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return new OffloadError(`cannot resolve host name ${target.host} of ${target.name}`, {
        code: "unreachable",
        fix: `getent hosts ${target.host}   (or use an IP address / a HostName in ~/.ssh/config)`,
        cause: error,
      });
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "ETIMEDOUT":
      return new OffloadError(`${where} is unreachable (${error.code})`, { code: "unreachable", fix: `ping ${target.host}`, cause: error });
  }
  if (error.level === "client-timeout") return timedOut(target, timeout);
  if (error.level === "client-authentication") {
    return new OffloadError(`${where} refused our key for user ${target.user}`, {
      code: "auth-refused",
      fix: `add our public key to ~${target.user}/.ssh/authorized_keys on ${target.host}`,
      cause: error,
    });
  }
  return new OffloadError(`SSH connection to ${where} failed: ${error.message}`, {
    code: "unreachable",
    fix: `ssh -v -p ${target.port} ${target.user}@${target.host} true`,
    cause: error,
  });
}

function timedOut(target: ResolvedSshTarget, timeout: number): OffloadError {
  return new OffloadError(`${describe(target)} did not complete an SSH handshake within ${timeout} s`, {
    code: "unreachable",
    fix: `check that ${target.host}:${target.port} is up and runs sshd (ssh -v -p ${target.port} ${target.user}@${target.host} true), or raise connectTimeout for ${target.name}`,
  });
}

function wrapChannel(channel: ClientChannel): RemoteProcess {
  let status: ExitStatus = { code: null };
  channel.on("exit", (code: number | null, signal?: string) => {
    status = code === null ? { code: null, signal } : { code };
  });
  // "exit" as soon as sshd reports it (the channel's "close" waits until stdout has been read
  // to the end, which a protocol client may never do); "close" alone when the connection died.
  const exit = new Promise<ExitStatus>((resolve) => {
    channel.once("exit", () => resolve(status));
    channel.once("close", () => resolve(status));
  });
  return { stdin: channel, stdout: channel, stderr: channel.stderr, exit, close: () => channel.close() };
}

/** Unanswered keepalives after which a connection counts as dead. */
const KEEPALIVE_COUNT_MAX = 4;

/** Seconds between keepalives: $OFFLOAD_SSH_KEEPALIVE, else 15 (a dead connection is noticed after 4 × 15 s). */
export function keepaliveSeconds(env: NodeJS.ProcessEnv = process.env): number {
  const seconds = Number(env.OFFLOAD_SSH_KEEPALIVE);
  return seconds > 0 ? seconds : 15;
}

export async function connectMachine(spec: MachineTarget, options: ConnectOptions = {}): Promise<SshConnection> {
  const home = options.homeDir ?? userInfo().homedir;
  const target = resolveSshTarget(spec, { sshConfigPath: options.sshConfigPath, systemSshConfigPath: options.systemSshConfigPath, homeDir: home });
  const keys = clientKeys(target);
  const knownHostsFiles = options.knownHostsFiles ?? target.knownHostsFiles;
  const policy = hostKeyPolicy(target.name, target.knownHostsName, spec.hostKey, knownHostsFiles);
  const timeout = spec.connectTimeout ?? 10;
  const acceptedTypes = expectedKeyTypes(policy);
  const serverHostKey = acceptedTypes.flatMap((type) => HOST_KEY_ALGORITHMS[type] ?? []);

  const client = new Client();
  let hostKeyError: OffloadError | undefined;
  const config: ConnectConfig = {
    host: target.host,
    port: target.port,
    username: target.user,
    authHandler: keys.map((key) => ({ type: "publickey" as const, username: target.user, key: key.data })),
    readyTimeout: timeout * 1000,
    // Detects a dead machine during long, silent builds.
    keepaliveInterval: keepaliveSeconds() * 1000,
    keepaliveCountMax: KEEPALIVE_COUNT_MAX,
    hostVerifier: (presented: Buffer) => {
      hostKeyError = checkHostKey(presented, policy);
      return hostKeyError === undefined;
    },
    ...(serverHostKey.length > 0 ? { algorithms: { serverHostKey: serverHostKey as never } } : {}),
  };

  await new Promise<void>((resolve, reject) => {
    // Our own timer covers TCP connect too; ssh2's readyTimeout is a backstop.
    const timer = setTimeout(() => {
      client.destroy();
      reject(timedOut(target, timeout));
    }, timeout * 1000);
    const fail = (error: OffloadError) => {
      clearTimeout(timer);
      client.destroy();
      reject(error);
    };
    let ready = false;
    client.once("ready", () => {
      ready = true;
      clearTimeout(timer);
      resolve();
    });
    client.once("close", () => {
      if (!ready) {
        fail(
          hostKeyError ??
            new OffloadError(`${describe(target)} closed the connection during SSH setup`, {
              code: "unreachable",
              fix: `ssh -v -p ${target.port} ${target.user}@${target.host} true`,
            }),
        );
      }
    });
    // Stays registered for the connection's life: later errors surface as closed channels.
    client.on("error", (error: NodeJS.ErrnoException & { level?: string }) => {
      if (ready) return;
      if (hostKeyError) return fail(hostKeyError);
      if (serverHostKey.length > 0 && /no matching host key/i.test(error.message)) {
        return fail(
          new OffloadError(`${describe(target)} offers no host key of the pinned/known type (${acceptedTypes.join(", ")})`, {
            code: "host-key-mismatch",
            fix: `compare with the machine's /etc/ssh/ssh_host_*_key.pub and update hostKey for ${target.name} in machines.ts`,
            cause: error,
          }),
        );
      }
      const mapped = networkError(error, target, timeout);
      if (mapped.code === "auth-refused") {
        return fail(
          new OffloadError(`${mapped.message} (${keys.map((key) => key.path).join(", ")})`, {
            code: "auth-refused",
            fix: `on ${target.host}, add this line to ~${target.user}/.ssh/authorized_keys: ${keys[0]!.publicLine}`,
            cause: error,
          }),
        );
      }
      fail(mapped);
    });
    client.connect(config);
    // Nagle would hold a request back until the machine acknowledges the previous small
    // packet, which a session that has not answered yet (one just starting) does only after
    // its delayed-ACK timer: tens of ms on every other session of the connection.
    client.setNoDelay(true);
  });

  return {
    target,
    exec: (command) =>
      new Promise<RemoteProcess>((resolve, reject) => {
        client.exec(command, (error, channel) => {
          if (error) {
            reject(
              new OffloadError(`cannot run \`${command}\` on ${describe(target)}: ${error.message}`, {
                code: "unreachable",
                fix: `check ${target.host}'s sshd (MaxSessions, or a login shell that exits at once)`,
                cause: error,
              }),
            );
          } else {
            resolve(wrapChannel(channel));
          }
        });
      }),
    openSocket: (path) =>
      new Promise<Duplex>((resolve, reject) => {
        client.openssh_forwardOutStreamLocal(path, (error, channel) => {
          if (error) {
            reject(
              new OffloadError(`cannot open ${path} on ${describe(target)}: ${error.message}`, {
                code: "socket-forwarding-refused",
                fix: `check that ${path} exists on ${target.host} and that its sshd allows it (AllowStreamLocalForwarding yes, the default; no restrict/no-port-forwarding on the login's key)`,
                cause: error,
              }),
            );
          } else resolve(channel);
        });
      }),
    close: () => client.end(),
  };
}
