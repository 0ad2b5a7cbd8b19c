// `offload install` / `offload uninstall`: make this machine's Nix run offload's hook, in the
// config file its version takes build-hook from (daemon-version.ts), and undo exactly that.
// Either way one marked line, `build-hook = … # added by offload install`, in
//   nix.conf                        Nix ≤ 2.24 and ≥ 2.34 (/etc/nix/nix.conf, or NIX_CONF_DIR's)
//   root's ~/.config/nix/nix.conf   Nix 2.25–2.33, which reset build-hook after reading nix.conf
//                                   but not after the user config files. Root's own file, as the
//                                   daemon names it (LocalNix.userConf), is read by the daemon
//                                   and by root's daemonless builds alone: a system-wide one
//                                   (/etc/xdg/nix/nix.conf) would be read by every user's Nix,
//                                   which passes build-hook on to the daemon, and the daemon
//                                   warns each untrusted user about it on every command.
// The line also records the file and directories install created, for uninstall to remove.
// Lines offload did not write are never changed or removed. Success means the daemon
// (re)started runs offload's hook, checked after the restart.
import { pollUntil } from "../deadline.js";
import { chmod, lstat, mkdir, readFile, readdir, rmdir, unlink } from "node:fs/promises";
import { join, posix } from "node:path";
import { OffloadError } from "../errors.js";
import { buildHookLocation, hookSupport } from "../nix/daemon-version.js";
import { writeFileAtomic } from "../files/safety.js";
import {
  describeHook,
  describeNix,
  hookAssignments,
  hookVerdict,
  inspectLocalNix,
  OFFLOAD_HOOK,
  restartFix,
  restartReason,
  runningText,
  runsHook,
  usesOffloadHook,
  type LocalNix,
  type LocalSystem,
} from "./local-daemon.js";
import { parseNixConf, type ConfSetting } from "./nix-conf.js";

/** What install and uninstall did (or, with dryRun, would do), in order. */
export type InstallEvent =
  | { kind: "added-line" | "removed-line"; file: string; line: number; text: string }
  /** A whole file or directory; text: what it is or why, in parentheses. */
  | { kind: "created" | "deleted"; file: string; text: string }
  | { kind: "command"; command: string }
  | { kind: "note"; text: string };

export interface InstallOptions {
  system: LocalSystem;
  /** The hook to install (default: this package's bin/offload-hook). */
  hook?: string;
  dryRun?: boolean;
  say: (event: InstallEvent) => void;
  /** How long to wait for a restarted daemon to show up (default 10 s). */
  restartWaitMs?: number;
}

const MARK = "added by offload install";
const CREATED = ", which created this file";

/** Our line for `hook`; `created`: the file did not exist, nor did these directories (deepest first). */
export function nixConfLine(hook: string, created?: readonly string[]): string {
  const what = created === undefined ? "" : `${CREATED}${created.map((dir) => ` and ${dir}`).join("")}`;
  return `build-hook = ${hook} # ${MARK}${what}`;
}

/** What one of our lines says install created: nothing (undefined), or the file and these directories. */
function createdBy(line: ConfSetting): string[] | undefined {
  const rest = line.comment!.slice(MARK.length);
  return rest.startsWith(CREATED)
    ? rest
        .slice(CREATED.length)
        .split(" and ")
        .filter((dir) => dir !== "")
    : undefined;
}

/** The file this Nix takes offload's line from, as offload names it (no "//" of HOME=/root/). */
function placeFor(nix: LocalNix): string {
  return posix.normalize(buildHookLocation(nix.version) === "nix.conf" ? nix.nixConf : nix.userConf);
}

