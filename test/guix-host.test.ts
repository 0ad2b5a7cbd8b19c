// Lab Guix hosts (src/lab/guix-host.ts) with the real guix 1.5.0: Guix's own `guix offload`
// from one to another, the anchor any comparison is made against; and the build-hook
// protocol as guix-daemon really speaks it, seen by a logging stand-in for `guix offload`.
import { copyFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { randomInt } from "node:crypto";
import path from "node:path";
import { GuixDaemon } from "../src/store/guix-daemon.js";
import { configureGuixOffload, guixHostPaths, startGuixHost, type GuixHost } from "../src/lab/guix-host.js";
import { runInHost, runningHosts, stopHost } from "../src/lab/host.js";
import { runningProcesses } from "../src/lab/processes.js";
import { tcpReachable } from "../src/remote/tcp.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const SID = path.join(process.env.OFFLOAD_ROOTS_DIR ?? "/var/lib/offload-roots", "sid");

(existsSync(`${SID}.stamp`) ? describe : describe.skip)("lab Guix hosts", () => {
  let dir: string;
  const started: GuixHost[] = [];

  /** A derivation built with busybox alone (a static busybox added to the store is its builder); prints "drv DRV" and "out OUT". */
  function buildScript(options: string): string {
    const file = path.join(dir, `build-${randomInt(1e9)}.scm`);
    writeFileSync(
      file,
      `(use-modules (guix store) (guix derivations))
(define nonce (getenv "NONCE"))
(with-store s
  (set-build-options s #:use-substitutes? #f #:offload? #t ${options})
  (let* ((bb (add-to-store s "busybox" #t "sha256" "${dir}/busybox"))
         (drv (derivation s (string-append "greeting-" nonce) (string-append bb "/bin/sh")
                          (list "-c" (string-append "echo greetings " nonce " > $out")) #:sources (list bb))))
    (format #t "drv ~a~%" (derivation-file-name drv))
    (build-derivations s (list drv))
    (format #t "out ~a~%" (derivation->output-path drv))))
`,
    );
    return file;
  }

  async function build(host: GuixHost, script: string, nonce: string): Promise<{ drv: string; out: string; stderr: string; elapsedMs: number }> {
    const started = Date.now();
    const result = await runInHost(host.host, ["guix", "repl", "--", script], { env: { NONCE: nonce }, timeoutMs: 120_000 });
    if (result.code !== 0) throw new Error(`build in ${host.name} failed (${result.code}): ${result.stderr}`);
    const drv = /^drv (\S+)$/m.exec(result.stdout)![1]!;
    const out = /^out (\S+)$/m.exec(result.stdout)![1]!;
    return { drv, out, stderr: result.stderr, elapsedMs: Date.now() - started };
  }

  async function start(spec: Parameters<typeof startGuixHost>[0]): Promise<GuixHost> {
    const host = await startGuixHost(spec);
    started.push(host);
    return host;
  }

  beforeAll(() => {
    dir = makeSafeDir("guix-host");
    mkdirSync(path.join(dir, "busybox", "bin"), { recursive: true });
    copyFileSync(path.join(SID, "bin", "busybox"), path.join(dir, "busybox", "bin", "busybox"));
    symlinkSync("busybox", path.join(dir, "busybox", "bin", "sh"));
  });

  afterAll(async () => {
    await Promise.all(started.map((host) => stopHost(host.host)));
    removeDir(dir);
  });

  test("guix offload builds on another Guix host; stopped, nothing of them runs or stays mounted", async () => {
    const address = `127.0.29.${randomInt(2, 250)}`;
    const builder = await start({ name: "guix-offload-builder", dir: path.join(dir, "builder"), ssh: { address, port: 2429, authorizedKeys: [] } });
    // --max-jobs=0: the master cannot build locally, so success means offloaded.
    const master = await start({ name: "guix-offload-master", dir: path.join(dir, "master"), shared: [dir], daemonArgs: ["--max-jobs=0"] });
    expect(builder.ssh).toMatchObject({ address, port: 2429, hostKey: expect.stringMatching(/^ssh-ed25519 AAAA\S+$/) });
    await configureGuixOffload(master, [builder], path.join(master.dir, "id_guix"));
    expect(readFileSync(guixHostPaths(master.dir).machines, "utf8")).toContain(`(host-key "${builder.ssh!.hostKey}")`);

    const nonce = `${process.pid}-${randomInt(1e9)}`;
    const { out, stderr } = await build(master, buildScript(""), nonce);
    expect(stderr).toContain(`acquired build slot '/var/guix/offload/${address}:2429/0'`);
    expect(stderr).toMatch(/retrieving 1 store item from '127\.0\.29\.\d+'/);
    expect(stderr).toContain(`found valid signature for '${out}'`);
    expect(stderr).toMatch(/done with offloaded '\S+\.drv'/);
    expect(readFileSync(path.join(guixHostPaths(master.dir).gnu, out.slice("/gnu/".length)), "utf8")).toBe(`greetings ${nonce}\n`);
    // It was built on the builder, which still has it.
    const daemon = await GuixDaemon.connect({ socket: guixHostPaths(builder.dir).daemonSocket });
    try {
      expect(await daemon.queryValidPaths([out])).toEqual(new Set([out]));
    } finally {
      daemon.close();
    }

    await Promise.all([master, builder].map((host) => stopHost(host.host)));
    expect((await runningHosts()).filter((host) => host.dir.startsWith(dir))).toEqual([]);
    expect((await runningProcesses()).filter((process) => process.cmdline.includes(dir))).toEqual([]);
    const mounts = readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .filter((line) => line.includes(dir));
    expect(mounts).toEqual([]);
    expect(await tcpReachable(address, 2429, 500)).toBe(false);
  });

  // What offload's hook for guix-daemon (issue 10) must speak: recorded from the daemon itself.
  test("guix-daemon's build-hook protocol, as a logging GUIX sees it", async () => {
    const log = path.join(dir, "hook.log");
    const hook = path.join(dir, "hook.sh");
    writeFileSync(
      hook,
      `#!/bin/bash
# Stands in for \`guix offload\`; every other guix command is the real one (the daemon runs
# \`$GUIX authenticate\` too). Accepts, writes the wanted output itself, exits 0.
[ "$1" = offload ] || exec /usr/bin/guix "$@"
echo "argv $*" >> ${log}
IFS= read -r request; echo "request [$request]" >> ${log}
echo "# accept" >&2
IFS= read -r inputs; echo "inputs [$inputs]" >> ${log}
IFS= read -r outputs; echo "outputs [$outputs]" >> ${log}
read -r more && echo "more [$more]" >> ${log}
echo "to stderr" >&2
echo "to fd 4" >&4
for out in $outputs; do echo "made by the hook" > "$out"; done
exit 0
`,
      { mode: 0o755 },
    );
    const master = await start({ name: "guix-hook-master", dir: path.join(dir, "hook-master"), shared: [dir], daemonEnv: { GUIX: hook } });
    const nonce = `${process.pid}-${randomInt(1e9)}`;
    const { drv, out, stderr } = await build(master, buildScript("#:max-silent-time 123 #:timeout 456"), nonce);
    // After "# accept" the hook's stderr and fd 4 reach the client; only fd 4 goes to the build log.
    expect(stderr).toMatch(/^to stderr\nto fd 4$/m);
    const busybox = /^inputs \[(.*)\]$/m
      .exec(readFileSync(log, "utf8"))![1]!
      .split(" ")
      .find((item) => item.endsWith("-busybox"))!;
    expect(readFileSync(log, "utf8").split("\n")).toEqual([
      "argv offload x86_64-linux 123 true 456",
      `request [1 x86_64-linux ${drv} ]`,
      `inputs [${[drv, busybox].sort().join(" ")} ]`,
      `outputs [${out} ]`,
      "",
    ]);
    // The output the hook left at its store path, unregistered, was registered by the daemon,
    // references found by scanning, deriver recorded; the hook's fd 4 went to the build log.
    const daemon = await GuixDaemon.connect({ socket: guixHostPaths(master.dir).daemonSocket });
    try {
      expect(await daemon.queryPathInfo(out)).toMatchObject({ deriver: drv, references: [] });
    } finally {
      daemon.close();
    }
    expect(readFileSync(path.join(guixHostPaths(master.dir).gnu, out.slice("/gnu/".length)), "utf8")).toBe("made by the hook\n");
    const buildLog = await runInHost(master.host, ["sh", "-c", `zcat /var/log/guix/drvs/*/${path.basename(drv).slice(2)}.gz`]);
    expect(buildLog.stdout).toBe("to fd 4\n");
  });
});
