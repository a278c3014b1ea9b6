// The data path's promises, checked on crafted frames through BPF_PROG_TEST_RUN: the generated
// program is built once for the config below, loaded (fresh maps wherever a test counts
// something), never attached. Needs root, clang and a kernel with BPF.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import {
  ETH_P_8021AD,
  ETH_P_8021Q,
  ETH_P_ARP,
  ETH_P_IP,
  ETH_P_IPV6,
  IPPROTO_FRAGMENT,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPV4_OPT_ROUTER_ALERT,
  ROUTER_MAC,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  addr,
  arpRequest,
  ethernet,
  fixIpv4Checksum,
  flowFrame,
  icmp4Echo,
  icmp6Echo,
  icmpErrorFrame,
  ipFrame,
  ipv4,
  ipv4RecordRoute,
  ipv6,
  ipv6Fragment,
  isV6,
  synOptions,
  tcp,
  truncate,
  udp,
  type FlowFrame,
} from '../src/net/frames.js';
import { buildTestProgram, loadTestDatapath, type TestDatapath } from './helpers/datapath.js';
import { CONN_CLOSING, TOTALS, decodeConn, encodeConn, encodeFlow, type Flow } from '../src/abi.js';
import { serviceRing } from '../src/plan.js';
import { hashFlow, hashSource, ringSlot } from '../src/sched/hash.js';
import { RING_BACKEND_MASK, RING_DIRTY, RING_NONE } from '../src/sched/ring.js';
import { LibbpfError } from '../src/libbpf.js';
import { prng } from './helpers/prng.js';

// ---------------------------------------------------------------------------------------------
// The services every test here uses. Each backend has its own MAC, so the output frame names it.

const mac = (svc: number, n: number) => `02:00:00:00:${svc.toString(16).padStart(2, '0')}:${n.toString(16).padStart(2, '0')}`;

const SERVICES = {
  connTableSize: 65536,
  services: [
    {
      name: 'web',
      vip: '10.200.0.100',
      port: 80,
      protocol: 'tcp',
      backends: [
        { ip: '10.200.0.11', weight: 1, mac: mac(1, 0x11) },
        { ip: '10.200.0.12', weight: 2, mac: mac(1, 0x12) },
        { ip: '10.200.0.13', weight: 1, mac: mac(1, 0x13) },
      ],
    },
    {
      name: 'dns',
      vip: '10.200.0.101',
      port: 53,
      protocol: 'udp',
      backends: [
        { ip: '10.200.0.21', mac: mac(2, 0x21) },
        { ip: '10.200.0.22', mac: mac(2, 0x22) },
      ],
    },
    {
      name: 'web6',
      vip: 'fd00:200::100',
      port: 80,
      protocol: 'tcp',
      backends: [
        { ip: 'fd00:200::11', weight: 1, mac: mac(3, 0x11) },
        { ip: 'fd00:200::12', weight: 1, mac: mac(3, 0x12) },
        { ip: 'fd00:200::13', weight: 2, mac: mac(3, 0x13) },
      ],
    },
    // the same VIP, the other protocol
    { name: 'dns6', vip: 'fd00:200::100', port: 53, protocol: 'udp', backends: [{ ip: 'fd00:200::21', mac: mac(4, 0x21) }, { ip: 'fd00:200::22', mac: mac(4, 0x22) }] },
    // a VIP whose last word equals web6's: the generated switch must compare the other three
    { name: 'twin6', vip: 'fd00:201::100', port: 80, protocol: 'tcp', backends: [{ ip: 'fd00:201::11', mac: mac(5, 0x11) }] },
    // every TCP port of a VIP, with one port given to another service
    {
      name: 'all-ports',
      vip: '10.200.0.102',
      port: 0,
      protocol: 'tcp',
      healthCheck: { type: 'tcp', port: 8080 },
      backends: [
        { ip: '10.200.0.31', mac: mac(6, 0x31) },
        { ip: '10.200.0.32', mac: mac(6, 0x32) },
      ],
    },
    { name: 'https', vip: '10.200.0.102', port: 443, protocol: 'tcp', backends: [{ ip: '10.200.0.33', mac: mac(7, 0x33) }] },
    { name: 'empty', vip: '10.200.0.103', port: 80, protocol: 'tcp', backends: [] },
    {
      name: 'drained',
      vip: '10.200.0.103',
      port: 8080,
      protocol: 'tcp',
      backends: [
        { ip: '10.200.0.41', weight: 0, mac: mac(8, 0x41) },
        { ip: '10.200.0.42', weight: 0, mac: mac(8, 0x42) },
      ],
    },
    {
      name: 'by-source',
      vip: '10.200.0.104',
      port: 80,
      protocol: 'tcp',
      scheduler: 'sh',
      backends: [
        { ip: '10.200.0.51', mac: mac(9, 0x51) },
        { ip: '10.200.0.52', mac: mac(9, 0x52) },
        { ip: '10.200.0.53', mac: mac(9, 0x53) },
      ],
    },
  ],
};

/** The same config with other weights for one service. */
function withWeights(name: string, weights: number[]): typeof SERVICES {
  const copy = JSON.parse(JSON.stringify(SERVICES)) as typeof SERVICES;
  const s = copy.services.find((x) => x.name === name)!;
  s.backends.forEach((b, i) => ((b as { weight?: number }).weight = weights[i]!));
  return copy;
}

/** What the helpers below need of a test (the top-level t or a subtest). */
type Asserts = Pick<typeof t, 'equal' | 'ok' | 'teardown'>;

const built = buildTestProgram(SERVICES);
t.teardown(() => built.cleanup());

/** A datapath with fresh maps, closed when the (sub)test ends. */
function fresh(tt: Asserts): TestDatapath {
  const dp = loadTestDatapath(built);
  tt.teardown(() => dp.close());
  return dp;
}

// ---------------------------------------------------------------------------------------------
// Helpers


const VIP = { web: '10.200.0.100', dns: '10.200.0.101', web6: 'fd00:200::100', twin6: 'fd00:201::100', all: '10.200.0.102', empty: '10.200.0.103', src: '10.200.0.104' };

/** Random clients: 198.18.0.0/15 (benchmarking range) and 2001:db8::/32. */
function randomV4(rand: () => number): string {
  const n = rand();
  return `198.${18 + (n & 1)}.${(n >>> 8) & 0xff}.${(n >>> 16) & 0xff}`;
}
function randomV6(rand: () => number): string {
  const w = () => (rand() & 0xffff).toString(16);
  return `2001:db8:${w()}:${w()}:${w()}:${w()}:${w()}:${w()}`;
}
const randomPort = (rand: () => number) => 1024 + (rand() % 64512);

/** The flow (conns key / hash input) of a frame built from `f`. */
function flowOf(f: FlowFrame): Flow {
  return { family: isV6(f.src) ? 6 : 4, saddr: addr(f.src), daddr: addr(f.dst), sport: f.sport, dport: f.dport, proto: f.proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP };
}

/** What a forwarded frame must be: the input with dst MAC = backend, src MAC = the input's dst. */
function forwarded(input: Buffer, backendMac: Buffer): Buffer {
  const out = Buffer.from(input);
  backendMac.copy(out, 0);
  input.copy(out, 6, 0, 6);
  return out;
}

/** The backend index the control plane predicts for a flow of a service: its table at the flow's slot. */
function predict(dp: TestDatapath, service: string, flow: Flow): number {
  const s = dp.service(service);
  const table = serviceRing(s);
  const hash = s.service.scheduler === 'sh' ? hashSource(flow.saddr) : hashFlow(flow);
  return table[ringSlot(hash, table.length)]! & RING_BACKEND_MASK;
}

function macOf(dp: TestDatapath, index: number): Buffer {
  const b = dp.backendAt(index);
  if (!b) throw new Error(`no backend at index ${index}`);
  return b.mac;
}

/** Runs a frame that must be forwarded; returns the backend index its output names. */
function txBackend(tt: Asserts, dp: TestDatapath, frame: Buffer, what: string): number {
  const r = dp.run(frame);
  tt.equal(r.verdict, 'TX', `${what}: XDP_TX`);
  const b = dp.backendByMac(r.out.subarray(0, 6));
  tt.ok(b, `${what}: the destination MAC is a backend's`);
  if (b) tt.equal(r.out.toString('hex'), forwarded(frame, macOf(dp, b.index)).toString('hex'), `${what}: only the MACs changed`);
  return b?.index ?? -1;
}

