// Every `offload` sub-command, in the order `offload --help` lists them.
import type { Command } from "commander";

export type RegisterCommand = (program: Command) => void;

export const commands: RegisterCommand[] = [];
