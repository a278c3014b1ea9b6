// The ABI between the XDP program and the control plane, read back from what clang compiled:
// every struct src/abi.ts encodes has, in the BTF of a generated program, exactly the size and
// member offsets LAYOUTS states; the maps src/abi.ts names exist with the shapes the codecs
// assume; and the constants of bpf/xdpvs_abi.h have the values the TypeScript side uses.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { BACKEND_PRESENT, CONN_CLOSING, LAYOUTS, MAPS, MAX_BACKENDS, PERSISTENT_MAPS, PROGRAM_MAPS, TOTALS, TOTALS_COUNT } from '../src/abi.js';
import { BpfObject, MapType } from '../src/libbpf.js';
import { bpfDir } from '../src/paths.js';
import { RING_BACKEND_MASK, RING_DIRTY, RING_NONE, ringSize } from '../src/sched/ring.js';
import { ringMapName } from '../src/codegen/program.js';
import { buildTestProgram } from './helpers/datapath.js';

const CONFIG = {
  connTableSize: 4096,
  services: [
    { name: 'web', vip: '10.0.0.100', port: 80, protocol: 'tcp', backends: [{ ip: '10.0.0.11', mac: '02:00:00:00:00:11' }] },
    { name: 'dns6', vip: 'fd00::100', port: 53, protocol: 'udp', backends: [{ ip: 'fd00::11', mac: '02:00:00:00:00:12' }] },
  ],
};

const built = buildTestProgram(CONFIG);
t.teardown(() => built.cleanup());

interface BtfMember {
  name: string;
  type_id: number;
  bits_offset: number;
  bitfield_size?: number;
}
interface BtfType {
  id: number;
  kind: string;
  name?: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: BtfMember[];
  vars?: Array<{ type_id: number; offset: number; size: number }>;
  values?: Array<{ name: string; val: number }>;
}

