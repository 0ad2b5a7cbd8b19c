// The `offload` command tree: every command registered, each --help with an example.
// Separate from main.ts (which runs it) so tests can walk the tree.
import { Command } from "commander";
import { VERSION } from "../version.js";
import { commands } from "./commands.js";
import { addExamples } from "./examples.js";

export function buildProgram(): Command {
  const program = new Command("offload")
    .description("Offload Nix builds to other machines over SSH, outputs verified before import.")
    .version(VERSION)
    .option("--debug", "print stack traces of internal errors")
    .showHelpAfterError()
    .exitOverride();
  for (const register of commands) register(program);
  addExamples(program);
  return program;
}
