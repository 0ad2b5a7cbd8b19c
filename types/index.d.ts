// Types of the `offload` module as seen from /etc/offload/machines.ts.
// This file is the single definition of the machine records: the type checker checks
// configs against it, editors complete from it, and offload's own sources import it.

/** System types editors offer; any other `<arch>-<os>` string is accepted too. */
export type KnownSystem =
  | "x86_64-linux"
  | "aarch64-linux"
  | "i686-linux"
  | "armv7l-linux"
  | "armv6l-linux"
  | "riscv64-linux"
  | "powerpc64le-linux"
  | "x86_64-darwin"
  | "aarch64-darwin"
  | "x86_64-freebsd";

/**
 * A Nix system type, `<arch>-<os>`, e.g. `"x86_64-linux"` or `"aarch64-darwin"`. Known ones
 * complete in editors; any string type-checks (`(string & {})` keeps the completions), so
 * systems computed at run time, from tables, host lists or the environment, need no casts.
 * `offload check --static` rejects a malformed value at its file:line.
 */
export type NixSystem = KnownSystem | (string & {});

/** Features Nix and nixpkgs use (`requiredSystemFeatures`); any other name is accepted too. */
export type SystemFeature =
  "kvm" | "big-parallel" | "benchmark" | "nixos-test" | "uid-range" | "recursive-nix" | "ca-derivations" | "apple-virt" | (string & {});

/** What you write for one remote build machine. Only `name` and `systems` are required. */
export interface BuildMachineOptions {
  /**
   * The machine's name: unique, shown in logs, `offload status`, `check` and `explain`,
   * and what `--builders 'offload:only=NAME'` refers to. Without `host`, also where to
   * connect.
   */
  name: string;
  /**
   * Where to connect: a host name, IP address, or a `Host` alias from root's
   * `~/.ssh/config` (whose `HostName`, `Port`, `User` and `IdentityFile` are then
   * honoured). Lets a machine have a short name apart from its address.
   * @default the `name`
   */
  host?: string;
  /**
   * SSH port.
   * @default the `Port` of an ~/.ssh/config alias, else 22
   */
  port?: number;
  /**
   * The daemon the machine builds with: `"nix"` (offload talks to its `nix-store --serve`)
   * or `"guix"` (its guix-daemon, reached through its socket over SSH, as `guix offload`
   * does). A Nix daemon's hook offers builds only to `"nix"` machines, guix-daemon's only
   * to `"guix"` ones; `offload check` says when a machine runs the other daemon.
   * @default "nix"
   */
  daemon?: "nix" | "guix";
  /**
   * SSH user on the remote machine.
   * @default the alias's `User`, else "root"
   */
  user?: string;
  /**
   * Nix system types this machine builds, e.g. `["x86_64-linux", "i686-linux"]`.
   * Non-empty.
   */
  systems: readonly NixSystem[];
  /**
   * The machine's SSH host public key, one OpenSSH line as in its
   * `/etc/ssh/ssh_host_ed25519_key.pub`: `"ssh-ed25519 AAAA… comment"`. Connections
   * presenting any other key are refused.
   * @default root's known_hosts files decide (an unknown host is refused, never trusted on first use)
   */
  hostKey?: string;
  /**
   * Path of the SSH private key used to log in (no passphrase; must not be readable
   * by group or others).
   * @default the alias's `IdentityFile`, else ~/.ssh/id_ed25519 or ~/.ssh/id_rsa of the user running the daemon
   */
  privateKey?: string;
  /**
   * How many builds may run on this machine at once. Positive integer.
   * @default 1
   */
  parallelBuilds?: number;
  /**
   * Relative speed; among machines with free slots the fastest (after load) wins.
   * Positive, may be fractional.
   * @default 1
   */
  speed?: number;
  /**
   * System features this machine supports, e.g. `["kvm", "big-parallel", "benchmark"]`.
   * A derivation with `requiredSystemFeatures` only goes to machines that have them all.
   * @default []
   */
  features?: readonly SystemFeature[];
  /**
   * Features a derivation must require to be built here: the machine only takes
   * derivations whose `requiredSystemFeatures` include every one of these (Nix's rule).
   * They count as supported features too.
   * @default []
   */
  mandatoryFeatures?: readonly SystemFeature[];
  /**
   * Normalized load (1-minute load average divided by CPU count, less the share of
   * offload's own builds there) above which the machine is used only when no other
   * machine and not the local one can take the build now. In (0, 1]; `null` ignores load.
   * @default 0.8
   */
  overloadThreshold?: number | null;
  /**
   * The Nix store to use on the remote machine, passed as `--store` to its
   * `nix-store --serve` (e.g. a chroot store `"/srv/nix-chroot"`). For a Guix machine:
   * its guix-daemon's socket (Guix's `daemon-socket`).
   * @default its normal store; for Guix "/var/guix/daemon-socket/socket"
   */
  remoteStore?: string;
  /**
   * Public key that must have signed every output this machine sends back. A Nix
   * machine's is `name:base64`, as written by `nix-store --generate-binary-cache-key`; a
   * Guix machine's is the text of its /etc/guix/signing-key.pub,
   * `(public-key (ecc (curve Ed25519) (q #…#)))`.
   * @default any key in /etc/offload/acl (Nix) or /etc/offload/guix-acl (Guix)
   */
  signingKey?: string;
  /**
   * Let the remote substitute missing inputs from its own caches (Nix's builders-use-substitutes).
   * @default false
   */
  useSubstitutes?: boolean;
  /**
   * Seconds to wait for TCP + SSH connection setup.
   * @default 10
   */
  connectTimeout?: number;
  /**
   * `false` keeps the record but never offloads to it.
   * @default true
   */
  enabled?: boolean;
}

/** What you write for the local machine so it competes with remote machines in scheduling. */
export interface LocalMachineOptions {
  /**
   * Relative speed of this machine, on the same scale as the remote machines' `speed`.
   * @default 1
   */
  speed?: number;
  /**
   * System features of the local machine.
   * @default the daemon's `system-features`
   */
  features?: readonly SystemFeature[];
  /**
   * `false`: never prefer building locally over offloading.
   * @default true
   */
  enabled?: boolean;
}

/** A remote build machine after defaults have been applied. */
export interface BuildMachine {
  readonly kind: "build-machine";
  readonly name: string;
  /** Where to connect (the name when not given). */
  readonly host: string;
  readonly port?: number;
  readonly daemon: "nix" | "guix";
  readonly user?: string;
  readonly systems: readonly NixSystem[];
  readonly hostKey?: string;
  readonly privateKey?: string;
  readonly parallelBuilds: number;
  readonly speed: number;
  readonly features: readonly string[];
  readonly mandatoryFeatures: readonly string[];
  readonly overloadThreshold: number | null;
  readonly remoteStore?: string;
  readonly signingKey?: string;
  readonly useSubstitutes: boolean;
  readonly connectTimeout: number;
  readonly enabled: boolean;
}

/** The local machine record after defaults have been applied. */
export interface LocalMachine {
  readonly kind: "local-machine";
  readonly speed: number;
  readonly features?: readonly string[];
  readonly enabled: boolean;
}

/** Any record a machines.ts may export. */
export type MachineRecord = BuildMachine | LocalMachine;

/** Declares a remote build machine. */
export declare function buildMachine(options: BuildMachineOptions): BuildMachine;

/** Declares how the local machine competes with remote ones (at most one per config). */
export declare function localMachine(options?: LocalMachineOptions): LocalMachine;