/** Runs a frame that must go to the kernel untouched. */
function expectPass(tt: Asserts, dp: TestDatapath, frame: Buffer, what: string): void {
  const r = dp.run(frame);
  tt.equal(r.verdict, 'PASS', `${what}: XDP_PASS`);
  tt.equal(r.out.toString('hex'), frame.toString('hex'), `${what}: frame unchanged`);
}

type Totals = { passed: number; dropFragment: number; dropNoBackend: number };
const totalsOf = (dp: TestDatapath): Totals => ({
  passed: dp.total(TOTALS.passed),
  dropFragment: dp.total(TOTALS.dropFragment),
  dropNoBackend: dp.total(TOTALS.dropNoBackend),
});

// ---------------------------------------------------------------------------------------------
// 1. Forwarding: TX, and the frame is the input with two MACs swapped in

t.test('a packet for a service is sent back out to its backend with only the MACs rewritten', (t) => {
  const dp = fresh(t);
  const cases: Array<{ what: string; f: FlowFrame; service: string }> = [];
  const l4s: Array<{ service: string; dst: string; proto: 'tcp' | 'udp'; dport: number }> = [
    { service: 'web', dst: VIP.web, proto: 'tcp', dport: 80 },
    { service: 'dns', dst: VIP.dns, proto: 'udp', dport: 53 },
    { service: 'all-ports', dst: VIP.all, proto: 'tcp', dport: 8443 },
    { service: 'https', dst: VIP.all, proto: 'tcp', dport: 443 },
    { service: 'by-source', dst: VIP.src, proto: 'tcp', dport: 80 },
    { service: 'web6', dst: VIP.web6, proto: 'tcp', dport: 80 },
    { service: 'dns6', dst: VIP.web6, proto: 'udp', dport: 53 },
    { service: 'twin6', dst: VIP.twin6, proto: 'tcp', dport: 80 },
  ];
  const tags: Array<{ name: string; vlan?: number; vlanTpid?: number }> = [
    { name: 'untagged' },
    { name: '802.1Q tag', vlan: 100 },
    { name: '802.1ad tag', vlan: 4094, vlanTpid: ETH_P_8021AD },
  ];
  const ipOpts: Array<{ name: string; options?: Buffer }> = [
    { name: 'no IP options' },
    { name: 'router alert', options: IPV4_OPT_ROUTER_ALERT },
    { name: 'record route, IHL 15', options: ipv4RecordRoute(9) },
  ];
  let port = 40000;
  for (const l of l4s) {
    for (const tag of tags) {
      for (const o of ipOpts) {
        if (isV6(l.dst) && o.options) continue;
        const src = isV6(l.dst) ? '2001:db8::1' : '192.0.2.1';
        for (const shape of ['syn', 'data'] as const) {
          const f: FlowFrame = {
            src,
            dst: l.dst,
            proto: l.proto,
            sport: port++,
            dport: l.dport,
            vlan: tag.vlan,
            vlanTpid: tag.vlanTpid,
            ipOptions: o.options,
            flags: shape === 'syn' ? TCP_SYN : TCP_PSH | TCP_ACK,
            tcpOptions: shape === 'syn' && l.proto === 'tcp' ? synOptions() : undefined,
            payload: shape === 'data' ? Buffer.from('GET / HTTP/1.1\r\nHost: example\r\n\r\n') : undefined,
          };
          cases.push({ what: `${l.service} ${l.proto} ${tag.name}${isV6(l.dst) ? '' : `, ${o.name}`}, ${shape}`, f, service: l.service });
        }
      }
    }
  }
  for (const c of cases) {
    const frame = flowFrame(c.f);
    const r = dp.run(frame);
    const want = predict(dp, c.service, flowOf(c.f));
    t.equal(r.verdict, 'TX', `${c.what}: XDP_TX`);
    t.equal(r.out.toString('hex'), forwarded(frame, macOf(dp, want)).toString('hex'), `${c.what}: whole frame`);
    t.equal(dp.backendAt(want)?.service, c.service, `${c.what}: a backend of ${c.service}`);
  }
  t.end();
});

// ---------------------------------------------------------------------------------------------
// 2. The control plane predicts the backend: the TS hash mirrors the BPF hash bit for bit

t.test('the backend is the one the control plane computes from the flow hash and the table', (t) => {
  const dp = fresh(t);
  const rand = prng(0x5eed0001);
  const targets: Array<{ service: string; dst: string; proto: 'tcp' | 'udp'; dport?: number }> = [
    { service: 'web', dst: VIP.web, proto: 'tcp', dport: 80 },
    { service: 'dns', dst: VIP.dns, proto: 'udp', dport: 53 },
    { service: 'all-ports', dst: VIP.all, proto: 'tcp' }, // random ports
    { service: 'by-source', dst: VIP.src, proto: 'tcp', dport: 80 },
    { service: 'web6', dst: VIP.web6, proto: 'tcp', dport: 80 },
    { service: 'dns6', dst: VIP.web6, proto: 'udp', dport: 53 },
  ];
  const flagsChoice = [TCP_SYN, TCP_ACK, TCP_PSH | TCP_ACK];
  for (const target of targets) {
    const mismatches: string[] = [];
    const seen = new Set<number>();
    const n = 3000;
    for (let i = 0; i < n; i++) {
      let dport = target.dport ?? randomPort(rand);
      if (target.dport === undefined && dport === 443) dport = 444; // 443 is the https service's
      const f: FlowFrame = {
        src: isV6(target.dst) ? randomV6(rand) : randomV4(rand),
        dst: target.dst,
        proto: target.proto,
        sport: randomPort(rand),
        dport,
        flags: flagsChoice[rand() % 3],
        vlan: rand() % 4 === 0 ? 7 : undefined,
      };
      const frame = flowFrame(f);
      const r = dp.run(frame);
      const want = predict(dp, target.service, flowOf(f));
      seen.add(want);
      const ok = r.verdict === 'TX' && r.out.equals(forwarded(frame, macOf(dp, want)));
      if (!ok && mismatches.length < 5) {
        mismatches.push(`${f.src}:${f.sport} -> ${f.dst}:${f.dport}: ${r.verdict} to ${r.out.subarray(0, 6).toString('hex')}, predicted ${macOf(dp, want).toString('hex')}`);
      }
    }
    t.same(mismatches, [], `${target.service}: ${n} random flows go where the control plane predicts`);
    t.equal(seen.size, dp.service(target.service).backends.length, `${target.service}: the flows reach every backend`);
  }
  t.end();
});

t.test('source hashing: every flow of a client goes to one backend', (t) => {
  const dp = fresh(t);
  const rand = prng(0x5eed0002);
  for (let c = 0; c < 50; c++) {
    const client = randomV4(rand);
    const backends = new Set<number>();
    for (let i = 0; i < 10; i++) {
      const r = dp.run(flowFrame({ src: client, dst: VIP.src, proto: 'tcp', sport: randomPort(rand), dport: 80 }));
      backends.add(dp.backendByMac(r.out.subarray(0, 6))?.index ?? -1);
    }
    if (backends.size !== 1) t.fail(`client ${client} reached ${backends.size} backends`);
  }
  t.pass('50 clients x 10 ports');
  t.end();
});

// ---------------------------------------------------------------------------------------------
// 3. Consistency and spread

t.test('a flow always gets the same backend, and flows spread as the weights say', (t) => {
  for (const { service, dst, weights } of [
    { service: 'web', dst: VIP.web, weights: [1, 2, 1] },
    { service: 'web6', dst: VIP.web6, weights: [1, 1, 2] },
  ]) {
    const dp = loadTestDatapath(built);
    const rand = prng(service === 'web' ? 0x5eed0003 : 0x5eed0004);
    const n = 20000;
    const flows: FlowFrame[] = [];
    const chosen: number[] = [];
    const counts = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const f: FlowFrame = { src: isV6(dst) ? randomV6(rand) : randomV4(rand), dst, proto: 'tcp', sport: randomPort(rand), dport: 80, flags: TCP_SYN };
      const r = dp.run(flowFrame(f));
      const b = r.verdict === 'TX' ? (dp.backendByMac(r.out.subarray(0, 6))?.index ?? -1) : -1;
      flows.push(f);
      chosen.push(b);
      counts.set(b, (counts.get(b) ?? 0) + 1);
    }
    const s = dp.service(service);
    const total = weights.reduce((a, b) => a + b, 0);
    s.backends.forEach((b, i) => {
      const share = (100 * (counts.get(b.index) ?? 0)) / n;
      const want = (100 * weights[i]!) / total;
      t.ok(Math.abs(share - want) <= 2, `${service}: ${b.backend.ip} (weight ${weights[i]}) got ${share.toFixed(2)}% of ${n} SYNs, wants ${want.toFixed(1)}% ± 2`);
    });
    t.equal(counts.get(-1) ?? 0, 0, `${service}: every SYN was forwarded`);

    // the same 5-tuple again: its SYN retransmitted, its ACK, data, FIN: the same backend
    const changed: string[] = [];
    for (let i = 0; i < n; i += 7) {
      for (const flags of [TCP_SYN, TCP_ACK, TCP_PSH | TCP_ACK, TCP_FIN | TCP_ACK]) {
        const r = dp.run(flowFrame({ ...flows[i]!, flags }));
        const b = dp.backendByMac(r.out.subarray(0, 6))?.index ?? -1;
        if (b !== chosen[i] && changed.length < 5) changed.push(`${flows[i]!.src}:${flows[i]!.sport} flags ${flags}: ${b} != ${chosen[i]}`);
      }
    }
    t.same(changed, [], `${service}: later packets of a flow go where its SYN went`);
    dp.close();

    // another director with the same backends (a fresh load, empty connection table) agrees
    const other = loadTestDatapath(built);
    const disagree: number[] = [];
    for (let i = 0; i < n; i += 13) {
      const r = other.run(flowFrame({ ...flows[i]!, flags: TCP_ACK }));
      if ((other.backendByMac(r.out.subarray(0, 6))?.index ?? -1) !== chosen[i]) disagree.push(i);
    }
    t.same(disagree, [], `${service}: a second director with the same backends picks the same backends`);
    other.close();
  }
  t.end();
});

