/**
 * TypeScript codecs for the structs of bpf/xdpvs_abi.h, the one definition of the data plane's
 * ABI. LAYOUTS states each struct's size and field offsets as the C compiler lays them out;
 * test/abi.test.ts reads the BTF of a compiled program and fails if any of it differs.
 */

import type { Timeouts } from './config/types.js';

export const MAX_BACKENDS = 65536;

/** Map names in the program, which are also their pin names. */
export const MAPS = {
  backends: 'backends',
  backendStats: 'backend_stats',
  totals: 'totals',
  conns: 'conns',
  backendActive: 'backend_active',
  persist: 'persist',
} as const;

/** Maps each program makes afresh: their contents need not outlive it (plus the tables). */
export const PROGRAM_MAPS = ['rr_cursor', 'record_budget'] as const;

/** Maps whose contents outlive a reload: reused from their pins when compatible. */
export const PERSISTENT_MAPS = [MAPS.backends, MAPS.backendStats, MAPS.totals, MAPS.conns, MAPS.backendActive, MAPS.persist] as const;

export const BACKEND_PRESENT = 0x1;
export const CONN_CLOSING = 0x1;

/** enum xdpvs_total */
export const TOTALS = { passed: 0, dropFragment: 1, dropNoBackend: 2, unrecorded: 3 } as const;
/** The totals that count dropped frames. */
export const DROP_TOTALS = [TOTALS.dropFragment, TOTALS.dropNoBackend] as const;
export const TOTALS_COUNT = 4;

export const LAYOUTS = {
  xdpvs_backend: { size: 16, fields: { mac: 0, flags: 6, service: 8, weight: 12 } },
  xdpvs_counters: { size: 24, fields: { connections: 0, packets: 8, bytes: 16 } },
  xdpvs_flow: { size: 40, fields: { saddr: 0, daddr: 16, sport: 32, dport: 34, proto: 36, family: 37, pad: 38 } },
  xdpvs_conn: { size: 16, fields: { backend: 0, flags: 4, last_seen_ns: 8 } },
  xdpvs_persist_key: { size: 24, fields: { service: 0, family: 4, client: 8 } },
  xdpvs_persist: { size: 16, fields: { backend: 0, pad: 4, last_seen_ns: 8 } },
} as const;

export function u32Key(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
}

export interface BackendEntry {
  mac: Buffer;
  flags: number;
  service: number;
  weight: number;
}

export function encodeBackend(e: BackendEntry): Buffer {
  const L = LAYOUTS.xdpvs_backend;
  const b = Buffer.alloc(L.size);
  e.mac.copy(b, L.fields.mac, 0, 6);
  b.writeUInt16LE(e.flags, L.fields.flags);
  b.writeUInt32LE(e.service, L.fields.service);
  b.writeUInt32LE(e.weight, L.fields.weight);
  return b;
}

export function decodeBackend(b: Buffer): BackendEntry {
  const L = LAYOUTS.xdpvs_backend;
  return {
    mac: Buffer.from(b.subarray(L.fields.mac, L.fields.mac + 6)),
    flags: b.readUInt16LE(L.fields.flags),
    service: b.readUInt32LE(L.fields.service),
    weight: b.readUInt32LE(L.fields.weight),
  };
}

export interface Counters {
  connections: number;
  packets: number;
  bytes: number;
}

/** Sums per-CPU copies of struct xdpvs_counters. */
export function sumCounters(perCpu: Buffer[]): Counters {
  const f = LAYOUTS.xdpvs_counters.fields;
  const total = { connections: 0, packets: 0, bytes: 0 };
  for (const b of perCpu) {
    total.connections += Number(b.readBigUInt64LE(f.connections));
    total.packets += Number(b.readBigUInt64LE(f.packets));
    total.bytes += Number(b.readBigUInt64LE(f.bytes));
  }
  return total;
}

export const sumU64 = (perCpu: Buffer[]): number => perCpu.reduce((n, b) => n + Number(b.readBigUInt64LE(0)), 0);

export interface Flow {
  family: 4 | 6;
  /** 4 or 16 bytes, network order */
  saddr: Buffer;
  daddr: Buffer;
  /** host order */
  sport: number;
  dport: number;
  proto: number;
}

export function encodeFlow(f: Flow): Buffer {
  const L = LAYOUTS.xdpvs_flow;
  const b = Buffer.alloc(L.size);
  f.saddr.copy(b, L.fields.saddr);
  f.daddr.copy(b, L.fields.daddr);
  b.writeUInt16BE(f.sport, L.fields.sport);
  b.writeUInt16BE(f.dport, L.fields.dport);
  b.writeUInt8(f.proto, L.fields.proto);
  b.writeUInt8(f.family, L.fields.family);
  return b;
}

export function decodeFlow(b: Buffer): Flow {
  const L = LAYOUTS.xdpvs_flow;
  const family = b.readUInt8(L.fields.family) === 6 ? 6 : 4;
  const len = family === 6 ? 16 : 4;
  return {
    family,
    saddr: Buffer.from(b.subarray(L.fields.saddr, L.fields.saddr + len)),
    daddr: Buffer.from(b.subarray(L.fields.daddr, L.fields.daddr + len)),
    sport: b.readUInt16BE(L.fields.sport),
    dport: b.readUInt16BE(L.fields.dport),
    proto: b.readUInt8(L.fields.proto),
  };
}

export interface Conn {
  backend: number;
  flags: number;
  lastSeenNs: bigint;
}

/** The idle timeout of a recorded flow in ns, as the data plane applies it (bpf/forward.h). */
export function connTimeoutNs(proto: number, flags: number, t: Timeouts): bigint {
  const s = proto === 17 ? t.udp : flags & CONN_CLOSING ? t.tcpFin : t.tcp;
  return BigInt(s) * 1_000_000_000n;
}

export function encodeConn(c: Conn): Buffer {
  const L = LAYOUTS.xdpvs_conn;
  const b = Buffer.alloc(L.size);
  b.writeUInt32LE(c.backend, L.fields.backend);
  b.writeUInt32LE(c.flags, L.fields.flags);
  b.writeBigUInt64LE(c.lastSeenNs, L.fields.last_seen_ns);
  return b;
}

export function decodeConn(b: Buffer): Conn {
  const L = LAYOUTS.xdpvs_conn;
  return { backend: b.readUInt32LE(L.fields.backend), flags: b.readUInt32LE(L.fields.flags), lastSeenNs: b.readBigUInt64LE(L.fields.last_seen_ns) };
}

/** A scheduling table as the inner map's values, u32 little-endian. */
export function encodeRing(table: Uint32Array): Buffer {
  return Buffer.from(table.buffer, table.byteOffset, table.byteLength);
}
