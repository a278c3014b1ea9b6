/**
 * End to end, in a lab of its own (namespaces xdpvs-e<pid>-*, pins and state under
 * /sys/fs/bpf/xdpvs-e<pid> and /run/xdpvs-e<pid>): what a user checks after `xdpvs load`.
 *
 *   - before loading: the client resolves the VIPs to the director (real servers keep quiet),
 *     and the director's kernel refuses connections to the VIP;
 *   - direct routing: answers come from the real servers with the VIP as source, the director
 *     passes only the client's direction, and every frame reaches the real server as the client
 *     sent it, from the IP header on (SYN options included), only the MACs rewritten;
 *   - weights 1:2:1 over many new connections; a keep-alive connection stays on one server;
 *   - UDP and IPv6 services answer; `xdpvs stats --json` counts exactly the connections,
 *     packets and bytes the client sent (captured with tcpdump on the client);
 *   - `unload` stops forwarding and leaves no pins; `lab down` leaves no namespace.
 *
 * Needs root, iproute2, ethtool, clang, tcpdump. Takes well under a minute.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { buildTopology, isLabNamespace, type LabHost } from '../src/lab/topology.js';
import type { TrafficKind, TrafficReport } from '../src/lab/traffic.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = path.join(root, 'bin', 'xdpvs');
const trafficJs = path.join(root, 'dist', 'lab', 'traffic.js');
const servicesFile = path.join(root, 'examples', 'lab.json');
const prefix = `xdpvs-e${process.pid}`;
const pinRoot = `/sys/fs/bpf/${prefix}`;
const runRoot = `/run/${prefix}`;
const topo = buildTopology({ prefix, ipv6: true });
const [rs1, rs2, rs3] = topo.realServers as [LabHost, LabHost, LabHost];

const VIP = '10.200.0.100';
const VIP_UDP = '10.200.0.101';
const VIP6 = 'fd00:200::100';

// ---------------------------------------------------------------------------------------------
// running things

const missing = ['ip', 'ethtool', 'clang', 'tcpdump', 'nsenter'].filter(
  (tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0,
);
const skip = process.getuid?.() !== 0 ? 'needs root' : missing.length > 0 ? `needs ${missing.join(', ')}` : false;

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Every xdpvs command of this test sees its own pin and state roots. */
const ENV: NodeJS.ProcessEnv = { ...process.env, XDPVS_PIN_ROOT: pinRoot, XDPVS_RUN_ROOT: runRoot };

