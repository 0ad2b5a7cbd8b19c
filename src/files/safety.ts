// The one place for file safety: who may own and write what offload trusts (like sshd's
// StrictModes: a file others can write — or, for secrets, read — is refused, never trusted;
// for code run as root, every directory up to / as well), writes that readers see whole or
// not at all (temporary file, fsync, rename, fsync of the directory), and failed file
// operations as OffloadErrors that say what to do.
import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, realpathSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import { mkdir, open, readFile, rename, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { OffloadError, type FailureCode } from "../errors.js";

/**
 * Turns a failed file operation on offload's files into an OffloadError that says what to
 * do (most often: not root). Other errors are returned unchanged.
 */
export function fileError(error: unknown, action: string, file: string): unknown {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === "EACCES" || code === "EPERM") {
    return new OffloadError(`cannot ${action} ${file}: permission denied`, {
      code: "permission-denied",
      fix: `run this as root (or as the owner of ${file}), or set OFFLOAD_CONFIG_DIR to a directory of your own`,
      cause: error,
    });
  }
  if (code === "ENOENT") {
    return new OffloadError(`cannot ${action} ${file}: it does not exist`, { code: "not-found", cause: error });
  }
  if (code === "EROFS") {
    return new OffloadError(`cannot ${action} ${file}: read-only file system`, {
      code: "read-only",
      fix: "set OFFLOAD_CONFIG_DIR to a writable directory",
      cause: error,
    });
  }
  return error;
}

/** readFile with the errors of fileError. */
export async function readTextFile(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    throw fileError(error, `read the ${what}`, file);
  }
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

// Only root and the user running offload may own trust files: any other owner could
// rewrite them whatever their mode says.
function checkOwner(file: string, uid: number, what: string): void {
  const me = process.getuid?.();
  if (me === undefined || uid === 0 || uid === me) return;
  throw new OffloadError(`${what} ${file} is owned by uid ${uid}, not by root or the current user (uid ${me})`, {
    code: "unsafe-permissions",
    fix: `chown ${me} ${file}`,
  });
}

/**
 * Refuses a file (and its directory) that group or others can write.
 * Returns false when the file does not exist.
 */
export async function checkNotWritableByOthers(file: string, what: string): Promise<boolean> {
  await checkDirectory(path.dirname(file), what);
  const info = await statOrUndefined(file);
  if (info === undefined) return false;
  checkOwner(file, info.uid, what);
  if ((info.mode & 0o022) !== 0) {
    throw new OffloadError(`${what} ${file} is writable by group or others (mode ${octal(info.mode)})`, {
      code: "unsafe-permissions",
      fix: `chmod go-w ${file}`,
    });
  }
  return true;
}

/** Refuses a secret that group or others can read or write; the file must exist. */
export async function checkPrivate(file: string, what: string): Promise<void> {
  await checkDirectory(path.dirname(file), what);
  const info = await statOrUndefined(file);
  if (info === undefined) {
    throw new OffloadError(`${what} ${file} does not exist`, {
      code: "missing-secret-key",
      fix: "offload keygen",
    });
  }
  checkOwner(file, info.uid, what);
  if ((info.mode & 0o077) !== 0) {
    throw new OffloadError(`${what} ${file} is accessible by group or others (mode ${octal(info.mode)})`, {
      code: "unsafe-permissions",
      fix: `chmod 600 ${file}`,
    });
  }
}

// A writable directory lets others replace the file by rename, whatever the file's mode.
async function checkDirectory(dir: string, what: string): Promise<void> {
  const info = await statOrUndefined(dir);
  if (info === undefined) return;
  checkOwner(dir, info.uid, `directory of the ${what}`);
  if ((info.mode & 0o022) !== 0) {
    throw new OffloadError(`directory ${dir} holding the ${what} is writable by group or others (mode ${octal(info.mode)})`, {
      code: "unsafe-permissions",
      fix: `chmod go-w ${dir}`,
    });
  }
}

async function statOrUndefined(file: string) {
  try {
    return await stat(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw fileError(error, "examine", file);
  }
}

export async function ensureConfigDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o755 });
  } catch (error) {
    throw fileError(error, "create the directory", dir);
  }
}

