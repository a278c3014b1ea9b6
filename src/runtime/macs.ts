/**
 * Noticing that a real server's MAC address changed between two applies (a replaced NIC, a
 * failover that moved the address, or a conflict on the segment): the state records the MAC
 * written for every backend, so comparing the state before an apply with the one after says it.
 */

/** A backend IP whose MAC is not the one it had; `keys` are the backends (backendKey) with that IP. */
export interface MacChange {
  ip: string;
  from: string;
  to: string;
  keys: string[];
}

/** The IP of a backendKey (`proto/vip/port/ip`; an IPv6 address holds no "/"). */
const ipOfKey = (key: string): string => key.slice(key.lastIndexOf('/') + 1);

/**
 * Backends present in both (by backendKey) whose MAC differs, one entry per IP and change (a
 * real server in several services changes once). New and removed backends are not changes.
 */
export function macChanges(previous: Record<string, string> | undefined, next: Record<string, string>): MacChange[] {
  const byChange = new Map<string, MacChange>();
  for (const [key, to] of Object.entries(next)) {
    const from = previous?.[key];
    if (from === undefined || from.toLowerCase() === to.toLowerCase()) continue;
    const ip = ipOfKey(key);
    const id = `${ip} ${from} ${to}`;
    const change = byChange.get(id) ?? { ip, from, to, keys: [] };
    change.keys.push(key);
    byChange.set(id, change);
  }
  return [...byChange.values()];
}

/** `10.200.0.12: MAC changed from 02:… to 02:…` */
export function formatMacChange(c: MacChange): string {
  return `${c.ip}: MAC changed from ${c.from} to ${c.to}`;
}
