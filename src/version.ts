// Kept in step with package.json by test/package.test.ts (`offload --version` of the installed package); part of every cache key.
export const VERSION = "0.1.0";
