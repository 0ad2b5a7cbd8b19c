// Loading machines.ts: resolve → safety → (cache | bundle → type-check) → evaluate → validate.
import { readFileSync } from "node:fs";
import { OffloadError } from "../errors.js";
import { defaultCacheDir, readCompiledConfig, sha256Hex, writeCompiledConfig, type CompiledConfig } from "./cache.js";
import { DEFAULT_EVAL_TIMEOUT_MS, evaluateConfig } from "./evaluate.js";
import { resolveConfigPath } from "./resolve.js";
import { checkCodeFilesSafety } from "./safety.js";
import { validateMachines, type Machines } from "./validate.js";

export interface LoadOptions {
  /** --config; else $OFFLOAD_CONFIG; else /etc/offload/machines.ts. */
  config?: string;
  env?: NodeJS.ProcessEnv;
  /** Where compiled configs are cached; false disables the cache. */
  cacheDir?: string | false;
  /** Time limit for evaluating the config; default $OFFLOAD_EVAL_TIMEOUT seconds, else 5 s. */
  evalTimeoutMs?: number;
}

export interface LoadedConfig extends Machines {
  path: string;
  /** True when bundling and type-checking were skipped. */
  fromCache: boolean;
}

export async function loadConfig(options: LoadOptions = {}): Promise<LoadedConfig> {
  const env = options.env ?? process.env;
  const { path } = resolveConfigPath(options.config, env);
  checkCodeFilesSafety([path]);
  const cacheDir = options.cacheDir ?? defaultCacheDir(env);

  let compiled = cacheDir === false ? undefined : readCompiledConfig(cacheDir, path);
  const fromCache = compiled !== undefined;
  if (compiled) {
    checkCodeFilesSafety(compiled.inputs.map((input) => input.path));
  } else {
    compiled = await compileConfig(path);
    if (cacheDir !== false) writeCompiledConfig(cacheDir, path, compiled);
  }
  const timeoutMs = options.evalTimeoutMs ?? (Number(env.OFFLOAD_EVAL_TIMEOUT) * 1000 || DEFAULT_EVAL_TIMEOUT_MS);
  const { value, locate } = await evaluateConfig(path, compiled.code, compiled.sourceMap, timeoutMs, env);
  return { path, fromCache, ...validateMachines(path, value, locate, compiled.locations) };
}

async function compileConfig(path: string): Promise<CompiledConfig> {
  readSource(path); // empty or non-UTF-8 files get a plain message before any compiler sees them
  // Compilers load only on a cache miss: a cached load must stay in the milliseconds.
  const { bundleConfig } = await import("./bundle.js");
  const bundle = await bundleConfig(path);
  checkCodeFilesSafety(bundle.inputs);
  const sources = bundle.inputs.map((input) => ({ path: input, bytes: readFileSync(input) }));
  const texts = sources.map((source) => readSource(source.path, source.bytes));
  const { typeCheckConfig } = await import("./typecheck.js");
  const locations = typeCheckConfig(path, texts);
  return {
    code: bundle.code,
    sourceMap: bundle.sourceMap,
    locations,
    inputs: sources.map((source) => ({ path: source.path, sha256: sha256Hex(source.bytes) })),
  };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function readSource(path: string, bytes: Buffer = readFileSync(path)): string {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    // Point at the first replacement character of a lenient decode: the first bad byte.
    const before = bytes.toString("utf8").split("\uFFFD")[0]!.split("\n");
    throw new OffloadError(`${path} is not valid UTF-8`, {
      code: "config-invalid",
      location: { file: path, line: before.length, column: before.at(-1)!.length + 1 },
      fix: `re-save ${path} as UTF-8 (e.g. iconv -f latin1 -t utf-8)`,
    });
  }
  if (text.trim() === "") {
    throw new OffloadError(`${path} is empty`, { code: "config-invalid", fix: "run `offload init DIR` for a commented template" });
  }
  return text;
}
