// Writes test/fixtures/guix/: bytes made by the real guix 1.5.0 of the sid root (a lab Guix
// host), which the Guix codecs are golden-tested against. Run once, as root, and commit the
// result (scripts/roots.sh must have built the sid root):
//   npm run build && node scripts/run-ts.mjs scripts/guix-fixtures.ts
// The keys in it are test keys, made for this and trusted nowhere.
import { createHash } from "node:crypto";
import { copyFile, mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import path from "node:path";
import { guixHostPaths, startGuixHost } from "../src/lab/guix-host.js";
import { runInHost, stopHost, type Host } from "../src/lab/host.js";
import { PACKAGE_ROOT } from "../src/package-root.js";

const out = path.join(PACKAGE_ROOT, "test", "fixtures", "guix");
const work = path.join(homedir(), ".cache", "offload-fixtures", "guix");

async function must(host: Host, argv: string[], input?: string): Promise<string> {
  const result = await runInHost(host, argv, { input });
  if (result.code !== 0) throw new Error(`${argv.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

/** A file holding bytes as a Scheme string literal, for `guix repl` scripts. */
const scheme = (text: string) => JSON.stringify(text);

await rm(work, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const guix = await startGuixHost({ name: "guix-fixtures", dir: work });
try {
  const files = guixHostPaths(work);
  const host = guix.host;
  // Key B, then key A: B is only ever a public key in the ACL.
  await copyFile(files.signingKey, path.join(out, "other-key.pub"));
  await rm(files.signingKey);
  await rm(path.join(files.etcGuix, "signing-key.sec"));
  await rm(files.acl, { force: true });
  await must(host, ["guix", "archive", "--generate-key"]);
  await copyFile(files.signingKey, path.join(out, "signing-key.pub"));
  await copyFile(path.join(files.etcGuix, "signing-key.sec"), path.join(out, "signing-key.sec"));
  // Guix makes the ACL with its own key when it first needs it; then B is authorized.
  await must(host, ["guix", "archive", "--authorize"], await readFile(path.join(out, "other-key.pub"), "utf8"));
  await copyFile(files.acl, path.join(out, "acl"));

  // `guix authenticate` signatures by A over SHA-256("1") … SHA-256("5000"): the first 32, 16
  // more whose r or s is shorter than 32 bytes, and every one with an atom printed as a quoted
  // string (about 1 in 1000: all of its bytes printable or above 0xA0).
  const hashes = Array.from({ length: 5000 }, (_, i) =>
    createHash("sha256")
      .update(String(i + 1))
      .digest("hex"),
  );
  const keyFile = "/etc/guix/signing-key.sec";
  const requests = hashes.map((hash) => `sign ${keyFile.length}:${keyFile} ${hash.length}:${hash}\n`).join("");
  const replies = Buffer.from(await must(host, ["sh", "-c", "guix authenticate | od -An -v -tx1"], requests).then((hex) => hex.replace(/\s+/g, "")), "hex");
  const kept: Buffer[] = [];
  let shortKept = 0;
  for (let at = 0, index = 0; at < replies.length; index++) {
    const header = /^0 (\d+):/.exec(replies.subarray(at, at + 16).toString("latin1"))!;
    const end = at + header[0].length + Number(header[1]);
    const reply = replies.subarray(at, end);
    const text = reply.toString("latin1");
    const short = /\((r|s) #[0-9A-F]{62}#\)/.test(text) && (shortKept += 1) <= 16;
    if (index < 32 || short || /\((r|s) "/.test(text)) kept.push(reply);
    at = end;
  }
  await writeFile(path.join(out, "authenticate-sign.out"), Buffer.concat(kept));

  // An archive: two text items (world refers to hello) and a build output with a deriver.
  const busybox = path.join(work, "busybox");
  await mkdir(path.join(busybox, "bin"), { recursive: true });
  await copyFile(path.join(host.root, "bin", "busybox"), path.join(busybox, "bin", "busybox"));
  await symlink("busybox", path.join(busybox, "bin", "sh"));
  const script = path.join(work, "items.scm");
  await writeFile(
    script,
    `(use-modules (guix store) (guix derivations))
(with-store s
  (let* ((hello (add-text-to-store s "hello" "hello, world\\n" '()))
         (world (add-text-to-store s "world" (string-append "see " hello "\\n") (list hello)))
         (bb (add-to-store s "busybox" #t "sha256" ${scheme(busybox)}))
         (drv (derivation s "greeting" (string-append bb "/bin/sh") '("-c" "echo hi > $out") #:sources (list bb))))
    (build-derivations s (list drv))
    (format #t "~a ~a ~a~%" hello world (derivation->output-path drv))))
`,
  );
  const items = (await must(host, ["guix", "repl", "--", script])).trim().split(" ");
  const archive = await must(host, ["sh", "-c", `guix archive --export ${items.join(" ")} | od -An -v -tx1`]);
  await writeFile(path.join(out, "archive.export"), Buffer.from(archive.replace(/\s+/g, ""), "hex"));
  await writeFile(path.join(out, "archive.items"), `${items.join("\n")}\n`);
  process.stderr.write(`wrote ${out}\n`);
} finally {
  await stopHost(guix.host);
  await rm(work, { recursive: true, force: true });
}