/** tap's NODE_OPTIONS (its loader) breaks the extensionless bin/xdpvs: children run without it. */
function sh(argv: string[], timeout = 60_000): Run {
  const r = spawnSync('env', ['-u', 'NODE_OPTIONS', ...argv], { encoding: 'utf8', env: ENV, timeout, maxBuffer: 64 << 20 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? r.error?.message ?? '' };
}

const xdpvs = (args: string[]) => sh([process.execPath, bin, ...args]);
/** `xdpvs lab exec ROLE -- ...` in this test's lab. */
const labExec = (role: string, command: string[]) => xdpvs(['lab', 'exec', '--name', prefix, role, '--', ...command]);
/** xdpvs on the director, as the user runs it there. */
const onDirector = (args: string[]) => labExec('director', [process.execPath, bin, ...args]);

/** dist/lab/traffic.js in the client's namespace. */
function traffic(kind: TrafficKind, host: string, port: number, count: number): TrafficReport {
  const r = labExec('client', [process.execPath, trafficJs, kind, host, '--port', String(port), '--count', String(count)]);
  if (r.status !== 0) throw new Error(`traffic ${kind} ${host}: exit ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as TrafficReport;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function labNamespaces(): string[] {
  return sh(['ip', 'netns', 'list'])
    .stdout.split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((ns) => isLabNamespace(prefix, ns));
}

function neighbour(ns: string, ip: string): string | undefined {
  const out = JSON.parse(sh(['ip', '-j', '-n', ns, 'neigh', 'show', ip]).stdout || '[]') as Array<{ lladdr?: string }>;
  return out[0]?.lladdr;
}

function xdpOf(ns: string, dev: string): { mode?: number; prog?: { id: number } } | undefined {
  return (JSON.parse(sh(['ip', '-j', '-d', '-n', ns, 'link', 'show', 'dev', dev]).stdout) as Array<{ xdp?: { mode?: number; prog?: { id: number } } }>)[0]?.xdp;
}

// ---------------------------------------------------------------------------------------------
// captures: tcpdump -w in a namespace, then the pcap read here

const captureDir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
const running = new Set<ChildProcess>();

interface Frame {
  /** as on the wire (pcap orig_len): what the XDP program counts as bytes */
  length: number;
  data: Buffer;
  dstMac: string;
  srcMac: string;
  ethertype: number;
  /** from the IP header on */
  l3: Buffer;
  src: string;
  dst: string;
  proto: number;
  sport: number;
  dport: number;
  tcpFlags: number;
  /** TCP option kinds in order */
  tcpOptions: number[];
}

const macText = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
function ip6Text(b: Buffer): string {
  const words = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16));
  // compress the longest run of zero words, as `ip` and Node print it
  let best = [-1, 0];
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && words[j] === '0') j++;
    if (j - i > best[1]! && j - i > 1) best = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  if (best[0]! < 0) return words.join(':');
  return `${words.slice(0, best[0]).join(':')}::${words.slice(best[0]! + best[1]!).join(':')}`;
}

const TCP_SYN = 0x02;
const TCP_RST = 0x04;
const TCP_ACK = 0x10;

function parseFrame(data: Buffer, length: number): Frame {
  const f: Frame = {
    length, data, dstMac: macText(data.subarray(0, 6)), srcMac: macText(data.subarray(6, 12)),
    ethertype: data.readUInt16BE(12), l3: data.subarray(14), src: '', dst: '', proto: -1, sport: 0, dport: 0, tcpFlags: 0, tcpOptions: [],
  };
  let l4: Buffer | null = null;
  if (f.ethertype === 0x0800) {
    const ihl = (f.l3[0]! & 0x0f) * 4;
    f.proto = f.l3[9]!;
    f.src = [...f.l3.subarray(12, 16)].join('.');
    f.dst = [...f.l3.subarray(16, 20)].join('.');
    l4 = f.l3.subarray(ihl);
  } else if (f.ethertype === 0x86dd) {
    f.proto = f.l3[6]!; // the lab's traffic has no extension headers
    f.src = ip6Text(f.l3.subarray(8, 24));
    f.dst = ip6Text(f.l3.subarray(24, 40));
    l4 = f.l3.subarray(40);
  } else if (f.ethertype === 0x0806) {
    f.src = [...f.l3.subarray(14, 18)].join('.'); // sender protocol address
    f.dst = [...f.l3.subarray(24, 28)].join('.');
  }
  if (l4 && (f.proto === 6 || f.proto === 17)) {
    f.sport = l4.readUInt16BE(0);
    f.dport = l4.readUInt16BE(2);
  }
  if (l4 && f.proto === 6) {
    f.tcpFlags = l4[13]!;
    const end = (l4[12]! >> 4) * 4;
    for (let i = 20; i < end; ) {
      const kind = l4[i]!;
      if (kind === 0) break;
      if (kind === 1) {
        i += 1;
        continue;
      }
      f.tcpOptions.push(kind);
      i += Math.max(2, l4[i + 1]!);
    }
  }
  return f;
}

/** A pcap file (tcpdump -w): 24-byte header, then 16-byte record headers and the frames. */
function readPcap(file: string): Frame[] {
  const b = fs.readFileSync(file);
  const magic = b.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && b.readUInt32BE(0) !== 0xa1b2c3d4 && b.readUInt32BE(0) !== 0xa1b23c4d) throw new Error(`${file}: not a pcap file`);
  const u32 = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
  if (u32(20) !== 1) throw new Error(`${file}: link type ${u32(20)}, not Ethernet`);
  const frames: Frame[] = [];
  for (let o = 24; o + 16 <= b.length; ) {
    const incl = u32(o + 8);
    const orig = u32(o + 12);
    if (o + 16 + incl > b.length) break; // a capture still being written: its last frame in part
    frames.push(parseFrame(b.subarray(o + 16, o + 16 + incl), orig));
    o += 16 + incl;
  }
  return frames;
}

class Capture {
  private constructor(readonly name: string, readonly file: string, private readonly child: ChildProcess, private stderr: { text: string }) {}

  /** Starts tcpdump on `dev` in `ns` and resolves once it listens. */
  static async start(name: string, ns: string, dev: string, filter: string): Promise<Capture> {
    const file = path.join(captureDir, `${name}.pcap`);
    // --immediate-mode: every frame is handed over at once, so none sits in the ring at SIGINT;
    // -Z root: write the file as root (Debian's tcpdump drops to the user tcpdump otherwise);
    // -B: a 32 MiB kernel buffer, so bursts of hundreds of connections a second lose nothing
    const child = spawn('ip', ['netns', 'exec', ns, 'tcpdump', '-i', dev, '-n', '-U', '--immediate-mode', '-B', '32768', '-Z', 'root', '-s', '0', '-w', file, filter], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    running.add(child);
    const stderr = { text: '' };
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr.text += d));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tcpdump ${name}: not listening after 5 s: ${stderr.text}`)), 5000);
      const check = () => {
        if (/listening on/.test(stderr.text)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stderr!.on('data', check);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`tcpdump ${name} exited (${code}): ${stderr.text}`));
      });
    });
    return new Capture(name, file, child, stderr);
  }

  /** Stops tcpdump (after `settleMs`, for the last frames of closing connections) and reads the file. */
  async stop(settleMs = 300): Promise<Frame[]> {
    await sleep(settleMs);
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGINT');
    await exited;
    running.delete(this.child);
    // "N packets captured / N received by filter / 0 packets dropped by kernel": a capture that
    // lost frames cannot back an exact count
    const n = (what: string) => Number(new RegExp(`(\\d+) packets? ${what}`).exec(this.stderr.text)?.[1] ?? NaN);
    if (n('dropped by kernel') !== 0 || n('captured') !== n('received by filter')) {
      throw new Error(`tcpdump ${this.name} lost frames: ${this.stderr.text}`);
    }
    return readPcap(this.file);
  }
}

