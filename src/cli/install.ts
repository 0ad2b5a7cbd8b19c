// `offload install` / `offload uninstall`: make this machine's nix-daemon run offload's hook
// (or stop), in the file its Nix version reads it from, printing every line and file changed.
import type { Command } from "commander";
import { asOffloadError } from "../errors.js";
import { install, uninstall, type InstallEvent, type InstallOptions } from "../store/hook-install.js";
import { installGuix, uninstallGuix } from "../store/guix-install.js";
import { thisSystem } from "../store/local-daemon.js";

interface Options {
  dryRun?: boolean;
  json?: boolean;
  guix?: boolean;
}

export function registerInstall(program: Command): void {
  for (const [name, action, guixAction, description] of [
    [
      "install",
      install,
      installGuix,
      "make the local nix-daemon run offload's hook: a line in /etc/nix/nix.conf (for Nix 2.25-2.33, which ignore it there: root's ~/.config/nix/nix.conf); restarts it. --guix: guix-daemon, by GUIX=offload-guix in a systemd drop-in",
    ],
    ["uninstall", uninstall, uninstallGuix, "remove exactly what `offload install` added, and restart the nix-daemon (--guix: guix-daemon)"],
  ] as const) {
    program
      .command(name)
      .description(description)
      .option("--dry-run", "show what would change, change nothing")
      .option("--json", "print what was changed as JSON")
      .option("--guix", "for guix-daemon instead of nix-daemon")
      .action((options: Options) => run(options.guix ? guixAction : action, options));
  }
}

async function run(action: (options: InstallOptions) => Promise<void>, options: Options): Promise<void> {
  const events: InstallEvent[] = [];
  const say = (event: InstallEvent) => (options.json ? events.push(event) : process.stdout.write(`${eventText(event, options.dryRun ?? false)}\n`));
  if (options.dryRun && !options.json) process.stdout.write("dry run: nothing is changed\n");
  try {
    await action({ system: thisSystem(), dryRun: options.dryRun ?? false, say });
    if (options.json) process.stdout.write(`${JSON.stringify({ ok: true, dryRun: options.dryRun ?? false, events }, null, 2)}\n`);
  } catch (error) {
    if (!options.json) throw error;
    const failure = asOffloadError(error);
    process.stdout.write(
      `${JSON.stringify({ ok: false, dryRun: options.dryRun ?? false, events, error: { code: failure.code, message: failure.message, fix: failure.fix ?? null } }, null, 2)}\n`,
    );
    process.exitCode = failure.exitCode;
  }
}

/** "/etc/nix/nix.conf: added line 7: build-hook = …", "/root/.config/nix: created (a directory)", "would run: systemctl restart nix-daemon.service", … */
export function eventText(event: InstallEvent, dryRun: boolean): string {
  const verb = (done: string, planned: string) => (dryRun ? `would ${planned}` : done);
  switch (event.kind) {
    case "added-line":
      return `${event.file}: ${verb("added", "add")} line ${event.line}: ${event.text}`;
    case "removed-line":
      return `${event.file}: ${verb("removed", "remove")} line ${event.line}: ${event.text}`;
    case "created":
      return `${event.file}: ${verb("created", "create")} ${event.text}`;
    case "deleted":
      return `${event.file}: ${verb("deleted", "delete")} ${event.text}`;
    case "command":
      return `${verb("ran", "run")}: ${event.command}`;
    case "note":
      return event.text;
  }
}
