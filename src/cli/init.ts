// `offload init [DIR]`: a commented machines.ts to start from, plus the tsconfig.json an
// editor needs to complete and check it against offload's types.
import type { Command } from "commander";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { OffloadError } from "../errors.js";
import { TYPES_ENTRY } from "../package-root.js";
import { configDir } from "../files/config-dir.js";

const TEMPLATE = `// Build machines for offload. This file is TypeScript, run as root by the Nix daemon's
// build hook, so keep it (and its directory) writable by root only.
// Check it with:   offload check --static     (add --config ${"<this file>"} elsewhere)
// Fields are documented in your editor: hover over any of them.
import { buildMachine, localMachine } from "offload";

// For a fleet: each machine's host key, from its /etc/ssh/ssh_host_ed25519_key.pub.
// const hostKeys: Record<string, string> = {
//   ruby: "ssh-ed25519 AAAA...",
//   kana: "ssh-ed25519 AAAA...",
// };

export default [
  // The local machine competes with the remote ones: with a higher speed it keeps builds
  // it has free slots for, instead of always sending them away.
  localMachine({ speed: 1 }),

  // buildMachine({
  //   name: "builder1",                 // unique: logs, offload status, --builders 'offload:only=builder1'
  //   host: "builder1.example.org",     // where to connect: host name, IP or ~/.ssh/config alias (default: name)
  //   port: 22,
  //   user: "nix",                      // root, or in trusted-users of the builder's nix.conf
  //   systems: ["x86_64-linux", "i686-linux"],
  //   hostKey: "ssh-ed25519 AAAA...",  // the machine's /etc/ssh/ssh_host_ed25519_key.pub
  //   privateKey: "/root/.ssh/id_builders",
  //   parallelBuilds: 4,
  //   speed: 2,                         // relative; fractions are fine
  //   features: ["kvm", "big-parallel"],
  //   mandatoryFeatures: [],            // only take builds that require all of these
  //   overloadThreshold: 0.8,           // skip when loadavg/CPUs is above; null ignores load
  //   signingKey: "builder1-1:...",     // its nix-store --generate-binary-cache-key public key
  // }),

  // A fleet from the list above:
  // ...Object.entries(hostKeys).map(([name, hostKey]) =>
  //   buildMachine({ name, user: "nix", systems: ["x86_64-linux"], hostKey })),
];
`;

export function registerInit(program: Command): void {
  program
    .command("init [dir]")
    .description("write a commented machines.ts and the tsconfig.json editors need (default dir: /etc/offload)")
    .option("--force", "overwrite an existing machines.ts")
    .action((dir: string | undefined, options: { force?: boolean }) => {
      const target = resolve(dir ?? configDir());
      const machinesFile = join(target, "machines.ts");
      if (existsSync(machinesFile) && !options.force) {
        throw new OffloadError(`${machinesFile} already exists`, { code: "exists", fix: "edit it, or run `offload init --force` to replace it" });
      }
      mkdirSync(target, { recursive: true, mode: 0o755 });
      writeFileSync(join(target, "tsconfig.json"), `${JSON.stringify(editorConfig(), null, 2)}\n`, { mode: 0o644 });
      writeFileSync(machinesFile, TEMPLATE, { mode: 0o644 });
      process.stdout.write(
        `wrote ${machinesFile} and ${join(target, "tsconfig.json")}\ncheck it with: offload check --static${dir ? ` --config ${machinesFile}` : ""}\n`,
      );
    });
}

/** The compiler settings offload checks configs with, pointing editors at offload's own types. */
function editorConfig() {
  const nodeTypes = dirname(dirname(createRequire(import.meta.url).resolve("@types/node/package.json")));
  return {
    compilerOptions: {
      strict: true,
      noEmit: true,
      target: "ES2022",
      module: "ESNext",
      moduleResolution: "Bundler",
      allowImportingTsExtensions: true,
      lib: ["ES2023"],
      types: ["node"],
      typeRoots: [nodeTypes],
      paths: { offload: [TYPES_ENTRY] },
    },
    include: ["*.ts"],
  };
}
