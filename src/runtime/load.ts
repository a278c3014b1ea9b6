import fs from 'node:fs';
import path from 'node:path';
import { parseServicesFile } from '../config/validate.js';
import type { ServicesConfig } from '../config/types.js';
import { planProgram, backendKey, serviceRing, type ProgramPlan } from '../plan.js';
import { BpfMap, BpfProgram, ifindexOf, xdpAttach, xdpQuery, type XdpAttachMode } from '../libbpf.js';
import { LAYOUTS, PERSISTENT_MAPS, u32Key } from '../abi.js';
import { parseMac } from '../net/addr.js';
import { pinDir, runDir } from '../paths.js';
import { UserError } from '../errors.js';
import { ringClassOfMapName, ringMapName } from '../codegen/program.js';
import { buildProgram, currentRing, installRings, loadDatapath, markChanges, refreshMarkedFlows, writeBackends, type Datapath } from './datapath.js';
import { readNeighbours, probeNeighbours } from './neigh.js';
import { readState, writeState, type LoadedState } from './state.js';

export interface LoadRequest {
  file: string;
  iface: string;
  mode: XdpAttachMode;
}

export interface LoadResult {
  state: LoadedState;
  plan: ProgramPlan;
  replaced: boolean;
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

function replacePin(obj: { pin(p: string): void }, file: string): void {
  fs.rmSync(file, { force: true });
  obj.pin(file);
}

/**
 * `xdpvs load`: validate, generate, compile, load, fill maps, attach, pin. Everything that can
 * fail runs before the attach, which replaces a running program atomically; if anything fails
 * before that, the running program and its maps are as they were.
 */
export async function loadServices(req: LoadRequest): Promise<LoadResult> {
  const config = parseServicesFile(req.file);
  const raw = JSON.parse(fs.readFileSync(req.file, 'utf8')) as unknown;
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

  const { plan, allocation } = planProgram(config, req.file, previous?.allocation);
  const macs = await resolveMacs(config, plan, req.iface);
  const pins = pinDir(req.iface);
  const run = runDir(req.iface);
  const firstLoad = !fs.existsSync(run);
  fs.mkdirSync(run, { recursive: true });
  const build = fs.mkdtempSync(path.join(run, 'build-'));
  const persistent = openPins(pins, [...PERSISTENT_MAPS]);
  const oldRings = new Map<number, BpfMap>();
  const ringPins = fs.existsSync(pins) ? fs.readdirSync(pins).filter((n) => ringClassOfMapName(n) !== undefined) : [];
  for (const [name, m] of Object.entries(openPins(pins, ringPins))) oldRings.set(ringClassOfMapName(name)!, m);
  let dp: Datapath | undefined;
  try {
    dp = loadDatapath(buildProgram(plan, build), persistent);
    const restore = writeBackends(dp.maps.backends, plan, macs);
    let mode: 'native' | 'generic';
    try {
      resetCounters(dp.maps.backend_stats, newIndexes(allocation.backends, previous?.allocation.backends));
      const previousTables = new Map(plan.services.map((s) => [s.id, currentRing(s, oldRings)]));
      const tables = new Map(plan.services.map((s) => [s.id, markChanges(serviceRing(s), previousTables.get(s.id))]));
      refreshMarkedFlows(dp.maps.conns, plan, tables, previousTables);
      installRings(dp.rings, plan.services.map((s) => [s, tables.get(s.id)!]));
      const old = ours ? BpfProgram.fromId(attached.progId) : undefined;
      try {
        mode = xdpAttach(ifindex, dp.program, { mode: req.mode, replaceProgFd: old }).mode;
      } finally {
        old?.close();
      }
    } catch (err) {
      restore();
      throw err;
    }

    // attached: from here on the new program runs; record it so other commands find it
    fs.mkdirSync(pins, { recursive: true });
    replacePin(dp.program, path.join(pins, PROGRAM_PIN));
    for (const name of dp.created) dp.maps[name as keyof Datapath['maps']].pin(path.join(pins, name));
    for (const name of fs.readdirSync(pins).filter((n) => ringClassOfMapName(n) !== undefined)) fs.rmSync(path.join(pins, name));
    for (const [cls, m] of dp.rings) m.pin(path.join(pins, ringMapName(cls)));
    clearRemoved(dp.maps.backends, allocation.backends, previous?.allocation.backends);
    for (const f of ['xdpvs.c', 'xdpvs.o']) fs.renameSync(path.join(build, f), path.join(run, f));
    const state: LoadedState = {
      version: 1,
      iface: req.iface,
      ifindex,
      mode,
      progId: dp.program.info().id,
      source: path.resolve(req.file),
      services: raw,
      allocation,
      macs: Object.fromEntries([...macs].map(([k, v]) => [k, [...v].map((x) => x.toString(16).padStart(2, '0')).join(':')])),
      loadedAt: new Date().toISOString(),
    };
    writeState(state);
    return { state, plan, replaced: ours };
  } catch (err) {
    if (firstLoad) fs.rmSync(run, { recursive: true, force: true });
    throw err;
  } finally {
    dp?.object.close();
    for (const m of [...Object.values(persistent), ...oldRings.values()]) m.close();
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

