// The BuildDerivation command's payloads (serve protocol 8): the BasicDerivation and build
// options we send, the BuildResult we get back. Layouts follow Nix 2.8's writeDerivation
// (derivations.cc), opServe's getBuildSettings and its reply (nix-store.cc).

import type { Derivation } from "../nix/drv.js";
import type { WireReader } from "../nix/wire.js";
import { WireWriter, byteOrder } from "../nix/wire.js";

/**
 * What BuildDerivation sends of a parsed .drv. Output fields go out verbatim: Nix's
 * writeDerivation prints the same strings the .drv holds (path or "", "r:sha256"-style
 * algorithm, base16 hash or "impure").
 */
export type BasicDerivation = Pick<Derivation, "outputs" | "platform" | "builder" | "args" | "env">;

export interface BuildOptions {
  /** Seconds without log output before the remote kills the build; 0 = no limit. */
  maxSilentTime: number;
  /** Seconds the build may take in total; 0 = no limit. */
  buildTimeout: number;
  /** Bytes of log after which the build fails with LogLimitExceeded; 0 = no limit. */
  maxLogSize?: number;
  /** Keep the remote build directory of a failed build (protocol ≥ 2.7). */
  keepFailed?: boolean;
}

export const BUILD_STATUSES = [
  "Built",
  "Substituted",
  "AlreadyValid",
  "PermanentFailure",
  "InputRejected",
  "OutputRejected",
  "TransientFailure",
  "CachedFailure",
  "TimedOut",
  "MiscFailure",
  "DependencyFailed",
  "LogLimitExceeded",
  "NotDeterministic",
  "ResolvesToAlreadyValid",
  "NoSubstituters",
] as const;

export type BuildStatus = (typeof BUILD_STATUSES)[number] | "Unknown";

/** A realisation the remote reports for an output it built, keyed by its DrvOutput id ("sha256:…!out"). */
export interface BuiltOutput {
  /** Full store path (the remote sends only the base name). */
  outPath: string;
  signatures: string[];
}

export interface BuildResult {
  status: BuildStatus;
  /** The numeric status as sent, meaningful even when status is "Unknown". */
  statusCode: number;
  /** Built, Substituted, AlreadyValid or ResolvesToAlreadyValid (Nix's BuildResult::success). */
  success: boolean;
  /** Nix's error message without its ANSI colour codes. */
  errorMsg: string;
  timesBuilt: number;
  isNonDeterministic: boolean;
  /** Unix seconds; 0 when the remote did not build (e.g. AlreadyValid). */
  startTime: number;
  stopTime: number;
  builtOutputs: Map<string, BuiltOutput>;
}

/** BasicDerivation on the wire: outputs and env in name order (Nix's std::map), inputSrcs as a sorted set. */
export function writeBasicDerivation(out: WireWriter, drv: BasicDerivation, inputSrcs: Iterable<string>): void {
  const outputs = [...drv.outputs].sort(([a], [b]) => byteOrder(a, b));
  out.u64(outputs.length);
  for (const [name, output] of outputs) out.string(name).string(output.path).string(output.hashAlgo).string(output.hash);
  out.strings([...new Set(inputSrcs)].sort(byteOrder));
  out.string(drv.platform).string(drv.builder).strings(drv.args);
  const env = [...drv.env].sort(([a], [b]) => byteOrder(a, b));
  out.u64(env.length);
  for (const [key, value] of env) out.string(key).string(value);
}

/** Build settings in opServe's order; which ones the server reads depends on the protocol minor version. */
export function writeBuildOptions(out: WireWriter, options: BuildOptions, remoteMinor: number): void {
  out.u64(options.maxSilentTime).u64(options.buildTimeout);
  if (remoteMinor >= 2) out.u64(options.maxLogSize ?? 0);
  if (remoteMinor >= 3) out.u64(0).bool(false); // buildRepeat, enforceDeterminism
  if (remoteMinor >= 7) out.bool(options.keepFailed ?? false);
}

export async function readBuildResult(reader: WireReader, remoteMinor: number, storeDir: string): Promise<BuildResult> {
  const statusCode = await reader.num(undefined, "the build status");
  // Nix 2.8 formats this with terminal colours (e.g. the .drv path in magenta) even over a pipe.
  const errorMsg = (await reader.string(undefined, "the build error message")).replace(/\x1b\[[0-9;]*m/g, "");
  let timesBuilt = 0;
  let isNonDeterministic = false;
  let startTime = 0;
  let stopTime = 0;
  if (remoteMinor >= 3) {
    timesBuilt = await reader.num(undefined, "timesBuilt");
    isNonDeterministic = await reader.bool("isNonDeterministic");
    startTime = await reader.num(Number.MAX_SAFE_INTEGER, "the build start time");
    stopTime = await reader.num(Number.MAX_SAFE_INTEGER, "the build stop time");
  }
  const builtOutputs = new Map<string, BuiltOutput>();
  // Nix 2.4–2.10 test `GET_PROTOCOL_MINOR(clientVersion >= 6)`, which is 1 for any client: they send
  // this map whatever version the client claims. Servers below 2.6 (Nix ≤ 2.3) never send it.
  if (remoteMinor >= 6) {
    const count = await reader.num(undefined, "the number of built outputs");
    for (let i = 0; i < count; i++) {
      const id = await reader.string(undefined, "a built output id");
      const json = await reader.string(undefined, "a built output realisation");
      const realisation = JSON.parse(json) as { outPath?: string; signatures?: string[] };
      const outPath = realisation.outPath ?? "";
      builtOutputs.set(id, { outPath: outPath.startsWith("/") ? outPath : `${storeDir}/${outPath}`, signatures: realisation.signatures ?? [] });
    }
  }
  const status: BuildStatus = BUILD_STATUSES[statusCode] ?? "Unknown";
  const success = status === "Built" || status === "Substituted" || status === "AlreadyValid" || status === "ResolvesToAlreadyValid";
  return { status, statusCode, success, errorMsg, timesBuilt, isNonDeterministic, startTime, stopTime, builtOutputs };
}