export async function install(options: InstallOptions): Promise<void> {
  const hook = options.hook ?? OFFLOAD_HOOK;
  const nix = await inspectLocalNix(options.system);
  const support = hookSupport(nix.version);
  if (!support.supported) throw new OffloadError(`${describeNix(nix)}: ${support.why}`, { code: "nix-version-unsupported", fix: support.fix });
  requireRoot(options);
  let changed = false;
  if (!runsHook(nix.effective.value, hook, nix.root)) {
    const file = placeFor(nix);
    refuseIneffective(nix, file, hook);
    changed = await addLine(nix, file, hook, options);
  }
  const restart = nix.daemon !== undefined && (changed || restartReason(nix) !== undefined);
  if (!changed && !restart) {
    options.say({ kind: "note", text: `nothing to change: ${runningText(nix)}` });
    return;
  }
  if (restart) await restartDaemon(nix, "read the change", options);
  if (options.dryRun) return;
  const after = await settled(nix, options);
  const verdict = hookVerdict(after, hook);
  if (!verdict.ok) throw new OffloadError(`after install: ${verdict.error.message}`, { code: verdict.error.code, fix: verdict.error.fix });
  options.say({ kind: "note", text: verdict.detail });
}

export async function uninstall(options: InstallOptions): Promise<void> {
  const hook = options.hook ?? OFFLOAD_HOOK;
  const nix = await inspectLocalNix(options.system);
  requireRoot(options);
  // Both places whatever the version now (Nix may have been upgraded since install), and every
  // other user config file it reads: offload's marked line counts wherever it is.
  const files = [nix.nixConf, nix.userConf, ...nix.layers.filter((layer) => layer.layer === "user-conf").map((layer) => layer.file)];
  let removed = false;
  for (const file of new Set(files.map((file) => posix.normalize(file)))) removed = (await removeLines(nix, file, options)) || removed;
  if (!removed) {
    options.say({ kind: "note", text: `nothing to remove: ${afterText(nix, hook)}` });
    return;
  }
  // Only a daemon that may run offload's hook now needs to restart for what was removed.
  if (nix.daemon !== undefined && (usesOffloadHook(nix, hook) || restartReason(nix) !== undefined))
    await restartDaemon(nix, "stop running offload's hook", options);
  if (options.dryRun) return;
  options.say({ kind: "note", text: afterText(await settled(nix, options), hook) });
}

/** What runs after uninstall: naming the place when offload's hook is still set somewhere offload did not write. */
function afterText(nix: LocalNix, hook: string): string {
  if (usesOffloadHook(nix, hook))
    return `${describeNix(nix)} still runs offload's hook, set at ${nix.effective.from!.where}, which offload install did not write`;
  return `${describeNix(nix)} runs ${describeHook(nix.effective)}`;
}

function requireRoot(options: InstallOptions): void {
  if (!options.dryRun && options.system.uid !== 0) {
    throw new OffloadError(`offload install and uninstall change /etc/nix/nix.conf or root's ~/.config/nix/nix.conf and restart nix-daemon`, {
      code: "permission-denied",
      fix: "run it as root (or see what it would do with --dry-run)",
    });
  }
}

/** Refuses when a line in `file` would not decide the hook: this Nix does not read the file, or reads another build-hook after it. */
function refuseIneffective(nix: LocalNix, file: string, hook: string): void {
  const at = nix.layers.findLastIndex((layer) => samePath(layer.file, file));
  if (at === -1) throw notRead(nix, file);
  const later = nix.layers
    .slice(at + 1)
    .flatMap(hookAssignments)
    .at(-1);
  if (!later || runsHook(later.value, hook, nix.root)) return;
  const where = later.layer === "NIX_CONFIG" ? `NIX_CONFIG in the environment of ${describeNix(nix)}` : later.where;
  throw new OffloadError(`${where} sets build-hook = ${later.value}, which overrides ${file}`, {
    code: "build-hook-overridden",
    fix: `remove build-hook there${later.layer === "NIX_CONFIG" ? ` (or set it to ${hook})` : ""}, then run offload install again`,
  });
}

/** Nix always reads nix.conf and its user's own config file, unless NIX_USER_CONF_FILES in its environment names other files. */
function notRead(nix: LocalNix, file: string): OffloadError {
  const whose = nix.daemon ? "nix-daemon's" : "root's";
  const then = nix.daemon ? `restart nix-daemon, then run offload install again` : "then run offload install again";
  const setting = `NIX_USER_CONF_FILES=${JSON.stringify(nix.env.NIX_USER_CONF_FILES)}`;
  return new OffloadError(
    `${describeNix(nix)} does not read ${file}, where Nix 2.25–2.33 take build-hook from (they ignore it in nix.conf): ${setting} in ${whose} environment leaves it out`,
    {
      code: "user-conf-not-read",
      fix: `remove NIX_USER_CONF_FILES from ${whose} environment (or add ${file} to it), ${then}`,
    },
  );
}

