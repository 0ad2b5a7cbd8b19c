// Jest transformer: strips types with esbuild and keeps ESM, with inline source maps
// so failures point at the .ts lines.
const { transformSync } = require("esbuild");

module.exports = {
  process(source, filename) {
    const { code, map } = transformSync(source, {
      loader: "ts",
      format: "esm",
      target: "node20",
      sourcemap: "both",
      sourcefile: filename,
    });
    return { code, map };
  },
};
