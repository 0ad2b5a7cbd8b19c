// `lab up`: makes (or refreshes) a lab and leaves every builder's sshd running and verified.
// Keys survive re-runs; configs are rewritten; sshds are restarted so they read them.
import { chmod, mkdir, rm } from "node:fs/promises";
import { writeFileAtomic } from "../store/config-dir.js";
import { ensurePackages } from "./install.js";
import { ensureSigningKey, ensureSshKey } from "./keys.js";
import type { Lab, LabBuilder } from "./lab.js";
import { readLab } from "./lab.js";
import { builderPaths, labPaths } from "./layout.js";
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
  if (options.install ?? true) await ensurePackages(log);

  const paths = labPaths(plan.dir);
  const previous = await readLab(plan.dir).catch(() => undefined);
  await makeDir(paths.dir);
  await makeDir(paths.configDir);

  const clientPublicKey = await ensureSshKey(paths.clientKey, `${plan.prefix}-client`);
  const signingKey = await ensureSigningKey(paths.signingKeySecret, paths.signingKeyPublic, `offload-${plan.prefix}-1`);
  const builders = await Promise.all(
    plan.builders.map(async (builder): Promise<LabBuilder> => {
      const files = builderPaths(plan.dir, builder.name);
      await makeDir(files.dir);
      await makeDir(files.home);
      return {
        ...builder,
        dir: files.dir,
        storeDir: files.storeDir,
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
  const rootSshConfig = options.rootSshConfig === false ? null : (options.rootSshConfig ?? defaultRootSshConfig());
  const lab: Lab = { ...paths, prefix: plan.prefix, signingKey, rootSshConfig, builders };

  for (const builder of builders) {
    await writeFileAtomic(builder.nixConf, builderNixConf(lab, builder), 0o644);
    await writeFileAtomic(builder.sshdConfig, sshdConfig(lab, builder), 0o644);
  }
  await writeFileAtomic(paths.authorizedKeys, `${clientPublicKey}\n`, 0o644);
  await writeFileAtomic(paths.sshConfig, clientSshConfig(lab), 0o644);
  await writeFileAtomic(paths.knownHosts, knownHosts(lab), 0o644);
  await writeFileAtomic(paths.nixMachines, nixMachines(lab), 0o644);
  await writeFileAtomic(paths.acl, acl(lab), 0o644);
  await writeFileAtomic(paths.machinesFile, machinesTs(lab), 0o644);
  // Recorded before any sshd starts, so that `down` can clean up after a failed `up`.
  await writeFileAtomic(paths.state, `${JSON.stringify(lab, null, 2)}\n`, 0o644);

  // Builders of the previous run that this one no longer has: stop them and drop their files.
  const names = new Set(builders.map((builder) => builder.name));
  for (const old of previous?.builders ?? []) {
    await stopSshd(old);
    if (!names.has(old.name)) await rm(old.dir, { recursive: true, force: true });
  }
  await Promise.all(
    builders.map(async (builder) => {
      await stopSshd(builder);
      await startSshd(builder, builder);
      log(`${builder.name}: sshd listening on ${builder.address}:${builder.port}`);
    }),
  );

  if (previous?.rootSshConfig && previous.rootSshConfig !== rootSshConfig) {
    await removeInclude(previous.rootSshConfig, previous.sshConfig);
  }
  if (rootSshConfig !== null) await addInclude(rootSshConfig, paths.sshConfig);

  await Promise.all(
    builders.map(async (builder) => {
      const version = await verifyBuilder(lab, builder);
      log(`${builder.name}: ${version}, store ${builder.storeDir}, key ${builder.signingKey.split(":")[0]}`);
    }),
  );
  return lab;
}
