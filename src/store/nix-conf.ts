// nix.conf as Nix reads it (Config::applyConfig, unchanged from 2.8 to 2.35): `#` starts a
// comment anywhere on a line, a line is whitespace-separated words, `include F` and
// `!include F` read F in place (relative to the including file; `!include` skips a missing
// one), and `name = words…` sets name to the words joined by single spaces.
import { posix } from "node:path";
import { OffloadError } from "../errors.js";

export interface ConfSetting {
  name: string;
  value: string;
  file: string;
  /** 1-based. */
  line: number;
  /** The text after `#` on that line, trimmed; how offload recognises the lines it wrote. */
  comment?: string;
}

/** A file's text as the reading Nix sees it, or undefined when there is no such file. */
export type ReadConf = (file: string) => string | undefined;

export interface ParsedConf {
  /** Every assignment, in the order Nix applies them. */
  settings: ConfSetting[];
  /** Every file read (the first one and the includes that exist). */
  files: string[];
}

// Nix recurses without a limit (a loop crashes it); offload reports a loop instead.
const MAX_INCLUDE_DEPTH = 16;

/** Parses `text` as the contents of `file`, reading includes with `read`. */
export function parseNixConf(text: string, file: string, read: ReadConf): ParsedConf {
  const parsed: ParsedConf = { settings: [], files: [file] };
  parseInto(text, file, read, parsed, 0);
  return parsed;
}

/** Reads and parses `file`; no file at all is an empty configuration (Nix ignores a missing nix.conf). */
export function readNixConf(file: string, read: ReadConf): ParsedConf {
  const text = read(file);
  return text === undefined ? { settings: [], files: [] } : parseNixConf(text, file, read);
}

function parseInto(text: string, file: string, read: ReadConf, parsed: ParsedConf, depth: number): void {
  text.split("\n").forEach((raw, index) => {
    const hash = raw.indexOf("#");
    const words = (hash === -1 ? raw : raw.slice(0, hash)).split(/[ \t\r]+/).filter((word) => word !== "");
    if (words.length === 0) return;
    const location = { file, line: index + 1, column: 1 };
    const syntax = () =>
      new OffloadError(`syntax error in ${file}:${index + 1}: ${raw.trim()}`, {
        code: "nix-conf-syntax",
        location,
        fix: "Nix refuses this line too: correct it as `name = value`",
      });
    const [first, second] = words as [string, string | undefined];
    if (first === "include" || first === "!include") {
      if (words.length !== 2) throw syntax();
      if (depth >= MAX_INCLUDE_DEPTH) {
        throw new OffloadError(`${file}:${index + 1}: includes nested more than ${MAX_INCLUDE_DEPTH} deep (a loop?)`, {
          code: "nix-conf-syntax",
          location,
          fix: "remove the include loop",
        });
      }
      const included = posix.resolve(posix.dirname(file), second!);
      const contents = read(included);
      if (contents === undefined) {
        if (first === "!include") return;
        throw new OffloadError(`${file}:${index + 1} includes ${included}, which does not exist (Nix fails on this too)`, {
          code: "nix-conf-syntax",
          location,
          fix: `create ${included}, or write \`!include\` to make it optional`,
        });
      }
      parsed.files.push(included);
      parseInto(contents, included, read, parsed, depth + 1);
      return;
    }
    if (words.length < 2 || second !== "=") throw syntax();
    const comment = hash === -1 ? undefined : raw.slice(hash + 1).trim();
    parsed.settings.push({ name: first, value: words.slice(2).join(" "), file, line: index + 1, ...(comment === undefined ? {} : { comment }) });
  });
}
