/**
 * Services files of any size for tests and benchmarks: every tenth VIP is IPv6, protocols and
 * ports alternate, each service has `backends` backends with fixed MACs.
 */
export function syntheticServices(count: number, backends = 1): { services: unknown[] } {
  const services = [];
  for (let i = 0; i < count; i++) {
    const v6 = i % 10 === 9;
    const vip = v6 ? `fd00:1::${i.toString(16)}` : `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    services.push({
      name: `svc-${i}`,
      vip,
      port: 80 + (i % 3),
      protocol: i % 2 ? 'udp' : 'tcp',
      backends: Array.from({ length: backends }, (_, j) => {
        const n = (i * backends + j) % 65000;
        return {
          ip: v6 ? `fd00:2::${(n + 1).toString(16)}` : `10.99.${n >> 8}.${n & 255}`,
          weight: 1 + (j % 3),
          mac: `02:00:00:00:${((n >> 8) & 255).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`,
        };
      }),
      healthCheck: { type: 'none' },
    });
  }
  return { services };
}

export type SyntheticKind = 'tcp4' | 'udp4' | 'tcp6' | 'udp6';

/** The kind of service number i in syntheticServicesTotal(): every tenth IPv6, every fourth UDP. */
export function syntheticKind(i: number): SyntheticKind {
  return `${i % 4 === 1 ? 'udp' : 'tcp'}${i % 10 === 9 ? 6 : 4}` as SyntheticKind;
}

/** The VIP and port of service number i; 10.100.0.0 upwards, or fd00:1:: for IPv6. */
export function syntheticEndpoint(i: number): { vip: string; port: number; protocol: 'tcp' | 'udp' } {
  const kind = syntheticKind(i);
  return {
    vip: kind.endsWith('6') ? `fd00:1::${i.toString(16)}` : `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
    port: 80 + (i % 3),
    protocol: kind.startsWith('udp') ? 'udp' : 'tcp',
  };
}

/**
 * `count` services with `totalBackends` backends in all (at most 65,536, the data plane's limit),
 * spread evenly: when it does not divide, the first services get one more. Service numbers start
 * at `first` (default 0); kinds and VIPs follow from them (syntheticKind, syntheticEndpoint), so
 * service 0 is TCP/IPv4, 1 UDP/IPv4 and 19 TCP/IPv6. The IPv4 address of an IPv6 service's
 * number is no VIP. Backend addresses and MACs are unique in the file.
 */
export function syntheticServicesTotal(count: number, totalBackends: number, o: { first?: number } = {}): { services: unknown[] } {
  if (totalBackends < count) throw new RangeError(`${count} services need at least ${count} backends, got ${totalBackends}`);
  if (totalBackends > 65536) throw new RangeError(`at most 65536 backends in all, got ${totalBackends}`);
  const first = o.first ?? 0;
  const hex = (x: number) => x.toString(16).padStart(2, '0');
  const services = [];
  let n = 0;
  for (let k = 0; k < count; k++) {
    const i = first + k;
    const { vip, port, protocol } = syntheticEndpoint(i);
    const v6 = vip.includes(':');
    const own = Math.floor(totalBackends / count) + (k < totalBackends % count ? 1 : 0);
    const backends = [];
    for (let j = 0; j < own; j++, n++) {
      backends.push({
        ip: v6 ? `fd00:2::${(n >> 16).toString(16)}:${(n & 0xffff).toString(16)}` : `10.99.${n >> 8}.${n & 255}`,
        weight: 1 + (j % 3),
        mac: `02:00:00:${hex((n >> 16) & 255)}:${hex((n >> 8) & 255)}:${hex(n & 255)}`,
      });
    }
    services.push({ name: `svc-${i}`, vip, port, protocol, backends, healthCheck: { type: 'none' } });
  }
  return { services };
}

/** The most new flows per second and CPU a services file may let the connection table record. */
const RECORD_RATE_MAX = 4294967295;

/**
 * The services file with `connRecordRate` at its maximum, so that every new flow is recorded
 * (the default limits recording, as a SYN flood would meet it), when this version knows the key.
 */
export function recordingEveryFlow(doc: { services: unknown[] }, validates: (raw: unknown) => unknown): { services: unknown[] } {
  const all = { ...doc, connRecordRate: RECORD_RATE_MAX };
  try {
    validates(all);
    return all;
  } catch {
    return doc;
  }
}
