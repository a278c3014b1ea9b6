import fs from 'node:fs';
import path from 'node:path';
import { parseServicesFile } from '../config/validate.js';
import type { ServicesConfig } from '../config/types.js';
import { planProgram, backendKey, serviceRing, type Allocation, type ProgramPlan } from '../plan.js';
import { BpfMap, BpfProgram, ifindexOf, xdpAttach, xdpQuery, type XdpAttachMode } from '../libbpf.js';
import { LAYOUTS, PERSISTENT_MAPS, u32Key } from '../abi.js';
import { parseMac } from '../net/addr.js';
import { pinDir, runDir } from '../paths.js';
import { UserError } from '../errors.js';
import { generateProgram, ringClassOfMapName, ringMapName } from '../codegen/program.js';
import { compileProgram } from '../codegen/clang.js';
import { currentRing, installRings, loadDatapath, markChanges, settleConnections, writeBackends, type Datapath } from './datapath.js';
import { readNeighbours, probeNeighbours } from './neigh.js';
import { readState, writeState, type LoadedState } from './state.js';
import { withApplyLock } from './lock.js';

export interface LoadRequest {
  file: string;
  iface: string;
  mode: XdpAttachMode;
}

export const PROGRAM_PIN = 'prog';

/** Opens the pins under dir that exist, by name. */
function openPins(dir: string, names: string[]): Record<string, BpfMap> {
  const out: Record<string, BpfMap> = {};
  for (const name of names) {
    const p = path.join(dir, name);
    if (fs.existsSync(p)) out[name] = BpfMap.fromPin(p);
  }
  return out;
}

/**
 * Every backend's MAC: from the file, else from the kernel's neighbour table on the interface,
 * probing once for those it lacks. Fails naming every backend that has none.
 */
export async function resolveMacs(config: ServicesConfig, plan: ProgramPlan, iface: string): Promise<Map<string, Buffer>> {
  const result = new Map<string, Buffer>();
  const lookup = (neigh: Map<string, string>) => {
    for (const s of plan.services) {
      for (const b of s.backends) {
        const mac = b.backend.mac ?? neigh.get(b.backend.ip);
        if (mac) result.set(backendKey(s.service, b.backend), parseMac(mac)!);
      }
    }
  };
  const missing = () =>
    config.services.flatMap((s, i) => s.backends.map((b, j) => ({ s, b, where: `services[${i}].backends[${j}]` }))).filter(({ s, b }) => !result.has(backendKey(s, b)));
  lookup(readNeighbours(iface));
  if (missing().length > 0) {
    await probeNeighbours([...new Set(missing().map((m) => m.b.ip))]);
    lookup(readNeighbours(iface));
  }
  const still = missing();
  if (still.length > 0) {
    throw new UserError(
      `no MAC address for ${still.length} backend(s) on ${iface}`,
      [
        ...still.map(({ s, b, where }) => `${where} (${s.name}, ${b.ip}): not in the neighbour table of ${iface}, and it did not answer ARP/ND`),
        'give it as "mac" in the file, or check that the real server is up on the same segment as the director',
      ],
    );
  }
  return result;
}

/**
 * Services to apply on an interface. `raw` is the JSON that `config` was validated from: it is
 * what the state records, so later commands (and `backend`) start from the same services.
 */
export interface ApplyRequest {
  config: ServicesConfig;
  raw: unknown;
  source: string;
  iface: string;
  mode: XdpAttachMode;
  /** health verdicts by backendKey; by default the ones recorded by the last apply */
  health?: Record<string, 'up' | 'down'>;
}

export interface LoadResult {
  state: LoadedState;
  plan: ProgramPlan;
  /** an xdpvs program was running on the interface before */
  replaced: boolean;
  /** a new program was compiled and attached; false when only maps changed */
  reloaded: boolean;
}

/** `xdpvs load FILE`: the file's services, applied. */
export async function loadServices(req: LoadRequest): Promise<LoadResult> {
  const config = parseServicesFile(req.file);
  const raw = JSON.parse(fs.readFileSync(req.file, 'utf8')) as unknown;
  return applyServices({ config, raw, source: path.resolve(req.file), iface: req.iface, mode: req.mode });
}

/** The maps that outlive a program as pinned now: persistent ones, and tables by size class. */
interface PinnedMaps {
  persistent: Record<string, BpfMap>;
  rings: Map<number, BpfMap>;
  close(): void;
}

