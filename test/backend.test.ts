import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BpfMap, BpfProgram } from '../src/libbpf.js';
import { BACKEND_PRESENT, decodeBackend, u32Key } from '../src/abi.js';
import { readRing } from '../src/runtime/datapath.js';
import { editServices, saveToFile } from '../src/runtime/backend.js';
import { formatMacChange, macChanges } from '../src/runtime/macs.js';
import { RING_BACKEND_MASK, RING_SIZES } from '../src/sched/ring.js';
import { flowFrame, TCP_ACK, TCP_FIN, TCP_SYN } from '../src/net/frames.js';
import { UserError } from '../src/errors.js';
import { TestNetns } from './helpers/netns.js';

/*
 * `xdpvs backend add|remove|set|drain` on a real veth in native mode: what each command does to
 * `status --json`, the backends map, the service's scheduling table and the services file; that
 * changes within a table's size class keep the running program (a new table is swapped in) and
 * a change of size class replaces it; that a drained backend keeps its flows and gets no new one;
 * every error; and the MAC-change notice of `load` and `backend`.
 */
const ns = new TestNetns(`xdpvs-bk-${process.pid}`);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdpvs-bk-'));
t.teardown(() => {
  ns.destroy();
  fs.rmSync(dir, { recursive: true, force: true });
});

const mac = (n: number) => `02:00:00:00:00:${String(n).padStart(2, '0')}`;
const backend = (n: number, extra: object = {}) => ({ ip: `10.77.0.${n}`, weight: 1, mac: mac(n), ...extra });
const fileDoc = {
  $schema: './node_modules/xdpvs/schema/services.schema.json',
  services: [
    { name: 'web', vip: '10.77.0.100', port: 80, protocol: 'tcp', backends: [backend(11), backend(12), backend(13)], healthCheck: { type: 'none' } },
    // ten backends: the largest count of the smallest table (1021 slots, >= 100 per backend)
    { name: 'dns', vip: '10.77.0.101', port: 53, protocol: 'udp', backends: Array.from({ length: 10 }, (_, i) => backend(11 + i)), healthCheck: { type: 'none' } },
  ],
  timeouts: { tcp: 900, tcpFin: 120, udp: 300 },
  connTableSize: 4096,
};
const file = path.join(dir, 'services.json');
fs.writeFileSync(file, JSON.stringify(fileDoc, null, 2) + '\n');

const pins = () => path.join(ns.pinRoot, 'xva');
const progId = () => Number(/prog\/xdp id (\d+)/.exec(ns.ip('link', 'show', 'dev', 'xva').stdout)?.[1] ?? 0);
const stateText = () => fs.readFileSync(path.join(ns.runRoot, 'xva', 'state.json'), 'utf8');
const state = () => JSON.parse(stateText()) as { progId: number; allocation: { services: Record<string, number>; backends: Record<string, number> }; services: typeof fileDoc };
const readFile = () => JSON.parse(fs.readFileSync(file, 'utf8')) as typeof fileDoc;
const withMap = <T>(name: string, fn: (m: BpfMap) => T): T => {
  const m = BpfMap.fromPin(path.join(pins(), name));
  try {
    return fn(m);
  } finally {
    m.close();
  }
};

interface StatusJson {
  programId: number;
  services: Array<{ name: string; backends: Array<{ ip: string; weight: number; state: string; mac: string }> }>;
}
function status(): StatusJson {
  const r = ns.xdpvs(['status', '-i', 'xva', '--json']);
  if (r.status !== 0) throw new Error(`status: ${r.stderr}`);
  return JSON.parse(r.stdout) as StatusJson;
}
const statusOf = (service: string) => status().services.find((s) => s.name === service)!.backends;

const webKey = (ip: string) => `tcp/10.77.0.100/80/${ip}`;
const indexOf = (ip: string) => state().allocation.backends[webKey(ip)]!;
const webId = () => state().allocation.services['tcp/10.77.0.100/80']!;
/** web's table: in whichever map of tables holds it */
function webTable(): Uint32Array {
  for (const size of RING_SIZES) {
    if (!fs.existsSync(path.join(pins(), `rings_${size}`))) continue;
    const table = withMap(`rings_${size}`, (m) => readRing(m, webId()));
    if (table) return table;
  }
  throw new Error('web has no table');
}
const share = (table: Uint32Array, index: number) => table.filter((e) => (e & RING_BACKEND_MASK) === index).length / table.length;
const backendEntry = (index: number) => withMap('backends', (m) => decodeBackend(m.lookup(u32Key(index))!));

