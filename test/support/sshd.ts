// A throwaway sshd on a loopback address that looks like a separate build machine: own host
// key, own authorized key, and (via NIX_USER_CONF_FILES) its own chroot Nix store.
// Minimal on purpose; the full loopback-builder lab lives in src/lab.

import { spawn, execFileSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestSshd {
  dir: string;
  host: string;
  port: number;
  /** Contents of the server's host public key file (one OpenSSH line). */
  hostKeyLine: string;
  /** Private key authorized for root; mode 0600. */
  clientKeyPath: string;
  clientPublicLine: string;
  /** The chroot store the remote `nix-store` uses. */
  storeDir: string;
  /** The listening sshd; its children are the per-connection processes. */
  pid: number;
  stop(): Promise<void>;
}

export function generateKey(path: string, type = "ed25519"): string {
  execFileSync("ssh-keygen", ["-q", "-t", type, "-N", "", "-C", `test-${type}`, "-f", path]);
  return readFileSync(`${path}.pub`, "utf8").trim();
}

async function waitForPort(host: string, port: number, child: ChildProcess, stderr: () => string): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (child.exitCode !== null) throw new Error(`sshd exited: ${stderr()}`);
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect({ host, port }, () => {
        socket.destroy();
        resolve(true);
      });
      socket.on("error", () => resolve(false));
    });
    if (up) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`sshd did not listen on ${host}:${port}: ${stderr()}`);
}

export async function startSshd(options: { host: string; port: number }): Promise<TestSshd> {
  const dir = mkdtempSync(join(tmpdir(), "offload-sshd-"));
  mkdirSync("/run/sshd", { recursive: true });
  const hostKeyLine = generateKey(join(dir, "host_key"));
  const clientKeyPath = join(dir, "client_key");
  const clientPublicLine = generateKey(clientKeyPath);
  writeFileSync(join(dir, "authorized_keys"), `${clientPublicLine}\n`);
  const storeDir = join(dir, "store");
  writeFileSync(join(dir, "nix.conf"), `store = ${storeDir}\nextra-sandbox-paths = /bin /lib /lib64 /usr\nsubstituters =\n`);
  const config = [
    `Port ${options.port}`,
    `ListenAddress ${options.host}`,
    `HostKey ${join(dir, "host_key")}`,
    `PidFile ${join(dir, "sshd.pid")}`,
    `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
    "PermitRootLogin prohibit-password",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    "StrictModes no",
    `SetEnv NIX_USER_CONF_FILES=${join(dir, "nix.conf")}`,
  ].join("\n");
  writeFileSync(join(dir, "sshd_config"), `${config}\n`);
  const child = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", join(dir, "sshd_config")], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr!.on("data", (chunk: Buffer) => (log += chunk.toString()));
  await waitForPort(options.host, options.port, child, () => log);
  return {
    dir,
    host: options.host,
    port: options.port,
    hostKeyLine,
    clientKeyPath,
    clientPublicLine,
    storeDir,
    pid: child.pid!,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        await exited;
      }
      // The chroot store has read-only directories; nix-store made them, so make them writable to delete.
      execFileSync("chmod", ["-R", "u+w", dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