function btf(objectPath: string): Map<number, BtfType> {
  const out = execFileSync('bpftool', ['btf', 'dump', 'file', objectPath, 'format', 'raw', '-j'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const types = (JSON.parse(out) as { types: BtfType[] }).types;
  return new Map(types.map((ty) => [ty.id, ty]));
}

/** The size in bytes of a BTF type, through typedefs and qualifiers. */
function sizeOf(types: Map<number, BtfType>, id: number): number {
  const ty = types.get(id)!;
  switch (ty.kind) {
    case 'INT':
    case 'STRUCT':
    case 'UNION':
    case 'ENUM':
    case 'ENUM64':
      return ty.size!;
    case 'ARRAY':
      return ty.nr_elems! * sizeOf(types, ty.type_id!);
    case 'TYPEDEF':
    case 'CONST':
    case 'VOLATILE':
    case 'RESTRICT':
      return sizeOf(types, ty.type_id!);
    default:
      throw new Error(`no size for BTF kind ${ty.kind}`);
  }
}

/** Field sizes the codecs of src/abi.ts read and write (a u16 written as u16, and so on). */
const FIELD_SIZES: { [S in keyof typeof LAYOUTS]: { [F in keyof (typeof LAYOUTS)[S]['fields']]: number } } = {
  xdpvs_backend: { mac: 6, flags: 2, service: 4, weight: 4 },
  xdpvs_counters: { connections: 8, packets: 8, bytes: 8 },
  xdpvs_flow: { saddr: 16, daddr: 16, sport: 2, dport: 2, proto: 1, family: 1, pad: 2 },
  xdpvs_conn: { backend: 4, flags: 4, last_seen_ns: 8 },
  xdpvs_persist_key: { service: 4, family: 4, client: 16 },
  xdpvs_persist: { backend: 4, pad: 4, last_seen_ns: 8 },
};

t.test('every struct in LAYOUTS has that size and those member offsets in the BTF', (t) => {
  const types = btf(built.objectPath);
  for (const [name, layout] of Object.entries(LAYOUTS)) {
    const found = [...types.values()].filter((ty) => ty.kind === 'STRUCT' && ty.name === name);
    t.equal(found.length, 1, `struct ${name} is in the program's BTF once`);
    const st = found[0];
    if (!st) continue;
    t.equal(st.size, layout.size, `sizeof(struct ${name}) = ${layout.size}`);
    const members = st.members ?? [];
    t.same(
      members.map((m) => m.name),
      Object.keys(layout.fields),
      `struct ${name} has exactly the members LAYOUTS lists, in that order`,
    );
    for (const m of members) {
      t.equal(m.bits_offset % 8, 0, `${name}.${m.name} is byte-aligned`);
      t.notOk(m.bitfield_size, `${name}.${m.name} is no bitfield`);
      t.equal(m.bits_offset / 8, (layout.fields as Record<string, number>)[m.name], `offsetof(${name}, ${m.name})`);
      t.equal(sizeOf(types, m.type_id), (FIELD_SIZES[name as keyof typeof LAYOUTS] as Record<string, number>)[m.name], `sizeof(${name}.${m.name})`);
    }
  }
  t.end();
});

t.test('the maps src/abi.ts names exist, with the shapes the codecs assume', (t) => {
  const types = btf(built.objectPath);
  const sec = [...types.values()].find((ty) => ty.kind === 'DATASEC' && ty.name === '.maps');
  t.ok(sec, 'the object has a .maps section');
  const btfMaps = (sec?.vars ?? []).map((v) => types.get(v.type_id)?.name);
  for (const name of Object.values(MAPS)) t.ok(btfMaps.includes(name), `map '${name}' is declared in the object`);
  t.same([...PERSISTENT_MAPS].sort(), Object.values(MAPS).sort(), 'the persistent maps are the maps of MAPS');

  const obj = BpfObject.open(built.objectPath);
  t.teardown(() => obj.close());
  // libbpf's own maps for .rodata and the like are named <object>.<section>
  t.same(obj.mapNames().filter((n) => !n.includes('.')).sort(), [...Object.values(MAPS), ...PROGRAM_MAPS, ringMapName(0)].sort(), 'libbpf sees these maps, the per-program ones and the one table class in use');
  t.same(obj.map(MAPS.backends).spec(), { type: MapType.array, keySize: 4, valueSize: LAYOUTS.xdpvs_backend.size, maxEntries: MAX_BACKENDS, flags: 0 }, MAPS.backends);
  t.same(obj.map(MAPS.backendStats).spec(), { type: MapType.percpu_array, keySize: 4, valueSize: LAYOUTS.xdpvs_counters.size, maxEntries: MAX_BACKENDS, flags: 0 }, MAPS.backendStats);
  t.same(obj.map(MAPS.totals).spec(), { type: MapType.percpu_array, keySize: 4, valueSize: 8, maxEntries: TOTALS_COUNT, flags: 0 }, MAPS.totals);
  t.same(obj.map(MAPS.backendActive).spec(), { type: MapType.array, keySize: 4, valueSize: 8, maxEntries: MAX_BACKENDS, flags: 0 }, MAPS.backendActive);
  t.same(obj.map(MAPS.persist).spec(), { type: MapType.lru_hash, keySize: LAYOUTS.xdpvs_persist_key.size, valueSize: LAYOUTS.xdpvs_persist.size, maxEntries: CONFIG.connTableSize, flags: 0 }, MAPS.persist);
  t.same(obj.map(MAPS.conns).spec(), { type: MapType.lru_hash, keySize: LAYOUTS.xdpvs_flow.size, valueSize: LAYOUTS.xdpvs_conn.size, maxEntries: CONFIG.connTableSize, flags: 0 }, MAPS.conns);
  t.match(obj.map(ringMapName(0)).spec(), { type: MapType.array_of_maps, keySize: 4, valueSize: 4, maxEntries: built.plan.serviceSlots }, `${ringMapName(0)}: a map of ${ringSize(0)}-slot tables`);
  t.end();
});

t.test('the constants of xdpvs_abi.h are the ones src/abi.ts and src/sched/ring.ts use', (t) => {
  // enum values are kept in BTF, macros are not: an enum of the macros makes them readable
  const probe = path.join(built.dir, 'abi_probe.c');
  fs.writeFileSync(
    probe,
    `#include "xdpvs_abi.h"
enum xdpvs_abi_probe {
	PROBE_MAX_BACKENDS = XDPVS_MAX_BACKENDS,
	PROBE_RING_BACKEND_MASK = XDPVS_RING_BACKEND_MASK,
	PROBE_RING_NONE = XDPVS_RING_NONE,
	PROBE_RING_DIRTY = XDPVS_RING_DIRTY,
	PROBE_BACKEND_PRESENT = XDPVS_BACKEND_PRESENT,
	PROBE_CONN_CLOSING = XDPVS_CONN_CLOSING,
};
enum xdpvs_abi_probe probe_constants;
enum xdpvs_total probe_totals;
`,
  );
  const object = path.join(built.dir, 'abi_probe.o');
  execFileSync('clang', ['-O2', '-g', '-target', 'bpf', `-I${bpfDir}`, '-I/usr/include/x86_64-linux-gnu', '-c', probe, '-o', object], { stdio: ['ignore', 'ignore', 'inherit'] });
  const types = [...btf(object).values()];
  const enumValues = (name: string): Record<string, number> => {
    const e = types.find((ty) => (ty.kind === 'ENUM' || ty.kind === 'ENUM64') && ty.name === name);
    if (!e) throw new Error(`enum ${name} not in the probe's BTF`);
    return Object.fromEntries((e.values ?? []).map((v) => [v.name, Number(v.val) >>> 0]));
  };
  t.same(
    enumValues('xdpvs_abi_probe'),
    {
      PROBE_MAX_BACKENDS: MAX_BACKENDS,
      PROBE_RING_BACKEND_MASK: RING_BACKEND_MASK,
      PROBE_RING_NONE: RING_NONE,
      PROBE_RING_DIRTY: RING_DIRTY,
      PROBE_BACKEND_PRESENT: BACKEND_PRESENT,
      PROBE_CONN_CLOSING: CONN_CLOSING,
    },
    'limits and flags',
  );
  t.same(
    enumValues('xdpvs_total'),
    {
      XDPVS_TOTAL_PASSED: TOTALS.passed,
      XDPVS_TOTAL_DROP_FRAGMENT: TOTALS.dropFragment,
      XDPVS_TOTAL_DROP_NO_BACKEND: TOTALS.dropNoBackend,
      XDPVS_TOTAL_UNRECORDED: TOTALS.unrecorded,
      XDPVS_TOTAL_MAX: TOTALS_COUNT,
    },
    'enum xdpvs_total is TOTALS, and XDPVS_TOTAL_MAX is TOTALS_COUNT',
  );
  t.end();
});
