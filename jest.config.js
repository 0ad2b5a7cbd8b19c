// TypeScript sources are transformed by esbuild (already a dependency), not ts-jest:
// type checking is `npm run typecheck`'s job, so tests start fast.
//
// Two tiers, as jest projects (README, Development):
// - unit (`npm run test:unit`): the files test/tiers.json lists; in-process, a test needs
//   nothing but Node and the files it writes — no Nix, sshd, daemon, lab host, npm or
//   offload executable (test/tiers.test.ts checks them for that).
// - e2e (`npm run test:e2e`): every other test file, against the real programs.
// A test file is e2e unless listed there: a new test that starts something real lands in
// the slow tier, never in the fast one. `npm test` runs both; OFFLOAD_TEST_TIER=unit or e2e
// runs one (what the npm scripts set, so that `npm run test:unit -- <jest options>` works).

import { readFileSync } from "node:fs";

/** Test files (test/<name>.test.ts) of the unit tier: test/tiers.json. */
const UNIT = JSON.parse(readFileSync(new URL("./test/tiers.json", import.meta.url), "utf8")).unit;

const common = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  extensionsToTreatAsEsm: [".ts"],
  transform: { "^.+\\.ts$": "<rootDir>/test/support/esbuild-transform.cjs" },
  moduleNameMapper: { "^(\\.{1,2}/.*)\\.js$": "$1" },
  testTimeout: 60000,
};

const TIERS = [
  { ...common, displayName: "unit", testMatch: UNIT.map((name) => `<rootDir>/test/${name}.test.ts`) },
  {
    ...common,
    displayName: "e2e",
    testMatch: ["**/*.test.ts"],
    testPathIgnorePatterns: ["/node_modules/", ...UNIT.map((name) => `/test/${name}\\.test\\.ts$`)],
  },
];

const tier = process.env.OFFLOAD_TEST_TIER;
if (tier && !TIERS.some((project) => project.displayName === tier))
  throw new Error(`OFFLOAD_TEST_TIER=${tier}: not one of ${TIERS.map((project) => project.displayName).join(", ")}`);

export default {
  // Two files at a time, whatever the machine: on 2 cores the e2e tier took 4:54 with 2
  // workers against 7:35 with jest's default of 1 (cores - 1); most of its time is waiting.
  maxWorkers: 2,
  // Longest first, by test/tiers.json's estimates where jest has no times yet.
  testSequencer: "<rootDir>/test/support/sequencer.cjs",
  testTimeout: 60000,
  reporters: ["default", "<rootDir>/test/support/summary-reporter.cjs"],
  projects: TIERS.filter((project) => !tier || project.displayName === tier),
};
