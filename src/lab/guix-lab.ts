// `lab up --guix`: a lab of Guix build machines (guix-host.ts: each its own /gnu/store,
// guix-daemon, signing key and sshd, from the sid root's guix 1.5.0), for offload as
// guix-daemon's hook and for Guix's own `guix offload`, side by side on the same builders:
//
//   <dir>/etc/machines.ts   offload's records (daemon: "guix", hostKey, signingKey pinned, privateKey)
//   <dir>/machines.scm      the same builders for `guix offload` (a Guix master's /etc/guix/machines.scm)
//   <dir>/guix-lab.json     what up wrote (so that a person's edit is not lost) and the builders
//
// Both log in with the lab's client key; every builder's /etc/guix/acl lists offload's Guix
// key of <dir>/etc (made here once) and, when this machine has one, /etc/guix/signing-key.pub.
// `lab down` stops the hosts like a Nix lab's (they live in <dir>/<name>).
import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { OffloadError } from "../errors.js";
import { generateGuixKeyPair, guixPublicKeyPath, guixSecretKeyPath } from "../guix/keys.js";
import { writeFileAtomic } from "../files/safety.js";
import { stopStrays } from "./down.js";
import { authorizeInGuixHost, guixMachineRecord, machinesScm, startGuixHost, type GuixHost } from "./guix-host.js";
import { ensureSshKey } from "./keys.js";
import { guixLabFile, readGuixLab, type GuixLabState } from "./lab.js";
import { labPaths } from "./layout.js";
import { assertNotEdited, writeOwnedFiles } from "./owned-files.js";
import { resolveLabPlan } from "./options.js";
import { assertRoot } from "./root.js";
import { assertSafeLabDir } from "./safe-dir.js";

export interface GuixLabOptions {
  /** Default /var/lib/offload-lab; not one holding a Nix lab. */
  dir?: string;
  /** Default 2. */
  builders?: number;
  firstAddress?: string;
  port?: number;
  prefix?: string;
  /** Slots of every builder, in both machines files. Default 1 (Guix's default). */
  parallelBuilds?: number;
  log?: (line: string) => void;
}

export interface GuixLab {
  dir: string;
  /** OFFLOAD_CONFIG_DIR for offload-guix: machines.ts and offload's Guix key. */
  configDir: string;
  machinesFile: string;
  /** For a Guix master's /etc/guix/machines.scm. */
  machinesScm: string;
  /** The SSH key both files log in with. */
  clientKey: string;
  builders: GuixHost[];
  /** Records of machinesFile, one `buildMachine({…})` each. */
  records: string[];
}

/** This machine's Guix key, authorized on the builders so that its `guix offload` can use them. */
const LOCAL_GUIX_KEY = "/etc/guix/signing-key.pub";

/** offload's Guix key pair in `configDir`, made when missing; returns the public key's text. */
async function ensureOffloadGuixKey(configDir: string): Promise<string> {
  const existing = await readFile(guixPublicKeyPath(configDir), "utf8").catch(() => undefined);
  if (existing !== undefined && (await readFile(guixSecretKeyPath(configDir)).catch(() => undefined)) !== undefined) return existing;
  const key = generateGuixKeyPair();
  await writeFileAtomic(guixSecretKeyPath(configDir), key.exportSecret(), 0o600);
  await writeFileAtomic(guixPublicKeyPath(configDir), key.publicKey.toString(), 0o644);
  return key.publicKey.toString();
}

export async function guixLabUp(options: GuixLabOptions = {}): Promise<GuixLab> {
  assertRoot("offload lab up --guix");
  const log = options.log ?? (() => undefined);
  const plan = resolveLabPlan({ dir: options.dir, builders: options.builders, firstAddress: options.firstAddress, port: options.port, prefix: options.prefix });
  const parallelBuilds = options.parallelBuilds ?? 1;
  if (!Number.isInteger(parallelBuilds) || parallelBuilds < 1) {
    throw new OffloadError(`parallelBuilds must be a positive integer, not ${parallelBuilds}`, { code: "lab-invalid-option", fix: "use --jobs 1 or 2" });
  }
  await assertSafeLabDir(plan.dir);
  const paths = labPaths(plan.dir);
  // One lab per directory: a Nix lab's machines.ts and hosts would be replaced.
  if (
    await readFile(paths.state).then(
      () => true,
      () => false,
    )
  ) {
    throw new OffloadError(`${plan.dir} holds a Nix lab (${paths.state}); a Guix lab needs a directory of its own`, {
      code: "lab-invalid-option",
      fix: `offload lab up --guix --dir ${plan.dir}-guix (or offload lab down --purge --dir ${plan.dir} first)`,
    });
  }
  const previous = await readGuixLab(plan.dir);
  await assertNotEdited(previous?.written, paths.machinesFile);
  await mkdir(paths.configDir, { recursive: true, mode: 0o755 });

  const clientPublicKey = await ensureSshKey(paths.clientKey, `${plan.prefix}-client`);
  const offloadKey = await ensureOffloadGuixKey(paths.configDir);
  const localKey = await readFile(LOCAL_GUIX_KEY, "utf8").catch(() => undefined);
  const dirs = plan.builders.map((builder) => path.join(plan.dir, builder.name));
  await stopStrays(plan.dir, dirs);
  const builders = await Promise.all(
    plan.builders.map(async (builder, index) => {
      const host = await startGuixHost({
        name: builder.name,
        dir: dirs[index]!,
        ssh: { address: builder.address, port: builder.port, authorizedKeys: [clientPublicKey] },
      });
      for (const key of [offloadKey, ...(localKey === undefined ? [] : [localKey])]) await authorizeInGuixHost(host, key);
      log(`${builder.name}: guix-daemon and sshd on ${builder.address}:${builder.port}`);
      return host;
    }),
  );
  const records = builders.map((builder) => guixMachineRecord(builder, paths.clientKey, { parallelBuilds }));
  const scm = path.join(plan.dir, "machines.scm");
  const machinesTs = [
    `// Guix builders of the offload lab in ${plan.dir}, written by offload lab up --guix: do not edit.`,
    "// Use them from /etc/offload/machines.ts:",
    `//   import lab from ${JSON.stringify(paths.machinesFile)};`,
    "//   export default [...lab, /* your machines */];",
    'import { buildMachine } from "offload";',
    "",
    "export default [",
    ...records.map((record) => `  ${record},`),
    "];",
    "",
  ].join("\n");
  const written = await writeOwnedFiles(
    new Map([
      [paths.machinesFile, machinesTs],
      [scm, machinesScm(builders, paths.clientKey, { parallelBuilds })],
    ]),
  );
  const state: GuixLabState = { builders: builders.map((builder) => ({ name: builder.name, dir: builder.dir })), written };
  await writeFileAtomic(guixLabFile(plan.dir), `${JSON.stringify(state, null, 2)}\n`, 0o644);
  return { dir: plan.dir, configDir: paths.configDir, machinesFile: paths.machinesFile, machinesScm: scm, clientKey: paths.clientKey, builders, records };
}
