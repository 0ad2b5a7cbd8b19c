// What the hook takes from the daemon's settings (sent at start, nix-protocols.md §5).
import { availableParallelism } from "node:os";
import { OffloadError } from "../errors.js";
import type { LocalState, Restriction } from "../select/select.js";

export interface HookSettings {
  localState: LocalState;
  /** Seconds; 0 = none. The daemon enforces no timeouts on hook builds, so they are forwarded to the remote. */
  maxSilentTime: number;
  buildTimeout: number;
  maxLogSize: number;
  buildersUseSubstitutes: boolean;
  /** Seconds before the daemon asks again about a postponed build (build-poll-interval). */
  pollInterval: number;
  /** Per-build choice of machines, from `builders` (see parseRestriction). */
  restriction?: Restriction;
}

const words = (value: string | undefined) => (value ?? "").split(/\s+/).filter((word) => word !== "");
const number = (value: string | undefined) => (value === undefined || value === "" ? 0 : Number(value) || 0);

export function interpretSettings(settings: ReadonlyMap<string, string>, env: NodeJS.ProcessEnv): HookSettings {
  const maxJobs = settings.get("max-jobs");
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
    restriction: parseRestriction(settings.get("builders"), env),
  };
}

/**
 * Choosing machines for one build without editing machines.ts. The daemon passes its
 * `builders` setting, which a (trusted) client sets per build:
 *   nix-build --builders 'offload:only=ruby,kana'     only these machines
 *   nix-build --builders 'offload:exclude=aquamarine' any machine but these
 * (both may be combined with ';'). Other values, like Nix's default `@/etc/nix/machines`,
 * are Nix machine lists that offload does not use. $OFFLOAD_ONLY / $OFFLOAD_EXCLUDE in the
 * daemon's environment set the same for every build.
 */
export function parseRestriction(builders: string | undefined, env: NodeJS.ProcessEnv): Restriction | undefined {
  const list = (value: string | undefined) => (value ?? "").split(",").map((name) => name.trim()).filter((name) => name !== "");
  const restriction: { only?: string[]; exclude?: string[] } = {};
  if (env.OFFLOAD_ONLY) restriction.only = list(env.OFFLOAD_ONLY);
  if (env.OFFLOAD_EXCLUDE) restriction.exclude = list(env.OFFLOAD_EXCLUDE);
  const value = builders?.trim() ?? "";
  if (value.startsWith("offload:")) {
    for (const directive of value.slice("offload:".length).split(";")) {
      const [key, names] = directive.split("=", 2).map((part) => part.trim());
      if (key === "only") restriction.only = list(names);
      else if (key === "exclude") restriction.exclude = [...(restriction.exclude ?? []), ...list(names)];
      else {
        throw new OffloadError(`the builders setting "${value}" has an unknown directive "${directive.trim()}"`, {
          code: "builders-invalid",
          fix: "use --builders 'offload:only=NAME,…' or 'offload:exclude=NAME,…' (or both, separated by ';')",
        });
      }
    }
  }
  return restriction.only || restriction.exclude ? restriction : undefined;
}
