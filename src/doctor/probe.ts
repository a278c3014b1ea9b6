/**
 * Asking the director's segment who answers for an address, without raw sockets.
 *
 * Node cannot send an ARP request, and the director cannot ask the network about its own VIP
 * (the kernel answers that from its own table). So doctor borrows a second station on the same
 * wire: a macvlan `xdpvsdoc0` on IFACE, created straight into a fresh, empty network namespace.
 * That namespace has no IPv4 address at all, only a host route per target through the macvlan,
 * so a UDP datagram to TARGET:9 (the discard port) makes its kernel send an ARP request with
 * sender 0.0.0.0 (an RFC 5227 probe: no neighbour anywhere learns anything from it); for IPv6 a
 * neighbour solicitation from the macvlan's link-local address (DAD off). Every host that
 * answers replies to the macvlan's MAC, and tcpdump on the macvlan records each reply with the
 * MAC it came from. The director itself never answers: a macvlan's frames leave through the
 * lower device and are not looped back into the director's own stack.
 *
 * Cleaning up cannot be forgotten: the namespace belongs to a holder process
 * (`unshare --net cat`) reading a pipe from doctor. When doctor ends, for whatever reason, the
 * pipe closes, cat exits, the namespace goes and the macvlan with it; tcpdump runs under
 * `timeout` in that namespace, so it cannot keep it alive. doctor also deletes the macvlan and
 * ends the holder itself on the normal path.
 *
 * Where it does not work: a lower device that is a bridge port (macvlan refuses it), networks
 * that drop frames from MACs they do not know (cloud VPCs). The caller gives control targets
 * (the backends, which must answer): when nothing at all answers, the result says the probe
 * was inconclusive rather than "nobody else answers".
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { canonicalIp } from '../net/addr.js';
import { hasTool, run } from './system.js';

export const PROBE_IFACE = 'xdpvsdoc0';

export interface ProbeTarget {
  ip: string;
  family: 4 | 6;
}

export type ProbeResult =
  | {
      ran: true;
      /** target IP -> the MACs that answered for it (ARP reply / neighbour advertisement) */
      answers: Map<string, Set<string>>;
      /** the macvlan's MAC, for the record */
      probeMac: string;
      listenedMs: number;
    }
  | { ran: false; reason: string };

/** Sends one empty datagram to port 9 of each address given on the command line. */
const SEND_SCRIPT = `
const dgram = require('node:dgram');
const ips = process.argv.slice(1);
let left = ips.length;
for (const ip of ips) {
  const s = dgram.createSocket(ip.includes(':') ? 'udp6' : 'udp4');
  const done = () => { try { s.close(); } catch {} if (--left === 0) process.exit(0); };
  s.on('error', done);
  s.send(Buffer.alloc(0), 9, ip, done);
}
if (left === 0) process.exit(0);
`;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One line of `tcpdump -n -e`: an ARP reply or a neighbour advertisement, as [target, MAC].
 *   02:00:0a:c8:00:0b > 2a:..:36, ethertype ARP (0x0806), length 42: Reply 10.200.0.100 is-at 02:00:0a:c8:00:0b, length 28
 *   02:00:0a:c8:00:0c > ce:..:55, ethertype IPv6 (0x86dd), length 86: fd00:200::100 > fe80::..: ICMP6, neighbor advertisement, tgt is fd00:200::100, length 32
 */
export function parseReply(line: string): { ip: string; mac: string } | null {
  const eth = /([0-9a-f]{2}(?::[0-9a-f]{2}){5}) > [0-9a-f:]+, ethertype /i.exec(line);
  if (!eth) return null;
  const arp = /Reply (\S+) is-at ([0-9a-f]{2}(?::[0-9a-f]{2}){5})/i.exec(line);
  if (arp) return { ip: arp[1]!, mac: arp[2]!.toLowerCase() };
  const na = /neighbor advertisement, tgt is ([0-9a-f:.]+?),/i.exec(line);
  if (na) return { ip: na[1]!, mac: eth[1]!.toLowerCase() };
  return null;
}

function netnsOf(pid: number | 'self'): string | null {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return null;
  }
}

/** Waits for `pattern` on a child's stream; false after `ms` or when the child exits. */
function waitFor(child: ChildProcess, stream: 'stdout' | 'stderr', pattern: RegExp, ms: number, seen: { text: string }): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => finish(false), ms);
    const onData = () => {
      if (pattern.test(seen.text)) finish(true);
    };
    const onExit = () => finish(false);
    function finish(ok: boolean) {
      clearTimeout(timer);
      child[stream]?.off('data', onData);
      child.off('exit', onExit);
      resolve(ok);
    }
    child[stream]?.on('data', onData);
    child.once('exit', onExit);
    onData();
  });
}

function stopChild(child: ChildProcess | undefined, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
    }, graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill(signal);
  });
}

/**
 * Asks IFACE's segment for every target at once and listens `listenMs` for the answers.
 * Never throws for the network's sake: what could not be done comes back as `ran: false`.
 */
