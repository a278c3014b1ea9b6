/**
 * doctor's judgements, as pure functions from what was read to findings: each finding is OK,
 * WARN or FAIL, says what it found in one line and, below, why it matters and what to do.
 * Nothing here touches the system, so every rule can be tested with made-up input.
 */
import type { XdpQueryResult } from '../libbpf.js';
import type { LoadedState } from '../runtime/state.js';
import type { ProbeResult } from './probe.js';
import type { IfaceAddress, LinkDetails, NeighbourEntry } from './system.js';

export type Level = 'OK' | 'WARN' | 'FAIL';

export interface Finding {
  level: Level;
  /** which check: interface, state, program, pin, vip, arp, backend, xdp-tx, mtu, offload, probe */
  check: string;
  message: string;
  /** why it matters, what to do (`fix: ...` lines are commands) */
  details: string[];
}

const ok = (check: string, message: string, details: string[] = []): Finding => ({ level: 'OK', check, message, details });
const warn = (check: string, message: string, details: string[] = []): Finding => ({ level: 'WARN', check, message, details });
const fail = (check: string, message: string, details: string[] = []): Finding => ({ level: 'FAIL', check, message, details });

const LEVELS: Level[] = ['OK', 'WARN', 'FAIL'];
export const worst = (levels: readonly Level[]): Level => levels.reduce<Level>((a, b) => (LEVELS.indexOf(b) > LEVELS.indexOf(a) ? b : a), 'OK');

/** The largest frame native XDP takes without multi-buffer on most drivers: one 4 KiB page less headroom (256) and skb_shared_info (320), less the Ethernet header. */
export const ONE_PAGE_MTU = 4096 - 256 - 320 - 14;

// ---------------------------------------------------------------------------------------------
// the interface

export function interfaceFindings(iface: string, link: LinkDetails | null): Finding[] {
  if (!link) return [fail('interface', `interface ${iface} does not exist here`, ['run doctor in the network namespace of the director\'s interface, and check the name (`ip link`)'])];
  if (!link.flags.includes('UP')) return [fail('interface', `${iface} is down: no frame reaches the program`, [`fix: ip link set dev ${iface} up`])];
  if (!link.flags.includes('LOWER_UP')) return [fail('interface', `${iface} has no carrier (operstate ${link.operstate ?? '?'}): check the cable or the peer`)];
  return [ok('interface', `${iface} is up (ifindex ${link.ifindex}, MAC ${link.address ?? '?'}, MTU ${link.mtu})`)];
}

// ---------------------------------------------------------------------------------------------
// program and pins

export interface ProgramInput {
  iface: string;
  state: LoadedState | undefined;
  /** the interface's ifindex now */
  ifindex: number;
  xdp: XdpQueryResult;
  /** name of the attached program, when one is attached */
  attachedName?: string;
  /** the id of the program pinned at `pinPath`; null when the pin is missing */
  pinnedProgId: number | null;
  pinPath: string;
  /** pinned maps that are missing */
  missingMaps: string[];
  /** `ethtool -i` */
  driver: string | null;
  mtu: number;
}

function genericWhy(p: ProgramInput): string[] {
  const lines = [
    'in generic (skb) mode the program runs after the kernel has built an skb for every frame, in the stack\'s receive path, and XDP_TX goes out through the stack again: several times the cost per packet of native mode, which runs in the driver before any allocation',
  ];
  if (p.mtu > ONE_PAGE_MTU) {
    lines.push(`the MTU of ${p.iface} (${p.mtu}) is above one page per frame (${ONE_PAGE_MTU}), which native XDP needs on most drivers${p.driver === 'veth' ? ' (veth: exactly this limit)' : ''}: lower it (ip link set dev ${p.iface} mtu 1500) to attach natively`);
  }
  lines.push(
    `fix: xdpvs unload -i ${p.iface} && xdpvs load ${p.state?.source ?? 'FILE'} -i ${p.iface} --mode native (needs a driver with XDP support; ${p.iface}'s is ${p.driver ?? 'unknown'})`,
  );
  return lines;
}

