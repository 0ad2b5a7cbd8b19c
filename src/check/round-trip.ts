// The signed round trip of `offload check`, the hook's whole job in miniature: upload a path
// carrying a fresh nonce, signed with our key; build a derivation that reads it on the
// machine; fetch the output and verify its signature against the machine's pin or the ACL
// (only verify: nothing is imported locally).
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { BuildMachine } from "../../types/index.js";
import { OffloadError } from "../errors.js";
import { parseDerivation } from "../nix/drv.js";
import type { PublicKey, SecretKey } from "../nix/keys.js";
import { dumpPath, narHashOf } from "../nix/nar.js";
import { encodeNix32 } from "../nix/nix32.js";
import type { PathInfo } from "../nix/path-info.js";
import { verifyPathSignatures } from "../nix/signature.js";
import { DEFAULT_STORE_DIR } from "../nix/store-path.js";
import { outputFixes, pinnedBy } from "../store/machine-trust.js";
import type { ServeClient } from "../store/serve.js";
import { fetchWanted, uploadSigned } from "../store/transfer.js";

const run = promisify(execFile);
const BUILD_TIMEOUT_S = 120;

export interface RoundTrip {
  machine: BuildMachine;
  remote: ServeClient;
  /** The session's recent stderr (the test build's log). */
  stderrTail: () => string;
  system: string;
  signingKey: SecretKey;
  trustedKeys: readonly PublicKey[];
}

/** Returns the name of the key that signed the machine's output. */
export async function signedRoundTrip(trip: RoundTrip): Promise<string> {
  const nonce = `${Date.now().toString(36)}-${randomBytes(8).toString("hex")}`;
  const work = await mkdtemp(join(tmpdir(), "offload-check-"));
  try {
    const input = await uploadNonce(trip, nonce, work);
    const output = await buildReading(trip, input, nonce);
    return await fetchVerified(trip, output, nonce, work);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * A path made up here, not built: input-addressed, so a remote Nix that checks signatures
 * accepts it only for our signature (content-addressed paths would pass unsigned).
 */
async function uploadNonce(trip: RoundTrip, nonce: string, work: string): Promise<string> {
  const file = join(work, "nonce");
  await writeFile(file, `${nonce}\n`);
  const hash = encodeNix32(createHash("sha256").update(`offload-check:${nonce}`).digest().subarray(0, 20));
  const info: PathInfo = { path: `${DEFAULT_STORE_DIR}/${hash}-offload-check-${nonce}`, references: [], signatures: [], ...(await narHashOf(file)) };
  try {
    await uploadSigned(trip.remote, info, dumpPath(file), trip.signingKey);
  } catch (error) {
    if (!(error instanceof OffloadError && error.code === "remote-not-trusted")) throw error;
    throw new OffloadError(`${trip.machine.name} refused a test path signed with offload's key ${trip.signingKey.name}: its Nix does not trust that key`, {
      code: "remote-not-trusted",
      fix: `add ${trip.signingKey.publicKey.toString()} to trusted-public-keys in ${trip.machine.name}'s /etc/nix/nix.conf, or log in as root / a trusted-users member`,
      cause: error,
    });
  }
  if (!(await trip.remote.queryValidPaths([info.path])).has(info.path)) {
    throw new OffloadError(`${trip.machine.name} acknowledged the test path ${info.path} but does not have it`, {
      code: "round-trip-lost",
      fix: `look at ${trip.machine.name}'s nix-daemon log; its store may be read-only or full`,
    });
  }
  return info.path;
}

/** Instantiates (locally) and builds (remotely) a derivation that copies the nonce path. */
async function buildReading(trip: RoundTrip, input: string, nonce: string): Promise<string> {
  const expression = `derivation { name = "offload-check-${nonce}"; system = "${trip.system}"; builder = "/bin/sh"; args = [ "-c" "read nonce < ${input}; echo $nonce > $out" ]; }`;
  let drvPath: string;
  try {
    drvPath = (await run("nix-instantiate", ["--expr", expression], { timeout: 60_000 })).stdout.trim();
  } catch (error) {
    throw new OffloadError(`cannot make the test derivation locally: ${(error as { stderr?: string }).stderr?.trim() || (error as Error).message}`, {
      code: "nix-instantiate-failed",
      fix: "offload check needs a working local Nix: nix-instantiate --expr 'builtins.currentSystem'",
      cause: error,
    });
  }
  let drv;
  try {
    drv = parseDerivation(await readFile(drvPath, "utf8"), drvPath);
  } finally {
    // Read once, sent whole: the .drv is of no further use here, so each check leaves none
    // behind. It is garbage anyway (no root), so a failure to delete it is no failure.
    await run("nix-store", ["--delete", drvPath], { timeout: 30_000 }).catch(() => undefined);
  }
  const result = await trip.remote.buildDerivation(drvPath, drv, [input], { maxSilentTime: BUILD_TIMEOUT_S, buildTimeout: BUILD_TIMEOUT_S });
  if (!result.success) {
    const log = trip.stderrTail().trim().split("\n").slice(-2).join(" | ");
    throw new OffloadError(
      `the test build on ${trip.machine.name} failed (${result.status}): ${result.errorMsg.trim() || "no message"}${log ? `; log: ${log}` : ""}`,
      {
        code: "test-build-failed",
        fix: `try a trivial build on ${trip.machine.name} itself (nix-build -E 'derivation { name = "t"; system = "${trip.system}"; builder = "/bin/sh"; args = ["-c" "echo > $out"]; }'): sandbox, /bin/sh and free space are the usual suspects`,
      },
    );
  }
  return drv.outputs.get("out")!.path;
}

/** Downloads the output, checks it is what was built from our nonce, and verifies who signed it. */
async function fetchVerified(trip: RoundTrip, output: string, nonce: string, work: string): Promise<string> {
  const name = trip.machine.name;
  const [received] = await fetchWanted(trip.remote, [output], work, name, "the test build's output");
  // A file, as built; anything else (a directory) is not what was built either.
  const content = await readFile(received!.tree).catch(() => undefined);
  if (!content?.includes(`${nonce}\n`)) {
    throw new OffloadError(`the test output from ${name} does not contain the nonce it was built from`, {
      code: "round-trip-mismatch",
      fix: `do not trust ${name} until this is explained: it returned a different output than it built`,
    });
  }
  const verdict = verifyPathSignatures(received!, trip.trustedKeys, pinnedBy(trip.machine));
  if (verdict.valid) return verdict.key.name;
  const cause = verdict.code === "unsigned" ? `${name} does not sign what it builds (no secret-key-files)` : `${name}'s test output is refused`;
  throw new OffloadError(`${cause}: ${verdict.reason}`, { code: verdict.code, fix: outputFixes(trip.machine)[verdict.code] });
}
