// The one line a lab adds to root's ssh client config: `Include <lab>/ssh_config`. Nix 2.8's
// build-remote cannot give ssh a port or config file, so the builders' aliases must be
// visible to a plain `ssh lab-b0`. Labs may come and go in parallel, hence the lock.
import { mkdir, readFile, stat } from "node:fs/promises";
import { userInfo } from "node:os";
import path from "node:path";
import { writeFileAtomic } from "../files/safety.js";
import { withFileLock } from "./file-lock.js";

/** ssh reads the config of the user's passwd home, not $HOME. */
export function defaultRootSshConfig(): string {
  return path.join(userInfo().homedir, ".ssh", "config");
}

export function includeLine(labSshConfig: string): string {
  return `Include ${labSshConfig}`;
}

function withLock<T>(file: string, action: () => Promise<T>): Promise<T> {
  return withFileLock(`${file}.offload-lab.lock`, { timeoutMs: 10_000, staleMs: 30_000 }, action);
}

async function readLines(file: string): Promise<string[] | undefined> {
  try {
    const text = await readFile(file, "utf8");
    return text.length === 0 ? [] : text.replace(/\n$/, "").split("\n");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/**
 * Puts the Include line first in `file` (creating it 0600, its directory 0700): an Include
 * after a Host line would only apply to that host. Idempotent.
 */
export async function addInclude(file: string, labSshConfig: string): Promise<void> {
  const line = includeLine(labSshConfig);
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await withLock(file, async () => {
    const lines = (await readLines(file)) ?? [];
    if (lines[0] === line && lines.filter((other) => other === line).length === 1) return;
    const mode = await stat(file).then(
      (info) => info.mode & 0o777,
      () => 0o600,
    );
    await writeFileAtomic(file, [line, ...lines.filter((other) => other !== line)].join("\n") + "\n", mode);
  });
}

/** Removes exactly the lab's Include line; leaves everything else (and the file) alone. */
export async function removeInclude(file: string, labSshConfig: string): Promise<void> {
  const line = includeLine(labSshConfig);
  if ((await readLines(file)) === undefined) return;
  await withLock(file, async () => {
    const lines = await readLines(file);
    if (lines === undefined || !lines.includes(line)) return;
    const mode = (await stat(file)).mode & 0o777;
    const rest = lines.filter((other) => other !== line);
    await writeFileAtomic(file, rest.length === 0 ? "" : rest.join("\n") + "\n", mode);
  });
}
