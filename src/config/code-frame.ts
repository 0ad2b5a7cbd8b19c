// A two-line excerpt pointing at a column, like compilers print under an error.
export function codeFrame(lineText: string, line: number, column: number, length = 1): string {
  const gutter = `${line} | `;
  const marker = " ".repeat(gutter.length + column) + "^".repeat(Math.max(1, Math.min(length, lineText.length - column)));
  return `${gutter}${lineText}\n${marker}`;
}
