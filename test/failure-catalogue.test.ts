// The failure catalogue, each entry caused for real on loopback builders: `offload check`
// names the cause and the fix in one line (and a stable code in --json); where the build
// hook meets the same fault before accepting a build, its log says the same.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import type { StepResult, MachineReport } from "../src/check/machine-check.js";
import type { Lab, LabBuilder } from "../src/lab/index.js";
import { startSshd, stopSshd } from "../src/lab/sshd.js";
import { generateKeyPair } from "../src/nix/keys.js";
import { runCli } from "./support/cli.js";
import { runHookTries } from "./support/hook.js";
import { LAB_UP_TIMEOUT_MS, startTestLab, stopTestLab } from "./support/lab.js";
import { configEnv, labRecord, writeLabConfig } from "./support/lab-config.js";
import { makeSafeDir, removeDir } from "./support/safe-dir.js";

let lab: Lab;
let dir: string;
let b0: LabBuilder; // kvm, nixos-test: the victim of most faults
let b1: LabBuilder;
let configs = 0;

beforeAll(async () => {
  lab = await startTestLab({ builders: 2 });
  [b0, b1] = lab.builders as [LabBuilder, LabBuilder];
  dir = makeSafeDir("catalogue");
}, LAB_UP_TIMEOUT_MS);

afterAll(async () => {
  await stopTestLab(lab);
  if (dir) removeDir(dir);
});

interface Checked {
  code: number | null;
  report: MachineReport;
  step(name: string): StepResult;
  /** The text output's line for a failed or warned step. */
  line(name: string): string | undefined;
  env: NodeJS.ProcessEnv;
}

/** `offload check` (text and --json) of one machine record. */
async function check(record: Record<string, unknown>, options: { args?: string[]; acl?: string } = {}): Promise<Checked> {
  const configDir = writeLabConfig(dir, `config-${++configs}`, lab, [record], { acl: options.acl });
  const env = configEnv(dir, configDir);
  const args = ["check", ...(options.args ?? [])];
  const [text, json] = await Promise.all([runCli(args, env), runCli([...args, "--json"], env)]);
  if (text.code !== json.code) throw new Error(`two runs disagree:\n${text.stdout}\n${json.stdout}`);
  const report = (JSON.parse(json.stdout) as { machines: MachineReport[] }).machines[0]!;
  const lines = text.stdout.split("\n");
  return {
    code: json.code,
    report,
    env,
    step: (name) => report.steps.find((s) => s.step === name)!,
    line: (name) => lines.find((l) => /^[✗!] /.test(l) && l.includes(` ${name}: `)),
  };
}

/** The step failed with `code`, and the text output says cause and fix on one line. */
function expectFailure(checked: Checked, step: string, code: string, cause: RegExp, fix: RegExp): void {
  const result = checked.step(step);
  // As one string, so that a mismatch shows what the step said.
  expect(`${result.status} ${result.code} ${result.detail}`).toMatch(new RegExp(`^fail ${code} `));
  expect(checked.code).toBe(1);
  const line = checked.line(step)!;
  expect(line).toMatch(new RegExp(`^✗ \\S+ ${step}: `));
  const [message, fixText] = line.split(" — fix: ");
  expect(message).toMatch(cause);
  expect(fixText).toMatch(fix);
}

/** What the hook tells the daemon when this fault keeps it from using the machine. */
/** The hook's messages for one build (amWilling: whether the local machine could build it now). */
async function hookLog(env: NodeJS.ProcessEnv, amWilling = false): Promise<string> {
  const run = await runHookTries(env, [{ amWilling, system: b0.system, drvPath: "/nix/store/00000000000000000000000000000000-catalogue.drv" }]);
  expect(run.replies).not.toContain(`accept ${b0.address}`);
  return run.messages.join("\n");
}

async function restartSshd(builder: LabBuilder, config: string): Promise<void> {
  writeFileSync(builder.sshdConfig, config);
  const files = { sshdConfig: builder.sshdConfig, pidFile: builder.pidFile, logFile: builder.logFile };
  await stopSshd(files);
  await startSshd(files, { address: builder.address, port: builder.port });
}