/**
 * Writes a file so readers see either the old or the new content, never a partial one:
 * temp file in the same directory (created with `mode`, so a secret is never briefly
 * readable), fsync, rename over the target.
 */
export async function writeFileAtomic(file: string, data: string | Buffer, mode: number): Promise<void> {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
  const handle = await open(temp, "wx", mode).catch((error: unknown) => {
    throw fileError(error, "write", file);
  });
  try {
    try {
      // The umask may have dropped bits we want (e.g. 0644 for a public key).
      await handle.chmod(mode);
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw fileError(error, "write", file);
  }
  const dirHandle = await open(path.dirname(file), "r");
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}

/**
 * writeFileAtomic for synchronous callers. `durable: false` skips the fsyncs: for advisory
 * records (build durations, machine facts) that a crash may lose but must never leave half-written.
 */
export function writeFileAtomicSync(file: string, data: string | Buffer, mode = 0o644, options: { durable?: boolean } = {}): void {
  const durable = options.durable ?? true;
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    const fd = openSync(temp, "wx", mode);
    try {
      const bytes = typeof data === "string" ? Buffer.from(data) : data;
      for (let done = 0; done < bytes.length;) done += writeSync(fd, bytes, done);
      if (durable) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, file);
  } catch (error) {
    try {
      unlinkSync(temp);
    } catch {
      // never created, or already renamed
    }
    throw fileError(error, "write", file);
  }
  if (!durable) return;
  const dir = openSync(path.dirname(file), "r");
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/** What is wrong with one path of a walk: owned by someone else, or writable by group or others. */
export interface PathProblem {
  path: string;
  kind: "file" | "directory";
  problem: "owner" | "writable";
  /** "owned by uid 1000", "world-writable", "group-writable". */
  detail: string;
  /** Its permission bits. */
  mode: number;
  fix: string;
}

/**
 * The first path, from each of `files` up to `/` (as named, and after resolving symlinks:
 * whoever can swap a link is as dangerous as whoever can edit its target), that an owner
 * outside `owners` has or group or others can write; undefined when there is none.
 */
export function unsafePathIn(files: Iterable<string>, owners: ReadonlySet<number> = trustedOwners()): PathProblem | undefined {
  const checked = new Set<string>();
  for (const file of files) {
    for (const start of new Set([file, realpathSync(file)])) {
      for (let current = start; !checked.has(current); current = path.dirname(current)) {
        checked.add(current);
        const problem = pathProblem(current, owners);
        if (problem) return problem;
        if (path.dirname(current) === current) break;
      }
    }
  }
  return undefined;
}

/** Root and the user running offload: the only owners whose files offload trusts. */
export function trustedOwners(): ReadonlySet<number> {
  return new Set([0, process.getuid?.() ?? 0]);
}

/** The problem with one path (undefined when it is fine or does not exist). */
export function pathProblem(file: string, owners: ReadonlySet<number> = trustedOwners()): PathProblem | undefined {
  let info;
  try {
    info = statSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw fileError(error, "examine", file);
  }
  const kind = info.isDirectory() ? "directory" : "file";
  const mode = info.mode & 0o7777;
  if (!owners.has(info.uid)) return { path: file, kind, problem: "owner", detail: `owned by uid ${info.uid}`, mode, fix: `chown root ${file}` };
  if ((info.mode & 0o022) !== 0) {
    const who = (info.mode & 0o002) !== 0 ? "world" : "group";
    return { path: file, kind, problem: "writable", detail: `${who}-writable`, mode, fix: `chmod go-w ${file}` };
  }
  return undefined;
}

/** Creates `dir` (0755) if needed and refuses it when it is someone else's or others can write it. */
export function ensureSafeDir(dir: string, what: string, code: FailureCode): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (error) {
    throw fileError(error, "create the directory", dir);
  }
  const problem = pathProblem(dir);
  if (!problem) return;
  const why = problem.problem === "owner" ? `it is ${problem.detail}` : `others can write to it (mode ${(problem.mode & 0o777).toString(8)})`;
  throw new OffloadError(`refusing ${what} ${dir}: ${why}`, { code, fix: problem.fix });
}
