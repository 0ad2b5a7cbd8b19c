// The failure catalogue entries that no lower layer raises: each names the cause and the fix
// in one line. (Connection, key and serve-protocol failures come from src/remote and
// src/store with their own fixes; signature failures from store/machine-trust.ts.) `offload
// check`, `offload explain` and the hook's log all word them the same way through here.
import type { BuildMachine } from "../../types/index.js";
import { OffloadError } from "../errors.js";
import type { Decision, MachineReason, ReasonCode } from "./select.js";

/** Failures where the machine answered but the login was refused (either side): it is reachable, yet unusable. */
export function isLoginRefusal(code: string | undefined): boolean {
  return code === "host-key-mismatch" || code === "host-key-unknown" || code === "auth-refused";
}

export function overloaded(machine: BuildMachine, load: number, threshold: number): OffloadError {
  return new OffloadError(`${machine.name} is overloaded: load ${load.toFixed(2)} per CPU > overloadThreshold ${threshold}`, {
    code: "overloaded",
    fix: `wait for its builds to finish, or raise overloadThreshold for ${machine.name} in machines.ts (null ignores load)`,
  });
}

export function diskLow(machine: BuildMachine, dir: string, freeBytes: number, minimumBytes: number): OffloadError {
  return new OffloadError(`${machine.name} has only ${mebibytes(freeBytes)} free for ${dir} (minimum ${mebibytes(minimumBytes)})`, {
    code: "disk-low",
    fix: freeSpaceFix(machine),
  });
}

function freeSpaceFix(machine: BuildMachine): string {
  return machine.daemon === "guix"
    ? `free space on ${machine.name}: guix gc there`
    : `free space on ${machine.name}: nix-collect-garbage -d (or nix-store --gc) there`;
}

export function clockSkew(machine: BuildMachine, skew: number, maximum: number): OffloadError {
  const direction = skew > 0 ? "ahead of" : "behind";
  return new OffloadError(`${machine.name}'s clock is ${Math.abs(skew).toFixed(1)} s ${direction} this machine's (more than ${maximum} s)`, {
    code: "clock-skew",
    fix: `synchronise the clocks: enable NTP on both (timedatectl set-ntp true)`,
  });
}

export function nixStoreMissing(machine: BuildMachine, detail: string): OffloadError {
  return new OffloadError(`nix-store is not on the PATH of non-interactive SSH sessions on ${machine.name}${detail ? `: ${detail}` : ""}`, {
    code: "nix-store-not-found",
    fix: `install Nix on ${machine.name}, or link nix-store into /usr/local/bin there (a non-interactive ssh session does not read .profile)`,
  });
}

export function notTrusted(machine: BuildMachine, user: string, trustedUsers: string): OffloadError {
  return new OffloadError(
    `the remote Nix on ${machine.name} does not trust user ${user} (trusted-users = ${trustedUsers || "(empty)"}): it will refuse to build`,
    {
      code: "remote-not-trusted",
      fix: `add ${user} to trusted-users in ${machine.name}'s /etc/nix/nix.conf and restart its nix-daemon, or set user: "root" for ${machine.name}`,
    },
  );
}

export function systemsMissing(machine: BuildMachine, missing: readonly string[], remote: readonly string[]): OffloadError {
  return new OffloadError(`machines.ts says ${machine.name} builds ${missing.join(", ")}, but its Nix builds only ${remote.join(", ") || "nothing"}`, {
    code: "system-mismatch",
    fix: `remove ${missing.join(", ")} from systems of ${machine.name} in machines.ts, or add them to extra-platforms in its nix.conf (with binfmt emulation)`,
  });
}

export function featuresMissing(machine: BuildMachine, missing: readonly string[], remote: readonly string[]): OffloadError {
  return new OffloadError(
    `machines.ts gives ${machine.name} feature${missing.length > 1 ? "s" : ""} ${missing.join(", ")}, but its Nix's system-features are ${remote.join(", ") || "(none)"}: builds requiring ${missing.length > 1 ? "them" : "it"} fail there`,
    {
      code: "missing-feature",
      fix: `add ${missing.join(" ")} to system-features in ${machine.name}'s nix.conf if it really has ${missing.length > 1 ? "them" : "it"}, else remove ${missing.length > 1 ? "them" : "it"} from features of ${machine.name} in machines.ts`,
    },
  );
}

