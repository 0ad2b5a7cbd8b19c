// A network of its own for a lab host, and the faults a test injects into it. A host started
// with `network: true` lives in a network namespace of its own, made by its anchor's
// `unshare --net` (so it ends with the anchor), joined to this machine by a veth pair on a
// /30 of 10.213.0.0/16: this machine's end (`link`, named after the host's directory) holds
// the first address, the host's end is its eth0 with the second. Nothing else is routed:
// the host has no default route, and while any lab link exists this machine has an
// `unreachable 10.213.0.0/16` route under the links' own, so that a lab address whose link
// is gone fails at once here instead of leaving by the default route.
//
//   const host = await startHost({ name: "b0", nix: "2.8", dir, network: true });
//   host.network.address                         // "10.213.37.6": where its sshd listens
//   await cutLink(host);   …   await restoreLink(host);   // TCP connections survive a short cut
//   await shapeLink(host, { kbit: 8000 });       // 8 Mbit/s each way (tc tbf; no netem here)
//   await dropPackets(host, 20);                 // 20 % of its packets each way (nftables)
//   await clearFaults(host);                     // link up, no shaping, no drops
//   await linkCounters(host);                    // bytes sent to / received from it so far
import { createHash } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { OffloadError } from "../errors.js";
import { withFileLock } from "./file-lock.js";
import { run } from "./run.js";

/** Every lab link's addresses are in here; nothing of it leaves this machine. */
export const LAB_NETWORK = "10.213.0.0/16";
const BLOCKS = 1 << 14; // the /30s of LAB_NETWORK
const LINK_PREFIX = "ofl-";
const PEER_PREFIX = "ofp-";
// The host's end of the link inside its namespace.
const HOST_LINK = "eth0";
const NFT_TABLE = "offload_faults";
const LOCK = "/run/offload-lab-network.lock";
const LOCK_TIMES = { timeoutMs: 60_000, staleMs: 120_000 };
/** A dead namespace takes its end of the veth with it, a little after its last process. */
const TEARDOWN_MS = 5000;

export interface HostNetwork {
  /** The host's address (its eth0): where its daemons listen. */
  address: string;
  /** This machine's address on the link: where connections from this machine come from. */
  peer: string;
  /** The name of this machine's end of the link. */
  link: string;
}

function digest(dir: string): string {
  return createHash("sha256").update(dir).digest("hex");
}

/** This machine's end of the link of the host in `dir` (15 characters at most: IFNAMSIZ). */
export function linkName(dir: string): string {
  return `${LINK_PREFIX}${digest(dir).slice(0, 10)}`;
}

function peerName(dir: string): string {
  return `${PEER_PREFIX}${digest(dir).slice(0, 10)}`;
}

/** The addresses of /30 number `block` of LAB_NETWORK: this machine's, then the host's. */
function blockAddresses(block: number): [string, string] {
  const base = block * 4;
  const at = (offset: number) => `10.213.${(base + offset) >> 8}.${(base + offset) & 255}`;
  return [at(1), at(2)];
}

function blockOf(address: string): number {
  const [, , high, low] = address.split(".").map(Number);
  return ((high! << 8) + low!) >> 2;
}

/** The network of the host in `dir` whose address is `address` (as its anchor's name records it). */
export function hostNetwork(dir: string, address: string): HostNetwork {
  return { address, peer: blockAddresses(blockOf(address))[0], link: linkName(dir) };
}

function networkError(message: string, fix: string): OffloadError {
  return new OffloadError(message, { code: "lab-network-failed", fix });
}

async function ip(args: string[]): Promise<string> {
  return (await run("ip", args, { code: "lab-network-failed", fix: "lab networks need root and iproute2 (ip, tc)" })).stdout;
}

/** Runs `argv` (a program of this machine) in the host's network namespace only. */
function inNetwork(
  host: { anchorPid: number },
  argv: string[],
  fix = "lab networks need root, util-linux's nsenter and iproute2",
): Promise<{ stdout: string }> {
  return run("nsenter", ["-t", String(host.anchorPid), "-n", "--", ...argv], { code: "lab-network-failed", fix });
}

async function linkExists(name: string): Promise<boolean> {
  return (await readdir("/sys/class/net")).includes(name);
}

/** Whether this machine's end of the link of the host in `dir` exists. */
export function hasLink(dir: string): Promise<boolean> {
  return linkExists(linkName(dir));
}

/** IPv4 addresses of this machine's namespace in LAB_NETWORK. */
async function usedAddresses(): Promise<Set<string>> {
  const parsed = JSON.parse(await ip(["-j", "-4", "addr", "show"])) as { addr_info?: { local?: string }[] }[];
  return new Set(parsed.flatMap((link) => (link.addr_info ?? []).map((info) => info.local ?? "")).filter((address) => address.startsWith("10.213.")));
}