/** Frames through the pinned program (BPF_PROG_TEST_RUN): the MAC it sends each one to. */
function send(sport: number, flags: number): string {
  const prog = BpfProgram.fromPin(path.join(pins(), 'prog'));
  try {
    const r = prog.testRun(flowFrame({ src: '10.77.0.2', dst: '10.77.0.100', proto: 'tcp', sport, dport: 80, flags }));
    return [...r.data.subarray(0, 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
  } finally {
    prog.close();
  }
}

const run = (...args: string[]) => ns.xdpvs(['backend', ...args]);
/** client ports of flows started on 10.77.0.12 before it was drained */
const ports: number[] = [];
const SAME = /: updated: same program, new tables \(program \d+\); saved to /;

t.test('load', (t) => {
  const r = ns.xdpvs(['load', file, '-i', 'xva']);
  t.equal(r.status, 0, r.stderr);
  t.end();
});

t.test('add: a new backend in the table, under the same program; the file says so', (t) => {
  const prog = progId();
  const r = run('add', 'web', '10.77.0.14', '--weight', '2', '--mac', '02:00:00:00:00:14', '-i', 'xva');
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^added 10\.77\.0\.14 to web \(weight 2, MAC 02:00:00:00:00:14\) on xva: updated: same program, new tables \(program \d+\); saved to .*services\.json\n$/);
  t.equal(progId(), prog, 'the program is the same');
  t.same(statusOf('web').map((b) => [b.ip, b.weight, b.state]), [['10.77.0.11', 1, 'up'], ['10.77.0.12', 1, 'up'], ['10.77.0.13', 1, 'up'], ['10.77.0.14', 2, 'up']], 'status lists it');
  const entry = backendEntry(indexOf('10.77.0.14'));
  t.equal(entry.mac.toString('hex'), '020000000014', 'its MAC is in the backends map');
  t.equal(entry.flags & BACKEND_PRESENT, BACKEND_PRESENT, 'present');
  t.equal(entry.service, webId(), 'for web');
  // a weighted Maglev table shares its slots as the weights do, within a few slots
  const table = webTable();
  t.equal(table.length, 1021, 'still the 1021-slot class');
  t.ok(Math.abs(share(table, indexOf('10.77.0.14')) - 2 / 5) < 0.03, `it holds ${(100 * share(table, indexOf('10.77.0.14'))).toFixed(1)}% of the table (weight 2 of 5)`);
  const saved = readFile();
  t.same(saved.services[0]!.backends.at(-1), { ip: '10.77.0.14', weight: 2, mac: '02:00:00:00:00:14' }, 'written into the services file');
  t.same({ ...saved, services: [{ ...saved.services[0]!, backends: saved.services[0]!.backends.slice(0, 3) }, saved.services[1]] }, fileDoc, 'the rest of the file is as it was');
  t.equal(fs.readFileSync(file, 'utf8'), JSON.stringify(saved, null, 2) + '\n', '2-space JSON');
  t.end();
});

t.test('set --weight: the table follows, the program stays', (t) => {
  const prog = progId();
  const r = run('set', 'web', '10.77.0.11', '--weight', '3', '-i', 'xva');
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^set 10\.77\.0\.11 in web: weight 1 -> 3 on xva/);
  t.match(r.stdout, SAME);
  t.equal(progId(), prog, 'the program is the same');
  t.equal(statusOf('web')[0]!.weight, 3, 'status says weight 3');
  t.ok(Math.abs(share(webTable(), indexOf('10.77.0.11')) - 3 / 7) < 0.03, 'it holds 3/7 of the table');
  t.equal(readFile().services[0]!.backends[0]!.weight, 3, 'the file says weight 3');
  t.end();
});

