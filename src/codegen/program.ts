import fs from 'node:fs';
import path from 'node:path';
import Handlebars from 'handlebars';
import { templatesDir } from '../paths.js';
import type { ProgramPlan, PlannedService } from '../plan.js';
import type { Protocol, Scheduler } from '../config/types.js';
import { RING_SIZES, ringSize } from '../sched/ring.js';

/* The schedulers of bpf/forward.h. */
const SCHED_CONST: Record<Scheduler, string> = { maglev: 'MAGLEV', sh: 'SH', wrr: 'WRR', rr: 'RR', lc: 'LC', wlc: 'WLC' };
const C_PROTO: Record<Protocol, string> = { tcp: 'IPPROTO_TCP', udp: 'IPPROTO_UDP' };
const PROTOCOL_ORDER: Protocol[] = ['tcp', 'udp'];

export const cName = (serviceName: string): string => serviceName.replace(/-/g, '_');
export const ringMapName = (ringClass: number): string => `rings_${ringSize(ringClass)}`;
/** The size class of a map of tables, from its name; undefined for other maps. */
export function ringClassOfMapName(name: string): number | undefined {
  const m = /^rings_(\d+)$/.exec(name);
  const cls = m ? RING_SIZES.indexOf(Number(m[1]) as (typeof RING_SIZES)[number]) : -1;
  return cls >= 0 ? cls : undefined;
}

interface VipContext {
  address: string;
  names: string[];
  protocols: Array<{ cproto: string; ports: Array<{ port: number; cname: string }>; wildcard?: string }>;
}

/** One VIP's services grouped by protocol, specific ports before the all-ports service. */
function vipContext(address: string, services: PlannedService[]): VipContext {
  const protocols = PROTOCOL_ORDER.flatMap((protocol) => {
    const mine = services.filter((s) => s.service.protocol === protocol);
    if (mine.length === 0) return [];
    const ports = mine
      .filter((s) => s.service.port !== 0)
      .sort((a, b) => a.service.port - b.service.port)
      .map((s) => ({ port: s.service.port, cname: cName(s.service.name) }));
    const wildcard = mine.find((s) => s.service.port === 0);
    return [{ cproto: C_PROTO[protocol], ports, wildcard: wildcard && cName(wildcard.service.name) }];
  });
  return { address, names: services.map((s) => s.service.name), protocols };
}

/** VIPs per match function: keeps every function far below the reach of a BPF jump. */
export const PART_SIZE = 256;

const hex32 = (b: Buffer, offset: number): string => `0x${b.subarray(offset, offset + 4).toString('hex')}`;

interface Case {
  /** the address word as the program loads it (little-endian), for ordering and dispatch */
  word: number;
  label: string;
  vips: Array<VipContext & { head?: string }>;
}

interface Family {
  name: string;
  key: string;
  partitioned: boolean;
  parts: Array<{ index: number; first: string; last: string; cases: Case[] }>;
  dispatch?: string;
}

/** A binary search over the parts' first words, as nested ifs. */
function dispatchTree(name: string, parts: Family['parts'], indent = '\t'): string {
  if (parts.length === 1) return `${indent}return xdpvs_match_${name}_${parts[0]!.index}(pkt);`;
  const mid = parts.length >> 1;
  const first = parts[mid]!.cases[0]!;
  return [
    `${indent}if (word < 0x${first.word.toString(16).padStart(8, '0')}) /* ${first.vips[0]!.address} */`,
    dispatchTree(name, parts.slice(0, mid), `${indent}\t`),
    `${indent}else`,
    dispatchTree(name, parts.slice(mid), `${indent}\t`),
  ].join('\n');
}

function family(name: string, key: string, cases: Case[]): Family {
  cases.sort((a, b) => a.word - b.word);
  const parts: Family['parts'] = [];
  for (let i = 0; i < cases.length || parts.length === 0; i += PART_SIZE) {
    const mine = cases.slice(i, i + PART_SIZE);
    parts.push({ index: parts.length, first: mine[0]?.vips[0]?.address ?? '', last: mine.at(-1)?.vips.at(-1)?.address ?? '', cases: mine });
  }
  const partitioned = parts.length > 1;
  return { name, key, partitioned, parts, dispatch: partitioned ? dispatchTree(name, parts) : undefined };
}

/** Bits per VIP address word in the filter: about 1 in 16 other addresses passes it. */
const FILTER_BITS_PER_WORD = 16;
const FILTER_MIN_LOG2 = 9;
const HASH_INIT = 0x9e3779b97f4a7c15n; // XDPVS_HASH_INIT of bpf/hash.h

/**
 * The filter bit of an address word, as the C computes it: the top bits of the byte-swapped
 * word (the address in host order) × XDPVS_HASH_INIT.
 */
