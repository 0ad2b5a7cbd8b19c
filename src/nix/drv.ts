// Parser of .drv files, the ATerm text Nix writes for a derivation (derivations.cc):
// Derive([outputs],[inputDrvs],[inputSrcs],"platform","builder",[args],[env]).
import { OffloadError } from "../errors.js";
import { DEFAULT_STORE_DIR, parseStorePath } from "./store-path.js";

export interface DerivationOutput {
  /** Store path, or "" for an output whose path is not known yet (content-addressed). */
  path: string;
  /** "" for input-addressed outputs; e.g. "sha256" or "r:sha256" for fixed-output ones. */
  hashAlgo: string;
  /** Base-16 hash of a fixed-output derivation, else "". */
  hash: string;
}

export interface Derivation {
  outputs: Map<string, DerivationOutput>;
  /** .drv path → names of the outputs used. */
  inputDrvs: Map<string, string[]>;
  inputSrcs: string[];
  platform: string;
  builder: string;
  args: string[];
  env: Map<string, string>;
}

class Parser {
  pos = 0;

  constructor(
    private readonly text: string,
    private readonly file: string | undefined,
    private readonly storeDir: string,
  ) {}

  fail(message: string, at: number = this.pos): never {
    const where = this.file === undefined ? "" : ` of ${this.file}`;
    throw new OffloadError(`drv: ${message} at offset ${at}${where}`, { code: "drv-invalid" });
  }

  expect(token: string): void {
    if (!this.text.startsWith(token, this.pos)) {
      const found = this.pos >= this.text.length ? "the end of the file" : JSON.stringify(this.text.slice(this.pos, this.pos + 12));
      this.fail(`expected ${JSON.stringify(token)} but found ${found}`);
    }
    this.pos += token.length;
  }

  /** A quoted string; like Nix, `\n`, `\r`, `\t` are control characters and `\x` is x. */
  string(): string {
    this.expect('"');
    const start = this.pos - 1;
    let out = "";
    let from = this.pos;
    for (;;) {
      const c = this.text.charCodeAt(this.pos);
      if (c === 0x22) {
        out += this.text.slice(from, this.pos++);
        return out;
      }
      if (Number.isNaN(c)) this.fail("unterminated string", start);
      if (c === 0x5c) {
        out += this.text.slice(from, this.pos);
        const escaped = this.text[this.pos + 1];
        if (escaped === undefined) this.fail("unterminated string", start);
        out += escaped === "n" ? "\n" : escaped === "r" ? "\r" : escaped === "t" ? "\t" : escaped;
        this.pos += 2;
        from = this.pos;
        continue;
      }
      this.pos++;
    }
  }

  storePath(what: string): string {
    const at = this.pos;
    return this.checkStorePath(this.string(), what, at);
  }

  checkStorePath(path: string, what: string, at: number): string {
    try {
      return parseStorePath(path, this.storeDir).path;
    } catch (error) {
      this.fail(`${what}: ${(error as Error).message}`, at);
    }
  }

  list<T>(item: () => T): T[] {
    this.expect("[");
    const out: T[] = [];
    if (this.text[this.pos] === "]") {
      this.pos++;
      return out;
    }
    for (;;) {
      out.push(item());
      if (this.text[this.pos] !== ",") break;
      this.pos++;
    }
    this.expect("]");
    return out;
  }

  /** Adds a key to a map, refusing duplicates (Nix never writes them; a map would hide them). */
  put<V>(map: Map<string, V>, key: string, value: V, what: string, at: number): void {
    if (map.has(key)) this.fail(`duplicate ${what} ${JSON.stringify(key)}`, at);
    map.set(key, value);
  }
}

/** Parses the text of a .drv file; `path` (for messages) names the file. */
export function parseDerivation(text: string, path?: string, storeDir: string = DEFAULT_STORE_DIR): Derivation {
  const p = new Parser(text, path, storeDir);
  p.expect("Derive(");

  const outputs = new Map<string, DerivationOutput>();
  p.list(() => {
    const at = p.pos;
    p.expect("(");
    const name = p.string();
    p.expect(",");
    const pathAt = p.pos;
    const outPath = p.string();
    if (outPath !== "") p.checkStorePath(outPath, `path of output ${JSON.stringify(name)}`, pathAt);
    p.expect(",");
    const hashAlgo = p.string();
    p.expect(",");
    const hash = p.string();
    p.expect(")");
    p.put(outputs, name, { path: outPath, hashAlgo, hash }, "output", at);
  });
  if (outputs.size === 0) p.fail("a derivation needs at least one output");
  p.expect(",");

  const inputDrvs = new Map<string, string[]>();
  p.list(() => {
    const at = p.pos;
    p.expect("(");
    const drv = p.storePath("input derivation");
    p.expect(",");
    const names = p.list(() => p.string());
    p.expect(")");
    p.put(inputDrvs, drv, names, "input derivation", at);
  });
  p.expect(",");
  const inputSrcs = p.list(() => p.storePath("input source"));
  p.expect(",");
  const platform = p.string();
  p.expect(",");
  const builder = p.string();
  p.expect(",");
  const args = p.list(() => p.string());
  p.expect(",");

  const env = new Map<string, string>();
  p.list(() => {
    const at = p.pos;
    p.expect("(");
    const key = p.string();
    p.expect(",");
    const value = p.string();
    p.expect(")");
    p.put(env, key, value, "environment variable", at);
  });
  p.expect(")");
  if (p.pos !== text.length) p.fail("unexpected text after the derivation");
  return { outputs, inputDrvs, inputSrcs, platform, builder, args, env };
}
