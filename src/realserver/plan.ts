/**
 * What `xdpvs realserver` wants on a real server of an LVS-DR service, as pure functions over a
 * snapshot of the system (addresses, lo's state, four sysctls): which settings are right, which
 * are wrong, the steps that fix them and the shell commands an operator would type for each.
 * Nothing here touches the system; `system.ts` reads the snapshot and carries the steps out.
 *
 * The settings, and why:
 *   - every VIP on `lo` with a host prefix (/32, /128): the real server accepts packets for the
 *     VIP that the director sends it with only the MACs rewritten, and answers with the VIP as
 *     source. A wider prefix on lo would make a whole subnet local; the VIP on any other
 *     interface makes the host answer ARP/ND for it there and steal the director's traffic.
 *   - `arp_ignore=1` (all and the outgoing interface; the kernel takes the larger of the two):
 *     answer ARP only for addresses configured on the interface the request came in on, so not
 *     for the VIPs on lo.
 *   - `arp_announce=2` (same): in its own ARP requests, use the outgoing interface's address as
 *     sender, never a VIP, so no neighbour learns VIP -> this host from them.
 *   IPv6 needs no sysctl: Linux answers a neighbour solicitation only for addresses on the
 *   interface it came in on. The ARP sysctls are wanted only when a VIP is IPv4.
 *
 * Order of the steps: sysctls first, then the addresses, so there is no moment in which the
 * host holds a VIP and still answers ARP for it.
 */
import { canonicalIp, isMulticastOrBroadcastIp, isUnspecifiedIp, maskPrefix, parseIp, type IpFamily } from '../net/addr.js';
import { UserError } from '../errors.js';

export const ARP_IGNORE = 'arp_ignore';
export const ARP_ANNOUNCE = 'arp_announce';
export type ArpSysctl = typeof ARP_IGNORE | typeof ARP_ANNOUNCE;
/** What a DR real server needs, on `all` and on the outgoing interface. */
export const WANTED: Record<ArpSysctl, number> = { arp_ignore: 1, arp_announce: 2 };
/** What a kernel starts with, for --remove when nothing was recorded. */
export const KERNEL_DEFAULT: Record<ArpSysctl, number> = { arp_ignore: 0, arp_announce: 0 };

export interface RsVip {
  address: string;
  family: IpFamily;
  /** 32 or 128 */
  prefix: number;
}

/** One sysctl of net.ipv4.conf: `conf` is `all` or an interface name. */
export interface SysctlKey {
  conf: string;
  name: ArpSysctl;
}

/** An address as `ip -j addr` shows it. */
export interface IfAddress {
  ifname: string;
  family: IpFamily;
  address: string;
  prefixlen: number;
}

/** What the plan looks at. `sysctls` maps `conf.name` (e.g. `all.arp_ignore`) to the value, null if the file is missing. */
export interface SystemSnapshot {
  loUp: boolean;
  addresses: IfAddress[];
  sysctls: Record<string, number | null>;
}

export type Step =
  | { kind: 'lo-up' }
  | { kind: 'sysctl'; key: SysctlKey; from: number | null; to: number }
  | { kind: 'addr-del'; addr: IfAddress; reason: string }
  | { kind: 'addr-add'; vip: RsVip };

export interface Finding {
  ok: boolean;
  /** `10.0.0.100/32 on lo`, `net.ipv4.conf.all.arp_ignore = 1` */
  text: string;
  /** the steps that fix it (empty when ok) */
  steps: Step[];
}

// ---------------------------------------------------------------------------------------------
// parsing

