// Step 4 of loading: run the bundled config in this process (no worker start-up cost),
// under a time limit so a config that never finishes cannot hang the daemon's hook.
import { createRequire, SourceMap } from "node:module";
import { types } from "node:util";
import vm from "node:vm";
import { OffloadError, type SourceLocation } from "../errors.js";
import { dirname, join, resolve } from "node:path";
import { withDeadline } from "../deadline.js";

export const DEFAULT_EVAL_TIMEOUT_MS = 5000;

export interface Evaluated {
  /** The config's default export, awaited. */
  value: unknown;
  /** Maps a position in the bundle back to the user's file. */
  locate: (line: number, column: number) => SourceLocation | undefined;
}

const SLOT = "__offloadConfigModule";
const BUNDLE_NAME = ".machines.bundle.cjs";
const FRAME_POSITION = new RegExp(`${BUNDLE_NAME.replaceAll(".", "\\.")}:(\\d+):(\\d+)`, "g");

/** The bundle's notional file name (it is never written): stack frames from evaluation carry it. */
export function bundleFileName(configPath: string): string {
  return join(dirname(configPath), BUNDLE_NAME);
}

export async function evaluateConfig(
  configPath: string,
  code: string,
  sourceMap: string,
  timeoutMs = DEFAULT_EVAL_TIMEOUT_MS,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Evaluated> {
  const bundleFile = bundleFileName(configPath);
  const map = new SourceMap(JSON.parse(sourceMap));
  const locate = (line: number, column: number): SourceLocation | undefined => {
    const entry = map.findEntry(line - 1, column - 1) as { originalSource?: string; originalLine?: number; originalColumn?: number };
    if (entry.originalSource === undefined || entry.originalLine === undefined || entry.originalColumn === undefined) return undefined;
    return { file: resolve(dirname(bundleFile), entry.originalSource), line: entry.originalLine + 1, column: entry.originalColumn + 1 };
  };

  const module = { exports: {} as Record<string, unknown> };
  // The global of the context the script runs in (not necessarily this module's, e.g. under jest).
  const globals = vm.runInThisContext("globalThis") as Record<string, unknown>;
  const guarded = configProcess(env);
  const realRequire = createRequire(configPath);
  // `import process from "node:process"` is the same guarded process as the global one.
  const require = Object.assign((id: string): unknown => (id === "process" || id === "node:process" ? guarded : realRequire(id)), realRequire);
  globals[SLOT] = { module, require, filename: configPath, dirname: dirname(configPath), process: guarded };
  // The wrapper line is compensated by lineOffset so stack positions match the source map.
  const script = new vm.Script(
    `(function (exports, require, module, __filename, __dirname, process) {\n${code}\n}).call(undefined, ${SLOT}.module.exports, ${SLOT}.require, ${SLOT}.module, ${SLOT}.filename, ${SLOT}.dirname, ${SLOT}.process)`,
    { filename: bundleFile, lineOffset: -1 },
  );
  const started = Date.now();
  try {
    script.runInThisContext({ timeout: timeoutMs });
  } catch (error) {
    throw evaluationFailure(configPath, error, locate, timeoutMs);
  } finally {
    delete globals[SLOT];
  }

  if (!("default" in module.exports)) {
    throw new OffloadError(`${configPath} has no default export`, {
      code: "config-invalid",
      fix: "end machines.ts with `export default [ buildMachine({ ... }) ]`",
    });
  }
  let value = module.exports.default;
  if (isThenable(value)) {
    // An async config: wait for it, within what is left of the time limit.
    value = await withDeadline(value, timeoutMs - (Date.now() - started), () => new EvaluationTimeout()).catch((error: unknown) => {
      throw evaluationFailure(configPath, error, locate, timeoutMs);
    });
  }
  return { value, locate };
}

/**
 * The loader's `process` (the same object, except in test sandboxes) as the config sees it: its
 * `env` is the environment it is loaded for — a hook's, also when the agent serves that hook —
 * and it cannot end the process that loads it (the agent serves other hooks meanwhile).
 */
function configProcess(env: NodeJS.ProcessEnv): NodeJS.Process {
  return new Proxy(process, {
    get(target, key) {
      if (key === "env") return env;
      if (key === "exit" || key === "abort" || key === "reallyExit") {
        return () => {
          throw new Error(`process.${String(key)}() in a config: it would end the hook (or the agent serving hooks) that loads it`);
        };
      }
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

class EvaluationTimeout extends Error {}

function evaluationFailure(configPath: string, error: unknown, locate: Evaluated["locate"], timeoutMs: number): OffloadError {
  if (error instanceof EvaluationTimeout || (error as { code?: string })?.code === "ERR_SCRIPT_EXECUTION_TIMEOUT") {
    return new OffloadError(`${configPath} did not finish evaluating within ${timeoutMs / 1000} s (an endless loop, or a promise that never settles?)`, {
      code: "config-timeout",
      fix: "make the default export of machines.ts a plain array computed without waiting on anything slow",
    });
  }
  const isError = types.isNativeError(error);
  const message = isError ? `${error.name}: ${error.message}` : `a non-error value was thrown: ${String(error)}`;
  return new OffloadError(`evaluating ${configPath} threw ${message}`, {
    code: "config-threw",
    fix: "fix the code of machines.ts at the place shown (it runs once per build: it must not throw)",
    location: isError ? userFrame(error, locate) : undefined,
  });
}

/** The first stack frame inside the user's config ("<BUNDLE_NAME>:LINE:COL"), mapped back to their file. */
function userFrame(error: Error, locate: Evaluated["locate"]): SourceLocation | undefined {
  for (const match of (error.stack ?? "").matchAll(FRAME_POSITION)) {
    const location = locate(Number(match[1]), Number(match[2]));
    if (location) return location;
  }
  return undefined;
}
