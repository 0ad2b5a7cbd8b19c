// Whose signature makes a machine's output acceptable, and what to do when it is missing or
// wrong: the hook (before importing outputs) and `offload check` (its test build) ask the
// same question and must give the same answer.
import type { BuildMachine } from "../../types/index.js";
import { OffloadError } from "../errors.js";
import { parseGuixPublicKey, type GuixPublicKey } from "../guix/keys.js";
import { parsePublicKey, type PublicKey } from "../nix/keys.js";
import type { GuixLandOptions } from "./guix-land.js";
import type { VerifiedImportOptions } from "./import-verified.js";

/** Only the machine's pinned signing key if it has one, else every ACL key; never nothing. */
export function machineTrustedKeys(machine: BuildMachine, acl: readonly PublicKey[]): PublicKey[] {
  if (machine.signingKey) return [parsePublicKey(machine.signingKey)];
  if (acl.length > 0) return [...acl];
  throw new OffloadError(`no key is trusted to sign outputs from ${machine.name}: the ACL is empty and machines.ts pins no signingKey`, {
    code: "no-trusted-keys",
    fix: `offload authorize <${machine.name}'s public signing key file>, or set signingKey: "name:base64" for ${machine.name}`,
  });
}

/** The machine's name when its outputs must carry its pinned key (not any ACL key): messages say so. */
export function pinnedBy(machine: BuildMachine): string | undefined {
  return machine.signingKey ? machine.name : undefined;
}

/** The fix for each way a machine's output can fail verification. */
export function outputFixes(machine: BuildMachine): VerifiedImportOptions["fixes"] {
  const keyFix = machine.signingKey
    ? `the outputs must be signed by ${machine.signingKey.split(":")[0]} (signingKey of ${machine.name}): check secret-key-files in ${machine.name}'s nix.conf`
    : `if ${machine.name}'s key is trustworthy: offload authorize <its public key file> (or set signingKey for ${machine.name} in machines.ts)`;
  return {
    unsigned: `make ${machine.name} sign what it builds: set secret-key-files = /etc/nix/signing-key.sec in its nix.conf (nix-store --generate-binary-cache-key), then authorize its public key here`,
    "unknown-key": keyFix,
    "invalid-signature": `do not trust ${machine.name} until this is explained: the output does not match its signature (tampered or corrupted)`,
    "duplicate-path": "this is a bug in the machine's reply; run the build again",
    "reference-order": "this is a bug in the machine's reply; run the build again",
    "missing-reference": `${machine.name}'s output refers to a path that is neither an input nor an output of the build; check the derivation`,
  };
}

/** The same for a Guix machine: its pinned Guix key if it has one, else offload's Guix ACL; never nothing. */
export function guixMachineTrustedKeys(machine: BuildMachine, acl: readonly GuixPublicKey[]): GuixPublicKey[] {
  if (machine.signingKey) return [parseGuixPublicKey(machine.signingKey, `signingKey of ${machine.name}`)];
  if (acl.length > 0) return [...acl];
  throw new OffloadError(`no key is trusted to sign outputs from ${machine.name}: offload's Guix ACL is empty and machines.ts pins no signingKey`, {
    code: "no-trusted-keys",
    fix: `offload authorize --guix <${machine.name}'s /etc/guix/signing-key.pub>, or set signingKey for ${machine.name} to that file's text`,
  });
}

/** The fix for each way a Guix machine's output (or check's round trip) can fail verification. */
export function guixOutputFixes(machine: BuildMachine): GuixLandOptions["fixes"] {
  const keyFix = machine.signingKey
    ? `the outputs must be signed by the signingKey of ${machine.name}: compare it with ${machine.name}'s /etc/guix/signing-key.pub`
    : `if ${machine.name}'s key is trustworthy: offload authorize --guix <its /etc/guix/signing-key.pub> (or set signingKey for ${machine.name} in machines.ts)`;
  return {
    unsigned: `${machine.name}'s guix-daemon did not sign its export: check /etc/guix/signing-key.sec there (guix archive --generate-key)`,
    "corrupt-signature": `do not trust ${machine.name} until this is explained: its signature is damaged`,
    "unauthorized-key": keyFix,
    "hash-mismatch": `do not trust ${machine.name} until this is explained: the output does not match its signature (tampered or corrupted)`,
    "invalid-signature": `do not trust ${machine.name} until this is explained: the output does not match its signature (tampered or corrupted)`,
    "unexpected-path": `${machine.name} sent other paths than the build's outputs: do not trust it until this is explained`,
  };
}
