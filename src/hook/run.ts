// The build hook, start to end: settings → machines.ts → for each "try": decide and reply;
// after an accept: build on the machine, verify, import, exit with Nix's status codes.
import { DEFAULTS } from "../defaults.js";
import type { BuildMachine } from "../../types/index.js";
import { loadConfig, type LoadedConfig } from "../config/load.js";
import { EXIT, OffloadError, asOffloadError, formatError } from "../errors.js";
import { decisionText } from "../select/failures.js";
import { hookSupport, type NixVersion } from "../nix/daemon-version.js";
import { readSecretKeyFile } from "../nix/keys.js";
import { derivationName, recordDuration } from "../select/durations.js";
import { recordFacts } from "../select/machine-facts.js";
import type { BuildRequest, Decision } from "../select/select.js";
import { ensureStateDir, stateDir } from "../select/state-dir.js";
import { readAcl } from "../store/acl.js";
import { finishLandings } from "../store/land.js";
import { aclPath, configDir, secretKeyPath } from "../files/config-dir.js";
import { checkPrivate } from "../files/safety.js";
import { machineTrustedKeys } from "../store/machine-trust.js";
import { linkMachine } from "../agent/machine-link.js";
import { buildOnMachine } from "./build.js";
import { claimMachine } from "./claim.js";
import { HookChannel, Level, type HookIo } from "./protocol.js";
import { NO_REMOTE_BUILDS, checkRestrictionNames, interpretSettings, machinesInEffect } from "./settings.js";

export async function runHook(io: HookIo, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const channel = new HookChannel(io);
  try {
    const state = stateDir(env);
    ensureStateDir(state);
    // Before reading anything: a daemon of another protocol (Lix's Cap'n Proto) would not send these bytes.
    const daemon = await io.daemonVersion?.(state);
    if (daemon) assertSupported(daemon);
    // What hooks killed mid-transfer left: outputs on their way, signatures not yet recorded.
    await finishLandings({ warn: (line) => channel.message(Level.Warn, line) });
    const settings = interpretSettings(await channel.readSettings(), env);
    // Before machines.ts: a build that asked for no remote builds must not fail on it.
    if (settings.builders.kind === "none") return declinePermanently(channel, `offload: ${NO_REMOTE_BUILDS}`);
    const config = await loadHookConfig(env);
    if (!config) return declinePermanently(channel);
    checkRestrictionNames(settings.restriction, config.machines);
    if (config.machines.length === 0) return declinePermanently(channel);
    const trust = configDir(env);
    const keyFile = secretKeyPath(trust);
    const signingKey = await (async () => {
      await checkPrivate(keyFile, "offload signing key");
      return readSecretKeyFile(keyFile);
    })();
    const acl = await readAcl(aclPath(trust));
    const say = (line: string) => channel.message(Level.Info, line);
    const warn = (line: string) => channel.message(Level.Error, line);

    for (;;) {
      const request = await channel.nextRequest();
      if (!request) return EXIT.success;
      const claim = await claimMachine(request, {
        config,
        settings,
        stateDir: state,
        say,
        warn,
        // Warm sessions from `offload agent` unless OFFLOAD_AGENT=0.
        connect: (machine) =>
          linkMachine(
            machine,
            { agentStateDir: env.OFFLOAD_AGENT === "0" ? undefined : state, lender: io.lender?.stateDir === state ? io.lender : undefined },
            say,
          ),
        minFreeBytes: (Number(env.OFFLOAD_MIN_FREE_MIB) || DEFAULTS.minFreeMiB) * 1024 * 1024,
      });
      if (claim.verdict !== "accept") {
        explain(channel, claim.decision, claim.verdict, config.machines, request);
        channel.reply(claim.verdict);
        continue;
      }
      const { link, slot } = claim;
      try {
        const trustedKeys = machineTrustedKeys(link.machine, acl);
        channel.message(Level.Talkative, `offload: ${claim.decision.summary}`);
        const { inputs, wantedOutputs } = await channel.accept(link.machine.name);
        // Said in every build's log: a choice Nix dropped (from a user it does not trust) is noticed there.
        channel.buildLog(`${machinesInEffect(settings)}\n`);
        try {
          const seconds = await buildOnMachine({
            link,
            drvPath: request.drvPath!,
            inputs,
            wantedOutputs,
            settings,
            signingKey,
            trustedKeys,
            say,
            buildLog: (b) => channel.buildLog(b),
            stopped: io.stopped,
          });
          try {
            recordFacts(state, link.machine.name, { lastBuild: { drvPath: request.drvPath!, at: Date.now() } });
            // On a machine of speed 1 it would have taken speed times as long.
            recordDuration(state, derivationName(request.drvPath!), seconds * link.machine.speed);
          } catch (error) {
            // Advisory records: the build itself succeeded and its outputs are imported.
            channel.message(Level.Warn, `offload: could not record the build in ${state}: ${asOffloadError(error).message}`);
          }
          return EXIT.success;
        } catch (error) {
          // The build log is where Nix shows a failed build's last lines (and `nix log` keeps them).
          const failure = asOffloadError(error);
          channel.buildLog(`offload: ${formatError(failure)}\n`);
          return failure.code === "internal" ? EXIT.transient : failure.exitCode;
        }
      } finally {
        link.close();
        await slot.release();
      }
    }
  } catch (error) {
    const failure = asOffloadError(error);
    const text = `offload: ${formatError(failure)}`;
    // A daemon of another protocol, or a broken exchange, can take no more words: an @nix
    // message still reaches the person running the build. Otherwise the build fails cleanly
    // with the reason as its log.
    const canTalk = failure.code !== "daemon-unsupported" && !failure.code.startsWith("wire-");
    if (!(canTalk && (await channel.failRequest(text)))) channel.message(Level.Error, text);
    return EXIT.transient;
  }
}

function assertSupported(daemon: NixVersion): void {
  const support = hookSupport(daemon);
  if (!support.supported) {
    throw new OffloadError(`cannot be the build hook of ${daemon.flavour} ${daemon.text}: ${support.why}`, { code: "daemon-unsupported", fix: support.fix });
  }
}

/** The machines, or undefined when there is no machines.ts at all (as in Guix: no file, no machines). */
export async function loadHookConfig(env: NodeJS.ProcessEnv): Promise<LoadedConfig | undefined> {
  try {
    return await loadConfig({ env });
  } catch (error) {
    if (error instanceof OffloadError && error.code === "config-missing") return undefined;
    throw error;
  }
}

/** Nix's reply for an empty machines list (the daemon asks no more in this session), after saying `why` if there is more to say. */
async function declinePermanently(channel: HookChannel, why?: string): Promise<number> {
  if (await channel.nextRequest()) {
    if (why) channel.message(Level.Info, why);
    channel.reply("decline-permanently");
  }
  return EXIT.success;
}

/** Why a build stays local or waits: shown at a level that matches how surprising it is. */
function explain(channel: HookChannel, decision: Decision, verdict: string, machines: readonly BuildMachine[], request: BuildRequest): void {
  const surprising = verdict === "decline" && decision.local.startsWith("the local machine cannot");
  channel.message(surprising ? Level.Warn : Level.Talkative, decisionText(decision, machines, request));
}
