/**
 * What `doctor` reads from the director: the interface as `ip -d` shows it, its addresses, the
 * neighbour table with every state (not only usable entries), the veth peer and its XDP
 * program, ethtool's driver, counters and offloads, and the ARP sysctls. Each reader returns
 * plain data (or null when the tool or the object is missing); judging is `checks.ts`'s job.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { canonicalIp } from '../net/addr.js';

export interface Run {
  status: number;
  stdout: string;
  stderr: string;
}

export function run(argv: string[], opts: { input?: string; timeoutMs?: number } = {}): Run {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', input: opts.input, timeout: opts.timeoutMs ?? 30_000 });
  if (r.error) return { status: 127, stdout: '', stderr: r.error.message };
  return { status: r.status ?? 128, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

export function hasTool(tool: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin')
    .split(':')
    .some((dir) => dir !== '' && fs.existsSync(path.join(dir, tool)));
}

function ipJson<T>(args: string[]): T | null {
  const r = run(['ip', '-j', ...args]);
  if (r.status !== 0) return null;
  try {
    return JSON.parse(r.stdout || '[]') as T;
  } catch {
    return null;
  }
}

/** `ip -j -d link show` of one interface: what doctor uses of it. */
export interface LinkDetails {
  ifname: string;
  ifindex: number;
  flags: string[];
  operstate?: string;
  mtu: number;
  max_mtu?: number;
  address?: string;
  link_index?: number;
  link_netnsid?: number;
  linkinfo?: { info_kind?: string };
  xdp?: { mode?: number; prog?: { id: number; name?: string }; attached?: Array<{ mode: number; prog: { id: number; name?: string } }> };
  /** where it was found, for a veth peer: the namespace name (undefined: this one) */
  netns?: string;
}

export function linkDetails(iface: string, netns?: string): LinkDetails | null {
  const links = ipJson<LinkDetails[]>([...(netns ? ['-n', netns] : []), '-d', 'link', 'show', 'dev', iface]);
  return links?.[0] ? { ...links[0], netns } : null;
}

export interface IfaceAddress {
  family: 4 | 6;
  address: string;
  prefixlen: number;
  /** seconds; 0 = deprecated (never chosen as a source) */
  preferred?: number;
  flags: string[];
}

/** Addresses on an interface, canonical. */
export function interfaceAddresses(iface: string): IfaceAddress[] {
  const links = ipJson<Array<{ addr_info?: Array<Record<string, unknown>> }>>(['addr', 'show', 'dev', iface]) ?? [];
  return links.flatMap((l) =>
    (l.addr_info ?? [])
      .filter((a) => a.family === 'inet' || a.family === 'inet6')
      .map((a) => ({
        family: a.family === 'inet' ? (4 as const) : (6 as const),
        address: canonicalIp(String(a.local)) ?? String(a.local),
        prefixlen: Number(a.prefixlen),
        preferred: typeof a.preferred_life_time === 'number' ? a.preferred_life_time : undefined,
        flags: ['tentative', 'dadfailed', 'deprecated'].filter((f) => a[f] === true),
      })),
  );
}

/** Every interface holding `ip`, other than `except`. */
export function interfacesWith(ip: string, except: string): string[] {
  const links = ipJson<Array<{ ifname: string; addr_info?: Array<{ local: string }> }>>(['addr', 'show']) ?? [];
  return links.filter((l) => l.ifname !== except && (l.addr_info ?? []).some((a) => canonicalIp(a.local) === ip)).map((l) => l.ifname);
}

export interface NeighbourEntry {
  lladdr?: string;
  state: string[];
}

/** The kernel's neighbour table on `iface`, every state (FAILED and INCOMPLETE included), by IP. */
export function neighbourTable(iface: string): Map<string, NeighbourEntry> {
  const out = new Map<string, NeighbourEntry>();
  for (const n of ipJson<Array<{ dst: string; lladdr?: string; state?: string[] }>>(['neigh', 'show', 'dev', iface]) ?? []) {
    const ip = canonicalIp(n.dst);
    if (ip) out.set(ip, { lladdr: n.lladdr?.toLowerCase(), state: n.state ?? [] });
  }
  return out;
}

/**
 * The other end of a veth: in this namespace, or in the one its `link_netnsid` names (found
 * through `ip netns list-id`, so only a named namespace). null when it cannot be seen.
 */
export function vethPeer(link: LinkDetails): LinkDetails | null {
  if (link.link_index === undefined) return null;
  let netns: string | undefined;
  if (link.link_netnsid !== undefined) {
    const ids = ipJson<Array<{ nsid: number; name?: string }>>(['netns', 'list-id']) ?? [];
    netns = ids.find((i) => i.nsid === link.link_netnsid)?.name;
    if (!netns) return null;
  }
  const links = ipJson<LinkDetails[]>([...(netns ? ['-n', netns] : []), '-d', 'link', 'show']) ?? [];
  const peer = links.find((l) => l.ifindex === link.link_index);
  return peer ? { ...peer, netns } : null;
}

/** `ethtool -i`: the driver's name. */
export function driverOf(iface: string): string | null {
  const r = run(['ethtool', '-i', iface]);
  return r.status === 0 ? (/^driver:\s*(\S+)/m.exec(r.stdout)?.[1] ?? null) : null;
}

/** `ethtool -S`: every counter by name; null when ethtool fails or has none. */
export function ethtoolStats(iface: string): Map<string, number> | null {
  const r = run(['ethtool', '-S', iface]);
  if (r.status !== 0) return null;
  const out = new Map<string, number>();
  for (const m of r.stdout.matchAll(/^\s*([^:\n]+):\s*(\d+)\s*$/gm)) out.set(m[1]!.trim(), Number(m[2]));
  return out;
}

/** `ethtool -k`: feature -> on/off (and whether it is fixed). */
export function ethtoolFeatures(iface: string): Map<string, { on: boolean; fixed: boolean }> | null {
  const r = run(['ethtool', '-k', iface]);
  if (r.status !== 0) return null;
  const out = new Map<string, { on: boolean; fixed: boolean }>();
  for (const m of r.stdout.matchAll(/^\s*([\w-]+):\s*(on|off)(\s*\[fixed\])?/gm)) out.set(m[1]!, { on: m[2] === 'on', fixed: !!m[3] });
  return out;
}

/** net.ipv4.conf.<conf>.<name> in this namespace; null if unreadable. */
export function ipv4Conf(conf: string, name: string): number | null {
  try {
    const n = Number(fs.readFileSync(`/proc/sys/net/ipv4/conf/${conf}/${name}`, 'utf8').trim());
    return Number.isInteger(n) ? n : null;
  } catch {
    return null;
  }
}