// ---------------------------------------------------------------------------------------
// The line

async function addLine(nix: LocalNix, name: string, hook: string, options: InstallOptions): Promise<boolean> {
  const file = join(nix.root, name);
  // Someone else's hook that ours would override, as the Nix reads them: in the file with its
  // includes and in the files applied before it (not nix.conf where this version ignores it).
  const at = nix.layers.findLastIndex((layer) => samePath(layer.file, name));
  const counted = nix.layers.slice(0, at + 1).filter((layer) => !(layer.layer === "nix.conf" && buildHookLocation(nix.version) === "user-conf"));
  const foreign = counted.flatMap((layer) => layer.hooks).findLast((s) => !s.comment?.startsWith(MARK) && !runsHook(s.value, hook, nix.root));
  if (foreign) {
    throw new OffloadError(
      `${foreign.file}:${foreign.line} already sets build-hook = ${foreign.value}, a line offload install did not write: it leaves it alone`,
      {
        code: "build-hook-foreign",
        fix: `remove or comment out that line, then run offload install again`,
      },
    );
  }
  await refuseSymlink(file, name, `set build-hook = ${hook} where ${name} is generated`);
  const before = await readIfExists(file);
  const ours = ourLines(before ?? "", name);
  const dirs = before === undefined ? await missingDirs(nix.root, name) : [];
  // Our own line with another hook (offload moved) is replaced, keeping what it says was created.
  const created = before === undefined ? dirs : ours.map(createdBy).find((dirs) => dirs !== undefined);
  const lines = (before ?? "").split("\n");
  for (const line of [...ours].reverse()) {
    options.say({ kind: "removed-line", file: name, line: line.line, text: lines[line.line - 1]! });
    lines.splice(line.line - 1, 1);
  }
  const line = nixConfLine(hook, created);
  const kept = lines.join("\n");
  // After a file without a final newline, the line goes on a new line and ends without one,
  // so that removing it with its line break restores the file exactly.
  const after = kept === "" || kept.endsWith("\n") ? `${kept}${line}\n` : `${kept}\n${line}`;
  for (const dir of [...dirs].reverse()) {
    options.say({ kind: "created", file: dir, text: "(a directory)" });
    if (!options.dryRun) {
      await mkdir(join(nix.root, dir));
      await chmod(join(nix.root, dir), 0o755); // readable by every user's Nix, whatever the umask
    }
  }
  options.say({ kind: "added-line", file: name, line: after.split("\n").indexOf(line) + 1, text: line });
  if (!options.dryRun) await writeFile(file, after, before === undefined ? 0o644 : undefined);
  return true;
}

async function removeLines(nix: LocalNix, name: string, options: InstallOptions): Promise<boolean> {
  const file = join(nix.root, name);
  const before = await readIfExists(file);
  if (before === undefined) return false;
  for (const foreign of fileHooks(before, name).filter((s) => !s.comment?.startsWith(MARK))) {
    options.say({ kind: "note", text: `left as it is: ${name}:${foreign.line} sets build-hook = ${foreign.value}, a line offload install did not write` });
  }
  const ours = ourLines(before, name);
  if (ours.length === 0) return false;
  await refuseSymlink(file, name, `remove offload's build-hook where ${name} is generated`);
  const lines = before.split("\n");
  const created = ours.map(createdBy).find((dirs) => dirs !== undefined);
  for (const line of [...ours].reverse()) {
    options.say({ kind: "removed-line", file: name, line: line.line, text: lines[line.line - 1]! });
    lines.splice(line.line - 1, 1);
  }
  const after = lines.join("\n");
  if (after !== "" || !created) {
    if (!options.dryRun) await writeFile(file, after);
    return true;
  }
  options.say({ kind: "deleted", file: name, text: "(empty: offload install had created it)" });
  if (!options.dryRun) await unlink(file);
  // Its directories too, deepest first, while they hold nothing else; only ones above the file.
  const gone = new Set([name]);
  for (const dir of created.filter((dir) => name.startsWith(`${dir}/`))) {
    const others = (await readdir(join(nix.root, dir)).catch(() => [])).filter((entry) => !gone.has(posix.join(dir, entry)));
    if (others.length > 0) {
      options.say({ kind: "note", text: `left as it is: ${dir}, which offload install had created and which holds other files now` });
      break;
    }
    options.say({ kind: "deleted", file: dir, text: "(empty: offload install had created it)" });
    if (!options.dryRun) await rmdir(join(nix.root, dir));
    gone.add(dir);
  }
  return true;
}

