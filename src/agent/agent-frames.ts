// The agent's wire format between a hook and `offload agent`: one Unix socket carries a
// remote process's three streams and its fate as frames of [u8 type][u32 length][payload].
import type { BuildMachine } from "../../types/index.js";
import type { MachineHealth } from "../remote/probes.js";
import { VERSION } from "../version.js";

/** The frames' version: raised with any change to them or to what they carry. */
export const AGENT_PROTOCOL = 2;

/**
 * The agent's socket, in the state dir, named by offload's version and the protocol's: a hook
 * only ever meets an agent of its own making, and one left running from before an upgrade
 * (which would not know a newer record's fields) idles out on its own, unused.
 */
export const AGENT_NAME = `agent-${VERSION}-p${AGENT_PROTOCOL}`;
export const AGENT_SOCKET = `${AGENT_NAME}.sock`;

/**
 * Where bin/offload-hook (sh) hands the agent a hook to serve: a FIFO, one line per hook
 * (see hook-door.ts); and the agent's pid, which the script checks first, so that a FIFO
 * left by a dead agent is never written to. The script reads AGENT_NAME from dist/agent-name.
 */
export const HOOK_DOOR = `${AGENT_NAME}.hooks`;
export const AGENT_PID = `${AGENT_NAME}.pid`;
/** The status FIFOs of hooks being served, one per hook script, in the state dir (per agent version: each wipes its own at start). */
export const HOOKS_DIR = `${AGENT_NAME}.hooks.d`;

export interface AgentRequest {
  machine: BuildMachine;
}

export interface AgentReady {
  remoteVersion: number;
  /** The machine's health, if measured recently. */
  health?: MachineHealth;
}

export const enum Frame {
  /** hook → agent, first frame: JSON AgentRequest. */
  Request = 0,
  /** agent → hook: JSON AgentReady; the session is live. */
  Ready = 1,
  /** agent → hook: JSON error { message, code, fix }; the socket closes. */
  Error = 2,
  /** hook → agent: bytes for the remote process's stdin. */
  Stdin = 3,
  /** hook → agent: end of stdin. */
  StdinEnd = 4,
  /** agent → hook: bytes of the remote process's stdout / stderr. */
  Stdout = 5,
  Stderr = 6,
  /** agent → hook: JSON { code, signal? }: the remote process exited. */
  Exit = 7,
}

const HEADER = 5;

export function frame(type: Frame, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === "string" ? Buffer.from(payload) : payload;
  const header = Buffer.allocUnsafe(HEADER);
  header.writeUInt8(type, 0);
  header.writeUInt32BE(body.length, 1);
  return Buffer.concat([header, body]);
}

/** Splits a byte stream into frames, whatever the chunk boundaries; each byte is copied at most once. */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly onFrame: (type: Frame, payload: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= HEADER) {
      const header = this.peek(HEADER);
      const size = HEADER + header.readUInt32BE(1);
      if (this.buffered < size) return;
      const bytes = this.take(size);
      this.onFrame(bytes.readUInt8(0) as Frame, bytes.subarray(HEADER));
    }
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!.subarray(0, n);
  }

  private take(n: number): Buffer {
    let count = 0;
    let length = 0;
    while (length < n) length += this.chunks[count++]!.length;
    const joined = count === 1 ? this.chunks[0]! : Buffer.concat(this.chunks.slice(0, count));
    this.chunks.splice(0, count, ...(joined.length > n ? [joined.subarray(n)] : []));
    this.buffered -= n;
    return joined.subarray(0, n);
  }
}