// frames of the client's side of a flow
const toVip = (vip: string, port: number, proto = 6) => (f: Frame) => f.dst === vip && f.dport === port && f.proto === proto;
const fromVip = (vip: string, port: number, proto = 6) => (f: Frame) => f.src === vip && f.sport === port && f.proto === proto;

// ---------------------------------------------------------------------------------------------

t.test('the lab, end to end', { skip }, async (t) => {
  // dist/ holds the CLI, realserver-app.js and traffic.js (type errors elsewhere still emit)
  spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', root], { stdio: 'ignore' });
  t.ok(fs.existsSync(trafficJs), 'dist is built');

  t.teardown(async () => {
    for (const child of running) child.kill('SIGKILL');
    onDirector(['unload', '-i', 'eth0']);
    xdpvs(['lab', 'down', '--name', prefix]);
    fs.rmSync(pinRoot, { recursive: true, force: true });
    fs.rmSync(runRoot, { recursive: true, force: true });
    fs.rmSync(captureDir, { recursive: true, force: true });
  });

  const up = xdpvs(['lab', 'up', '--name', prefix, '--ipv6']);
  t.equal(up.status, 0, `lab up: ${up.stderr}`);
  if (up.status !== 0) return;

  await t.test('without the program: the VIPs are the director\'s, real servers keep quiet', async (t) => {
    t.equal(sh(['ip', '-n', topo.client.namespace, 'neigh', 'flush', 'dev', 'eth0']).status, 0, 'the client forgets its neighbours');
    const cap = await Capture.start('arp', topo.client.namespace, 'eth0', 'arp or icmp6');
    const v4 = traffic('http', VIP, 80, 2);
    const v6 = traffic('http', VIP6, 80, 2);
    const frames = await cap.stop();
    // nothing listens on port 80 of the director: its kernel answers the SYN with a RST
    t.same(v4.results.map((r) => r.error), ['ECONNREFUSED', 'ECONNREFUSED'], 'the director refuses HTTP to the VIP');
    t.same(v6.results.map((r) => r.error), ['ECONNREFUSED', 'ECONNREFUSED'], 'and to the IPv6 VIP');
    t.equal(neighbour(topo.client.namespace, VIP), topo.director.mac, 'client: VIP -> the director\'s MAC');
    t.equal(neighbour(topo.client.namespace, VIP6), topo.director.mac, 'client: IPv6 VIP -> the director\'s MAC');
    // ARP replies (op 2) and neighbour advertisements (ICMPv6 136) for a VIP: only the director's
    const arpReplies = frames.filter((f) => f.ethertype === 0x0806 && f.l3.readUInt16BE(6) === 2 && f.src === VIP);
    const advertisements = frames.filter(
      (f) => f.proto === 58 && f.l3[40] === 136 && ip6Text(f.l3.subarray(48, 64)) === VIP6,
    );
    t.ok(arpReplies.length >= 1, 'the VIP was resolved by ARP on the wire');
    t.same([...new Set(arpReplies.map((f) => f.srcMac))], [topo.director.mac], 'only the director answers ARP for the VIP');
    t.ok(advertisements.length >= 1, 'the IPv6 VIP was resolved by ND on the wire');
    t.same([...new Set(advertisements.map((f) => f.srcMac))], [topo.director.mac], 'only the director advertises the IPv6 VIP');
  });

  // From here until the stats check, the client's every frame to a VIP is captured.
  const clientCap = await Capture.start('client', topo.client.namespace, 'eth0', `host ${VIP} or host ${VIP_UDP} or host ${VIP6}`);
  /** Every report of traffic sent while the program is loaded, by service name. */
  const sent: Record<string, TrafficReport[]> = { web: [], dns: [], web6: [] };

  const load = onDirector(['load', servicesFile, '-i', 'eth0']);
  t.equal(load.status, 0, `xdpvs load: ${load.stderr}`);
  if (load.status !== 0) return;
  t.match(load.stdout, /loaded 3 services with 9 backends on eth0 \(program \d+, native mode\)/);
  t.equal(xdpOf(topo.director.namespace, 'eth0')?.mode, 1, 'attached in native (driver) mode');

  await t.test('direct routing: replies bypass the director, requests arrive untouched', async (t) => {
    const caps = await Promise.all([
      Capture.start('switch', topo.switch.namespace, 'sw-director', 'tcp port 80'),
      Capture.start('director', topo.director.namespace, 'eth0', 'tcp port 80'),
      ...topo.realServers.map((rs) => Capture.start(rs.role, rs.namespace, 'eth0', 'tcp port 80')),
    ]);
    const report = traffic('http', VIP, 80, 6);
    sent.web!.push(report);
    const [sw, director, ...rsFrames] = await Promise.all(caps.map((c) => c.stop()));
    const client = readPcapSoFar();
    t.equal(report.answered, 6, 'every request answered');

    // the director: what passes its switch port, and what its own kernel sees
    t.same(sw!.filter(fromVip(VIP, 80)), [], 'no reply (from the VIP, port 80) passes the director\'s port');
    t.same(director!.filter(toVip(VIP, 80)), [], 'the director\'s kernel sees none of it: XDP sends it on first');

    for (const r of report.results) {
      const rs = topo.realServers.find((h) => h.role === r.server);
      t.ok(rs, `port ${r.localPort}: answered by a real server (${r.server})`);
      if (!rs) continue;
      const sentFrames = client.filter((f) => toVip(VIP, 80)(f) && f.sport === r.localPort);
      const replies = client.filter((f) => fromVip(VIP, 80)(f) && f.dport === r.localPort);
      t.ok(sentFrames.length >= 4 && replies.length >= 3, `port ${r.localPort}: a whole connection captured`);
      t.same(
        [...new Set(replies.map((f) => `${f.src} from ${f.srcMac} to ${f.dstMac}`))],
        [`${VIP} from ${rs.mac} to ${topo.client.mac}`],
        `port ${r.localPort}: replies have the VIP as source and come straight from ${rs.role}'s MAC`,
      );
      t.ok(sentFrames.every((f) => f.srcMac === topo.client.mac && f.dstMac === topo.director.mac), 'the client sends to the director\'s MAC');

      // on the wire at the director: each frame once towards it, once back out to the real server
      const atSwitch = sw!.filter((f) => toVip(VIP, 80)(f) && f.sport === r.localPort);
      t.equal(atSwitch.filter((f) => f.dstMac === topo.director.mac && f.srcMac === topo.client.mac).length, sentFrames.length, 'into the director: the client\'s frames');
      t.equal(atSwitch.filter((f) => f.srcMac === topo.director.mac && f.dstMac === rs.mac).length, sentFrames.length, `out of the director: the same frames, to ${rs.role}`);
      t.equal(atSwitch.length, 2 * sentFrames.length, 'nothing else of this flow passes the director');

      // at the real server: byte for byte what the client sent, from the IP header on
      const arrived = rsFrames[topo.realServers.indexOf(rs)]!.filter((f) => toVip(VIP, 80)(f) && f.sport === r.localPort);
      t.equal(arrived.length, sentFrames.length, `${rs.role} got every frame of the flow`);
      t.ok(
        arrived.every((f, i) => f.l3.equals(sentFrames[i]!.l3) && f.length === sentFrames[i]!.length),
        `${rs.role} got them unchanged from the IP header on (addresses, ports, TTL, checksums, options, payload)`,
      );
      t.ok(arrived.every((f) => f.srcMac === topo.director.mac && f.dstMac === rs.mac), 'only the MACs differ: director -> real server');
      const syn = sentFrames.find((f) => (f.tcpFlags & (TCP_SYN | TCP_ACK)) === TCP_SYN);
      const synThere = arrived.find((f) => (f.tcpFlags & (TCP_SYN | TCP_ACK)) === TCP_SYN);
      t.ok(syn && synThere, 'the SYN was captured at both ends');
      if (syn && synThere) {
        // MSS 2, window scale 3, SACK permitted 4, timestamps 8: Linux puts all four on a SYN
        t.same([...syn.tcpOptions].sort(), [2, 3, 4, 8], 'the client\'s SYN carries MSS, window scale, SACK-permitted, timestamps');
        t.same(synThere.l3, syn.l3, 'the SYN, its options and the client\'s IP and port arrive as sent');
      }
      for (const other of topo.realServers.filter((h) => h !== rs)) {
        const stray = rsFrames[topo.realServers.indexOf(other)]!.filter((f) => f.sport === r.localPort || f.dport === r.localPort);
        t.same(stray, [], `${other.role} saw nothing of it`);
      }
    }
  });

  await t.test('weights 1:2:1 over new connections; a keep-alive connection stays put', async (t) => {
    const n = 800;
    const report = traffic('http', VIP, 80, n);
    sent.web!.push(report);
    t.equal(report.answered, n, `${n} requests, each on a new connection, all answered`);
    t.equal(report.flows, n, `${n} distinct client ports: ${n} new connections`);
    // Each connection's source port is hashed onto the Maglev table, whose slots are shared
    // 1:2:1, so a server's count is Binomial(n, p) with p = 1/4, 1/2, 1/4. The standard
    // deviation of a share is sqrt(p(1-p)/n): for n = 800, 1.5 points at p = 1/4 and 1.8 points
    // at p = 1/2. ±7 points is at least 3.9 standard deviations: a correct balancer fails this
    // less than once in 10,000 runs, while one that ignored the weights (1/3 each) would put
    // rs2 16.7 points off.
    const tolerance = 7;
    for (const [rs, weight] of [[rs1, 1], [rs2, 2], [rs3, 1]] as const) {
      const share = (100 * (report.byServer[rs.role] ?? 0)) / n;
      const expected = (100 * weight) / 4;
      t.ok(Math.abs(share - expected) <= tolerance, `${rs.role}: ${share.toFixed(1)}% of connections, weight share ${expected}% ± ${tolerance}`);
    }

    const kept = traffic('keepalive', VIP, 80, 100);
    sent.web!.push(kept);
    t.equal(kept.answered, 100, '100 requests on one keep-alive connection, all answered');
    t.equal(kept.flows, 1, 'over one TCP connection');
    t.equal(Object.keys(kept.byServer).length, 1, `all answered by one real server (${Object.keys(kept.byServer).join(', ')})`);
  });

  await t.test('UDP and IPv6 services answer', async (t) => {
    const udp = traffic('udp', VIP_UDP, 53, 60);
    sent.dns!.push(udp);
    t.equal(udp.answered, 60, '60 UDP queries to 10.200.0.101:53 answered');
    t.same(Object.keys(udp.byServer), ['rs1', 'rs2', 'rs3'], 'by all three real servers (weights 1:1:1)');
    const v6 = traffic('http', VIP6, 80, 60);
    sent.web6!.push(v6);
    t.equal(v6.answered, 60, '60 HTTP requests to [fd00:200::100]:80 answered');
    t.same(Object.keys(v6.byServer), ['rs1', 'rs2', 'rs3'], 'by all three real servers');
    const client = readPcapSoFar();
    for (const [vip, port, proto] of [[VIP_UDP, 53, 17], [VIP6, 80, 6]] as const) {
      const answers = client.filter(fromVip(vip, port, proto));
      const macs = new Set(answers.map((f) => f.srcMac));
      t.ok(answers.length > 0 && [...macs].every((m) => topo.realServers.some((rs) => rs.mac === m)), `answers from ${vip} come from the real servers' MACs`);
    }
  });

  await t.test('xdpvs stats --json counts what the client sent', async (t) => {
    const client = await clientCap.stop(500);
    const r = onDirector(['stats', '-i', 'eth0', '--json']);
    t.equal(r.status, 0, `stats --json: ${r.stderr}`);
    if (r.status !== 0) return;
    const stats = JSON.parse(r.stdout) as {
      interface: string;
      services: Array<{ name: string; connections: number; packets: number; bytes: number; backends: Array<{ ip: string; mac: string; state: string; connections: number; packets: number; bytes: number }> }>;
      totals: { packets: number; forwarded: number; passed: number; dropped: number };
    };
    t.equal(stats.interface, 'eth0');

    // What is counted, exactly:
    //   connections: new flows, i.e. a TCP SYN (without ACK) or a UDP datagram of a 5-tuple the
    //     director has not seen yet. The client opened one TCP connection per distinct source
    //     port (no port was reused: checked against the traffic reports); UDP queries came from
    //     fresh sockets, whose ports are random and may repeat, so that service's connections
    //     are the distinct source ports.
    //   packets, bytes: every frame from the client to VIP:port that the program forwarded, its
    //     whole length from the Ethernet header. The client's capture holds every frame it put on
    //     the wire to the VIPs (tcpdump lost none: checked), and only the client sends to them, so
    //     the counters must equal the capture's count and summed lengths: not merely exceed the
    //     requests sent (each HTTP request costs the client SYN, ACK, request, ACKs, FIN, ...).
    //   per real server: the flows whose answers named it, with their frames.
    const roleOf = new Map(topo.realServers.flatMap((rs) => [[rs.ipv4, rs.role], [rs.ipv6!, rs.role]]));
    const services = [
      { name: 'web', vip: VIP, port: 80, proto: 6 },
      { name: 'dns', vip: VIP_UDP, port: 53, proto: 17 },
      { name: 'web6', vip: VIP6, port: 80, proto: 6 },
    ];
    let forwarded = 0;
    for (const s of services) {
      const got = stats.services.find((x) => x.name === s.name);
      t.ok(got, `${s.name} in stats`);
      if (!got) continue;
      const frames = client.filter(toVip(s.vip, s.port, s.proto));
      const reports = sent[s.name]!;
      // which real server has each client port: from the answers' bodies
      const serverOf = new Map<number, string>();
      for (const rep of reports) for (const res of rep.results) if (res.server) serverOf.set(res.localPort, res.server);
      const opened = s.proto === 6 ? frames.filter((f) => (f.tcpFlags & (TCP_SYN | TCP_ACK)) === TCP_SYN) : frames;
      const flows = new Set(opened.map((f) => f.sport));
      if (s.proto === 6) {
        const connectionsOpened = reports.reduce((n, rep) => n + rep.flows, 0);
        t.equal(flows.size, connectionsOpened, `${s.name}: the capture shows the ${connectionsOpened} connections the client opened, on distinct ports`);
      }
      t.equal(got.connections, flows.size, `${s.name}: connections = ${flows.size} new flows`);
      t.equal(got.packets, frames.length, `${s.name}: packets = the ${frames.length} frames the client sent to ${s.vip}:${s.port}`);
      t.equal(got.bytes, frames.reduce((n, f) => n + f.length, 0), `${s.name}: bytes = their length`);
      // the floor without a capture: a datagram per query; per TCP connection its SYN and FIN,
      // and a segment per request
      const requests = reports.reduce((n, rep) => n + rep.sent, 0);
      const floor = s.proto === 6 ? 2 * flows.size + requests : requests;
      t.ok(got.packets >= floor, `${s.name}: ${got.packets} packets >= ${floor}, the fewest the client's requests take`);
      forwarded += got.packets;

      for (const b of got.backends) {
        const role = roleOf.get(b.ip);
        const mine = frames.filter((f) => serverOf.get(f.sport) === role);
        const myFlows = new Set([...flows].filter((p) => serverOf.get(p) === role));
        t.same(
          { connections: b.connections, packets: b.packets, bytes: b.bytes, state: b.state },
          { connections: myFlows.size, packets: mine.length, bytes: mine.reduce((n, f) => n + f.length, 0), state: 'up' },
          `${s.name} -> ${b.ip} (${role}): its flows, frames and bytes`,
        );
      }
    }
    t.equal(stats.totals.forwarded, forwarded, 'totals: forwarded = the services\' packets');
    t.equal(stats.totals.dropped, 0, 'totals: nothing dropped');
    t.equal(stats.totals.packets, stats.totals.forwarded + stats.totals.passed + stats.totals.dropped, 'totals add up');

    const table = onDirector(['stats', '-i', 'eth0']);
    t.equal(table.status, 0, 'xdpvs stats (the table) runs');
    t.match(table.stdout, /Conns\s+InPkts\s+OutPkts\s+InBytes\s+OutBytes/);
  });

  await t.test('unload stops forwarding and leaves no pins', async (t) => {
    const r = onDirector(['unload', '-i', 'eth0']);
    t.equal(r.status, 0, `unload: ${r.stderr}`);
    t.match(r.stdout, /detached from eth0/);
    t.equal(xdpOf(topo.director.namespace, 'eth0'), undefined, 'no XDP program on the director\'s eth0');
    t.notOk(fs.existsSync(path.join(pinRoot, 'eth0')), `${pinRoot}/eth0 is gone`);
    t.notOk(fs.existsSync(path.join(runRoot, 'eth0')), `${runRoot}/eth0 is gone`);
    t.same(fs.existsSync(pinRoot) ? fs.readdirSync(pinRoot) : [], [], 'no pin left under the pin root');
    const cap = await Capture.start('after-unload', topo.client.namespace, 'eth0', `host ${VIP} or host ${VIP_UDP}`);
    const http = traffic('http', VIP, 80, 3);
    const udp = traffic('udp', VIP_UDP, 53, 2);
    const frames = await cap.stop();
    t.same(http.results.map((x) => x.server ?? x.error), ['ECONNREFUSED', 'ECONNREFUSED', 'ECONNREFUSED'], 'HTTP to the VIP: refused, no real server answers');
    const rsts = frames.filter((f) => fromVip(VIP, 80)(f) && f.tcpFlags & TCP_RST);
    t.ok(rsts.length >= 3 && rsts.every((f) => f.srcMac === topo.director.mac), 'the RSTs come from the director\'s kernel');
    t.equal(udp.answered, 0, 'UDP to the VIP: no real server answers');
    t.same(frames.filter((f) => topo.realServers.some((rs) => rs.mac === f.srcMac)), [], 'no frame from a real server at all');
  });

  await t.test('lab down leaves no namespace', async (t) => {
    const r = xdpvs(['lab', 'down', '--name', prefix]);
    t.equal(r.status, 0, `lab down: ${r.stderr}`);
    t.same(labNamespaces(), [], 'no namespace of the lab');
    fs.rmSync(pinRoot, { recursive: true, force: true });
    fs.rmSync(runRoot, { recursive: true, force: true });
    t.notOk(fs.existsSync(pinRoot) || fs.existsSync(runRoot), 'pin and state roots removed');
  });

  /** The client capture's frames so far (tcpdump -U writes each frame as it comes). */
  function readPcapSoFar(): Frame[] {
    return readPcap(clientCap.file);
  }
});
