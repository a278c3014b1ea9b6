/**
 * `xdpvs status` and `xdpvs stats`: the pure halves (connection counting, reports, rates), then
 * the real thing in a throw-away namespace: load with the CLI, run crafted frames through the
 * pinned program with BPF_PROG_TEST_RUN, and read them back from separate processes.
 * The kernel part needs root and clang.
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpfProgram, XdpAction } from '../src/libbpf.js';
import { encodeConn, encodeFlow, CONN_CLOSING, TOTALS } from '../src/abi.js';
import { parseIp } from '../src/net/addr.js';
import { validateServices } from '../src/config/validate.js';
import type { LoadedState } from '../src/runtime/state.js';
import { TestNetns, sh } from './helpers/netns.js';

const NS = `xdpvs-ss-${process.pid}`;
const IFACE = 'xva';
// src/paths.ts reads the roots when it is first imported: set them before importing what uses it
process.env.XDPVS_PIN_ROOT = `/sys/fs/bpf/${NS}`;
process.env.XDPVS_RUN_ROOT = `/run/${NS}`;
const read = await import('../src/runtime/read.js');

const repo = fileURLToPath(new URL('..', import.meta.url));
const bin = path.join(repo, 'bin', 'xdpvs');

// ---------------------------------------------------------------------------------------------
// pure
// ---------------------------------------------------------------------------------------------

const ip = (s: string) => parseIp(s)!.bytes;
const sec = 1_000_000_000n;

const config = validateServices({
  services: [
    {
      name: 'web',
      vip: '10.77.0.100',
      port: 80,
      protocol: 'tcp',
      persistence: 300,
      backends: [
        { ip: '10.77.0.11', weight: 1, mac: '02:00:00:00:00:11' },
        { ip: '10.77.0.12', weight: 0, mac: '02:00:00:00:00:12' },
      ],
      healthCheck: { type: 'none' },
    },
    {
      name: 'dns6',
      vip: 'fd00:77::100',
      port: 0,
      protocol: 'udp',
      backends: [{ ip: 'fd00:77::11', weight: 3, mac: '02:00:00:00:01:11' }],
      healthCheck: { type: 'none' },
    },
    {
      name: 'drained',
      vip: '10.77.0.101',
      port: 443,
      protocol: 'tcp',
      backends: [{ ip: '10.77.0.13', weight: 0, mac: '02:00:00:00:00:13' }],
      healthCheck: { type: 'none' },
    },
  ],
});
const pureState: LoadedState = {
  version: 1,
  iface: 'eth9',
  ifindex: 9,
  mode: 'native',
  progId: 77,
  source: '/tmp/services.json',
  services: null,
  allocation: {
    services: { 'tcp/10.77.0.100/80': 0, 'udp/fd00:77::100/0': 1, 'tcp/10.77.0.101/443': 2 },
    backends: { 'tcp/10.77.0.100/80/10.77.0.11': 0, 'tcp/10.77.0.100/80/10.77.0.12': 1, 'udp/fd00:77::100/0/fd00:77::11': 2, 'tcp/10.77.0.101/443/10.77.0.13': 3 },
  },
  macs: { 'tcp/10.77.0.100/80/10.77.0.11': '02:00:00:00:00:11', 'tcp/10.77.0.100/80/10.77.0.12': '02:00:00:00:00:12' },
  loadedAt: '2026-01-01T00:00:00.000Z',
};

t.test('backend state: down before draining before up, from the recorded health verdicts', (t) => {
  t.equal(read.backendState(1, undefined), 'up');
  t.equal(read.backendState(0, undefined), 'draining');
  t.equal(read.backendState(0, 'down'), 'down');
  t.equal(read.backendState(5, 'up'), 'up');
  const key = 'tcp/10.77.0.100/80/10.77.0.11';
  const withHealth = (h: 'up' | 'down'): LoadedState => ({ ...pureState, health: { [key]: h } });
  t.equal(read.healthOf(pureState, key), undefined, 'no record');
  t.equal(read.healthOf(withHealth('down'), key), 'down');
  t.equal(read.healthOf(withHealth('up'), key), 'up');
  t.equal(read.healthOf(withHealth('down'), 'tcp/10.77.0.100/80/10.77.0.12'), undefined, 'verdicts are per backend');
  t.end();
});

t.test('loaded services: indexes, MACs from the map before the state, states', (t) => {
  const services = read.loadedServices(pureState, config, new Map([[0, '02:aa:00:00:00:11']]));
  t.same(
    services.map((s) => [s.name, s.id, s.backends.map((b) => [b.ip, b.index, b.mac, b.state])]),
    [
      ['web', 0, [['10.77.0.11', 0, '02:aa:00:00:00:11', 'up'], ['10.77.0.12', 1, '02:00:00:00:00:12', 'draining']]],
      ['dns6', 1, [['fd00:77::11', 2, '02:00:00:00:01:11', 'up']]],
      ['drained', 2, [['10.77.0.13', 3, '02:00:00:00:00:13', 'draining']]],
    ],
  );
  t.end();
});

t.test('countConnections: timeouts per protocol and FIN, ActiveConn vs InActConn, ownership', (t) => {
  const services = read.loadedServices(pureState, config);
  const now = 10_000n * sec;
  const tcp = (sport: number, dst = '10.77.0.100', dport = 80) =>
    encodeFlow({ family: 4, saddr: ip('10.77.0.2'), daddr: ip(dst), sport, dport, proto: 6 });
  const udp6 = (sport: number, dport: number) => encodeFlow({ family: 6, saddr: ip('fd00:77::2'), daddr: ip('fd00:77::100'), sport, dport, proto: 17 });
  const conn = (backend: number, ageS: bigint, flags = 0) => encodeConn({ backend, flags, lastSeenNs: now - ageS * sec });
  const entries: Array<[Buffer, Buffer]> = [
    [tcp(1), conn(0, 10n)], // active
    [tcp(2), conn(0, 899n)], // active, just inside 900 s
    [tcp(3), conn(0, 901n)], // expired
    [tcp(4), conn(0, 100n, CONN_CLOSING)], // inactive (FIN seen), inside 120 s
    [tcp(5), conn(0, 121n, CONN_CLOSING)], // expired
    [tcp(6), encodeConn({ backend: 1, flags: 0, lastSeenNs: now + sec })], // coarse clock ahead: fresh
    [udp6(7, 53), conn(2, 299n)], // UDP: inactive, as IPVS shows it
    [udp6(8, 5353), conn(2, 301n)], // expired
    [tcp(9, '10.77.0.100', 443), conn(0, 1n)], // not web's port: an index reused by another service
    [tcp(10), conn(9, 1n)], // no backend has index 9 now
  ];
  const counts = read.countConnections(entries, now, config.timeouts, services);
  t.same(Object.fromEntries(counts), { 0: { active: 2, inactive: 1 }, 1: { active: 1, inactive: 0 }, 2: { active: 0, inactive: 1 } });
  const unchecked = read.countConnections(entries, now, config.timeouts);
  t.same(unchecked.get(0), { active: 3, inactive: 1 }, 'without services, ownership is not checked');
  t.same(unchecked.get(9), { active: 1, inactive: 0 });
  t.end();
});

t.test('statsReport: services are the sums of their backends; totals', (t) => {
  const services = read.loadedServices(pureState, config);
  const counters = new Map([
    [0, { connections: 3, packets: 10, bytes: 1000 }],
    [1, { connections: 1, packets: 2, bytes: 120 }],
    [2, { connections: 2, packets: 5, bytes: 400 }],
    [7, { connections: 99, packets: 99, bytes: 99 }], // not a backend of the state: not counted
  ]);
  const totals = [];
  totals[TOTALS.passed] = 4;
  totals[TOTALS.dropFragment] = 1;
  totals[TOTALS.dropNoBackend] = 2;
  totals[3] = 0;
  const { report, drops } = read.statsReport('eth9', services, counters, totals);
  t.same(Object.keys(report), ['interface', 'services', 'totals']);
  t.same(Object.keys(report.services[0]!), ['name', 'vip', 'port', 'protocol', 'connections', 'packets', 'bytes', 'backends']);
  t.same(Object.keys(report.services[0]!.backends[0]!), ['ip', 'mac', 'weight', 'state', 'connections', 'packets', 'bytes']);
  t.same(Object.keys(report.totals), ['packets', 'forwarded', 'passed', 'dropped']);
  t.match(report.services[0], { name: 'web', connections: 4, packets: 12, bytes: 1120 });
  t.match(report.services[2], { name: 'drained', connections: 0, packets: 0, bytes: 0 });
  t.same(report.totals, { packets: 24, forwarded: 17, passed: 4, dropped: 3 });
  t.same(drops, { fragment: 1, noBackend: 2, other: 0 });
  t.end();
});

t.test('withRates: per second between two samples, matched by service and backend', (t) => {
  const services = read.loadedServices(pureState, config);
  const sample = (c: number, at: bigint) => ({
    ...read.statsReport('eth9', services, new Map([[0, { connections: c, packets: 10 * c, bytes: 100 * c }]]), [c, 0, 0, 0]),
    takenAtNs: at,
  });
  const prev = sample(1, 5n * sec);
  const cur = sample(5, 7n * sec);
  const { report, totalsPerSecond } = read.withRates(cur, prev);
  t.match(report.services[0], { connections: 5, connectionsPerSecond: 2, packetsPerSecond: 20, bytesPerSecond: 200 });
  t.match(report.services[0]!.backends[0], { connectionsPerSecond: 2, packetsPerSecond: 20, bytesPerSecond: 200 });
  t.match(report.services[0]!.backends[1], { connectionsPerSecond: 0, packetsPerSecond: 0, bytesPerSecond: 0 });
  t.same(totalsPerSecond, { packets: 22, forwarded: 20, passed: 2, dropped: 0 });
  t.same(Object.keys(report.services[1]!), ['name', 'vip', 'port', 'protocol', 'connections', 'packets', 'bytes', 'connectionsPerSecond', 'packetsPerSecond', 'bytesPerSecond', 'backends']);
  const back = read.withRates(prev, cur);
  t.equal(back.report.services[0]!.packetsPerSecond, 0, 'counters that went back (a reset) read 0, not negative');
  t.end();
});

// ---------------------------------------------------------------------------------------------
// frames
// ---------------------------------------------------------------------------------------------

const TCP_SYN = 0x02;
const TCP_FIN = 0x01;
const TCP_ACK = 0x10;

function ether(type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(14);
  Buffer.from('020000000077', 'hex').copy(h, 0); // the director's MAC: the program does not look
  Buffer.from('020000000002', 'hex').copy(h, 6);
  h.writeUInt16BE(type, 12);
  return Buffer.concat([h, payload]);
}

function ipv4(proto: number, src: string, dst: string, payload: Buffer, fragOff = 0): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payload.length, 2);
  h.writeUInt16BE(fragOff, 6);
  h[8] = 64;
  h[9] = proto;
  ip(src).copy(h, 12);
  ip(dst).copy(h, 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += h.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  h.writeUInt16BE(~sum & 0xffff, 10);
  return ether(0x0800, Buffer.concat([h, payload]));
}

function ipv6(next: number, src: string, dst: string, payload: Buffer): Buffer {
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(payload.length, 4);
  h[6] = next;
  h[7] = 64;
  ip(src).copy(h, 8);
  ip(dst).copy(h, 24);
  return ether(0x86dd, Buffer.concat([h, payload]));
}

function tcp(sport: number, dport: number, flags: number, data = 0): Buffer {
  const h = Buffer.alloc(20 + data);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt32BE(1000, 4);
  h[12] = 5 << 4;
  h[13] = flags;
  h.writeUInt16BE(65535, 14);
  return h;
}

function udp(sport: number, dport: number, data: number): Buffer {
  const h = Buffer.alloc(8 + data);
  h.writeUInt16BE(sport, 0);
  h.writeUInt16BE(dport, 2);
  h.writeUInt16BE(8 + data, 4);
  return h;
}

const arp = () => ether(0x0806, Buffer.alloc(28));

// ---------------------------------------------------------------------------------------------
// on the machine
// ---------------------------------------------------------------------------------------------

const missing = ['ip', 'nsenter', 'clang'].filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0);
const skip = process.getuid?.() !== 0 ? 'needs root' : missing.length > 0 ? `needs ${missing.join(', ')}` : false;

interface Run {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The CLI in the namespace, asynchronously; `during` runs while it does. */
function xdpvsAsync(ns: TestNetns, args: string[], during?: (child: ReturnType<typeof spawn>, out: () => string) => void): Promise<Run> {
  const env = { ...process.env, XDPVS_PIN_ROOT: ns.pinRoot, XDPVS_RUN_ROOT: ns.runRoot };
  const child = spawn('nsenter', [`--net=/run/netns/${ns.name}`, 'env', '-u', 'NODE_OPTIONS', process.execPath, bin, ...args], { env });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  during?.(child, () => stdout);
  return new Promise((resolve) => child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr })));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

