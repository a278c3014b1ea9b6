/**
 * Where the data plane's time goes, for the doc: measured the same way as the cases (CPU time
 * of BPF_PROG_TEST_RUN, interleaved with the floors), on the one-service program.
 *
 *  - A ladder of minimal programs written here on top of the project's own parser and hash
 *    (bpf/parse.h, bpf/hash.h), each adding one step of a DR forwarder: parse; hash the flow;
 *    read a 1021-slot table through an array of maps; check the backend, rewrite the MACs and
 *    XDP_TX; count packets and bytes per CPU. This is what the steps cost when nothing else is
 *    around them.
 *  - The generated program cut short at two points by patching a copy of bpf/forward.h: right
 *    after the call into xdpvs_forward() (parse + match + call), and right after the table read
 *    (+ hash and table). With the whole program these split xdpvs's own established path.
 *  - A first SYN with a connection table of 65,536 entries instead of the default 1,048,576:
 *    how much of a new flow's cost is the table's size (cache misses) rather than the code.
 *  - `bpftool prog profile` (hardware counters), where the machine has them.
 * Any item that cannot be built against the current sources is reported as unavailable.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { compileProgram } from '../codegen/clang.js';
import { generateProgram } from '../codegen/program.js';
import { validateServices } from '../config/validate.js';
import { planProgram } from '../plan.js';
import { bpfDir } from '../paths.js';
import { BpfMap, BpfObject, type BpfProgram } from '../libbpf.js';
import { sumU64, TOTALS, u32Key } from '../abi.js';
import { flowFrame, synOptions, TCP_ACK, TCP_SYN } from '../net/frames.js';
import { loadFilled } from './datapath.js';
import { loadFloors, loadFreshFlow, type Floors, type FreshFlow } from './floors.js';
import { measureInterleaved, subject, type Subject } from './dataplane.js';
import { recordingEveryFlow, syntheticEndpoint, syntheticServicesTotal } from './synthetic.js';
import { median } from './stats.js';
import type { Datapath } from '../runtime/datapath.js';

export interface ProfileRow {
  id: string;
  label: string;
  ns?: number;
  /** BPF instructions of the program after the verifier (xlated) */
  insns?: number;
  /** the share of new flows recorded in the connection table (first SYN rows) */
  recorded?: number;
  unavailable?: string;
}

export interface ProfileResult {
  floors: { pass: number; macSwap: number };
  ladder: ProfileRow[];
  cuts: ProfileRow[];
  newFlow: ProfileRow[];
  bpftoolProfile: string;
}

const LADDER_C = (vip: string) => `// SPDX-License-Identifier: GPL-2.0
/* The steps of a DR forwarder, one more in each program, on xdpvs's own parser and hash. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "parse.h"
#include "hash.h"

#define VIP ${vip} /* the frame's destination, as loaded from the packet */
static __always_inline int xdpvs_maybe_vip(__u32 word) { return word == VIP; }
#define SLOTS 1021

struct ring {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __u32);
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct ring);
} rings SEC(".maps");
struct backend { __u8 mac[6]; __u16 flags; __u32 service; };
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");
struct counters { __u64 packets, bytes; };
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

static __always_inline int parsed(struct xdp_md *ctx, struct xdpvs_packet *pkt)
{
	return xdpvs_parse(ctx, pkt) == XDPVS_PARSED && pkt->flow.daddr[0] == VIP;
}

static __always_inline __u32 *slot_of(struct xdpvs_packet *pkt)
{
	__u32 zero = 0;
	void *table = bpf_map_lookup_elem(&rings, &zero);
	if (!table)
		return NULL;
	__u32 slot = xdpvs_slot(xdpvs_hash_flow(&pkt->flow), SLOTS);
	return bpf_map_lookup_elem(table, &slot);
}

static __always_inline struct backend *backend_of(struct xdpvs_packet *pkt, __u32 *b)
{
	__u32 *slot = slot_of(pkt);
	if (!slot)
		return NULL;
	*b = *slot & 0xffffff;
	struct backend *be = bpf_map_lookup_elem(&backends, b);
	return be && (be->flags & 1) ? be : NULL;
}

static __always_inline int rewrite(struct xdp_md *ctx, struct backend *be)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_ABORTED;
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, be->mac, ETH_ALEN);
	return XDP_TX;
}

SEC("xdp") int l0_dst(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	return ip->daddr == VIP ? XDP_PASS : XDP_DROP;
}

SEC("xdp") int l1_parse(struct xdp_md *ctx)
{
	struct xdpvs_packet pkt = {};
	return parsed(ctx, &pkt) ? XDP_PASS : XDP_DROP;
}

SEC("xdp") int l2_hash(struct xdp_md *ctx)
{
	struct xdpvs_packet pkt = {};
	if (!parsed(ctx, &pkt))
		return XDP_DROP;
	return xdpvs_hash_flow(&pkt.flow) == 0x12345 ? XDP_DROP : XDP_PASS;
}

SEC("xdp") int l3_table(struct xdp_md *ctx)
{
	struct xdpvs_packet pkt = {};
	if (!parsed(ctx, &pkt))
		return XDP_DROP;
	__u32 *slot = slot_of(&pkt);
	return slot && *slot != 0x12345 ? XDP_PASS : XDP_DROP;
}

SEC("xdp") int l4_rewrite(struct xdp_md *ctx)
{
	struct xdpvs_packet pkt = {};
	__u32 b;
	if (!parsed(ctx, &pkt))
		return XDP_DROP;
	struct backend *be = backend_of(&pkt, &b);
	return be ? rewrite(ctx, be) : XDP_DROP;
}

SEC("xdp") int l5_count(struct xdp_md *ctx)
{
	struct xdpvs_packet pkt = {};
	__u32 b;
	if (!parsed(ctx, &pkt))
		return XDP_DROP;
	struct backend *be = backend_of(&pkt, &b);
	if (!be)
		return XDP_DROP;
	struct counters *c = bpf_map_lookup_elem(&stats, &b);
	if (c) {
		c->packets += 1;
		c->bytes += pkt.len;
	}
	return rewrite(ctx, be);
}

char LICENSE[] SEC("license") = "GPL";
`;