/** Warning: the machine could do more than machines.ts lets it. */
export function unusedCapabilities(machine: BuildMachine, systems: readonly string[], features: readonly string[]): OffloadError {
  const what = [
    ...(systems.length > 0 ? [`system ${systems.join(", ")}`] : []),
    ...(features.length > 0 ? [`feature${features.length > 1 ? "s" : ""} ${features.join(", ")}`] : []),
  ];
  return new OffloadError(`${machine.name}'s Nix has ${what.join(" and ")}, which machines.ts does not list: such builds never go there`, {
    code: "capability-unused",
    fix: `add ${[...systems, ...features].join(", ")} to ${systems.length > 0 && features.length > 0 ? "systems / features" : systems.length > 0 ? "systems" : "features"} of ${machine.name} in machines.ts if it should take them`,
  });
}

/** What to change when the selection passes over a machine (explain's "fix" column). */
export function selectionFix(code: ReasonCode, machine: BuildMachine, request: { system: string }): string | undefined {
  switch (code) {
    case "disabled":
      return `set enabled: true for ${machine.name} in machines.ts`;
    case "excluded":
      return "remove it from OFFLOAD_EXCLUDE / OFFLOAD_ONLY or the build's --builders 'offload:…'";
    case "system":
      return `if ${machine.name} builds ${request.system}, add it to systems of ${machine.name} in machines.ts`;
    case "missing-feature":
      return `if ${machine.name} has them, add them to features of ${machine.name} in machines.ts (and to system-features in its nix.conf)`;
    case "mandatory-feature":
      return `require them in the derivation (requiredSystemFeatures), or remove them from mandatoryFeatures of ${machine.name}`;
    case "slots-full":
      return `wait for a build to finish, or raise parallelBuilds of ${machine.name}`;
    case "overloaded":
      return `wait, or raise overloadThreshold for ${machine.name} in machines.ts (null ignores load)`;
    case "daemon":
      return `if ${machine.name} runs the other daemon, set daemon: "${machine.daemon === "guix" ? "nix" : "guix"}" for it in machines.ts (offload check tells which it runs)`;
    case "disk-low":
      return freeSpaceFix(machine);
    case "unreachable":
      return `offload check ${machine.name}: once it passes, or once its record in machines.ts changes, the hook tries it again (else after a 30 s back-off)`;
    case "local-better":
      return "lower speed in localMachine(), or set enabled: false there, to prefer remote machines";
    case "chosen":
    case "slower":
      return undefined;
  }
}

/** The selection's reasons, each with its fix where there is one (explain and the hook's log show the same). */
export function reasonsWithFixes(
  reasons: readonly MachineReason[],
  machines: readonly BuildMachine[],
  request: { system: string },
): (MachineReason & { fix?: string })[] {
  return reasons.map((reason) => {
    const machine = machines.find((m) => m.name === reason.machine);
    const fix = machine && selectionFix(reason.code, machine, request);
    return fix ? { ...reason, fix } : { ...reason };
  });
}

/** A decision as the hooks log it: its summary and the local machine's part, then a line per machine with its fix. */
export function decisionText(decision: Decision, machines: readonly BuildMachine[], request: { system: string }): string {
  const reasons = reasonsWithFixes(decision.reasons, machines, request).map((reason) => `  ${reasonLine(reason)}`);
  return [`offload: ${decision.summary}; ${decision.local}`, ...reasons].join("\n");
}

/** "name: detail — fix: …", the one line per machine of explain and the hook's log. */
export function reasonLine(reason: MachineReason & { fix?: string }): string {
  return `${reason.machine}: ${reason.detail}${reason.fix ? ` — fix: ${reason.fix}` : ""}`;
}

function mebibytes(bytes: number): string {
  return bytes >= 10 * 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)} GiB` : `${(bytes / 1024 ** 2).toFixed(0)} MiB`;
}
