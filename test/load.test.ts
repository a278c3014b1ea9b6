import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BpfMap } from '../src/libbpf.js';
import { decodeBackend, decodeConn, decodeFlow, encodeConn, encodeFlow, u32Key } from '../src/abi.js';
import { readRing } from '../src/runtime/datapath.js';
import { hashFlow, ringSlot } from '../src/sched/hash.js';
import { RING_DIRTY } from '../src/sched/ring.js';
import { TestNetns } from './helpers/netns.js';

/*
 * The loader on a real veth in native mode: what `load` leaves behind, that a second `load`
 * replaces the program and keeps the maps, and that every way a load can fail leaves the
 * running program and its maps as they were.
 */
const ns = new TestNetns(`xdpvs-load-${process.pid}`);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdpvs-load-'));
t.teardown(() => {
  ns.destroy();
  fs.rmSync(dir, { recursive: true, force: true });
});

const backend = (n: number, mac = true) => ({ ip: `10.77.0.${n}`, weight: 1, ...(mac ? { mac: `02:00:00:00:00:${n}` } : {}) });
const web = (backends: object[]) => ({ name: 'web', vip: '10.77.0.100', port: 80, protocol: 'tcp', backends, healthCheck: { type: 'none' } });
const dns = { name: 'dns', vip: '10.77.0.101', port: 53, protocol: 'udp', backends: [backend(11)], healthCheck: { type: 'none' } };
function servicesFile(name: string, services: object[]): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify({ services }, null, 2));
  return file;
}

const pins = () => path.join(ns.pinRoot, 'xva');
const linkXdp = () => ns.ip('link', 'show', 'dev', 'xva').stdout;
const progId = () => Number(/prog\/xdp id (\d+)/.exec(linkXdp())?.[1] ?? 0);
const mapId = (name: string) => {
  const m = BpfMap.fromPin(path.join(pins(), name));
  try {
    return m.info().id;
  } finally {
    m.close();
  }
};
const withMap = <T>(name: string, fn: (m: BpfMap) => T): T => {
  const m = BpfMap.fromPin(path.join(pins(), name));
  try {
    return fn(m);
  } finally {
    m.close();
  }
};

// a flow recorded in the connection table, as the data path would record it
const flow = encodeFlow({ family: 4, saddr: Buffer.from([10, 77, 0, 2]), daddr: Buffer.from([10, 77, 0, 100]), sport: 40000, dport: 80, proto: 6 });

t.test('load attaches in native mode and pins the program and its maps', (t) => {
  const r = ns.xdpvs(['load', servicesFile('one.json', [web([backend(11), backend(12)])]), '-i', 'xva']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /loaded 1 service with 2 backends on xva \(program \d+, native mode\)/);
  t.match(linkXdp(), / xdp /, 'ip link shows xdp');
  t.notMatch(linkXdp(), /xdpgeneric/, 'not generic');
  t.same(fs.readdirSync(pins()).sort(), ['backend_active', 'backend_stats', 'backends', 'conns', 'persist', 'prog', 'rings_1021', 'totals']);
  t.ok(fs.existsSync(path.join(ns.runRoot, 'xva', 'state.json')), 'state for later commands');
  t.ok(fs.existsSync(path.join(ns.runRoot, 'xva', 'xdpvs.c')), 'the generated C is kept for reading');
  const macs = withMap('backends', (m) => [0, 1].map((i) => decodeBackend(m.lookup(u32Key(i))!).mac.toString('hex')));
  t.same(macs.sort(), ['020000000011', '020000000012'], 'backend MACs from the file');
  withMap('conns', (m) => m.update(flow, encodeConn({ backend: 1, flags: 0, lastSeenNs: 1n })));
  t.end();
});

t.test('a second load replaces the program atomically and keeps maps, flows and ids', (t) => {
  const before = { prog: progId(), conns: mapId('conns'), stats: mapId('backend_stats'), backends: mapId('backends') };
  ns.ip('neigh', 'replace', '10.77.0.14', 'lladdr', '02:00:00:00:00:14', 'dev', 'xva', 'nud', 'permanent');
  const r = ns.xdpvs(['load', servicesFile('two.json', [web([backend(11), backend(12), backend(14, false)]), dns]), '-i', 'xva']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^replaced 2 services with 4 backends/);
  t.not(progId(), before.prog, 'a new program runs');
  t.notMatch(linkXdp(), /xdpgeneric/);
  t.same({ conns: mapId('conns'), stats: mapId('backend_stats'), backends: mapId('backends') }, { conns: before.conns, stats: before.stats, backends: before.backends }, 'the same maps');
  const conn = withMap('conns', (m) => decodeConn(m.lookup(flow)!));
  t.equal(conn.backend, 1, 'the recorded flow is still there');
  // the flow's slot in the new table: when it was marked, the entry got a fresh last-seen time
  const table = withMap('rings_1021', (m) => readRing(m, 0)!);
  const slot = ringSlot(hashFlow(decodeFlow(flow)), table.length);
  t.equal(conn.lastSeenNs > 1n, (table[slot]! & RING_DIRTY) !== 0, 'a flow whose slot is now marked looks alive; others are untouched');
  t.ok(table.some((e) => (e & RING_DIRTY) !== 0), 'slots whose backend changed are marked');
  const mac14 = withMap('backends', (m) => decodeBackend(m.lookup(u32Key(2))!).mac.toString('hex'));
  t.equal(mac14, '020000000014', 'a MAC missing from the file comes from the neighbour table');
  t.end();
});

