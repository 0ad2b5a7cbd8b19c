// What a local Nix command said last, for the message of its failure: its last lines on
// stderr, warnings left out (they are not why it failed).

/** The last three lines of `text` that are not blank or a warning, joined with "; ". */
export function lastLines(text: string): string {
  return text
    .split("\n")
    .filter((line) => line.trim() && !line.startsWith("warning:"))
    .slice(-3)
    .join("; ");
}
