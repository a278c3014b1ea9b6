import fs from 'node:fs';
import path from 'node:path';
import { BpfMap, BpfObject, BpfProgram, VerifierError, type MapSpec } from '../libbpf.js';
import { PERSISTENT_MAPS, BACKEND_PRESENT, LAYOUTS, encodeBackend, encodeRing, u32Key } from '../abi.js';
import { generateProgram, ringClassOfMapName } from '../codegen/program.js';
import { compileProgram } from '../codegen/clang.js';
import { serviceRing, backendKey, endpointKey, serviceKey, type PlannedService, type ProgramPlan } from '../plan.js';
import { RING_DIRTY, RING_BACKEND_MASK } from '../sched/ring.js';
import { hashFlow, hashSource, ringSlot } from '../sched/hash.js';
import { CONN_CLOSING, connTimeoutNs, decodeConn, decodeFlow, encodeConn, type Conn, type Flow } from '../abi.js';
import { formatIp } from '../net/addr.js';
import { UserError } from '../errors.js';

/** The XDP program's name in the generated object (SEC("xdp") int xdpvs). */
export const PROGRAM_NAME = 'xdpvs';

/** Generates the C of a plan and compiles it in dir; returns the object file. */
export function buildProgram(plan: ProgramPlan, dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  const cFile = path.join(dir, 'xdpvs.c');
  fs.writeFileSync(cFile, generateProgram(plan));
  return compileProgram(cFile);
}

/** A loaded (not yet attached) program with its maps. */
export interface Datapath {
  object: BpfObject;
  program: BpfProgram;
  maps: Record<(typeof PERSISTENT_MAPS)[number], BpfMap>;
  /** ring class -> its map of tables */
  rings: Map<number, BpfMap>;
  /** persistent maps this load created rather than reused: they need pinning */
  created: string[];
}

function describeMismatch(want: MapSpec, have: MapSpec): string[] {
  const keys: Array<keyof MapSpec> = ['type', 'keySize', 'valueSize', 'maxEntries', 'flags'];
  return keys.filter((k) => want[k] !== have[k]).map((k) => `${k}: pinned ${have[k]}, this program wants ${want[k]}`);
}

/**
 * Opens and loads a compiled program. Persistent maps come from `pinned` when given there, after
 * checking they match what the program declares, so counters and flows carry over. A verifier
 * rejection becomes a UserError that shows the log lines that matter.
 */
export function loadDatapath(objectPath: string, pinned: Partial<Record<string, BpfMap>> = {}): Datapath {
  const object = BpfObject.open(objectPath);
  try {
    const created: string[] = [];
    for (const name of PERSISTENT_MAPS) {
      const existing = pinned[name];
      const m = object.map(name);
      if (!existing) {
        created.push(name);
        continue;
      }
      const problems = describeMismatch(m.spec(), existing.info());
      if (problems.length > 0) {
        throw new UserError(`the pinned map '${name}' does not fit the new program`, [
          ...problems,
          'its contents cannot carry over; `xdpvs unload` first to start afresh (established flows lose their table)',
        ]);
      }
      m.reuseFd(existing);
    }
    try {
      object.load();
    } catch (err) {
      if (err instanceof VerifierError) {
        throw new UserError(`the kernel's verifier rejected the program: ${err.message}`, [...err.summary().split('\n'), `full log: ${err.log.split('\n').length} lines`]);
      }
      throw err;
    }
    const maps = Object.fromEntries(PERSISTENT_MAPS.map((n) => [n, object.map(n).toMap()])) as Datapath['maps'];
    const rings = new Map<number, BpfMap>();
    for (const name of object.mapNames()) {
      const cls = ringClassOfMapName(name);
      if (cls !== undefined) rings.set(cls, object.map(name).toMap());
    }
    return { object, program: object.program(PROGRAM_NAME).toProgram(), maps, rings, created };
  } catch (err) {
    object.close();
    throw err;
  }
}