/**
 * Makes the veth pair of the host in `dir` before its anchor starts: this machine's end up
 * with its address, the other end waiting to be moved into the host (attachLink). The host
 * gets the /30 its directory hashes to when that is free, so a restarted host keeps its address.
 */
export async function prepareLink(dir: string): Promise<HostNetwork> {
  const link = linkName(dir);
  return withFileLock(LOCK, LOCK_TIMES, async () => {
    if (await linkExists(link)) await ip(["link", "del", link]); // left by a start that failed half-way
    const used = await usedAddresses();
    const first = Number.parseInt(digest(dir).slice(0, 8), 16) % BLOCKS;
    let block = -1;
    for (let step = 0; step < BLOCKS && block < 0; step++) {
      const candidate = (first + step) % BLOCKS; // never block 0: 10.213.0.0 is the network's own name
      if (candidate !== 0 && !blockAddresses(candidate).some((address) => used.has(address))) block = candidate;
    }
    if (block < 0) throw networkError(`every /30 of ${LAB_NETWORK} is taken`, "stop lab hosts that are no longer needed (offload lab down)");
    const [peer, address] = blockAddresses(block);
    await ip(["link", "add", link, "type", "veth", "peer", "name", peerName(dir)]);
    try {
      await ip(["addr", "add", `${peer}/30`, "dev", link]);
      await ip(["link", "set", link, "up"]);
      await ip(["route", "replace", "unreachable", LAB_NETWORK]);
    } catch (error) {
      await ip(["link", "del", link]).catch(() => undefined);
      throw error;
    }
    return { address, peer, link };
  });
}

/** Moves the host's end of the link into the namespace of its anchor and brings both ends up. */
export async function attachLink(dir: string, network: HostNetwork, anchorPid: number): Promise<void> {
  await ip(["link", "set", peerName(dir), "netns", String(anchorPid)]);
  const host = { anchorPid };
  await inNetwork(host, ["ip", "link", "set", peerName(dir), "name", HOST_LINK]);
  await inNetwork(host, ["ip", "addr", "add", `${network.address}/30`, "dev", HOST_LINK]);
  await inNetwork(host, ["ip", "link", "set", HOST_LINK, "up"]);
  await inNetwork(host, ["ip", "link", "set", "lo", "up"]);
}

/**
 * After the host's anchor has gone: waits for the kernel to remove the link with the
 * namespace (or removes it), and drops the guard route once no lab link is left.
 */
export async function releaseLink(dir: string): Promise<void> {
  const link = linkName(dir);
  const deadline = Date.now() + TEARDOWN_MS;
  while ((await linkExists(link)) && Date.now() < deadline) await sleep(25);
  await withFileLock(LOCK, LOCK_TIMES, async () => {
    // "Cannot find device": the kernel took it meanwhile.
    if (await linkExists(link))
      await ip(["link", "del", link]).catch(async (error: unknown) => {
        if (await linkExists(link)) throw error;
      });
    const names = await readdir("/sys/class/net");
    if (!names.some((name) => name.startsWith(LINK_PREFIX) || name.startsWith(PEER_PREFIX)) && (await guardRoute())) {
      await ip(["route", "del", "unreachable", LAB_NETWORK]);
    }
  });
}

async function guardRoute(): Promise<boolean> {
  return (await ip(["route", "show", "type", "unreachable", LAB_NETWORK])).trim() !== "";
}

/** What lab networks left on this machine: links, the guard route. Empty once every networked host has stopped. */
export async function networkLeftovers(): Promise<string[]> {
  const links = (await readdir("/sys/class/net")).filter((name) => name.startsWith(LINK_PREFIX) || name.startsWith(PEER_PREFIX));
  return [...links.map((name) => `link ${name}`), ...((await guardRoute()) ? [`route unreachable ${LAB_NETWORK}`] : [])];
}

/** A lab host (host.ts) as far as its network goes. */
type NetworkedHost = { name: string; anchorPid: number; network?: HostNetwork };

function networkOf(host: NetworkedHost): HostNetwork {
  if (host.network === undefined) {
    throw networkError(`host ${host.name} has no network of its own`, "start it with network: true (offload lab: LabOptions.network)");
  }
  return host.network;
}

/** Takes the host's end of the link down: packets are dropped both ways, connections stay open (until their peers give up). */
export async function cutLink(host: NetworkedHost): Promise<void> {
  networkOf(host);
  await inNetwork(host, ["ip", "link", "set", HOST_LINK, "down"]);
}

