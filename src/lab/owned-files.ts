// The files `lab up` writes, and how it knows a person changed one since: lab.json keeps the
// SHA-256 of each as written. `up` rewrites them all (a lab down/up, or new keys, change
// them), so an edited one would be lost silently; it stops instead and says where edits belong.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { OffloadError } from "../errors.js";
import { writeFileAtomic } from "../files/safety.js";

/** Path → SHA-256 (hex) of the text `up` wrote there. */
export type WrittenFiles = Record<string, string>;

function sha256(text: string | Buffer): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Writes each file (mode 0644) and returns what lab.json records of them. */
export async function writeOwnedFiles(files: ReadonlyMap<string, string>): Promise<WrittenFiles> {
  const written: WrittenFiles = {};
  for (const [file, text] of files) {
    await writeFileAtomic(file, text, 0o644);
    written[file] = sha256(text);
  }
  return written;
}

/**
 * Throws when a file `up` wrote last time is now different. A file without a record (a lab
 * of an older offload) counts as the lab's; a missing one is simply written again.
 */
export async function assertNotEdited(written: WrittenFiles | undefined, machinesFile: string): Promise<void> {
  const edited: string[] = [];
  for (const [file, hash] of Object.entries(written ?? {})) {
    const bytes = await readFile(file).catch(() => undefined);
    if (bytes !== undefined && sha256(bytes) !== hash) edited.push(file);
  }
  if (edited.length === 0) return;
  const problems = edited.map(
    (file) =>
      new OffloadError(`${file} was changed after offload lab up wrote it`, {
        code: "lab-file-edited",
        fix:
          file === machinesFile
            ? `keep your machines in /etc/offload/machines.ts, which can use the lab's: import lab from ${JSON.stringify(file)}; export default [...lab, …]. Then mv ${file} ${file}.mine and run lab up again`
            : `lab up owns this file: mv ${file} ${file}.mine to keep your version, then run lab up again`,
      }),
  );
  throw new OffloadError(`lab up rewrites the files it owns and would lose ${edited.length === 1 ? "this edit" : "these edits"}; nothing was changed`, {
    code: "lab-file-edited",
    problems,
  });
}
