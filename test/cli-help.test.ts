// Every registered command, sub-commands included, shows an example at the end of its --help
// (in-process; cli-executable.test.ts runs `offload --help` itself).
import type { Command } from "commander";
import { buildProgram } from "../src/cli/program.js";
import { runProgramAsCli } from "./support/run-command.js";

function paths(command: Command, prefix: string[] = []): string[][] {
  return command.commands.flatMap((sub) => [[...prefix, sub.name()], ...paths(sub, [...prefix, sub.name()])]);
}

const commands = [[], ...paths(buildProgram())];

test("the command tree is there", () => {
  expect(commands.map((path) => path.join(" "))).toEqual(expect.arrayContaining(["import", "export", "check", "lab up", "archive import"]));
});

test.each(commands.map((path) => [path.join(" ") || "offload", path] as const))("%s --help has an example", async (_name, path) => {
  const result = await runProgramAsCli(buildProgram(), [...path, "--help"]);
  expect(result.code).toBe(0);
  expect(result.stdout).toMatch(/\n\nExamples?:\n( {2}\$ offload .*\n|.*\| offload .*\n)+$/);
});
