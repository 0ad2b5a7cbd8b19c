// One builder's sshd: started as a daemon from its own config inside the builder's host (the
// host whose directory holds the config: a builder's directory is its host's), found again
// by its pid file (checked against the command line, since pids are reused) or by the
// config path.
import { spawn } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { OffloadError } from "../errors.js";
import { inHost, runInHost, runningHosts, type Host } from "./host.js";
import { SSHD } from "./install.js";
import { pidInOwnNamespace, processesMatching, terminateTrees } from "./processes.js";
import { tcpReachable } from "../remote/tcp.js";

export interface SshdFiles {
  sshdConfig: string;
  pidFile: string;
  logFile: string;
}

export interface SshdListen {
  address: string;
  port: number;
}

/** The pid (in this machine's view) of the sshd serving `files.sshdConfig`, when it is running. */
export async function sshdPid(files: SshdFiles): Promise<number | undefined> {
  let pid: number;
  try {
    pid = Number((await readFile(files.pidFile, "utf8")).trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  // The pid file has its pid in its host's PID namespace: look for that among the processes
  // running with this config.
  for (const candidate of await processesMatching(configPattern(files.sshdConfig))) {
    if ((await pidInOwnNamespace(candidate)) === pid) return candidate;
  }
  return undefined;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Matches the command line of the sshd serving `sshdConfig` (its sessions have other names). */
function configPattern(sshdConfig: string): RegExp {
  return new RegExp(`sshd -f ${escapeRegExp(sshdConfig)}( |$)`);
}

/** Matches the command line of any builder sshd of the lab in `dir` (not of labs below it). */
export function labSshdPattern(dir: string): RegExp {
  return new RegExp(`sshd -f ${escapeRegExp(dir)}/[^/ ]+/sshd_config( |$)`);
}

/** Ends the sshd, its sessions and everything they run; no-op when none runs. */
export async function stopSshd(files: SshdFiles): Promise<void> {
  const listener = await sshdPid(files);
  // Also one whose pid file was lost or overwritten.
  const strays = await processesMatching(configPattern(files.sshdConfig));
  await terminateTrees([...(listener === undefined ? [] : [listener]), ...strays]);
  await rm(files.pidFile, { force: true });
}

async function hostOf(files: SshdFiles): Promise<Host> {
  const dir = path.dirname(files.sshdConfig);
  const host = (await runningHosts()).find((running) => running.dir === dir);
  if (host === undefined) {
    throw new OffloadError(`no host runs in ${dir}, so the sshd of ${files.sshdConfig} has no machine to run on`, {
      code: "lab-sshd-failed",
      fix: "start the lab again: offload lab up",
    });
  }
  return host;
}

/** Starts the sshd in its host and waits until it accepts connections; returns its pid. */
export async function startSshd(files: SshdFiles, listen: SshdListen): Promise<number> {
  const host = await hostOf(files);
  // sshd's privilege separation directory; absent where no system sshd ever ran.
  await mkdir(path.join(host.root, "run", "sshd"), { recursive: true, mode: 0o755 });
  const test = await runInHost(host, [SSHD, "-t", "-f", files.sshdConfig]);
  if (test.code !== 0) {
    throw new OffloadError(`${SSHD} -t -f ${files.sshdConfig} in host ${host.name} failed: ${test.stderr.trim()}`, {
      code: "lab-sshd-failed",
      fix: `check ${files.sshdConfig}`,
    });
  }
  await writeFile(files.logFile, "");
  // It daemonizes: the process we start exits once the daemon is forked. -E keeps the
  // daemon's complaints (e.g. address in use) where we can show them.
  const status = await new Promise<number | null>((resolve, reject) => {
    const { file, args } = inHost(host, [SSHD, "-f", files.sshdConfig, "-E", files.logFile]);
    const child = spawn(file, args, { stdio: "ignore" });
    child.once("error", reject);
    child.once("exit", resolve);
  });
  const deadline = Date.now() + 5000;
  while (status === 0 && Date.now() < deadline) {
    const pid = await sshdPid(files);
    if (pid !== undefined && (await tcpReachable(listen.address, listen.port, 500))) return pid;
    await sleep(25);
  }
  const log = (await readFile(files.logFile, "utf8").catch(() => "")).trim().split("\n").slice(-5).join("\n");
  throw new OffloadError(`sshd for ${listen.address}:${listen.port} did not start${status === 0 ? "" : ` (exit status ${status})`}: ${log || "no log"}`, {
    code: "lab-sshd-failed",
    fix: `another program may hold ${listen.address}:${listen.port}: choose another --address or --port (log: ${files.logFile})`,
  });
}
