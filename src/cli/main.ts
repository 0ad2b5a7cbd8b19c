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

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) process.exitCode = error.exitCode;
  else process.exitCode = report(error);
}
