// The one error type of the project: what went wrong (message), what to do about it (fix),
// optionally where (a file position) and a stable code for the failure catalogue.
// Commands print these as messages, never as stack traces (unless --debug).

export interface SourceLocation {
  file: string;
  line: number; // 1-based
  column: number; // 1-based
}

export interface OffloadErrorOptions {
  /** The command or config change that resolves the problem. */
  fix?: string;
  /** Stable identifier, e.g. "host-key-mismatch"; used by --json output and tests. */
  code?: string;
  location?: SourceLocation;
  /** Process exit status when this error ends a command (hook: 1 transient, 100 permanent, 101 timeout). */
  exitCode?: number;
  /** The underlying error, shown only with --debug. */
  cause?: unknown;
  /** Individual problems when one failure has several (e.g. every diagnostic of a config). */
  problems?: OffloadError[];
}

export class OffloadError extends Error {
  readonly fix?: string;
  readonly code: string;
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
