// The NAR codec in one import: dumping trees, parsing, copying and restoring archives.
export { dumpPath, narHashOf } from "./nar-dump.js";
export { copyNar, parseNar } from "./nar-parse.js";
export type { NarEvent } from "./nar-parse.js";
export { restoreNar } from "./nar-restore.js";
export { NAR_MAGIC } from "./nar-format.js";