// ---------------------------------------------------------------------------------------------
// 4. Not for a VIP: passed, untouched

t.test('frames not for a service go to the kernel unchanged', (t) => {
  const dp = fresh(t);
  const tcp4 = (dst: string, dport: number) => flowFrame({ src: '192.0.2.7', dst, proto: 'tcp', sport: 40001, dport });
  const cases: Array<[string, Buffer]> = [
    ['TCP to another address', tcp4('10.200.0.99', 80)],
    ['TCP to the director itself', tcp4('10.200.0.1', 22)],
    ['TCP to a VIP, another port', tcp4(VIP.web, 81)],
    ['UDP to a TCP-only VIP and port', flowFrame({ src: '192.0.2.7', dst: VIP.web, proto: 'udp', sport: 40001, dport: 80 })],
    ['TCP to a UDP-only VIP and port', tcp4(VIP.dns, 53)],
    ['UDP to the all-TCP-ports VIP', flowFrame({ src: '192.0.2.7', dst: VIP.all, proto: 'udp', sport: 40001, dport: 53 })],
    ['TCP from a VIP to a client (a reply)', flowFrame({ src: VIP.web, dst: '192.0.2.7', proto: 'tcp', sport: 80, dport: 40001, flags: TCP_SYN | TCP_ACK })],
    ['tagged TCP to another address', flowFrame({ src: '192.0.2.7', dst: '10.200.0.99', proto: 'tcp', sport: 40001, dport: 80, vlan: 5 })],
    ['ARP who-has a VIP', ethernet({ dst: 'ff:ff:ff:ff:ff:ff', type: ETH_P_ARP, payload: arpRequest(ROUTER_MAC, '10.200.0.254', VIP.web) })],
    ['tagged ARP who-has a VIP', ethernet({ dst: 'ff:ff:ff:ff:ff:ff', vlan: 5, type: ETH_P_ARP, payload: arpRequest(ROUTER_MAC, '10.200.0.254', VIP.web) })],
    ['ICMP echo to a VIP', ipFrame(ipv4({ src: '192.0.2.7', dst: VIP.web, protocol: IPPROTO_ICMP, payload: icmp4Echo() }))],
    ['ICMPv6 echo to a VIP', ipFrame(ipv6({ src: '2001:db8::7', dst: VIP.web6, nextHeader: IPPROTO_ICMPV6, payload: icmp6Echo() }))],
    ['SCTP (132) to a VIP', ipFrame(ipv4({ src: '192.0.2.7', dst: VIP.web, protocol: 132, payload: Buffer.alloc(28, 1) }))],
    ['IPv6 TCP to another address', flowFrame({ src: '2001:db8::7', dst: 'fd00:200::99', proto: 'tcp', sport: 40001, dport: 80 })],
    ['IPv6 TCP to an address with a VIP\'s last word', flowFrame({ src: '2001:db8::7', dst: 'fd00:202::100', proto: 'tcp', sport: 40001, dport: 80 })],
    ['IPv6 TCP to a VIP, another port', flowFrame({ src: '2001:db8::7', dst: VIP.web6, proto: 'tcp', sport: 40001, dport: 81 })],
    ['IPv6 UDP to a TCP-only VIP', flowFrame({ src: '2001:db8::7', dst: VIP.twin6, proto: 'udp', sport: 40001, dport: 80 })],
    ['IPv4 address of a VIP as IPv4-mapped IPv6', flowFrame({ src: '::ffff:192.0.2.7', dst: '::ffff:10.200.0.100', proto: 'tcp', sport: 40001, dport: 80 })],
    [
      'IPv6 to a VIP behind a hop-by-hop header (extension headers are not walked)',
      ipFrame(ipv6({ src: '2001:db8::7', dst: VIP.web6, nextHeader: 0, payload: Buffer.concat([Buffer.from([IPPROTO_TCP, 0, 1, 4, 0, 0, 0, 0]), tcp({ sport: 40001, dport: 80 })]) })),
    ],
    [
      'two VLAN tags (only one is parsed)',
      (() => {
        const inner = flowFrame({ src: '192.0.2.7', dst: VIP.web, proto: 'tcp', sport: 40001, dport: 80, vlan: 20 });
        return ethernet({ vlan: 10, vlanTpid: ETH_P_8021AD, type: ETH_P_8021Q, payload: inner.subarray(14) });
      })(),
    ],
    ['another EtherType (LLDP)', ethernet({ dst: '01:80:c2:00:00:0e', type: 0x88cc, payload: Buffer.alloc(46, 2) })],
  ];
  const before = totalsOf(dp);
  for (const [what, frame] of cases) expectPass(t, dp, frame, what);
  const after = totalsOf(dp);
  t.same(after, { ...before, passed: before.passed + cases.length }, 'each counted once in totals[passed]');
  t.equal(dp.connCount(), 0, 'nothing recorded in the connection table');
  t.end();
});

// ---------------------------------------------------------------------------------------------
// 5. Truncated and malformed frames: never forwarded, never modified

t.test('a frame cut short anywhere is passed unchanged', (t) => {
  const dp = fresh(t);
  const frames: Array<[string, Buffer]> = [
    ['IPv4 SYN', flowFrame({ src: '192.0.2.9', dst: VIP.web, proto: 'tcp', sport: 40009, dport: 80, tcpOptions: synOptions() })],
    ['tagged IPv4 SYN with IP options', flowFrame({ src: '192.0.2.9', dst: VIP.web, proto: 'tcp', sport: 40009, dport: 80, vlan: 42, ipOptions: IPV4_OPT_ROUTER_ALERT, tcpOptions: synOptions() })],
    ['IPv4 UDP', flowFrame({ src: '192.0.2.9', dst: VIP.dns, proto: 'udp', sport: 40009, dport: 53, payload: Buffer.from('query') })],
    ['IPv6 SYN', flowFrame({ src: '2001:db8::9', dst: VIP.web6, proto: 'tcp', sport: 40009, dport: 80, tcpOptions: synOptions() })],
    ['tagged IPv6 SYN', flowFrame({ src: '2001:db8::9', dst: VIP.web6, proto: 'tcp', sport: 40009, dport: 80, vlan: 42, tcpOptions: synOptions() })],
  ];
  for (const [what, full] of frames) {
    txBackend(t, dp, full, `${what}, whole`);
    const bad: string[] = [];
    for (let len = 0; len < full.length; len++) {
      const cut = truncate(full, len);
      if (len < 14) {
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (EINVAL): no driver
        // hands such a frame to XDP either
        try {
          const r = dp.run(cut);
          if (r.verdict === 'TX') bad.push(`${len}: TX`);
        } catch (err) {
          if (!(err instanceof LibbpfError && err.code === 'EINVAL')) throw err;
        }
        continue;
      }
      const r = dp.run(cut);
      if (r.verdict !== 'PASS' || !r.out.equals(cut)) bad.push(`${len}: ${r.verdict}${r.out.equals(cut) ? '' : ', modified'}`);
    }
    t.same(bad, [], `${what}: cut at every length 0-${full.length - 1}: XDP_PASS, unchanged`);
  }
  t.end();
});

