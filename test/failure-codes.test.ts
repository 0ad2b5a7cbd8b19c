// The failure catalogue's rules, checked at every place an OffloadError is raised in src/:
// its code is one of FAILURE_CODES (the type checker sees to that), and it carries a fix
// unless its code is one WITHOUT_FIX allows (a codec's error its caller wraps, an aggregate,
// a usage error, a bug).
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import ts from "typescript";
import { FAILURE_CODES, WITHOUT_FIX } from "../src/errors.js";
import { PACKAGE_ROOT } from "../src/package-root.js";

const SRC = join(PACKAGE_ROOT, "src");

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sources(join(dir, entry.name)) : entry.name.endsWith(".ts") ? [join(dir, entry.name)] : [],
  );
}

interface RaiseSite {
  at: string;
  /** The code's literal text, or the expression that computes it, or undefined when none is given. */
  code?: string;
  literal: boolean;
  hasFix: boolean;
}

function raiseSites(): RaiseSite[] {
  const sites: RaiseSite[] = [];
  for (const file of sources(SRC)) {
    const source = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true);
    const visit = (node: ts.Node): void => {
      if (ts.isNewExpression(node) && node.expression.getText(source) === "OffloadError") {
        const options = node.arguments?.[1];
        const at = `${relative(PACKAGE_ROOT, file)}:${source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1}`;
        if (options && !ts.isObjectLiteralExpression(options)) {
          sites.push({ at, code: options.getText(source), literal: false, hasFix: true }); // options built elsewhere: checked there
        } else {
          const properties = options?.properties ?? ts.factory.createNodeArray();
          const named = (name: string) => properties.find((property) => property.name?.getText(source) === name);
          const code = named("code");
          const initializer = code && ts.isPropertyAssignment(code) ? code.initializer : undefined;
          sites.push({
            at,
            code: initializer ? (ts.isStringLiteral(initializer) ? initializer.text : initializer.getText(source)) : code ? "code" : undefined,
            literal: initializer !== undefined && ts.isStringLiteral(initializer),
            hasFix: named("fix") !== undefined || properties.some((property) => ts.isSpreadAssignment(property)),
          });
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  return sites;
}

test("every failure raised without a fix has a code that may go without one", () => {
  const sites = raiseSites();
  expect(sites.length).toBeGreaterThan(200);
  const missing = sites
    .filter((site) => !site.hasFix && !(site.literal && WITHOUT_FIX.has(site.code as never)))
    .map((site) => `${site.at}: ${site.code ?? "(no code)"}`);
  expect(missing).toEqual([]);
});

test("the catalogue is sorted, has no duplicates, and WITHOUT_FIX names only its codes", () => {
  expect([...FAILURE_CODES]).toEqual([...new Set(FAILURE_CODES)].sort());
  for (const code of WITHOUT_FIX) expect(FAILURE_CODES).toContain(code);
});
