// The few Node globals a machines.ts typically uses, declared minimally: type-checking
// against all of @types/node costs about half a second more. A config that uses anything
// else of Node's is checked against the full @types/node instead.

declare var process: {
  env: Record<string, string | undefined>;
  argv: string[];
  platform: string;
  arch: string;
  cwd(): string;
};

declare var console: {
  log(...data: unknown[]): void;
  info(...data: unknown[]): void;
  warn(...data: unknown[]): void;
  error(...data: unknown[]): void;
  debug(...data: unknown[]): void;
};