t.test('malformed headers are passed unchanged', (t) => {
  const dp = fresh(t);
  const base = () => flowFrame({ src: '192.0.2.10', dst: VIP.web, proto: 'tcp', sport: 40010, dport: 80 });
  const base6 = () => flowFrame({ src: '2001:db8::10', dst: VIP.web6, proto: 'tcp', sport: 40010, dport: 80 });
  const baseUdp = () => flowFrame({ src: '192.0.2.10', dst: VIP.dns, proto: 'udp', sport: 40010, dport: 53 });
  const ip = 14;
  const edit = (frame: Buffer, fn: (f: Buffer) => void, fixSum = true): Buffer => {
    fn(frame);
    return fixSum && frame.readUInt16BE(12) === ETH_P_IP ? fixIpv4Checksum(frame) : frame;
  };
  txBackend(t, dp, base(), 'the well-formed IPv4 frame');
  txBackend(t, dp, base6(), 'the well-formed IPv6 frame');
  txBackend(t, dp, baseUdp(), 'the well-formed UDP frame');
  const cases: Array<[string, Buffer]> = [];
  for (let ihl = 0; ihl < 5; ihl++) cases.push([`IHL ${ihl}`, edit(base(), (f) => (f[ip] = 0x40 | ihl))]);
  cases.push(['IHL 15 on a 40-byte packet (options past the end)', edit(base(), (f) => (f[ip] = 0x4f))]);
  cases.push(['IHL 12 leaving fewer than 8 bytes of L4', edit(base(), (f) => (f[ip] = 0x4c))]);
  cases.push(['tot_len larger than the frame', edit(base(), (f) => f.writeUInt16BE(f.length - ip + 1, ip + 2))]);
  cases.push(['tot_len 0xffff', edit(base(), (f) => f.writeUInt16BE(0xffff, ip + 2))]);
  cases.push(['tot_len smaller than the IP header', edit(base(), (f) => f.writeUInt16BE(19, ip + 2))]);
  cases.push(['tot_len ends inside the TCP header (the rest is padding)', edit(base(), (f) => f.writeUInt16BE(24, ip + 2))]);
  cases.push(['tot_len ends inside the UDP header', edit(baseUdp(), (f) => f.writeUInt16BE(24, ip + 2))]);
  cases.push(['tot_len leaves no room for the TCP options doff announces', edit(base(), (f) => (f[ip + 20 + 12] = 0x60))]);
  for (let doff = 0; doff < 5; doff++) cases.push([`TCP doff ${doff}`, edit(base(), (f) => (f[ip + 20 + 12] = doff << 4))]);
  cases.push(['IP version 6 in an 0x0800 frame', edit(base(), (f) => (f[ip] = 0x65))]);
  cases.push(['IP version 0 in an 0x0800 frame', edit(base(), (f) => (f[ip] = 0x05))]);
  cases.push(['an IPv4 packet in an 0x86dd frame', edit(base(), (f) => f.writeUInt16BE(ETH_P_IPV6, 12), false)]);
  cases.push(['an IPv6 packet in an 0x0800 frame', edit(base6(), (f) => f.writeUInt16BE(ETH_P_IP, 12), false)]);
  cases.push(['IPv6 version 4 in an 0x86dd frame', edit(base6(), (f) => (f[ip] = 0x40 | (f[ip]! & 0xf)), false)]);
  cases.push(['IPv6 payload length larger than the frame', edit(base6(), (f) => f.writeUInt16BE(f.length - ip - 40 + 1, ip + 4), false)]);
  cases.push(['IPv6 payload length 0', edit(base6(), (f) => f.writeUInt16BE(0, ip + 4), false)]);
  cases.push(['IPv6 payload ends inside the TCP header', edit(base6(), (f) => f.writeUInt16BE(12, ip + 4), false)]);
  cases.push(['IPv6 TCP doff 4', edit(base6(), (f) => (f[ip + 40 + 12] = 4 << 4), false)]);
  for (const [what, frame] of cases) {
    const r = dp.run(frame);
    t.not(r.verdict, 'TX', `${what}: never XDP_TX`);
    t.equal(r.verdict, 'PASS', `${what}: XDP_PASS (parse.h: what cannot be parsed goes to the kernel)`);
    t.equal(r.out.toString('hex'), frame.toString('hex'), `${what}: frame unchanged`);
  }
  t.equal(dp.connCount(), 3, 'only the three well-formed frames were recorded');
  t.end();
});

t.test('Ethernet padding after a complete packet does not matter', (t) => {
  const dp = fresh(t);
  // a 60-byte minimum frame: IPv4 + UDP with 2 bytes of payload is 44 bytes, so 16 bytes pad
  const f: FlowFrame = { src: '192.0.2.11', dst: VIP.dns, proto: 'udp', sport: 40011, dport: 53, payload: Buffer.from('hi') };
  const frame = Buffer.concat([flowFrame(f), Buffer.alloc(16)]);
  const want = predict(dp, 'dns', flowOf(f));
  const r = dp.run(frame);
  t.equal(r.verdict, 'TX');
  t.equal(r.out.toString('hex'), forwarded(frame, macOf(dp, want)).toString('hex'), 'padding kept, only the MACs changed');
  t.end();
});

// ---------------------------------------------------------------------------------------------
// 6. Fragments of a service's VIP and protocol: dropped and counted

t.test('fragments for a service are dropped and counted; other fragments pass', (t) => {
  const dp = fresh(t);
  const seg = tcp({ sport: 40012, dport: 80, payload: Buffer.alloc(64, 0x62) });
  const dgram = udp({ sport: 40012, dport: 53, payload: Buffer.alloc(64, 0x63) });
  const v4 = (dst: string, protocol: number, payload: Buffer, o: { mf?: boolean; fragOffset?: number }) => ipv4({ src: '192.0.2.12', dst, protocol, payload, ...o });
  const v6 = (dst: string, next: number, payload: Buffer, o: { more?: boolean; offset?: number }) =>
    ipv6({ src: '2001:db8::12', dst, nextHeader: IPPROTO_FRAGMENT, payload: ipv6Fragment({ nextHeader: next, payload, ...o }) });
  const dropped: Array<[string, Buffer]> = [
    ['IPv4 first fragment (MF, offset 0) to web', ipFrame(v4(VIP.web, IPPROTO_TCP, seg, { mf: true }))],
    ['IPv4 middle fragment (MF, offset 8) to web', ipFrame(v4(VIP.web, IPPROTO_TCP, seg, { mf: true, fragOffset: 8 }))],
    ['IPv4 last fragment (offset 185) to web', ipFrame(v4(VIP.web, IPPROTO_TCP, seg, { fragOffset: 185 }))],
    ['tagged IPv4 first fragment to web', ipFrame(v4(VIP.web, IPPROTO_TCP, seg, { mf: true }), { vlan: 300 })],
    ['IPv4 UDP fragment to dns', ipFrame(v4(VIP.dns, IPPROTO_UDP, dgram, { fragOffset: 3 }))],
    ['IPv4 fragment to the all-ports VIP', ipFrame(v4(VIP.all, IPPROTO_TCP, seg, { mf: true }))],
    ['IPv4 fragment to the empty service\'s VIP', ipFrame(v4(VIP.empty, IPPROTO_TCP, seg, { mf: true }))],
    ['IPv6 first fragment to web6', ipFrame(v6(VIP.web6, IPPROTO_TCP, seg, { more: true }))],
    ['IPv6 last fragment to web6', ipFrame(v6(VIP.web6, IPPROTO_TCP, seg.subarray(0, 16), { offset: 100 }))],
    ['tagged IPv6 fragment to web6', ipFrame(v6(VIP.web6, IPPROTO_TCP, seg, { more: true }), { vlan: 300 })],
    ['IPv6 UDP fragment to dns6', ipFrame(v6(VIP.web6, IPPROTO_UDP, dgram, { more: true }))],
    ['IPv6 atomic fragment (offset 0, no M) to web6', ipFrame(v6(VIP.web6, IPPROTO_TCP, seg, {}))],
  ];
  const passed: Array<[string, Buffer]> = [
    ['IPv4 UDP fragment to a TCP-only VIP', ipFrame(v4(VIP.web, IPPROTO_UDP, dgram, { mf: true }))],
    ['IPv4 fragment to another address', ipFrame(v4('10.200.0.99', IPPROTO_TCP, seg, { mf: true }))],
    ['IPv4 ICMP fragment to a VIP', ipFrame(v4(VIP.web, IPPROTO_ICMP, icmp4Echo(1, 1, Buffer.alloc(64)), { mf: true }))],
    ['IPv6 UDP fragment to a TCP-only VIP', ipFrame(v6(VIP.twin6, IPPROTO_UDP, dgram, { more: true }))],
    ['IPv6 fragment to another address', ipFrame(v6('fd00:200::99', IPPROTO_TCP, seg, { more: true }))],
  ];
  const before = totalsOf(dp);
  for (const [what, frame] of dropped) {
    const r = dp.run(frame);
    t.equal(r.verdict, 'DROP', `${what}: XDP_DROP`);
    t.equal(r.out.toString('hex'), frame.toString('hex'), `${what}: frame unchanged`);
  }
  for (const [what, frame] of passed) expectPass(t, dp, frame, what);
  t.same(totalsOf(dp), { passed: before.passed + passed.length, dropFragment: before.dropFragment + dropped.length, dropNoBackend: before.dropNoBackend }, 'totals: one drop per fragment');
  t.equal(dp.connCount(), 0, 'no flow recorded');
  // DF is not a fragment
  txBackend(t, dp, ipFrame(ipv4({ src: '192.0.2.12', dst: VIP.web, protocol: IPPROTO_TCP, payload: seg, df: true })), 'IPv4 with DF set');
  t.end();
});

