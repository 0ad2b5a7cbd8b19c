// `lab up`: makes (or refreshes) a lab and leaves every builder's host and sshd running and
// verified. Keys and hosts (unless their Nix changes) survive re-runs; configs are rewritten
// (unless a person edited one: then it stops first); sshds are restarted so they read them.
// Nothing outside the lab directory is written but the Include line in root's ssh config.
import { chmod, mkdir, rm } from "node:fs/promises";
import { writeFileAtomic } from "../files/safety.js";
import { stopBuilder, stopStrays } from "./down.js";
import { ensureHost } from "./host.js";
import { ensurePackages } from "./install.js";
import { ensureSigningKey, ensureSshKey } from "./keys.js";
import type { Lab, LabBuilder } from "./lab.js";
import { readLab } from "./lab.js";
import { builderPaths, labPaths } from "./layout.js";
import { assertNotEdited, writeOwnedFiles } from "./owned-files.js";
import type { LabOptions } from "./options.js";
import { resolveLabPlan } from "./options.js";
import { acl, builderNixConf, clientSshConfig, knownHosts, machinesTs, nixMachines, sshdConfig } from "./render.js";
import { assertRoot } from "./root.js";
import { addInclude, defaultRootSshConfig, removeInclude } from "./root-ssh-config.js";
import { assertSafeLabDir } from "./safe-dir.js";
import { startSshd, stopSshd } from "./sshd.js";
import { verifyBuilder } from "./verify.js";

async function makeDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await chmod(dir, 0o755); // whatever the umask or an earlier run left
}

export async function labUp(options: LabOptions = {}): Promise<Lab> {
  assertRoot("offload lab up");
  const log = options.log ?? (() => undefined);
  const plan = resolveLabPlan(options);
  await assertSafeLabDir(plan.dir);
  const paths = labPaths(plan.dir);
  const previous = await readLab(plan.dir).catch(() => undefined);
  await assertNotEdited(previous?.written, paths.machinesFile);
  if (options.install ?? true) await ensurePackages(log);

  await makeDir(paths.dir);
  await makeDir(paths.configDir);

  const clientPublicKey = await ensureSshKey(paths.clientKey, `${plan.prefix}-client`);
  const signingKey = await ensureSigningKey(paths.signingKeySecret, paths.signingKeyPublic, `offload-${plan.prefix}-1`);
  const prepared = await Promise.all(
    plan.builders.map(async (builder): Promise<Omit<LabBuilder, "host">> => {
      const files = builderPaths(plan.dir, builder.name);
      await makeDir(files.dir);
      await makeDir(files.home);
      return {
        ...builder,
        dir: files.dir,
        nixConf: files.nixConf,
        sshdConfig: files.sshdConfig,
        pidFile: files.pidFile,
        logFile: files.logFile,
        home: files.home,
        hostKey: await ensureSshKey(files.hostKey, builder.name),
        signingKey: await ensureSigningKey(files.signingKeySecret, files.signingKeyPublic, `${builder.name}-1`),
      };
    }),
  );

  // Sessions of the previous run end, so that the new sshd_configs apply; builders this run no
  // longer has stop and lose their files, strays a lost lab.json does not list stop. Hosts of
  // builders whose Nix stays keep running: only their nix.conf is rewritten, which Nix rereads.
  const names = new Set(prepared.map((builder) => builder.name));
  for (const old of previous?.builders ?? []) {
    if (names.has(old.name)) await stopSshd(old);
    else {
      await stopBuilder(old);
      await rm(old.dir, { recursive: true, force: true });
    }
  }
  await stopStrays(
    plan.dir,
    prepared.map((builder) => builder.dir),
  );
  const builders = await Promise.all(
    prepared.map(async (builder): Promise<LabBuilder> => {
      // The lab directory holds what its sshd reads (authorized_keys, its own directory).
      const nixConf = builderNixConf({ dir: plan.dir, signingKey }, builder);
      const host = await ensureHost({ name: builder.name, nix: builder.nix, dir: builder.dir, shared: [plan.dir], nixConf, network: plan.network });
      // A networked builder is reached at its host's address (the loopback one of the plan is unused).
      return { ...builder, address: host.network?.address ?? builder.address, host };
    }),
  );
  const rootSshConfig = options.rootSshConfig === false ? null : (options.rootSshConfig ?? defaultRootSshConfig());
  const lab: Lab = { ...paths, prefix: plan.prefix, signingKey, rootSshConfig, builders, written: {} };

  lab.written = await writeOwnedFiles(
    new Map([
      ...builders.map((builder) => [builder.sshdConfig, sshdConfig(lab, builder)] as const),
      [paths.authorizedKeys, `${clientPublicKey}\n`],
      [paths.sshConfig, clientSshConfig(lab)],
      [paths.knownHosts, knownHosts(lab)],
      [paths.nixMachines, nixMachines(lab)],
      [paths.acl, acl(lab)],
      [paths.machinesFile, machinesTs(lab)],
    ]),
  );
  // Recorded before any sshd starts; `down` also finds hosts and sshds a failed `up` left unrecorded.
  await writeFileAtomic(paths.state, `${JSON.stringify(lab, null, 2)}\n`, 0o644);

  await Promise.all(
    builders.map(async (builder) => {
      await startSshd(builder, builder);
      log(`${builder.name}: Nix ${builder.nix} host, sshd listening on ${builder.address}:${builder.port}`);
    }),
  );

  if (previous?.rootSshConfig && previous.rootSshConfig !== rootSshConfig) {
    await removeInclude(previous.rootSshConfig, previous.sshConfig);
  }
  if (rootSshConfig !== null) await addInclude(rootSshConfig, paths.sshConfig);

  await Promise.all(
    builders.map(async (builder) => {
      const version = await verifyBuilder(lab, builder);
      log(`${builder.name}: ${version}, key ${builder.signingKey.split(":")[0]}`);
    }),
  );
  return lab;
}