export function programFindings(p: ProgramInput): Finding[] {
  const out: Finding[] = [];
  const { iface, state, xdp } = p;
  if (!state) {
    const attached = xdp.progId !== 0 ? `; program ${xdp.progId}${p.attachedName ? ` (${p.attachedName})` : ''} is attached, but xdpvs did not load it` : '; no XDP program is attached either';
    out.push(fail('state', `xdpvs has nothing loaded on ${iface}${attached}`, [
      'nothing is balanced: the director\'s own kernel answers the VIPs',
      `fix: xdpvs load services.json -i ${iface}${xdp.progId !== 0 ? ` (remove the other program first: ip link set dev ${iface} xdp off)` : ''}`,
    ]));
    return out;
  }
  const reload = `xdpvs load ${state.source} -i ${iface}`;
  if (state.ifindex !== p.ifindex) {
    out.push(fail('state', `${iface} was recreated since the load (ifindex ${state.ifindex} then, ${p.ifindex} now): the program went with the old interface`, [`fix: ${reload}`]));
  }
  if (xdp.progId === 0) {
    out.push(fail('program', `no XDP program is attached to ${iface}: nothing is balanced (xdpvs loaded program ${state.progId} at ${state.loadedAt})`, [
      'clients reach the director\'s own kernel, which refuses or resets connections to the VIPs',
      `fix: ${reload} (attaches it again, reusing the pinned maps: flows and counters are kept)`,
    ]));
  } else if (xdp.progId !== state.progId) {
    out.push(fail('program', `program ${xdp.progId}${p.attachedName ? ` (${p.attachedName})` : ''} is attached to ${iface}, not xdpvs's program ${state.progId}`, [
      'something else replaced xdpvs\'s program: its services are not balanced',
      `fix: ip link set dev ${iface} xdp off && ${reload}`,
    ]));
  } else if (xdp.mode === 'native') {
    out.push(ok('program', `program ${xdp.progId} (xdpvs) is attached to ${iface} in native (driver) mode`));
  } else if (xdp.mode === 'generic') {
    out.push(warn('program', `program ${xdp.progId} (xdpvs) is attached to ${iface} in generic (skb) mode, not native`, genericWhy(p)));
  } else {
    out.push(ok('program', `program ${xdp.progId} (xdpvs) is attached to ${iface} in ${xdp.mode} mode`));
  }
  if (xdp.nativeProgId && xdp.genericProgId) {
    out.push(warn('program', `${iface} has programs in both native (${xdp.nativeProgId}) and generic (${xdp.genericProgId}) mode: the native one sees every frame first`, [
      `fix: detach the one that is not xdpvs's (ip link set dev ${iface} xdpgeneric off, or xdpdrv off)`,
    ]));
  }

  if (p.pinnedProgId === null) {
    out.push(fail('pin', `the pinned program ${p.pinPath} is missing`, [
      'later commands cannot find the program, and the next load cannot replace it atomically',
      `fix: ${reload}`,
    ]));
  } else if (xdp.progId !== 0 && p.pinnedProgId !== xdp.progId) {
    out.push(fail('pin', `the pinned program (${p.pinPath}) is program ${p.pinnedProgId}, but ${xdp.progId} is attached`, [`fix: ${reload}`]));
  } else if (xdp.progId !== 0) {
    out.push(ok('pin', `the pinned program (${p.pinPath}) is the attached one`));
  }
  if (p.missingMaps.length > 0) {
    out.push(fail('pin', `pinned maps missing: ${p.missingMaps.join(', ')}`, [
      'status, stats, backend and the daemon read and change the data plane through them',
      `fix: ${reload}`,
    ]));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// VIPs on the director

export interface VipInfo {
  address: string;
  family: 4 | 6;
  /** services on this VIP, by name */
  services: string[];
}

export interface VipInput {
  iface: string;
  vips: VipInfo[];
  addresses: IfaceAddress[];
  /** VIP -> other interfaces of the director that hold it */
  elsewhere: Map<string, string[]>;
  /** max(all, iface) arp_ignore on the director */
  arpIgnore: number | null;
}

export function vipFindings(v: VipInput): Finding[] {
  return v.vips.map((vip) => {
    const here = v.addresses.find((a) => a.family === vip.family && a.address === vip.address);
    const what = `VIP ${vip.address} (${vip.services.join(', ')})`;
    const addCmd =
      vip.family === 4
        ? `ip addr add ${vip.address}/32 dev ${v.iface}`
        : `ip -6 addr add ${vip.address}/128 dev ${v.iface} nodad valid_lft forever preferred_lft 0`;
    if (!here) {
      const other = v.elsewhere.get(vip.address) ?? [];
      return fail('vip', `${what} is not on ${v.iface}${other.length ? ` (it is on ${other.join(', ')})` : ''}`, [
        `the director must answer ${vip.family === 4 ? 'ARP' : 'neighbour solicitations'} for the VIP on ${v.iface}, or clients' frames never reach the program`,
        `fix: ${addCmd}`,
      ]);
    }
    if (here.flags.includes('dadfailed')) {
      return fail('vip', `${what} on ${v.iface} failed duplicate address detection: another host on the segment has it`, [
        'find it (the ND check below names the MAC), take the VIP off its interface (xdpvs realserver --apply there), then re-add it here',
        `fix: ip -6 addr del ${vip.address}/${here.prefixlen} dev ${v.iface} && ${addCmd}`,
      ]);
    }
    if (here.flags.includes('tentative')) {
      return warn('vip', `${what} on ${v.iface} is still tentative (duplicate address detection running): not answered yet`, [`add it with nodad: ${addCmd}`]);
    }
    if (vip.family === 4 && v.arpIgnore !== null && v.arpIgnore >= 2 && here.prefixlen === 32) {
      return fail('vip', `${what} is on ${v.iface}, but the director's arp_ignore is ${v.arpIgnore}: it does not answer ARP for a /32 VIP`, [
        'arp_ignore=2 answers only senders in the target address\'s subnet (a /32 has none), 3 and 8 answer less still',
        `fix: sysctl -w net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.${v.iface}.arp_ignore=0 (1 also works on the director)`,
      ]);
    }
    if (vip.family === 6 && here.preferred !== 0) {
      return warn('vip', `${what} is on ${v.iface}, but preferred: the director's own connections may take it as their source`, [
        'a /128 VIP beats the interface\'s /64 address in source selection (longest match), so the director talks to the real servers from the VIP, which they hold too, and their answers never come back',
        `fix: ip -6 addr change ${vip.address}/${here.prefixlen} dev ${v.iface} valid_lft forever preferred_lft 0`,
      ]);
    }
    return ok('vip', `${what} is on ${v.iface}`);
  });
}

// ---------------------------------------------------------------------------------------------
// who answers on the segment

export interface BackendInfo {
  ip: string;
  family: 4 | 6;
  /** services it belongs to, by name */
  services: string[];
  /** VIPs of those services */
  vips: string[];
  /** the MAC the data plane rewrites to */
  mac: string;
  /** the MAC comes from the services file */
  configuredMac: boolean;
  /** a health checker holds it down */
  down: boolean;
}

/** The probe reached the segment when at least one target answered. */
export function probeReachedSegment(probe: ProbeResult): boolean {
  return probe.ran && [...probe.answers.values()].some((s) => s.size > 0);
}

export function probeFindings(iface: string, probe: ProbeResult, backends: readonly BackendInfo[]): Finding[] {
  if (!probe.ran) {
    const verb = probe.reason.startsWith('skipped') ? 'did not ask' : 'could not ask';
    return [warn('probe', `${verb} ${iface}'s segment who answers for the VIPs and backends: ${probe.reason}`, [
      'the checks below then rely on the director\'s neighbour table only, and cannot see other hosts answering for a VIP',
      `check by hand from another host on the segment: arping -I IF VIP (only the director's MAC may answer)`,
    ])];
  }
  if (!probeReachedSegment(probe)) {
    return [warn('probe', `asked ${iface}'s segment from a probe interface (macvlan ${probe.probeMac}), but nothing answered at all${backends.length ? ', not even the backends' : ''}`, [
      'the segment may drop frames from MAC addresses it does not know (cloud networks do), or every backend is down',
      'who else answers for the VIPs is unknown: check by hand from another host (arping -I IF VIP)',
    ])];
  }
  return [ok('probe', `asked ${iface}'s segment from a probe interface (macvlan ${probe.probeMac}, ARP/ND, ${probe.listenedMs} ms)`)];
}

/** MAC -> what doctor knows of it (`backend 10.0.0.11, fd00::11`), for naming repliers. */
export function macNames(backends: readonly BackendInfo[], probe: ProbeResult): Map<string, string> {
  const ips = new Map<string, string[]>();
  const add = (mac: string, ip: string) => {
    const list = ips.get(mac) ?? [];
    if (!list.includes(ip)) list.push(ip);
    ips.set(mac, list);
  };
  for (const b of backends) {
    if (probe.ran) for (const mac of probe.answers.get(b.ip) ?? []) add(mac, b.ip);
    if (b.mac) add(b.mac, b.ip);
  }
  return new Map([...ips].map(([mac, list]) => [mac, `backend ${list.join(', ')}`]));
}

export interface ArpInput {
  iface: string;
  directorMac: string;
  vips: VipInfo[];
  backends: BackendInfo[];
  probe: ProbeResult;
}

/** Nobody but the director may answer ARP/ND for a VIP. */
export function vipAnswerFindings(a: ArpInput): Finding[] {
  if (!probeReachedSegment(a.probe) || !a.probe.ran) return [];
  const names = macNames(a.backends, a.probe);
  const allVips = a.vips.map((v) => v.address);
  return a.vips.map((vip) => {
    const proto = vip.family === 4 ? 'ARP' : 'neighbour solicitations (ND)';
    const others = [...(a.probe.ran ? (a.probe.answers.get(vip.address) ?? []) : [])].filter((m) => m !== a.directorMac.toLowerCase());
    if (others.length === 0) return ok('arp', `nobody but the director answers ${proto} for VIP ${vip.address}`);
    const who = others.map((m) => `${m}${names.has(m) ? ` (${names.get(m)})` : ''}`);
    const vipsOf = (mac: string) => {
      const mine = a.backends.filter((b) => b.mac === mac || (a.probe.ran && a.probe.answers.get(b.ip)?.has(mac)));
      const v = [...new Set(mine.flatMap((b) => b.vips))];
      return v.length > 0 ? v : allVips;
    };
    return fail('arp', `VIP ${vip.address}: ${others.length === 1 ? 'another host answers' : `${others.length} other hosts answer`} ${proto} for it: ${who.join(', ')}`, [
      `clients and routers that take ${others.length === 1 ? 'that answer' : 'those answers'} send the VIP's traffic straight to ${others.length === 1 ? 'that host' : 'them'}, past the director: it is not balanced${vip.family === 4 ? ' (until their ARP entry expires)' : ''}`,
      vip.family === 4
        ? 'a real server must hold the VIP on lo with arp_ignore=1 and arp_announce=2'
        : 'a real server must hold the VIP on lo, not on the interface on the segment',
      ...others.map((m) => `fix: on the host with MAC ${m}${names.has(m) ? ` (${names.get(m)})` : ''}: xdpvs realserver --vip ${vipsOf(m).join(',')} --apply`),
    ]);
  });
}

const USABLE = new Set(['REACHABLE', 'STALE', 'DELAY', 'PROBE', 'PERMANENT', 'NOARP']);

export interface BackendInput {
  iface: string;
  backends: BackendInfo[];
  neighbours: Map<string, NeighbourEntry>;
  probe: ProbeResult;
  source: string;
}

export function backendFindings(b: BackendInput): Finding[] {
  const probed = probeReachedSegment(b.probe);
  return b.backends.map((be) => {
    const problems: Array<{ level: Level; text: string }> = [];
    const details: string[] = [];
    const name = `backend ${be.ip} (${be.services.join(', ')})`;
    const neigh = b.neighbours.get(be.ip);
    // the director's own entry may still hold the old MAC: load would take it again
    const flush = neigh?.lladdr === be.mac ? `ip neigh del ${be.ip} dev ${b.iface} && ` : '';
    const fixMac = be.configuredMac
      ? `fix: correct its "mac" in ${b.source}, then xdpvs load ${b.source} -i ${b.iface}`
      : `fix: ${flush}xdpvs load ${b.source} -i ${b.iface} (takes the MAC from the neighbour table again)`;
    const neighState = neigh ? neigh.state.join(',') || 'no state' : 'no entry';
    const usable = !!neigh?.lladdr && neigh.state.some((s) => USABLE.has(s));

    if (!be.mac) problems.push({ level: 'FAIL', text: 'has no MAC in the data plane' });
    if (probed && b.probe.ran) {
      const seen = [...(b.probe.answers.get(be.ip) ?? [])];
      if (seen.length === 0) {
        problems.push({
          level: be.down ? 'WARN' : 'FAIL',
          text: `does not answer ${be.family === 4 ? 'ARP' : 'ND'} on ${b.iface}'s segment${be.down ? ' (the health checker holds it down already)' : ''}`,
        });
        details.push('it is down, or not on the director\'s L2 segment: direct routing rewrites only the MAC, so a real server must be on the same segment');
      } else if (seen.length > 1) {
        problems.push({ level: 'FAIL', text: `is answered for by ${seen.length} MACs (${seen.join(', ')}): two hosts have this address` });
        details.push('flows go to whichever MAC the data plane has; find the other host and give it another address');
      } else if (be.mac && seen[0] !== be.mac) {
        problems.push({ level: 'FAIL', text: `now answers from ${seen[0]}, but the data plane sends its flows to ${be.mac}` });
        details.push(fixMac);
      }
    }
    if (!neigh || (!usable && !neigh.lladdr)) {
      const text = `has ${neigh ? `a ${neighState} entry` : 'no entry'} in the director's neighbour table on ${b.iface}`;
      problems.push({ level: probed ? 'WARN' : 'FAIL', text });
      details.push(`xdpvs load and the daemon take MACs from that table${probed ? '; the segment probe reached it, so the data plane is not affected now' : ''}`);
    } else if (neigh.lladdr && be.mac && neigh.lladdr !== be.mac) {
      problems.push({ level: 'FAIL', text: `is at ${neigh.lladdr} in the director's neighbour table (${neighState}), but the data plane sends its flows to ${be.mac}` });
      if (!details.includes(fixMac)) details.push(fixMac);
    } else if (neigh.state.includes('FAILED')) {
      problems.push({ level: probed ? 'WARN' : 'FAIL', text: `resolution FAILED in the director's neighbour table (last known ${neigh.lladdr})` });
    }

    if (problems.length === 0) {
      const where = probed ? 'answers on the segment' : 'not probed on the segment';
      return ok('backend', `${name} is at ${be.mac}${be.configuredMac ? ' (from the file)' : ''}, ${where}, neighbour entry ${neighState}`);
    }
    const level = worst(problems.map((p) => p.level));
    const [first, ...rest] = problems;
    return { level, check: 'backend', message: `${name} ${first!.text}`, details: [...rest.map((p) => `also: ${p.text}`), ...details] };
  });
}

// ---------------------------------------------------------------------------------------------
// XDP_TX: veth peers, error counters, offloads

const isXdpTxError = (name: string): boolean => /xdp/i.test(name) && /(tx|xmit)/i.test(name) && /err/i.test(name);

/** Sum of the XDP_TX/xmit error counters among `ethtool -S`'s; null when there are none. */
export function xdpTxErrors(stats: Map<string, number> | null): number | null {
  if (!stats) return null;
  const names = [...stats.keys()].filter(isXdpTxError);
  return names.length === 0 ? null : names.reduce((n, k) => n + stats.get(k)!, 0);
}

export interface XdpTxInput {
  iface: string;
  link: LinkDetails;
  mode: 'native' | 'generic' | 'offload' | null;
  driver: string | null;
  /** `ethtool -S` at the start and at the end of the run */
  statsBefore: Map<string, number> | null;
  statsAfter: Map<string, number> | null;
  features: Map<string, { on: boolean; fixed: boolean }> | null;
  /** the veth peer, when IFACE is a veth and the peer could be seen */
  peer: LinkDetails | null;
  ethtool: boolean;
}

const peerMode = (l: LinkDetails): 'native' | 'generic' | null => {
  const modes = l.xdp?.attached?.map((a) => a.mode) ?? (l.xdp?.mode !== undefined ? [l.xdp.mode] : []);
  if (modes.includes(1)) return 'native';
  if (modes.includes(2)) return 'generic';
  return null;
};

export function xdpTxFindings(x: XdpTxInput): Finding[] {
  const out: Finding[] = [];
  const isVeth = x.link.linkinfo?.info_kind === 'veth' || x.driver === 'veth';
  if (isVeth && x.mode === 'generic') {
    out.push(ok('xdp-tx', `${x.iface} is a veth; in generic mode XDP_TX goes out through the stack's transmit path, so its peer needs no XDP program`));
  } else if (isVeth) {
    if (!x.peer) {
      out.push(warn('xdp-tx', `${x.iface} is a veth whose peer (ifindex ${x.link.link_index ?? '?'}${x.link.link_netnsid !== undefined ? `, in namespace id ${x.link.link_netnsid}` : ''}) doctor cannot see`, [
        'veth drops XDP_TX frames unless its peer has a native XDP program (one returning XDP_PASS suffices): make sure it has one',
      ]));
    } else {
      const where = `${x.peer.ifname}${x.peer.netns ? ` in namespace ${x.peer.netns}` : ''}`;
      const m = peerMode(x.peer);
      const attach = `ip${x.peer.netns ? ` -n ${x.peer.netns}` : ''} link set dev ${x.peer.ifname} xdpdrv obj xdp_pass.o sec xdp (any program that returns XDP_PASS; the lab uses bpf/xdp_pass.c)`;
      if (m === 'native') out.push(ok('xdp-tx', `${x.iface} is a veth; its peer ${where} has a native XDP program, so XDP_TX frames reach it`));
      else {
        out.push(fail('xdp-tx', `${x.iface} is a veth and its peer ${where} has ${m === 'generic' ? 'only a generic' : 'no'} XDP program: veth drops every XDP_TX frame`, [
          'a veth delivers XDP_TX frames only into a peer that runs a native XDP program (its NAPI receive path); otherwise they are counted in xdp_tx_errors and lost',
          `fix: ${attach}`,
        ]));
      }
    }
  }

  const before = xdpTxErrors(x.statsBefore);
  const after = xdpTxErrors(x.statsAfter);
  if (!x.ethtool) {
    out.push(warn('xdp-tx', 'ethtool is not installed: XDP_TX error counters and offloads not checked', ['fix: apt-get install ethtool']));
  } else if (after !== null) {
    const delta = before !== null ? after - before : 0;
    if (delta > 0) {
      out.push(fail('xdp-tx', `${x.iface} failed to send ${delta} XDP_TX frame(s) while doctor ran (${after} since it came up)`, [
        'forwarded frames are being dropped on the way out',
        isVeth ? 'on a veth: give the peer a native XDP program (above)' : 'check the driver\'s XDP TX queues (ethtool -S) and that the NIC has enough queues for the CPUs (ethtool -l)',
      ]));
    } else if (after > 0) {
      out.push(warn('xdp-tx', `${x.iface} counted ${after} XDP_TX error(s) since it came up, none while doctor ran`, ['earlier frames were dropped on the way out; if the count grows, forwarding is broken']));
    } else {
      out.push(ok('xdp-tx', `no XDP_TX errors on ${x.iface} (ethtool -S)`));
    }
  }

  if (x.features) {
    const on = (f: string) => x.features!.get(f)?.on === true;
    const merged = ['large-receive-offload', 'rx-gro-hw'].filter(on);
    if (merged.length > 0) {
      out.push(warn('offload', `${merged.join(' and ')} on ${x.iface}: the NIC merges received frames before XDP sees them`, [
        'XDP_TX would send merged super-frames the real servers\' NICs never see on the wire, and most drivers refuse native XDP with it on',
        `fix: ethtool -K ${x.iface} ${merged.map((f) => (f === 'large-receive-offload' ? 'lro off' : 'rx-gro-hw off')).join(' ')}`,
      ]));
    }
    if (on('generic-receive-offload') && x.mode === 'generic') {
      out.push(warn('offload', `GRO is on and the program runs in generic mode on ${x.iface}: it sees GRO-merged packets (up to 64 KiB), not the frames on the wire`, [
        'it counts and forwards merged packets, and sending one on with XDP_TX relies on the stack splitting it up again',
        `fix: ethtool -K ${x.iface} gro off (or attach in native mode, which runs before GRO)`,
      ]));
    } else if (merged.length === 0) {
      out.push(ok('offload', `no receive offload merges frames before the program (LRO and hardware GRO off${on('generic-receive-offload') ? '; software GRO runs after native XDP' : ''})`));
    }
  }

  if (x.mode === 'native' || x.mode === null) {
    out.push(ok('mtu', `MTU ${x.link.mtu}${x.mode === 'native' ? ' (the driver took the program natively at this MTU)' : ''}${x.link.max_mtu !== undefined ? `; ${x.iface} accepts up to ${x.link.max_mtu} now` : ''}`));
  } else if (x.link.mtu > ONE_PAGE_MTU) {
    out.push(warn('mtu', `MTU ${x.link.mtu} is above one page per frame (${ONE_PAGE_MTU}): native XDP refuses it on most drivers`, [`fix: ip link set dev ${x.iface} mtu 1500, then load in native mode`]));
  } else {
    out.push(ok('mtu', `MTU ${x.link.mtu} fits native XDP`));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

export interface Counts {
  OK: number;
  WARN: number;
  FAIL: number;
}

export function countLevels(findings: readonly Finding[]): Counts {
  const c: Counts = { OK: 0, WARN: 0, FAIL: 0 };
  for (const f of findings) c[f.level]++;
  return c;
}

/** The report as text: one line per finding, its details indented under it. */
export function formatFindings(findings: readonly Finding[]): string[] {
  const lines: string[] = [];
  for (const f of findings) {
    lines.push(`${f.level.padEnd(4)}  ${f.message}`);
    for (const d of f.details) lines.push(`      ${d}`);
  }
  return lines;
}