export async function probeSegment(iface: string, targets: readonly ProbeTarget[], listenMs = 1200): Promise<ProbeResult> {
  const missing = ['tcpdump', 'unshare', 'nsenter', 'timeout'].filter((t) => !hasTool(t));
  if (missing.length > 0) {
    return { ran: false, reason: `${missing.join(', ')} not found in PATH${missing.includes('tcpdump') ? ' (apt-get install tcpdump)' : ''}` };
  }
  if (targets.length === 0) return { ran: false, reason: 'nothing to ask for' };

  let holder: ChildProcess | undefined;
  let capture: ChildProcess | undefined;
  let nsPath = '';
  try {
    // the holder: its namespace lives as long as this process keeps its stdin open
    holder = spawn('unshare', ['--net', '--', 'sh', '-c', 'exec cat >/dev/null'], { stdio: ['pipe', 'ignore', 'pipe'] });
    holder.on('error', () => undefined);
    const holderErr = { text: '' };
    holder.stderr!.setEncoding('utf8').on('data', (d: string) => (holderErr.text += d));
    const mine = netnsOf('self');
    const pid = holder.pid;
    for (let waited = 0; ; waited += 20) {
      const theirs = pid !== undefined ? netnsOf(pid) : null;
      if (theirs && theirs !== mine) break;
      if (holder.exitCode !== null || waited > 3000) {
        return { ran: false, reason: `could not make a network namespace for the probe (unshare --net): ${holderErr.text.trim() || 'it did not start'}` };
      }
      await sleep(20);
    }
    nsPath = `/proc/${pid}/ns/net`;
    const inNs = (argv: string[], input?: string) => run(['nsenter', `--net=${nsPath}`, ...argv], { input });

    const add = run(['ip', 'link', 'add', PROBE_IFACE, 'link', iface, 'netns', String(pid), 'type', 'macvlan', 'mode', 'bridge']);
    if (add.status !== 0) {
      return { ran: false, reason: `could not put a macvlan on ${iface} for the probe: ${add.stderr.trim() || `exit ${add.status}`}` };
    }
    const v6 = targets.some((t) => t.family === 6);
    // no DAD on the link-local address (the solicitations go out at once); no IPv6 at all if not needed
    inNs(['sh', '-c', `echo 0 > /proc/sys/net/ipv6/conf/${PROBE_IFACE}/accept_dad; echo ${v6 ? 0 : 1} > /proc/sys/net/ipv6/conf/${PROBE_IFACE}/disable_ipv6; true`]);
    // lo must be up too: without it the kernel sends nothing for a socket with no source address
    const batch = ['link set dev lo up', `link set dev ${PROBE_IFACE} up`, ...targets.map((t) => `route replace ${t.ip}/${t.family === 4 ? 32 : 128} dev ${PROBE_IFACE}`)];
    const setup = inNs(['ip', '-batch', '-'], `${batch.join('\n')}\n`);
    if (setup.status !== 0) return { ran: false, reason: `could not set up the probe interface: ${setup.stderr.trim()}` };
    const link = JSON.parse(inNs(['ip', '-j', 'link', 'show', 'dev', PROBE_IFACE]).stdout || '[]') as Array<{ address?: string }>;
    const probeMac = link[0]?.address ?? '?';

    const filter = '(arp and arp[6:2] == 2) or (icmp6 and ip6[40] == 136)';
    capture = spawn('nsenter', [`--net=${nsPath}`, 'timeout', '15', 'tcpdump', '-i', PROBE_IFACE, '-n', '-e', '-l', '--immediate-mode', filter], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    capture.on('error', () => undefined);
    const out = { text: '' };
    const err = { text: '' };
    capture.stdout!.setEncoding('utf8').on('data', (d: string) => (out.text += d));
    capture.stderr!.setEncoding('utf8').on('data', (d: string) => (err.text += d));
    if (!(await waitFor(capture, 'stderr', /listening on/, 10_000, err))) {
      return { ran: false, reason: `tcpdump did not start on the probe interface: ${err.text.trim().split('\n').pop() ?? ''}` };
    }

    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    const send = spawn('nsenter', [`--net=${nsPath}`, process.execPath, '-e', SEND_SCRIPT, ...targets.map((t) => t.ip)], { stdio: 'ignore', env });
    await new Promise<void>((resolve) => {
      send.once('exit', () => resolve());
      send.once('error', () => resolve());
    });
    const started = Date.now();
    await sleep(listenMs);
    await stopChild(capture, 'SIGINT', 2000);

    const answers = new Map<string, Set<string>>(targets.map((t) => [t.ip, new Set<string>()]));
    for (const line of out.text.split('\n')) {
      const r = parseReply(line);
      if (!r) continue;
      answers.get(canonicalIp(r.ip) ?? r.ip)?.add(r.mac);
    }
    return { ran: true, answers, probeMac, listenedMs: Date.now() - started };
  } finally {
    await stopChild(capture, 'SIGKILL', 1000);
    if (nsPath && holder && holder.exitCode === null) run(['nsenter', `--net=${nsPath}`, 'ip', 'link', 'del', PROBE_IFACE]);
    if (holder) {
      holder.stdin?.end();
      await stopChild(holder, 'SIGTERM', 1000);
    }
  }
}
