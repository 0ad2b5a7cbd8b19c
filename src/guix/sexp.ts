// libgcrypt's S-expressions, as Guix keeps its keys, ACL and signatures in them (guix/pki.scm,
// gcrypt/pk-crypto.scm). Reading takes every form gcry_sexp_sscan takes — canonical
// (`3:abc`), tokens, "quoted strings", #hex#, |base64| — since Guix writes the "advanced"
// form (key files, /etc/guix/acl, the signatures in archives) and reads any. Writing gives
// the canonical form, and the advanced form byte for byte as libgcrypt prints it
// (gcry_sexp_sprint, GCRYSEXP_FMT_ADVANCED), so what we write is what Guix itself would.
// An atom is bytes: libgcrypt does not tell a token from a string, only prints them apart.
import { OffloadError } from "../errors.js";

export type Sexp = Buffer | Sexp[];

/** Nesting deeper than this is refused: keys, ACLs and signatures are a few levels deep. */
const MAX_DEPTH = 64;
const TOKEN_PUNCTUATION = "-./_:*+=";
const WHITESPACE = new Set([0x20, 0x09, 0x0a, 0x0d, 0x0c, 0x0b]);

function bad(message: string, offset?: number): OffloadError {
  return new OffloadError(`s-expression: ${message}${offset === undefined ? "" : ` (at byte ${offset})`}`, { code: "sexp-invalid" });
}

const isDigit = (c: number) => c >= 0x30 && c <= 0x39;
const isAlpha = (c: number) => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
const isTokenChar = (c: number) => isAlpha(c) || isDigit(c) || TOKEN_PUNCTUATION.includes(String.fromCharCode(c));

/** Parses one S-expression (a list) in any of libgcrypt's forms; trailing whitespace is allowed. */
export function parseSexp(input: Buffer | string): Sexp[] {
  const text = typeof input === "string" ? Buffer.from(input, "latin1") : input;
  let at = 0;
  const skipSpace = () => {
    while (at < text.length && WHITESPACE.has(text[at]!)) at++;
  };
  const expect = (what: string): number => {
    if (at >= text.length) throw bad(`unexpected end, expected ${what}`, at);
    return text[at]!;
  };

  function list(depth: number): Sexp[] {
    if (depth > MAX_DEPTH) throw bad(`nested deeper than ${MAX_DEPTH} lists`, at);
    at++; // "("
    const items: Sexp[] = [];
    for (;;) {
      skipSpace();
      const c = expect('")"');
      if (c === 0x29) {
        at++;
        return items;
      }
      items.push(c === 0x28 ? list(depth + 1) : atom());
    }
  }

  function atom(): Buffer {
    const start = at;
    const c = text[at]!;
    if (isDigit(c)) {
      while (at < text.length && isDigit(text[at]!)) at++;
      const length = Number(text.subarray(start, at).toString("latin1"));
      const kind = expect('":" after a length');
      if (kind !== 0x3a) throw bad("a length must be followed by ':' (numbers are not tokens)", at);
      at++;
      if (!Number.isSafeInteger(length) || at + length > text.length) throw bad(`length ${length} runs past the end`, start);
      at += length;
      return Buffer.from(text.subarray(at - length, at));
    }
    if (isAlpha(c) || TOKEN_PUNCTUATION.includes(String.fromCharCode(c))) {
      while (at < text.length && isTokenChar(text[at]!)) at++;
      return Buffer.from(text.subarray(start, at));
    }
    if (c === 0x22) return quoted();
    if (c === 0x23)
      return delimited(0x23, "hex", (body) => {
        const digits = body.replace(/\s+/g, "");
        if (!/^(?:[0-9A-Fa-f]{2})*$/.test(digits)) throw bad("invalid hex string", start);
        return Buffer.from(digits, "hex");
      });
    if (c === 0x7c)
      return delimited(0x7c, "base64", (body) => {
        const digits = body.replace(/\s+/g, "");
        if (!/^[A-Za-z0-9+/]*={0,2}$/.test(digits) || digits.length % 4 === 1) throw bad("invalid base64 string", start);
        return Buffer.from(digits, "base64");
      });
    if (c === 0x5b) throw bad("display hints ([…]) are not supported", at);
    throw bad(`unexpected character ${JSON.stringify(String.fromCharCode(c))}`, at);
  }

  function delimited(end: number, what: string, decode: (body: string) => Buffer): Buffer {
    const start = at++;
    const close = text.indexOf(end, at);
    if (close < 0) throw bad(`unterminated ${what} string`, start);
    at = close + 1;
    return decode(text.subarray(start + 1, close).toString("latin1"));
  }

  // libgcrypt's escapes: \b \t \v \n \f \r \" \' \\, \xHH, three octal digits, and a
  // backslash before a line break (the break is dropped).
  function quoted(): Buffer {
    const start = at++;
    const out: number[] = [];
    const simple: Record<string, number> = { b: 8, t: 9, v: 11, n: 10, f: 12, r: 13, '"': 0x22, "'": 0x27, "\\": 0x5c };
    for (;;) {
      if (at >= text.length) throw bad("unterminated quoted string", start);
      const c = text[at++]!;
      if (c === 0x22) return Buffer.from(out);
      if (c !== 0x5c) {
        out.push(c);
        continue;
      }
      if (at >= text.length) throw bad("unterminated quoted string", start);
      const e = String.fromCharCode(text[at]!);
      if (e in simple) {
        out.push(simple[e]!);
        at++;
      } else if (e === "x" && /^[0-9A-Fa-f]{2}$/.test(text.subarray(at + 1, at + 3).toString("latin1"))) {
        out.push(parseInt(text.subarray(at + 1, at + 3).toString("latin1"), 16));
        at += 3;
      } else if (/^[0-7]{3}$/.test(text.subarray(at, at + 3).toString("latin1"))) {
        out.push(parseInt(text.subarray(at, at + 3).toString("latin1"), 8) & 0xff);
        at += 3;
      } else if (e === "\n" || e === "\r") {
        at++;
        const next = text[at];
        if ((e === "\n" && next === 0x0d) || (e === "\r" && next === 0x0a)) at++;
      } else {
        throw bad(`invalid escape \\${e} in a quoted string`, at - 1);
      }
    }
  }

  skipSpace();
  if (expect('"("') !== 0x28) throw bad("an S-expression must start with '('", at);
  const result = list(1);
  skipSpace();
  if (at !== text.length) throw bad("trailing data after the S-expression", at);
  return result;
}