/** Runs `body` while the builder's sshd sessions have `PATH=<path>`. */
async function withSessionPath<T>(builder: LabBuilder, path: string, body: () => Promise<T>): Promise<T> {
  const original = readFileSync(builder.sshdConfig, "utf8");
  await restartSshd(builder, original.replace(/^SetEnv (.*)$/m, `SetEnv $1 PATH=${path}`));
  try {
    return await body();
  } finally {
    await restartSshd(builder, original);
  }
}

describe("connecting", () => {
  test("host key mismatch", async () => {
    const checked = await check(labRecord(lab, b0, { hostKey: b1.hostKey }));
    expectFailure(
      checked,
      "connect",
      "host-key-mismatch",
      /host key mismatch for \S+: machines.ts pins ssh-ed25519 SHA256:/,
      /ssh-keygen -lf .*set hostKey: "ssh-ed25519 /,
    );
    expect(checked.report.steps.filter((s) => s.status === "skipped")).toHaveLength(7);
    expect(await hookLog(checked.env)).toMatch(/cannot build on \S+: host key mismatch[^]*fix: check on the machine/);
  });

  test("unknown host key (no pin, not in known_hosts)", async () => {
    const checked = await check(labRecord(lab, b0, { hostKey: undefined }));
    expectFailure(
      checked,
      "connect",
      "host-key-unknown",
      /is not a known host: it presented ssh-ed25519 key SHA256:/,
      /add hostKey: "ssh-ed25519 .*to \S+ in machines.ts/,
    );
    expect(await hookLog(checked.env)).toMatch(/is not a known host[^]*fix: check on the machine/);
  });

  test("authentication refused (a key the machine does not know)", async () => {
    const stranger = join(dir, "stranger_ed25519");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "stranger", "-f", stranger]);
    const checked = await check(labRecord(lab, b0, { privateKey: stranger }));
    expectFailure(
      checked,
      "connect",
      "auth-refused",
      /refused our key for user root \(.*stranger_ed25519\)/,
      /add this line to ~root\/\.ssh\/authorized_keys: ssh-ed25519 \S+ stranger/,
    );
    expect(await hookLog(checked.env)).toMatch(/refused our key[^]*fix: on \S+, add this line/);
  });

  test("key file too open, key file unreadable: refused with the config, before any connection", async () => {
    const open = join(dir, "open_ed25519");
    copyFileSync(lab.clientKey, open);
    chmodSync(open, 0o644);
    const missing = join(dir, "no-such-key");
    const configDir = writeLabConfig(dir, "key-files", lab, [labRecord(lab, b0, { privateKey: open }), labRecord(lab, b1, { privateKey: missing })]);
    const env = configEnv(dir, configDir);
    const text = await runCli(["check"], env);
    expect(text.code).toBe(1);
    expect(text.stderr).toMatch(
      /machines\.ts:\d+:\d+: machine "[^"]+": privateKey: SSH private key \S+open_ed25519 is accessible by others \(mode 0644\); fix: chmod 600 \S+open_ed25519$/m,
    );
    expect(text.stderr).toMatch(
      /machines\.ts:\d+:\d+: machine "[^"]+": privateKey: SSH private key \S+no-such-key does not exist; fix: ssh-keygen -t ed25519/m,
    );
    const json = JSON.parse((await runCli(["check", "--json"], env)).stdout) as { ok: boolean; problems: { code: string; message: string }[] };
    expect(json.ok).toBe(false);
    expect(json.problems.map((p) => p.code)).toEqual(["config-invalid", "config-invalid"]);
    expect(await hookLog(env)).toMatch(/accessible by others \(mode 0644\); fix: chmod 600/);
  });

  test("TCP connection refused", async () => {
    const checked = await check(labRecord(lab, b0, { port: 1 }));
    expectFailure(checked, "connect", "tcp-refused", /refused: nothing listens on port 1/, /start sshd .* or set the right port/);
    expect(await hookLog(checked.env)).toMatch(/nothing listens on port 1[^]*fix: start sshd/);
  });

  test("unreachable: a server that accepts but never speaks SSH, within connectTimeout", async () => {
    const sockets: Socket[] = [];
    const silent: Server = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, b0.address, resolve));
    const port = (silent.address() as { port: number }).port;
    try {
      const started = Date.now();
      const checked = await check(labRecord(lab, b0, { port, connectTimeout: 1 }));
      expectFailure(checked, "connect", "unreachable", /did not complete an SSH handshake within 1 s/, /raise connectTimeout/);
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(await hookLog(checked.env)).toMatch(/did not complete an SSH handshake within 1 s[^]*fix:/);
    } finally {
      for (const socket of sockets) socket.destroy();
      silent.close();
    }
  });
});

