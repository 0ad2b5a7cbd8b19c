// What the hook takes from the daemon's settings (sent first: `u64 1, name, value` … `u64 0`;
// Nix's src/build-remote/build-remote.cc reads them the same way).
import { availableParallelism } from "node:os";
import type { BuildMachine } from "../../types/index.js";
import { OffloadError } from "../errors.js";
import type { LocalState, Restriction } from "../select/select.js";

/** The daemon's `builders` setting as offload reads it. */
export type Builders =
  /** `offload:only=…;exclude=…`: a choice of machines. */
  | { kind: "offload"; value: string }
  /** Empty: Nix's "no remote builders". The daemon passes `--builders ''` on from any user. */
  | { kind: "none" }
  /** A Nix machine list (`@/etc/nix/machines`, `ssh://…`): offload's machines come from machines.ts instead. */
  | { kind: "nix"; value: string }
  /** The daemon sent no `builders` (a hook run by hand). */
  | { kind: "absent" }
  /** guix-daemon, which has no such setting: machines.ts (and $OFFLOAD_ONLY/EXCLUDE) decide. */
  | { kind: "guix" };

export interface HookSettings {
  localState: LocalState;
  /** Seconds; 0 = none. The daemon enforces no timeouts on hook builds, so they are forwarded to the remote. */
  maxSilentTime: number;
  buildTimeout: number;
  maxLogSize: number;
  buildersUseSubstitutes: boolean;
  /** Seconds before the daemon asks again about a postponed build (build-poll-interval). */
  pollInterval: number;
  builders: Builders;
  /** Per-build choice of machines, from `builders` and the environment (see restrictionOf). */
  restriction?: Restriction & { from: string };
}

const words = (value: string | undefined) => (value ?? "").split(/\s+/).filter((word) => word !== "");
const number = (value: string | undefined) => (value === undefined || value === "" ? 0 : Number(value) || 0);

export function interpretSettings(settings: ReadonlyMap<string, string>, env: NodeJS.ProcessEnv): HookSettings {
  const maxJobs = settings.get("max-jobs");
  const builders = readBuilders(settings.get("builders"));
  return {
    localState: {
      systems: [settings.get("system") ?? "", ...words(settings.get("extra-platforms"))].filter((s) => s !== ""),
      features: words(settings.get("system-features")),
      maxJobs: maxJobs === "auto" ? availableParallelism() : number(maxJobs),
    },
    maxSilentTime: number(settings.get("max-silent-time")),
    buildTimeout: number(settings.get("timeout")),
    maxLogSize: number(settings.get("max-build-log-size")),
    buildersUseSubstitutes: settings.get("builders-use-substitutes") === "true",
    pollInterval: number(settings.get("build-poll-interval")) || 5,
    builders,
    restriction: restrictionOf(builders, env),
  };
}

function readBuilders(value: string | undefined): Builders {
  if (value === undefined) return { kind: "absent" };
  const trimmed = value.trim();
  if (trimmed === "") return { kind: "none" };
  return trimmed.startsWith("offload:") ? { kind: "offload", value: trimmed } : { kind: "nix", value: trimmed };
}

/**
 * Choosing machines for one build without editing machines.ts. The daemon passes its
 * `builders` setting, which a trusted client sets per build:
 *   nix-build --builders 'offload:only=ruby,kana'     only these machines
 *   nix-build --builders 'offload:exclude=aquamarine' any machine but these
 * (both may be combined with ';'). $OFFLOAD_ONLY / $OFFLOAD_EXCLUDE in the daemon's
 * environment set the same for every build.
 */
function restrictionOf(builders: Builders, env: NodeJS.ProcessEnv): (Restriction & { from: string }) | undefined {
  const list = (value: string | undefined) =>
    (value ?? "")
      .split(",")
      .map((name) => name.trim())
      .filter((name) => name !== "");
  const restriction: { only?: string[]; exclude?: string[] } = {};
  const from: string[] = [];
  if (env.OFFLOAD_ONLY) {
    restriction.only = list(env.OFFLOAD_ONLY);
    from.push("OFFLOAD_ONLY");
  }
  if (env.OFFLOAD_EXCLUDE) {
    restriction.exclude = list(env.OFFLOAD_EXCLUDE);
    from.push("OFFLOAD_EXCLUDE");
  }
  if (builders.kind === "offload") {
    for (const directive of builders.value.slice("offload:".length).split(";")) {
      const [key, names] = directive.split("=", 2).map((part) => part.trim());
      if (key === "only") restriction.only = list(names);
      else if (key === "exclude") restriction.exclude = [...(restriction.exclude ?? []), ...list(names)];
      else {
        throw new OffloadError(`the builders setting "${builders.value}" has an unknown directive "${directive.trim()}"`, {
          code: "builders-invalid",
          fix: "use --builders 'offload:only=NAME,…' or 'offload:exclude=NAME,…' (or both, separated by ';')",
        });
      }
    }
    from.push(`builders = "${builders.value}"`);
  }
  return restriction.only || restriction.exclude ? { ...restriction, from: from.join(" and ") } : undefined;
}

/** A name machines.ts does not define would silently rule out every machine (only) or none (exclude): it is a mistake. */
export function checkRestrictionNames(restriction: HookSettings["restriction"], machines: readonly BuildMachine[]): void {
  const known = machines.map((machine) => machine.name);
  const unknown = [...(restriction?.only ?? []), ...(restriction?.exclude ?? [])].filter((name) => !known.includes(name));
  if (unknown.length === 0) return;
  throw new OffloadError(
    `no machine called ${unknown.map((name) => JSON.stringify(name)).join(" or ")} in machines.ts (named by ${restriction!.from}); its machines are ${known.join(", ") || "none"}`,
    {
      code: "builders-invalid",
      fix: "name machines as machines.ts does (offload check --static lists them)",
    },
  );
}

/** One line for the build log: which machines this build may use, and why. */
export function machinesInEffect(settings: Pick<HookSettings, "builders" | "restriction">): string {
  const { restriction, builders } = settings;
  const only = restriction?.only ? `only ${restriction.only.join(", ")}` : undefined;
  const exclude = restriction?.exclude?.length ? `${only ? "but not" : "any but"} ${restriction.exclude.join(", ")}` : undefined;
  const filter = [only, exclude].filter((part) => part !== undefined).join(", ") || "any in machines.ts";
  const why = [
    ...(restriction ? [restriction.from] : []),
    ...(builders.kind === "nix"
      ? [
          `builders = "${builders.value}" is Nix's own machine list, which offload ignores; Nix passes a per-build --builders 'offload:…' on only from trusted users`,
        ]
      : builders.kind === "absent"
        ? ["the daemon sent no builders setting"]
        : []),
  ];
  return `offload: machines for this build: ${filter}${why.length > 0 ? ` (${why.join("; ")})` : ""}`;
}

/** Said when the daemon's builders is empty: in Nix that means no remote builds, and offload honours it. */
export const NO_REMOTE_BUILDS =
  "builders is empty (--builders '', or builders = in nix.conf), which in Nix means no remote builds: offload builds nothing remotely in this session";
