// offload as guix-daemon's build hook, end to end with the real guix 1.5.0: a master Guix
// host whose guix-daemon (--max-jobs=0, GUIX=bin/offload-guix) cannot build anything itself,
// and two Guix build machines with their own stores, daemons, signing keys and sshd. Builds
// are started with `guix repl` scripts on the master, as any Guix client starts them.
import { spawnSync } from "node:child_process";
import { randomInt } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { AGENT_PID } from "../src/agent/agent-frames.js";
import { GuixDaemon } from "../src/store/guix-daemon.js";
import { authorizeInGuixHost, guixHostPaths, startGuixHost, type GuixHost } from "../src/lab/guix-host.js";
import { runInHost, stopHost } from "../src/lab/host.js";
import { ensureSshKey } from "../src/lab/keys.js";
import { PACKAGE_ROOT } from "../src/package-root.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

const SID = path.join(process.env.OFFLOAD_ROOTS_DIR ?? "/var/lib/offload-roots", "sid");
const CLI = path.join(PACKAGE_ROOT, "bin", "offload.js");
const GUIX_HOOK = path.join(PACKAGE_ROOT, "bin", "offload-guix");
/** Builder addresses of this test file alone (other lab tests use others). */
const ADDRESS = (n: number) => `127.0.31.${n}`;
const PORT = 2431;

interface Built {
  code: number | null;
  stdout: string;
  stderr: string;
  /** "name → output path" for each derivation the script printed. */
  outputs: Map<string, string>;
  drvs: Map<string, string>;
}