describe("the remote Nix", () => {
  test("nix-store not on the remote PATH", async () => {
    await withSessionPath(b0, "/nonexistent", async () => {
      const checked = await check(labRecord(lab, b0));
      expectFailure(
        checked,
        "nix-store",
        "nix-store-not-found",
        /nix-store is not on the PATH of non-interactive SSH sessions on \S+: .*(not found|No such file)/,
        /link nix-store into \/usr\/local\/bin/,
      );
      expect(checked.step("round-trip").status).toBe("skipped");
      expect(await hookLog(checked.env)).toMatch(/nix-store was not found on the machine[^]*fix: install Nix there, or make nix-store reachable/);
    });
  });

  describe("a non-root login whose Nix goes through a nix-daemon (trusted-users = root)", () => {
    const user = "offload-catalogue";
    const daemons: ChildProcess[] = [];
    // The user must reach the daemon's socket: not under root's 0700 home, where the test's files are.
    const shared = `/var/lib/offload-catalogue-${process.pid}`;

    beforeAll(() => {
      execFileSync("sh", ["-c", `id ${user} >/dev/null 2>&1 || useradd --system --shell /bin/sh --no-create-home ${user}`]);
      // Not locked ("!"), or sshd refuses the login before any key is tried.
      execFileSync("usermod", ["-p", "*", user]);
      mkdirSync(shared, { mode: 0o755 });
    });

    afterAll(async () => {
      await Promise.all(
        daemons.map((daemon) => new Promise((resolve) => (daemon.exitCode === null ? (daemon.once("exit", resolve), daemon.kill()) : resolve(undefined)))),
      );
      execFileSync("chmod", ["-R", "u+w", shared]);
      removeDir(shared);
    });

    function accepts(socket: string): Promise<boolean> {
      return new Promise((resolve) => {
        const connection = createConnection({ path: socket });
        connection.once("connect", () => (connection.destroy(), resolve(true)));
        connection.once("error", () => resolve(false));
      });
    }

    /** A nix-daemon of its own with these extra settings; returns its socket. */
    async function startDaemon(name: string, settings: string): Promise<string> {
      const daemonDir = join(shared, name);
      mkdirSync(daemonDir, { mode: 0o755 });
      const conf = join(daemonDir, "nix.conf");
      writeFileSync(conf, `store = ${join(daemonDir, "store")}\nextra-sandbox-paths = /bin /lib /lib64 /usr\nsubstituters =\n${settings}`);
      const socket = join(daemonDir, "socket");
      daemons.push(spawn("nix-daemon", [], { env: { ...process.env, NIX_USER_CONF_FILES: conf, NIX_DAEMON_SOCKET_PATH: socket }, stdio: "ignore" }));
      // The socket file appears at bind(), before the daemon listens: wait until it accepts.
      for (let i = 0; i < 100 && !(await accepts(socket)); i++) await new Promise((resolve) => setTimeout(resolve, 50));
      return socket;
    }

    /** Runs `body` while the user's sessions on b1 read trusted-users = root <user> (the daemon still trusts root only). */
    async function withClaimedTrust<T>(body: () => Promise<T>): Promise<T> {
      const original = readFileSync(b1.nixConf, "utf8");
      writeFileSync(b1.nixConf, `${original}trusted-users = root ${user}\n`);
      try {
        return await body();
      } finally {
        writeFileSync(b1.nixConf, original);
      }
    }

    test("remote user not trusted, seen in the machine's Nix settings", async () => {
      const socket = await startDaemon("daemon-trusting-our-key", `trusted-public-keys = ${lab.signingKey}\n`);
      const checked = await check(labRecord(lab, b1, { user, remoteStore: `unix://${socket}` }));
      expectFailure(
        checked,
        "store",
        "remote-not-trusted",
        new RegExp(`does not trust user ${user} \\(trusted-users = root\\)`),
        new RegExp(`add ${user} to trusted-users in \\S+'s /etc/nix/nix.conf`),
      );
      expect(checked.step("connect").status).toBe("ok");
      expect(checked.step("round-trip").status).toBe("skipped");
    });

    test("remote user not even allowed to connect (allowed-users)", async () => {
      const socket = await startDaemon("daemon-allowing-root", "allowed-users = root\n");
      await withClaimedTrust(async () => {
        const checked = await check(labRecord(lab, b1, { user, remoteStore: `unix://${socket}` }));
        expectFailure(
          checked,
          "store",
          "remote-not-trusted",
          new RegExp(`the nix-daemon on \\S+ does not let ${user} connect \\(allowed-users\\)`),
          new RegExp(`add ${user} to allowed-users`),
        );
      });
    });

    test("no nix-daemon where the store says", async () => {
      const checked = await check(labRecord(lab, b1, { user, remoteStore: `unix://${shared}/no-daemon-socket` }));
      expectFailure(checked, "store", "remote-daemon-down", /no nix-daemon listens at \S+no-daemon-socket on \S+/, /systemctl start nix-daemon/);
    });

    test("remote user not trusted, refused by the daemon itself when the settings claim otherwise", async () => {
      const socket = await startDaemon("daemon-refusing-builds", `trusted-public-keys = ${lab.signingKey}\n`);
      await withClaimedTrust(async () => {
        const checked = await check(labRecord(lab, b1, { user, remoteStore: `unix://${socket}` }));
        expect(checked.step("store").status).toBe("ok");
        // Our signed path is accepted (the daemon trusts our key); the build is not.
        expectFailure(
          checked,
          "round-trip",
          "remote-not-trusted",
          /does not trust this SSH user: .*not privileged to build input-addressed derivations/,
          /add the SSH user to trusted-users/,
        );
      });
    });

    test("our signing key not trusted: the signed test path is refused", async () => {
      const socket = await startDaemon("daemon-without-our-key", "");
      await withClaimedTrust(async () => {
        const checked = await check(labRecord(lab, b1, { user, remoteStore: `unix://${socket}` }));
        expectFailure(
          checked,
          "round-trip",
          "remote-not-trusted",
          /refused a test path signed with offload's key \S+: its Nix does not trust that key/,
          new RegExp(`add ${lab.signingKey.replace(/[+/]/g, "\\$&")} to trusted-public-keys`),
        );
      });
    });
  });

  test("remote not signing outputs (no secret-key-files)", async () => {
    const original = readFileSync(b0.nixConf, "utf8");
    writeFileSync(b0.nixConf, original.replace(/^secret-key-files.*$/m, ""));
    try {
      const checked = await check(labRecord(lab, b0));
      expectFailure(
        checked,
        "round-trip",
        "unsigned",
        /does not sign what it builds \(no secret-key-files\): \S+ has no signature/,
        /set secret-key-files = .* in its nix.conf/,
      );
    } finally {
      writeFileSync(b0.nixConf, original);
    }
  });

  test("signature by an unauthorized key: not in the ACL, or not the pinned one", async () => {
    const notInAcl = await check(labRecord(lab, b0, { signingKey: undefined }), { acl: `${b1.signingKey}\n` });
    expectFailure(
      notInAcl,
      "round-trip",
      "unknown-key",
      new RegExp(`signed by unknown key "${b0.signingKey.split(":")[0]}" \\(not in the ACL\\)`),
      /offload authorize <its public key file>/,
    );
    const stranger = generateKeyPair("stranger-1").publicKey.toString();
    const pinned = await check(labRecord(lab, b0, { signingKey: stranger }));
    // A pin is not the ACL: the message says the signer does not match it.
    expectFailure(
      pinned,
      "round-trip",
      "unknown-key",
      /signed by "\S+", which does not match the pinned signingKey "stranger-1" of \S+/,
      /must be signed by stranger-1 \(signingKey of \S+\)/,
    );
  });
});

