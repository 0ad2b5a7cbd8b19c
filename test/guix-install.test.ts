// `offload install --guix` / `uninstall --guix` against a fake machine: a /proc with a
// guix-daemon in it and a systemd that, on restart, starts a new daemon with the environment
// its drop-ins give (as the real one does). No systemd runs here; the real guix-daemon's
// side (GUIX=offload-guix making it run offload) is test/guix-hook-e2e.test.ts.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { InstallEvent } from "../src/store/hook-install.js";
import { GUIX_DROP_IN, guixDropIn, installGuix, uninstallGuix, type GuixInstallOptions } from "../src/store/guix-install.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const HOOK = "/opt/offload/bin/offload-guix";
let dir: string;
beforeEach(() => {
  dir = makeSafeDir("guix-install");
});
afterEach(() => removeDir(dir));

/** A fake machine: its root, its /proc with one guix-daemon (and a worker of it), and its systemd. */
function machine(spec: { systemd?: boolean; args?: string[]; env?: string[] } = {}) {
  const root = join(dir, "root");
  const proc = join(dir, "proc");
  mkdirSync(root, { recursive: true });
  let pid = 100;
  const calls: string[] = [];
  const startDaemon = (env: string[]) => {
    rmSync(proc, { recursive: true, force: true });
    for (const [id, parent] of [
      [pid, 1],
      [pid + 1, pid],
    ] as const) {
      mkdirSync(join(proc, String(id)), { recursive: true });
      writeFileSync(join(proc, String(id), "comm"), "guix-daemon\n");
      writeFileSync(join(proc, String(id), "stat"), `${id} (guix-daemon) S ${parent} ${id} ${id} 0 -1`);
      writeFileSync(join(proc, String(id), "cmdline"), ["/usr/bin/guix-daemon", ...(spec.args ?? ["--build-users-group=guixbuild"]), ""].join("\0"));
      writeFileSync(join(proc, String(id), "environ"), [...env, ""].join("\0"));
    }
  };
  startDaemon(spec.env ?? ["PATH=/usr/bin"]);
  const system: GuixInstallOptions["system"] = {
    root,
    uid: 0,
    systemd: async () =>
      spec.systemd === false
        ? undefined
        : {
            hasUnit: async (unit) => unit === "guix-daemon.service",
            systemctl: async (args) => {
              calls.push(args.join(" "));
              if (args[0] !== "restart") return;
              const dropIn = join(root, GUIX_DROP_IN);
              const guix = existsSync(dropIn) ? /^Environment=(GUIX=.*)$/m.exec(readFileSync(dropIn, "utf8"))?.[1] : undefined;
              pid += 10;
              startDaemon(["PATH=/usr/bin", ...(guix ? [guix] : [])]);
            },
          },
  };
  const events: InstallEvent[] = [];
  const options: GuixInstallOptions = { system, proc, hook: HOOK, say: (event) => events.push(event), restartWaitMs: 1000 };
  return { root, proc, calls, events, options };
}

test("install writes offload's drop-in, reloads and restarts guix-daemon, and sees the new daemon run offload; again, nothing changes", async () => {
  const m = machine();
  await installGuix(m.options);
  expect(readFileSync(join(m.root, GUIX_DROP_IN), "utf8")).toBe(guixDropIn(HOOK));
  expect(guixDropIn(HOOK)).toContain(`[Service]\nEnvironment=GUIX=${HOOK}\n`);
  expect(m.calls).toEqual(["daemon-reload", "restart guix-daemon.service"]);
  expect(m.events.at(-1)).toEqual({ kind: "note", text: `guix-daemon (pid 110) hands its builds to offload (GUIX=${HOOK})` });

  m.events.length = 0;
  m.calls.length = 0;
  await installGuix(m.options);
  expect(m.events).toEqual([{ kind: "note", text: `nothing to change: guix-daemon (pid 110) hands its builds to offload (GUIX=${HOOK})` }]);
  expect(m.calls).toEqual([]);
});

test("uninstall removes exactly the drop-in (and its directory when empty) and restarts the daemon without GUIX", async () => {
  const m = machine();
  await installGuix(m.options);
  m.calls.length = 0;
  await uninstallGuix(m.options);
  expect(existsSync(join(m.root, GUIX_DROP_IN))).toBe(false);
  expect(existsSync(join(m.root, "etc/systemd/system/guix-daemon.service.d"))).toBe(false);
  expect(m.calls).toEqual(["daemon-reload", "restart guix-daemon.service"]);
  expect(m.events.at(-1)).toMatchObject({ kind: "note", text: expect.stringContaining("has no GUIX in its environment") });
});

test("a drop-in offload did not write is left alone, with what to add to it", async () => {
  const m = machine();
  mkdirSync(join(m.root, "etc/systemd/system/guix-daemon.service.d"), { recursive: true });
  writeFileSync(join(m.root, GUIX_DROP_IN), "[Service]\nEnvironment=LC_ALL=C\n");
  await expect(installGuix(m.options)).rejects.toMatchObject({ code: "guix-drop-in-foreign", fix: expect.stringContaining(`Environment=GUIX=${HOOK}`) });
  expect(readFileSync(join(m.root, GUIX_DROP_IN), "utf8")).toBe("[Service]\nEnvironment=LC_ALL=C\n");
  expect(m.calls).toEqual([]);
});

test("without systemd (Guix System's Shepherd), install says how to set GUIX there", async () => {
  const m = machine({ systemd: false });
  await expect(installGuix(m.options)).rejects.toMatchObject({
    code: "daemon-restart-needed",
    fix: expect.stringContaining("environment field of guix-configuration"),
  });
  expect(existsSync(join(m.root, GUIX_DROP_IN))).toBe(false);
});

test("a daemon started with --no-offload would never ask: refused with the fix", async () => {
  const m = machine({ args: ["--build-users-group=guixbuild", "--no-offload"] });
  await expect(installGuix(m.options)).rejects.toMatchObject({ code: "guix-daemon-no-offload", fix: expect.stringContaining("remove --no-offload") });
});

test("--dry-run says what it would do and changes nothing", async () => {
  const m = machine();
  await installGuix({ ...m.options, dryRun: true });
  expect(existsSync(join(m.root, GUIX_DROP_IN))).toBe(false);
  expect(m.calls).toEqual([]);
  expect(m.events.map((event) => event.kind)).toEqual(["created", "command", "command"]);
});
