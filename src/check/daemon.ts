// `offload check`'s local step, before the machines: does this machine's nix-daemon really
// run offload's hook? Decided from what the running daemon read (its version's rules over
// its environment and config files, local-daemon.ts), not from nix.conf alone.
import { asOffloadError } from "../errors.js";
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

/** "✓ daemon: …", "✗ daemon: … — fix: …": the line `offload check` prints. */
export function daemonLine(report: DaemonReport): string {
  const mark = { ok: "✓", warn: "!", fail: "✗" }[report.status];
  return `${mark} daemon: ${report.detail}${report.fix ? ` — fix: ${report.fix}` : ""}`;
}