describe("the record against the machine", () => {
  test("system mismatch", async () => {
    const checked = await check(labRecord(lab, b0, { systems: ["aarch64-linux"] }));
    expectFailure(
      checked,
      "capabilities",
      "system-mismatch",
      /machines.ts says \S+ builds aarch64-linux, but its Nix builds only x86_64-linux/,
      /remove aarch64-linux from systems of \S+ in machines.ts, or add them to extra-platforms/,
    );
    expect(checked.step("round-trip")).toMatchObject({ status: "skipped", detail: "no system of the record is one the machine builds" });
  });

  test("missing feature; and a feature the record omits is a warning", async () => {
    const missing = await check(labRecord(lab, b0, { features: [...b0.features, "cuda"] }));
    expectFailure(
      missing,
      "capabilities",
      "missing-feature",
      /gives \S+ feature cuda, but its Nix's system-features are .*kvm.*: builds requiring it fail there/,
      /add cuda to system-features in \S+'s nix.conf if it really has it, else remove it from features/,
    );
    const omitted = await check(labRecord(lab, b0, { features: ["kvm"] }));
    expect(omitted.code).toBe(0);
    expect(omitted.step("capabilities")).toMatchObject({ status: "warn", code: "capability-unused" });
    expect(omitted.line("capabilities")).toMatch(
      /^! \S+ capabilities: \S+'s Nix has feature nixos-test, which machines.ts does not list: .* — fix: add nixos-test to features of/,
    );
  });
});