t.test('a load that changes only backends swaps tables under the running program', (t) => {
  const before = { prog: progId(), rings: mapId('rings_1021'), table: withMap('rings_1021', (m) => readRing(m, 0)!) };
  const r = ns.xdpvs(['load', servicesFile('weights.json', [web([backend(11), { ...backend(12), weight: 3 }, backend(14, false)]), dns]), '-i', 'xva']);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^updated 2 services with 4 backends on xva \(program \d+, native mode; same program, new tables\)/);
  t.equal(progId(), before.prog, 'no new program');
  t.equal(mapId('rings_1021'), before.rings, 'the same map of tables');
  const table = withMap('rings_1021', (m) => readRing(m, 0)!);
  const share = (tab: Uint32Array, b: number) => tab.filter((e) => (e & 0xffffff) === b).length / tab.length;
  t.ok(share(table, 1) > share(before.table, 1) + 0.2, 'the weighted backend got more of the table');
  t.equal(withMap('conns', (m) => decodeConn(m.lookup(flow)!).backend), 1, 'the recorded flow is still there');
  const state = JSON.parse(fs.readFileSync(path.join(ns.runRoot, 'xva', 'state.json'), 'utf8'));
  t.equal(state.services.services[0].backends[1].weight, 3, 'the state records the new weights');
  t.end();
});

t.test('marks no recorded flow needs are cleared at the next apply', (t) => {
  const marked = (tab: Uint32Array) => tab.filter((e) => (e & RING_DIRTY) !== 0).length;
  t.ok(marked(withMap('rings_1021', (m) => readRing(m, 0)!)) > 0, 'the weight change left marks');
  const r = ns.xdpvs(['load', path.join(dir, 'weights.json'), '-i', 'xva']);
  t.equal(r.status, 0, r.stderr);
  const table = withMap('rings_1021', (m) => readRing(m, 0)!);
  const conn = withMap('conns', (m) => decodeConn(m.lookup(flow)!));
  const slot = ringSlot(hashFlow(decodeFlow(flow)), table.length);
  const needed = conn.lastSeenNs > 1n && (table[slot]! & 0xffffff) !== conn.backend ? 1 : 0;
  t.equal(marked(table), needed, 'only the slot a live recorded flow on another backend needs stays marked');
  t.end();
});

t.test('a load that fails changes nothing', async (t) => {
  const good = servicesFile('good.json', [web([backend(11), backend(12)])]);
  const wrapper = path.join(dir, 'clang-verifier-reject');
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec clang -include ${path.resolve('test/fixtures/verifier-reject.h')} "$@"\n`, { mode: 0o755 });
  const failures: Array<[string, string[], Record<string, string>, RegExp]> = [
    ['an invalid file', ['load', servicesFile('bad.json', [web([{ ip: '10.77.0.300', weight: 1 }])]), '-i', 'xva'], {}, /services\[0\]\.backends\[0\]\.ip: "10\.77\.0\.300" is not an IPv4 or IPv6 address/],
    ['a backend without a MAC', ['load', servicesFile('nomac.json', [web([backend(11), backend(99, false)])]), '-i', 'xva'], {}, /services\[0\]\.backends\[1\] \(web, 10\.77\.0\.99\): not in the neighbour table of xva/],
    ['a failed compile', ['load', good, '-i', 'xva'], { XDPVS_CLANG: '/bin/false' }, /clang failed to compile xdpvs\.c/],
    ['a verifier rejection', ['load', good, '-i', 'xva'], { XDPVS_CLANG: wrapper }, /verifier rejected the program[\s\S]*invalid mem access/],
    ['another attach mode', ['load', good, '-i', 'xva', '--mode', 'generic'], {}, /runs xdpvs in native mode/],
    ['an unknown interface', ['load', good, '-i', 'nosuch0'], {}, /nosuch0/],
  ];
  const snapshot = () => ({
    prog: progId(),
    maps: ['conns', 'backend_stats', 'backends', 'rings_1021'].map(mapId),
    flow: withMap('conns', (m) => m.lookup(flow)?.toString('hex')),
    backends: withMap('backends', (m) => [0, 1, 2].map((i) => m.lookup(u32Key(i))!.toString('hex'))),
    state: fs.readFileSync(path.join(ns.runRoot, 'xva', 'state.json'), 'utf8'),
  });
  const before = snapshot();
  for (const [what, args, env, message] of failures) {
    const r = ns.xdpvs(args, env);
    t.not(r.status, 0, `${what}: non-zero exit`);
    t.match(r.stderr, message, `${what}: says why`);
    t.same(snapshot(), before, `${what}: program, maps and state as they were`);
  }
});

t.test('unload detaches and leaves no pin or state behind', (t) => {
  const r = ns.xdpvs(['unload', '-i', 'xva']);
  t.equal(r.status, 0, r.stderr);
  t.notMatch(linkXdp(), /xdp/, 'no program on the interface');
  t.notOk(fs.existsSync(ns.pinRoot), 'no pins');
  t.notOk(fs.existsSync(ns.runRoot), 'no state');
  t.not(ns.xdpvs(['unload', '-i', 'xva']).status, 0, 'unloading twice says nothing is loaded');
  t.end();
});
