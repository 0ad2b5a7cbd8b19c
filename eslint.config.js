// ESLint for offload: ESLint's and typescript-eslint's recommended rules. Formatting is
// Prettier's (npm run format); unused names are the type checker's (noUnusedLocals).
import js from "@eslint/js";
import globals from "globals";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "test/fixtures/", "coverage/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      "@typescript-eslint/no-unused-vars": "off",
      // Terminal escapes and NULs are what some of these patterns are about.
      "no-control-regex": "off",
    },
  },
  {
    // CommonJS by necessity: jest's transform and sequencer hooks, and a --require preload.
    files: ["**/*.cjs"],
    languageOptions: { sourceType: "commonjs" },
    rules: { "@typescript-eslint/no-require-imports": "off" },
  },
  {
    // Globals a machines.ts sees are declared with `var`, as TypeScript requires for globals.
    files: ["types/*.d.ts"],
    rules: { "no-var": "off" },
  },
);
