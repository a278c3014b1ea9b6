import { spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { formatMac, parseMac } from '../net/addr.js';

/** Neighbour states whose link-layer address can be used (ip-neighbour(8)). */
const USABLE = new Set(['REACHABLE', 'STALE', 'DELAY', 'PROBE', 'PERMANENT', 'NOARP']);

/** IP -> MAC from the kernel's neighbour table on one interface. */
export function readNeighbours(iface: string): Map<string, string> {
  const r = spawnSync('ip', ['-j', 'neigh', 'show', 'dev', iface], { encoding: 'utf8' });
  const result = new Map<string, string>();
  if (r.status !== 0) return result;
  for (const n of JSON.parse(r.stdout || '[]') as Array<{ dst: string; lladdr?: string; state?: string[] }>) {
    const mac = n.lladdr && parseMac(n.lladdr);
    if (mac && (n.state ?? []).some((s) => USABLE.has(s))) result.set(n.dst, formatMac(mac));
  }
  return result;
}

/**
 * Makes the kernel resolve addresses it has no entry for: one datagram to the discard port
 * starts ARP/ND, as any first packet would. The datagram itself is never forwarded by us.
 */
export async function probeNeighbours(ips: string[], waitMs = 300): Promise<void> {
  await Promise.all(
    ips.map(
      (ip) =>
        new Promise<void>((resolve) => {
          const sock = dgram.createSocket(ip.includes(':') ? 'udp6' : 'udp4');
          sock.on('error', () => {
            sock.close();
            resolve();
          });
          sock.send(Buffer.alloc(0), 9, ip, () => {
            sock.close();
            resolve();
          });
        }),
    ),
  );
  await new Promise((r) => setTimeout(r, waitMs));
}