// ---------------------------------------------------------------------------------------------
// 7. ICMP errors about a flow of a service reach that flow's backend

t.test('ICMP errors quoting a reply of a service go to the backend of the client\'s flow', (t) => {
  const dp = fresh(t);
  const rand = prng(0x5eed0007);
  const kinds: Array<{ what: string; service: string; vip: string; vport: number; proto: 'tcp' | 'udp'; router: string; type?: number; code?: number; vlan?: number; quoteBytes?: number }> = [
    { what: 'IPv4 frag-needed about a TCP flow', service: 'web', vip: VIP.web, vport: 80, proto: 'tcp', router: '203.0.113.1' },
    { what: 'tagged IPv4 frag-needed about a TCP flow', service: 'web', vip: VIP.web, vport: 80, proto: 'tcp', router: '203.0.113.1', vlan: 9 },
    { what: 'IPv4 frag-needed quoting the whole packet', service: 'web', vip: VIP.web, vport: 80, proto: 'tcp', router: '203.0.113.1', quoteBytes: 10000 },
    { what: 'IPv4 time-exceeded about a TCP flow', service: 'web', vip: VIP.web, vport: 80, proto: 'tcp', router: '203.0.113.1', type: 11, code: 0 },
    { what: 'IPv4 port-unreachable about a UDP flow', service: 'dns', vip: VIP.dns, vport: 53, proto: 'udp', router: '203.0.113.1', type: 3, code: 3 },
    { what: 'IPv4 frag-needed about an all-ports flow', service: 'all-ports', vip: VIP.all, vport: 8080, proto: 'tcp', router: '203.0.113.1' },
    { what: 'IPv6 packet-too-big about a TCP flow', service: 'web6', vip: VIP.web6, vport: 80, proto: 'tcp', router: '2001:db8:ffff::1' },
    { what: 'tagged IPv6 packet-too-big about a TCP flow', service: 'web6', vip: VIP.web6, vport: 80, proto: 'tcp', router: '2001:db8:ffff::1', vlan: 9 },
    { what: 'IPv6 packet-too-big quoting 48 bytes', service: 'web6', vip: VIP.web6, vport: 80, proto: 'tcp', router: '2001:db8:ffff::1', quoteBytes: 48 },
    { what: 'IPv6 packet-too-big about a UDP flow', service: 'dns6', vip: VIP.web6, vport: 53, proto: 'udp', router: '2001:db8:ffff::1' },
    { what: 'IPv6 time-exceeded about a TCP flow', service: 'web6', vip: VIP.web6, vport: 80, proto: 'tcp', router: '2001:db8:ffff::1', type: 3, code: 0 },
  ];
  for (const k of kinds) {
    const wrong: string[] = [];
    const backends = new Set<number>();
    const connsBefore = dp.connCount();
    for (let i = 0; i < 100; i++) {
      const client = isV6(k.vip) ? randomV6(rand) : randomV4(rand);
      const cport = randomPort(rand);
      const flow: FlowFrame = { src: client, dst: k.vip, proto: k.proto, sport: cport, dport: k.vport };
      // the client's own packet first, as in real life
      const first = dp.run(flowFrame(flow));
      const clientBackend = dp.backendByMac(first.out.subarray(0, 6))?.index ?? -1;
      const stats = dp.backendStats(clientBackend);
      const icmp = icmpErrorFrame({ router: k.router, vip: k.vip, vport: k.vport, client, cport, proto: k.proto, vlan: k.vlan, quoteBytes: k.quoteBytes, type: k.type, code: k.code });
      const r = dp.run(icmp);
      backends.add(clientBackend);
      const ok = r.verdict === 'TX' && r.out.equals(forwarded(icmp, macOf(dp, clientBackend))) && clientBackend === predict(dp, k.service, flowOf(flow));
      if (!ok && wrong.length < 3) wrong.push(`${client}:${cport}: ${r.verdict} to ${r.out.subarray(0, 6).toString('hex')}, the flow is on ${macOf(dp, clientBackend).toString('hex')}`);
      const after = dp.backendStats(clientBackend);
      if (after.connections !== stats.connections || after.packets !== stats.packets + 1 || after.bytes !== stats.bytes + icmp.length) {
        if (wrong.length < 3) wrong.push(`${client}:${cport}: the ICMP error was counted wrongly`);
      }
    }
    t.same(wrong, [], `${k.what}: 100 flows, each error went unchanged but for the MACs to the flow's backend, counted as a packet, no new flow`);
    t.equal(dp.connCount(), connsBefore + 100, `${k.what}: only the clients' own packets were recorded`);
    t.equal(backends.size, dp.service(k.service).backends.length, `${k.what}: the flows were spread over every backend`);
  }

  const client = '192.0.2.77';
  const notOurs: Array<[string, Buffer]> = [
    ['quoting a packet from another address', icmpErrorFrame({ router: '203.0.113.1', vip: '10.200.0.99', vport: 80, client, cport: 40077, proto: 'tcp' })],
    ['quoting a packet from a VIP\'s other port', icmpErrorFrame({ router: '203.0.113.1', vip: VIP.web, vport: 81, client, cport: 40077, proto: 'tcp' })],
    ['quoting only 4 bytes of the L4 header', icmpErrorFrame({ router: '203.0.113.1', vip: VIP.web, vport: 80, client, cport: 40077, proto: 'tcp', quoteBytes: 24 })],
    ['of a type that is no error (redirect)', icmpErrorFrame({ router: '203.0.113.1', vip: VIP.web, vport: 80, client, cport: 40077, proto: 'tcp', type: 5, code: 1 })],
    ['IPv6, quoting a packet from another address', icmpErrorFrame({ router: '2001:db8:ffff::1', vip: 'fd00:200::99', vport: 80, client: '2001:db8::77', cport: 40077, proto: 'tcp' })],
    ['IPv6, quoting only 44 bytes', icmpErrorFrame({ router: '2001:db8:ffff::1', vip: VIP.web6, vport: 80, client: '2001:db8::77', cport: 40077, proto: 'tcp', quoteBytes: 44 })],
    ['IPv6, of an informational type (echo reply)', icmpErrorFrame({ router: '2001:db8:ffff::1', vip: VIP.web6, vport: 80, client: '2001:db8::77', cport: 40077, proto: 'tcp', type: 129, code: 0 })],
  ];
  // the quoted packet in bytes past the end of the IP packet (Ethernet padding) is no quote
  const padded4 = icmpErrorFrame({ router: '203.0.113.1', vip: VIP.web, vport: 80, client, cport: 40077, proto: 'tcp' });
  padded4.writeUInt16BE(20 + 8, 14 + 2);
  notOurs.push(['whose quote lies past tot_len', fixIpv4Checksum(padded4)]);
  const padded6 = icmpErrorFrame({ router: '2001:db8:ffff::1', vip: VIP.web6, vport: 80, client: '2001:db8::77', cport: 40077, proto: 'tcp' });
  padded6.writeUInt16BE(8 + 40, 14 + 4);
  notOurs.push(['IPv6, whose quote ends past payload_len', padded6]);
  for (const [what, frame] of notOurs) expectPass(t, dp, frame, `ICMP error ${what}`);
  t.end();
});

// ---------------------------------------------------------------------------------------------
// 8. A service without backends drops