/** The canonical form: `(` then each atom as `length:bytes`, no spaces. */
export function canonicalSexp(sexp: Sexp): Buffer {
  const parts: Buffer[] = [];
  const walk = (node: Sexp) => {
    if (Buffer.isBuffer(node)) {
      parts.push(Buffer.from(`${node.length}:`, "latin1"), node);
      return;
    }
    parts.push(Buffer.from("("));
    node.forEach(walk);
    parts.push(Buffer.from(")"));
  };
  walk(sexp);
  return Buffer.concat(parts);
}

// libgcrypt's suitable_encoding: 2 = a token, 1 = a quoted string, 0 = hex.
function encodingOf(atom: Buffer): 0 | 1 | 2 {
  if (atom.length === 0) return 1;
  if (atom[0]! & 0x80 || atom[0] === 0) return 0;
  let token = true;
  for (const c of atom) {
    if ((c < 0x20 || (c >= 0x7f && c <= 0xa0)) && !"\b\t\v\n\f\r\"'\\".includes(String.fromCharCode(c))) return 0;
    if (token && !isTokenChar(c)) token = false;
  }
  return token && !isDigit(atom[0]!) ? 2 : 1;
}

const ESCAPES: Record<number, string> = { 8: "\\b", 9: "\\t", 11: "\\v", 10: "\\n", 12: "\\f", 13: "\\r", 0x22: '\\"', 0x27: "\\'", 0x5c: "\\\\" };

function advancedAtom(atom: Buffer): Buffer {
  switch (encodingOf(atom)) {
    case 2:
      return atom;
    case 1: {
      const out: Buffer[] = [Buffer.from('"')];
      for (const c of atom) {
        const escape = ESCAPES[c];
        if (escape) out.push(Buffer.from(escape, "latin1"));
        else if (c < 0x20 || (c >= 0x7f && c <= 0xa0)) out.push(Buffer.from(`\\x${c.toString(16).padStart(2, "0")}`, "latin1"));
        else out.push(Buffer.from([c]));
      }
      out.push(Buffer.from('"'));
      return Buffer.concat(out);
    }
    default:
      return Buffer.from(`#${atom.toString("hex").toUpperCase()}#`, "latin1");
  }
}

/**
 * The advanced form exactly as libgcrypt prints it: a list opened on a new line indented by
 * its depth, a space after an atom unless a `)` follows, a line break after a `)` followed by
 * an atom or a `)`, and a final line break. Guix writes its files and signatures this way.
 */
export function advancedSexp(sexp: Sexp[]): Buffer {
  const out: Buffer[] = [];
  let indent = 0;
  // Flattened into libgcrypt's internal sequence of open, data, close.
  type Item = { open: true } | { close: true } | { atom: Buffer };
  const items: Item[] = [];
  const flatten = (node: Sexp) => {
    if (Buffer.isBuffer(node)) return void items.push({ atom: node });
    items.push({ open: true });
    node.forEach(flatten);
    items.push({ close: true });
  };
  flatten(sexp);
  items.forEach((item, index) => {
    const next = items[index + 1];
    if ("open" in item) {
      if (indent > 0) out.push(Buffer.from(`\n${" ".repeat(indent)}`));
      out.push(Buffer.from("("));
      indent++;
    } else if ("close" in item) {
      out.push(Buffer.from(")"));
      indent--;
      if (next !== undefined && !("open" in next)) out.push(Buffer.from(`\n${" ".repeat(indent)}`));
    } else {
      out.push(advancedAtom(item.atom));
      if (next !== undefined && !("close" in next)) out.push(Buffer.from(" "));
    }
  });
  out.push(Buffer.from("\n"));
  return Buffer.concat(out);
}

/** An atom from text (a token such as `public-key`). */
export function atom(text: string): Buffer {
  return Buffer.from(text, "latin1");
}

/** Whether `node` is the atom `text`. */
export function isAtom(node: Sexp | undefined, text: string): node is Buffer {
  return Buffer.isBuffer(node) && node.equals(Buffer.from(text, "latin1"));
}

/** The first list, depth first, whose first element is the atom `token` (gcry_sexp_find_token). */
export function findToken(sexp: Sexp, token: string): Sexp[] | undefined {
  if (Buffer.isBuffer(sexp)) return undefined;
  if (isAtom(sexp[0], token)) return sexp;
  for (const child of sexp) {
    const found = findToken(child, token);
    if (found) return found;
  }
  return undefined;
}

/** The atom that follows `token` in the list `(token VALUE)` found by findToken. */
export function tokenValue(sexp: Sexp, token: string): Buffer | undefined {
  const found = findToken(sexp, token);
  const value = found?.[1];
  return Buffer.isBuffer(value) ? value : undefined;
}

export function sexpEquals(a: Sexp, b: Sexp): boolean {
  return canonicalSexp(a).equals(canonicalSexp(b));
}