(existsSync(`${SID}.stamp`) ? describe : describe.skip)("offload as guix-daemon's build hook", () => {
  let dir: string;
  let etc: string;
  let master: GuixHost;
  let b1: GuixHost;
  let b2: GuixHost;
  let sshKey: string;
  let sshPublic: string;
  let nonce = 0;
  const hosts: GuixHost[] = [];

  function offloadCli(args: string[]): string {
    const result = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, OFFLOAD_CONFIG_DIR: etc }, encoding: "utf8" });
    if (result.status !== 0) throw new Error(`offload ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  }

  function writeMachines(records: string[]): void {
    writeFileSync(path.join(etc, "machines.ts"), `import { buildMachine } from "offload";\n\nexport default [\n${records.join(",\n")},\n];\n`, { mode: 0o644 });
  }

  function record(builder: GuixHost, fields: string, name = builder.name): string {
    return `  buildMachine({ name: ${JSON.stringify(name)}, host: ${JSON.stringify(builder.ssh!.address)}, port: ${builder.ssh!.port}, daemon: "guix", systems: ["x86_64-linux"], hostKey: ${JSON.stringify(builder.ssh!.hostKey)}, privateKey: ${JSON.stringify(sshKey)}, overloadThreshold: null${fields} })`;
  }

  /**
   * Builds, on the master, derivations made with busybox alone. `graph` is Scheme: a list of
   * (name features script input-names) where script may read the inputs as $in0, $in1….
   */
  async function build(graph: Array<{ name: string; features?: string; script: string; inputs?: string[] }>, options = ""): Promise<Built> {
    nonce++;
    const tag = `${process.pid}-${nonce}-${randomInt(1e6)}`;
    const file = path.join(dir, `build-${tag}.scm`);
    const defs = graph
      .map(({ name, features, script, inputs = [] }) => {
        const env = [
          ...(features ? [`("requiredSystemFeatures" . "${features}")`] : []),
          ...inputs.map((input, index) => `("in${index}" . ,(derivation->output-path ${input}))`),
        ];
        return `(define ${name} (derivation s "${name}-${tag}" (string-append bb "/bin/sh") (list "-c" ${JSON.stringify(script)}) #:sources (list bb) #:inputs (list ${inputs.map((input) => `(derivation-input ${input})`).join(" ")}) #:env-vars \`(${env.join(" ")})))`;
      })
      .join("\n");
    writeFileSync(
      file,
      `(use-modules (guix store) (guix derivations))
(with-store s
  (set-build-options s #:use-substitutes? #f #:offload? #t ${options})
  (let ((bb (add-to-store s "busybox" #t "sha256" "${dir}/busybox")))
${defs}
${graph.map(({ name }) => `    (format #t "drv ${name} ~a~%" (derivation-file-name ${name}))`).join("\n")}
    (build-derivations s (list ${graph.map(({ name }) => name).join(" ")}))
${graph.map(({ name }) => `    (format #t "out ${name} ~a~%" (derivation->output-path ${name}))`).join("\n")}))
`,
    );
    const result = await runInHost(master.host, ["guix", "repl", "--", file], { timeoutMs: 180_000 });
    const pairs = (kind: string) => new Map([...result.stdout.matchAll(new RegExp(`^${kind} (\\S+) (\\S+)$`, "gm"))].map((m) => [m[1]!, m[2]!]));
    return { ...result, outputs: pairs("out"), drvs: pairs("drv") };
  }

  async function validIn(host: GuixHost, paths: string[]): Promise<Set<string>> {
    const daemon = await GuixDaemon.connect({ socket: guixHostPaths(host.dir).daemonSocket });
    try {
      return await daemon.queryValidPaths(paths);
    } finally {
      daemon.close();
    }
  }

  /** What landings left in the master's store directory (nothing, once a hook is done). */
  const leftInLanding = () => {
    const landing = path.join(guixHostPaths(master.dir).gnu, "store", ".offload-landing");
    return existsSync(landing) ? readdirSync(landing) : [];
  };

  const inStore = (host: GuixHost, storePath: string) => path.join(guixHostPaths(host.dir).gnu, storePath.slice("/gnu/".length));

  beforeAll(async () => {
    dir = makeSafeDir("guix-hook");
    mkdirSync(path.join(dir, "busybox", "bin"), { recursive: true });
    copyFileSync(path.join(SID, "bin", "busybox"), path.join(dir, "busybox", "bin", "busybox"));
    symlinkSync("busybox", path.join(dir, "busybox", "bin", "sh"));
    etc = path.join(dir, "etc");
    mkdirSync(etc, { mode: 0o755 });
    chmodSync(etc, 0o755);
    offloadCli(["keygen", "--guix"]);
    sshKey = path.join(dir, "id_master");
    sshPublic = await ensureSshKey(sshKey, "guix-hook-master");
    [b1, b2] = (await Promise.all(
      [1, 2].map((n) =>
        startGuixHost({ name: `ghb${n}`, dir: path.join(dir, `b${n}`), ssh: { address: ADDRESS(n), port: PORT, authorizedKeys: [sshPublic] } }),
      ),
    )) as [GuixHost, GuixHost];
    hosts.push(b1, b2);
    const offloadKey = readFileSync(path.join(etc, "guix-signing-key.pub"), "utf8");
    await Promise.all([b1, b2].map((builder) => authorizeInGuixHost(builder, offloadKey)));
    // b1 signs through offload's Guix ACL; b2 is pinned in machines.ts.
    writeFileSync(path.join(dir, "b1.pub"), b1.signingKey);
    offloadCli(["authorize", "--guix", path.join(dir, "b1.pub")]);
    master = await startGuixHost({
      name: "ghm",
      dir: path.join(dir, "m"),
      shared: [dir],
      daemonArgs: ["--max-jobs=0"],
      daemonEnv: { GUIX: GUIX_HOOK, OFFLOAD_CONFIG_DIR: etc, OFFLOAD_STATE_DIR: path.join(dir, "state") },
    });
    hosts.push(master);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(hosts.map((host) => stopHost(host.host)));
    removeDir(dir);
  });

  test("a graph of derivations is built on the two machines, routed by features; outputs valid and intact on the master", async () => {
    writeMachines([record(b1, ""), record(b2, `, features: ["kvm"], signingKey: ${JSON.stringify(b2.signingKey)}`)]);
    const result = await build([
      { name: "left", script: "echo left > $out" },
      { name: "right", features: "kvm", script: "echo right > $out" },
      { name: "top", script: "cat $in0 $in1 > $out", inputs: ["left", "right"] },
    ]);
    expect(result.stderr).not.toMatch(/bad hook reply|unexpected EOF/);
    expect(result.code).toBe(0);
    const [left, right, top] = ["left", "right", "top"].map((name) => result.outputs.get(name)!);
    expect(readFileSync(inStore(master, top!), "utf8")).toBe("left\nright\n");
    // Routing: the kvm build only on b2; each machine kept what it built.
    expect(await validIn(b2, [right!])).toEqual(new Set([right]));
    // (b1 holds `right` too, sent as an input of `top`.)
    expect(result.stderr).toMatch(new RegExp(`building x86_64-linux with features kvm on ghb2`));
    expect(result.stderr).toMatch(/signature by .* verified/);
    // Registered by the master's daemon with their references; the store verifies.
    const daemon = await GuixDaemon.connect({ socket: guixHostPaths(master.dir).daemonSocket });
    try {
      expect((await daemon.queryPathInfo(top!)).deriver).toBe(result.drvs.get("top"));
      expect(await daemon.queryValidPaths([left!, right!, top!])).toEqual(new Set([left, right, top]));
    } finally {
      daemon.close();
    }
    const verify = await runInHost(master.host, ["guix", "gc", "--verify=contents"], { timeoutMs: 120_000 });
    expect(verify.code).toBe(0);
    // Nothing of the landing is left in the store directory.
    expect(leftInLanding()).toEqual([]);

    // The first hook started an agent; from then on the agent serves the hooks (bin/offload-hook).
    const state = path.join(dir, "state");
    for (let i = 0; i < 100 && !existsSync(path.join(state, AGENT_PID)); i++) await new Promise((resolve) => setTimeout(resolve, 100));
    const served = await build([{ name: "served", script: "echo served > $out" }]);
    expect(served.code).toBe(0);
    expect(readFileSync(inStore(master, served.outputs.get("served")!), "utf8")).toBe("served\n");
    expect(readFileSync(path.join(state, "agent.log"), "utf8")).toMatch(/hook \d+: served, exit 0/);
  }, 240_000);

  /** The build failed with offload's reason for it, and none of its outputs is in the master's store, valid or not. */
  async function refusedCleanly(result: Built, reason: RegExp): Promise<void> {
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(reason);
    expect(result.stderr).not.toMatch(/bad hook reply|unexpected EOF|at .*\.js:\d+/);
    const outputs = [...result.drvs.keys()]
      .map((name) => result.stdout.match(new RegExp(`^out ${name} (\\S+)$`, "m"))?.[1])
      .filter((out): out is string => out !== undefined);
    expect(outputs).toEqual([]); // build-derivations threw: the script printed no output path
    const names = readdirSync(path.join(guixHostPaths(master.dir).gnu, "store")).filter(
      (name) => name.includes(`-${nonceOf(result)}`) && !/\.(drv|lock)$/.test(name),
    );
    expect(names).toEqual([]);
    expect(leftInLanding()).toEqual([]);
  }

  /** The tag in the names of a build's derivations. */
  const nonceOf = (result: Built) => /-(\d+-\d+-\d+)\.drv$/.exec([...result.drvs.values()][0]!)![1]!;

  test("a machine whose signature is not the pinned key: refused, nothing in the store", async () => {
    writeMachines([record(b1, `, signingKey: ${JSON.stringify(b2.signingKey)}`)]);
    const result = await build([{ name: "pinned", script: "echo pinned > $out" }]);
    await refusedCleanly(result, /outputs of \S+ from ghb1 refused, nothing imported: \S+ is signed by key \S+, not by the signingKey of ghb1 in machines\.ts/);
  }, 120_000);

  test("a machine whose key is neither pinned nor in offload's Guix ACL: refused, with the fix", async () => {
    writeMachines([record(b2, "")]);
    const result = await build([{ name: "unknown", script: "echo unknown > $out" }]);
    await refusedCleanly(result, /from ghb2 refused, nothing imported/);
    expect(result.stderr).toContain("offload authorize --guix");
  }, 120_000);

  test("an output altered on its way is refused by its signature; nothing is written to the store", async () => {
    writeMachines([record(b1, "")]);
    const built = await build([{ name: "tampered", script: "echo original > $out" }]);
    expect(built.code).toBe(0);
    const output = built.outputs.get("tampered")!;
    // Fetch it again from b1, one byte of its file's contents changed on the way, into a store directory of its own.
    const store = path.join(dir, "altered-store");
    mkdirSync(store, { recursive: true });
    const remote = await GuixDaemon.connect({ socket: guixHostPaths(b1.dir).daemonSocket });
    const local = await GuixDaemon.connect({ socket: guixHostPaths(master.dir).daemonSocket });
    const altering = Object.create(remote) as GuixDaemon;
    altering.exportPath = async function* (item, options) {
      for await (const chunk of remote.exportPath(item, options)) {
        const at = chunk.indexOf("original");
        yield at < 0 ? chunk : Buffer.concat([chunk.subarray(0, at), Buffer.from("Original"), chunk.subarray(at + 8)]);
      }
    };
    const { fetchGuixOutputs } = await import("../src/store/guix-land.js");
    const { readGuixAcl, guixAclPath } = await import("../src/guix/acl.js");
    try {
      await expect(
        fetchGuixOutputs(altering, { queryValidPaths: async () => new Set<string>() } as unknown as GuixDaemon, [output], {
          trustedKeys: await readGuixAcl(guixAclPath(etc)),
          origin: "the test's outputs",
          fixes: { unsigned: "-", "corrupt-signature": "-", "unauthorized-key": "-", "hash-mismatch": "-", "invalid-signature": "-", "unexpected-path": "-" },
          spoolDir: path.join(dir, "spool"),
          storeDir: store,
        }),
      ).rejects.toMatchObject({ code: expect.stringMatching(/^output-(hash-mismatch|invalid-signature)$/) });
    } finally {
      remote.close();
      local.close();
    }
    // Refused before a byte was written: not even a landing directory.
    expect(readdirSync(store)).toEqual([]);
  }, 120_000);

  test("the daemon's timeout reaches the machine, which stops the build; the build fails as timed out", async () => {
    writeMachines([record(b1, "")]);
    const started = Date.now();
    const result = await build([{ name: "slow", script: "sleep 60; echo late > $out" }], "#:timeout 3");
    expect(Date.now() - started).toBeLessThan(30_000);
    await refusedCleanly(result, /timed out/);
  }, 120_000);

  test("a machine that is down: the next one builds; with none left, the build fails with the reason", async () => {
    const down = `  buildMachine({ name: "ghdown", host: "${ADDRESS(9)}", port: ${PORT}, daemon: "guix", systems: ["x86_64-linux"], privateKey: ${JSON.stringify(sshKey)}, hostKey: ${JSON.stringify(b1.ssh!.hostKey)}, speed: 10, connectTimeout: 2 })`;
    writeMachines([down, record(b1, "")]);
    const result = await build([{ name: "failover", script: "echo failover > $out" }]);
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/cannot build on ghdown: .*127\.0\.31\.9/);
    expect(readFileSync(inStore(master, result.outputs.get("failover")!), "utf8")).toBe("failover\n");

    writeMachines([down]);
    const alone = await build([{ name: "nowhere", script: "echo nowhere > $out" }]);
    await refusedCleanly(alone, /ghdown/);
  }, 180_000);

  test("offload check on the master: its guix-daemon uses offload; each Guix machine passes, or fails naming the Guix cause and its fix", async () => {
    // b3 has not authorized offload's Guix key.
    const b3 = await startGuixHost({ name: "ghb3", dir: path.join(dir, "b3"), ssh: { address: ADDRESS(3), port: PORT, authorizedKeys: [sshPublic] } });
    hosts.push(b3);
    writeMachines([
      record(b1, ""),
      record(b2, `, signingKey: ${JSON.stringify(b2.signingKey)}`),
      record(b2, "", "ghb2-unpinned"),
      record(b3, `, signingKey: ${JSON.stringify(b3.signingKey)}`),
      // A machine recorded as Guix without guix-daemon at that socket, which has Nix (the sid root does).
      record(b1, `, remoteStore: "/var/guix/no-such-socket"`, "ghb1-nix"),
    ]);
    const result = await runInHost(master.host, ["node", CLI, "check", "--json"], {
      env: { OFFLOAD_CONFIG_DIR: etc, OFFLOAD_STATE_DIR: path.join(dir, "state") },
      timeoutMs: 120_000,
    });
    expect(result.code).toBe(1);
    const report = JSON.parse(result.stdout) as {
      daemon: { status: string; detail: string };
      machines: Array<{ machine: string; ok: boolean; steps: Array<{ step: string; status: string; code?: string; detail: string; fix?: string }> }>;
    };
    expect(report.daemon).toMatchObject({ status: "ok", detail: expect.stringContaining("hands its builds to offload") });
    const steps = (name: string) => Object.fromEntries(report.machines.find((m) => m.machine === name)!.steps.map((step) => [step.step, step]));
    for (const name of ["ghb1", "ghb2"]) {
      expect(steps(name)["nix-store"]).toMatchObject({
        status: "ok",
        detail: expect.stringMatching(/^guix-daemon \(protocol 1\.\d+\) at \/var\/guix\/daemon-socket\/socket$/),
      });
      expect(steps(name)["round-trip"]).toMatchObject({ status: "ok", detail: expect.stringContaining("sent back signed by") });
      expect(steps(name)["disk"]).toMatchObject({ status: "ok", detail: expect.stringContaining("/gnu/store") });
    }
    expect(steps("ghb2-unpinned")["round-trip"]).toMatchObject({
      status: "fail",
      code: "guix-unauthorized-key",
      fix: expect.stringContaining("offload authorize --guix"),
    });
    expect(steps("ghb3")["round-trip"]).toMatchObject({
      status: "fail",
      code: "guix-key-not-authorized",
      fix: expect.stringContaining("guix archive --authorize"),
    });
    expect(steps("ghb1-nix")["nix-store"]).toMatchObject({ status: "fail", code: "daemon-mismatch", fix: expect.stringContaining('daemon: "nix"') });

    // status sees Guix machines too: their /gnu/store's free space.
    const status = await runInHost(master.host, ["node", CLI, "status", "--json", "^ghb1$"], {
      env: { OFFLOAD_CONFIG_DIR: etc, OFFLOAD_STATE_DIR: path.join(dir, "state") },
      timeoutMs: 60_000,
    });
    const [ghb1] = (JSON.parse(status.stdout) as { machines: Array<{ machine: string; reachable: boolean; store?: { dir: string } }> }).machines;
    expect(ghb1).toMatchObject({ machine: "ghb1", reachable: true, store: { dir: "/gnu/store" } });
  }, 180_000);

  test("a hook SIGKILLed while an output arrives leaves nothing at a store path; the next hook sweeps what it left", async () => {
    // The hook is a process of its own, or served by this master's agent: either dies.
    writeMachines([record(b1, "")]);
    const spool = path.join(dir, "state", "spool");
    // This master's hooks only (their state dir is this test's): other labs may run hooks too.
    const ours = `OFFLOAD_STATE_DIR=${path.join(dir, "state")}`;
    const read = (pid: string, file: string) => {
      try {
        return readFileSync(`/proc/${pid}/${file}`, "utf8");
      } catch {
        return ""; // ended meanwhile
      }
    };
    const working = (cmdline: string) => cmdline.includes("dist/guix-hook.js") || /bin\/offload\.js\0agent\0/.test(cmdline);
    const hooks = () =>
      readdirSync("/proc").filter((pid) => /^\d+$/.test(pid) && working(read(pid, "cmdline")) && read(pid, "environ").split("\0").includes(ours));
    const killer = (async () => {
      for (const deadline = Date.now() + 120_000; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 10))) {
        // An output on its way: a spooled file that is growing.
        const arriving = existsSync(spool) && readdirSync(spool).some((scratch) => readdirSync(path.join(spool, scratch)).length > 0);
        if (!arriving) continue;
        for (const pid of hooks()) process.kill(Number(pid), "SIGKILL");
        return true;
      }
      return false;
    })();
    const result = await build([{ name: "big", script: "dd if=/dev/zero of=$out bs=1048576 count=100" }]);
    expect(await killer).toBe(true);
    expect(result.code).not.toBe(0);
    const tag = nonceOf(result);
    const store = path.join(guixHostPaths(master.dir).gnu, "store");
    expect(readdirSync(store).filter((name) => name.includes(tag) && !/\.(drv|lock)$/.test(name))).toEqual([]);
    const left = readdirSync(spool);
    expect(left.length).toBeGreaterThan(0); // the killed hook could not clean up

    const next = await build([{ name: "after", script: "echo after > $out" }]);
    expect(next.code).toBe(0);
    expect(readdirSync(spool).filter((scratch) => left.includes(scratch))).toEqual([]);
    expect(leftInLanding()).toEqual([]);
  }, 240_000);
});