t.test('a service with no backend to take a flow drops it and counts it', (t) => {
  const dp = fresh(t);
  const before = totalsOf(dp);
  const frames = [
    flowFrame({ src: '192.0.2.13', dst: VIP.empty, proto: 'tcp', sport: 40013, dport: 80 }),
    flowFrame({ src: '192.0.2.13', dst: VIP.empty, proto: 'tcp', sport: 40014, dport: 80, flags: TCP_ACK, vlan: 3 }),
    flowFrame({ src: '192.0.2.13', dst: VIP.empty, proto: 'tcp', sport: 40013, dport: 8080 }), // drained: every weight 0
    flowFrame({ src: '192.0.2.13', dst: VIP.empty, proto: 'tcp', sport: 40015, dport: 8080, flags: TCP_ACK }),
  ];
  t.same([...serviceRing(dp.service('drained'))].filter((e) => e !== RING_NONE), [], 'the drained service\'s table is all RING_NONE');
  for (const frame of frames) {
    const r = dp.run(frame);
    t.equal(r.verdict, 'DROP', 'XDP_DROP');
    t.equal(r.out.toString('hex'), frame.toString('hex'), 'frame unchanged');
  }
  t.same(totalsOf(dp), { ...before, dropNoBackend: before.dropNoBackend + frames.length }, 'counted in totals[dropNoBackend]');
  t.equal(dp.connCount(), 0, 'no flow recorded');
  for (const name of ['drained']) {
    for (const b of dp.service(name).backends) t.same(dp.backendStats(b.index), { connections: 0, packets: 0, bytes: 0 }, `${b.backend.ip}: nothing counted`);
  }
  t.end();
});

// ---------------------------------------------------------------------------------------------
// 9. Counters and the connection table

t.test('backend counters and totals count what was forwarded and passed; new flows are recorded', (t) => {
  const dp = fresh(t);
  const rand = prng(0x5eed0009);
  const want = new Map<number, { connections: number; packets: number; bytes: number }>();
  const flows: Array<{ flow: Flow; backend: number; closing: boolean }> = [];
  const count = (b: number, bytes: number, isNew: boolean) => {
    const c = want.get(b) ?? { connections: 0, packets: 0, bytes: 0 };
    c.packets += 1;
    c.bytes += bytes;
    c.connections += isNew ? 1 : 0;
    want.set(b, c);
  };
  const send = (f: FlowFrame, isNew: boolean): number => {
    const frame = flowFrame(f);
    const r = dp.run(frame);
    const b = r.verdict === 'TX' ? (dp.backendByMac(r.out.subarray(0, 6))?.index ?? -1) : -1;
    if (b < 0) t.fail(`${f.src}:${f.sport} -> ${f.dst}:${f.dport} not forwarded (${r.verdict})`);
    count(b, frame.length, isNew);
    return b;
  };
  // TCP: SYN, a retransmitted SYN, ACK, data, FIN: one connection, five packets
  for (const [service, dst] of [['web', VIP.web], ['web', VIP.web], ['web6', VIP.web6], ['all-ports', VIP.all]] as const) {
    for (let i = 0; i < 8; i++) {
      const f: FlowFrame = { src: isV6(dst) ? randomV6(rand) : randomV4(rand), dst, proto: 'tcp', sport: randomPort(rand), dport: service === 'all-ports' ? 1 + (rand() % 442) : 80, vlan: i % 3 === 0 ? 12 : undefined };
      const b = send({ ...f, flags: TCP_SYN, tcpOptions: synOptions() }, true);
      t.equal(b, predict(dp, service, flowOf(f)), `${service} flow ${i}: the predicted backend`);
      send({ ...f, flags: TCP_SYN, tcpOptions: synOptions() }, false);
      send({ ...f, flags: TCP_ACK }, false);
      send({ ...f, flags: TCP_PSH | TCP_ACK, payload: Buffer.alloc(1 + (rand() % 1200), 0x64) }, false);
      const closing = i % 2 === 0;
      if (closing) send({ ...f, flags: (i % 4 === 0 ? TCP_FIN : TCP_RST) | TCP_ACK }, false);
      flows.push({ flow: flowOf(f), backend: b, closing });
    }
  }
  // UDP: every datagram of a flow after the first belongs to it: one connection per flow
  for (const [service, dst] of [['dns', VIP.dns], ['dns6', VIP.web6]] as const) {
    for (let i = 0; i < 10; i++) {
      const f: FlowFrame = { src: isV6(dst) ? randomV6(rand) : randomV4(rand), dst, proto: 'udp', sport: randomPort(rand), dport: 53 };
      let b = -1;
      for (let k = 0; k <= i % 4; k++) b = send({ ...f, payload: Buffer.alloc(10 + (rand() % 500), 0x65) }, k === 0);
      t.equal(b, predict(dp, service, flowOf(f)), `${service} flow ${i}: the predicted backend`);
      flows.push({ flow: flowOf(f), backend: b, closing: false });
    }
  }
  // mid-stream TCP packets of flows this director never saw start: forwarded, no new connection
  const midstream: Flow[] = [];
  for (let i = 0; i < 5; i++) {
    const f: FlowFrame = { src: randomV4(rand), dst: VIP.web, proto: 'tcp', sport: randomPort(rand), dport: 80, flags: TCP_ACK };
    send(f, false);
    midstream.push(flowOf(f));
  }
  // and some traffic for the kernel
  const passed = 17;
  for (let i = 0; i < passed; i++) dp.run(flowFrame({ src: randomV4(rand), dst: '10.200.0.99', proto: 'tcp', sport: randomPort(rand), dport: 80 }));

  for (const s of dp.plan.services) {
    for (const b of s.backends) {
      t.same(dp.backendStats(b.index), want.get(b.index) ?? { connections: 0, packets: 0, bytes: 0 }, `backend_stats of ${s.service.name} ${b.backend.ip}`);
    }
  }
  t.same(totalsOf(dp), { passed, dropFragment: 0, dropNoBackend: 0 }, 'totals');
  const forwardedPackets = [...want.values()].reduce((n, c) => n + c.packets, 0);
  t.equal(forwardedPackets, 4 * (8 * 4 + 4) + 2 * 23 + 5, 'every frame sent was forwarded or passed');

  t.equal(dp.connCount(), flows.length, 'the connection table holds one entry per new flow');
  const wrongConns: string[] = [];
  for (const { flow, backend, closing } of flows) {
    const c = dp.conn(flow);
    if (!c || c.backend !== backend || ((c.flags & CONN_CLOSING) !== 0) !== closing || c.lastSeenNs === 0n) {
      wrongConns.push(`${flow.saddr.toString('hex')}:${flow.sport}: ${JSON.stringify(c, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}, want backend ${backend}${closing ? ' closing' : ''}`);
    }
  }
  t.same(wrongConns, [], 'each entry names the flow\'s backend, closing after FIN or RST');
  t.same(midstream.map((f) => dp.conn(f)), midstream.map(() => null), 'mid-stream packets on unchanged slots are not recorded');
  t.end();
});

// ---------------------------------------------------------------------------------------------
// 10. Established flows keep their backend when the table changes