function openPinnedMaps(pins: string): PinnedMaps {
  const persistent = openPins(pins, [...PERSISTENT_MAPS]);
  const ringNames = fs.existsSync(pins) ? fs.readdirSync(pins).filter((n) => ringClassOfMapName(n) !== undefined) : [];
  const rings = new Map(Object.entries(openPins(pins, ringNames)).map(([name, m]) => [ringClassOfMapName(name)!, m]));
  return { persistent, rings, close: () => [...Object.values(persistent), ...rings.values()].forEach((m) => m.close()) };
}

interface Planned {
  plan: ProgramPlan;
  allocation: Allocation;
  previous: LoadedState | undefined;
  macs: Map<string, Buffer>;
}

/**
 * Fills the maps for a plan: backends, new backends' counters, and every service's table,
 * marked against the table it replaces (refreshing the flows that start needing their entry).
 * Returns how to put the backends back if what follows fails.
 */
function fillMaps(maps: Record<(typeof PERSISTENT_MAPS)[number], BpfMap>, rings: Map<number, BpfMap>, previousRings: Map<number, BpfMap>, p: Planned): () => void {
  const restore = writeBackends(maps.backends, p.plan, p.macs);
  try {
    resetCounters(maps.backend_stats, newIndexes(p.allocation.backends, p.previous?.allocation.backends));
    const previousTables = new Map(p.plan.services.map((s) => [s.id, currentRing(s, previousRings)]));
    const tables = new Map(p.plan.services.map((s) => [s.id, markChanges(serviceRing(s), previousTables.get(s.id))]));
    settleConnections(maps.conns, maps.backend_active, p.plan, tables, previousTables);
    installRings(rings, p.plan.services.map((s) => [s, tables.get(s.id)!]));
  } catch (err) {
    restore();
    throw err;
  }
  return restore;
}

const macText = (mac: Buffer): string => [...mac].map((x) => x.toString(16).padStart(2, '0')).join(':');

const readText = (file: string): string | undefined => {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
};

/**
 * Applies services on an interface. When the generated program is the one running (only
 * backends, weights or MACs changed) only the maps change: tables are swapped atomically and
 * nothing is recompiled. Otherwise it compiles, loads, fills the maps and attaches, replacing a
 * running program atomically. Everything that can fail runs before the switch; if anything
 * fails, the running program, its maps, its pins and its state are as they were.
 */
export function applyServices(req: ApplyRequest): Promise<LoadResult> {
  return withApplyLock(req.iface, () => apply(req));
}

async function apply(req: ApplyRequest): Promise<LoadResult> {
  const ifindex = ifindexOf(req.iface);
  const previous = readState(req.iface);
  const attached = xdpQuery(ifindex);
  const ours = previous !== undefined && attached.progId !== 0 && attached.progId === previous.progId;
  if (attached.progId !== 0 && !ours) {
    throw new UserError(`${req.iface} already has an XDP program (id ${attached.progId}) that xdpvs did not load`, [
      `remove it first (ip link set dev ${req.iface} xdp off) or load on another interface`,
    ]);
  }
  if (ours && req.mode !== 'auto' && attached.mode !== req.mode) {
    throw new UserError(`${req.iface} runs xdpvs in ${attached.mode} mode; a program cannot be replaced in place by one in ${req.mode} mode`, [
      `unload first (xdpvs unload -i ${req.iface}) to change the mode`,
    ]);
  }

  const health = req.health ?? previous?.health ?? {};
  const down = new Set(Object.keys(health).filter((k) => health[k] === 'down'));
  const { plan, allocation } = planProgram(req.config, req.source, previous?.allocation, down);
  const planned: Planned = { plan, allocation, previous, macs: await resolveMacs(req.config, plan, req.iface) };
  const source = generateProgram(plan);
  const stateOf = (progId: number, mode: 'native' | 'generic', loadedAt = new Date().toISOString()): LoadedState => ({
    version: 1,
    iface: req.iface,
    ifindex,
    mode,
    progId,
    source: req.source,
    services: req.raw,
    allocation,
    macs: Object.fromEntries([...planned.macs].map(([k, v]) => [k, macText(v)])),
    // verdicts of backends still in the file
    health: Object.fromEntries(Object.entries(health).filter(([k]) => planned.macs.has(k))),
    loadedAt,
  });
  const pinned = openPinnedMaps(pinDir(req.iface));
  try {
    if (ours && readText(path.join(runDir(req.iface), 'xdpvs.c')) === source) {
      const maps = pinned.persistent as Record<(typeof PERSISTENT_MAPS)[number], BpfMap>;
      const restore = fillMaps(maps, pinned.rings, pinned.rings, planned);
      const state = stateOf(previous.progId, previous.mode, previous.loadedAt);
      try {
        writeState(state);
      } catch (err) {
        restore();
        throw err;
      }
      clearRemoved(maps.backends, allocation.backends, previous.allocation.backends);
      return { state, plan, replaced: true, reloaded: false };
    }
    const { progId, mode } = reload(req, ifindex, planned, source, pinned, ours ? attached.progId : undefined);
    const state = stateOf(progId, mode);
    writeState(state);
    return { state, plan, replaced: ours, reloaded: true };
  } finally {
    pinned.close();
  }
}

