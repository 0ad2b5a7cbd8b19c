// `offload install --guix` / `uninstall --guix`: make guix-daemon run offload for the builds
// it may hand off, and undo exactly that. guix-daemon runs `$GUIX offload …`, GUIX coming
// from its environment, which for a systemd service only a unit file sets: offload writes a
// drop-in of its own (the unit stays as the package installed it), reloads systemd and
// restarts the daemon, then checks that the new daemon has offload-guix. On Guix System the
// daemon is Shepherd's (guix-configuration's `environment` field): offload says so.
import { pollUntil } from "../deadline.js";
import { mkdir, readFile, rm, rmdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { checkGuixDaemon, OFFLOAD_GUIX, type GuixDaemonReport } from "./local-guix-daemon.js";
import { OffloadError } from "../errors.js";
import { writeFileAtomic } from "../files/safety.js";
import type { InstallEvent } from "./hook-install.js";
import type { LocalSystem } from "./local-daemon.js";

const UNIT = "guix-daemon.service";
/** Relative to the machine's root. */
export const GUIX_DROP_IN = "etc/systemd/system/guix-daemon.service.d/offload.conf";
const MARK = "# written by offload install --guix; offload uninstall --guix removes it";

export interface GuixInstallOptions {
  system: Pick<LocalSystem, "root" | "uid" | "systemd">;
  /** Where processes are seen (default /proc). */
  proc?: string;
  /** The entry point GUIX names (default this package's bin/offload-guix). */
  hook?: string;
  dryRun?: boolean;
  say: (event: InstallEvent) => void;
  /** How long a restarted daemon may take to show up (default 10 s). */
  restartWaitMs?: number;
}

export function guixDropIn(hook: string): string {
  return `${MARK}\n[Service]\nEnvironment=GUIX=${hook}\n`;
}

export async function installGuix(options: GuixInstallOptions): Promise<void> {
  const hook = options.hook ?? OFFLOAD_GUIX;
  requireRoot(options);
  const now = checkGuixDaemon(options.proc, hook);
  if (now.status === "ok") {
    options.say({ kind: "note", text: `nothing to change: ${now.detail}` });
    return;
  }
  if (now.code === "guix-daemon-no-offload") throw new OffloadError(now.detail, { code: now.code, fix: now.fix });
  const file = join(options.system.root, GUIX_DROP_IN);
  const current = await readFile(file, "utf8").catch(() => undefined);
  if (current !== undefined && !current.startsWith(MARK)) {
    throw new OffloadError(`${file} exists and offload did not write it`, {
      code: "guix-drop-in-foreign",
      fix: `add Environment=GUIX=${hook} to it yourself, then systemctl daemon-reload and systemctl restart ${UNIT}`,
    });
  }
  const systemd = await serviceManager(options, hook);
  if (current !== guixDropIn(hook)) {
    if (!options.dryRun) {
      await mkdir(dirname(file), { recursive: true, mode: 0o755 });
      await writeFileAtomic(file, guixDropIn(hook), 0o644);
    }
    options.say({ kind: "created", file, text: `(GUIX=${hook} for ${UNIT})` });
  }
  await restart(systemd, options);
  if (options.dryRun) return;
  const after = await settled(options, hook, (report) => report.status === "ok");
  options.say({ kind: "note", text: after.detail });
}

export async function uninstallGuix(options: GuixInstallOptions): Promise<void> {
  requireRoot(options);
  const file = join(options.system.root, GUIX_DROP_IN);
  const current = await readFile(file, "utf8").catch(() => undefined);
  if (current === undefined || !current.startsWith(MARK)) {
    options.say({ kind: "note", text: `nothing to remove: ${file} ${current === undefined ? "does not exist" : "was not written by offload"}` });
    return;
  }
  const hook = /^Environment=GUIX=(.*)$/m.exec(current)?.[1] ?? options.hook ?? OFFLOAD_GUIX;
  const systemd = await serviceManager(options, hook);
  if (!options.dryRun) {
    await rm(file);
    await rmdir(dirname(file)).catch(() => undefined); // only when nothing else is in it
  }
  options.say({ kind: "deleted", file, text: "(offload's drop-in)" });
  await restart(systemd, options);
  if (options.dryRun) return;
  const after = await settled(options, hook, (report) => report.code !== "guix-daemon-not-running" && report.status !== "ok");
  options.say({ kind: "note", text: after.detail });
}

function requireRoot(options: GuixInstallOptions): void {
  if (!options.dryRun && options.system.uid !== 0) {
    throw new OffloadError(`offload install --guix writes a systemd drop-in for ${UNIT} and restarts it`, {
      code: "permission-denied",
      fix: "run it as root (or see what it would do with --dry-run)",
    });
  }
}

async function serviceManager(options: GuixInstallOptions, hook: string) {
  const systemd = await options.system.systemd();
  if (!systemd || !(await systemd.hasUnit(UNIT))) {
    throw new OffloadError(`guix-daemon is not a systemd service here, so offload cannot set its environment`, {
      code: "daemon-restart-needed",
      fix: `start guix-daemon with GUIX=${hook} in its environment (on Guix System: the environment field of guix-configuration, then herd restart guix-daemon)`,
    });
  }
  return systemd;
}

async function restart(systemd: NonNullable<Awaited<ReturnType<LocalSystem["systemd"]>>>, options: GuixInstallOptions): Promise<void> {
  for (const args of [["daemon-reload"], ["restart", UNIT]]) {
    options.say({ kind: "command", command: `systemctl ${args.join(" ")}` });
    if (!options.dryRun) await systemd.systemctl(args);
  }
}

/** guix-daemon's state once the restart shows, or an error naming what it still is. */
async function settled(options: GuixInstallOptions, hook: string, done: (report: GuixDaemonReport) => boolean): Promise<GuixDaemonReport> {
  return pollUntil(
    () => checkGuixDaemon(options.proc, hook),
    done,
    options.restartWaitMs ?? 10_000,
    (report) =>
      new OffloadError(`after the restart: ${report.detail}`, {
        code: report.code ?? "daemon-restart-failed",
        fix: `see systemctl status ${UNIT} and journalctl -u ${UNIT}`,
      }),
  );
}