t.test('established flows keep their backend across a table change; new flows follow the table', (t) => {
  const dp = fresh(t);
  const rand = prng(0x5eed0010);
  const oldTable = serviceRing(dp.service('web'));
  const syn: Array<{ f: FlowFrame; backend: number; slot: number }> = [];
  for (let i = 0; i < 3000; i++) {
    const f: FlowFrame = { src: randomV4(rand), dst: VIP.web, proto: 'tcp', sport: randomPort(rand), dport: 80, flags: TCP_SYN };
    const r = dp.run(flowFrame(f));
    const backend = dp.backendByMac(r.out.subarray(0, 6))?.index ?? -1;
    syn.push({ f, backend, slot: ringSlot(hashFlow(flowOf(f)), oldTable.length) });
  }

  // web's weights 1,2,1 -> 1,2,3: the third backend takes slots from the others
  dp.update(withWeights('web', [1, 2, 3]));
  const newTable = serviceRing(dp.service('web'));
  const installed = dp.installedRing('web');
  const changedSlots = new Set<number>();
  for (let i = 0; i < newTable.length; i++) if (newTable[i] !== oldTable[i]) changedSlots.add(i);
  t.ok(changedSlots.size > 0, `${changedSlots.size} of ${newTable.length} slots changed`);
  t.same(
    [...installed].map((e, i) => (e & RING_DIRTY) !== 0 === changedSlots.has(i) && (e & RING_BACKEND_MASK) === newTable[i]),
    [...installed].map(() => true),
    'the installed table is the new one, with exactly the changed slots marked dirty',
  );

  const moved = syn.filter((s) => changedSlots.has(s.slot));
  const stayed = syn.filter((s) => !changedSlots.has(s.slot));
  t.ok(moved.length > 100, `${moved.length} recorded flows hash to a changed slot`);
  const lost = moved.filter((s) => {
    const r = dp.run(flowFrame({ ...s.f, flags: TCP_ACK }));
    return dp.backendByMac(r.out.subarray(0, 6))?.index !== s.backend;
  });
  t.equal(lost.length, 0, 'their ACKs still go to the backend their SYN went to');
  const lostToo = stayed.filter((s) => {
    const r = dp.run(flowFrame({ ...s.f, flags: TCP_PSH | TCP_ACK, payload: Buffer.from('x') }));
    return dp.backendByMac(r.out.subarray(0, 6))?.index !== s.backend;
  });
  t.equal(lostToo.length, 0, 'flows on unchanged slots stay too');

  // a new flow hashing to a changed slot goes to the new table's backend
  let newFlows = 0;
  const wrongNew: string[] = [];
  for (let i = 0; newFlows < 200 && i < 100000; i++) {
    const f: FlowFrame = { src: randomV4(rand), dst: VIP.web, proto: 'tcp', sport: randomPort(rand), dport: 80, flags: TCP_SYN };
    const slot = ringSlot(hashFlow(flowOf(f)), newTable.length);
    if (!changedSlots.has(slot)) continue;
    newFlows++;
    const r = dp.run(flowFrame(f));
    const b = dp.backendByMac(r.out.subarray(0, 6))?.index;
    if (b !== newTable[slot] || b === oldTable[slot]) wrongNew.push(`${f.src}:${f.sport}: ${b}, table says ${newTable[slot]}`);
    if (dp.conn(flowOf(f))?.backend !== newTable[slot]) wrongNew.push(`${f.src}:${f.sport}: recorded with ${dp.conn(flowOf(f))?.backend}`);
  }
  t.equal(newFlows, 200, '200 new flows on changed slots');
  t.same(wrongNew.slice(0, 5), [], 'new flows on changed slots go to (and are recorded with) the new table\'s backend');

  // the same slot, two flows: the old one on its recorded backend, a new one on the table's
  const pair = moved[0]!;
  let twin: FlowFrame | undefined;
  for (let p = 1024; p < 65536 && !twin; p++) {
    const f = { ...pair.f, sport: p };
    if (p !== pair.f.sport && ringSlot(hashFlow(flowOf(f)), newTable.length) === pair.slot) twin = f;
  }
  t.ok(twin, 'found a new flow on the same slot as a recorded one');
  if (twin) {
    const r1 = dp.run(flowFrame({ ...pair.f, flags: TCP_ACK }));
    const r2 = dp.run(flowFrame({ ...twin, flags: TCP_SYN }));
    t.equal(dp.backendByMac(r1.out.subarray(0, 6))?.index, pair.backend, 'the recorded flow: its old backend');
    t.equal(dp.backendByMac(r2.out.subarray(0, 6))?.index, newTable[pair.slot], 'the new flow on the same slot: the new backend');
    t.not(pair.backend, newTable[pair.slot]);
    // ICMP errors about the recorded flow follow it too
    const icmp = icmpErrorFrame({ router: '203.0.113.1', vip: VIP.web, vport: 80, client: pair.f.src, cport: pair.f.sport, proto: 'tcp' });
    const r3 = dp.run(icmp);
    t.equal(r3.out.toString('hex'), forwarded(icmp, macOf(dp, pair.backend)).toString('hex'), 'an ICMP error about the recorded flow goes to its old backend');
  }

  // a backend gone: its recorded flows are rescheduled to the table's backend
  const victimIndex = dp.backendIndex('web', '10.200.0.11');
  const orphans = moved.filter((s) => s.backend === victimIndex && newTable[s.slot] !== victimIndex);
  t.ok(orphans.length > 10, `${orphans.length} moved flows were on ${victimIndex}`);
  dp.clearBackend(victimIndex);
  const wrongOrphans = orphans.filter((s) => {
    const r = dp.run(flowFrame({ ...s.f, flags: TCP_ACK }));
    return r.verdict !== 'TX' || dp.backendByMac(r.out.subarray(0, 6))?.index !== newTable[s.slot] || dp.conn(flowOf(s.f))?.backend !== newTable[s.slot];
  });
  t.equal(wrongOrphans.length, 0, 'flows of a removed backend go to the table\'s backend and are recorded with it');
  t.end();
});

t.test('drain (weight 0): no new flows, established flows stay', (t) => {
  const dp = fresh(t);
  const rand = prng(0x5eed0011);
  const drainedIndex = dp.backendIndex('web', '10.200.0.12');
  const on: FlowFrame[] = [];
  while (on.length < 300) {
    const f: FlowFrame = { src: randomV4(rand), dst: VIP.web, proto: 'tcp', sport: randomPort(rand), dport: 80, flags: TCP_SYN };
    const r = dp.run(flowFrame(f));
    if (dp.backendByMac(r.out.subarray(0, 6))?.index === drainedIndex) on.push(f);
  }
  dp.update(withWeights('web', [1, 0, 1]));
  t.notOk([...serviceRing(dp.service('web'))].includes(drainedIndex), 'the drained backend has no slot left');
  const strayed = on.filter((f) => dp.backendByMac(dp.run(flowFrame({ ...f, flags: TCP_ACK })).out.subarray(0, 6))?.index !== drainedIndex);
  t.equal(strayed.length, 0, '300 established flows stay on the drained backend');
  let reached = 0;
  for (let i = 0; i < 2000; i++) {
    const r = dp.run(flowFrame({ src: randomV4(rand), dst: VIP.web, proto: 'tcp', sport: randomPort(rand), dport: 80, flags: TCP_SYN }));
    if (dp.backendByMac(r.out.subarray(0, 6))?.index === drainedIndex) reached++;
  }
  t.equal(reached, 0, 'no new flow reaches it');
  t.end();
});

t.test('a reload that reuses the maps keeps established flows', (t) => {
  const first = fresh(t);
  const rand = prng(0x5eed0012);
  const flows: Array<{ f: FlowFrame; backend: number }> = [];
  for (let i = 0; i < 2000; i++) {
    const f: FlowFrame = { src: randomV6(rand), dst: VIP.web6, proto: 'tcp', sport: randomPort(rand), dport: 80, flags: TCP_SYN };
    flows.push({ f, backend: first.backendByMac(first.run(flowFrame(f)).out.subarray(0, 6))?.index ?? -1 });
  }
  // web6 1,1,2 -> 3,1,1, as `xdpvs load` of an edited file: a new program (same generated code,
  // so the same object), the persistent maps reused, the tables marked against the old ones
  const changed = buildTestProgram(withWeights('web6', [3, 1, 1]), { previous: first.allocation });
  t.teardown(() => changed.cleanup());
  const second = loadTestDatapath(changed, { reuse: first.dp, previousRings: first.dp.rings });
  t.teardown(() => second.close());
  first.close();
  const oldTable = serviceRing(first.service('web6'));
  const newTable = serviceRing(second.service('web6'));
  const moved = flows.filter(({ f }) => {
    const slot = ringSlot(hashFlow(flowOf(f)), newTable.length);
    return oldTable[slot] !== newTable[slot];
  });
  t.ok(moved.length > 100, `${moved.length} flows hash to a changed slot`);
  const strayed = flows.filter(({ f, backend }) => second.backendByMac(second.run(flowFrame({ ...f, flags: TCP_ACK })).out.subarray(0, 6))?.index !== backend);
  t.equal(strayed.length, 0, 'every established flow keeps its backend after the reload');
  t.equal(second.backendStats(second.backendIndex('web6', 'fd00:200::11')).connections > 0, true, 'counters carried over');
  t.end();
});

