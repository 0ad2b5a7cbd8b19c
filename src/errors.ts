// The one error type of the project: what went wrong (message), what to do about it (fix),
// optionally where (a file position) and a stable code for the failure catalogue.
// Commands print these as messages, never as stack traces (unless --debug).

export interface SourceLocation {
  file: string;
  line: number; // 1-based
  column: number; // 1-based
}

/**
 * How a build hook ends, as both daemon families read its exit status: 0 the outputs are
 * there; 100 a permanent failure; 101 timed out; 1 (any other) transient, try again. Nix
 * ≤ 2.28 and guix-daemon tell 100 and 101 apart; Nix 2.29 and later take every non-zero
 * status as MiscFailure (derivation-building-goal.cc), so there the message carries the cause.
 * OffloadError.exitCode holds one of these when a failure ends a hook.
 */
export const EXIT = { success: 0, transient: 1, permanent: 100, timedOut: 101 } as const;

/**
 * Every failure's stable code: what --json output and tests match, and the catalogue a
 * message is found in. A new failure adds its code here (the type checker insists).
 * Families: `build-<status>` for a build that failed on a machine (Nix's BuildResult status),
 * `output-<refusal>` and `guix-<refusal>` for an output or a signature refused.
 */
export const FAILURE_CODES = [
  "acl-name-conflict",
  "agent-protocol",
  "auth-refused",
  "bad-store-path",
  "build-hook-foreign",
  "build-hook-overridden",
  "builders-invalid",
  "capability-unused",
  "clock-skew",
  "clock-unknown",
  "config-invalid",
  "config-missing",
  "config-threw",
  "config-timeout",
  "config-unsafe",
  "connection-lost",
  "corrupt-signature",
  "daemon-hook-not-offload",
  "daemon-mismatch",
  "daemon-restart-failed",
  "daemon-restart-needed",
  "daemon-unsupported",
  "disk-low",
  "disk-unknown",
  "download-sink",
  "drv-invalid",
  "duplicate-path",
  "empty-acl",
  "error",
  "exists",
  "export-invalid",
  "export-spool",
  "guix-daemon-error",
  "guix-daemon-no-offload",
  "guix-daemon-not-running",
  "guix-daemon-not-using-offload",
  "guix-daemon-protocol",
  "guix-daemon-unreachable",
  "guix-daemon-untrusted",
  "guix-drop-in-foreign",
  "guix-hook-arguments",
  "guix-key-not-authorized",
  "hash-mismatch",
  "hook-stopped",
  "host-command-failed",
  "host-command-timeout",
  "host-daemon-failed",
  "host-invalid",
  "host-key-invalid",
  "host-key-mismatch",
  "host-key-unknown",
  "host-root-missing",
  "host-start-failed",
  "host-stop-failed",
  "import-invalid",
  "import-unreadable",
  "input-missing",
  "internal",
  "invalid-acl",
  "invalid-key",
  "invalid-key-name",
  "invalid-path",
  "invalid-path-info",
  "invalid-signature",
  "key-exists",
  "key-file-too-open",
  "key-file-unreadable",
  "lab-builder-failed",
  "lab-builder-misconfigured",
  "lab-command-failed",
  "lab-file-edited",
  "lab-install-failed",
  "lab-invalid-option",
  "lab-locked",
  "lab-needs-root",
  "lab-network-failed",
  "lab-not-found",
  "lab-sshd-failed",
  "lab-unsafe-dir",
  "load-unknown",
  "local-disk-full",
  "missing-feature",
  "missing-reference",
  "missing-secret-key",
  "nar-dump",
  "nar-invalid",
  "nar-restore",
  "needs-root",
  "nix-conf-managed",
  "nix-conf-syntax",
  "nix-config-unreadable",
  "nix-daemon-error",
  "nix-daemon-failed",
  "nix-daemon-not-found",
  "nix-daemon-protocol",
  "nix-instantiate-failed",
  "nix-store-broken",
  "nix-store-not-found",
  "nix-version-unknown",
  "nix-version-unsupported",
  "nix32-invalid",
  "no-machine",
  "no-trusted-keys",
  "not-a-store-path",
  "not-authorized",
  "not-found",
  "output-corrupt",
  "output-missing",
  "output-size-lie",
  "output-unasked",
  "output-unknown",
  "overloaded",
  "permission-denied",
  "protocol",
  "read-failed",
  "read-only",
  "reference-cycle",
  "reference-order",
  "register-failed",
  "remote-daemon-down",
  "remote-disk-full",
  "remote-not-trusted",
  "round-trip-lost",
  "round-trip-mismatch",
  "sexp-invalid",
  "socket-forwarding-refused",
  "ssh-config",
  "state-unsafe",
  "step-timeout",
  "store-corrupt",
  "store-query-failed",
  "system-mismatch",
  "systemctl-failed",
  "tcp-refused",
  "test-build-failed",
  "transfer-stalled",
  "unauthorized-key",
  "unknown-key",
  "unreachable",
  "unsafe-permissions",
  "unsigned",
  "upload-source",
  "usage",
  "user-conf-not-read",
  "wire-eof",
  "wire-guix-request",
  "wire-invalid",
  "wire-io",
  "wire-write",
] as const;