t.test('status and stats on a loaded interface', { skip }, async (t) => {
  const ns = new TestNetns(NS);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdpvs-ss-'));
  t.teardown(() => {
    ns.xdpvs(['unload', '-i', IFACE]);
    ns.ip('link', 'set', 'dev', IFACE, 'xdp', 'off');
    ns.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  // no IPv6 autoconfiguration chatter from the peer: every frame the program counts is ours
  sh('nsenter', [`--net=/run/netns/${NS}`, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);

  const file = path.join(dir, 'services.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      services: [
        {
          name: 'web', vip: '10.77.0.100', port: 80, protocol: 'tcp', persistence: 300,
          backends: [{ ip: '10.77.0.11', weight: 1, mac: '02:00:00:00:00:11' }, { ip: '10.77.0.12', weight: 0, mac: '02:00:00:00:00:12' }],
          healthCheck: { type: 'none' },
        },
        {
          name: 'dns6', vip: 'fd00:77::100', port: 0, protocol: 'udp', scheduler: 'sh',
          backends: [{ ip: 'fd00:77::11', weight: 3, mac: '02:00:00:00:01:11' }],
          healthCheck: { type: 'none' },
        },
        {
          name: 'drained', vip: '10.77.0.101', port: 443, protocol: 'tcp',
          backends: [{ ip: '10.77.0.13', weight: 0, mac: '02:00:00:00:00:13' }],
          healthCheck: { type: 'none' },
        },
      ],
    }),
  );
  const loaded = ns.xdpvs(['load', file, '-i', IFACE]);
  t.equal(loaded.status, 0, loaded.stderr);

  const json = (args: string[]) => {
    const r = ns.xdpvs(args);
    t.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };
  const prog = BpfProgram.fromPin(path.join(ns.pinRoot, IFACE, 'prog'));
  t.teardown(() => prog.close());

  await t.test('status after load, from another process', async (t) => {
    const s = json(['status', '-i', IFACE, '--json']);
    t.match(s, { interface: IFACE, mode: 'native', attached: true, programId: prog.info().id, source: file, timeouts: { tcp: 900, tcpFin: 120, udp: 300 } });
    t.same(
      s.services.map((x: { name: string; backends: Array<{ ip: string; mac: string; weight: number; state: string; port: number }> }) => [
        x.name,
        x.backends.map((b) => [b.ip, b.port, b.mac, b.weight, b.state]),
      ]),
      [
        ['web', [['10.77.0.11', 80, '02:00:00:00:00:11', 1, 'up'], ['10.77.0.12', 80, '02:00:00:00:00:12', 0, 'draining']]],
        ['dns6', [['fd00:77::11', 0, '02:00:00:00:01:11', 3, 'up']]],
        ['drained', [['10.77.0.13', 443, '02:00:00:00:00:13', 0, 'draining']]],
      ],
    );
    const table = ns.xdpvs(['status']); // the only loaded interface: no -i needed
    t.equal(table.status, 0, table.stderr);
    t.match(table.stdout, /^Interface: xva \(ifindex \d+\)\nProgram: +\d+, native mode\nLoaded: +\S+ from \S+services\.json\n/);
    t.match(table.stdout, /\nProt LocalAddress:Port Scheduler Flags +Name\n {2}-> RemoteAddress:Port {11}Forward Weight ActiveConn InActConn +State +MAC\n/);
    t.match(table.stdout, /\nTCP {2}10\.77\.0\.100:80 maglev persistent 300 +web\n/);
    t.match(table.stdout, /\n {2}-> 10\.77\.0\.11:80 +Route {3}1 {6}0 {10}0 {10}up {7}02:00:00:00:00:11\n/);
    t.match(table.stdout, /\nUDP {2}\[fd00:77::100\]:0 sh +dns6\n {2}-> \[fd00:77::11\]:0 +Route {3}3 /);
  });

  await t.test('stats after load: the design keys, all zero', async (t) => {
    const s = json(['stats', '-i', IFACE, '--json']);
    t.same(Object.keys(s), ['interface', 'services', 'totals']);
    t.equal(s.interface, IFACE);
    for (const svc of s.services) {
      t.same(Object.keys(svc), ['name', 'vip', 'port', 'protocol', 'connections', 'packets', 'bytes', 'backends']);
      t.match(svc, { connections: 0, packets: 0, bytes: 0 });
      for (const b of svc.backends) {
        t.same(Object.keys(b), ['ip', 'mac', 'weight', 'state', 'connections', 'packets', 'bytes']);
        t.match(b, { connections: 0, packets: 0, bytes: 0 });
      }
    }
    t.same(s.services.map((x: { name: string; vip: string; port: number; protocol: string }) => [x.name, x.vip, x.port, x.protocol]), [
      ['web', '10.77.0.100', 80, 'tcp'],
      ['dns6', 'fd00:77::100', 0, 'udp'],
      ['drained', '10.77.0.101', 443, 'tcp'],
    ]);
    t.same(s.totals, { packets: 0, forwarded: 0, passed: 0, dropped: 0 });
  });

  const run = (frame: Buffer, verdict: number) => {
    const r = prog.testRun(frame);
    t.equal(r.retval, verdict, `verdict ${verdict}`);
    return r;
  };
  let webBytes = 0;
  let dnsBytes = 0;

  await t.test('frames through the pinned program are counted', async (t) => {
    // web: five SYNs (five new flows), a FIN on the first, a data segment on the second
    for (let p = 40001; p <= 40005; p++) webBytes += run(ipv4(6, '10.77.0.2', '10.77.0.100', tcp(p, 80, TCP_SYN)), XdpAction.TX).data.length;
    const fin = run(ipv4(6, '10.77.0.2', '10.77.0.100', tcp(40001, 80, TCP_FIN | TCP_ACK)), XdpAction.TX);
    t.equal(fin.data.subarray(0, 6).toString('hex'), '020000000011', 'rewritten to the backend with weight');
    webBytes += fin.data.length;
    webBytes += run(ipv4(6, '10.77.0.2', '10.77.0.100', tcp(40002, 80, TCP_ACK, 100)), XdpAction.TX).data.length;
    // dns6: two flows, one with two datagrams
    for (const [sp, dp] of [[5000, 53], [5000, 53], [5001, 5353]] as const) {
      dnsBytes += run(ipv6(17, 'fd00:77::2', 'fd00:77::100', udp(sp, dp, 10)), XdpAction.TX).data.length;
    }
    // passed: not for a VIP; dropped: a fragment for a VIP, and a service without a backend
    run(ipv4(6, '10.77.0.2', '10.77.0.1', tcp(40010, 22, TCP_SYN)), XdpAction.PASS);
    run(arp(), XdpAction.PASS);
    run(ipv4(6, '10.77.0.2', '10.77.0.100', tcp(40011, 80, TCP_SYN), 0x2000), XdpAction.DROP);
    run(ipv4(6, '10.77.0.2', '10.77.0.101', tcp(40012, 443, TCP_SYN)), XdpAction.DROP);
    t.equal(webBytes, 5 * 54 + 54 + 154, 'frame lengths');

    const s = json(['stats', '-i', IFACE, '--json']);
    const [web, dns, drained] = s.services;
    t.same(web, {
      name: 'web', vip: '10.77.0.100', port: 80, protocol: 'tcp', connections: 5, packets: 7, bytes: webBytes,
      backends: [
        { ip: '10.77.0.11', mac: '02:00:00:00:00:11', weight: 1, state: 'up', connections: 5, packets: 7, bytes: webBytes },
        { ip: '10.77.0.12', mac: '02:00:00:00:00:12', weight: 0, state: 'draining', connections: 0, packets: 0, bytes: 0 },
      ],
    });
    t.match(dns, { connections: 2, packets: 3, bytes: dnsBytes, backends: [{ connections: 2, packets: 3, bytes: dnsBytes }] });
    t.match(drained, { connections: 0, packets: 0, bytes: 0 });
    t.same(s.totals, { packets: 14, forwarded: 10, passed: 2, dropped: 2 });

    const st = json(['status', '-i', IFACE, '--json']);
    t.match(st.services[0].backends, [{ activeConnections: 4, inactiveConnections: 1 }, { activeConnections: 0, inactiveConnections: 0 }], 'SYN flows active, the FIN one inactive');
    t.match(st.services[1].backends, [{ activeConnections: 0, inactiveConnections: 2 }], 'UDP flows count as InActConn');
    const table = ns.xdpvs(['status', '-i', IFACE]).stdout;
    t.match(table, /\n {2}-> 10\.77\.0\.11:80 +Route {3}1 {6}4 {10}1 {10}up /);

    const text = ns.xdpvs(['stats', '-i', IFACE]);
    t.equal(text.status, 0, text.stderr);
    const lines = text.stdout.split('\n');
    t.equal(lines[0], 'Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes Name');
    t.match(text.stdout, new RegExp(`\\nTCP {2}10\\.77\\.0\\.100:80 +5 +7 +0 +${webBytes} +0 web\\n`));
    t.match(text.stdout, new RegExp(`\\n {2}-> 10\\.77\\.0\\.11:80 +5 +7 +0 +${webBytes} +0 up +02:00:00:00:00:11\\n`));
    t.match(text.stdout, /\nOutPkts and OutBytes stay 0 in direct routing[^\n]*\nTotals: 14 packets: 10 forwarded, 2 passed to the kernel, 2 dropped \(1 IP fragments, 1 with no backend to take them\)\n$/);
  });

  await t.test('a health record in the state marks a backend down', async (t) => {
    const stateFile = path.join(ns.runRoot, IFACE, 'state.json');
    const before = fs.readFileSync(stateFile, 'utf8');
    t.teardown(() => fs.writeFileSync(stateFile, before));
    fs.writeFileSync(stateFile, JSON.stringify({ ...JSON.parse(before), health: { 'tcp/10.77.0.100/80/10.77.0.11': 'down' } }));
    t.equal(json(['stats', '-i', IFACE, '--json']).services[0].backends[0].state, 'down');
    t.match(ns.xdpvs(['status', '-i', IFACE]).stdout, /-> 10\.77\.0\.11:80 .* down +02:00:00:00:00:11\n/);
  });

  await t.test('--rate samples twice, an interval apart', async (t) => {
    let sending = true;
    const r = await xdpvsAsync(ns, ['stats', '-i', IFACE, '--rate', '--interval', '1', '--json'], () => {
      void (async () => {
        for (let p = 0; sending; p++) {
          prog.testRun(ipv4(6, '10.77.0.3', '10.77.0.100', tcp(30000 + (p % 20000), 80, TCP_SYN)));
          await sleep(20);
        }
      })();
    });
    sending = false;
    t.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    const rateKeys = ['connectionsPerSecond', 'packetsPerSecond', 'bytesPerSecond'];
    for (const svc of s.services) {
      t.same(Object.keys(svc), ['name', 'vip', 'port', 'protocol', 'connections', 'packets', 'bytes', ...rateKeys, 'backends']);
      for (const k of rateKeys) t.ok(svc[k] >= 0, `${svc.name} ${k} >= 0`);
      for (const b of svc.backends) {
        t.same(Object.keys(b), ['ip', 'mac', 'weight', 'state', 'connections', 'packets', 'bytes', ...rateKeys]);
        for (const k of rateKeys) t.ok(b[k] >= 0);
      }
    }
    t.ok(s.services[0].packetsPerSecond > 0, `web is busy: ${s.services[0].packetsPerSecond} packets/s`);
    t.ok(s.services[0].connectionsPerSecond > 0);
    t.ok(Math.abs(s.services[0].bytesPerSecond - s.services[0].packetsPerSecond * 54) < 1, 'bytes/s = packets/s x 54 (the frames are 54 bytes)');
    t.same(Object.keys(s.totals), ['packets', 'forwarded', 'passed', 'dropped']);

    const table = ns.xdpvs(['stats', '-i', IFACE, '--rate', '--interval', '0.2']);
    t.equal(table.status, 0, table.stderr);
    t.match(table.stdout, /^Prot LocalAddress:Port {17}CPS {4}InPPS {3}OutPPS {4}InBPS {3}OutBPS Name\n/);
    t.match(table.stdout, /\nTotals per second: \d+ packets: /);
  });

  await t.test('--watch redraws until SIGINT, then exits 0', async (t) => {
    let signalled = false;
    const r = await xdpvsAsync(ns, ['stats', '-i', IFACE, '--watch', '--interval', '0.2'], (child, out) => {
      const poll = setInterval(() => {
        if (!signalled && out().split('\x1b[2J\x1b[H').length >= 4) {
          signalled = true;
          child.kill('SIGINT');
        }
      }, 50);
      child.on('close', () => clearInterval(poll));
      setTimeout(() => child.kill('SIGKILL'), 15000).unref();
    });
    t.ok(signalled, 'it redrew three times');
    t.equal(r.signal, null, 'not killed by the signal');
    t.equal(r.status, 0, r.stderr);
    const frames = r.stdout.split('\x1b[2J\x1b[H').slice(1);
    t.ok(frames.length >= 3);
    t.match(frames[0], /^Every 0\.2s: xdpvs stats on xva .*\n\nProt LocalAddress:Port {15}Conns/);
  });

  await t.test('clear one-line errors', async (t) => {
    for (const cmd of ['status', 'stats']) {
      const r = ns.xdpvs([cmd, '-i', 'eth9']);
      t.equal(r.status, 1);
      t.equal(r.stderr.split('\n')[0], 'xdpvs: nothing is loaded on eth9');
      t.equal(r.stdout, '');
    }
    // a state without its pins
    const ghost = path.join(ns.runRoot, 'ghost');
    fs.mkdirSync(ghost, { recursive: true });
    t.teardown(() => fs.rmSync(ghost, { recursive: true, force: true }));
    const state = JSON.parse(fs.readFileSync(path.join(ns.runRoot, IFACE, 'state.json'), 'utf8'));
    fs.writeFileSync(path.join(ghost, 'state.json'), JSON.stringify({ ...state, iface: 'ghost' }));
    for (const cmd of ['status', 'stats']) {
      const r = ns.xdpvs([cmd, '-i', 'ghost']);
      t.equal(r.status, 1);
      t.match(r.stderr.split('\n')[0], /^xdpvs: the pinned maps of ghost are missing \(\/sys\/fs\/bpf\/xdpvs-ss-\d+\/ghost\/backends/);
    }
    const both = ns.xdpvs(['stats']);
    t.equal(both.status, 1);
    t.match(both.stderr, /^xdpvs: services are loaded on several interfaces \((ghost, xva|xva, ghost)\): say which with -i\n$/);
    const bad = ns.xdpvs(['stats', '-i', IFACE, '--rate', '--interval', '0']);
    t.not(bad.status, 0);
    t.match(bad.stderr, /--interval/);
  });

  await t.test('reading closes every descriptor it opens', async (t) => {
    const fds = () => fs.readdirSync('/proc/self/fd').length;
    read.collectStats(IFACE);
    read.collectStatus(IFACE);
    const before = fds();
    for (let i = 0; i < 3; i++) {
      read.collectStats(IFACE);
      t.equal(read.collectStatus(IFACE).services.length, 3);
    }
    t.equal(fds(), before);
  });
});
