// The layers of src/, lowest first, as docs/architecture.md draws them: a module imports
// only from its own layer or lower ones, and no two modules import each other, directly or
// in a ring. Read from the import statements themselves (type-only imports count too: a type
// from a higher layer is a dependency on it all the same).
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { PACKAGE_ROOT } from "../src/package-root.js";

const SRC = join(PACKAGE_ROOT, "src");

/** Each layer: the directories (or top-level files) in it. */
const LAYERS: Array<[name: string, members: string[]]> = [
  ["base: errors, limits, files", ["errors.ts", "deadline.ts", "defaults.ts", "package-root.ts", "version.ts", "files"]],
  ["codecs: Nix's and Guix's formats", ["nix", "guix"]],
  ["remote: SSH and what it reads", ["remote"]],
  ["config: machines.ts", ["config"]],
  ["select: the decision", ["select"]],
  ["store: stores and their protocols", ["store"]],
  ["agent: links to machines", ["agent"]],
  ["commands: the hooks, check, the lab", ["hook", "check", "lab"]],
  ["entry points: cli, the package", ["cli", "index.ts"]],
];

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : entry.name.endsWith(".ts") ? [join(dir, entry.name)] : [],
  );
}

function layerOf(file: string): number {
  const top = relative(SRC, file).split("/")[0]!;
  const index = LAYERS.findIndex(([, members]) => members.includes(top));
  if (index < 0) throw new Error(`${relative(PACKAGE_ROOT, file)} is in no layer: add ${top} to LAYERS (and to docs/architecture.md)`);
  return index;
}

/** file → the src files it imports. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(SRC)) {
    const text = readFileSync(file, "utf8");
    const targets = [...text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)["'](\.{1,2}\/[^"']+)["']/g)].map((match) =>
      normalize(join(dirname(file), match[1]!.replace(/\.js$/, ".ts"))),
    );
    graph.set(
      file,
      targets.filter((target) => target.startsWith(SRC)),
    );
  }
  return graph;
}

test("every module imports only from its own layer or lower ones", () => {
  const upward: string[] = [];
  for (const [file, targets] of importGraph()) {
    for (const target of targets) {
      if (layerOf(target) > layerOf(file))
        upward.push(`${relative(SRC, file)} (${LAYERS[layerOf(file)]![0]}) imports ${relative(SRC, target)} (${LAYERS[layerOf(target)]![0]})`);
    }
  }
  expect(upward).toEqual([]);
});

test("no import cycles", () => {
  const graph = importGraph();
  // Tarjan's strongly connected components: a component of more than one module is a cycle.
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (file: string): void => {
    index.set(file, counter);
    low.set(file, counter++);
    stack.push(file);
    onStack.add(file);
    for (const target of graph.get(file) ?? []) {
      if (!index.has(target)) {
        visit(target);
        low.set(file, Math.min(low.get(file)!, low.get(target)!));
      } else if (onStack.has(target)) low.set(file, Math.min(low.get(file)!, index.get(target)!));
    }
    if (low.get(file) === index.get(file)) {
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        component.push(relative(SRC, member));
      } while (member !== file);
      if (component.length > 1) cycles.push(component.sort());
    }
  };
  for (const file of graph.keys()) if (!index.has(file)) visit(file);
  expect(cycles).toEqual([]);
});
