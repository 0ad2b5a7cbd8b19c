// `offload check`'s local step, before the machines: does this machine's nix-daemon really
// run offload's hook? Decided from what the running daemon read (its version's rules over
// its environment and config files, local-daemon.ts), not from nix.conf alone.
import { readdirSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { asOffloadError } from "../errors.js";
import { PACKAGE_ROOT } from "../package-root.js";
import { hookVerdict, inspectLocalNix, OFFLOAD_HOOK, thisSystem, type LocalNix, type LocalSystem } from "../store/local-daemon.js";

export interface DaemonReport {
  status: "ok" | "warn" | "fail";
  detail: string;
  code?: string;
  fix?: string;
  /** What was found, for --json. */
  facts: {
    nix?: string;
    version?: string;
    pid?: number;
    unit?: string;
    /** The build-hook it runs; null: Nix's own build-remote. */
    buildHook?: string | null;
    from?: string;
  };
}

export async function checkDaemon(system: LocalSystem = thisSystem(), hook = OFFLOAD_HOOK): Promise<DaemonReport> {
  let nix: LocalNix;
  try {
    nix = await inspectLocalNix(system);
  } catch (error) {
    const failure = asOffloadError(error);
    return { status: "fail", detail: failure.message, code: failure.code, ...(failure.fix ? { fix: failure.fix } : {}), facts: {} };
  }
  const facts: DaemonReport["facts"] = {
    nix: nix.daemon ? "nix-daemon" : "nix",
    version: nix.version.text,
    ...(nix.daemon ? { pid: nix.daemon.pid } : {}),
    ...(nix.unit ? { unit: nix.unit } : {}),
    buildHook: nix.effective.value ?? null,
    ...(nix.effective.from ? { from: nix.effective.from.where } : {}),
  };
  const verdict = hookVerdict(nix, hook);
  if (verdict.ok) return { status: "ok", detail: verdict.detail, facts };
  const { error } = verdict;
  // Without a running daemon only root's own builds are concerned, and how root runs them
  // (--option build-hook, its shell's NIX_CONFIG) is not known here: worth a warning.
  const status = nix.daemon || error.code === "nix-version-unsupported" ? "fail" : "warn";
  const detail = !nix.daemon && nix.unit ? `${error.message} (${nix.unit} is not running: systemd starts it on demand)` : error.message;
  return { status, detail, code: error.code, ...(error.fix ? { fix: error.fix } : {}), facts };
}

/** What guix-daemon's GUIX must name for its builds to reach offload. */
export const OFFLOAD_GUIX = join(PACKAGE_ROOT, "bin", "offload-guix");

/**
 * The same question for guix-daemon: it runs `$GUIX offload …` for every build it may hand
 * off (unless started with --no-offload), so its environment's GUIX must be offload-guix.
 */
export function checkGuixDaemon(proc = "/proc", hook = OFFLOAD_GUIX): DaemonReport {
  const read = (pid: string, file: string) => {
    try {
      return readFileSync(join(proc, pid, file));
    } catch {
      return undefined; // gone, or not ours to read
    }
  };
  const daemons = readdirSync(proc).filter((pid) => /^\d+$/.test(pid) && read(pid, "comm")?.toString().trim() === "guix-daemon");
  // The listening daemon, not one of its per-client workers (children of it).
  const main = daemons.find((pid) => !daemons.includes(/^\d+ \(.*\) \S+ (\d+)/.exec(read(pid, "stat")?.toString() ?? "")?.[1] ?? ""));
  const restart = "then restart guix-daemon (systemctl restart guix-daemon, or herd restart guix-daemon)";
  const fix = `run guix-daemon with GUIX=${hook} in its environment (systemd: systemctl edit guix-daemon, Environment=GUIX=${hook}); ${restart}`;
  if (!main) return { status: "fail", detail: "guix-daemon is not running, so no Guix build reaches offload", code: "guix-daemon-not-running", fix: `start guix-daemon with GUIX=${hook} in its environment`, facts: { nix: "guix-daemon" } };
  const args = (read(main, "cmdline")?.toString() ?? "").split("\0");
  const guix = (read(main, "environ")?.toString() ?? "").split("\0").find((entry) => entry.startsWith("GUIX="))?.slice("GUIX=".length);
  const facts: DaemonReport["facts"] = { nix: "guix-daemon", pid: Number(main), buildHook: guix ?? null };
  if (args.includes("--no-offload")) return { status: "fail", detail: `guix-daemon (pid ${main}) runs with --no-offload: it never asks a build hook`, code: "guix-daemon-no-offload", fix: `remove --no-offload from guix-daemon's command line; ${restart}`, facts };
  const same = (a: string, b: string) => {
    try {
      return realpathSync(a) === realpathSync(b);
    } catch {
      return false;
    }
  };
  if (guix === undefined) return { status: "fail", detail: `guix-daemon (pid ${main}) has no GUIX in its environment: its builds go to Guix's own offload`, code: "guix-daemon-not-using-offload", fix, facts };
  if (!same(guix, hook)) return { status: "fail", detail: `guix-daemon (pid ${main}) runs ${guix} for its builds (GUIX), not offload's ${hook}`, code: "guix-daemon-not-using-offload", fix, facts };
  return { status: "ok", detail: `guix-daemon (pid ${main}) hands its builds to offload (GUIX=${guix})`, facts };
}

/** "✓ daemon: …", "✗ daemon: … — fix: …": the line `offload check` prints. */
export function daemonLine(report: DaemonReport): string {
  const mark = { ok: "✓", warn: "!", fail: "✗" }[report.status];
  return `${mark} daemon: ${report.detail}${report.fix ? ` — fix: ${report.fix}` : ""}`;
}