export type FailureCode = (typeof FAILURE_CODES)[number] | `build-${string}` | `output-${string}` | `guix-${string}`;

/**
 * The codes that may be raised without a fix: a codec's or protocol client's "what is wrong
 * with these bytes", which its caller wraps in a message of its own with the fix (an upload,
 * a download, an import, a config load), an aggregate whose problems carry the fixes, a usage
 * error (the command's help follows), or a bug. Every other code says what to do
 * (test/failure-codes.test.ts holds every raise site to this).
 */
export const WITHOUT_FIX: ReadonlySet<FailureCode> = new Set<FailureCode>([
  "bad-store-path",
  "config-invalid",
  "download-sink",
  "drv-invalid",
  "error",
  "export-invalid",
  "export-spool",
  "guix-daemon-error",
  "guix-daemon-protocol",
  "import-invalid",
  "internal",
  "invalid-key",
  "invalid-path-info",
  "lab-file-edited",
  "nar-dump",
  "nar-invalid",
  "nar-restore",
  "nix-daemon-error",
  "nix-daemon-protocol",
  "nix32-invalid",
  "not-found",
  "protocol",
  "sexp-invalid",
  "upload-source",
  "usage",
  "wire-eof",
  "wire-guix-request",
  "wire-invalid",
  "wire-io",
  "wire-write",
]);

export interface OffloadErrorOptions {
  /** The command or config change that resolves the problem. */
  fix?: string;
  /** Stable identifier, e.g. "host-key-mismatch"; used by --json output and tests. */
  code?: FailureCode;
  location?: SourceLocation;
  /** Process exit status when this error ends a command (a hook's: EXIT). */
  exitCode?: number;
  /** The underlying error, shown only with --debug. */
  cause?: unknown;
  /** Individual problems when one failure has several (e.g. every diagnostic of a config). */
  problems?: OffloadError[];
}

export class OffloadError extends Error {
  readonly fix?: string;
  readonly code: FailureCode;
  readonly location?: SourceLocation;
  readonly exitCode: number;
  readonly problems: OffloadError[];

  constructor(message: string, options: OffloadErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "OffloadError";
    this.fix = options.fix;
    this.code = options.code ?? "error";
    this.location = options.location;
    this.exitCode = options.exitCode ?? 1;
    this.problems = options.problems ?? [];
  }
}

export function formatLocation(location: SourceLocation): string {
  return `${location.file}:${location.line}:${location.column}`;
}

/** "file:line:col: message" then "  fix: ..." when a fix is known, then each problem indented. */
export function formatError(error: OffloadError): string {
  const where = error.location ? `${formatLocation(error.location)}: ` : "";
  const lines = [`${where}${error.message}`];
  if (error.fix) lines.push(`  fix: ${error.fix}`);
  for (const problem of error.problems) lines.push(indent(formatError(problem)));
  return lines.join("\n");
}

function indent(text: string): string {
  return text.replace(/^/gm, "  ");
}

/** Wraps anything thrown into an OffloadError, keeping OffloadErrors as they are. */
export function asOffloadError(error: unknown, context?: string): OffloadError {
  if (error instanceof OffloadError) return error;
  const text = error instanceof Error ? error.message : String(error);
  return new OffloadError(context ? `${context}: ${text}` : text, { code: "internal", cause: error });
}
