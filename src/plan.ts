import type { Backend, Service, ServicesConfig, Timeouts } from './config/types.js';
import { UserError } from './errors.js';
import { RING_NONE, ringClassFor, ringSize } from './sched/ring.js';
import { buildMaglev } from './sched/maglev.js';

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
  timeouts: Timeouts;
  ringClasses: Array<{ ringClass: number; services: string[] }>;
}

/** A service is the same service across reloads when its VIP, port and protocol are. */
export const serviceKey = (s: Pick<Service, 'protocol' | 'vip' | 'port'>): string => `${s.protocol}/${s.vip.address}/${s.port}`;
export const backendKey = (s: Service, b: Pick<Backend, 'ip'>): string => `${serviceKey(s)}/${b.ip}`;

export const SCHEDULERS_IN_DATA_PLANE = new Set(['maglev', 'sh']);

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

/** Settings the file may hold that this version's data plane does not act on yet. */
export function planWarnings(services: Service[]): string[] {
  return services.flatMap((s, i) =>
    s.persistence === 0 ? [] : [`services[${i}].persistence: ${s.persistence} s is not enforced by this version (the sh scheduler keeps a client on one real server while the backends stay the same)`],
  );
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
  const unsupported = config.services.flatMap((s, i) => [
    ...(SCHEDULERS_IN_DATA_PLANE.has(s.scheduler) ? [] : [`services[${i}].scheduler: "${s.scheduler}" is not supported by this version of the data plane (use maglev or sh)`]),
  ]);
  if (unsupported.length > 0) throw new UserError(`${source}: ${unsupported.length} setting(s) this version cannot run yet`, unsupported);
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
      timeouts: config.timeouts,
      ringClasses: [...classes.entries()].sort((a, b) => a[0] - b[0]).map(([ringClass, names]) => ({ ringClass, services: names })),
    },
  };
}

/** The scheduling table a service should have: a Maglev table over its weighted backends. */
export function serviceRing(s: PlannedService): Uint32Array {
  const members = s.backends.map((b) => ({ key: b.backend.ip, index: b.index, weight: b.weight }));
  const size = ringSize(s.ringClass);
  return members.some((m) => m.weight > 0) ? buildMaglev(members, size) : new Uint32Array(size).fill(RING_NONE);
}
