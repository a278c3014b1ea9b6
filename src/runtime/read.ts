import fs from 'node:fs';
import path from 'node:path';
import { BpfMap, ifindexOf, splitPerCpu, xdpQuery } from '../libbpf.js';
import {
  BACKEND_PRESENT,
  CONN_CLOSING,
  MAPS,
  DROP_TOTALS,
  TOTALS,
  TOTALS_COUNT,
  decodeBackend,
  decodeConn,
  decodeFlow,
  sumCounters,
  sumU64,
  u32Key,
  type Counters,
  type Flow,
  connTimeoutNs,
} from '../abi.js';
import type { Protocol, ServicesConfig, Timeouts } from '../config/types.js';
import { formatMac } from '../net/addr.js';
import { backendKey, serviceKey } from '../plan.js';
import { pinDir, runDir } from '../paths.js';
import { UserError } from '../errors.js';
import { requireState, stateConfig, type LoadedState } from './state.js';

/**
 * Reading what is loaded, for `status` and `stats`: the services as the state file names them,
 * joined with what the pinned maps count. Every function that touches the kernel opens what it
 * needs and closes it before returning; everything else is a pure function over buffers and
 * state, so it can be tested without a kernel.
 */

export type BackendState = 'up' | 'down' | 'draining';

/** A backend as loaded: where its counters live and what it is. */
export interface LoadedBackend {
  key: string;
  ip: string;
  /** the index of its entries in `backends` and `backend_stats`; -1 if the state has none */
  index: number;
  weight: number;
  /** what the data plane rewrites to: from the `backends` map, else from the state */
  mac: string;
  state: BackendState;
}

export interface LoadedService {
  name: string;
  id: number;
  vip: string;
  family: 4 | 6;
  /** network order, 4 or 16 bytes */
  vipBytes: Buffer;
  port: number;
  protocol: Protocol;
  scheduler: string;
  persistence: number;
  persistenceNetmask: number;
  backends: LoadedBackend[];
}

// ---------------------------------------------------------------------------------------------
// Pure: the state's services, health, connection counting, stats reports, rates
// ---------------------------------------------------------------------------------------------

/** A health checker's verdict on a backend; undefined (read as up) when nothing checks it. */
export function healthOf(state: LoadedState, key: string): 'up' | 'down' | undefined {
  return state.health?.[key];
}

/** down (failed health check) before draining (weight 0) before up. */
export function backendState(weight: number, health: 'up' | 'down' | undefined): BackendState {
  if (health === 'down') return 'down';
  return weight === 0 ? 'draining' : 'up';
}

/**
 * The services of a state, in the file's order, with each backend's index, MAC and state.
 * `mapMacs` (backend index -> MAC) comes from the `backends` map when it could be read.
 */
export function loadedServices(state: LoadedState, config: ServicesConfig, mapMacs: Map<number, string> = new Map()): LoadedService[] {
  return config.services.map((s) => ({
    name: s.name,
    id: state.allocation.services[serviceKey(s)] ?? -1,
    vip: s.vip.address,
    family: s.vip.family,
    vipBytes: s.vip.bytes,
    port: s.port,
    protocol: s.protocol,
    scheduler: s.scheduler,
    persistence: s.persistence,
    persistenceNetmask: s.persistenceNetmask,
    backends: s.backends.map((b) => {
      const key = backendKey(s, b);
      const index = state.allocation.backends[key] ?? -1;
      return {
        key,
        ip: b.ip,
        index,
        weight: b.weight,
        mac: mapMacs.get(index) ?? state.macs[key] ?? b.mac ?? '',
        state: backendState(b.weight, healthOf(state, key)),
      };
    }),
  }));
}

export interface ConnCounts {
  /** TCP flows without FIN/RST seen, within the TCP timeout (IPVS's ActiveConn) */
  active: number;
  /** TCP flows after FIN/RST and UDP flows, within their timeouts (IPVS's InActConn) */
  inactive: number;
}


/** Whether a flow is one of service s's: its VIP, protocol, and port (or any port). */
export function flowOfService(f: Flow, s: Pick<LoadedService, 'family' | 'vipBytes' | 'protocol' | 'port'>): boolean {
  return f.family === s.family && f.proto === (s.protocol === 'udp' ? 17 : 6) && (s.port === 0 || f.dport === s.port) && f.daddr.equals(s.vipBytes);
}

