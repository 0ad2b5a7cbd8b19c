// Words for the remote login shell: SSH runs a command line, not an argument vector.
/** `word` as the shell reads it back: unquoted when safe, else in single quotes. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_\-./=:@%+,]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
