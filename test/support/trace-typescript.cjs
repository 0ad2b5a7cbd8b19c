// Preloaded with --require: reports on stderr if anything loads the TypeScript compiler.
const Module = require("node:module");
const load = Module._load;
Module._load = function (request, ...rest) {
  if (request === "typescript") process.stderr.write("[trace] typescript loaded\n");
  return load.call(this, request, ...rest);
};