/** Reads a service's table from a map of tables; undefined when it has none. */
export function readRing(rings: BpfMap, id: number): Uint32Array | undefined {
  const ref = rings.lookup(u32Key(id));
  if (!ref) return undefined;
  const inner = BpfMap.fromId(ref.readUInt32LE(0));
  try {
    const size = inner.info().maxEntries;
    const table = new Uint32Array(size);
    for (const [k, v] of inner.entries()) table[k.readUInt32LE(0)] = v.readUInt32LE(0);
    return table;
  } finally {
    inner.close();
  }
}

/**
 * Marks slots whose backend differs from the table it replaces: flows recorded there may belong
 * to the old backend, so their packets must consult the connection table. A slot stays marked
 * while it was marked before. A table of another size shares no slots with the old one, so all
 * of its slots are marked.
 */
export function markChanges(next: Uint32Array, previous: Uint32Array | undefined): Uint32Array {
  if (!previous) return next;
  const out = new Uint32Array(next.length);
  for (let i = 0; i < next.length; i++) {
    const changed = previous.length !== next.length || (previous[i]! & RING_BACKEND_MASK) !== next[i] || (previous[i]! & RING_DIRTY) !== 0;
    out[i] = (changed ? next[i]! | RING_DIRTY : next[i]!) >>> 0;
  }
  return out;
}

/** Inner maps held open at once while installing tables: far below the default fd limit. */
const INSTALL_CHUNK = 256;

/**
 * Puts new tables in the services' slots of their maps of tables. Each table is written whole
 * into a fresh inner map first; the swap of an inner map is one atomic update. The swaps go in
 * batches: every update of a map of maps waits for an RCU grace period (about 10 ms), which one
 * by one would make ten thousand services take minutes.
 */
export function installRings(rings: Map<number, BpfMap>, tables: Array<[PlannedService, Uint32Array]>): void {
  for (let i = 0; i < tables.length; i += INSTALL_CHUNK) {
    const chunk = tables.slice(i, i + INSTALL_CHUNK);
    const inners = chunk.map(([s, table]) => {
      const inner = BpfMap.create({ type: 'array', name: `ring_${s.id}`, keySize: 4, valueSize: 4, maxEntries: table.length });
      const keys = Array.from({ length: table.length }, (_, k) => u32Key(k));
      const raw = encodeRing(table);
      inner.updateBatch(keys, keys.map((_, k) => raw.subarray(k * 4, k * 4 + 4)));
      return inner;
    });
    try {
      for (const cls of new Set(chunk.map(([s]) => s.ringClass))) {
        const mine = chunk.map((entry, k) => ({ s: entry[0], inner: inners[k]! })).filter(({ s }) => s.ringClass === cls);
        rings.get(cls)!.updateBatch(mine.map(({ s }) => u32Key(s.id)), mine.map(({ inner }) => u32Key(inner.fd)));
      }
    } finally {
      for (const m of inners) m.close();
    }
  }
}

/** The table a service has now under `previousRings`, in whichever size class it was. */
export function currentRing(s: PlannedService, previousRings: Map<number, BpfMap> | undefined): Uint32Array | undefined {
  for (const rings of previousRings?.values() ?? []) {
    const table = readRing(rings, s.id);
    if (table) return table;
  }
  return undefined;
}

/** The table a service gets, marked against the one it had under `previousRings`. */
export function nextRing(s: PlannedService, previousRings: Map<number, BpfMap> | undefined): Uint32Array {
  return markChanges(serviceRing(s), currentRing(s, previousRings));
}

/**
 * Writes every planned backend into the backends map. Returns what the entries held before,
 * so a load that fails later can put them back.
 */
