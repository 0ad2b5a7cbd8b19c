// A reader for the Scheme that Guix's machines.scm is written in: data only, never evaluated.
// Every datum keeps where it starts and ends, so importers can point at the line:col of
// anything they cannot translate and quote its source text.
import { OffloadError } from "../../errors.js";

export interface Position {
  offset: number;
  line: number; // 1-based
  column: number; // 1-based, in UTF-16 units like editors
}

interface Span {
  start: Position;
  /** Offset just past the datum. */
  end: number;
}

export type Datum = Span &
  (
    | { kind: "list"; items: Datum[]; /** After a dot: `(a . b)`. */ tail?: Datum }
    | { kind: "vector"; items: Datum[] }
    | { kind: "string"; value: string }
    | { kind: "number"; value: number }
    | { kind: "boolean"; value: boolean }
    | { kind: "symbol"; name: string }
    | { kind: "keyword"; name: string }
    | { kind: "char"; value: string }
  );

/** Reader prefixes and the form each abbreviates, longest first so `,@` wins over `,`. */
const PREFIXES: [string, string][] = [
  [",@", "unquote-splicing"],
  ["#$@", "ungexp-splicing"],
  ["'", "quote"],
  ["`", "quasiquote"],
  [",", "unquote"],
  ["#~", "gexp"],
  ["#$", "ungexp"],
  ["#'", "syntax"],
  ["#`", "quasisyntax"],
  ["#,", "unsyntax"],
];

