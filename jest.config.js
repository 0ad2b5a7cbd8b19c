// TypeScript sources are transformed by esbuild (already a dependency), not ts-jest:
// type checking is `npm run typecheck`'s job, so tests start fast.
export default {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  extensionsToTreatAsEsm: [".ts"],
  transform: { "^.+\\.ts$": "<rootDir>/test/support/esbuild-transform.cjs" },
  moduleNameMapper: { "^(\\.{1,2}/.*)\\.js$": "$1" },
  testTimeout: 60000,
  reporters: ["default", "<rootDir>/test/support/summary-reporter.cjs"],
};
