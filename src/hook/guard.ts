// What both hooks' entry points do before anything else: a stop leaves no half-landed output
// or spool behind (build slots are kernel locks and go with the process; a path already
// registered stays, complete), and whatever escapes still becomes one line the person
// building sees — never a stack trace in the daemon's log — and a transient failure.
import { asOffloadError, formatError } from "../errors.js";
import { removeAllScratch } from "../files/scratch.js";

/** `say` writes one line where the daemon shows it; `status` is the daemon's "transient failure". */
export function guardHookProcess(say: (text: string) => void, status: number): void {
  // Nix 2.35 stops a hook with SIGTERM and SIGKILLs it 500 ms later (a user's ^C, a cancelled build).
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    process.on(signal, () => {
      removeAllScratch();
      process.exit(status);
    });
  }
  const lastResort = (error: unknown): never => {
    const failure = asOffloadError(error);
    say(`offload: ${formatError(failure)}${failure.code === "internal" ? " (this is a bug in offload)" : ""}`);
    removeAllScratch();
    process.exit(status);
  };
  process.on("uncaughtException", lastResort);
  process.on("unhandledRejection", lastResort);
}
