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