const LADDER: Array<[string, string]> = [
  ['l0_dst', 'Ethernet and the IPv4 destination only, compared with one VIP, XDP_PASS'],
  ['l1_parse', 'parse (xdpvs_parse) and compare with one VIP, XDP_PASS'],
  ['l2_hash', '+ hash the flow (xdpvs_hash_flow)'],
  ['l3_table', '+ read its slot of a 1021-slot table through an array of maps'],
  ['l4_rewrite', '+ read and check the backend, rewrite the MACs, XDP_TX'],
  ['l5_count', '+ count packets and bytes per CPU (= a minimal DR forwarder)'],
];

/**
 * The flow hash mixes the ports as one word. Parsing stored them as two 16-bit fields, so clang's
 * single 32-bit load of both cannot take its data from those stores (store-to-load forwarding
 * needs one store covering the load): this variant reads them as two 16-bit loads.
 */
const PORTS_MIX = 'h = xdpvs_mix(h, (__u32)f->sport | (__u32)f->dport << 16);';
const PORTS_MIX_16 = 'h = xdpvs_mix(h, (__u32)*(volatile const __u16 *)&f->sport | (__u32)*(volatile const __u16 *)&f->dport << 16);';

/** A patched copy of forward.h that makes xdpvs_forward() return XDP_TX at a point. */
function cutForward(source: string, point: 'call' | 'table'): string | undefined {
  const fn = source.search(/int xdpvs_forward\(struct xdp_md \*ctx/);
  if (fn < 0) return undefined;
  const head = source.slice(0, fn);
  const body = source.slice(fn);
  // ctx and pkt stay in use, or clang drops the arguments and the verifier rejects the call
  const ret = '\n\tif ((void *)(long)ctx->data_end == 0 || pkt->len == 0) return XDP_DROP; return XDP_TX; /* bench cut */\n';
  const anchor = point === 'call' ? /if \(!pkt\)\s*return XDP_ABORTED;\n/ : /__u32 entry = \*slot;\n/;
  const m = anchor.exec(body);
  if (!m) return undefined;
  const at = m.index + m[0].length;
  const extra = point === 'table' ? '\tif (entry == 0x12345) return XDP_DROP;' : '';
  return head + body.slice(0, at) + extra + ret + body.slice(at);
}

function insnsOf(p: BpfProgram): number {
  return p.info().xlatedLen / 8;
}

function bpftoolProfile(progId: number): string {
  const r = spawnSync('bpftool', ['prog', 'profile', 'id', String(progId), 'duration', '1', 'cycles', 'instructions'], { encoding: 'utf8', timeout: 10_000 });
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
  return r.status === 0 && !/^Error/m.test(text) ? text : `not available here: ${text.split('\n').slice(-2).join(' ') || `exit ${r.status}`}`;
}

export async function runProfile(o: { repeat: number; rounds: number; log?: (l: string) => void }): Promise<ProfileResult> {
  const log = o.log ?? (() => {});
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdpvs-bench-profile-'));
  const objects: BpfObject[] = [];
  const datapaths: Datapath[] = [];
  const dpOf = new Map<string, Datapath>();
  const harnesses: FreshFlow[] = [];
  let floors: Floors | undefined;
  const extra: BpfMap[] = [];
  try {
    floors = loadFloors();
    const ep = syntheticEndpoint(0);
    const est = flowFrame({ src: '198.51.100.7', dst: ep.vip, proto: 'tcp', sport: 40000, dport: ep.port, flags: TCP_ACK });
    const syn = flowFrame({ src: '100.64.0.0', dst: ep.vip, proto: 'tcp', sport: 40005, dport: ep.port, flags: TCP_SYN, tcpOptions: synOptions() });
    const subjects: Subject[] = [subject('pass', floors.pass, est), subject('macSwap', floors.macSwap, est)];
    const rows = new Map<string, ProfileRow>();

    // the ladder
    const ladder: ProfileRow[] = LADDER.map(([id, label]) => ({ id, label }));
    try {
      const vip = `0x${est.readUInt32LE(30).toString(16).padStart(8, '0')}`;
      const file = path.join(dir, 'ladder.c');
      fs.writeFileSync(file, LADDER_C(vip));
      fs.copyFileSync(path.join(bpfDir, 'parse.h'), path.join(dir, 'parse.h'));
      fs.copyFileSync(path.join(bpfDir, 'hash.h'), path.join(dir, 'hash.h'));
      fs.copyFileSync(path.join(bpfDir, 'xdpvs_abi.h'), path.join(dir, 'xdpvs_abi.h'));
      const obj = BpfObject.open(compileProgram(file));
      objects.push(obj);
      obj.load();
      const inner = BpfMap.create({ type: 'array', name: 'bench_ring', keySize: 4, valueSize: 4, maxEntries: 1021 });
      extra.push(inner);
      const keys = Array.from({ length: 1021 }, (_, k) => u32Key(k));
      inner.updateBatch(keys, keys.map((_, k) => u32Key(k % 10)));
      obj.map('rings').toMap().update(u32Key(0), u32Key(inner.fd));
      const backends = obj.map('backends').toMap();
      for (let b = 0; b < 10; b++) {
        const v = Buffer.alloc(12);
        v.set([2, 0, 0, 0, 0, b]);
        v.writeUInt16LE(1, 6);
        backends.update(u32Key(b), v);
      }
      for (const row of ladder) {
        const p = obj.program(row.id).toProgram();
        row.insns = insnsOf(p);
        subjects.push(subject(row.id, p, est));
        rows.set(row.id, row);
      }
    } catch (err) {
      for (const row of ladder) row.unavailable = (err as Error).message.split('\n')[0];
    }

    // the generated program, whole and cut short
    const raw = syntheticServicesTotal(1, 10);
    const config = validateServices(raw, 'profile.json');
    const { plan } = planProgram(config, 'profile.json');
    const c = generateProgram(plan);
    const forward = fs.readFileSync(path.join(bpfDir, 'forward.h'), 'utf8');
    const cuts: ProfileRow[] = [
      { id: 'cut_call', label: 'xdpvs: parse, match the service, call xdpvs_forward(), XDP_TX' },
      { id: 'cut_table', label: 'xdpvs: + hash the flow and read its slot of the table' },
      { id: 'whole', label: 'xdpvs: the whole established path (est4)' },
      { id: 'ports16', label: 'xdpvs: the whole path, bpf/hash.h reading the ports as two 16-bit loads' },
    ];
    const hash = fs.readFileSync(path.join(bpfDir, 'hash.h'), 'utf8');
    for (const row of cuts) {
      try {
        const d = path.join(dir, row.id);
        fs.mkdirSync(d);
        for (const f of fs.readdirSync(bpfDir)) if (f.endsWith('.h')) fs.copyFileSync(path.join(bpfDir, f), path.join(d, f));
        if (row.id === 'ports16') {
          const patched = hash.replace(PORTS_MIX, PORTS_MIX_16);
          if (patched === hash) throw new Error('bpf/hash.h has changed: the ports are not mixed as this variant expects');
          fs.writeFileSync(path.join(d, 'hash.h'), patched);
        } else if (row.id !== 'whole') {
          const patched = cutForward(forward, row.id === 'cut_call' ? 'call' : 'table');
          if (!patched) throw new Error('bpf/forward.h has changed: the cut point was not found');
          fs.writeFileSync(path.join(d, 'forward.h'), patched); // found before -I bpf/: it sits beside xdpvs.c
        }
        fs.writeFileSync(path.join(d, 'xdpvs.c'), c);
        const dp = loadFilled({ objectPath: compileProgram(path.join(d, 'xdpvs.c')), plan });
        datapaths.push(dp);
        dpOf.set(row.id, dp);
        row.insns = insnsOf(dp.program);
        subjects.push(subject(row.id, dp.program, est));
        rows.set(row.id, row);
      } catch (err) {
        row.unavailable = (err as Error).message.split('\n')[0];
      }
    }

    // a first SYN: the default connection table against a small one
    const newFlow: ProfileRow[] = [
      { id: 'syn_big', label: `first SYN, connection table of ${plan.connTableSize.toLocaleString('en-US')} entries` },
      { id: 'syn_small', label: 'first SYN, connection table of 65,536 entries' },
      { id: 'syn_flood', label: `first SYN, ${plan.connTableSize.toLocaleString('en-US')} entries, the default connRecordRate (a SYN flood)` },
    ];
    const synDatapath = new Map<string, Datapath>();
    const passHarness = loadFreshFlow(floors.pass);
    harnesses.push(passHarness);
    subjects.push(subject('harness', passHarness.program, est));
    for (const row of newFlow) {
      try {
        const small = row.id === 'syn_small';
        const sized = small ? { ...raw, connTableSize: 65536 } : raw;
        const cfg = row.id === 'syn_flood' ? sized : recordingEveryFlow(sized, (x) => validateServices(x, 'profile.json'));
        const v = validateServices(cfg, 'profile.json');
        const p = planProgram(v, 'profile.json').plan;
        const d = path.join(dir, row.id);
        fs.mkdirSync(d);
        fs.writeFileSync(path.join(d, 'xdpvs.c'), generateProgram(p));
        const dp = loadFilled({ objectPath: compileProgram(path.join(d, 'xdpvs.c')), plan: p });
        datapaths.push(dp);
        synDatapath.set(row.id, dp);
        const h = loadFreshFlow(dp.program);
        harnesses.push(h);
        const s = subject(row.id, h.program, syn);
        s.frameFor = (round) => {
          const f = Buffer.from(syn);
          f.writeUInt32BE((f.readUInt32BE(26) + round * o.repeat) >>> 0, 26);
          return f;
        };
        subjects.push(s);
        rows.set(row.id, row);
      } catch (err) {
        row.unavailable = (err as Error).message.split('\n')[0];
      }
    }

    log(`profile: ${subjects.length} programs, ${o.rounds} rounds`);
    await measureInterleaved(subjects, floors.pass, o.repeat, o.rounds);
    const ns = new Map(subjects.map((s) => [s.name, median(s.samplesNs)]));
    const harnessNs = ns.get('harness')! - ns.get('pass')!;
    for (const [id, row] of rows) row.ns = ns.get(id)! - (id.startsWith('syn_') ? harnessNs : 0);
    const unrecordedReason = (TOTALS as Record<string, number>).unrecorded;
    for (const row of newFlow) {
      const dp = synDatapath.get(row.id);
      if (!dp) continue;
      const unrecorded = unrecordedReason === undefined ? 0 : sumU64(dp.maps.totals.lookupPerCpu(u32Key(unrecordedReason)) ?? []);
      row.recorded = Math.max(0, 1 - unrecorded / (o.rounds * o.repeat));
    }
    const whole = dpOf.get('whole');
    return {
      floors: { pass: ns.get('pass')!, macSwap: ns.get('macSwap')! },
      ladder,
      cuts,
      newFlow,
      bpftoolProfile: whole ? bpftoolProfile(whole.program.info().id) : 'no program',
    };
  } finally {
    for (const h of harnesses) h.close();
    for (const d of datapaths) d.object.close();
    for (const m of extra) m.close();
    for (const obj of objects) obj.close();
    floors?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
