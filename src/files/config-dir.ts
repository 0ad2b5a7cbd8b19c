// Where offload keeps its trust material (signing key pair, ACL) and the permission rules
// for it. Like sshd's StrictModes: a file others can write (or, for secrets, read) is
// refused rather than trusted, because whoever can edit the ACL decides what gets imported.
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { OffloadError } from "../errors.js";

export const DEFAULT_CONFIG_DIR = "/etc/offload";

/** $OFFLOAD_CONFIG_DIR, else /etc/offload. */
export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.OFFLOAD_CONFIG_DIR;
  return fromEnv && fromEnv.length > 0 ? path.resolve(fromEnv) : DEFAULT_CONFIG_DIR;
}

export function secretKeyPath(dir: string = configDir()): string {
  return path.join(dir, "signing-key.sec");
}

export function publicKeyPath(dir: string = configDir()): string {
  return path.join(dir, "signing-key.pub");
}

export function aclPath(dir: string = configDir()): string {
  return path.join(dir, "acl");
}

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
    throw new OffloadError(
      `directory ${dir} holding the ${what} is writable by group or others (mode ${octal(info.mode)})`,
      { code: "unsafe-permissions", fix: `chmod go-w ${dir}` },
    );
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
