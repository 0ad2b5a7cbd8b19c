// The compiled config (bundle, source map, record locations), keyed by the tool version,
// the config path and the hash of every input file. A hit skips bundling and type-checking
// (TypeScript is not even loaded). The cache holds code that root will run, so it lives in
// a private directory and is ignored if anyone else could have written it.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { writeFileAtomicSync } from "../files/safety.js";
import { VERSION } from "../version.js";
import type { RecordLocations } from "./typecheck.js";

export interface CompiledConfig {
  code: string;
  sourceMap: string;
  locations: RecordLocations;
  /** The user's input files and their sha256, hex. */
  inputs: { path: string; sha256: string }[];
}

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.OFFLOAD_CACHE_DIR) return env.OFFLOAD_CACHE_DIR;
  if (process.getuid?.() === 0) return "/var/cache/offload";
  return join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "offload");
}

export function sha256Hex(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

function entryPath(cacheDir: string, configPath: string): string {
  return join(cacheDir, `config-${sha256Hex(JSON.stringify([VERSION, configPath]))}.json`);
}

/** A private cache file: ours, and nobody else's to write. */
function isPrivate(path: string): boolean {
  const stat = statSync(path);
  return stat.uid === (process.getuid?.() ?? 0) && (stat.mode & 0o022) === 0;
}

/** The cached compilation of `configPath` if every input file is unchanged, else undefined. */
export function readCompiledConfig(cacheDir: string, configPath: string): CompiledConfig | undefined {
  const file = entryPath(cacheDir, configPath);
  let entry: CompiledConfig;
  try {
    if (!isPrivate(cacheDir) || !isPrivate(file)) return undefined;
    entry = JSON.parse(readFileSync(file, "utf8")) as CompiledConfig;
    for (const input of entry.inputs) {
      if (sha256Hex(readFileSync(input.path)) !== input.sha256) return undefined;
    }
  } catch {
    return undefined; // missing, unreadable or stale: compile afresh
  }
  return entry;
}

/** Keeps `compiled` for the next load; a cache that cannot be written (a user without a home) only costs time. */
export function writeCompiledConfig(cacheDir: string, configPath: string, compiled: CompiledConfig): void {
  try {
    mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
    if (!isPrivate(cacheDir)) return; // never publish root's code where others can tamper with it
    const file = entryPath(cacheDir, configPath);
    writeFileAtomicSync(file, JSON.stringify(compiled), 0o600, { durable: false });
  } catch (error) {
    // writeFileAtomicSync names the errno in its error's cause.
    const errno = ((error as { cause?: NodeJS.ErrnoException }).cause ?? (error as NodeJS.ErrnoException)).code;
    if (!["EACCES", "EPERM", "EROFS", "ENOENT", "ENOSPC"].includes(errno ?? "")) throw error;
  }
}