/** The build-hook lines of the file itself (an include is read as empty: offload writes only in the file). */
function fileHooks(text: string, name: string): ConfSetting[] {
  return parseNixConf(text, name, () => "").settings.filter((s) => s.file === name && s.name === "build-hook");
}

function ourLines(text: string, name: string): ConfSetting[] {
  return fileHooks(text, name).filter((s) => s.comment?.startsWith(MARK));
}

/** The directories above `name` that do not exist, deepest first. */
async function missingDirs(root: string, name: string): Promise<string[]> {
  const missing: string[] = [];
  for (
    let dir = posix.dirname(name);
    dir !== "/" &&
    !(await lstat(join(root, dir)).then(
      () => true,
      () => false,
    ));
    dir = posix.dirname(dir)
  )
    missing.push(dir);
  return missing;
}

// NixOS and home-manager link nix.conf into the Nix store: a rewrite would replace the link.
async function refuseSymlink(file: string, name: string, fix: string): Promise<void> {
  const info = await lstat(file).catch(() => undefined);
  if (info?.isSymbolicLink()) {
    throw new OffloadError(`${name} is a symbolic link (generated by NixOS or home-manager?): offload install does not replace it`, {
      code: "nix-conf-managed",
      fix,
    });
  }
}

/** Paths as Nix builds them may hold "//" (HOME=/root/): the same file. */
function samePath(a: string, b: string): boolean {
  return posix.normalize(a) === posix.normalize(b);
}

// ---------------------------------------------------------------------------------------
// Restarting the daemon

/** systemctl restart under systemd; a daemon started otherwise cannot be restarted from here: the command to do it. */
async function restartDaemon(nix: LocalNix, what: string, options: InstallOptions): Promise<void> {
  const systemd = nix.unit ? await options.system.systemd() : undefined;
  if (!nix.unit || !systemd) {
    throw new OffloadError(`${describeNix(nix)} must be restarted to ${what}, and systemd did not start it: offload cannot restart it`, {
      code: "daemon-restart-needed",
      fix: restartFix(nix),
    });
  }
  options.say({ kind: "command", command: `systemctl restart ${nix.unit}` });
  if (!options.dryRun) await systemd.systemctl(["restart", nix.unit]);
}

/** This machine's Nix once a restarted daemon runs (another pid, or none for a daemonless machine). */
async function settled(before: LocalNix, options: InstallOptions): Promise<LocalNix> {
  const waitMs = options.restartWaitMs ?? 10_000;
  return pollUntil(
    () => inspectLocalNix(options.system),
    (now) => !before.daemon || (now.daemon !== undefined && now.daemon.pid !== before.daemon.pid),
    waitMs,
    () =>
      new OffloadError(`nix-daemon (pid ${before.daemon!.pid}) still runs ${waitMs / 1000} s after the restart, or no new one started`, {
        code: "daemon-restart-failed",
        fix: `see systemctl status ${before.unit ?? "nix-daemon.service"} and journalctl -u ${before.unit ?? "nix-daemon.service"}`,
      }),
  );
}

// ---------------------------------------------------------------------------------------

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    // ENOTDIR: a user config file under a HOME or XDG directory that is a file is not read either.
    if (["ENOENT", "ENOTDIR"].includes((error as NodeJS.ErrnoException).code ?? "")) return undefined;
    throw new OffloadError(`cannot read ${file}: ${(error as Error).message}`, { code: "read-failed", fix: "run this as root" });
  }
}

/** Replaces the file atomically, keeping its mode (or `mode` for a new one). */
async function writeFile(file: string, text: string, mode?: number): Promise<void> {
  const current = mode ?? (await lstat(file)).mode & 0o7777;
  await writeFileAtomic(file, text, current);
}
