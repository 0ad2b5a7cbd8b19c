// What a lab is made of, from the caller's few options to a complete, validated plan:
// every builder's name, loopback address and features are fixed here, before any file exists.
import path from "node:path";
import { OffloadError } from "../errors.js";
import { DEFAULT_CONFIG_DIR } from "../files/config-dir.js";
import { isNixRelease, NIX_RELEASES, type NixRelease } from "./host.js";

export const DEFAULT_LAB_DIR = "/var/lib/offload-lab";
export const DEFAULT_BUILDERS = 2;
export const DEFAULT_FIRST_ADDRESS = "127.0.0.11";
// Not 22: a real sshd listening on 0.0.0.0:22 would keep the builders from binding.
export const DEFAULT_PORT = 2222;
export const DEFAULT_PREFIX = "lab";

/** How one builder differs from the others; builder i takes `builderSpecs[i]`. */
export interface LabBuilderSpec {
  /** Features in the machines files, also put in the builder's `system-features`. */
  features?: string[];
  /** Mandatory features (a client-side notion); the builder's `system-features` gets them too. */
  mandatoryFeatures?: string[];
  speed?: number;
  parallelBuilds?: number;
  /** Its Nix: this machine's 2.8, or 2.26/2.34 from a Debian root (scripts/roots.sh). Default LabOptions.nix. */
  nix?: NixRelease;
}

export interface LabOptions {
  /** Lab directory; no parent may be writable by group or others. Default /var/lib/offload-lab. */
  dir?: string;
  /** Number of builders. Default 2, or the length of `builderSpecs` when that is longer. */
  builders?: number;
  /** Per-builder features, speed, slots and Nix; missing entries get the defaults below. */
  builderSpecs?: LabBuilderSpec[];
  /** The Nix of builders whose spec names none. Default "2.8" (this machine's). */
  nix?: NixRelease;
  /** Loopback address of builder 0; builder i listens on the address i further. Default 127.0.0.11. */
  firstAddress?: string;
  /**
   * Each builder in a network namespace of its own, linked to this machine by a veth pair
   * (network.ts), so that tests can cut, shape or drop its traffic; its sshd then listens on
   * the address its host gets in 10.213.0.0/16 (firstAddress does not apply). Default false.
   */
  network?: boolean;
  /** Port every builder's sshd listens on. Default 2222. */
  port?: number;
  /** Builder names are `<prefix>-b<i>` (ssh aliases, key names); distinct labs need distinct prefixes. Default "lab". */
  prefix?: string;
  /**
   * The ssh client config that gets an `Include <dir>/ssh_config` line, so that Nix's own
   * build-remote (no ports in 2.8) finds the aliases. Default root's ~/.ssh/config; false: none.
   */
  rootSshConfig?: string | false;
  /** Install nix-bin and openssh-server with apt-get when missing. Default true. */
  install?: boolean;
  /** Progress lines (default: discarded). */
  log?: (line: string) => void;
}

/** One builder of a plan, everything decided. */
export interface BuilderPlan {
  index: number;
  name: string;
  address: string;
  port: number;
  system: string;
  features: string[];
  mandatoryFeatures: string[];
  speed: number;
  parallelBuilds: number;
  nix: NixRelease;
}

export interface LabPlan {
  dir: string;
  prefix: string;
  /** Builders get hosts with networks of their own; their addresses are their hosts'. */
  network: boolean;
  builders: BuilderPlan[];
}

// Defaults differ per builder so that tests can route by feature: b0 is the fast kvm machine,
// b1 only takes derivations that ask for "benchmark".
type FeatureSpec = Required<Omit<LabBuilderSpec, "nix">>;
const DEFAULT_SPECS: FeatureSpec[] = [
  { features: ["kvm", "nixos-test"], mandatoryFeatures: [], speed: 2, parallelBuilds: 2 },
  { features: ["big-parallel"], mandatoryFeatures: ["benchmark"], speed: 1, parallelBuilds: 2 },
];
const PLAIN_SPEC: FeatureSpec = { features: [], mandatoryFeatures: [], speed: 1, parallelBuilds: 2 };

const ARCHITECTURES: Record<string, string> = { x64: "x86_64", arm64: "aarch64", ia32: "i686" };

/** The Nix system of this machine (builders are loopback, so they share it). */
function localSystem(): string {
  return `${ARCHITECTURES[process.arch] ?? process.arch}-linux`;
}

function invalid(message: string, fix: string): OffloadError {
  return new OffloadError(message, { code: "lab-invalid-option", fix });
}