export function filterBit(word: number, log2: number): number {
  const hostOrder = BigInt(Buffer.from(Uint32Array.of(word).buffer).readUInt32BE(0));
  return Number(((hostOrder * HASH_INIT) & 0xffffffffffffffffn) >> BigInt(64 - log2));
}

/** The VIP filter's bitmap as C literals, four words a line. */
function vipFilter(words: number[]): { log2: number; bits: number; keys: number; size: number; lines: string[] } {
  const keys = new Set(words).size;
  const log2 = Math.max(FILTER_MIN_LOG2, Math.ceil(Math.log2(Math.max(1, keys * FILTER_BITS_PER_WORD))));
  const bitmap = new BigUint64Array(2 ** (log2 - 6));
  for (const w of words) {
    const bit = filterBit(w, log2);
    bitmap[bit >> 6]! |= 1n << BigInt(bit & 63);
  }
  const lines: string[] = [];
  for (let i = 0; i < bitmap.length; i += 4) {
    lines.push([...bitmap.subarray(i, i + 4)].map((x) => `0x${x.toString(16).padStart(16, '0')}ull`).join(', '));
  }
  return { log2, bits: 2 ** log2, keys, size: bitmap.length, lines };
}

/** The template's view of a plan: everything precomputed, so the template has no logic. */
export function templateContext(plan: ProgramPlan): object {
  const byVip = new Map<string, PlannedService[]>();
  for (const s of plan.services) {
    const list = byVip.get(s.service.vip.address) ?? [];
    list.push(s);
    byVip.set(s.service.vip.address, list);
  }
  const vips = [...byVip.entries()].map(([address, services]) => ({ vip: services[0]!.service.vip, ctx: vipContext(address, services) }));
  const cases4: Case[] = vips
    .filter((v) => v.vip.family === 4)
    .map((v) => ({ word: v.vip.bytes.readUInt32LE(0), label: `XDPVS_IPV4(${[...v.vip.bytes].join(', ')})`, vips: [v.ctx] }));
  const cases6 = new Map<number, Case>();
  for (const v of vips.filter((x) => x.vip.family === 6)) {
    const word = v.vip.bytes.readUInt32LE(12);
    const c = cases6.get(word) ?? { word, label: `XDPVS_BE32(${hex32(v.vip.bytes, 12)})`, vips: [] };
    c.vips.push({ ...v.ctx, head: [0, 4, 8].map((o) => hex32(v.vip.bytes, o)).join(', ') });
    cases6.set(word, c);
  }
  return {
    vipCount: byVip.size,
    serviceSlots: plan.serviceSlots,
    connTableSize: plan.connTableSize,
    connRecordRate: plan.connRecordRate,
    timeouts: plan.timeouts,
    partSize: PART_SIZE,
    ringClasses: plan.ringClasses.map((c) => ({ index: c.ringClass, name: ringMapName(c.ringClass), size: ringSize(c.ringClass), services: c.services })),
    services: plan.services.map((s) => ({
      name: s.service.name,
      cname: cName(s.service.name),
      id: s.id,
      protocol: s.service.protocol,
      endpoint: endpoint(s.service.vip.address, s.service.port),
      scheduler: s.service.scheduler,
      schedConst: SCHED_CONST[s.service.scheduler],
      persistence: s.service.persistence,
      ringClass: s.ringClass,
    })),
    persistenceSlots: plan.services.some((s) => s.service.persistence > 0) ? 2 ** Math.ceil(Math.log2(plan.serviceSlots)) : 1,
    persistent: plan.services
      .filter((s) => s.service.persistence > 0)
      .map((s) => ({ id: s.id, name: s.service.name, persistence: s.service.persistence, prefix: s.service.persistenceNetmask })),
    filter: vipFilter([...cases4, ...cases6.values()].map((c) => c.word)),
    families: [family('ipv4', 'pkt->flow.daddr[0]', cases4), family('ipv6', 'pkt->flow.daddr[3]', [...cases6.values()])],
  };
}

export const endpoint = (address: string, port: number): string =>
  `${address.includes(':') ? `[${address}]` : address}:${port === 0 ? '*' : port}`;

let compiled: Handlebars.TemplateDelegate | undefined;

/** The C source of the XDP program for a plan. */
export function generateProgram(plan: ProgramPlan): string {
  if (!compiled) {
    const hb = Handlebars.create();
    hb.registerHelper('join', (list: string[]) => list.join(', '));
    compiled = hb.compile(fs.readFileSync(path.join(templatesDir, 'program.c.hbs'), 'utf8'), { noEscape: true, strict: true });
  }
  return compiled(templateContext(plan));
}
