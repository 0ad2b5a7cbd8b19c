// Every `offload` sub-command, in the order `offload --help` lists them.
import type { Command } from "commander";
import { registerAcl } from "./acl.js";
import { registerKeys } from "./keys.js";
import { registerLab } from "./lab.js";

export type RegisterCommand = (program: Command) => void;

export const commands: RegisterCommand[] = [registerKeys, registerAcl, registerLab];
