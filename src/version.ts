// Kept in step with package.json by test/version.test.ts; part of every cache key.
export const VERSION = "0.1.0";
