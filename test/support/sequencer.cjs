// Jest's order — failed last time first, then the longest last time — but with test/tiers.json's
// estimates for files that have no time from an earlier run (a fresh machine, CI), ahead of the
// files with neither (largest first). Jest alone runs untimed files first and by size, which on
// a fresh machine started the fault tests (2+ minutes) last: the run ended minutes after the
// other worker had run out of files.
const Sequencer = require("@jest/test-sequencer").default;
const { readFileSync } = require("node:fs");
const { basename, join } = require("node:path");

const { estimatedSeconds } = JSON.parse(readFileSync(join(__dirname, "..", "tiers.json"), "utf8"));

class EstimatedSequencer extends Sequencer {
  sort(tests) {
    const seconds = (test) => {
      const time = this.time(test);
      return time === undefined ? (estimatedSeconds[basename(test.path, ".test.ts")] ?? 0) : time / 1000;
    };
    const size = (test) => test.context.hasteFS.getSize(test.path) ?? 0;
    for (const test of tests) test.duration = this.time(test);
    return tests.sort((a, b) => Number(this.hasFailed(b)) - Number(this.hasFailed(a)) || seconds(b) - seconds(a) || size(b) - size(a));
  }
}

module.exports = EstimatedSequencer;
