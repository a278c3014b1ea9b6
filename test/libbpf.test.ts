// Exercises src/libbpf.ts against the real kernel: needs root, clang, bpffs and `ip`.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  BPF_EXIST,
  BPF_F_INNER_MAP,
  BPF_NOEXIST,
  BpfMap,
  BpfObject,
  BpfProgram,
  LibbpfError,
  VerifierError,
  XdpAction,
  ifindexOf,
  numPossibleCpus,
  withNetns,
  xdpAttach,
  xdpDetach,
  xdpQuery,
} from '../src/libbpf.js';

const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'xdpvs-libbpf-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

function compile(name: string): string {
  const out = path.join(tmp, `${name}.o`);
  execFileSync('clang', ['-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', path.join(fixtures, `${name}.c`), '-o', out], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return out;
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};

const fixtureObj = compile('xdp_fixture');
const badObj = compile('xdp_bad');

// One loaded fixture shared by the subtests (closed at the end).
const obj = BpfObject.open(fixtureObj);
t.teardown(() => obj.close());

t.test('open, find maps and programs, configure, load', (t) => {
  t.same(obj.mapNames().sort(), ['config', 'outer', 'pkt_count', 'table']);
  t.same(obj.programNames().sort(), ['xdp_main', 'xdp_pass']);
  t.same(obj.map('config').spec(), { type: 2, keySize: 4, valueSize: 4, maxEntries: 4, flags: 0 });
  t.throws(() => obj.map('nope'), /no map named 'nope' \(maps: .*table/);
  t.throws(() => obj.program('nope'), /no program named 'nope' \(programs: .*xdp_main/);
  t.throws(() => obj.map('table').fd, /not loaded/);

  obj.map('table').setMaxEntries(1000);
  obj.load();
  t.throws(() => obj.load(), /already loaded/);

  const table = obj.map('table').toMap().info();
  t.equal(table.maxEntries, 1000, 'setMaxEntries before load took effect');
  t.match(table, { name: 'table', type: 1, typeName: 'hash', keySize: 4, valueSize: 8 });
  t.ok(table.id > 0);

  const prog = obj.program('xdp_main').toProgram().info();
  t.match(prog, { name: 'xdp_main', type: 6, typeName: 'xdp' });
  t.match(prog.tag, /^[0-9a-f]{16}$/);
  t.ok(prog.id > 0 && prog.xlatedLen > 0 && prog.jitedLen > 0);
  t.not(obj.program('xdp_main').fd, obj.program('xdp_pass').fd);
  t.end();
});

t.test('map CRUD and iteration', (t) => {
  const table = obj.map('table').toMap();
  table.update(u32(1), u64(100));
  table.update(u32(2), u64(200));
  table.update(u32(3), u64(300));
  t.same(table.lookup(u32(2)), u64(200));
  t.equal(table.lookup(u32(42)), null, 'missing key gives null');

  const dup = t.throws(() => table.update(u32(1), u64(1), BPF_NOEXIST)) as unknown as LibbpfError;
  t.type(dup, LibbpfError);
  t.equal(dup.errno, os.constants.errno.EEXIST);
  t.equal(dup.message, 'bpf_map_update_elem(table): File exists (EEXIST)');
  const missing = t.throws(() => table.update(u32(9), u64(1), BPF_EXIST)) as unknown as LibbpfError;
  t.equal(missing.code, 'ENOENT');
  t.throws(() => table.update(u32(1), u32(1)), /value is 4 bytes, the map's values are 8/);
  t.throws(() => table.lookup(Buffer.alloc(2)), /key is 2 bytes, the map's keys are 4/);

  table.update(u32(3), u64(333), BPF_EXIST);
  t.same(table.lookup(u32(3)), u64(333));
  t.equal(table.delete(u32(2)), true);
  t.equal(table.delete(u32(2)), false, 'deleting a missing key reports false');

  t.same(table.keys().map((k) => k.readUInt32LE()).sort(), [1, 3]);
  t.same(
    table.entries().map(([k, v]) => [k.readUInt32LE(), Number(v.readBigUInt64LE())]).sort((a, b) => a[0]! - b[0]!),
    [
      [1, 100],
      [3, 333],
    ],
  );

  const config = obj.map('config').toMap();
  t.same(config.keys().map((k) => k.readUInt32LE()), [0, 1, 2, 3], 'array keys are all indexes');
  config.update(u32(3), u32(7));
  t.same(
    config.entries().map(([k, v]) => [k.readUInt32LE(), v.readUInt32LE()]),
    [
      [0, 0],
      [1, 0],
      [2, 0],
      [3, 7],
    ],
  );
  const e2big = t.throws(() => config.update(u32(4), u32(1))) as unknown as LibbpfError;
  t.equal(e2big.code, 'E2BIG', 'index past max_entries');
  config.update(u32(3), u32(0));
  for (const k of [1, 3]) table.delete(u32(k));
  t.end();
});

t.test('batch entries on hash maps, updateBatch, created maps', (t) => {
  const table = obj.map('table').toMap();
  const keys = Array.from({ length: 700 }, (_, i) => u32(i * 7 + 1));
  table.updateBatch(
    keys,
    keys.map((k) => u64(k.readUInt32LE() * 3)),
  );
  const got = new Map(table.entries().map(([k, v]) => [k.readUInt32LE(), Number(v.readBigUInt64LE())]));
  t.equal(got.size, 700, 'every entry returned once (several batches)');
  t.ok([...got].every(([k, v]) => v === k * 3 && (k - 1) % 7 === 0), 'keys and values match');
  for (const k of keys) table.delete(k);
  t.same(table.entries(), [], 'empty hash gives no entries');

  const lru = BpfMap.create({ type: 'lru_hash', name: 'test_lru', keySize: 8, valueSize: 16, maxEntries: 4096 });
  t.teardown(() => lru.close());
  t.match(lru.info(), { type: 9, typeName: 'lru_hash', name: 'test_lru', keySize: 8, valueSize: 16, maxEntries: 4096, flags: 0 });
  for (let i = 0; i < 300; i++) lru.update(u64(i), Buffer.alloc(16, i));
  const entries = lru.entries();
  t.equal(entries.length, 300);
  t.ok(entries.every(([k, v]) => v.equals(Buffer.alloc(16, Number(k.readBigUInt64LE())))));

  // arrays are batched by index: several batches, every index once
  const arr = BpfMap.create({ type: 'array', name: 'test_arr', keySize: 4, valueSize: 4, maxEntries: 1000 });
  t.teardown(() => arr.close());
  for (let i = 0; i < 1000; i += 9) arr.update(u32(i), u32(i * 2 + 1));
  const arrEntries = arr.entries();
  t.same(
    arrEntries.map(([k]) => k.readUInt32LE()),
    Array.from({ length: 1000 }, (_, i) => i),
  );
  t.ok(arrEntries.every(([k, v]) => v.readUInt32LE() === (k.readUInt32LE() % 9 === 0 ? k.readUInt32LE() * 2 + 1 : 0)));
  t.end();
});

t.test('per-CPU maps and testRun', (t) => {
  const ncpu = numPossibleCpus();
  t.ok(ncpu >= 1);
  // e.g. "0-3" or "0-1,4-5": the highest possible CPU + 1
  const possible = fs.readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim();
  t.equal(ncpu, Math.max(...possible.split(/[,-]/).map(Number)) + 1);

  const counts = obj.map('pkt_count').toMap();
  const total = () =>
    counts
      .lookupPerCpu(u32(0))!
      .map((b) => {
        t.equal(b.length, 8);
        return Number(b.readBigUInt64LE());
      })
      .reduce((a, b) => a + b, 0);
  t.equal(counts.lookupPerCpu(u32(0))!.length, ncpu, 'one buffer per possible CPU');
  t.equal(counts.lookup(u32(0))!.length, 8 * ncpu, 'raw per-CPU value');

  const prog = obj.program('xdp_main').toProgram();
  const config = obj.map('config').toMap();
  const frame = Buffer.alloc(64);
  Buffer.from('020000000001', 'hex').copy(frame, 0); // dst
  Buffer.from('020000000002', 'hex').copy(frame, 6); // src
  frame.writeUInt16BE(0x0800, 12);
  for (let i = 14; i < frame.length; i++) frame[i] = i;
  const swapped = Buffer.from(frame);
  frame.copy(swapped, 0, 6, 12);
  frame.copy(swapped, 6, 0, 6);

  const before = total();
  const pass = prog.testRun(frame, { repeat: 7 });
  t.equal(pass.retval, XdpAction.PASS);
  t.same(pass.data, frame, 'PASS leaves the frame alone');
  t.ok(pass.durationNs >= 0);

  config.update(u32(0), u32(1));
  const tx = prog.testRun(frame, { repeat: 3 });
  t.equal(tx.retval, XdpAction.TX);
  t.same(tx.data, swapped, 'TX frame has the MACs swapped');

  config.update(u32(0), u32(2));
  t.equal(prog.testRun(frame).retval, XdpAction.DROP);
  config.update(u32(0), u32(0));

  t.equal(total() - before, 11, 'per-CPU counts add up to the packets run');

  const small = prog.testRun(frame, { dataOutSize: frame.length });
  t.equal(small.data.length, frame.length);

  counts.updatePerCpu(
    u32(0),
    Array.from({ length: ncpu }, (_, i) => u64(i + 10)),
  );
  t.same(
    counts.lookupPerCpu(u32(0))!.map((b) => Number(b.readBigUInt64LE())),
    Array.from({ length: ncpu }, (_, i) => i + 10),
  );
  t.throws(() => counts.update(u32(0), u64(1)), /per-CPU/);
  t.end();
});

t.test('pin, reopen from pin, reuse a pinned map, unpin', (t) => {
  const dir = `/sys/fs/bpf/xdpvs-test-${process.pid}`;
  fs.mkdirSync(dir, { recursive: true });
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

  const table = obj.map('table').toMap();
  table.update(u32(5), u64(55));
  table.update(u32(6), u64(66));
  table.pin(`${dir}/table`);
  obj.program('xdp_main').toProgram().pin(`${dir}/xdp_main`);
  const pinErr = t.throws(() => table.pin(`${dir}/table`)) as unknown as LibbpfError;
  t.equal(pinErr.code, 'EEXIST');

  const again = BpfMap.fromPin(`${dir}/table`);
  t.teardown(() => again.close());
  t.equal(again.info().id, table.info().id, 'same map');
  t.same(again.lookup(u32(5)), u64(55));
  t.same(again.lookup(u32(6)), u64(66));
  again.update(u32(7), u64(77));
  t.same(table.lookup(u32(7)), u64(77), 'writes through the pin are seen by the object');

  const prog = BpfProgram.fromPin(`${dir}/xdp_main`);
  t.teardown(() => prog.close());
  t.equal(prog.info().id, obj.program('xdp_main').toProgram().info().id);
  t.equal(prog.testRun(Buffer.alloc(64)).retval, XdpAction.PASS);

  t.throws(() => BpfProgram.fromPin(`${dir}/table`), /not a BPF prog/);
  t.throws(() => BpfMap.fromPin(`${dir}/xdp_main`), /not a BPF map/);
  const noent = t.throws(() => BpfMap.fromPin(`${dir}/nothing`)) as unknown as LibbpfError;
  t.equal(noent.message, `bpf_obj_get(${dir}/nothing): No such file or directory (ENOENT)`);

  // a second load of the object that reuses the pinned map instead of creating its own
  const second = BpfObject.open(fixtureObj);
  t.teardown(() => second.close());
  second.map('table').reuseFd(again);
  second.load({ logLevel: 1 });
  t.match(second.program('xdp_main').log, /^processed \d+ insns/m, 'logLevel 1 keeps the log of a successful load');
  t.equal(obj.program('xdp_main').log, undefined, 'no log by default');
  t.equal(second.map('table').toMap().info().id, again.info().id, 'reuseFd: same kernel map');
  t.not(second.map('config').toMap().info().id, obj.map('config').toMap().info().id, 'other maps are new');
  t.same(second.map('table').toMap().lookup(u32(6)), u64(66));

  fs.unlinkSync(`${dir}/table`);
  fs.unlinkSync(`${dir}/xdp_main`);
  t.notOk(fs.existsSync(`${dir}/table`), 'unpinned');
  t.same(again.lookup(u32(6)), u64(66), 'fd still valid after unpin');
  for (const k of [5, 6, 7]) table.delete(u32(k));
  t.end();
});

t.test('map-in-map: inner map of another size, lookup by id', (t) => {
  const outer = obj.map('outer').toMap();
  t.match(outer.info(), { typeName: 'array_of_maps', keySize: 4, valueSize: 4, maxEntries: 2 });
  const inner = BpfMap.create({ type: 'array', name: 'inner16', keySize: 4, valueSize: 4, maxEntries: 16, flags: BPF_F_INNER_MAP });
  t.teardown(() => inner.close());
  inner.update(u32(0), u32(XdpAction.DROP));
  inner.update(u32(15), u32(1234));

  t.equal(outer.lookup(u32(0)), null, 'empty slot');
  outer.update(u32(0), u32(inner.fd));
  const id = outer.lookup(u32(0))!.readUInt32LE();
  t.equal(id, inner.info().id, 'lookup on the outer map gives the inner map id');

  const viaId = BpfMap.fromId(id);
  t.teardown(() => viaId.close());
  t.match(viaId.info(), { id, name: 'inner16', maxEntries: 16, flags: BPF_F_INNER_MAP });
  t.same(viaId.lookup(u32(15)), u32(1234));

  const prog = obj.program('xdp_main').toProgram();
  t.equal(prog.testRun(Buffer.alloc(64)).retval, XdpAction.DROP, 'the program reads the inner map');
  t.equal(outer.delete(u32(0)), true);
  t.equal(prog.testRun(Buffer.alloc(64)).retval, XdpAction.PASS);

  // a hash-of-maps created from user space, with the inner map as its template
  const hom = BpfMap.create({ type: 'hash_of_maps', name: 'test_hom', keySize: 4, valueSize: 4, maxEntries: 8, innerMapFd: inner });
  t.teardown(() => hom.close());
  hom.update(u32(77), u32(inner.fd));
  t.same(
    hom.entries().map(([k, v]) => [k.readUInt32LE(), v.readUInt32LE()]),
    [[77, inner.info().id]],
  );

  // without BPF_F_INNER_MAP an array of another size does not fit the template
  const plain = BpfMap.create({ type: 'array', name: 'plain16', keySize: 4, valueSize: 4, maxEntries: 16 });
  t.teardown(() => plain.close());
  const err = t.throws(() => outer.update(u32(1), u32(plain.fd))) as unknown as LibbpfError;
  t.equal(err.code, 'EINVAL');
  t.end();
});

t.test('a verifier rejection carries the log', (t) => {
  const bad = BpfObject.open(badObj);
  t.teardown(() => bad.close());
  let caught: unknown;
  try {
    bad.load();
  } catch (e) {
    caught = e;
  }
  t.type(caught, VerifierError);
  const err = caught as VerifierError;
  t.type(err, LibbpfError);
  t.equal(err.errno, os.constants.errno.EACCES);
  t.equal(err.program, 'xdp_bad');
  t.match(err.message, /^bpf_object__load\(xdp_bad\.o\): Permission denied \(EACCES\): program 'xdp_bad' rejected by the verifier: .*outside of the packet/);
  t.match(err.log, /invalid access to packet/);
  t.match(err.log, /^processed \d+ insns/m, 'full log, statistics included');
  const summary = err.summary();
  t.match(summary, /^\d+: \(71\) r\d = \*\(u8 \*\)\(r\d \+12\)$/m, 'names the offending instruction');
  t.match(summary, /invalid access to packet, off=12/);
  t.match(summary, /\(\d+ lines? omitted\)$/);
  t.notMatch(summary, /processed \d+ insns/);
  t.ok(summary.split('\n').length < err.log.split('\n').length);
  t.ok(err.libbpfMessages.some((m) => /prog 'xdp_bad': failed to load/.test(m)), 'libbpf warnings captured');
  t.ok(err.details.includes(summary.split('\n')[0]!), 'details start with the summary');
  t.end();
});

t.test('errors from open', (t) => {
  const err = t.throws(() => BpfObject.open(path.join(tmp, 'missing.o'))) as unknown as LibbpfError;
  t.equal(err.code, 'ENOENT');
  t.match(err.message, /^bpf_object__open_file\(.*missing\.o\): No such file or directory \(ENOENT\)$/);
  t.ok(err.details.some((d) => d.includes('missing.o')), 'libbpf message captured');
  t.throws(() => ifindexOf('xdpvs-nope0'), /network interface 'xdpvs-nope0' does not exist/);
  t.end();
});

t.test('XDP attach / replace / detach on a veth in a netns', (t) => {
  const ns = `xdpvs-libbpf-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  t.teardown(() => execFileSync('ip', ['netns', 'del', ns]));
  execFileSync('ip', ['-n', ns, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth1']);
  execFileSync('ip', ['-n', ns, 'link', 'set', 'veth0', 'up']);
  execFileSync('ip', ['-n', ns, 'link', 'set', 'veth1', 'up']);

  const main = obj.program('xdp_main').toProgram();
  const pass = obj.program('xdp_pass').toProgram();
  const mainId = main.info().id;
  const passId = pass.info().id;
  const nsBefore = fs.readlinkSync('/proc/thread-self/ns/net');

  withNetns(ns, () => {
    t.not(fs.readlinkSync('/proc/thread-self/ns/net'), nsBefore, 'inside the namespace');
    const idx = ifindexOf('veth0');
    t.ok(idx > 0);
    t.same(xdpQuery(idx), { progId: 0, mode: null, nativeProgId: 0, genericProgId: 0, offloadProgId: 0 });

    t.same(xdpAttach(idx, main, { mode: 'native' }), { mode: 'native' });
    t.match(xdpQuery(idx), { progId: mainId, mode: 'native', nativeProgId: mainId, genericProgId: 0 });

    t.same(xdpAttach(idx, pass, { mode: 'native', replaceProgFd: main }), { mode: 'native' });
    t.match(xdpQuery(idx), { progId: passId, mode: 'native' }, 'replaced atomically');

    const wrong = t.throws(() => xdpAttach(idx, main, { mode: 'native', replaceProgFd: main })) as unknown as LibbpfError;
    t.equal(wrong.code, 'EEXIST', 'replace with a stale expected program fails');
    t.match(wrong.details.join('\n'), /Active program does not match expected/, "the kernel's reason is in the details");
    t.equal(xdpQuery(idx).progId, passId, 'and changes nothing');

    const wrongDetach = t.throws(() => xdpDetach(idx, 'native', { expectedProgFd: main })) as unknown as LibbpfError;
    t.equal(wrongDetach.code, 'EEXIST');
    xdpDetach(idx, 'native', { expectedProgFd: pass });
    t.same(xdpQuery(idx), { progId: 0, mode: null, nativeProgId: 0, genericProgId: 0, offloadProgId: 0 }, 'detached');

    t.same(xdpAttach(idx, main, { mode: 'generic' }), { mode: 'generic' });
    t.match(xdpQuery(idx), { progId: mainId, mode: 'generic', genericProgId: mainId, nativeProgId: 0 });
    t.same(xdpAttach(idx, pass, { replaceProgFd: main }), { mode: 'generic' }, "'auto' replace keeps the current mode");
    t.equal(xdpQuery(idx).progId, passId);
    xdpDetach(idx, 'auto');
    t.equal(xdpQuery(idx).mode, null);

    t.same(xdpAttach(idx, main), { mode: 'native' }, "'auto' takes native on veth");
    t.equal(xdpQuery(idx).progId, mainId);
    xdpDetach(idx);
    t.equal(xdpQuery(idx).progId, 0);
  });
  t.equal(fs.readlinkSync('/proc/thread-self/ns/net'), nsBefore, 'back in the original namespace');
  t.throws(() => withNetns(`xdpvs-no-such-ns-${process.pid}`, () => 1), /ENOENT/);
  t.end();
});