// Paths and names end up unquoted in sshd_config, ssh_config and nix.conf.
const SAFE_PATH = /^\/[A-Za-z0-9._/+-]*$/;
const SAFE_NAME = /^[a-z][a-z0-9-]*$/;
const FEATURE = /^[A-Za-z0-9._+-]+$/;

export function resolveLabPlan(options: LabOptions = {}): LabPlan {
  const dir = path.resolve(options.dir ?? DEFAULT_LAB_DIR);
  if (!SAFE_PATH.test(dir) || dir === "/") {
    throw invalid(
      `lab directory ${JSON.stringify(dir)} is not usable`,
      "use a directory path of letters, digits and . _ - + / only, e.g. /var/lib/offload-lab",
    );
  }
  // The real config dir is the administrator's: a lab never writes there, nor deletes it with --purge.
  if (dir === DEFAULT_CONFIG_DIR || dir.startsWith(`${DEFAULT_CONFIG_DIR}/`) || DEFAULT_CONFIG_DIR.startsWith(`${dir}/`)) {
    throw invalid(
      `a lab in ${dir} would write into ${DEFAULT_CONFIG_DIR}, which is yours`,
      `use a directory of its own, e.g. ${DEFAULT_LAB_DIR}, and import its machines.ts from ${DEFAULT_CONFIG_DIR}/machines.ts`,
    );
  }
  const prefix = options.prefix ?? DEFAULT_PREFIX;
  if (!SAFE_NAME.test(prefix)) {
    throw invalid(`lab prefix ${JSON.stringify(prefix)} is not usable`, "use lowercase letters, digits and -, starting with a letter");
  }
  const specs = options.builderSpecs ?? [];
  const count = options.builders ?? Math.max(DEFAULT_BUILDERS, specs.length);
  if (!Number.isInteger(count) || count < 1 || count > 50) {
    throw invalid(`cannot make a lab of ${count} builders`, "use --builders between 1 and 50");
  }
  const port = options.port ?? DEFAULT_PORT;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalid(`port ${port} is not a TCP port`, "use --port between 1 and 65535");
  }
  const first = parseLoopback(options.firstAddress ?? DEFAULT_FIRST_ADDRESS);
  if (first[3] + count - 1 > 254) {
    throw invalid(`${count} builders starting at ${first.join(".")} run past x.x.x.254`, "use a lower --address or fewer builders");
  }
  const system = localSystem();
  const builders = Array.from({ length: count }, (_, index): BuilderPlan => {
    const spec = { ...(DEFAULT_SPECS[index] ?? PLAIN_SPEC), nix: options.nix ?? "2.8", ...definedOnly(specs[index] ?? {}) };
    for (const feature of [...spec.features, ...spec.mandatoryFeatures]) {
      if (!FEATURE.test(feature)) throw invalid(`feature ${JSON.stringify(feature)} is not a Nix feature name`, "use letters, digits and . _ - + only");
    }
    if (!isNixRelease(spec.nix)) throw invalid(`builder ${index}: there is no lab Nix ${JSON.stringify(spec.nix)}`, `use one of ${NIX_RELEASES.join(", ")}`);
    if (!(spec.speed > 0)) throw invalid(`builder ${index}: speed must be positive`, "use a speed like 1 or 2.5");
    if (!Number.isInteger(spec.parallelBuilds) || spec.parallelBuilds < 1) {
      throw invalid(`builder ${index}: parallelBuilds must be a positive integer`, "use parallelBuilds like 1 or 2");
    }
    return {
      index,
      name: `${prefix}-b${index}`,
      address: [first[0], first[1], first[2], first[3] + index].join("."),
      port,
      system,
      features: [...spec.features],
      mandatoryFeatures: [...spec.mandatoryFeatures],
      speed: spec.speed,
      parallelBuilds: spec.parallelBuilds,
      nix: spec.nix,
    };
  });
  return { dir, prefix, network: options.network ?? false, builders };
}

function definedOnly(spec: LabBuilderSpec): LabBuilderSpec {
  return Object.fromEntries(Object.entries(spec).filter(([, value]) => value !== undefined));
}

function parseLoopback(address: string): [number, number, number, number] {
  const parts = address.split(".").map((part) => (/^\d{1,3}$/.test(part) ? Number(part) : NaN));
  if (parts.length !== 4 || parts.some((part) => !(part >= 0 && part <= 255)) || parts[0] !== 127 || parts[3] === 0) {
    throw invalid(`${JSON.stringify(address)} is not a loopback address like 127.0.0.11`, "use an address in 127.0.0.0/8 (only loopback is reachable here)");
  }
  return parts as [number, number, number, number];
}
