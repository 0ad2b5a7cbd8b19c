// The `offload` command line. Each command lives in its own module and registers itself
// (program.ts); this file only runs it and turns errors into messages.
import { CommanderError } from "commander";
import { OffloadError, asOffloadError, formatError } from "../errors.js";
import { buildProgram } from "./program.js";

const program = buildProgram();

function report(error: unknown): number {
  const debug = program.opts<{ debug?: boolean }>().debug ?? process.argv.includes("--debug");
  const failure = asOffloadError(error);
  process.stderr.write(`offload: ${formatError(failure)}\n`);
  if (failure.code === "internal" && !debug && !(error instanceof OffloadError)) {
    process.stderr.write("  (this is a bug in offload; run again with --debug for the stack trace)\n");
  }
  if (debug && error instanceof Error && error.stack) process.stderr.write(`${error.stack}\n`);
  return failure.exitCode;
}

// Last resort: an error thrown where no command awaits it (a stream or timer callback) is
// still one message, not a stack trace, and a failed exit.
for (const event of ["uncaughtException", "unhandledRejection"] as const) {
  process.on(event, (error: unknown) => {
    process.exitCode = report(error);
    process.exit();
  });
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) process.exitCode = error.exitCode;
  else process.exitCode = report(error);
}