/** Brings the link back: what waited in TCP's retransmissions goes through. */
export async function restoreLink(host: NetworkedHost): Promise<void> {
  const { link } = networkOf(host);
  await inNetwork(host, ["ip", "link", "set", HOST_LINK, "up"]);
  // Addresses probed while the link was down have FAILED neighbour entries on both ends, which
  // the kernel retries only after a while: forget them, so the next packet asks afresh.
  await ip(["neigh", "flush", "dev", link]);
  await inNetwork(host, ["ip", "neigh", "flush", "dev", HOST_LINK]);
  // The carrier comes back a moment after "up": return once the link carries packets again.
  const deadline = Date.now() + LINK_UP_TIMEOUT_MS;
  while (!/state UP/.test((await inNetwork(host, ["ip", "-o", "link", "show", HOST_LINK])).stdout)) {
    if (Date.now() > deadline)
      throw networkError(`${host.name}'s link did not come up within ${LINK_UP_TIMEOUT_MS / 1000} s`, "look at `ip link` in the host's network namespace");
    await sleep(20);
  }
}

/** How long a restored link may take to report its carrier. */
const LINK_UP_TIMEOUT_MS = 5000;

export interface Shape {
  /** Rate each way, kbit/s. */
  kbit: number;
}

/** Limits the link's bandwidth each way with a token bucket (tc tbf) on both ends. */
export async function shapeLink(host: NetworkedHost, shape: Shape): Promise<void> {
  const { link } = networkOf(host);
  if (!(shape.kbit >= 8)) throw networkError(`cannot shape a link to ${shape.kbit} kbit/s`, "use at least 8 kbit/s");
  // A burst of 10 ms at the rate (at least 2 full frames), a queue of 200 ms before drops.
  const tbf = ["root", "tbf", "rate", `${shape.kbit}kbit`, "burst", String(Math.max(3200, Math.round((shape.kbit * 1000) / 8 / 100))), "latency", "200ms"];
  await ip(["link", "show", link]); // a clear error when the host has gone
  await run("tc", ["qdisc", "replace", "dev", link, ...tbf], { code: "lab-network-failed", fix: "tc (iproute2) and the kernel's tbf qdisc are needed" });
  await inNetwork(host, ["tc", "qdisc", "replace", "dev", HOST_LINK, ...tbf]);
}

/** Drops `percent` of the packets the host sends or receives on its link, at random (nftables in its namespace). */
export async function dropPackets(host: NetworkedHost, percent: number): Promise<void> {
  networkOf(host);
  if (!(percent > 0 && percent <= 100)) throw networkError(`cannot drop ${percent} % of packets`, "use a percentage above 0, up to 100");
  const fix = "install nftables (apt-get install nftables); the kernel needs nf_tables";
  await stopDropping(host);
  await inNetwork(host, ["nft", "add", "table", "inet", NFT_TABLE], fix);
  for (const [chain, hook, match] of [
    ["in", "input", "iifname"],
    ["out", "output", "oifname"],
  ] as const) {
    await inNetwork(host, ["nft", "add", "chain", "inet", NFT_TABLE, chain, `{ type filter hook ${hook} priority 0 ; }`], fix);
    await inNetwork(
      host,
      ["nft", "add", "rule", "inet", NFT_TABLE, chain, match, HOST_LINK, "numgen", "random", "mod", "100", "<", String(Math.round(percent)), "drop"],
      fix,
    );
  }
}

async function stopDropping(host: NetworkedHost): Promise<void> {
  const tables = await inNetwork(host, ["nft", "list", "tables"], "install nftables (apt-get install nftables)");
  if (tables.stdout.includes(`table inet ${NFT_TABLE}`)) await inNetwork(host, ["nft", "delete", "table", "inet", NFT_TABLE]);
}

/** Undoes every fault of this module: the link up, no shaping, no drops. */
export async function clearFaults(host: NetworkedHost): Promise<void> {
  const { link } = networkOf(host);
  await restoreLink(host);
  const qdisc = (await run("tc", ["qdisc", "show", "dev", link])).stdout;
  if (qdisc.includes("qdisc tbf")) await run("tc", ["qdisc", "del", "dev", link, "root"]);
  if ((await inNetwork(host, ["tc", "qdisc", "show", "dev", HOST_LINK])).stdout.includes("qdisc tbf"))
    await inNetwork(host, ["tc", "qdisc", "del", "dev", HOST_LINK, "root"]);
  if (await commandExists("nft")) await stopDropping(host);
}

async function commandExists(name: string): Promise<boolean> {
  return run("sh", ["-c", `command -v ${name}`]).then(
    () => true,
    () => false,
  );
}

export interface LinkCounters {
  /** Bytes this machine sent the host (uploads to a builder). */
  toHost: number;
  /** Bytes this machine received from the host (downloads from a builder). */
  fromHost: number;
}

/** Byte counters of this machine's end of the link (they start at 0 when the host starts). */
export async function linkCounters(host: NetworkedHost): Promise<LinkCounters> {
  const { link } = networkOf(host);
  const read = async (name: string) => Number((await readFile(`/sys/class/net/${link}/statistics/${name}`, "utf8")).trim());
  return { toHost: await read("tx_bytes"), fromHost: await read("rx_bytes") };
}
