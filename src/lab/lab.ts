// A running lab as its callers see it: every path, address and key they need to point
// offload, Nix or ssh at the builders. Stored as <dir>/lab.json by `up`.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { OffloadError } from "../errors.js";
import type { Host } from "./host.js";
import type { LabPaths } from "./layout.js";
import { labPaths } from "./layout.js";
import type { BuilderPlan } from "./options.js";
import type { WrittenFiles } from "./owned-files.js";

export interface LabBuilder extends BuilderPlan {
  /** The builder's directory: keys, sshd_config, pid file, log, and its host's /nix and /etc/nix. */
  dir: string;
  /** The machine it is: its sshd and every build run there, its store is /nix/store inside (`runInHost`). */
  host: Host;
  /** Its /etc/nix/nix.conf; Nix reads edits with its next command. */
  nixConf: string;
  sshdConfig: string;
  pidFile: string;
  logFile: string;
  /** HOME of its SSH sessions (empty: a real build machine's root does not run this host's ~/.bashrc). */
  home: string;
  /** The sshd's host public key line, "ssh-ed25519 AAAA… <name>". */
  hostKey: string;
  /** The builder's Nix signing public key, "<name>-1:base64"; it signs everything it builds. */
  signingKey: string;
}

export interface Lab extends LabPaths {
  prefix: string;
  /** offload's public signing key for this lab ("name:base64"); every builder trusts it. */
  signingKey: string;
  /** The ssh client config holding `Include <sshConfig>`, or null when none was edited. */
  rootSshConfig: string | null;
  builders: LabBuilder[];
  /** The files `up` wrote and their hashes, to tell a person's edit (owned-files.ts). */
  written: WrittenFiles;
}

/** The lab recorded in `dir`; throws when `lab up` never ran there. */
export async function readLab(dir: string): Promise<Lab> {
  const file = labPaths(dir).state;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    throw new OffloadError(`no lab in ${dir} (${file} does not exist)`, {
      code: "lab-not-found",
      fix: `offload lab up --dir ${dir}`,
    });
  }
  return JSON.parse(text) as Lab;
}

/** A Guix lab (guix-lab.ts) as <dir>/guix-lab.json records it: its builders, and what up wrote. */
export interface GuixLabState {
  builders: Array<{ name: string; dir: string }>;
  written: WrittenFiles;
}

export function guixLabFile(dir: string): string {
  return path.join(dir, "guix-lab.json");
}

/** The Guix lab recorded in `dir`, or undefined when `lab up --guix` never ran there. */
export async function readGuixLab(dir: string): Promise<GuixLabState | undefined> {
  const text = await readFile(guixLabFile(dir), "utf8").catch(() => undefined);
  return text === undefined ? undefined : (JSON.parse(text) as GuixLabState);
}