/** `--vip 10.0.0.100,fd00::100`: canonical, deduplicated, in the given order. */
export function parseVips(list: string): RsVip[] {
  const items = list.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new UserError('--vip: no address given', ['e.g. --vip 10.0.0.100 or --vip 10.0.0.100,fd00::100']);
  const out: RsVip[] = [];
  for (const item of items) {
    const p = parseIp(item);
    if (!p) throw new UserError(`--vip: "${item}" is not an IPv4 or IPv6 address`);
    const address = canonicalIp(item)!;
    const loopback = p.family === 4 ? p.bytes[0] === 127 : address === '::1';
    const linkLocal = p.family === 4 ? p.bytes[0] === 169 && p.bytes[1] === 254 : (p.bytes[0] === 0xfe && (p.bytes[1]! & 0xc0) === 0x80);
    if (isUnspecifiedIp(p.bytes) || isMulticastOrBroadcastIp(p.bytes) || loopback || linkLocal) {
      throw new UserError(`--vip: ${address} cannot be a VIP (unspecified, multicast, broadcast, loopback or link-local)`);
    }
    if (!out.some((v) => v.address === address)) out.push({ address, family: p.family, prefix: p.family === 4 ? 32 : 128 });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// the outgoing interface

/** A route as `ip -j route show table main` prints it. */
export interface RouteEntry {
  dst: string;
  dev?: string;
  type?: string;
  metric?: number;
  nexthops?: Array<{ dev?: string }>;
}

/**
 * The interface the main table sends `ip` out of: the longest prefix that contains it, the
 * lowest metric among equals; `default` is /0. Routes through lo and unreachable/blackhole/
 * prohibit routes do not count. Undefined when nothing matches.
 */
export function routeInterface(routes: readonly RouteEntry[], ip: string): string | undefined {
  const target = parseIp(ip);
  if (!target) return undefined;
  let best: { len: number; metric: number; dev: string } | undefined;
  for (const r of routes) {
    if (r.type && r.type !== 'unicast') continue;
    const dev = r.dev ?? r.nexthops?.find((n) => n.dev)?.dev;
    if (!dev || dev === 'lo') continue;
    let len: number;
    let net: Buffer | null;
    if (r.dst === 'default') {
      len = 0;
      net = Buffer.alloc(target.bytes.length);
    } else {
      const [addr, plen] = r.dst.split('/');
      const p = parseIp(addr ?? '');
      if (!p || p.family !== target.family) continue;
      len = plen === undefined ? p.bytes.length * 8 : Number(plen);
      if (!Number.isInteger(len) || len < 0 || len > p.bytes.length * 8) continue;
      net = maskPrefix(p.bytes, len);
    }
    if (!maskPrefix(target.bytes, len).equals(net)) continue;
    const metric = r.metric ?? 0;
    if (!best || len > best.len || (len === best.len && metric < best.metric)) best = { len, metric, dev };
  }
  return best?.dev;
}

// ---------------------------------------------------------------------------------------------
// evaluating and describing

export const sysctlId = (k: SysctlKey): string => `${k.conf}.${k.name}`;

/** `net.ipv4.conf.eth0.arp_ignore`; an interface name with a dot (a VLAN) takes sysctl's slash form. */
export function sysctlName(k: SysctlKey): string {
  return k.conf.includes('.') ? `net/ipv4/conf/${k.conf}/${k.name}` : `net.ipv4.conf.${k.conf}.${k.name}`;
}

/** The /proc/sys file of a key. */
export const sysctlPath = (k: SysctlKey): string => `/proc/sys/net/ipv4/conf/${k.conf}/${k.name}`;

/** The four ARP sysctls on `all` and `iface`. */
export function arpKeys(iface: string): SysctlKey[] {
  return ['all', iface].flatMap((conf) => [ARP_IGNORE, ARP_ANNOUNCE].map((name) => ({ conf, name: name as ArpSysctl })));
}

const addrText = (a: { address: string }, prefix: number) => `${a.address}/${prefix}`;

/** The shell command an operator would type for a step. */
export function stepCommand(s: Step): string {
  switch (s.kind) {
    case 'lo-up':
      return 'ip link set dev lo up';
    case 'sysctl':
      return `sysctl -w ${sysctlName(s.key)}=${s.to}`;
    case 'addr-del':
      return `ip${s.addr.family === 6 ? ' -6' : ''} addr del ${addrText(s.addr, s.addr.prefixlen)} dev ${s.addr.ifname}`;
    case 'addr-add':
      return s.vip.family === 4
        ? `ip addr add ${addrText(s.vip, 32)} dev lo`
        : `ip -6 addr add ${addrText(s.vip, 128)} dev lo nodad valid_lft forever preferred_lft 0`;
  }
}

/** What a step did, in the past tense. */
export function stepDone(s: Step): string {
  switch (s.kind) {
    case 'lo-up':
      return 'brought lo up';
    case 'sysctl':
      return `${sysctlName(s.key)}: ${s.from ?? 'unset'} -> ${s.to}`;
    case 'addr-del':
      return `removed ${addrText(s.addr, s.addr.prefixlen)} from ${s.addr.ifname} (${s.reason})`;
    case 'addr-add':
      return `added ${addrText(s.vip, s.vip.prefix)} to lo`;
  }
}

const STEP_ORDER: Record<Step['kind'], number> = { 'lo-up': 0, sysctl: 1, 'addr-del': 2, 'addr-add': 3 };

/** Steps in the order they must run: lo up, sysctls, then removals, then the VIPs. */
export function orderSteps(steps: readonly Step[]): Step[] {
  return [...steps].sort((a, b) => STEP_ORDER[a.kind] - STEP_ORDER[b.kind]);
}

/**
 * Every setting `vips` need, right or wrong, with the steps that fix the wrong ones. `iface` is
 * the outgoing interface (null only when no VIP is IPv4: then no ARP sysctl is wanted).
 */
export function evaluate(vips: readonly RsVip[], iface: string | null, sys: SystemSnapshot): Finding[] {
  const findings: Finding[] = [];
  findings.push(sys.loUp ? { ok: true, text: 'lo is up', steps: [] } : { ok: false, text: 'lo is down: nothing on it is reachable', steps: [{ kind: 'lo-up' }] });

  const wantArp = vips.some((v) => v.family === 4);
  if (wantArp) {
    if (iface === null) throw new Error('evaluate: an IPv4 VIP needs the outgoing interface');
    for (const key of arpKeys(iface)) {
      const id = sysctlId(key);
      const cur = sys.sysctls[id] ?? null;
      const want = WANTED[key.name];
      if (cur === want) findings.push({ ok: true, text: `${sysctlName(key)} = ${want}`, steps: [] });
      else {
        findings.push({
          ok: false,
          text: `${sysctlName(key)} is ${cur ?? 'missing'}, needs ${want}${key.name === ARP_IGNORE ? ' (answer ARP only for addresses on the asking interface, not the VIPs on lo)' : ' (never announce a VIP as ARP sender)'}`,
          steps: cur === null ? [] : [{ kind: 'sysctl', key, from: cur, to: want }],
        });
      }
    }
  }

  for (const vip of vips) {
    const same = sys.addresses.filter((a) => a.family === vip.family && a.address === vip.address);
    const onLo = same.filter((a) => a.ifname === 'lo');
    const rightOnLo = onLo.some((a) => a.prefixlen === vip.prefix);
    const steps: Step[] = [];
    const problems: string[] = [];
    for (const a of onLo.filter((x) => x.prefixlen !== vip.prefix)) {
      problems.push(`is on lo as /${a.prefixlen}, which makes the whole subnet local`);
      steps.push({ kind: 'addr-del', addr: a, reason: `a VIP on lo takes /${vip.prefix}` });
    }
    for (const a of same.filter((x) => x.ifname !== 'lo')) {
      problems.push(`is on ${a.ifname}, where this host answers ${vip.family === 4 ? 'ARP' : 'neighbour solicitations'} for it and takes the director's traffic`);
      steps.push({ kind: 'addr-del', addr: a, reason: 'a real server holds its VIPs on lo only' });
    }
    if (!rightOnLo) {
      if (problems.length === 0) problems.push('is not on lo: packets the director sends for it would be dropped');
      steps.push({ kind: 'addr-add', vip });
    }
    findings.push(
      steps.length === 0
        ? { ok: true, text: `${addrText(vip, vip.prefix)} on lo`, steps }
        : { ok: false, text: `${vip.address} ${problems.join('; ')}`, steps },
    );
  }
  return findings;
}

/** The steps of every wrong finding, in the order they must run. */
export const stepsOf = (findings: readonly Finding[]): Step[] => orderSteps(findings.flatMap((f) => f.steps));

/** `10.0.0.100, fd00::100` */
export const vipList = (vips: readonly RsVip[]): string => vips.map((v) => v.address).join(',');