export function writeBackends(backends: BpfMap, plan: ProgramPlan, macs: Map<string, Buffer>): () => void {
  const before: Array<[Buffer, Buffer | null]> = [];
  for (const s of plan.services) {
    for (const b of s.backends) {
      const key = u32Key(b.index);
      before.push([key, backends.lookup(key)]);
      backends.update(key, encodeBackend({ mac: macs.get(backendKey(s.service, b.backend))!, flags: BACKEND_PRESENT, service: s.id, weight: b.weight }));
    }
  }
  return () => {
    for (const [key, value] of before) backends.update(key, value ?? Buffer.alloc(LAYOUTS.xdpvs_backend.size));
  };
}




/**
 * One pass over the connection table before new tables go in:
 * - Established TCP packets on an unchanged slot never touch their entry, so its last-seen time
 *   is old. Flows in slots marked now get a fresh one: a long-lived flow must not look expired at
 *   the moment it starts needing its entry (a flow that really is dead lingers one more timeout).
 * - A mark left from an earlier change is cleared when no live recorded flow in that slot belongs
 *   to another backend than the table's: those packets can go back to the fast path.
 * - Each backend's active-flow count (for lc and wlc) is set from the live entries; the data
 *   plane counts opens and FIN/RST closes in between, and flows that end silently leave it here.
 */
export function settleConnections(conns: BpfMap, active: BpfMap, plan: ProgramPlan, tables: Map<number, Uint32Array>, previous: Map<number, Uint32Array | undefined>): void {
  const byEndpoint = new Map(plan.services.map((s) => [serviceKey(s.service), s]));
  const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, as bpf_ktime_get_coarse_ns
  const live = (flow: Flow, conn: Conn) => now - conn.lastSeenNs <= connTimeoutNs(flow.proto, conn.flags, plan.timeouts);
  const markedNow = (s: PlannedService, slot: number) => {
    const table = tables.get(s.id)!;
    const before = previous.get(s.id);
    return (table[slot]! & RING_DIRTY) !== 0 && !(before && before.length === table.length && (before[slot]! & RING_DIRTY) !== 0);
  };
  const needed = new Map<number, Set<number>>();
  const counts = new Map<number, number>();
  for (const [key, value] of conns.entries()) {
    const flow = decodeFlow(key);
    let conn = decodeConn(value);
    const protocol = flow.proto === 6 ? 'tcp' : 'udp';
    const vip = formatIp(flow.daddr);
    const s = byEndpoint.get(endpointKey(protocol, vip, flow.dport)) ?? byEndpoint.get(endpointKey(protocol, vip, 0));
    const table = s && tables.get(s.id);
    if (s && table) {
      const slot = ringSlot(s.service.scheduler === 'sh' ? hashSource(flow.saddr) : hashFlow(flow), table.length);
      if (markedNow(s, slot)) {
        conn = { ...conn, lastSeenNs: now };
        conns.update(key, encodeConn(conn));
      }
      if (live(flow, conn) && (table[slot]! & RING_BACKEND_MASK) !== conn.backend) {
        needed.set(s.id, (needed.get(s.id) ?? new Set()).add(slot));
      }
    }
    if (live(flow, conn) && !(flow.proto === 6 && conn.flags & CONN_CLOSING)) {
      counts.set(conn.backend, (counts.get(conn.backend) ?? 0) + 1);
    }
  }
  for (const s of plan.services) {
    const table = tables.get(s.id)!;
    const before = previous.get(s.id);
    for (let slot = 0; slot < table.length; slot++) {
      const changedNow = !before || before.length !== table.length || (before[slot]! & RING_BACKEND_MASK) !== (table[slot]! & RING_BACKEND_MASK);
      if (!changedNow && table[slot]! & RING_DIRTY && !needed.get(s.id)?.has(slot)) table[slot] = (table[slot]! & ~RING_DIRTY) >>> 0;
    }
    for (const b of s.backends) {
      const v = Buffer.alloc(8);
      v.writeBigInt64LE(BigInt(counts.get(b.index) ?? 0));
      active.update(u32Key(b.index), v);
    }
  }
}
