import type { Backend, Service, ServicesConfig, Timeouts } from './config/types.js';
import { UserError } from './errors.js';
import { RING_NONE, ringClassFor, ringSize } from './sched/ring.js';
import { buildMaglev, buildRrSequence, buildWrrSequence } from './sched/maglev.js';

/**
 * The pure half of loading: what the program and its maps should hold for a services file,
 * computed without touching the kernel. Applying it (src/runtime/) does the I/O.
 */

/**
 * Ids outlive a load: a service keeps its table slot and a backend keeps its index (and so its
 * counters and the flows recorded with it) across reloads, as long as it stays in the file.
 */
export interface Allocation {
  /** serviceKey -> service id */
  services: Record<string, number>;
  /** backendKey -> backend index */
  backends: Record<string, number>;
}

export interface PlannedBackend {
  backend: Backend;
  index: number;
  /** the weight the scheduler uses: the file's, or 0 while a health check holds it down */
  weight: number;
}

export interface PlannedService {
  service: Service;
  id: number;
  ringClass: number;
  backends: PlannedBackend[];
}

export interface ProgramPlan {
  source: string;
  services: PlannedService[];
  /** entries of every map of tables: the highest service id + 1 */
  serviceSlots: number;
  connTableSize: number;
  connRecordRate: number;
  timeouts: Timeouts;
  ringClasses: Array<{ ringClass: number; services: string[] }>;
}

/** A service is the same service across reloads when its VIP, port and protocol are. */
export const endpointKey = (protocol: string, address: string, port: number): string => `${protocol}/${address}/${port}`;
export const serviceKey = (s: Pick<Service, 'protocol' | 'vip' | 'port'>): string => endpointKey(s.protocol, s.vip.address, s.port);
export const backendKey = (s: Service, b: Pick<Backend, 'ip'>): string => `${serviceKey(s)}/${b.ip}`;

/** Lowest ids not taken, keeping every id that `previous` gave to something still present. */
function allocate(keys: string[], previous: Record<string, number>, limit: number, what: string): Record<string, number> {
  const result: Record<string, number> = {};
  const taken = new Set<number>();
  for (const key of keys) {
    const id = previous[key];
    if (id !== undefined && !taken.has(id)) {
      result[key] = id;
      taken.add(id);
    }
  }
  let next = 0;
  for (const key of keys) {
    if (result[key] !== undefined) continue;
    while (taken.has(next)) next++;
    if (next >= limit) throw new UserError(`too many ${what}: at most ${limit}`);
    result[key] = next;
    taken.add(next);
  }
  return result;
}

/**
 * `down`: backends a health check holds down (backendKey). Like keepalived's inhibit_on_failure
 * they keep their place with weight 0: no new flows, established flows stay.
 */
export function planProgram(
  config: ServicesConfig,
  source: string,
  previous: Allocation = { services: {}, backends: {} },
  down: ReadonlySet<string> = new Set(),
): { plan: ProgramPlan; allocation: Allocation } {
  const allocation: Allocation = {
    services: allocate(config.services.map(serviceKey), previous.services, 16384, 'services'),
    backends: allocate(config.services.flatMap((s) => s.backends.map((b) => backendKey(s, b))), previous.backends, 65536, 'backends'),
  };
  const services = config.services.map((service) => ({
    service,
    id: allocation.services[serviceKey(service)]!,
    ringClass: ringClassFor(service.backends.length),
    backends: service.backends.map((backend) => {
      const key = backendKey(service, backend);
      return { backend, index: allocation.backends[key]!, weight: down.has(key) ? 0 : backend.weight };
    }),
  }));
  const classes = new Map<number, string[]>();
  for (const s of services) classes.set(s.ringClass, [...(classes.get(s.ringClass) ?? []), s.service.name]);
  return {
    allocation,
    plan: {
      source,
      services,
      serviceSlots: Math.max(1, ...services.map((s) => s.id + 1)),
      connTableSize: config.connTableSize,
      connRecordRate: config.connRecordRate,
      timeouts: config.timeouts,
      ringClasses: [...classes.entries()].sort((a, b) => a[0] - b[0]).map(([ringClass, names]) => ({ ringClass, services: names })),
    },
  };
}

/**
 * The scheduling table a service should have: the weighted round-robin sequence for wrr and rr,
 * else a Maglev table over its weighted backends (sh, lc and wlc draw from it too).
 */
export function serviceRing(s: PlannedService): Uint32Array {
  const members = s.backends.map((b) => ({ key: b.backend.ip, index: b.index, weight: b.weight }));
  const size = ringSize(s.ringClass);
  if (!members.some((m) => m.weight > 0)) return new Uint32Array(size).fill(RING_NONE);
  if (s.service.scheduler === 'wrr') return buildWrrSequence(members, size);
  if (s.service.scheduler === 'rr') return buildRrSequence(members, size);
  return buildMaglev(members, size);
}
