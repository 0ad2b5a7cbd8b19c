// Step 2 of loading: esbuild turns machines.ts and everything it imports into one CommonJS
// script with a source map, and tells us every input file (for safety checks and the cache).
import { build, type Message } from "esbuild";
import { dirname, relative, resolve } from "node:path";
import { OffloadError } from "../errors.js";
import { RUNTIME_ENTRY } from "../package-root.js";
import { codeFrame } from "./code-frame.js";
import { bundleFileName } from "./evaluate.js";

/** offload's own runtime is bundled in too, but it is not the user's input. */
const RUNTIME_DIR = dirname(RUNTIME_ENTRY) + "/";

export interface Bundle {
  code: string;
  /** Source map JSON; its sources are relative to `dirname(configPath)`. */
  sourceMap: string;
  /** Absolute paths of the user's input files (offload's own runtime excluded). */
  inputs: string[];
}

export async function bundleConfig(configPath: string): Promise<Bundle> {
  const workingDir = dirname(configPath);
  let result;
  try {
    result = await build({
      absWorkingDir: workingDir,
      entryPoints: [configPath],
      outfile: bundleFileName(configPath),
      bundle: true,
      write: false,
      format: "cjs",
      platform: "node",
      target: "node20",
      sourcemap: "external",
      sourcesContent: false,
      metafile: true,
      alias: { offload: RUNTIME_ENTRY },
      logLevel: "silent",
    });
  } catch (error) {
    throw bundleFailure(configPath, error);
  }
  const code = result.outputFiles.find((f) => f.path.endsWith(".cjs"))!.text;
  const sourceMap = result.outputFiles.find((f) => f.path.endsWith(".map"))!.text;
  const inputs = Object.keys(result.metafile.inputs)
    .map((input) => resolve(workingDir, input))
    .filter((input) => !input.startsWith(RUNTIME_DIR));
  return { code, sourceMap, inputs };
}

function bundleFailure(configPath: string, error: unknown): OffloadError {
  const messages: Message[] = (error as { errors?: Message[] }).errors ?? [];
  if (messages.length === 0) {
    return new OffloadError(`cannot bundle ${configPath}: ${(error as Error).message}`, { code: "config-invalid", cause: error });
  }
  const problems = messages.map((message) => {
    const where = message.location;
    const location = where?.file ? { file: resolve(dirname(configPath), where.file), line: where.line, column: where.column + 1 } : undefined;
    const frame = where ? `\n${codeFrame(where.lineText, where.line, where.column, where.length)}` : "";
    return new OffloadError(`${explain(message.text, configPath)}${frame}`, { code: "config-invalid", location });
  });
  return new OffloadError(`${configPath} cannot be compiled`, { code: "config-invalid", problems });
}

/** esbuild's wording, with the consequence spelled out where users hit it. */
function explain(esbuildText: string, configPath: string): string {
  // esbuild names the runtime by its path relative to the config; users know it as "offload".
  const text = esbuildText.replaceAll(`"${relative(dirname(configPath), RUNTIME_ENTRY)}"`, '"offload"');
  if (/Could not resolve/.test(text)) return `${text} (imported modules must exist next to machines.ts or be installed)`;
  if (/Top-level await/.test(text)) {
    return `top-level await is not supported in machines.ts; export a promise instead: export default (async () => [ ... ])()`;
  }
  return text;
}
