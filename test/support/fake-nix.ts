// A LocalSystem of fakes for install/uninstall and check's daemon step: files under a
// temporary root, a nix-daemon that is only a record, and a systemd whose restart starts a
// new record (as does a restart by hand).
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { DaemonProcess, Env, LocalSystem, Systemd } from "../../src/store/local-daemon.js";

export interface FakeSpec {
  /** e.g. "2.26.3"; Lix versions as "Lix 2.94.0". */
  version: string;
  /** Whether a daemon runs (by default it does), with what environment. */
  daemon?: false | { env?: Env; unit?: string };
  /** systemd manages services here (and knows nix-daemon.service). */
  systemd?: boolean;
  /** Offload's own environment (root's shell). */
  env?: Env;
}

export interface Fake {
  system: LocalSystem;
  /** systemctl commands run, in order. */
  systemctl: string[][];
  daemon(): DaemonProcess | undefined;
  /** What the printed restart command does: the daemon again, with the same environment. */
  restartByHand(): void;
}

export function fakeNix(root: string, spec: FakeSpec): Fake {
  const versionLine = spec.version.startsWith("Lix ") ? `nix (Lix, like Nix) ${spec.version.slice(4)}` : `nix-daemon (Nix) ${spec.version}`;
  const unit = spec.systemd ? "nix-daemon.service" : undefined;
  let pid = 100;
  const start = (env: Env): DaemonProcess => ({
    pid: pid++,
    argv: ["/usr/bin/nix-daemon", "--daemon"],
    executable: "/usr/bin/nix",
    replaced: false,
    env,
    uid: 0,
    startedAt: Date.now(),
    ...(unit ? { unit } : {}),
    root,
  });
  const baseEnv: Env = spec.daemon === false ? {} : { PATH: "/usr/bin:/bin", ...spec.daemon?.env };
  let daemon = spec.daemon === false ? undefined : start(baseEnv);
  const systemctl: string[][] = [];
  const systemd: Systemd = {
    hasUnit: async (name) => name === unit,
    systemctl: async (args) => {
      systemctl.push(args);
      if (args[0] === "restart") daemon = start(baseEnv);
    },
  };
  return {
    system: {
      root,
      env: spec.env ?? {},
      uid: 0,
      findDaemon: async () => daemon,
      versionOutput: async () => versionLine,
      systemd: async () => (spec.systemd ? systemd : undefined),
    },
    systemctl,
    daemon: () => daemon,
    restartByHand: () => {
      daemon = start(baseEnv);
    },
  };
}

/** Writes files (path → text) under root. */
export function writeTree(root: string, files: Record<string, string>): void {
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, file)), { recursive: true });
    writeFileSync(join(root, file), text);
  }
}

/** Every file and directory under root with its contents: equal snapshots mean byte-identical trees. */
export function snapshot(root: string): Record<string, string> {
  const result: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const file = join(dir, name);
      const relative = file.slice(root.length);
      if (statSync(file).isDirectory()) {
        result[`${relative}/`] = "";
        walk(file);
      } else {
        result[relative] = readFileSync(file, "utf8");
      }
    }
  };
  walk(root);
  return result;
}
