/**
 * The XDP program of a services config, built and loaded for BPF_PROG_TEST_RUN: generated,
 * compiled, loaded, its maps filled as `xdpvs load` fills them, but never attached to an
 * interface and never pinned. Every backend must have its `mac` in the config (no neighbour
 * table is consulted). The benchmarks use it directly; the data-plane tests wrap it
 * (test/helpers/datapath.ts).
 *
 *   const built = buildUnattached(config);        // clang
 *   const dp = loadFilled(built);                 // fresh maps, filled
 *   dp.program.testRun(frame, { repeat: 1e6 });
 *   dp.object.close(); built.cleanup();
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { validateServices } from '../config/validate.js';
import type { ServicesConfig } from '../config/types.js';
import { backendKey, planProgram, type Allocation, type ProgramPlan } from '../plan.js';
import { buildProgram, installRings, loadDatapath, nextRing, writeBackends, type Datapath } from '../runtime/datapath.js';
import type { BpfMap } from '../libbpf.js';
import { parseMac } from '../net/addr.js';

export interface BuiltProgram {
  dir: string;
  objectPath: string;
  source: string;
  config: ServicesConfig;
  plan: ProgramPlan;
  allocation: Allocation;
  /** removes the build directory */
  cleanup(): void;
}

/** Validates and plans a services config (the raw JSON document) and compiles its program. */
export function buildUnattached(raw: unknown, o: { source?: string; dir?: string; previous?: Allocation } = {}): BuiltProgram {
  const source = o.source ?? 'test-services.json';
  const config = validateServices(raw, source);
  const { plan, allocation } = planProgram(config, source, o.previous);
  const dir = o.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'xdpvs-dp-'));
  try {
    const objectPath = buildProgram(plan, dir);
    return { dir, objectPath, source, config, plan, allocation, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
  } catch (err) {
    if (!o.dir) fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** Every backend's MAC from the config, keyed as writeBackends() wants them. */
export function configMacs(plan: ProgramPlan): Map<string, Buffer> {
  const macs = new Map<string, Buffer>();
  for (const s of plan.services) {
    for (const b of s.backends) {
      const m = b.backend.mac && parseMac(b.backend.mac);
      if (!m) throw new Error(`config: backend ${b.backend.ip} of ${s.service.name} needs a "mac"`);
      macs.set(backendKey(s.service, b.backend), m);
    }
  }
  return macs;
}

/**
 * Loads a built program with fresh maps (or, with `reuse`, the persistent maps of a loaded one,
 * as a reload reuses the pinned maps) and fills them: backends, then every service's table,
 * marked against `previousRings` when given. The caller closes `object`.
 */
export function loadFilled(
  built: Pick<BuiltProgram, 'objectPath' | 'plan'>,
  o: { reuse?: Datapath; previousRings?: Map<number, BpfMap> } = {},
): Datapath {
  const dp = loadDatapath(built.objectPath, o.reuse ? { ...o.reuse.maps } : {});
  try {
    writeBackends(dp.maps.backends, built.plan, configMacs(built.plan));
    installRings(dp.rings, built.plan.services.map((s) => [s, nextRing(s, o.previousRings)]));
  } catch (err) {
    dp.object.close();
    throw err;
  }
  return dp;
}