t.test('a recorded flow idle for longer than its timeout is scheduled afresh', (t) => {
  const dp = fresh(t);
  const rand = prng(0x5eed0013);
  // flows whose slot changes when web's weights go 1,2,1 -> 1,2,3, recorded before the change
  const oldTable = serviceRing(dp.service('web'));
  const recorded: Array<{ f: FlowFrame; backend: number; slot: number }> = [];
  for (let i = 0; i < 3000; i++) {
    const f: FlowFrame = { src: randomV4(rand), dst: VIP.web, proto: 'tcp', sport: randomPort(rand), dport: 80, flags: TCP_SYN };
    const r = dp.run(flowFrame(f));
    recorded.push({ f, backend: dp.backendByMac(r.out.subarray(0, 6))?.index ?? -1, slot: ringSlot(hashFlow(flowOf(f)), oldTable.length) });
  }
  dp.update(withWeights('web', [1, 2, 3]));
  const newTable = serviceRing(dp.service('web'));
  const moved = recorded.filter((s) => newTable[s.slot] !== s.backend);
  t.ok(moved.length >= 8, `${moved.length} recorded flows would move`);
  const S = 1_000_000_000n;
  const age = (flow: Flow, seconds: bigint) => {
    const key = encodeFlow(flow);
    const c = decodeConn(dp.dp.maps.conns.lookup(key)!);
    dp.dp.maps.conns.update(key, encodeConn({ ...c, lastSeenNs: c.lastSeenNs - seconds * S }));
  };
  const ack = (f: FlowFrame) => dp.backendByMac(dp.run(flowFrame({ ...f, flags: TCP_ACK })).out.subarray(0, 6))?.index;
  const [a, b, c, d] = moved;
  // TCP established: 900 s (ipvsadm --set's default)
  age(flowOf(a!.f), 890n);
  t.equal(ack(a!.f), a!.backend, 'idle 890 s: still on its backend');
  age(flowOf(b!.f), 910n);
  t.equal(ack(b!.f), newTable[b!.slot], 'idle 910 s: the table\'s backend');
  t.equal(dp.conn(flowOf(b!.f))?.backend, newTable[b!.slot], 'and recorded with it');
  // after FIN: 120 s
  t.equal(dp.backendByMac(dp.run(flowFrame({ ...c!.f, flags: TCP_FIN | TCP_ACK })).out.subarray(0, 6))?.index, c!.backend, 'a FIN goes to the recorded backend');
  age(flowOf(c!.f), 110n);
  t.equal(ack(c!.f), c!.backend, 'closing, idle 110 s: still on its backend');
  t.equal(dp.backendByMac(dp.run(flowFrame({ ...d!.f, flags: TCP_RST })).out.subarray(0, 6))?.index, d!.backend, 'an RST goes to the recorded backend');
  age(flowOf(d!.f), 130n);
  t.equal(ack(d!.f), newTable[d!.slot], 'closing, idle 130 s: the table\'s backend');

  // UDP: 300 s
  const dnsOld = serviceRing(dp.service('dns'));
  const datagrams: Array<{ f: FlowFrame; backend: number; slot: number }> = [];
  for (let i = 0; i < 500; i++) {
    const f: FlowFrame = { src: randomV4(rand), dst: VIP.dns, proto: 'udp', sport: randomPort(rand), dport: 53 };
    const r = dp.run(flowFrame(f));
    datagrams.push({ f, backend: dp.backendByMac(r.out.subarray(0, 6))?.index ?? -1, slot: ringSlot(hashFlow(flowOf(f)), dnsOld.length) });
  }
  dp.update(withWeights('dns', [1, 3]));
  const dnsNew = serviceRing(dp.service('dns'));
  const [u, v] = datagrams.filter((x) => dnsNew[x.slot] !== x.backend);
  const again = (f: FlowFrame) => dp.backendByMac(dp.run(flowFrame(f)).out.subarray(0, 6))?.index;
  age(flowOf(u!.f), 290n);
  t.equal(again(u!.f), u!.backend, 'UDP, idle 290 s: still on its backend');
  age(flowOf(v!.f), 310n);
  t.equal(again(v!.f), dnsNew[v!.slot], 'UDP, idle 310 s: the table\'s backend');
  t.end();
});

t.test('a table that changes size class keeps established flows', (t) => {
  const first = fresh(t);
  const rand = prng(0x5eed0014);
  const flows: Array<{ f: FlowFrame; backend: number }> = [];
  for (let i = 0; i < 2000; i++) {
    const f: FlowFrame = { src: randomV4(rand), dst: VIP.web, proto: 'tcp', sport: randomPort(rand), dport: 80, flags: TCP_SYN };
    flows.push({ f, backend: first.backendByMac(first.run(flowFrame(f)).out.subarray(0, 6))?.index ?? -1 });
  }
  // web grows from 3 to 12 backends: its table moves to the next size class (1021 -> 2039 slots)
  const grown = JSON.parse(JSON.stringify(SERVICES)) as typeof SERVICES;
  const web = grown.services.find((s) => s.name === 'web')!;
  for (let i = 4; i <= 12; i++) web.backends.push({ ip: `10.200.0.${10 + i}`, weight: 1, mac: mac(1, 0x10 + i) });
  const changed = buildTestProgram(grown, { previous: first.allocation });
  t.teardown(() => changed.cleanup());
  const second = loadTestDatapath(changed, { reuse: first.dp, previousRings: first.dp.rings });
  t.teardown(() => second.close());
  t.not(second.service('web').ringClass, first.service('web').ringClass, 'web changed its table\'s size class');
  const installed = second.installedRing('web');
  t.equal(installed.length, 2039);
  t.same([...installed].filter((e) => (e & RING_DIRTY) === 0), [], 'every slot of the new table is marked dirty');
  const strayed = flows.filter(({ f, backend }) => second.backendByMac(second.run(flowFrame({ ...f, flags: TCP_ACK })).out.subarray(0, 6))?.index !== backend);
  t.equal(strayed.length, 0, 'every established flow keeps its backend');
  t.end();
});

t.test('with many VIPs (a partitioned match), every VIP reaches its service and nothing else does', (t) => {
  const rand = prng(0x5eed0015);
  const vips4 = new Set<string>();
  while (vips4.size < 600) vips4.add(`10.${rand() & 0xff}.${rand() & 0xff}.${1 + (rand() % 254)}`);
  const vips6 = new Set<string>();
  // pairs that share the last word, so one switch case holds two VIPs
  while (vips6.size < 600) {
    const last = (rand() & 0xffff).toString(16);
    vips6.add(`fd00:${(rand() & 0xffff).toString(16)}::${last}`);
    vips6.add(`fd01:${(rand() & 0xffff).toString(16)}::${last}`);
  }
  const services = [...vips4, ...vips6].map((vip, i) => ({
    name: `s${i}`,
    vip,
    port: i % 5 === 0 ? 0 : 80 + (i % 3),
    protocol: i % 4 === 1 ? 'udp' : 'tcp',
    healthCheck: { type: 'none' },
    backends: [{ ip: isV6(vip) ? 'fd02::1' : '10.255.0.1', mac: `02:01:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}:00:01` }],
  }));
  const many = buildTestProgram({ connTableSize: 65536, services });
  t.teardown(() => many.cleanup());
  const dp = loadTestDatapath(many);
  t.teardown(() => dp.close());
  const c = fs.readFileSync(path.join(many.dir, 'xdpvs.c'), 'utf8');
  t.ok(/xdpvs_match_ipv4_2\b/.test(c) && /xdpvs_match_ipv6_1\b/.test(c), 'the generated match is split into parts');

  const wrong: string[] = [];
  services.forEach((s, i) => {
    const f: FlowFrame = { src: isV6(s.vip) ? '2001:db8::1' : '192.0.2.1', dst: s.vip, proto: s.protocol as 'tcp' | 'udp', sport: 40000 + (i % 1000), dport: s.port === 0 ? 1000 + i : s.port };
    const frame = flowFrame(f);
    const r = dp.run(frame);
    if (r.verdict !== 'TX' || !r.out.equals(forwarded(frame, macOf(dp, dp.backendIndex(s.name, s.backends[0]!.ip))))) wrong.push(`${s.name} ${s.protocol} ${s.vip}:${f.dport}: ${r.verdict}`);
    // the same VIP, a port (or protocol) no service has
    if (s.port !== 0) {
      const other = dp.run(flowFrame({ ...f, dport: 79 }));
      if (other.verdict !== 'PASS') wrong.push(`${s.vip}:79: ${other.verdict}`);
    }
  });
  t.same(wrong.slice(0, 10), [], `${services.length} services on ${services.length} VIPs: each forwarded to its own backend`);

  const strays: string[] = [];
  for (let i = 0; i < 3000; i++) {
    const v4 = `10.${rand() & 0xff}.${rand() & 0xff}.${1 + (rand() % 254)}`;
    const v6 = `fd00:${(rand() & 0xffff).toString(16)}::${(rand() & 0xffff).toString(16)}`;
    for (const dst of [v4, v6]) {
      if (vips4.has(dst) || vips6.has(dst)) continue;
      const r = dp.run(flowFrame({ src: isV6(dst) ? '2001:db8::1' : '192.0.2.1', dst, proto: 'tcp', sport: 40000, dport: 80 }));
      if (r.verdict !== 'PASS') strays.push(`${dst}: ${r.verdict}`);
    }
  }
  t.same(strays.slice(0, 10), [], 'random other addresses are passed');
  t.end();
});
