// buildMachine() and localMachine(): what a machines.ts calls. They run inside the
// evaluated config, so they never throw: they apply defaults, keep the options exactly as
// written (validate.ts checks those) and remember where in the config they were called.
import { DEFAULTS } from "../defaults.js";
import type { BuildMachine, BuildMachineOptions, LocalMachine, LocalMachineOptions } from "../../types/index.js";

/** Marks records made by this module; a global symbol so the bundled copy inside a config matches the host's. */
export const RECORD = Symbol.for("offload.machine-record");

/** Where a record was created, as V8 reports it (a position in the evaluated bundle). */
export interface CallSite {
  file: string;
  line: number; // 1-based
  column: number; // 1-based
}

export interface RecordOrigin {
  options: unknown;
  site?: CallSite;
}

type Branded<T> = T & { readonly [RECORD]: RecordOrigin };

export function buildMachine(options: BuildMachineOptions): BuildMachine {
  const o = (typeof options === "object" && options !== null ? options : {}) as Partial<BuildMachineOptions>;
  const record: Branded<BuildMachine> = {
    kind: "build-machine",
    name: o.name as string,
    host: o.host ?? (o.name as string),
    port: o.port,
    daemon: o.daemon ?? DEFAULTS.buildMachine.daemon,
    user: o.user,
    systems: o.systems as BuildMachine["systems"],
    hostKey: o.hostKey,
    privateKey: o.privateKey,
    parallelBuilds: o.parallelBuilds ?? DEFAULTS.buildMachine.parallelBuilds,
    speed: o.speed ?? DEFAULTS.buildMachine.speed,
    features: o.features ?? DEFAULTS.buildMachine.features,
    mandatoryFeatures: o.mandatoryFeatures ?? DEFAULTS.buildMachine.mandatoryFeatures,
    overloadThreshold: o.overloadThreshold === undefined ? DEFAULTS.buildMachine.overloadThreshold : o.overloadThreshold,
    remoteStore: o.remoteStore,
    signingKey: o.signingKey,
    useSubstitutes: o.useSubstitutes ?? DEFAULTS.buildMachine.useSubstitutes,
    connectTimeout: o.connectTimeout ?? DEFAULTS.buildMachine.connectTimeout,
    enabled: o.enabled ?? DEFAULTS.buildMachine.enabled,
    [RECORD]: { options, site: callerOf(buildMachine) },
  };
  return record;
}

export function localMachine(options: LocalMachineOptions = {}): LocalMachine {
  const o = (typeof options === "object" && options !== null ? options : {}) as Partial<LocalMachineOptions>;
  const record: Branded<LocalMachine> = {
    kind: "local-machine",
    speed: o.speed ?? DEFAULTS.localMachine.speed,
    features: o.features,
    enabled: o.enabled ?? DEFAULTS.localMachine.enabled,
    [RECORD]: { options, site: callerOf(localMachine) },
  };
  return record;
}

export function originOf(value: unknown): RecordOrigin | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  return (value as { [RECORD]?: RecordOrigin })[RECORD];
}

/** The position of the call to `fn`, read from V8's structured stack (no string parsing). */
function callerOf(fn: (...args: never[]) => unknown): CallSite | undefined {
  const saved = Error.prepareStackTrace;
  try {
    Error.prepareStackTrace = (_error, frames) => frames;
    const holder: { stack?: NodeJS.CallSite[] } = {};
    Error.captureStackTrace(holder, fn);
    const frame = holder.stack?.[0];
    const file = frame?.getFileName();
    const line = frame?.getLineNumber();
    const column = frame?.getColumnNumber();
    return file && line && column ? { file, line, column } : undefined;
  } finally {
    Error.prepareStackTrace = saved;
  }
}