t.test('--no-save: applied and recorded, the file untouched', (t) => {
  const before = fs.readFileSync(file, 'utf8');
  const r = run('set', 'web', '10.77.0.13', '--weight', '2', '--no-save', '-i', 'xva');
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /not saved to .*services\.json \(--no-save\)$/m);
  t.equal(statusOf('web')[2]!.weight, 2, 'status says weight 2');
  t.equal(state().services.services[0]!.backends[2]!.weight, 2, 'the state records it');
  t.equal(fs.readFileSync(file, 'utf8'), before, 'the file is unchanged');
  // put it back, saved, so the file and the state agree again
  t.equal(run('set', 'web', '10.77.0.13', '--weight', '1', '-i', 'xva').status, 0);
  t.end();
});

t.test('drain: no new flow goes to the backend, its established flows stay', (t) => {
  const prog = progId();
  const drained = mac(12);
  // flows that land on 10.77.0.12, started by a SYN through the pinned program
  for (let p = 20000; ports.length < 3 && p < 21000; p++) if (send(p, TCP_SYN) === drained) ports.push(p);
  t.equal(ports.length, 3, 'three flows started on 10.77.0.12');
  // and one that started there and ended (the client's FIN): the client may reuse its port
  let closed = 0;
  for (let p = 21000; closed === 0 && p < 22000; p++) if (send(p, TCP_SYN) === drained) closed = p;
  t.equal(send(closed, TCP_FIN | TCP_ACK), drained, 'a fourth flow started and ended on 10.77.0.12');

  const r = run('drain', 'web', '10.77.0.12', '-i', 'xva');
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^drained 10\.77\.0\.12 in web \(weight 1 -> 0\) on xva/);
  t.match(r.stdout, SAME);
  t.equal(progId(), prog, 'the program is the same');
  const b = statusOf('web')[1]!;
  t.same([b.ip, b.weight, b.state], ['10.77.0.12', 0, 'draining'], 'status: draining, weight 0');
  t.equal(share(webTable(), indexOf('10.77.0.12')), 0, 'it has no slot in the table');
  t.equal(backendEntry(indexOf('10.77.0.12')).flags & BACKEND_PRESENT, BACKEND_PRESENT, 'its backends entry stays');
  t.equal(readFile().services[0]!.backends[1]!.weight, 0, 'the file says weight 0');

  t.same(ports.map((p) => send(p, TCP_ACK)), ports.map(() => drained), 'established flows still go to 10.77.0.12');
  const fresh = Array.from({ length: 300 }, (_, i) => send(30000 + i, TCP_SYN));
  t.notOk(fresh.includes(drained), 'none of 300 new flows goes to it');
  t.same([...new Set(fresh)].sort(), [mac(11), mac(13), '02:00:00:00:00:14'], 'they go to the others');
  t.same(ports.map((p) => send(p, TCP_ACK)), ports.map(() => drained), 'and the established flows are still there');
  // A SYN on the 5-tuple of the flow that ended is a new connection (the client reused its
  // port, as Linux does seconds later), so it is scheduled afresh, as IPVS's conn_reuse_mode
  // does, and its next packets follow it.
  const reused = send(closed, TCP_SYN);
  t.not(reused, drained, 'a new connection on the port of a closed flow does not go to the drained backend');
  t.equal(send(closed, TCP_ACK), reused, 'and its next packet goes where its SYN went');
  t.end();
});

t.test('remove: the backend is gone, its flows are rescheduled on their next packet', (t) => {
  const prog = progId();
  const r = run('remove', 'web', '10.77.0.12', '-i', 'xva');
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^removed 10\.77\.0\.12 from web on xva/);
  t.match(r.stdout, SAME);
  t.equal(progId(), prog, 'the program is the same');
  t.same(statusOf('web').map((b) => b.ip), ['10.77.0.11', '10.77.0.13', '10.77.0.14'], 'status no longer lists it');
  t.notOk(readFile().services[0]!.backends.some((b) => b.ip === '10.77.0.12'), 'nor does the file');
  t.notOk(webKey('10.77.0.12') in state().allocation.backends, 'it has no index any more');
  // its entry in the backends map is cleared, so a flow recorded with it finds no backend and
  // takes the table's choice: a TCP flow then reaches a server that does not know it (a reset)
  const acks = ports.map((p) => send(p, TCP_ACK));
  t.ok(acks.length > 0 && acks.every((a) => [mac(11), mac(13), mac(14)].includes(a)), `the flows of the removed backend go to the others now (${acks.join(', ')})`);
  t.end();
});

