// An example for every command's --help, in one table so they read alike and a command
// without one is noticed (test/cli-help.test.ts). A command whose module adds its own
// text after the help keeps it.
import type { Command } from "commander";
import type { EventEmitter } from "node:events";

/** Keyed by the command's path, e.g. "lab up"; "" is `offload` itself. */
const EXAMPLES: Record<string, string[]> = {
  "": ["offload init && $EDITOR /etc/offload/machines.ts && offload check --static", "offload import /etc/nix/machines --out /etc/offload/machines.ts"],
  init: [
    "offload init                      # /etc/offload/machines.ts and tsconfig.json",
    "offload init ~/offload-config      # elsewhere, then: offload check --static --config ~/offload-config/machines.ts",
  ],
  install: ["offload install --dry-run          # show the line and the file it goes in, change nothing"],
  uninstall: ["offload uninstall"],
  import: [
    "offload import /etc/nix/machines --out /etc/offload/machines.ts",
    "nix eval --json .#nixosConfigurations.$(hostname).config.nix.buildMachines | offload import - --ssh-config /etc/ssh/ssh_config --known-hosts /etc/ssh/ssh_known_hosts",
    "offload import /etc/guix/machines.scm > machines.ts",
  ],
  export: ["offload export --nix-machines > /etc/nix/machines", "offload export --nixos --nix-version 2.31 > build-machines.nix"],
  check: ["offload check --static             # the config only", "offload check 'builder-0[12]'      # end to end, these machines only"],
  status: ["offload status --watch"],
  explain: ["offload explain --system aarch64-linux --features big-parallel", "offload explain --drv /nix/store/…-hello-2.12.drv --json"],
  keygen: ["offload keygen --name $(hostname)-1", "offload keygen --guix | ssh guix-host guix archive --authorize"],
  authorize: [
    "offload authorize builder1-signing-key.pub",
    "ssh builder1 cat /etc/offload/signing-key.pub | offload authorize",
    "ssh guix-host cat /etc/guix/signing-key.pub | offload authorize --guix",
  ],
  deauthorize: ["offload deauthorize builder1-1"],
  acl: ["offload acl"],
  archive: ["offload archive export -r /nix/store/…-hello-2.12 > hello.nar && offload archive import < hello.nar"],
  "archive export": ["offload archive export --recursive /nix/store/…-hello-2.12 > hello.nar"],
  "archive import": [
    "ssh builder1 offload archive export -r /nix/store/…-hello-2.12 | offload archive import",
    "ssh guix-host guix archive --export -r /gnu/store/…-hello-2.12 | offload archive import --guix",
  ],
  lab: ["offload lab up --builders 3 && offload check && offload lab down"],
  "lab up": ['offload lab up --builder "b0 features=kvm speed=2" --builder "b1 nix=2.34"'],
  "lab down": ["offload lab down --purge"],
  "lab status": ["offload lab status --json"],
  agent: ["offload agent --idle 300"],
};

export function addExamples(command: Command, path: string[] = []): void {
  const key = path.join(" ");
  const examples = EXAMPLES[key];
  // Commander's Command is an EventEmitter (addHelpText listens for "afterHelp"); its typings omit that.
  if (examples && (command as unknown as EventEmitter).listenerCount("afterHelp") === 0) {
    command.addHelpText("after", `\nExample${examples.length > 1 ? "s" : ""}:\n${examples.map((line) => `  $ ${line}`).join("\n")}`);
  }
  for (const sub of command.commands) addExamples(sub, [...path, sub.name()]);
}
