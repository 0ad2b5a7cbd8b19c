// Which program this machine's guix-daemon runs for the builds it may hand off: it runs
// `$GUIX offload …` (unless started with --no-offload), GUIX taken from its environment, read
// here from /proc. `offload check` reports it; `offload install --guix` waits for it.
import type { FailureCode } from "../errors.js";
import { readdirSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { PACKAGE_ROOT } from "../package-root.js";

/** What was found, in the shape of `offload check`'s daemon step. */
export interface GuixDaemonReport {
  status: "ok" | "fail";
  detail: string;
  code?: FailureCode;
  fix?: string;
  facts: { nix?: string; pid?: number; buildHook?: string | null };
}

/** What guix-daemon's GUIX must name for its builds to reach offload. */
export const OFFLOAD_GUIX = join(PACKAGE_ROOT, "bin", "offload-guix");

/**
 * The same question for guix-daemon: it runs `$GUIX offload …` for every build it may hand
 * off (unless started with --no-offload), so its environment's GUIX must be offload-guix.
 */
export function checkGuixDaemon(proc = "/proc", hook = OFFLOAD_GUIX): GuixDaemonReport {
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
  if (!main)
    return {
      status: "fail",
      detail: "guix-daemon is not running, so no Guix build reaches offload",
      code: "guix-daemon-not-running",
      fix: `start guix-daemon with GUIX=${hook} in its environment`,
      facts: { nix: "guix-daemon" },
    };
  const args = (read(main, "cmdline")?.toString() ?? "").split("\0");
  const guix = (read(main, "environ")?.toString() ?? "")
    .split("\0")
    .find((entry) => entry.startsWith("GUIX="))
    ?.slice("GUIX=".length);
  const facts: GuixDaemonReport["facts"] = { nix: "guix-daemon", pid: Number(main), buildHook: guix ?? null };
  if (args.includes("--no-offload"))
    return {
      status: "fail",
      detail: `guix-daemon (pid ${main}) runs with --no-offload: it never asks a build hook`,
      code: "guix-daemon-no-offload",
      fix: `remove --no-offload from guix-daemon's command line; ${restart}`,
      facts,
    };
  const same = (a: string, b: string) => {
    if (a === b) return true;
    try {
      return realpathSync(a) === realpathSync(b);
    } catch {
      return false;
    }
  };
  if (guix === undefined)
    return {
      status: "fail",
      detail: `guix-daemon (pid ${main}) has no GUIX in its environment: its builds go to Guix's own offload`,
      code: "guix-daemon-not-using-offload",
      fix,
      facts,
    };
  if (!same(guix, hook))
    return {
      status: "fail",
      detail: `guix-daemon (pid ${main}) runs ${guix} for its builds (GUIX), not offload's ${hook}`,
      code: "guix-daemon-not-using-offload",
      fix,
      facts,
    };
  return { status: "ok", detail: `guix-daemon (pid ${main}) hands its builds to offload (GUIX=${guix})`, facts };
}
