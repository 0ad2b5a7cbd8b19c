// Every default offload applies, in one place: the machine records' (types/index.d.ts shows
// each with its @default tag, and a test keeps the two equal) and the limits the hook and
// `offload check` share, so that they cannot disagree.
export const DEFAULTS = {
  buildMachine: {
    daemon: "nix",
    parallelBuilds: 1,
    speed: 1,
    features: [] as readonly string[],
    mandatoryFeatures: [] as readonly string[],
    overloadThreshold: 0.8,
    useSubstitutes: false,
    connectTimeout: 10,
    enabled: true,
  },
  localMachine: {
    speed: 1,
    enabled: true,
  },
  /** MiB a machine's store must have free to get a build (Guix's offload wants 100), unless $OFFLOAD_MIN_FREE_MIB says otherwise; `check` fails below it. */
  minFreeMiB: 100,
  /** Seconds a machine's clock may differ from ours before the hook warns and `check` fails. */
  maxClockSkewS: 30,
  /** Seconds a machine that could not be used is skipped, instead of retried for every derivation (unless its record changes or `check` passes). */
  failureBackoffS: 30,
  /**
   * Seconds a hook holds its answer when every slot is busy but one should free by then. A
   * postponed build is asked about again only after the daemon's poll interval (5 s), even
   * when a slot frees a moment later; the daemon waits for the answer meanwhile, as it waits
   * for Nix's own build-remote to connect.
   */
  slotWaitS: 2,
} as const;