/**
 * Counts the `conns` entries per backend index that the data plane would still honour: not
 * expired at `nowNs` (CLOCK_MONOTONIC, the clock of bpf_ktime_get_coarse_ns) and, when
 * `services` is given, for a flow of the service that owns the backend now (an entry left by
 * a removed backend whose index went to another one does not count).
 */
export function countConnections(
  entries: Iterable<[Buffer, Buffer]>,
  nowNs: bigint,
  timeouts: Timeouts,
  services?: readonly LoadedService[],
): Map<number, ConnCounts> {
  const owner = new Map<number, LoadedService>();
  for (const s of services ?? []) for (const b of s.backends) owner.set(b.index, s);
  const counts = new Map<number, ConnCounts>();
  for (const [k, v] of entries) {
    const flow = decodeFlow(k);
    const conn = decodeConn(v);
    // the coarse clock lags the fine one by up to a tick: an entry "from the future" is fresh
    const age = nowNs > conn.lastSeenNs ? nowNs - conn.lastSeenNs : 0n;
    if (age > connTimeoutNs(flow.proto, conn.flags, timeouts)) continue;
    if (services) {
      const s = owner.get(conn.backend);
      if (!s || !flowOfService(flow, s)) continue;
    }
    const c = counts.get(conn.backend) ?? { active: 0, inactive: 0 };
    if (flow.proto === 6 && !(conn.flags & CONN_CLOSING)) c.active++;
    else c.inactive++;
    counts.set(conn.backend, c);
  }
  return counts;
}

/** `xdpvs stats --json`, exactly the design's shape; `--rate` adds the *PerSecond keys. */
export interface StatsBackend {
  ip: string;
  mac: string;
  weight: number;
  state: BackendState;
  connections: number;
  packets: number;
  bytes: number;
  connectionsPerSecond?: number;
  packetsPerSecond?: number;
  bytesPerSecond?: number;
}

export interface StatsService {
  name: string;
  vip: string;
  port: number;
  protocol: Protocol;
  connections: number;
  packets: number;
  bytes: number;
  connectionsPerSecond?: number;
  packetsPerSecond?: number;
  bytesPerSecond?: number;
  backends: StatsBackend[];
}

export interface StatsTotals {
  /** forwarded + passed + dropped: every frame the program decided on */
  packets: number;
  /** the sum of every backend's packets */
  forwarded: number;
  /** not for a service: handed to the kernel */
  passed: number;
  /** the sum of the drop reasons */
  dropped: number;
}

export interface StatsReport {
  interface: string;
  services: StatsService[];
  totals: StatsTotals;
}

/** Drop reasons, for the table (the JSON keeps the design's one `dropped`). */
export interface DropReasons {
  fragment: number;
  noBackend: number;
  other: number;
}

/** What one read of the counters gives. */
export interface StatsSample {
  report: StatsReport;
  drops: DropReasons;
  /** process.hrtime.bigint() when the counters were read */
  takenAtNs: bigint;
}

const ZERO: Counters = { connections: 0, packets: 0, bytes: 0 };

/** Builds the report from the loaded services, backend counters by index and `totals` by reason. */
export function statsReport(iface: string, services: readonly LoadedService[], counters: Map<number, Counters>, totals: readonly number[]): { report: StatsReport; drops: DropReasons } {
  const out: StatsService[] = services.map((s) => {
    const backends: StatsBackend[] = s.backends.map((b) => {
      const c = counters.get(b.index) ?? ZERO;
      return { ip: b.ip, mac: b.mac, weight: b.weight, state: b.state, connections: c.connections, packets: c.packets, bytes: c.bytes };
    });
    const sum = (k: keyof Counters) => backends.reduce((n, b) => n + b[k], 0);
    return { name: s.name, vip: s.vip, port: s.port, protocol: s.protocol, connections: sum('connections'), packets: sum('packets'), bytes: sum('bytes'), backends };
  });
  const forwarded = out.reduce((n, s) => n + s.packets, 0);
  const passed = totals[TOTALS.passed] ?? 0;
  const fragment = totals[TOTALS.dropFragment] ?? 0;
  const noBackend = totals[TOTALS.dropNoBackend] ?? 0;
  const dropped = DROP_TOTALS.reduce((n, i) => n + (totals[i] ?? 0), 0);
  return {
    report: { interface: iface, services: out, totals: { packets: forwarded + passed + dropped, forwarded, passed, dropped } },
    drops: { fragment, noBackend, other: dropped - fragment - noBackend },
  };
}