const CLOSERS: Record<string, string> = { "(": ")", "[": "]" };
const DELIMITER = /[\s()[\]";]/;
const CHAR_NAMES: Record<string, string> = {
  space: " ",
  newline: "\n",
  tab: "\t",
  nul: "\0",
  null: "\0",
  return: "\r",
  linefeed: "\n",
  alarm: "\x07",
  backspace: "\b",
  delete: "\x7f",
  escape: "\x1b",
  altmode: "\x1b",
  page: "\f",
};
const STRING_ESCAPES: Record<string, string> = {
  "\\": "\\",
  '"': '"',
  n: "\n",
  t: "\t",
  r: "\r",
  a: "\x07",
  f: "\f",
  v: "\v",
  b: "\b",
  "0": "\0",
};
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
const RATIONAL = /^[+-]?\d+\/\d+$/;
const RADIX: Record<string, { base: number; digits: RegExp }> = {
  x: { base: 16, digits: /^[+-]?[0-9a-f]+$/i },
  o: { base: 8, digits: /^[+-]?[0-7]+$/ },
  b: { base: 2, digits: /^[+-]?[01]+$/ },
};
/** `\` then blanks, a newline and the next line's indentation: a line continuation inside a string. */
const CONTINUATION = /\\[ \t]*\n[ \t]*/y;

/** Reads every top-level datum of `text`; `file` names it in errors. */
export function readSexps(text: string, file: string): Datum[] {
  return new Reader(text, file).readAll();
}

/** The source text of a datum on one line, for comments and messages. */
export function sourceOf(text: string, datum: Datum): string {
  return text.slice(datum.start.offset, datum.end).replace(/\s+/g, " ");
}

class Reader {
  private offset = 0;
  private readonly lineStarts: number[] = [0];

  constructor(
    private readonly text: string,
    private readonly file: string,
  ) {
    for (let i = 0; i < text.length; i++) if (text[i] === "\n") this.lineStarts.push(i + 1);
  }

  readAll(): Datum[] {
    const data: Datum[] = [];
    for (;;) {
      this.skipAtmosphere();
      if (this.offset >= this.text.length) return data;
      const c = this.text[this.offset]!;
      if (c === ")" || c === "]") throw this.error(this.offset, `unexpected '${c}' with no list open`);
      data.push(this.readDatum());
    }
  }

  private position(offset: number): Position {
    let low = 0;
    let high = this.lineStarts.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (this.lineStarts[middle]! <= offset) low = middle;
      else high = middle - 1;
    }
    return { offset, line: low + 1, column: offset - this.lineStarts[low]! + 1 };
  }

  private error(offset: number, message: string): OffloadError {
    const { line, column } = this.position(offset);
    return new OffloadError(message, { code: "import-invalid", location: { file: this.file, line, column } });
  }

  private where(offset: number): string {
    const { line, column } = this.position(offset);
    return `${line}:${column}`;
  }

  /** Whitespace and the three kinds of comments (`;`, `#| |#` nesting, `#!  !#`), and `#;` datum comments. */
  private skipAtmosphere(): void {
    const text = this.text;
    while (this.offset < text.length) {
      const c = text[this.offset]!;
      if (/\s/.test(c)) {
        this.offset++;
      } else if (c === ";") {
        const newline = text.indexOf("\n", this.offset);
        this.offset = newline < 0 ? text.length : newline + 1;
      } else if (text.startsWith("#|", this.offset)) {
        this.skipBlockComment();
      } else if (text.startsWith("#!", this.offset)) {
        const close = text.indexOf("!#", this.offset + 2);
        if (close < 0) throw this.error(this.offset, "unterminated #! … !# comment");
        this.offset = close + 2;
      } else if (text.startsWith("#;", this.offset)) {
        const at = this.offset;
        this.offset += 2;
        this.skipAtmosphere();
        if (this.offset >= text.length || text[this.offset] === ")" || text[this.offset] === "]") {
          throw this.error(at, "#; datum comment with no datum after it");
        }
        this.readDatum();
      } else {
        return;
      }
    }
  }

  private skipBlockComment(): void {
    const start = this.offset;
    let depth = 0;
    while (this.offset < this.text.length) {
      if (this.text.startsWith("#|", this.offset)) {
        depth++;
        this.offset += 2;
      } else if (this.text.startsWith("|#", this.offset)) {
        depth--;
        this.offset += 2;
        if (depth === 0) return;
      } else {
        this.offset++;
      }
    }
    throw this.error(start, "unterminated #| … |# comment");
  }

  private readDatum(): Datum {
    const text = this.text;
    const start = this.offset;
    const c = text[start]!;
    if (c in CLOSERS) return this.readList(start, CLOSERS[c]!, 1);
    if (c === '"') return this.readString(start);
    if (text.startsWith("#(", start)) return this.readList(start, ")", 2);
    const prefix = PREFIXES.find(([p]) => text.startsWith(p, start));
    if (prefix) {
      this.offset += prefix[0].length;
      this.skipAtmosphere();
      if (this.offset >= text.length || text[this.offset] === ")" || text[this.offset] === "]") {
        throw this.error(start, `${prefix[0]} with no datum after it`);
      }
      const quoted = this.readDatum();
      const head: Datum = { kind: "symbol", name: prefix[1], start: this.position(start), end: start + prefix[0].length };
      return { kind: "list", items: [head, quoted], start: this.position(start), end: quoted.end };
    }
    if (c === "#" && text[start + 1] === "\\") return this.readChar(start);
    return this.readAtom(start);
  }

  private readList(start: number, closer: string, openerLength: number): Datum {
    const items: Datum[] = [];
    let tail: Datum | undefined;
    this.offset = start + openerLength;
    for (;;) {
      this.skipAtmosphere();
      if (this.offset >= this.text.length) throw this.error(start, `missing '${closer}' to close the list opened here`);
      const c = this.text[this.offset]!;
      if (c === ")" || c === "]") {
        if (c !== closer) throw this.error(this.offset, `'${c}' closes the list opened at ${this.where(start)}, which needs '${closer}'`);
        this.offset++;
        const base = { start: this.position(start), end: this.offset };
        return openerLength === 2 ? { kind: "vector", items, ...base } : { kind: "list", items, ...(tail ? { tail } : {}), ...base };
      }
      if (tail) throw this.error(this.offset, "only one datum may follow the dot of a pair");
      if (c === "." && DELIMITER.test(this.text[this.offset + 1] ?? " ") && openerLength === 1) {
        if (items.length === 0) throw this.error(this.offset, "a dot must follow at least one datum");
        this.offset++;
        this.skipAtmosphere();
        if (this.offset >= this.text.length || /[)\]]/.test(this.text[this.offset]!)) throw this.error(this.offset, "a dot must be followed by a datum");
        tail = this.readDatum();
        continue;
      }
      items.push(this.readDatum());
    }
  }

  private readString(start: number): Datum {
    const text = this.text;
    let value = "";
    let i = start + 1;
    for (;;) {
      if (i >= text.length) throw this.error(start, "unterminated string");
      const c = text[i]!;
      if (c === '"') break;
      if (c !== "\\") {
        value += c;
        i++;
        continue;
      }
      const e = text[i + 1];
      if (e === undefined) throw this.error(start, "unterminated string");
      CONTINUATION.lastIndex = i;
      if (e in STRING_ESCAPES) {
        value += STRING_ESCAPES[e];
        i += 2;
      } else if (CONTINUATION.test(text)) {
        i = CONTINUATION.lastIndex;
      } else if (e === "x" || e === "u" || e === "U") {
        // Guile: \xHH, \uHHHH, \UHHHHHH; R7RS: \xH…; (terminated by a semicolon).
        const digits = e === "x" ? /^x([0-9a-fA-F]+);|^x([0-9a-fA-F]{2})/ : e === "u" ? /^u([0-9a-fA-F]{4})/ : /^U([0-9a-fA-F]{6})/;
        const match = digits.exec(text.slice(i + 1, i + 16));
        const code = match ? parseInt(match[1] ?? match[2]!, 16) : NaN;
        if (!match || code > 0x10ffff) throw this.error(i, `bad \\${e} escape in string`);
        value += String.fromCodePoint(code);
        i += 1 + match[0].length;
      } else {
        throw this.error(i, `unknown escape \\${e} in string`);
      }
    }
    this.offset = i + 1;
    return { kind: "string", value, start: this.position(start), end: this.offset };
  }

  private readChar(start: number): Datum {
    // `#\(` and `#\ ` are characters even though they are delimiters.
    let end = start + 3;
    while (end < this.text.length && !DELIMITER.test(this.text[end]!)) end++;
    const name = this.text.slice(start + 2, end);
    const hex = /^x([0-9a-fA-F]+)$/.exec(name);
    const value = [...name].length === 1 ? name : hex ? String.fromCodePoint(parseInt(hex[1]!, 16)) : CHAR_NAMES[name.toLowerCase()];
    if (value === undefined) throw this.error(start, `unknown character name #\\${name}`);
    this.offset = end;
    return { kind: "char", value, start: this.position(start), end };
  }

  private readAtom(start: number): Datum {
    let end = start;
    while (end < this.text.length && !DELIMITER.test(this.text[end]!)) end++;
    const token = this.text.slice(start, end);
    this.offset = end;
    const base = { start: this.position(start), end };
    if (token.startsWith("#")) {
      const rest = token.slice(1);
      if (/^(t|true)$/i.test(rest)) return { kind: "boolean", value: true, ...base };
      if (/^(f|false)$/i.test(rest)) return { kind: "boolean", value: false, ...base };
      if (rest.startsWith(":") && rest.length > 1) return { kind: "keyword", name: rest.slice(1), ...base };
      const value = parseNumber(token);
      if (value !== undefined) return { kind: "number", value, ...base };
      throw this.error(start, `unsupported # syntax: ${token}`);
    }
    const value = parseNumber(token);
    return value === undefined ? { kind: "symbol", name: token, ...base } : { kind: "number", value, ...base };
  }
}

/** Scheme's real numbers as Guile reads them: decimals (`2.`, `.5`, `1e3`), fractions, and `#x`/`#e`… prefixes. */
function parseNumber(token: string): number | undefined {
  let body = token;
  let radix: (typeof RADIX)[string] | undefined;
  // `#e`, `#i` (exactness) and `#d` (decimal) change nothing a machine field could tell apart.
  for (let prefix = /^#([xobdei])/i.exec(body); prefix; prefix = /^#([xobdei])/i.exec(body)) {
    radix = RADIX[prefix[1]!.toLowerCase()] ?? radix;
    body = body.slice(2);
  }
  if (radix) return radix.digits.test(body) ? parseInt(body, radix.base) : undefined;
  if (DECIMAL.test(body)) return Number(body);
  if (RATIONAL.test(body)) {
    const [numerator, denominator] = body.split("/").map(Number) as [number, number];
    return denominator === 0 ? undefined : numerator / denominator;
  }
  return undefined;
}