t.test('a change of table size class recompiles and replaces the program atomically', (t) => {
  const prog = progId();
  const conns = withMap('conns', (m) => m.info().id);
  const r = run('add', 'dns', '10.77.0.21', '--mac', mac(21), '-i', 'xva');
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^added 10\.77\.0\.21 to dns \(weight 1, MAC 02:00:00:00:00:21\) on xva: reloaded: its table grows from 1021 to 2039 slots, so a new program \(\d+\) replaced program \d+ atomically; saved to /);
  t.not(progId(), prog, 'a new program runs');
  t.equal(withMap('conns', (m) => m.info().id), conns, 'with the same connection table');
  t.ok(fs.existsSync(path.join(pins(), 'rings_2039')), 'and a map of 2039-slot tables');
  t.equal(statusOf('dns').length, 11, 'status lists 11 backends of dns');
  const prog2 = progId();
  const back = run('remove', 'dns', '10.77.0.21', '-i', 'xva');
  t.equal(back.status, 0, back.stderr);
  t.match(back.stdout, /reloaded: its table shrinks from 2039 to 1021 slots/);
  t.not(progId(), prog2, 'replaced again');
  t.notOk(fs.existsSync(path.join(pins(), 'rings_2039')), 'the 2039-slot tables are gone');
  t.end();
});

