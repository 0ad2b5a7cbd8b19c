// `offload install` / `offload uninstall`: make this machine's Nix run offload's hook, in the
// place its version reads build-hook from (daemon-version.ts), and undo exactly that.
//   nix.conf:    one line `build-hook = … # added by offload install` (Nix ≤ 2.24, ≥ 2.34)
//   environment: Nix 2.25–2.33 ignore nix.conf's build-hook: a systemd drop-in setting the
//                daemon's NIX_CONFIG; without systemd, the command line to start it with.
// Lines and files offload wrote carry a marker; nothing else is ever changed or removed.
// Success means the daemon (re)started runs offload's hook, checked after the restart.
import { lstat, mkdir, readFile, rmdir, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { OffloadError } from "../errors.js";
import { buildHookLocation, hookSupport } from "../nix/daemon-version.js";
import { shellQuote } from "../remote/shell-quote.js";
import { writeFileAtomic } from "./config-dir.js";
import {
  DEFAULT_UNIT,
  describeHook,
  describeNix,
  dropInPath,
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
import { parseNixConf } from "./nix-conf.js";

/** What install and uninstall did (or, with dryRun, would do), in order. */
export type InstallEvent =
  | { kind: "added-line" | "removed-line"; file: string; line: number; text: string }
  | { kind: "created" | "deleted"; file: string; text: string }
  | { kind: "command"; command: string }
  | { kind: "note"; text: string };

export interface InstallOptions {
  system: LocalSystem;
  /** The hook to install (default: this package's bin/offload-hook.js). */
  hook?: string;
  dryRun?: boolean;
  say: (event: InstallEvent) => void;
  /** How long to wait for a restarted daemon to show up (default 10 s). */
  restartWaitMs?: number;
}

const MARK = "added by offload install";
const MARK_NEW_FILE = `${MARK}, which created this file`;
const DROP_IN_MARK = "# Written by offload install; offload uninstall deletes this file";
const DROP_IN_NEW_DIR = "# and its directory, which offload install created.";

/** Our nix.conf line for `hook`; `created`: the file did not exist before. */
export function nixConfLine(hook: string, created = false): string {
  return `build-hook = ${hook} # ${created ? MARK_NEW_FILE : MARK}`;
}

/** NIX_CONFIG as the drop-in sets it. */
function hookNixConfig(hook: string): string {
  return `build-hook = ${hook}`;
}

export function dropInText(hook: string, createdDir: boolean): string {
  // systemd unquotes C escapes in Environment= and expands % specifiers.
  const value = `NIX_CONFIG=${hookNixConfig(hook)}`.replace(/[\\"]/g, "\\$&").replace(/%/g, "%%");
  return [
    DROP_IN_MARK,
    ...(createdDir ? [DROP_IN_NEW_DIR] : []),
    "# Nix 2.25-2.33 ignore build-hook in nix.conf but honour NIX_CONFIG in nix-daemon's environment.",
    "[Service]",
    `Environment="${value}"`,
    "",
  ].join("\n");
}

export async function install(options: InstallOptions): Promise<void> {
  const hook = options.hook ?? OFFLOAD_HOOK;
  const nix = await inspectLocalNix(options.system);
  const support = hookSupport(nix.version);
  if (!support.supported) throw new OffloadError(`${describeNix(nix)}: ${support.why}`, { code: "nix-version-unsupported", fix: support.fix });
  requireRoot(options);
  let changed = false;
  let dropInChanged = false;
  if (!runsHook(nix.effective.value, hook, nix.root)) {
    if (buildHookLocation(nix.version) === "nix.conf") {
      refuseOverride(nix, hook);
      changed = await addNixConfLine(nix, hook, options);
    } else {
      changed = dropInChanged = await addDropIn(nix, hook, options);
    }
  }
  const restart = nix.daemon !== undefined && (changed || restartReason(nix) !== undefined);
  if (!changed && !restart) {
    options.say({ kind: "note", text: `nothing to change: ${runningText(nix)}` });
    return;
  }
  if (nix.unit && (restart || dropInChanged)) await restartUnit(nix.unit, dropInChanged, restart, options);
  else if (restart) throw restartNeeded(nix, "read the change");
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
  const lines = await removeNixConfLines(nix, options);
  // A drop-in of ours is removed even where systemd does not run (any more): it is ours.
  const dropIn = await removeDropIn(nix, nix.unit ?? DEFAULT_UNIT, options);
  if (!lines && !dropIn) {
    options.say({ kind: "note", text: `nothing to remove: ${afterText(nix, hook)}` });
    return;
  }
  // Only a daemon that may run offload's hook now needs to restart for what was removed.
  const restart = nix.daemon !== undefined && (usesOffloadHook(nix, hook) || restartReason(nix) !== undefined);
  if (nix.unit && (restart || dropIn)) await restartUnit(nix.unit, dropIn, restart, options);
  else if (restart) throw restartNeeded(nix, "stop running offload's hook");
  if (options.dryRun) return;
  options.say({ kind: "note", text: afterText(await settled(nix, options), hook) });
}

/** What runs after uninstall: naming the place when offload's hook is still set somewhere offload did not write. */
function afterText(nix: LocalNix, hook: string): string {
  if (usesOffloadHook(nix, hook)) return `${describeNix(nix)} still runs offload's hook, set at ${nix.effective.from!.where}, which offload install did not write`;
  return `${describeNix(nix)} runs ${describeHook(nix.effective)}`;
}

function requireRoot(options: InstallOptions): void {
  if (!options.dryRun && options.system.uid !== 0) {
    throw new OffloadError("offload install and uninstall change /etc/nix or systemd units and restart nix-daemon", { code: "permission-denied", fix: "run it as root (or see what it would do with --dry-run)" });
  }
}

/** In the nix.conf versions, a later layer (user nix.conf, NIX_CONFIG) that sets another hook would win over our line. */
function refuseOverride(nix: LocalNix, hook: string): void {
  const from = nix.effective.from;
  if (!from || from.layer === "nix.conf" || runsHook(from.value, hook, nix.root)) return;
  const where = from.layer === "NIX_CONFIG" ? `NIX_CONFIG in the environment of ${describeNix(nix)}` : from.where;
  throw new OffloadError(`${where} sets build-hook = ${from.value}, which overrides nix.conf`, {
    code: "build-hook-overridden",
    fix: `remove build-hook there${from.layer === "NIX_CONFIG" ? " (or set it to " + hook + ")" : ""}, then run offload install again`,
  });
}

// ---------------------------------------------------------------------------------------
// nix.conf

async function addNixConfLine(nix: LocalNix, hook: string, options: InstallOptions): Promise<boolean> {
  const file = join(nix.root, nix.nixConf);
  const before = await readIfExists(file);
  const foreign = nix.nixConfHooks.find((s) => !s.comment?.startsWith(MARK) && !runsHook(s.value, hook, nix.root));
  if (foreign) {
    throw new OffloadError(`${foreign.file}:${foreign.line} already sets build-hook = ${foreign.value}, a line offload install did not write: it leaves it alone`, {
      code: "build-hook-foreign",
      fix: `remove or comment out that line, then run offload install again`,
    });
  }
  await refuseSymlink(file, nix.nixConf);
  const text = before ?? "";
  // Our own line with another hook (offload moved): replace it.
  const lines = text.split("\n");
  const ours = ourLines(text, nix.nixConf);
  const created = before === undefined || ours.some((index) => lines[index]!.includes(MARK_NEW_FILE));
  for (const index of [...ours].reverse()) {
    options.say({ kind: "removed-line", file: nix.nixConf, line: index + 1, text: lines[index]! });
    lines.splice(index, 1);
  }
  const line = nixConfLine(hook, created);
  const kept = lines.join("\n");
  // After a file without a final newline, the line goes on a new line and ends without one,
  // so that removing it with its line break restores the file exactly.
  const after = kept === "" || kept.endsWith("\n") ? `${kept}${line}\n` : `${kept}\n${line}`;
  const number = after.split("\n").indexOf(line) + 1;
  options.say({ kind: "added-line", file: nix.nixConf, line: number, text: line });
  if (!options.dryRun) await writeFile(file, after, before === undefined ? 0o644 : undefined);
  return true;
}

async function removeNixConfLines(nix: LocalNix, options: InstallOptions): Promise<boolean> {
  const file = join(nix.root, nix.nixConf);
  const before = await readIfExists(file);
  if (before === undefined) return false;
  const indexes = ourLines(before, nix.nixConf);
  for (const foreign of nix.nixConfHooks.filter((s) => !s.comment?.startsWith(MARK))) {
    options.say({ kind: "note", text: `left as it is: ${foreign.file}:${foreign.line} sets build-hook = ${foreign.value}, a line offload install did not write` });
  }
  if (indexes.length === 0) return false;
  await refuseSymlink(file, nix.nixConf);
  const lines = before.split("\n");
  const created = indexes.some((index) => lines[index]!.includes(MARK_NEW_FILE));
  for (const index of [...indexes].reverse()) {
    options.say({ kind: "removed-line", file: nix.nixConf, line: index + 1, text: lines[index]! });
    lines.splice(index, 1);
  }
  const after = lines.join("\n");
  if (after === "" && created) {
    options.say({ kind: "deleted", file: nix.nixConf, text: "(empty: offload install had created it)" });
    if (!options.dryRun) await unlink(file);
  } else if (!options.dryRun) {
    await writeFile(file, after);
  }
  return true;
}

/** Indexes (0-based) of the build-hook lines offload wrote in the main nix.conf (never in an include, read here as empty). */
function ourLines(text: string, name: string): number[] {
  const settings = parseNixConf(text, name, () => "").settings;
  return settings.filter((s) => s.file === name && s.name === "build-hook" && s.comment?.startsWith(MARK)).map((s) => s.line - 1);
}

// NixOS and home-manager link nix.conf into the Nix store: a rewrite would replace the link.
async function refuseSymlink(file: string, name: string): Promise<void> {
  const info = await lstat(file).catch(() => undefined);
  if (info?.isSymbolicLink()) {
    throw new OffloadError(`${name} is a symbolic link (generated by NixOS or home-manager?): offload install does not replace it`, {
      code: "nix-conf-managed",
      fix: `set nix.settings.build-hook = "${OFFLOAD_HOOK}" where ${name} is generated`,
    });
  }
}

// ---------------------------------------------------------------------------------------
// systemd drop-in (Nix 2.25–2.33)

async function addDropIn(nix: LocalNix, hook: string, options: InstallOptions): Promise<boolean> {
  if (!nix.unit) throw environmentOnly(nix, hook);
  const name = dropInPath(nix.unit);
  const file = join(nix.root, name);
  const before = await readIfExists(file);
  if (before !== undefined && !before.startsWith(DROP_IN_MARK)) {
    throw new OffloadError(`${name} exists and offload install did not write it: it leaves it alone`, { code: "drop-in-foreign", fix: `move it away, or add Environment="NIX_CONFIG=${hookNixConfig(hook)}" to it yourself` });
  }
  const existing = nix.daemon?.env.NIX_CONFIG;
  if (existing !== undefined && before === undefined) {
    throw new OffloadError(`nix-daemon's environment already has NIX_CONFIG (${JSON.stringify(existing)}), which a drop-in of offload's would replace`, {
      code: "daemon-nix-config-foreign",
      fix: `add the line "${hookNixConfig(hook)}" to that NIX_CONFIG (systemctl edit ${nix.unit}), then systemctl restart ${nix.unit}`,
    });
  }
  const dirExists = await lstat(dirname(file)).then(() => true, () => false);
  const text = dropInText(hook, before === undefined ? !dirExists : before.includes(DROP_IN_NEW_DIR));
  if (before === text) return false;
  if (before !== undefined) options.say({ kind: "deleted", file: name, text: before });
  options.say({ kind: "created", file: name, text });
  if (!options.dryRun) {
    if (!dirExists) await mkdir(dirname(file), { mode: 0o755 });
    await writeFile(file, text, 0o644);
  }
  return true;
}

async function removeDropIn(nix: LocalNix, unit: string, options: InstallOptions): Promise<boolean> {
  const name = dropInPath(unit);
  const file = join(nix.root, name);
  const before = await readIfExists(file);
  if (before === undefined) return false;
  if (!before.startsWith(DROP_IN_MARK)) {
    options.say({ kind: "note", text: `left as it is: ${name}, which offload install did not write` });
    return false;
  }
  options.say({ kind: "deleted", file: name, text: before });
  if (options.dryRun) return true;
  await unlink(file);
  if (before.includes(DROP_IN_NEW_DIR)) {
    await rmdir(dirname(file)).then(
      () => options.say({ kind: "deleted", file: dirname(name), text: "(empty: offload install had created it)" }),
      () => options.say({ kind: "note", text: `left as it is: ${dirname(name)}, which holds other files now` }),
    );
  }
  return true;
}

/** Nix 2.25–2.33 without systemd: only whoever starts nix-daemon (or root's shell) can set its NIX_CONFIG. */
function environmentOnly(nix: LocalNix, hook: string): OffloadError {
  const assignment = `NIX_CONFIG=${hookNixConfig(hook)}`;
  const why = `${describeNix(nix)} ignores build-hook in nix.conf (Nix 2.25–2.33 do) and reads it only from NIX_CONFIG in its environment`;
  if (nix.daemon) {
    const other = nix.daemon.env.NIX_CONFIG;
    return new OffloadError(`${why}, and systemd did not start it: offload cannot change its environment`, {
      code: "daemon-environment",
      fix:
        other === undefined
          ? `restart it with NIX_CONFIG set: kill ${nix.daemon.pid}; env ${shellQuote(assignment)} ${nix.daemon.argv.map(shellQuote).join(" ")} &`
          : `restart it (kill ${nix.daemon.pid}) with the line "${hookNixConfig(hook)}" added to its NIX_CONFIG (now ${JSON.stringify(other)})`,
    });
  }
  return new OffloadError(`${why}; no nix-daemon runs, so root's builds read NIX_CONFIG from root's own environment`, {
    code: "root-environment",
    fix: `add to root's shell profile (e.g. /root/.profile): export ${shellQuote(assignment)}`,
  });
}

// ---------------------------------------------------------------------------------------
// Restarting the daemon

/** daemon-reload after a unit file changed; restart when the daemon runs, or was to read the drop-in anyway. */
async function restartUnit(unit: string, reload: boolean, restart: boolean, options: InstallOptions): Promise<void> {
  const systemd = await options.system.systemd();
  if (!systemd) throw new OffloadError(`systemd does not run here, yet ${unit} was found`, { code: "internal" });
  for (const args of [...(reload ? [["daemon-reload"]] : []), ...(restart || reload ? [["restart", unit]] : [])]) {
    options.say({ kind: "command", command: `systemctl ${args.join(" ")}` });
    if (!options.dryRun) await systemd.systemctl(args);
  }
}

function restartNeeded(nix: LocalNix, what: string): OffloadError {
  return new OffloadError(`${describeNix(nix)} must be restarted to ${what}, and systemd did not start it: offload cannot restart it`, {
    code: "daemon-restart-needed",
    fix: restartFix(nix),
  });
}

/** This machine's Nix once a restarted daemon runs (another pid, or none for a daemonless machine). */
async function settled(before: LocalNix, options: InstallOptions): Promise<LocalNix> {
  const deadline = Date.now() + (options.restartWaitMs ?? 10_000);
  for (;;) {
    const now = await inspectLocalNix(options.system);
    if (!before.daemon || (now.daemon && now.daemon.pid !== before.daemon.pid)) return now;
    if (Date.now() >= deadline) {
      throw new OffloadError(`nix-daemon (pid ${before.daemon.pid}) still runs ${(options.restartWaitMs ?? 10_000) / 1000} s after the restart, or no new one started`, {
        code: "daemon-restart-failed",
        fix: `see systemctl status ${before.unit ?? "nix-daemon.service"} and journalctl -u ${before.unit ?? "nix-daemon.service"}`,
      });
    }
    await sleep(200);
  }
}

// ---------------------------------------------------------------------------------------

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new OffloadError(`cannot read ${file}: ${(error as Error).message}`, { code: "read-failed", fix: "run this as root" });
  }
}

/** Replaces the file atomically, keeping its mode (or `mode` for a new one). */
async function writeFile(file: string, text: string, mode?: number): Promise<void> {
  const current = mode ?? ((await lstat(file)).mode & 0o7777);
  await writeFileAtomic(file, text, current);
}