describe("resources", () => {
  test("disk low (below --min-free)", async () => {
    const checked = await check(labRecord(lab, b0), { args: ["--min-free", "100000000"] });
    expectFailure(checked, "disk", "disk-low", /has only \S+ [GM]iB free for \/nix\/store \(minimum 97656\.3 GiB\)/, /nix-collect-garbage -d/);
  });

  test("overloaded (above overloadThreshold)", async () => {
    // A fake load, as the clock skew below fakes the date: the machine's `cat /proc/loadavg`
    // says 64 (a CPU spun here instead would disturb everything running beside this test).
    const bin = join(dir, "loaded-bin");
    mkdirSync(bin, { mode: 0o755 });
    writeFileSync(join(bin, "cat"), `#!/bin/sh\nif [ "$*" = /proc/loadavg ]; then echo "64.00 32.00 16.00 2/300 4242"; else exec /usr/bin/cat "$@"; fi\n`, {
      mode: 0o755,
    });
    await withSessionPath(b0, `${bin}:/usr/bin:/bin`, async () => {
      const checked = await check(labRecord(lab, b0, { overloadThreshold: 0.5 }));
      expectFailure(
        checked,
        "load",
        "overloaded",
        /is overloaded: load \d+\.\d\d per CPU > overloadThreshold 0.5/,
        /raise overloadThreshold for \S+ in machines.ts \(null ignores load\)/,
      );
      // 64 divided by the machine's CPUs, whatever their number.
      const perCpu = Number(/load (\d+\.\d\d) per CPU/.exec(checked.line("load")!)![1]);
      expect(64 / perCpu).toBeCloseTo(Math.round(64 / perCpu), 1);
      // With the local machine free, an overloaded machine is no last resort: the hook says why it skips it.
      expect(await hookLog(checked.env, true)).toMatch(/is overloaded: load [^]*fix: wait for its builds to finish[^]*trying elsewhere/);
    });
  });

  test("clock skew (the machine's date an hour ahead)", async () => {
    const bin = join(dir, "skewed-bin");
    mkdirSync(bin, { mode: 0o755 });
    writeFileSync(
      join(bin, "date"),
      `#!/bin/sh\nif [ "$1" = "+%s.%N" ]; then echo "$(( $(/usr/bin/date +%s) + 3600 )).$(/usr/bin/date +%N)"; else exec /usr/bin/date "$@"; fi\n`,
      { mode: 0o755 },
    );
    await withSessionPath(b0, `${bin}:/usr/bin:/bin`, async () => {
      const checked = await check(labRecord(lab, b0));
      expectFailure(checked, "clock", "clock-skew", /clock is 3600\.\d s ahead of this machine's \(more than 30 s\)/, /timedatectl set-ntp true/);
      expect(checked.step("round-trip").status).toBe("ok");
    });
  });
});