t.test('errors: each says why, and nothing changes', (t) => {
  const before = { prog: progId(), state: stateText(), file: fs.readFileSync(file, 'utf8') };
  const cases: Array<[string, string[], RegExp]> = [
    ['an unknown service', ['add', 'www', '10.77.0.15', '-i', 'xva'], /^xdpvs: no service named "www" on xva\n  services: web, dns\n$/],
    ['remove of an unknown backend', ['remove', 'web', '10.77.0.99', '-i', 'xva'], /^xdpvs: web has no backend 10\.77\.0\.99 on xva\n  its backends: 10\.77\.0\.11, 10\.77\.0\.13, 10\.77\.0\.14\n$/],
    ['set of an unknown backend', ['set', 'web', '10.77.0.99', '--weight', '2', '-i', 'xva'], /^xdpvs: web has no backend 10\.77\.0\.99 on xva\n/],
    ['drain of an unknown backend', ['drain', 'web', '10.77.0.99', '-i', 'xva'], /^xdpvs: web has no backend 10\.77\.0\.99 on xva\n/],
    ['a duplicate add', ['add', 'web', '10.77.0.13', '-i', 'xva'], /^xdpvs: web already has the backend 10\.77\.0\.13 on xva \(weight 1\)\n  to change it: xdpvs backend set -i xva web 10\.77\.0\.13 --weight W\n$/],
    ['nothing loaded on the interface', ['add', 'web', '10.77.0.15', '-i', 'xvb'], /^xdpvs: nothing is loaded on xvb\n  load services first: xdpvs load FILE -i xvb\n$/],
    ['an address that is none', ['add', 'web', '10.77.0.300', '-i', 'xva'], /^xdpvs: "10\.77\.0\.300" is not an IPv4 or IPv6 address\n$/],
    ['a weight out of range', ['add', 'web', '10.77.0.15', '--weight', '70000', '--mac', mac(15), '-i', 'xva'], /^xdpvs: xva: the services after `backend add`: 1 error\n  services\[0\]\.backends\[3\]\.weight: 70000 is out of range/],
    ['a bad MAC', ['set', 'web', '10.77.0.11', '--mac', '02:00:00', '-i', 'xva'], /^xdpvs: xva: the services after `backend set`: 1 error\n  services\[0\]\.backends\[0\]\.mac: "02:00:00" is not a MAC address/],
    ['a backend of another family', ['add', 'web', 'fd00::15', '--mac', mac(15), '-i', 'xva'], /^xdpvs: xva: the services after `backend add`: 1 error\n  services\[0\]\.backends\[3\]\.ip: /],
    ['a weight that is no number', ['set', 'web', '10.77.0.11', '--weight', 'heavy', '-i', 'xva'], /--weight <w>' argument 'heavy' is invalid/],
    ['set without a change', ['set', 'web', '10.77.0.11', '-i', 'xva'], /^xdpvs: nothing to set\n  give --weight W and\/or --mac M/],
    ['drain with a weight', ['drain', 'web', '10.77.0.11', '--weight', '2', '-i', 'xva'], /unknown option '--weight'/],
    ['a backend without a MAC', ['add', 'web', '10.77.0.98', '-i', 'xva'], /^xdpvs: no MAC address for 1 backend\(s\) on xva\n  services\[0\]\.backends\[3\] \(web, 10\.77\.0\.98\): not in the neighbour table of xva/],
  ];
  for (const [what, args, message] of cases) {
    const r = run(...args);
    t.not(r.status, 0, `${what}: non-zero exit`);
    t.match(r.stderr, message, `${what}: says why`);
    t.equal(r.stdout, '', `${what}: prints no summary`);
    t.same({ prog: progId(), state: stateText(), file: fs.readFileSync(file, 'utf8') }, before, `${what}: program, state and file as they were`);
  }
  t.end();
});

t.test('a services file that cannot be written: a warning, the change still applies', (t) => {
  const moved = `${file}.moved`;
  fs.renameSync(file, moved);
  try {
    const r = run('set', 'web', '10.77.0.13', '--weight', '4', '-i', 'xva');
    t.equal(r.status, 0, r.stderr);
    t.match(r.stdout, /NOT saved to .*services\.json/);
    t.match(r.stderr, /^xdpvs: warning: could not update .*services\.json: no such file$/im);
    t.match(r.stderr, /a later `xdpvs load .*services\.json` would undo it/);
    t.equal(statusOf('web')[1]!.weight, 4, 'status says weight 4');
  } finally {
    fs.renameSync(moved, file);
  }
  t.equal(readFile().services[0]!.backends[1]!.weight, 1, 'the file still says 1');
  t.end();
});

t.test('a MAC that changes in the neighbour table is noticed, by load and by backend', (t) => {
  ns.ip('neigh', 'replace', '10.77.0.30', 'lladdr', '02:00:00:00:00:30', 'dev', 'xva', 'nud', 'permanent');
  const add = run('add', 'web', '10.77.0.30', '-i', 'xva');
  t.equal(add.status, 0, add.stderr);
  t.match(add.stdout, /^added 10\.77\.0\.30 to web \(weight 1\) on xva/);
  t.same(readFile().services[0]!.backends.at(-1), { ip: '10.77.0.30', weight: 1 }, 'the file holds it without a MAC');
  t.equal(backendEntry(indexOf('10.77.0.30')).mac.toString('hex'), '020000000030', 'its MAC from the neighbour table');

  ns.ip('neigh', 'replace', '10.77.0.30', 'lladdr', '02:00:00:00:00:31', 'dev', 'xva', 'nud', 'permanent');
  const load = ns.xdpvs(['load', file, '-i', 'xva']);
  t.equal(load.status, 0, load.stderr);
  t.match(load.stdout, /^10\.77\.0\.30: MAC changed from 02:00:00:00:00:30 to 02:00:00:00:00:31$/m, 'load says so');
  t.equal(backendEntry(indexOf('10.77.0.30')).mac.toString('hex'), '020000000031', 'and writes the new one');
  t.same(statusOf('web').map((b) => b.weight), [3, 1, 2, 1], 'a load of the file agrees with the backend commands (10.77.0.13 is 1 again, as the file says)');

  ns.ip('neigh', 'replace', '10.77.0.30', 'lladdr', '02:00:00:00:00:32', 'dev', 'xva', 'nud', 'permanent');
  const set = run('set', 'web', '10.77.0.11', '--weight', '2', '-i', 'xva');
  t.equal(set.status, 0, set.stderr);
  t.match(set.stdout, /^10\.77\.0\.30: MAC changed from 02:00:00:00:00:31 to 02:00:00:00:00:32$/m, 'a backend command says so too');
  const quiet = ns.xdpvs(['load', file, '-i', 'xva']);
  t.notMatch(quiet.stdout, /MAC changed/, 'no change, no notice');
  t.end();
});

t.test('a program that is not attached any more is not changed behind the user\'s back', (t) => {
  t.equal(ns.ip('link', 'set', 'dev', 'xva', 'xdp', 'off').status, 0);
  const r = run('drain', 'web', '10.77.0.11', '-i', 'xva');
  t.not(r.status, 0);
  t.match(r.stderr, /^xdpvs: the program xdpvs loaded on xva \(id \d+\) is not attached any more\n  load the services again: xdpvs load .*services\.json -i xva\n$/);
  t.equal(ns.xdpvs(['unload', '-i', 'xva']).status, 0, 'unload cleans up');
  t.end();
});

t.test('editServices and saveToFile, without a kernel', (t) => {
  const doc = { services: [{ name: 'a', backends: [{ ip: 'fd00::0011', weight: 2 }] }] };
  const set = editServices(doc, { action: 'set', service: 'a', ip: 'fd00::11', mac: '02:00:00:00:00:AA' }, 'here');
  t.same(set.raw, { services: [{ name: 'a', backends: [{ ip: 'fd00::0011', weight: 2, mac: '02:00:00:00:00:aa' }] }] }, 'IPs compare in canonical form; the MAC is written canonical');
  t.same(doc.services[0]!.backends[0], { ip: 'fd00::0011', weight: 2 }, 'the input is not modified');
  t.throws(() => editServices({}, { action: 'drain', service: 'a', ip: '10.0.0.1' }, 'in x.json'), new UserError('no services in x.json: the document has no "services" array'));
  t.throws(() => editServices({ services: [] }, { action: 'drain', service: 'a', ip: '10.0.0.1' }, 'here'), { message: 'no service named "a" here', details: ['there are no services'] });

  const f = path.join(dir, 'other.json');
  fs.writeFileSync(f, '{"services":[{"name":"a","backends":[]}],"extra":{"kept":true}}', { mode: 0o640 });
  t.same(saveToFile(f, { action: 'add', service: 'a', ip: '10.0.0.1' }), { file: f, written: true });
  t.equal(fs.readFileSync(f, 'utf8'), '{\n  "services": [\n    {\n      "name": "a",\n      "backends": [\n        {\n          "ip": "10.0.0.1",\n          "weight": 1\n        }\n      ]\n    }\n  ],\n  "extra": {\n    "kept": true\n  }\n}\n');
  t.equal(fs.statSync(f).mode & 0o777, 0o640, 'the mode is kept');
  t.match(saveToFile(f, { action: 'add', service: 'a', ip: '10.0.0.1' }), { written: false, warning: /already has the backend 10\.0\.0\.1 in .*other\.json/ }, 'a file that already has it: a warning');
  t.same(fs.readdirSync(dir).filter((n) => n.includes('xdpvs-')), [], 'no temporary file left');
  t.end();
});

t.test('macChanges', (t) => {
  const prev = { 'tcp/10.0.0.100/80/10.0.0.11': '02:00:00:00:00:11', 'udp/10.0.0.100/53/10.0.0.11': '02:00:00:00:00:11', 'tcp/10.0.0.100/80/fd00::12': '02:00:00:00:00:12', 'tcp/10.0.0.100/80/10.0.0.13': '02:00:00:00:00:13' };
  const next = { 'tcp/10.0.0.100/80/10.0.0.11': '02:00:00:00:00:21', 'udp/10.0.0.100/53/10.0.0.11': '02:00:00:00:00:21', 'tcp/10.0.0.100/80/fd00::12': '02:00:00:00:00:12', 'tcp/10.0.0.100/80/10.0.0.14': '02:00:00:00:00:14' };
  const changes = macChanges(prev, next);
  t.same(changes.map(formatMacChange), ['10.0.0.11: MAC changed from 02:00:00:00:00:11 to 02:00:00:00:00:21'], 'one line per real server; new and removed backends are no change');
  t.equal(changes[0]!.keys.length, 2, 'it names both services\' backends');
  t.same(macChanges(undefined, next), [], 'nothing before: nothing changed');
  t.end();
});
