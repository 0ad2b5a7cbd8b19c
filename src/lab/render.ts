// The text of every generated file of a lab. Pure functions of the Lab, so running `up`
// again writes the same bytes.
import type { Lab, LabBuilder } from "./lab.js";

export function sshdConfig(lab: Lab, builder: LabBuilder): string {
  return [
    `# ${builder.name} of the offload lab in ${lab.dir} (written by offload lab up)`,
    `ListenAddress ${builder.address}`,
    `Port ${builder.port}`,
    `HostKey ${builder.dir}/ssh_host_ed25519_key`,
    `PidFile ${builder.pidFile}`,
    "PermitRootLogin prohibit-password",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    `AuthorizedKeysFile ${lab.authorizedKeys}`,
    // Its own empty HOME keeps root's ~/.bashrc of this machine (which bash reads for every
    // ssh command) out: here it runs pyenv, which costs ~0.2 s per command and piles up under load.
    `SetEnv HOME=${builder.home}`,
    // Benchmarks open many connections at once; the default (10:30:100) drops some early.
    "MaxStartups 64:30:128",
    "PrintMotd no",
    "",
  ].join("\n");
}

/** The builder's lines of its host's /etc/nix/nix.conf (after those every host has). */
export function builderNixConf(lab: Pick<Lab, "dir" | "signingKey">, builder: Omit<LabBuilder, "host">): string[] {
  const systemFeatures = [...new Set([...builder.features, ...builder.mandatoryFeatures])];
  return [
    `# ${builder.name} of the offload lab in ${lab.dir} (written by offload lab up)`,
    `secret-key-files = ${builder.dir}/signing-key.sec`,
    `trusted-public-keys = ${lab.signingKey} ${builder.signingKey}`,
    `system-features = ${systemFeatures.join(" ")}`,
    `max-jobs = ${builder.parallelBuilds}`,
  ];
}

/**
 * One builder's ssh_config block: reached at `host`:`port` (its own address, or a relay in
 * front of it), logging in with the lab's key, its host key looked up by its name.
 */
export function sshHostBlock(lab: Pick<Lab, "clientKey" | "knownHosts">, name: string, host: string, port: number): string {
  return [
    `Host ${name}`,
    `  HostName ${host}`,
    `  Port ${port}`,
    "  User root",
    `  IdentityFile ${lab.clientKey}`,
    "  IdentitiesOnly yes",
    // Host keys are looked up by alias: Nix's build-remote writes its own known_hosts line
    // for the machines-file host name ("lab-b0"), which must match too.
    `  HostKeyAlias ${name}`,
    `  UserKnownHostsFile ${lab.knownHosts}`,
    "  StrictHostKeyChecking yes",
    "  BatchMode yes",
    "",
  ].join("\n");
}

export function clientSshConfig(lab: Lab): string {
  const blocks = lab.builders.map((builder) => sshHostBlock(lab, builder.name, builder.address, builder.port));
  return [`# Builders of the offload lab in ${lab.dir} (written by offload lab up)`, "", ...blocks].join("\n");
}

/** Each host key under the alias (for ssh_config) and as [address]:port (for plain ssh -p). */
export function knownHosts(lab: Lab): string {
  return lab.builders.map((builder) => `${builder.name},[${builder.address}]:${builder.port} ${builder.hostKey}\n`).join("");
}

export function acl(lab: Lab): string {
  return [
    `# Builders of the offload lab in ${lab.dir}: outputs signed by these keys are imported.`,
    ...lab.builders.map((builder) => builder.signingKey),
    "",
  ].join("\n");
}

function stringList(items: readonly string[]): string {
  return `[${items.map((item) => JSON.stringify(item)).join(", ")}]`;
}

export function machinesTs(lab: Lab): string {
  const records = lab.builders.map((builder) =>
    [
      `  // ${builder.name}: Nix ${builder.nix}, sshd on ${builder.address}:${builder.port}`,
      "  buildMachine({",
      `    name: ${JSON.stringify(builder.address)},`,
      `    port: ${builder.port},`,
      `    user: "root",`,
      `    systems: [${JSON.stringify(builder.system)}],`,
      `    hostKey: ${JSON.stringify(builder.hostKey)},`,
      `    privateKey: ${JSON.stringify(lab.clientKey)},`,
      `    parallelBuilds: ${builder.parallelBuilds},`,
      `    speed: ${builder.speed},`,
      `    features: ${stringList(builder.features)},`,
      `    mandatoryFeatures: ${stringList(builder.mandatoryFeatures)},`,
      // Loopback builders all share this machine's CPUs: its load says nothing about one builder.
      "    overloadThreshold: null,",
      `    signingKey: ${JSON.stringify(builder.signingKey)},`,
      "  }),",
    ].join("\n"),
  );
  return [
    `// The builders of the offload lab in ${lab.dir}, written by \`offload lab up\`, which rewrites`,
    "// it (and refuses to, once edited): change nothing here. To use them beside your own machines,",
    "// in /etc/offload/machines.ts:",
    `//   import lab from ${JSON.stringify(lab.machinesFile)};`,
    "//   export default [...lab, /* your machines */];",
    'import { buildMachine } from "offload";',
    "",
    "export default [",
    ...records,
    "];",
    "",
  ].join("\n");
}

/**
 * The same machines for Nix's own build-remote. Nix 2.8 URIs have no port, so hosts are
 * the ssh_config aliases; the speed factor must be an integer there.
 */
export function nixMachines(lab: Lab): string {
  const list = (items: readonly string[]) => (items.length > 0 ? items.join(",") : "-");
  return lab.builders
    .map(
      (builder) =>
        [
          `ssh://${builder.name}`,
          builder.system,
          lab.clientKey,
          builder.parallelBuilds,
          Math.max(1, Math.round(builder.speed)),
          list(builder.features),
          list(builder.mandatoryFeatures),
          Buffer.from(`${builder.hostKey}\n`).toString("base64"),
        ].join(" ") + "\n",
    )
    .join("");
}
