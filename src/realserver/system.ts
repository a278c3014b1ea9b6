/**
 * The real server's side of `xdpvs realserver`: reads addresses with `ip -j addr`, routes with
 * `ip -j route`, sysctls straight from /proc/sys (per network namespace: a process sees its
 * own), carries out the plan's steps, and keeps the record of what `--apply` changed so that
 * `--remove` can put it back.
 *
 * The record lives in /run/xdpvs-realserver/realserver.json (XDPVS_REALSERVER_ROOT moves it):
 * /run is emptied at boot, as are the settings it describes.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { canonicalIp } from '../net/addr.js';
import { UserError } from '../errors.js';
import {
  routeInterface,
  stepCommand,
  sysctlId,
  sysctlName,
  sysctlPath,
  type IfAddress,
  type RouteEntry,
  type RsVip,
  type Step,
  type SysctlKey,
  type SystemSnapshot,
} from './plan.js';

export const recordRoot = (): string => process.env.XDPVS_REALSERVER_ROOT ?? '/run/xdpvs-realserver';
export const recordFile = (): string => path.join(recordRoot(), 'realserver.json');

interface Run {
  status: number;
  stdout: string;
  stderr: string;
}

function run(argv: string[], input?: string): Run {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', input });
  if (r.error) return { status: 127, stdout: '', stderr: r.error.message };
  return { status: r.status ?? 128, stdout: r.stdout, stderr: r.stderr };
}

function ipJson<T>(args: string[]): T {
  const r = run(['ip', '-j', ...args]);
  if (r.status === 127) throw new UserError('`ip` (iproute2) is not installed', ['apt-get install iproute2']);
  if (r.status !== 0) throw new UserError(`ip ${args.join(' ')} failed: ${r.stderr.trim() || `exit ${r.status}`}`);
  return JSON.parse(r.stdout || '[]') as T;
}

// ---------------------------------------------------------------------------------------------
// reading

interface IpLink {
  ifname: string;
  flags?: string[];
  addr_info?: Array<{ family: string; local: string; prefixlen: number }>;
}

export function interfaceExists(name: string): boolean {
  return ipJson<IpLink[]>(['link', 'show']).some((l) => l.ifname === name);
}

function readSysctl(k: SysctlKey): number | null {
  try {
    const n = Number(fs.readFileSync(sysctlPath(k), 'utf8').trim());
    return Number.isInteger(n) ? n : null;
  } catch {
    return null;
  }
}

export function readSnapshot(keys: readonly SysctlKey[]): SystemSnapshot {
  const links = ipJson<IpLink[]>(['addr', 'show']);
  const lo = links.find((l) => l.ifname === 'lo');
  const addresses: IfAddress[] = links.flatMap((l) =>
    (l.addr_info ?? [])
      .filter((a) => a.family === 'inet' || a.family === 'inet6')
      .map((a) => ({ ifname: l.ifname, family: a.family === 'inet' ? (4 as const) : (6 as const), address: canonicalIp(a.local) ?? a.local, prefixlen: a.prefixlen })),
  );
  return {
    loUp: !!lo?.flags?.includes('UP'),
    addresses,
    sysctls: Object.fromEntries(keys.map((k) => [sysctlId(k), readSysctl(k)])),
  };
}

/**
 * The outgoing interface for the VIPs: `iface` when given (it must exist), else the one the main
 * routing table sends the first IPv4 VIP out of (its default route when nothing more specific
 * covers it). Null when no VIP is IPv4: the ARP sysctls are not wanted then.
 */
export function outgoingInterface(vips: readonly RsVip[], iface: string | undefined): string | null {
  if (iface !== undefined) {
    if (!interfaceExists(iface)) throw new UserError(`--iface ${iface}: no such network interface here`, ['`ip link` lists the interfaces']);
    if (iface === 'lo') throw new UserError('--iface lo: give the interface the director\'s traffic comes in on, not lo');
    return iface;
  }
  const first = vips.find((v) => v.family === 4);
  if (!first) return null;
  const routes = ipJson<RouteEntry[]>(['-4', 'route', 'show', 'table', 'main']);
  const dev = routeInterface(routes, first.address);
  if (!dev) {
    throw new UserError(`cannot tell which interface the traffic for ${first.address} uses: no route to it and no default route`, [
      'say which with --iface IF (the interface on the director\'s segment)',
    ]);
  }
  return dev;
}

// ---------------------------------------------------------------------------------------------
// changing

function writeSysctl(k: SysctlKey, value: number): void {
  try {
    fs.writeFileSync(sysctlPath(k), `${value}\n`);
  } catch (err) {
    throw new UserError(`cannot set ${sysctlName(k)}=${value}: ${(err as Error).message}`, [`by hand: sysctl -w ${sysctlName(k)}=${value}`]);
  }
}

/** Carries out one step. */
export function runStep(s: Step): void {
  if (s.kind === 'sysctl') return writeSysctl(s.key, s.to);
  const argv = stepCommand(s).split(' ');
  const r = run(argv);
  if (r.status !== 0) {
    const subject = s.kind === 'addr-add' ? `VIP ${s.vip.address} on lo` : s.kind === 'addr-del' ? `${s.addr.address} on ${s.addr.ifname}` : 'lo';
    throw new UserError(`${subject}: \`${argv.join(' ')}\` failed: ${r.stderr.trim() || `exit ${r.status}`}`);
  }
}

export { readSysctl, writeSysctl };

// ---------------------------------------------------------------------------------------------
// the record

export interface ApplyRecord {
  version: 1;
  /** the outgoing interface the sysctls were set on */
  iface: string | null;
  /** VIPs (address/prefix) that --apply put on lo, or found there and kept */
  vips: string[];
  /** `all.arp_ignore` etc. -> the value before --apply first changed it */
  sysctls: { [id: string]: number | null };
  updatedAt: string;
}

export function readRecord(): ApplyRecord | null {
  try {
    const r = JSON.parse(fs.readFileSync(recordFile(), 'utf8')) as ApplyRecord;
    return r.version === 1 ? r : null;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new UserError(`cannot read ${recordFile()}: ${(err as Error).message}`, ['remove it if it is damaged; --remove then restores the kernel defaults']);
  }
}

export function writeRecord(r: ApplyRecord): void {
  fs.mkdirSync(recordRoot(), { recursive: true });
  const tmp = `${recordFile()}.${process.pid}`;
  fs.writeFileSync(tmp, `${JSON.stringify(r, null, 2)}\n`);
  fs.renameSync(tmp, recordFile());
}

export function deleteRecord(): void {
  fs.rmSync(recordFile(), { force: true });
  try {
    fs.rmdirSync(recordRoot());
  } catch {
    // not empty or gone
  }
}
