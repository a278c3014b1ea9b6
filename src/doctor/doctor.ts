/**
 * `xdpvs doctor -i IFACE`, run on the director: reads what `load` left (state, pins), the
 * kernel's view of the interface, asks the segment who answers for the VIPs and backends
 * (probe.ts), and turns all of it into findings (checks.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { MAPS, PERSISTENT_MAPS } from '../abi.js';
import { BpfProgram, xdpQuery, type XdpQueryResult } from '../libbpf.js';
import { pinDir } from '../paths.js';
import { backendKey } from '../plan.js';
import { PROGRAM_PIN } from '../runtime/load.js';
import { probeNeighbours } from '../runtime/neigh.js';
import { loadedServices, openPinnedMaps, readBackendMacs } from '../runtime/read.js';
import { readState, stateConfig, type LoadedState } from '../runtime/state.js';
import { UserError } from '../errors.js';
import {
  backendFindings,
  countLevels,
  interfaceFindings,
  probeFindings,
  programFindings,
  vipAnswerFindings,
  vipFindings,
  xdpTxFindings,
  type BackendInfo,
  type Counts,
  type Finding,
  type VipInfo,
} from './checks.js';
import { probeSegment } from './probe.js';
import {
  driverOf,
  ethtoolFeatures,
  ethtoolStats,
  hasTool,
  interfaceAddresses,
  interfacesWith,
  ipv4Conf,
  linkDetails,
  neighbourTable,
  vethPeer,
} from './system.js';

export interface DoctorReport {
  interface: string;
  /** what is loaded, in one line */
  summary: string;
  findings: Finding[];
  counts: Counts;
}

export interface DoctorOptions {
  /** how long the segment probe listens for answers */
  listenMs?: number;
  /** false: do not put a probe interface on the segment (--no-probe) */
  probe?: boolean;
}

function attachedName(id: number): string | undefined {
  if (id === 0) return undefined;
  try {
    const p = BpfProgram.fromId(id);
    try {
      return p.info().name;
    } finally {
      p.close();
    }
  } catch {
    return undefined;
  }
}

function pinnedProgramId(file: string): number | null {
  if (!fs.existsSync(file)) return null;
  try {
    const p = BpfProgram.fromPin(file);
    try {
      return p.info().id;
    } finally {
      p.close();
    }
  } catch {
    return null;
  }
}

/** The services' VIPs and backends as doctor looks at them: one entry per address. */
function servicesView(state: LoadedState): { vips: VipInfo[]; backends: BackendInfo[] } {
  const config = stateConfig(state);
  let mapMacs = new Map<number, string>();
  try {
    const { maps, close } = openPinnedMaps(state, [MAPS.backends]);
    try {
      mapMacs = readBackendMacs(maps.backends, loadedServices(state, config));
    } finally {
      close();
    }
  } catch {
    // pins missing: reported by the pin check; the state's MACs stand in
  }
  const services = loadedServices(state, config, mapMacs);
  const vips = new Map<string, VipInfo>();
  const backends = new Map<string, BackendInfo>();
  config.services.forEach((s, i) => {
    const vip = vips.get(s.vip.address) ?? { address: s.vip.address, family: s.vip.family, services: [] };
    vip.services.push(s.name);
    vips.set(s.vip.address, vip);
    s.backends.forEach((b, j) => {
      const loaded = services[i]!.backends[j]!;
      const be = backends.get(b.ip) ?? { ip: b.ip, family: b.family, services: [], vips: [], mac: loaded.mac, configuredMac: b.mac !== undefined, down: false };
      if (!be.services.includes(s.name)) be.services.push(s.name);
      if (!be.vips.includes(s.vip.address)) be.vips.push(s.vip.address);
      if (!be.mac) be.mac = loaded.mac;
      if (state.health?.[backendKey(s, b)] === 'down') be.down = true;
      backends.set(b.ip, be);
    });
  });
  return { vips: [...vips.values()], backends: [...backends.values()] };
}

