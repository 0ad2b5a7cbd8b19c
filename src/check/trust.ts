// Will the machine's Nix let this SSH user build? Root and users of a store they open
// directly always may; through a nix-daemon only `trusted-users` may build input-addressed
// derivations (Nix's rule for BuildDerivation), whatever signatures say.
const words = (value: string | undefined) => (value ?? "").split(/\s+/).filter((word) => word !== "");

export interface TrustInput {
  user: string;
  groups: readonly string[];
  /** The remote's `store` setting. */
  storeSetting?: string;
  /** The record's remoteStore, which overrides it. */
  remoteStore?: string;
  trustedUsers?: string;
}

/** Whether `nix-store --serve` of this login goes through a daemon (auto, daemon, unix://) rather than opening the store itself. */
export function throughDaemon(input: Pick<TrustInput, "user" | "storeSetting" | "remoteStore">): boolean {
  const store = input.remoteStore ?? input.storeSetting ?? "auto";
  if (store.startsWith("/") || store.startsWith("local")) return false;
  // "auto" opens the store directly for root, through the daemon for everyone else.
  return store === "auto" ? input.user !== "root" : store === "daemon" || store.startsWith("unix:");
}

export function isTrusted(input: TrustInput): boolean {
  if (input.user === "root" || !throughDaemon(input)) return true;
  return words(input.trustedUsers).some((entry) => entry === "*" || entry === input.user || (entry.startsWith("@") && input.groups.includes(entry.slice(1))));
}