const perSecond = (now: number, before: number | undefined, seconds: number): number =>
  before === undefined || seconds <= 0 ? 0 : Math.round((Math.max(0, now - before) / seconds) * 100) / 100;

/**
 * `cur` with connectionsPerSecond, packetsPerSecond, bytesPerSecond on every service and
 * backend: the difference to `prev` over the time between them. Entries are matched by
 * protocol, VIP and port, and backend IP, so a reload in between does not mix them up; one
 * that is new (or whose counters went back, as for a new backend on a reused index) reads 0.
 */
export function withRates(cur: StatsSample, prev: StatsSample): { report: StatsReport; totalsPerSecond: StatsTotals } {
  const seconds = Number(cur.takenAtNs - prev.takenAtNs) / 1e9;
  const before = new Map(prev.report.services.map((s) => [`${s.protocol}/${s.vip}/${s.port}`, s]));
  const rates = <T extends { connections: number; packets: number; bytes: number }>(now: T, then: T | undefined) => ({
    connectionsPerSecond: perSecond(now.connections, then?.connections, seconds),
    packetsPerSecond: perSecond(now.packets, then?.packets, seconds),
    bytesPerSecond: perSecond(now.bytes, then?.bytes, seconds),
  });
  const services = cur.report.services.map((s) => {
    const old = before.get(`${s.protocol}/${s.vip}/${s.port}`);
    const oldBackends = new Map((old?.backends ?? []).map((b) => [b.ip, b]));
    const { backends, ...rest } = s;
    return {
      ...rest,
      ...rates(s, old),
      backends: backends.map((b) => ({ ...b, ...rates(b, oldBackends.get(b.ip)) })),
    };
  });
  const t = cur.report.totals;
  const p = prev.report.totals;
  return {
    report: { ...cur.report, services },
    totalsPerSecond: {
      packets: perSecond(t.packets, p.packets, seconds),
      forwarded: perSecond(t.forwarded, p.forwarded, seconds),
      passed: perSecond(t.passed, p.passed, seconds),
      dropped: perSecond(t.dropped, p.dropped, seconds),
    },
  };
}

/** `xdpvs status --json` */
export interface StatusBackend {
  ip: string;
  /** the service's port (0 for an all-ports service), as ipvsadm shows it */
  port: number;
  forward: 'Route';
  weight: number;
  activeConnections: number;
  inactiveConnections: number;
  mac: string;
  state: BackendState;
}

export interface StatusService {
  name: string;
  vip: string;
  port: number;
  protocol: Protocol;
  scheduler: string;
  persistence: number;
  persistenceNetmask: number;
  backends: StatusBackend[];
}

export interface StatusReport {
  interface: string;
  ifindex: number;
  mode: 'native' | 'generic';
  programId: number;
  /** whether that program is the one attached to the interface now */
  attached: boolean;
  loadedAt: string;
  source: string;
  timeouts: Timeouts;
  services: StatusService[];
}

export function statusReport(state: LoadedState, config: ServicesConfig, services: readonly LoadedService[], conns: Map<number, ConnCounts>, attached: boolean): StatusReport {
  return {
    interface: state.iface,
    ifindex: state.ifindex,
    mode: state.mode,
    programId: state.progId,
    attached,
    loadedAt: state.loadedAt,
    source: state.source,
    timeouts: { ...config.timeouts },
    services: services.map((s) => ({
      name: s.name,
      vip: s.vip,
      port: s.port,
      protocol: s.protocol,
      scheduler: s.scheduler,
      persistence: s.persistence,
      persistenceNetmask: s.persistenceNetmask,
      backends: s.backends.map((b) => {
        const c = conns.get(b.index);
        return {
          ip: b.ip,
          port: s.port,
          forward: 'Route' as const,
          weight: b.weight,
          activeConnections: c?.active ?? 0,
          inactiveConnections: c?.inactive ?? 0,
          mac: b.mac,
          state: b.state,
        };
      }),
    })),
  };
}

// ---------------------------------------------------------------------------------------------
// Kernel: pinned maps
// ---------------------------------------------------------------------------------------------

type MapName = (typeof MAPS)[keyof typeof MAPS];