/**
 * Pins are made under a temporary name before the attach and renamed over the live ones after
 * (bpffs refuses names with dots).
 */
const STAGED = '_staged';

/**
 * Compiles, loads, fills and attaches a new program, replacing `replaceProgId` atomically. Only
 * renames of pins and files are left after the attach, so nothing of substance can fail then.
 */
function reload(req: ApplyRequest, ifindex: number, p: Planned, source: string, pinned: PinnedMaps, replaceProgId: number | undefined): { progId: number; mode: 'native' | 'generic' } {
  const pins = pinDir(req.iface);
  const run = runDir(req.iface);
  const made = [run, pins].filter((d) => !fs.existsSync(d));
  fs.mkdirSync(run, { recursive: true });
  fs.mkdirSync(pins, { recursive: true });
  const build = fs.mkdtempSync(path.join(run, 'build-'));
  const staged: string[] = [];
  const stage = (obj: { pin(p: string): void }, name: string) => {
    const file = path.join(pins, name + STAGED);
    fs.rmSync(file, { force: true });
    obj.pin(file);
    staged.push(name);
  };
  let dp: Datapath | undefined;
  try {
    fs.writeFileSync(path.join(build, 'xdpvs.c'), source);
    dp = loadDatapath(compileProgram(path.join(build, 'xdpvs.c')), pinned.persistent);
    const restore = fillMaps(dp.maps, dp.rings, pinned.rings, p);
    let mode: 'native' | 'generic';
    try {
      stage(dp.program, PROGRAM_PIN);
      for (const name of dp.created) stage(dp.maps[name as keyof Datapath['maps']], name);
      for (const [cls, m] of dp.rings) stage(m, ringMapName(cls));
      const old = replaceProgId === undefined ? undefined : BpfProgram.fromId(replaceProgId);
      try {
        mode = xdpAttach(ifindex, dp.program, { mode: req.mode, replaceProgFd: old }).mode;
      } finally {
        old?.close();
      }
    } catch (err) {
      restore();
      throw err;
    }
    for (const name of fs.readdirSync(pins).filter((n) => ringClassOfMapName(n) !== undefined && !staged.includes(n))) fs.rmSync(path.join(pins, name));
    for (const name of staged.splice(0)) fs.renameSync(path.join(pins, name + STAGED), path.join(pins, name));
    for (const f of ['xdpvs.c', 'xdpvs.o']) fs.renameSync(path.join(build, f), path.join(run, f));
    clearRemoved(dp.maps.backends, p.allocation.backends, p.previous?.allocation.backends);
    return { progId: dp.program.info().id, mode };
  } catch (err) {
    for (const name of staged) fs.rmSync(path.join(pins, name + STAGED), { force: true });
    for (const d of made) fs.rmSync(d, { recursive: true, force: true });
    throw err;
  } finally {
    dp?.object.close();
    fs.rmSync(build, { recursive: true, force: true });
  }
}

/** Backend indexes that `next` gives out and `prev` did not. */
function newIndexes(next: Record<string, number>, prev: Record<string, number> = {}): number[] {
  const before = new Set(Object.values(prev));
  return Object.values(next).filter((i) => !before.has(i));
}

/** A new backend starts from zero, even on an index an earlier backend had. */
function resetCounters(stats: BpfMap, indexes: number[]): void {
  const zero = Buffer.alloc(stats.valueBufferSize);
  for (const i of indexes) stats.update(u32Key(i), zero);
}

/** Backends gone from the file: their entries stop matching, so their flows get rescheduled. */
function clearRemoved(backends: BpfMap, next: Record<string, number>, prev: Record<string, number> = {}): void {
  const kept = new Set(Object.values(next));
  for (const i of Object.values(prev)) {
    if (!kept.has(i)) backends.update(u32Key(i), Buffer.alloc(LAYOUTS.xdpvs_backend.size));
  }
}

