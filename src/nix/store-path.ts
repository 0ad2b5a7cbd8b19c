// Store paths: `<storeDir>/<32 nix32 chars>-<name>`, validated as Nix 2.8 does (path.cc).
import { OffloadError } from "../errors.js";

export const DEFAULT_STORE_DIR = "/nix/store";
/** Length of the hash part: 160 bits in nix32. */
export const HASH_PART_LENGTH = 32;
export const MAX_NAME_LENGTH = 211;

const HASH_PART = /^[0-9a-df-np-sv-z]{32}$/;
// Nix 2.8 (and later) allows a leading '.' ("nix-store --add .bashrc" makes `<hash>-.bashrc`),
// so rejecting one would refuse paths a real store holds.
const NAME = /^[A-Za-z0-9+\-._?=]+$/;

export interface StorePath {
  /** The full path as given. */
  path: string;
  storeDir: string;
  /** The 32 nix32 characters. */
  hashPart: string;
  name: string;
}

function bad(path: string, why: string): OffloadError {
  return new OffloadError(`invalid store path ${JSON.stringify(path)}: ${why}`, { code: "bad-store-path" });
}

/** Checks a store path name (the part after `<hash>-`); returns an explanation when invalid. */
export function storePathNameProblem(name: string): string | undefined {
  if (name.length === 0) return "the name is empty";
  if (name.length > MAX_NAME_LENGTH) return `the name is longer than ${MAX_NAME_LENGTH} characters`;
  if (!NAME.test(name)) {
    const c = [...name].find((ch) => !NAME.test(ch));
    return `the name contains the illegal character ${JSON.stringify(c)}`;
  }
  return undefined;
}

export function parseStorePath(path: string, storeDir: string = DEFAULT_STORE_DIR): StorePath {
  const prefix = storeDir + "/";
  if (!path.startsWith(prefix)) throw bad(path, `it is not directly in ${storeDir}`);
  const base = path.slice(prefix.length);
  if (base.length < HASH_PART_LENGTH + 2 || base[HASH_PART_LENGTH] !== "-") {
    throw bad(path, "expected <32-character hash>-<name> after the store directory");
  }
  const hash = base.slice(0, HASH_PART_LENGTH);
  if (!HASH_PART.test(hash)) throw bad(path, `the hash part ${JSON.stringify(hash)} is not nix32`);
  const name = base.slice(HASH_PART_LENGTH + 1);
  const problem = storePathNameProblem(name);
  if (problem) throw bad(path, problem);
  return { path, storeDir, hashPart: hash, name };
}

export function isStorePath(path: string, storeDir: string = DEFAULT_STORE_DIR): boolean {
  try {
    parseStorePath(path, storeDir);
    return true;
  } catch {
    return false;
  }
}

export function storePathName(path: string, storeDir: string = DEFAULT_STORE_DIR): string {
  return parseStorePath(path, storeDir).name;
}

export function hashPart(path: string, storeDir: string = DEFAULT_STORE_DIR): string {
  return parseStorePath(path, storeDir).hashPart;
}