/** Opens pinned maps of an interface; a missing pin is a UserError naming it. */
export function openPinnedMaps<N extends MapName>(state: LoadedState, names: readonly N[]): { maps: Record<N, BpfMap>; close(): void } {
  const dir = pinDir(state.iface);
  const missing = names.filter((n) => !fs.existsSync(path.join(dir, n)));
  if (missing.length > 0) {
    throw new UserError(`the pinned maps of ${state.iface} are missing (${missing.map((n) => path.join(dir, n)).join(', ')})`, [
      `${path.join(runDir(state.iface), 'state.json')} says program ${state.progId} was loaded at ${state.loadedAt}, but its pins are gone`,
      `load again (xdpvs load ${state.source} -i ${state.iface}) or clear the state (xdpvs unload -i ${state.iface})`,
    ]);
  }
  const opened: BpfMap[] = [];
  const maps = {} as Record<N, BpfMap>;
  try {
    for (const n of names) {
      const m = BpfMap.fromPin(path.join(dir, n));
      opened.push(m);
      maps[n] = m;
    }
  } catch (err) {
    for (const m of opened) m.close();
    throw err;
  }
  return { maps, close: () => opened.forEach((m) => m.close()) };
}

/** MACs in the `backends` map, by index, for the backends whose entry is still theirs. */
export function readBackendMacs(backends: BpfMap, services: readonly LoadedService[]): Map<number, string> {
  const out = new Map<number, string>();
  for (const s of services) {
    for (const b of s.backends) {
      if (b.index < 0) continue;
      const raw = backends.lookup(u32Key(b.index));
      if (!raw) continue;
      const e = decodeBackend(raw);
      if (e.flags & BACKEND_PRESENT && e.service === s.id) out.set(b.index, formatMac(e.mac));
    }
  }
  return out;
}

/** Sums of `backend_stats` over CPUs, for the given indexes. */
export function readBackendCounters(stats: BpfMap, indexes: readonly number[]): Map<number, Counters> {
  const out = new Map<number, Counters>();
  const wanted = indexes.filter((i) => i >= 0);
  if (wanted.length > 1024) {
    // many backends: one batched walk of the array beats a syscall per index
    const want = new Set(wanted);
    const size = stats.info().valueSize;
    for (const [k, v] of stats.entries()) {
      const i = k.readUInt32LE(0);
      if (want.has(i)) out.set(i, sumCounters(splitPerCpu(v, size)));
    }
    return out;
  }
  for (const i of wanted) {
    const v = stats.lookupPerCpu(u32Key(i));
    if (v) out.set(i, sumCounters(v));
  }
  return out;
}

/** `totals`, summed over CPUs, by reason. */
export function readTotals(totals: BpfMap): number[] {
  return Array.from({ length: TOTALS_COUNT }, (_, i) => {
    const v = totals.lookupPerCpu(u32Key(i));
    return v ? sumU64(v) : 0;
  });
}

/** Whether the state's program is the one attached to its interface now. */
export function isAttached(state: LoadedState): boolean {
  try {
    return xdpQuery(ifindexOf(state.iface)).progId === state.progId;
  } catch {
    return false; // the interface is gone
  }
}

/** One read of every counter of an interface. */
export function collectStats(iface: string): StatsSample {
  const state = requireState(iface);
  const config = stateConfig(state);
  const { maps, close } = openPinnedMaps(state, [MAPS.backends, MAPS.backendStats, MAPS.totals]);
  try {
    const services = loadedServices(state, config, readBackendMacs(maps.backends, loadedServices(state, config)));
    const counters = readBackendCounters(maps.backend_stats, services.flatMap((s) => s.backends.map((b) => b.index)));
    const totals = readTotals(maps.totals);
    const takenAtNs = process.hrtime.bigint();
    return { ...statsReport(iface, services, counters, totals), takenAtNs };
  } finally {
    close();
  }
}

/** What `status` shows: the loaded program, the services, their flows per backend. */
export function collectStatus(iface: string): StatusReport {
  const state = requireState(iface);
  const config = stateConfig(state);
  const { maps, close } = openPinnedMaps(state, [MAPS.backends, MAPS.conns]);
  try {
    const services = loadedServices(state, config, readBackendMacs(maps.backends, loadedServices(state, config)));
    const entries = maps.conns.entries();
    // process.hrtime is CLOCK_MONOTONIC on Linux, the clock of bpf_ktime_get_coarse_ns
    const conns = countConnections(entries, process.hrtime.bigint(), config.timeouts, services);
    return statusReport(state, config, services, conns, isAttached(state));
  } finally {
    close();
  }
}
