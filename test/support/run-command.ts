// Runs one `offload` sub-command in-process (no build needed) with a given config dir,
// capturing what it writes to stdout and stderr.
import { jest } from "@jest/globals";
import { Command } from "commander";
import type { RegisterCommand } from "../../src/cli/commands.js";

export async function runCommand(
  register: RegisterCommand,
  configDir: string,
  args: string[],
): Promise<{ stdout: string; stderr: string }> {
  const program = new Command("offload").exitOverride();
  register(program);
  let stdout = "";
  let stderr = "";
  const out = jest.spyOn(process.stdout, "write").mockImplementation((chunk) => ((stdout += String(chunk)), true));
  const err = jest.spyOn(process.stderr, "write").mockImplementation((chunk) => ((stderr += String(chunk)), true));
  const previous = process.env.OFFLOAD_CONFIG_DIR;
  process.env.OFFLOAD_CONFIG_DIR = configDir;
  try {
    await program.parseAsync(["node", "offload", ...args]);
  } finally {
    out.mockRestore();
    err.mockRestore();
    if (previous === undefined) delete process.env.OFFLOAD_CONFIG_DIR;
    else process.env.OFFLOAD_CONFIG_DIR = previous;
  }
  return { stdout, stderr };
}
