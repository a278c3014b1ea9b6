/**
 * The XDP program of a services config, built and loaded for BPF_PROG_TEST_RUN: generated,
 * compiled, loaded, its maps filled as `xdpvs load` fills them, but never attached to an
 * interface and never pinned. Every backend must have its `mac` in the config (no neighbour
 * table is consulted). Building and filling live in src/bench/datapath.ts (the benchmarks use
 * them too); this wraps them with what tests need to drive and inspect a program.
 *
 *   const built = buildTestProgram(config);        // clang, once per test file
 *   const dp = loadTestDatapath(built);            // fresh maps; as many as a test needs
 *   const { verdict, out } = dp.run(frame);
 *   dp.close(); built.cleanup();
 */
import { validateServices } from '../../src/config/validate.js';
import { planProgram, serviceRing, type Allocation, type PlannedService, type ProgramPlan } from '../../src/plan.js';
import { installRings, nextRing, readRing, writeBackends, type Datapath } from '../../src/runtime/datapath.js';
import { BpfMap, XdpAction } from '../../src/libbpf.js';
import { LAYOUTS, decodeConn, encodeFlow, sumCounters, sumU64, u32Key, type Conn, type Counters, type Flow } from '../../src/abi.js';
import { parseMac } from '../../src/net/addr.js';
import { buildUnattached, configMacs, loadFilled, type BuiltProgram } from '../../src/bench/datapath.js';

export { configMacs, type BuiltProgram };

export type Verdict = 'ABORTED' | 'DROP' | 'PASS' | 'TX' | 'REDIRECT';
const VERDICTS = new Map<number, Verdict>(Object.entries(XdpAction).map(([name, n]) => [n, name as Verdict]));

export interface RunResult {
  verdict: Verdict;
  /** the program's return value as a number */
  retval: number;
  /** the frame as the program left it */
  out: Buffer;
}

/** Validates and plans a services config (the raw JSON document) and compiles its program. */
export const buildTestProgram = buildUnattached;

/** A loaded program with its maps filled, and what a test needs to drive and inspect it. */
export class TestDatapath {
  private closed = false;

  constructor(
    readonly dp: Datapath,
    public plan: ProgramPlan,
    public allocation: Allocation,
    readonly source: string,
  ) {}

  /** Runs the program once on a copy of `frame` (BPF_PROG_TEST_RUN). */
  run(frame: Buffer): RunResult {
    const r = this.dp.program.testRun(frame, { dataOutSize: Math.max(4096, frame.length + 256) });
    return { verdict: VERDICTS.get(r.retval) ?? (`retval ${r.retval}` as Verdict), retval: r.retval, out: r.data };
  }

  service(name: string): PlannedService {
    const s = this.plan.services.find((x) => x.service.name === name);
    if (!s) throw new Error(`no service ${name} in the plan`);
    return s;
  }

  /** The backends-map index of a service's backend. */
  backendIndex(serviceName: string, ip: string): number {
    const s = this.service(serviceName);
    const b = s.backends.find((x) => x.backend.ip === ip);
    if (!b) throw new Error(`service ${serviceName} has no backend ${ip}`);
    return b.index;
  }

  /** The backend (service and IP) that has this index in the current plan. */
  backendAt(index: number): { service: string; ip: string; mac: Buffer } | undefined {
    for (const s of this.plan.services) {
      for (const b of s.backends) {
        if (b.index === index) return { service: s.service.name, ip: b.backend.ip, mac: parseMac(b.backend.mac!)! };
      }
    }
    return undefined;
  }

  /** The backend whose MAC this is (MACs are unique in the test configs). */
  backendByMac(mac: Buffer): { service: string; ip: string; index: number } | undefined {
    for (const s of this.plan.services) {
      for (const b of s.backends) {
        if (b.backend.mac && parseMac(b.backend.mac)!.equals(mac)) return { service: s.service.name, ip: b.backend.ip, index: b.index };
      }
    }
    return undefined;
  }

  /** The table the control plane computes for a service (no dirty flags). */
  expectedRing(serviceName: string): Uint32Array {
    return serviceRing(this.service(serviceName));
  }

  /** The table the program uses for a service now (with dirty flags). */
  installedRing(serviceName: string): Uint32Array {
    const s = this.service(serviceName);
    const t = readRing(this.dp.rings.get(s.ringClass)!, s.id);
    if (!t) throw new Error(`no table installed for ${serviceName}`);
    return t;
  }

  /** backend_stats[index], summed over CPUs. */
  backendStats(index: number): Counters {
    const v = this.dp.maps.backend_stats.lookupPerCpu(u32Key(index));
    return v ? sumCounters(v) : { connections: 0, packets: 0, bytes: 0 };
  }

  /** totals[reason], summed over CPUs. */
  total(reason: number): number {
    const v = this.dp.maps.totals.lookupPerCpu(u32Key(reason));
    return v ? sumU64(v) : 0;
  }

  /** The connection-table entry of a flow, as the client sent it. */
  conn(flow: Flow): Conn | null {
    const v = this.dp.maps.conns.lookup(encodeFlow(flow));
    return v && decodeConn(v);
  }

  connCount(): number {
    return this.dp.maps.conns.keys().length;
  }

  /** Clears a backend's entry (flags 0), as `xdpvs load` does for a backend gone from the file. */
  clearBackend(index: number): void {
    this.dp.maps.backends.update(u32Key(index), Buffer.alloc(LAYOUTS.xdpvs_backend.size));
  }

  /**
   * Applies a changed config to the loaded program without reloading it: the same services (so
   * the same generated code), other backends or weights. Ids are kept from the current
   * allocation; each table is marked against the one installed (changed slots get the dirty
   * flag) and swapped in, as `xdpvs load` does.
   */
  update(raw: unknown): void {
    const config = validateServices(raw, this.source);
    const { plan, allocation } = planProgram(config, this.source, this.allocation);
    for (const s of plan.services) {
      if (!this.dp.rings.has(s.ringClass)) throw new Error(`update: ${s.service.name} needs ring class ${s.ringClass}, which this program lacks (rebuild)`);
    }
    writeBackends(this.dp.maps.backends, plan, configMacs(plan));
    installRings(this.dp.rings, plan.services.map((s) => [s, nextRing(s, this.dp.rings)]));
    this.plan = plan;
    this.allocation = allocation;
  }

  close(): void {
    if (!this.closed) this.dp.object.close();
    this.closed = true;
  }
}

/**
 * Loads a built program with fresh maps (or, with `reuse`, the persistent maps of a loaded one,
 * as a reload reuses the pinned maps) and fills them: backends, then every service's table,
 * marked against `previousRings` when given.
 */
export function loadTestDatapath(
  built: Pick<BuiltProgram, 'objectPath' | 'plan' | 'allocation' | 'source'>,
  o: { reuse?: Datapath; previousRings?: Map<number, BpfMap> } = {},
): TestDatapath {
  const dp = loadFilled(built, o);
  return new TestDatapath(dp, built.plan, built.allocation, built.source);
}

/** Builds and loads in one go; `cleanup` closes the program and removes the build. */
export function openTestDatapath(raw: unknown): { built: BuiltProgram; dp: TestDatapath; cleanup(): void } {
  const built = buildTestProgram(raw);
  try {
    const dp = loadTestDatapath(built);
    return {
      built,
      dp,
      cleanup: () => {
        dp.close();
        built.cleanup();
      },
    };
  } catch (err) {
    built.cleanup();
    throw err;
  }
}
