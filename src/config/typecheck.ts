// Step 3 of loading: the TypeScript compiler checks machines.ts (and what it imports)
// against offload's shipped types. Only reached on a cache miss: TypeScript takes ~0.4 s
// just to load, so it is required here, lazily, and nowhere else.
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";
import type * as TS from "typescript";
import { OffloadError, type SourceLocation } from "../errors.js";
import { LIGHT_GLOBALS, TYPES_ENTRY } from "../package-root.js";
import { codeFrame } from "./code-frame.js";

const require = createRequire(import.meta.url);

/** Where each buildMachine()/localMachine() call and its literal fields are, keyed by "file:line:column" of the call. */
export type RecordLocations = Record<string, { call: SourceLocation; fields: Record<string, SourceLocation> }>;

/** Names the light declarations in types/config-globals.d.ts cover; anything else of Node's needs @types/node. */
const NODE_BEYOND_LIGHT =
  /["'](node:|(fs|os|path|child_process|crypto|util|url|dns|net|http|https|readline|stream|zlib)(\/[\w/]*)?["'])|\b(Buffer|require|__dirname|__filename|NodeJS|global|setTimeout|setInterval|setImmediate)\b/;

/** "Cannot find name/module" and the "install type definitions for node?" variants. */
const MISSING_NAME_CODES = new Set([2304, 2307, 2580, 2591, 2867, 2868]);

/**
 * Type-checks the config. `sources` are the texts of all its input files: they decide
 * whether the light Node globals suffice or the full @types/node (~0.5 s more) is needed.
 */
export function typeCheckConfig(configPath: string, sources: string[]): RecordLocations {
  const ts: typeof TS = require("typescript");
  const full = sources.some((text) => NODE_BEYOND_LIGHT.test(text));
  let program = ts.createProgram(full ? [configPath] : [configPath, LIGHT_GLOBALS], compilerOptions(ts, full));
  let errors = errorsOf(ts, program);
  if (!full && errors.some((d) => MISSING_NAME_CODES.has(d.code))) {
    // Something of Node's we did not foresee: judge the config against all of Node's types.
    program = ts.createProgram([configPath], compilerOptions(ts, true));
    errors = errorsOf(ts, program);
  }
  if (errors.length > 0) {
    throw new OffloadError(`${configPath} does not type-check`, {
      code: "config-invalid",
      problems: errors.map((diagnostic) => toProblem(ts, diagnostic)),
    });
  }
  const locations: RecordLocations = {};
  for (const file of program.getSourceFiles()) {
    if (!file.isDeclarationFile && !program.isSourceFileFromExternalLibrary(file)) collectRecordLocations(ts, file, locations);
  }
  return locations;
}

function errorsOf(ts: typeof TS, program: TS.Program): readonly TS.Diagnostic[] {
  return ts.getPreEmitDiagnostics(program).filter((d) => d.category === ts.DiagnosticCategory.Error);
}

function compilerOptions(ts: typeof TS, fullNodeTypes: boolean): TS.CompilerOptions {
  const nodeTypes = fullNodeTypes ? dirname(dirname(require.resolve("@types/node/package.json"))) : undefined;
  return {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    allowImportingTsExtensions: true,
    resolveJsonModule: true,
    allowJs: true,
    esModuleInterop: true,
    skipLibCheck: true,
    lib: ["lib.es2023.d.ts"],
    types: nodeTypes ? ["node"] : [],
    typeRoots: nodeTypes ? [nodeTypes] : [],
    paths: { offload: [TYPES_ENTRY] },
  };
}

function toProblem(ts: typeof TS, diagnostic: TS.Diagnostic): OffloadError {
  const message = `${ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n")} (TS${diagnostic.code})`;
  const file = diagnostic.file;
  if (!file || diagnostic.start === undefined) return new OffloadError(message, { code: "config-invalid" });
  const { line, character } = file.getLineAndCharacterOfPosition(diagnostic.start);
  const lineStart = file.getPositionOfLineAndCharacter(line, 0);
  const lineEnd = file.getLineEndOfPosition(diagnostic.start);
  const frame = codeFrame(file.text.slice(lineStart, lineEnd), line + 1, character, diagnostic.length ?? 1);
  return new OffloadError(`${message}\n${frame}`, {
    code: "config-invalid",
    location: { file: resolve(file.fileName), line: line + 1, column: character + 1 },
  });
}

function collectRecordLocations(ts: typeof TS, file: TS.SourceFile, into: RecordLocations): void {
  const at = (node: TS.Node): SourceLocation => {
    const { line, character } = file.getLineAndCharacterOfPosition(node.getStart(file));
    return { file: resolve(file.fileName), line: line + 1, column: character + 1 };
  };
  const visit = (node: TS.Node): void => {
    const callee = ts.isCallExpression(node) ? recordConstructorName(ts, node.expression) : undefined;
    if (callee && ts.isCallExpression(node)) {
      // V8 reports a call at its function name, so that is the key.
      const call = at(callee);
      const fields: Record<string, SourceLocation> = {};
      const literal = node.arguments[0];
      if (literal && ts.isObjectLiteralExpression(literal)) {
        for (const property of literal.properties) {
          if ((ts.isPropertyAssignment(property) || ts.isShorthandPropertyAssignment(property)) && !ts.isComputedPropertyName(property.name)) {
            fields[property.name.text] = at(property);
          }
        }
      }
      into[`${call.file}:${call.line}:${call.column}`] = { call, fields };
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
}

/** The name node of a buildMachine/localMachine callee (plain or `lib.buildMachine`), else undefined. */
function recordConstructorName(ts: typeof TS, callee: TS.Expression): TS.Node | undefined {
  const name = ts.isIdentifier(callee) ? callee : ts.isPropertyAccessExpression(callee) ? callee.name : undefined;
  return name && (name.text === "buildMachine" || name.text === "localMachine") ? name : undefined;
}