export async function runDoctor(iface: string, o: DoctorOptions = {}): Promise<DoctorReport> {
  const findings: Finding[] = [];
  const done = (summary: string): DoctorReport => ({ interface: iface, summary, findings, counts: countLevels(findings) });

  const link = linkDetails(iface);
  findings.push(...interfaceFindings(iface, link));
  if (!link) return done(`${iface}: no such interface`);

  let state: LoadedState | undefined;
  try {
    state = readState(iface);
  } catch (err) {
    if (!(err instanceof UserError)) throw err;
    findings.push({ level: 'FAIL', check: 'state', message: err.message, details: [`fix: xdpvs unload -i ${iface}, then load again`] });
    return done(`${iface}: state unreadable`);
  }

  let xdp: XdpQueryResult;
  try {
    xdp = xdpQuery(link.ifindex);
  } catch (err) {
    findings.push({ level: 'FAIL', check: 'program', message: `cannot ask the kernel which XDP program ${iface} runs: ${(err as Error).message}`, details: [] });
    return done(`${iface}: XDP query failed`);
  }
  const ethtool = hasTool('ethtool');
  const driver = ethtool ? driverOf(iface) : null;
  const pins = pinDir(iface);
  findings.push(
    ...programFindings({
      iface,
      state,
      ifindex: link.ifindex,
      xdp,
      attachedName: attachedName(xdp.progId),
      pinnedProgId: state ? pinnedProgramId(path.join(pins, PROGRAM_PIN)) : null,
      pinPath: path.join(pins, PROGRAM_PIN),
      missingMaps: state ? PERSISTENT_MAPS.filter((m) => !fs.existsSync(path.join(pins, m))).map((m) => path.join(pins, m)) : [],
      driver,
      mtu: link.mtu,
    }),
  );
  if (!state) return done(`${iface}: nothing loaded by xdpvs`);

  const { vips, backends } = servicesView(state);
  const addresses = interfaceAddresses(iface);
  const elsewhere = new Map(vips.filter((v) => !addresses.some((a) => a.address === v.address)).map((v) => [v.address, interfacesWith(v.address, iface)]));
  const arpIgnores = [ipv4Conf('all', 'arp_ignore'), ipv4Conf(iface, 'arp_ignore')].filter((n): n is number => n !== null);
  findings.push(...vipFindings({ iface, vips, addresses, elsewhere, arpIgnore: arpIgnores.length ? Math.max(...arpIgnores) : null }));

  const statsBefore = ethtool ? ethtoolStats(iface) : null;
  // the director's own table: ask for what it lacks, as load does
  await probeNeighbours(backends.map((b) => b.ip));
  const targets = [
    ...vips.map((v) => ({ ip: v.address, family: v.family })),
    ...backends.filter((b) => !vips.some((v) => v.address === b.ip)).map((b) => ({ ip: b.ip, family: b.family })),
  ];
  const probe = o.probe === false ? { ran: false as const, reason: 'skipped (--no-probe)' } : await probeSegment(iface, targets, o.listenMs);
  const neighbours = neighbourTable(iface);
  findings.push(...probeFindings(iface, probe, backends));
  findings.push(...vipAnswerFindings({ iface, directorMac: link.address ?? '', vips, backends, probe }));
  findings.push(...backendFindings({ iface, backends, neighbours, probe, source: state.source }));

  const isVeth = link.linkinfo?.info_kind === 'veth' || driver === 'veth';
  findings.push(
    ...xdpTxFindings({
      iface,
      link,
      mode: xdp.progId === 0 ? null : xdp.mode,
      driver,
      statsBefore,
      statsAfter: ethtool ? ethtoolStats(iface) : null,
      features: ethtool ? ethtoolFeatures(iface) : null,
      peer: isVeth ? vethPeer(link) : null,
      ethtool,
    }),
  );
  const services = stateConfig(state).services.length;
  return done(`${iface}: program ${state.progId}, ${services} service${services === 1 ? '' : 's'} from ${state.source}, loaded ${state.loadedAt}`);
}
