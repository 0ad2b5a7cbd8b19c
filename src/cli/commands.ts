// Every `offload` sub-command, in the order `offload --help` lists them.
import type { Command } from "commander";
import { registerAcl } from "./acl.js";
import { registerAgent } from "./agent.js";
import { registerArchive } from "./archive.js";
import { registerCheck } from "./check.js";
import { registerExplain } from "./explain.js";
import { registerExport } from "./export.js";
import { registerImport } from "./import.js";
import { registerInit } from "./init.js";
import { registerInstall } from "./install.js";
import { registerKeys } from "./keys.js";
import { registerStatus } from "./status.js";
import { registerLab } from "./lab.js";

export type RegisterCommand = (program: Command) => void;

export const commands: RegisterCommand[] = [
  registerInit,
  registerInstall,
  registerImport,
  registerExport,
  registerCheck,
  registerStatus,
  registerExplain,
  registerKeys,
  registerAcl,
  registerArchive,
  registerLab,
  registerAgent,
];
