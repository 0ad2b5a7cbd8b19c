// Which Nix a daemon is, and what that means for a build hook. Pure: the facts come from
// Nix's sources (tags 2.8.0 … 2.35.x) and were checked against Debian's 2.8.0, 2.26.3 and
// 2.34.8 where docs/compatibility.md says so.

export interface NixVersion {
  /** "Nix" or "Lix" (Lix prints "nix (Lix, like Nix) 2.93.0"). */
  flavour: "Nix" | "Lix";
  major: number;
  minor: number;
  patch: number;
  /** As printed, e.g. "2.34.8". */
  text: string;
}

/** Reads `nix --version` / `nix-daemon --version` output: "nix (Nix) 2.34.8", "nix-daemon (Nix) 2.8.0". */
export function parseNixVersion(output: string): NixVersion | undefined {
  const match = /\((Nix|Lix)[^)]*\)\s+(\d+)\.(\d+)(?:\.(\d+))?\S*/.exec(output);
  if (!match) return undefined;
  const [, flavour, major, minor, patch] = match;
  return {
    flavour: flavour as "Nix" | "Lix",
    major: Number(major),
    minor: Number(minor),
    patch: Number(patch ?? 0),
    text: match[0].slice(match[0].indexOf(")") + 1).trim(),
  };
}

/** Compares major.minor only: every fact below changed at a minor release. */
export function atLeast(version: NixVersion, major: number, minor: number): boolean {
  return version.major > major || (version.major === major && version.minor >= minor);
}

/** The oldest and newest Nix whose hook protocol offload speaks and has checked. */
export const OLDEST_SUPPORTED = { major: 2, minor: 8 } as const;
export const NEWEST_SUPPORTED = { major: 2, minor: 35 } as const;

export type Support = { supported: true } | { supported: false; why: string; fix: string };

/**
 * Whether offload can be this daemon's build hook. Lix 2.94 replaced the hook protocol with
 * Cap'n Proto RPC (and deprecated build-hook in 2.91); Nix after 2.35 changes when the
 * daemon sends a build's inputs (it no longer waits for "# accept"), which offload has not
 * been checked against; Nix before 2.8 was never tested.
 */
export function hookSupport(version: NixVersion): Support {
  const name = `${version.flavour} ${version.text}`;
  const upgrade = "use Nix's own build-remote (remove build-hook from nix.conf, or run `offload uninstall`) until offload supports it";
  if (version.flavour === "Lix") {
    return atLeast(version, 2, 94)
      ? { supported: false, why: `${name} speaks its build-hook protocol over Cap'n Proto RPC, which offload does not`, fix: upgrade }
      : { supported: false, why: `${name} has not been tested with offload (only Nix is)`, fix: upgrade };
  }
  if (!atLeast(version, OLDEST_SUPPORTED.major, OLDEST_SUPPORTED.minor)) {
    return { supported: false, why: `${name} is older than the oldest Nix offload supports (2.8)`, fix: "upgrade Nix to 2.8 or newer" };
  }
  if (atLeast(version, NEWEST_SUPPORTED.major, NEWEST_SUPPORTED.minor + 1)) {
    return { supported: false, why: `${name} is newer than the newest Nix offload has been checked with (2.35)`, fix: upgrade };
  }
  return { supported: true };
}

/**
 * Where `build-hook` must be set for this daemon to use it. Nix 2.25.0–2.33.x reset the
 * setting after reading nix.conf (src/nix/main.cc set its default after initNix(); fixed in
 * 2.34 by PR #15083), so there only what is applied after nix.conf counts: a user config file
 * (offload install: root's own ~/.config/nix/nix.conf), NIX_CONFIG, or a trusted client's --option.
 */
export function buildHookLocation(version: NixVersion): "nix.conf" | "user-conf" {
  return atLeast(version, 2, 25) && !atLeast(version, 2, 34) ? "user-conf" : "nix.conf";
}

/** From 2.29 the daemon reports every non-zero hook exit as MiscFailure (100 and 101 lose their meaning). */
export function hookExitStatusesKept(version: NixVersion): boolean {
  return !atLeast(version, 2, 29);
}

/** One place that sets build-hook. Nix applies them in this order: nix.conf (with its includes), the user config files, NIX_CONFIG. */
export interface HookAssignment {
  layer: "nix.conf" | "user-conf" | "NIX_CONFIG";
  value: string;
  /** "/etc/nix/nix.conf:12", "/root/.config/nix/nix.conf:3" or "NIX_CONFIG". */
  where: string;
}

export interface EffectiveHook {
  /** The build-hook Nix runs; undefined: its default, its own build-remote. */
  value?: string;
  /** Where that value is set. */
  from?: HookAssignment;
  /** The nix.conf assignment this version throws away (Nix 2.25–2.33), when nothing later sets build-hook. */
  ignored?: HookAssignment;
}

/**
 * The build-hook a Nix of `version` ends up with. The last assignment wins; Nix 2.25–2.33
 * read nix.conf, marked its values as not overridden (loadConfFile's resetOverridden), and
 * then set build-hook's default over every value not overridden, so only the user config
 * files and NIX_CONFIG, applied after that reset, survive.
 */
export function effectiveBuildHook(version: NixVersion, assignments: readonly HookAssignment[]): EffectiveHook {
  const resetsNixConf = buildHookLocation(version) === "user-conf";
  const kept = assignments.filter((a) => !(resetsNixConf && a.layer === "nix.conf"));
  const from = kept.at(-1);
  if (from) return { value: from.value, from };
  const ignored = resetsNixConf ? assignments.filter((a) => a.layer === "nix.conf").at(-1) : undefined;
  return ignored ? { ignored } : {};
}
