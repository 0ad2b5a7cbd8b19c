// Every `offload` sub-command, in the order `offload --help` lists them.
import type { Command } from "commander";
import { registerAcl } from "./acl.js";
import { registerAgent } from "./agent.js";
import { registerArchive } from "./archive.js";
import { registerCheck } from "./check.js";
import { registerExplain } from "./explain.js";
import { registerInit } from "./init.js";
import { registerKeys } from "./keys.js";
import { registerStatus } from "./status.js";
import { registerLab } from "./lab.js";

export type RegisterCommand = (program: Command) => void;

export const commands: RegisterCommand[] = [registerInit, registerCheck, registerStatus, registerExplain, registerKeys, registerAcl, registerArchive, registerLab, registerAgent];
