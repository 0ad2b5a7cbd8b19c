// Runs one `offload` sub-command in-process (no build needed) with a given config dir,
// capturing what it writes to stdout and stderr.
import { jest } from "@jest/globals";
import { Command, CommanderError } from "commander";
import type { RegisterCommand } from "../../src/cli/commands.js";
import { OffloadError, asOffloadError, formatError } from "../../src/errors.js";

/** Node's own warnings (jest's VM modules are experimental), printed once to whatever stderr is then: not the command's. */
const NODE_WARNING = /^(\(node:\d+\) \w*Warning: .*|\(Use `node --trace-warnings \.\.\.` to show where the warning was created\))\n/gm;

interface Captured {
  stdout: string;
  stderr: string;
  /** What the command threw, if it did. */
  error?: { thrown: unknown };
}

/** A program of just this command, as the executable's (errors thrown, not exiting). */
function programOf(register: RegisterCommand): Command {
  const program = new Command("offload").exitOverride();
  register(program);
  return program;
}

/** Runs the program with `env` set in process.env meanwhile (then as it was); never throws. */
async function capture(program: Command, args: string[], env: NodeJS.ProcessEnv): Promise<Captured> {
  const captured: Captured = { stdout: "", stderr: "" };
  const out = jest.spyOn(process.stdout, "write").mockImplementation((chunk) => ((captured.stdout += String(chunk)), true));
  const err = jest.spyOn(process.stderr, "write").mockImplementation((chunk) => ((captured.stderr += String(chunk).replace(NODE_WARNING, "")), true));
  const saved = Object.keys(env).map((name) => [name, process.env[name]] as const);
  Object.assign(process.env, env);
  try {
    await program.parseAsync(["node", "offload", ...args]);
  } catch (thrown) {
    captured.error = { thrown };
  } finally {
    out.mockRestore();
    err.mockRestore();
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
  return captured;
}

export async function runCommand(register: RegisterCommand, configDir: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  const { stdout, stderr, error } = await capture(programOf(register), args, { OFFLOAD_CONFIG_DIR: configDir });
  if (error) throw error.thrown;
  return { stdout, stderr };
}

export interface CommandResult {
  /** The exit status the `offload` executable would end with. */
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * One sub-command in-process, ending as the `offload` executable does (src/cli/main.ts): an
 * error is one `offload: ` message on stderr and its exit status; process.exitCode set by
 * the command is its status (and is then reset: it is not this test run's). `env` is set
 * in process.env while it runs. The executable itself: support/cli.ts (keep a test or two
 * of it per command, for the wiring).
 */
export function runCommandAsCli(register: RegisterCommand, args: string[], env: NodeJS.ProcessEnv = {}): Promise<CommandResult> {
  return runProgramAsCli(programOf(register), args, env);
}

/** runCommandAsCli for a whole program (buildProgram() of src/cli/program.ts: every command). */
export async function runProgramAsCli(program: Command, args: string[], env: NodeJS.ProcessEnv = {}): Promise<CommandResult> {
  const savedExitCode = process.exitCode;
  process.exitCode = undefined;
  const captured = await capture(program, args, env);
  const exitCode = Number(process.exitCode ?? 0);
  process.exitCode = savedExitCode;
  const { stdout, stderr, error } = captured;
  if (!error) return { code: exitCode, stdout, stderr };
  // What main.ts's catch does.
  if (error.thrown instanceof CommanderError) return { code: error.thrown.exitCode, stdout, stderr };
  const failure = asOffloadError(error.thrown);
  const bug =
    failure.code === "internal" && !(error.thrown instanceof OffloadError) ? "  (this is a bug in offload; run again with --debug for the stack trace)\n" : "";
  return { code: failure.exitCode, stdout, stderr: `${stderr}offload: ${formatError(failure)}\n${bug}` };
}
