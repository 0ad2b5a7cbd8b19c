// The README's first command, as a user runs it: the demo must keep working.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const DEMO = fileURLToPath(new URL("../scripts/demo.sh", import.meta.url));

test("bash scripts/demo.sh checks the machines, builds the project through the hook and shows who signed what", async () => {
  const { stdout, stderr } = await promisify(execFile)("bash", [DEMO], { maxBuffer: 16 << 20, timeout: 240_000 });
  const text = stdout + stderr;
  expect(text).toContain("all 3 machine(s) passed");
  // Every output of the project, each with the signature of the builder its features route it to.
  expect(text).toMatch(/libvm\s+signed by demo-b0-1/);
  expect(text).toMatch(/perf-report\s+signed by demo-b1-1/);
  expect(text).toMatch(/libparse\s+signed by demo-b0-1/);
  expect(text).toMatch(/app\s+signed by demo-b0-1/);
  expect(text).toMatch(/MACHINE\s+ADDRESS\s+REACHABLE\s+LOAD\s+SLOTS/);
  expect(text).toContain("tearing the lab down");
  // Nothing of the lab is left running (the agent exits by itself once its state dir is gone).
  const { stdout: processes } = await promisify(execFile)("ps", ["-eo", "args"]);
  expect(processes).not.toMatch(/sshd -f \/var\/lib\/offload-demo\//);
}, 300_000);
