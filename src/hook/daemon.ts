// Which Nix started this hook. The daemon (or a root nix-build without one) is the hook's
// parent; its executable answers `--version`. That takes a process start (~20 ms), so the
// answer is kept in the state directory, keyed by the executable's identity, and a hook
// normally just stats a file.
import { execFile } from "node:child_process";
import { readFileSync, readlinkSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseNixVersion, type NixVersion } from "../nix/daemon-version.js";
import { writeFileAtomic } from "../files/safety.js";

interface Remembered {
  exe: string;
  ino: number;
  size: number;
  mtimeMs: number;
  version: NixVersion;
}

const VERSION_TIMEOUT_MS = 5000;

/**
 * The version of the Nix that runs this process as its build hook, or undefined when the
 * parent is not a Nix (run by hand or by a test) or does not say.
 */
export async function parentNixVersion(stateDir: string, parentPid: number = process.ppid): Promise<NixVersion | undefined> {
  // The link itself, not the path it names: that path may not resolve from here (a parent
  // in another mount namespace or root, as Nix 2.34 running as root makes itself).
  const link = `/proc/${parentPid}/exe`;
  let identity: Omit<Remembered, "version">;
  try {
    const exe = readlinkSync(link);
    const stat = statSync(link);
    identity = { exe, ino: stat.ino, size: stat.size, mtimeMs: stat.mtimeMs };
  } catch {
    return undefined; // not Linux, or the parent is gone
  }
  if (!/(^|\/)(nix|lix)[^/]*$/.test(identity.exe)) return undefined;
  const file = join(stateDir, "daemon-version.json");
  try {
    const remembered = JSON.parse(readFileSync(file, "utf8")) as Remembered;
    if (remembered.exe === identity.exe && remembered.ino === identity.ino && remembered.size === identity.size && remembered.mtimeMs === identity.mtimeMs) {
      return remembered.version;
    }
  } catch {
    // first run, or an unreadable record: ask the executable
  }
  const output = await new Promise<string>((resolve) => {
    execFile(link, ["--version"], { timeout: VERSION_TIMEOUT_MS }, (error, stdout) => resolve(error ? "" : stdout));
  });
  const version = parseNixVersion(output);
  // Only a cache: when it cannot be kept, the next hook asks the executable again.
  if (version) await writeFileAtomic(file, JSON.stringify({ ...identity, version }), 0o644).catch(() => undefined);
  return version;
}
