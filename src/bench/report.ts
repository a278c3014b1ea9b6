/**
 * The benchmark's report: the tables printed to the terminal and docs/benchmarks.md, written
 * from one run's results. Every figure in the document comes from the run; the text around the
 * figures says what was measured and how, and reads the profile's numbers to say where the data
 * plane's time goes.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { CASES, FLOOR_LABELS, type CaseId, type DataplaneResult, type SizeResult } from './dataplane.js';
import type { ProfileResult, ProfileRow } from './profile.js';
import type { ControlResult } from './control.js';
import { MODES, MODE_LABELS, TARGETS, TARGET_LABELS, type E2eResult } from './e2e.js';
import { bytes, fixed, markdownTable, median, seconds, textTable, thousands } from './stats.js';

export interface Machine {
  cpu: string;
  cpus: number;
  memory: string;
  kernel: string;
  date: string;
  node: string;
  clang: string;
  virtualization: string;
  /** the commit measured, and whether the tree had changes beyond it */
  source: string;
}

export interface BenchRun {
  machine: Machine;
  quick: boolean;
  dataplane?: DataplaneResult;
  profile?: ProfileResult;
  control?: ControlResult;
  e2e?: E2eResult;
  /** part -> error message, for parts that failed as a whole */
  failures: Record<string, string>;
  /** part -> wall time, ms */
  durations: Record<string, number>;
}

export function machineInfo(): Machine {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  const clang = spawnSync('clang', ['--version'], { encoding: 'utf8' }).stdout?.split('\n')[0]?.trim() ?? 'unknown';
  const virt = spawnSync('systemd-detect-virt', [], { encoding: 'utf8' });
  const hypervisor = /^flags\s*:.*\bhypervisor\b/m.test(cpuinfo);
  const repo = fileURLToPath(new URL('../../', import.meta.url));
  const head = spawnSync('git', ['-C', repo, 'log', '-1', '--format=%h %s'], { encoding: 'utf8' });
  const dirty = spawnSync('git', ['-C', repo, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' });
  return {
    cpu: model,
    cpus: os.cpus().length,
    memory: bytes(os.totalmem()),
    kernel: `${os.type()} ${os.release()}`,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    node: process.version,
    clang,
    virtualization: [
      hypervisor ? 'a virtual machine (the CPU has the hypervisor flag)' : '',
      virt.status === 0 && virt.stdout.trim() !== 'none' ? `systemd-detect-virt: ${virt.stdout.trim()}` : '',
    ].filter(Boolean).join('; ') || 'none detected',
    source:
      head.status === 0
        ? `commit ${head.stdout.trim().split(' ')[0]}${dirty.stdout.trim() ? ' with uncommitted changes' : ''}`
        : 'not a git checkout',
  };
}

const sizeLabel = (s: { services: number; backends: number }) => `${thousands(s.services)} svc / ${thousands(s.backends)} be`;
const ratio = (x: number) => `${x.toFixed(2)}×`;

// ---------------------------------------------------------------------------------------------
// data plane

function dataplaneTable(d: DataplaneResult): { header: string[]; align: Array<'l' | 'r'>; rows: string[][] } {
  const header = ['case', 'target', ...d.sizes.map((s) => sizeLabel(s.size))];
  const align: Array<'l' | 'r'> = ['l', 'l', ...d.sizes.map(() => 'r' as const)];
  const rows: string[][] = [];
  rows.push([FLOOR_LABELS.pass, '', ...d.sizes.map((s) => fixed(s.floors.pass.median, 1))]);
  rows.push([FLOOR_LABELS.macSwap, '', ...d.sizes.map((s) => `${fixed(s.floors.macSwap.median, 1)} (${ratio(s.floors.macSwap.median / s.floors.pass.median)} / 1.00×)`)]);
  for (const c of CASES) {
    const target = c.target ? `≤ ${c.target.ratio}× ${c.target.floor === 'pass' ? 'XDP_PASS' : 'MAC swap'}` : '';
    rows.push([
      c.label,
      target,
      ...d.sizes.map((s) => {
        const r = s.cases[c.id];
        const mark = r.meets === undefined ? '' : r.meets ? ' ✓' : ' ✗';
        return `${fixed(r.ns.median, 1)} (${ratio(r.ratioPass)} / ${ratio(r.ratioMacSwap)})${mark}`;
      }),
    ]);
  }
  return { header, align, rows };
}

interface Flatness {
  caseId: CaseId;
  backends: number;
  values: Array<{ services: number; ns: number }>;
  spread: number;
}

/** The same case at the same backends in all, across service counts. */
function flatness(d: DataplaneResult, ids: CaseId[]): Flatness[] {
  const out: Flatness[] = [];
  for (const id of ids) {
    const byBackends = new Map<number, SizeResult[]>();
    for (const s of d.sizes) byBackends.set(s.size.backends, [...(byBackends.get(s.size.backends) ?? []), s]);
    for (const [backends, list] of byBackends) {
      if (list.length < 2) continue;
      const values = list.map((s) => ({ services: s.size.services, ns: s.cases[id].ns.median }));
      const ns = values.map((v) => v.ns);
      out.push({ caseId: id, backends, values, spread: Math.max(...ns) / Math.min(...ns) - 1 });
    }
  }
  return out;
}

const FLAT_WITHIN = 0.1;

function summaryRows(d: DataplaneResult): string[][] {
  const rows: string[][] = [];
  const worst = (id: CaseId, floor: 'pass' | 'macSwap') =>
    d.sizes.reduce(
      (w, s) => {
        const r = s.cases[id];
        const x = floor === 'pass' ? r.ratioPass : r.ratioMacSwap;
        return x > w.x ? { x, s, ns: r.ns.median } : w;
      },
      { x: -Infinity, s: d.sizes[0]!, ns: NaN },
    );
  for (const c of CASES.filter((x) => x.target)) {
    const w = worst(c.id, c.target!.floor);
    const best = Math.min(...d.sizes.map((s) => (c.target!.floor === 'pass' ? s.cases[c.id].ratioPass : s.cases[c.id].ratioMacSwap)));
    rows.push([
      `${c.label} within ${c.target!.ratio}× of ${c.target!.floor === 'pass' ? 'XDP_PASS' : 'the MAC swap'}`,
      `${ratio(best)} to ${ratio(w.x)} (worst: ${fixed(w.ns, 1)} ns at ${sizeLabel(w.s.size)})`,
      w.x <= c.target!.ratio ? 'met' : '**missed**',
    ]);
  }
  for (const f of flatness(d, ['est4', 'notVip', 'synRecorded'])) {
    rows.push([
      `flat across service counts: ${CASES.find((c) => c.id === f.caseId)!.label}, ${thousands(f.backends)} backends`,
      `${f.values.map((v) => `${thousands(v.services)} svc ${fixed(v.ns, 1)} ns`).join(', ')} (spread ${(f.spread * 100).toFixed(0)}%)`,
      f.spread <= FLAT_WITHIN ? 'met' : '**missed**',
    ]);
  }
  return rows;
}

/** The largest difference between the kernel's whole-ns average and the bench's figure. */
function kernelAgreement(d: DataplaneResult): number {
  let worst = 0;
  for (const s of d.sizes) for (const c of CASES.filter((x) => !x.harness)) worst = Math.max(worst, Math.abs(s.cases[c.id].kernelNs - s.cases[c.id].ns.median));
  return worst;
}

/** Sentences about what the numbers of the data-plane table show beyond the targets. */
function dataplaneObservations(d: DataplaneResult): string[] {
  const out: string[] = [];
  const spread = d.sizes
    .map((s) => ({ s, extra: s.cases.estMany.ns.median - s.cases.est4.ns.median }))
    .sort((a, b) => b.extra - a.extra);
  const worst = spread[0];
  const calm = spread[spread.length - 1];
  if (worst && calm && worst.extra > 10) {
    out.push(
      `- *Established, another flow every packet* costs ${fixed(worst.s.cases.estMany.ns.median, 0)} ns at ${sizeLabel(worst.s.size)} against ` +
        `${fixed(worst.s.cases.est4.ns.median, 0)} ns for one flow: the service there has ${thousands(worst.s.service.backends)} backends and a table of ` +
        `${thousands(worst.s.service.ringSlots)} slots (${bytes(worst.s.service.ringSlots * 4)}), so each packet reads a slot, a backend entry and its ` +
        `per-CPU counters at places the previous packets did not touch: cache misses, not instructions (the program is the same). ` +
        `With ${thousands(calm.s.service.backends)} backends and ${thousands(calm.s.service.ringSlots)} slots (${sizeLabel(calm.s.size)}) the difference is ${fixed(calm.extra, 1)} ns.`,
    );
  }
  const nv = d.sizes.map((s) => s.cases.notVip.ns.median);
  if (nv.length > 1 && Math.max(...nv) / Math.min(...nv) - 1 > FLAT_WITHIN) {
    const most = d.sizes.reduce((a, b) => (b.cases.notVip.ns.median > a.cases.notVip.ns.median ? b : a));
    out.push(
      `- *Not for a VIP* grows with the number of VIPs, up to ${fixed(most.cases.notVip.ns.median, 1)} ns at ${sizeLabel(most.size)}: the generated match ` +
        'compares the destination with the VIPs in a tree of comparisons (clang 14 turns a `switch` into one; BPF has no jump tables), and beyond 256 VIPs ' +
        'first picks one of the match functions by a binary search, so a miss walks about log2(VIPs) comparisons and a function call.',
    );
  }
  return out;
}

/** The run's main findings, from its figures. */
function inShort(d: DataplaneResult, p: ProfileResult | undefined, e: E2eResult | undefined): string[] {
  const out: string[] = [];
  const est = d.sizes.map((s) => s.cases.est4);
  const estNs = median(est.map((x) => x.ns.median));
  const estRatio = median(est.map((x) => x.ratioMacSwap));
  const row = (rows: ProfileRow[] | undefined, id: string) => rows?.find((r) => r.id === id)?.ns;
  const whole = row(p?.cuts, 'whole');
  const ports16 = row(p?.cuts, 'ports16');
  const l5 = row(p?.ladder, 'l5_count');
  let line = `- An established TCP packet costs about ${fixed(estNs, 0)} ns, ${ratio(estRatio)} the MAC-swap floor: the design's 2× is ${estRatio <= 2 ? 'met' : 'missed'}.`;
  if (p && whole !== undefined && ports16 !== undefined && whole - ports16 > 1.5) {
    line += ` The largest single cost found is a store-forwarding stall in the flow hash (${fixed(whole - ports16, 1)} ns; a one-line fix in \`bpf/hash.h\` takes the path to ${ratio(ports16 / p.floors.macSwap)}).`;
  }
  const l2 = row(p?.ladder, 'l2_hash');
  if (p && l5 !== undefined && l2 !== undefined) {
    line += ` Even a minimal forwarder on the same parser and hash is ${ratio(l5 / p.floors.macSwap)}: the parse and the hash alone add ${fixed(l2 - p.floors.pass, 1)} ns to a floor of ${fixed(p.floors.macSwap, 1)} ns.`;
  }
  out.push(line);
  const nv = d.sizes.map((s) => s.cases.notVip);
  const l0 = row(p?.ladder, 'l0_dst');
  out.push(
    `- A frame not for a VIP costs ${ratio(Math.min(...nv.map((x) => x.ratioPass)))} to ${ratio(Math.max(...nv.map((x) => x.ratioPass)))} XDP_PASS (target 1.3×)` +
      (flatness(d, ['notVip']).some((f) => f.spread > FLAT_WITHIN) ? ', growing with the number of VIPs' : ', the same from 1 to 10,000 services') +
      (p && l0 !== undefined ? `; reading the destination and comparing it with one VIP, and nothing else, costs ${ratio(l0 / p.floors.pass)}.` : '.'),
  );
  const flat = flatness(d, ['est4']);
  const big = row(p?.newFlow, 'syn_big');
  const small = row(p?.newFlow, 'syn_small');
  if (flat.length > 0) {
    out.push(
      `- The established path is ${flat.every((f) => f.spread <= FLAT_WITHIN) ? 'flat' : 'not flat'} from 1 to 10,000 services (spread ${flat.map((f) => `${(f.spread * 100).toFixed(0)}%`).join(', ')}); ` +
        `a new flow costs ${fixed(Math.min(...d.sizes.map((s) => s.cases.synFirst.ns.median)), 0)}–${fixed(Math.max(...d.sizes.map((s) => s.cases.synFirst.ns.median)), 0)} ns` +
        (big !== undefined && small !== undefined && big > small
          ? `, ${(((big - small) / big) * 100).toFixed(0)}% of it the size of the connection table (cache misses): ${fixed(small, 0)} ns with 65,536 entries instead of a million.`
          : '.'),
    );
  }
  if (e && e.cells.length > 0) {
    const c = (t: string, m: string) => e.cells.find((x) => x.target === t && x.mode === m);
    const parts = (['short', 'long', 'bulk'] as const).map((m) => {
      const x = c('xdpvs', m);
      const h = c('haproxy', m);
      const dr = c('direct', m);
      return x && h && dr ? `${m} ${ratio(x.requestsPerSec / dr.requestsPerSec)} (HAProxy ${ratio(h.requestsPerSec / dr.requestsPerSec)})` : '';
    }).filter(Boolean);
    if (parts.length > 0) out.push(`- End to end in the lab, through xdpvs relative to one real server directly: ${parts.join(', ')}.`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// profile

function profileRows(rows: ProfileRow[], pass: number): string[][] {
  return rows.map((r) => [r.recorded === undefined ? r.label : `${r.label}: ${(r.recorded * 100).toFixed(0)}% recorded`, r.unavailable ? `unavailable: ${r.unavailable}` : fixed(r.ns, 1), r.ns !== undefined ? ratio(r.ns / pass) : '', r.insns !== undefined ? String(r.insns) : '']);
}

function profileText(p: ProfileResult, d: DataplaneResult | undefined): string[] {
  const ns = (rows: ProfileRow[], id: string) => rows.find((r) => r.id === id)?.ns;
  const pass = p.floors.pass;
  const lines: string[] = [];
  const l0 = ns(p.ladder, 'l0_dst');
  const l1 = ns(p.ladder, 'l1_parse');
  const l3 = ns(p.ladder, 'l3_table');
  const l5 = ns(p.ladder, 'l5_count');
  const call = ns(p.cuts, 'cut_call');
  const table = ns(p.cuts, 'cut_table');
  const whole = ns(p.cuts, 'whole');
  const ports16 = ns(p.cuts, 'ports16');
  const notVip = d ? Math.min(...d.sizes.map((s) => s.cases.notVip.ns.median)) : undefined;
  const def = (...xs: Array<number | undefined>) => xs.every((x) => x !== undefined && Number.isFinite(x));
  if (def(l0, l1, notVip)) {
    lines.push(
      `- **Not for a VIP.** Reading Ethernet and the IPv4 destination and comparing it with one VIP costs ${fixed(l0! - pass, 1)} ns over ` +
        `XDP_PASS (${ratio(l0! / pass)}). xdpvs reads the destination and looks it up in the generated VIP filter (a bitmap, one ` +
        `multiplication to find the bit) before it validates or clears anything else, so its not-for-a-VIP path costs ${fixed(notVip, 1)} ns ` +
        `(${ratio(notVip! / pass)}) at any number of services: the filter and the per-CPU \`totals\` counter are the difference. ` +
        `A frame for a VIP then has every header up to the ports validated, which alone costs ${fixed(l1! - pass, 1)} ns (${ratio(l1! / pass)}).`,
    );
  }
  if (def(l5, call, table, whole, l1, l3)) {
    lines.push(
      `- **Established flow.** The minimal DR forwarder built on the same parser and hash (the ladder's last step) costs ` +
        `${fixed(l5, 1)} ns (${ratio(l5! / p.floors.macSwap)} the MAC swap); xdpvs's established path costs ${fixed(whole, 1)} ns ` +
        `(${ratio(whole! / p.floors.macSwap)}). Of that, parsing, matching the service and calling \`xdpvs_forward()\` take ${fixed(call, 1)} ns; ` +
        `hashing the flow and reading the table ${fixed(table! - call!, 1)} ns (the ladder does the same in ${fixed(l3! - l1!, 1)} ns); ` +
        `checking the backend, rewriting, counting and the rest of \`xdpvs_forward()\` ${fixed(whole! - table!, 1)} ns ` +
        `(the ladder: ${fixed(l5! - l3!, 1)} ns). The parse alone is ${fixed(l1! - pass, 1)} ns over the bare XDP_PASS.`,
    );
  }
  if (def(whole, ports16)) {
    const saved = whole! - ports16!;
    lines.push(
      saved > 1.5
        ? `- **A store-forwarding stall in the hash.** The parser stores the ports as two 16-bit fields of \`struct xdpvs_packet\` on the ` +
            `stack, and \`xdpvs_forward()\` (a separate function, so the packet goes through memory) hashes them as one 32-bit word, ` +
            `which clang loads with one 32-bit load. A load that spans two earlier stores cannot be served from the store buffer and ` +
            `waits for both to reach the cache. Reading the two ports as 16-bit loads (a one-line change in \`bpf/hash.h\`, the hash ` +
            `unchanged) takes the whole path from ${fixed(whole, 1)} to ${fixed(ports16, 1)} ns, ${fixed(saved, 1)} ns less. ` +
            `The connection-table lookups read the same key (the kernel hashes the 40-byte key in 32-bit words), so they may meet the same stall; that is not measured separately here.`
        : `- Reading the ports as two 16-bit loads in the hash changes the whole path by ${fixed(saved, 1)} ns (${fixed(whole, 1)} → ${fixed(ports16, 1)} ns): no store-forwarding stall to speak of.`,
    );
  }
  const big = ns(p.newFlow, 'syn_big');
  const small = ns(p.newFlow, 'syn_small');
  if (def(big, small)) {
    lines.push(
      `- **New flow.** A first SYN costs ${fixed(big, 0)} ns with the default connection table and ${fixed(small, 0)} ns with a table ` +
        `of 65,536 entries: the difference is cache misses in a table of a million entries (its buckets and preallocated elements are ` +
        `over 100 MiB, far beyond the caches), not code. Every new flow writes one entry at a random place in the table, and once ` +
        `the table is full the LRU also has to find an entry to evict. A SYN of a flow already recorded (the “SYN, repeated” case) ` +
        `finds its entry in cache and costs what a lookup, the coarse clock and the counters cost.`,
    );
  }
  const flood = p.newFlow.find((r) => r.id === 'syn_flood');
  if (def(flood?.ns, big) && flood?.recorded !== undefined) {
    lines.push(
      flood.recorded < 0.95
        ? `- **SYN flood.** With the default \`connRecordRate\` a run of first SYNs as fast as the test run sends them goes well past the budget of ` +
            `new records per second: ${(flood.recorded * 100).toFixed(0)}% were recorded and a first SYN cost ${fixed(flood.ns, 0)} ns (against ${fixed(big, 0)} ns ` +
            'when every one is recorded). The rest are forwarded all the same without a record, so a flood cannot push recorded flows out of the table faster than the budget.'
        : `- With the default \`connRecordRate\` the runs of first SYNs stayed within the budget's burst here (${(flood.recorded * 100).toFixed(0)}% recorded, ${fixed(flood.ns, 0)} ns): too few packets per run to meet the limit.`,
    );
  }
  lines.push(`- \`bpftool prog profile\` (hardware counters): ${p.bpftoolProfile.replace(/\n/g, ' ')}; no PMU is exposed to this VM either (no \`cpu\` event source), and Debian's bpftool cannot disassemble JITed code (no libbfd), so the instruction counts above are of the program after the verifier (\`bpftool prog dump xlated\`).`);
  return lines;
}

// ---------------------------------------------------------------------------------------------
// control plane and end to end

function controlTable(c: ControlResult): { header: string[]; align: Array<'l' | 'r'>; rows: string[][] } {
  const header = ['services', 'backends', 'validate', 'compile', 'load (first)', 'weight 0 in file + load: command / data plane', ...(c.backendSetAvailable ? ['backend set: command / data plane'] : []), 'stats --json', 'map memory'];
  const align: Array<'l' | 'r'> = header.map((_, i) => (i < 2 ? 'r' : 'r'));
  const ms = (x: number) => (Number.isFinite(x) ? seconds(x) : '—');
  const rows = c.sizes.map((s) => [
    thousands(s.size.services),
    thousands(s.size.backends),
    ms(s.validateMs),
    ms(s.compileMs),
    ms(s.loadMs),
    s.reload ? `${ms(s.reload.commandMs)} / ${ms(s.reload.dataPlaneMs)}` : s.error ? `failed: ${s.error.slice(0, 80)}` : '—',
    ...(c.backendSetAvailable ? [s.backendSet ? `${ms(s.backendSet.commandMs)} / ${ms(s.backendSet.dataPlaneMs)}` : '—'] : []),
    ms(s.statsJsonMs),
    s.memory.total ? bytes(s.memory.total) : '—',
  ]);
  return { header, align, rows };
}

function memoryRows(c: ControlResult): string[][] {
  const sizes = c.sizes.filter((s) => s.memory.total > 0);
  const names = [...new Set(sizes.flatMap((s) => s.memory.maps.map((m) => m.name)))];
  return names.map((name) => {
    const first = sizes.flatMap((s) => s.memory.maps).find((m) => m.name === name)!;
    return [
      `\`${name}\``,
      first.type,
      ...sizes.map((s) => {
        const m = s.memory.maps.find((x) => x.name === name);
        return m ? `${bytes(m.bytes)}${m.inner ? ` (${thousands(m.inner)} table${m.inner === 1 ? '' : 's'})` : ''}` : '—';
      }),
    ];
  });
}

function e2eTable(e: E2eResult): { header: string[]; align: Array<'l' | 'r'>; rows: string[][] } {
  const header = ['mode', 'path', 'requests/s', 'vs direct', 'throughput', 'p50 latency', 'p99 latency', 'errors'];
  const align: Array<'l' | 'r'> = ['l', 'l', 'r', 'r', 'r', 'r', 'r', 'r'];
  const rows: string[][] = [];
  for (const mode of MODES) {
    const direct = e.cells.find((c) => c.mode === mode && c.target === 'direct');
    for (const target of TARGETS) {
      const c = e.cells.find((x) => x.mode === mode && x.target === target);
      if (!c) continue;
      rows.push([
        MODE_LABELS[mode],
        TARGET_LABELS[target],
        thousands(c.requestsPerSec),
        direct ? ratio(c.requestsPerSec / direct.requestsPerSec) : '',
        `${bytes(c.bytesPerSec)}/s`,
        `${fixed(c.p50Ms, 2)} ms`,
        `${fixed(c.p99Ms, 2)} ms`,
        String(c.errors),
      ]);
    }
  }
  return { header, align, rows };
}

// ---------------------------------------------------------------------------------------------

export function renderTerminal(run: BenchRun): string {
  const out: string[] = [];
  const m = run.machine;
  out.push(`xdpvs benchmarks, ${m.date}: ${m.cpu}, ${m.cpus} CPUs, ${m.kernel}${run.quick ? '  (BENCH_QUICK=1: a fast pass, not for the record)' : ''}`);
  if (run.dataplane) {
    const t = dataplaneTable(run.dataplane);
    out.push('', `Data plane, ns per packet (× XDP_PASS / × MAC swap), median of ${run.dataplane.rounds} runs of ${thousands(run.dataplane.repeat)}:`, textTable(t.header, t.align, t.rows));
    out.push('', 'Targets:', textTable(['target', 'figure', ''], ['l', 'l', 'l'], summaryRows(run.dataplane).map((r) => r.map((c) => c.replace(/\*\*/g, '')))));
  }
  if (run.profile) {
    const p = run.profile;
    out.push('', 'Where the time goes (ns per packet, × XDP_PASS, BPF instructions):');
    out.push(textTable(['step', 'ns', '× PASS', 'insns'], ['l', 'r', 'r', 'r'], profileRows([...p.ladder, ...p.cuts, ...p.newFlow], p.floors.pass)));
  }
  if (run.control) {
    const t = controlTable(run.control);
    out.push('', `Control plane (each command a whole CLI process; node starts in ${seconds(run.control.nodeStartMs)}):`, textTable(t.header, t.align, t.rows));
  }
  if (run.e2e) {
    const t = e2eTable(run.e2e);
    out.push('', `End to end in the lab (wrk in the client namespace, ${run.e2e.options.threads} thread(s), ${run.e2e.options.connections} connections, median of ${run.e2e.options.runs} × ${run.e2e.options.durationS} s):`, textTable(t.header, t.align, t.rows));
    if (run.e2e.error) out.push(`end to end failed: ${run.e2e.error}`);
  }
  for (const [part, msg] of Object.entries(run.failures)) out.push('', `${part} failed: ${msg}`);
  return `${out.join('\n')}\n`;
}

export function renderMarkdown(run: BenchRun, chartFile: string | undefined): string {
  const m = run.machine;
  const out: string[] = [];
  out.push('# Benchmarks');
  out.push('');
  out.push(`Written by \`make bench\` (\`node dist/bench/main.js\`) from the run of **${m.date}**${run.quick ? ' — a quick pass (`BENCH_QUICK=1`): fewer and shorter runs, not for the record' : ''}. ` +
    'Every figure below comes from that one run; run `make bench` again to measure your machine.');
  out.push('');
  out.push(markdownTable(['machine', ''], ['l', 'l'], [
    ['CPU', `${m.cpu}, ${m.cpus} CPUs`],
    ['memory', m.memory],
    ['kernel', m.kernel],
    ['virtualization', m.virtualization],
    ['toolchain', `Node.js ${m.node}, ${m.clang}`],
    ['xdpvs', m.source],
    ['bench time', Object.entries(run.durations).map(([k, v]) => `${k} ${seconds(v)}`).join(', ')],
  ]));
  out.push('');
  out.push('Absolute numbers move from machine to machine (and from VM to VM of the same kind); the ratios to the floors, measured in the same run, interleaved, are what carries over.');

  if (run.dataplane) {
    const d = run.dataplane;
    const short = inShort(d, run.profile, run.e2e);
    if (short.length > 0) out.push('', '## In short', '', ...short);
    out.push('', '## The design\'s targets', '');
    out.push(markdownTable(['target', 'figure', ''], ['l', 'l', 'l'], summaryRows(d)));
    out.push('', `“Flat” here means within ${FLAT_WITHIN * 100}% from the fewest to the most services at the same number of backends.`);

    out.push('', '## 1. Data plane, per packet', '');
    out.push(
      `Each size's program is generated, compiled and loaded as \`xdpvs load\` does it, its maps filled the same way, and run with ` +
        `\`BPF_PROG_TEST_RUN\` (never attached). Each case is ${thousands(d.repeat)} packets per run; the figure is the median of ` +
        `${d.rounds} runs, interleaved with two floor programs the bench builds itself — \`XDP_PASS\`, and a MAC swap + \`XDP_TX\` (the ` +
        `least any DR forwarder does) — in an order that rotates from run to run. Cells read *ns per packet (× XDP_PASS / × MAC swap)*; ` +
        `✓/✗ marks the design's target where it has one. Sizes are services × backends in all, spread evenly (a service needs at least ` +
        'one backend, so 100 and 10,000 services are not run with 10 backends, nor 10,000 with 1,000).',
    );
    out.push('');
    const t = dataplaneTable(d);
    out.push(markdownTable(t.header, t.align, t.rows));
    if (chartFile) out.push('', `![ns per packet per case and size, against the floors](${chartFile})`);
    out.push('', '**How it is timed.** The CPU time of the bench process around each test run (getrusage), less the fixed cost of a ' +
      `test-run call (about ${fixed(median(d.sizes.map((s) => s.fixedCallUs)), 0)} µs, measured with repeat = 2 between the runs), divided by the repeat count. ` +
      'Not the wall clock: for a run with repeat > 1 the kernel puts the program into the XDP dispatcher before the loop and takes it out after, ' +
      'and each change waits for an RCU grace period. In this run the calls spent ' +
      `${fixed(d.callIdleMs.min, 0)}–${fixed(d.callIdleMs.max, 0)} ms (median ${fixed(d.callIdleMs.median, 0)}) not running, in steps of the scheduler tick: ` +
      `${fixed((d.callIdleMs.min * 1e6) / d.repeat, 0)}–${fixed((d.callIdleMs.max * 1e6) / d.repeat, 0)} ns per packet the wall clock would have added, unevenly. ` +
      "The kernel's own average (whole ns, without those waits) is a cross-check: " +
      `over the cases without the harness it differs from these figures by ${fixed(kernelAgreement(d), 1)} ns at most ` +
      `(for the established IPv4 case it said ${d.sizes.map((s) => s.cases.est4.kernelNs).join(', ')} ns for the sizes above).`);
    out.push('', '**What each case measures.**', '');
    out.push('- *Established TCP* (IPv4, IPv6, 802.1Q-tagged): an ACK of a flow whose table slot is not marked, so the connection table is not consulted (the bench checks that the flow is not in it). The frame is the same for every packet, so its slot is always in cache.');
    out.push('- *Another flow every packet*: the same ACK, but a harness program adds one to the IPv4 source address before tail-calling the xdpvs program, so every packet hashes to another slot (a realistic spread over the table). The harness\'s own cost, measured in front of XDP_PASS, is subtracted ' +
      `(${d.sizes.map((s) => fixed(s.harnessNs, 1)).join(', ')} ns).`);
    out.push('- *SYN, repeated*: the same SYN again and again. After the first packet the flow is in the connection table, so this measures a SYN that hits its recorded entry (a lookup, the coarse clock, the counters) — a retransmitted SYN, not a new flow.');
    const recorded = d.sizes.map((s) => s.synFirstRecorded);
    out.push('- *First SYN*: a true new flow every packet — the harness makes each SYN come from an address never seen before (each run starts where the last one ended), so every packet is scheduled and recorded in the connection table, which fills up and then evicts its least recently used entries. ' +
      'The bench sets `connRecordRate` to its maximum, so that the data path records every new flow rather than only its budget per second (the profile below shows what the default does to a flood). ' +
      (recorded.every((x) => x > 0.99)
        ? 'Every one of them was recorded.'
        : `Share actually recorded: ${recorded.map((x) => `${(x * 100).toFixed(0)}%`).join(', ')}.`));
    out.push('- *UDP*: a datagram of a flow already recorded: every datagram consults the connection table (UDP has no handshake to mark a start).');
    out.push('- *Not for a VIP*: a TCP frame to an address in the VIPs\' range that is no VIP; passed to the kernel.');
    const obs = dataplaneObservations(d);
    if (obs.length > 0) out.push('', '**What the table shows besides the targets.**', '', ...obs);
    out.push('', 'Each size with one service builds three programs, a TCP/IPv4, a UDP and a TCP/IPv6 one, since one service cannot be all three. Programs (the TCP/IPv4 one of each size):', '');
    out.push(markdownTable(['size', 'BPF instructions (xlated)', 'JITed bytes', 'generate + clang', 'load + fill maps'], ['l', 'r', 'r', 'r', 'r'],
      d.sizes.map((s) => [sizeLabel(s.size), thousands(s.program.xlatedInsns), thousands(s.program.jitedBytes), seconds(s.program.buildMs), seconds(s.program.loadMs)])));
  }

  if (run.profile) {
    const p = run.profile;
    out.push('', '## Where the data plane\'s time goes', '');
    out.push('Measured the same way, on the one-service program. The ladder is a set of minimal programs built by the bench on xdpvs\'s own parser and hash (`bpf/parse.h`, `bpf/hash.h`), one step of a DR forwarder more in each; the cuts are the generated program with `xdpvs_forward()` made to return `XDP_TX` early (a patched copy of `bpf/forward.h`).', '');
    out.push(markdownTable(['step', 'ns/packet', '× XDP_PASS', 'BPF insns'], ['l', 'r', 'r', 'r'], [
      ['floor: XDP_PASS', fixed(p.floors.pass, 1), '1.00×', '2'],
      ['floor: MAC swap + XDP_TX', fixed(p.floors.macSwap, 1), ratio(p.floors.macSwap / p.floors.pass), ''],
      ...profileRows([...p.ladder, ...p.cuts, ...p.newFlow], p.floors.pass),
    ]));
    out.push('', ...profileText(p, run.dataplane));
  }

  if (run.control) {
    const c = run.control;
    out.push('', '## 2. Control plane', '');
    out.push('Through the CLI as an operator runs it, in a throw-away network namespace on a veth (native XDP), with pin and state roots of its own. ' +
      `Every command is a whole \`node bin/xdpvs\` process; Node.js itself takes ${seconds(c.nodeStartMs)} to start here (\`xdpvs --version\`), included in every figure. ` +
      '10 backends per service, 6 for 10,000 services (60,000 in all, near the limit of 65,536). *load (first)*: validate, generate, clang, the verifier, filling the maps, the attach. ' +
      '*Weight 0 in file + load*: one backend of a service set to weight 0 in the file and `xdpvs load` run again; *data plane*: from the start of that command until the attached program, polled every millisecond with `BPF_PROG_TEST_RUN`, sent a flow of that backend elsewhere. ' +
      (c.backendSetAvailable ? '*backend set*: the same with `xdpvs backend set SERVICE IP --weight 0 --no-save`, for another backend. ' : '`xdpvs backend set` did not exist when this ran. ') +
      '*stats --json*: the median of three. *Map memory*: the memlock of every map the program uses, the inner scheduling tables included.', '');
    const t = controlTable(c);
    out.push(markdownTable(t.header, t.align, t.rows));
    const mem = memoryRows(c);
    if (mem.length > 0) {
      out.push('', 'Map memory by map:', '');
      out.push(markdownTable(['map', 'type', ...c.sizes.filter((s) => s.memory.total > 0).map((s) => sizeLabel(s.size))], ['l', 'l', ...c.sizes.filter((s) => s.memory.total > 0).map(() => 'r' as const)], mem));
    }
  }

  if (run.e2e) {
    const e = run.e2e;
    out.push('', '## 3. End to end in the lab', '');
    out.push(`The lab's LVS-DR network in namespaces (a bridge, a client, the director, three real servers), brought up by the bench under a name of its own and always taken down. ` +
      `The load generator is **wrk ${e.wrkVersion}** (Debian's package), run inside the client's namespace: ${e.options.threads} thread(s), ${e.options.connections} connections, ` +
      `${e.options.durationS} s per run, the median of ${e.options.runs} run(s) per cell, the paths interleaved. Three paths to the same real servers: the VIP through xdpvs ` +
      `(native XDP on the director; replies go from the real servers straight to the client), the client talking to one real server directly, and ` +
      `**HAProxy ${e.haproxyVersion}** (Debian's package) in TCP mode on the director's own address, roundrobin over the same three real servers (a full proxy: both directions pass through it). ` +
      'Short connections: a new TCP connection per request (`Connection: close`); long: keep-alive; both against the lab\'s own server, which answers with its name. ' +
      'Bulk: keep-alive, 1 MiB answers from a small server the bench starts on each real server.', '');
    const t = e2eTable(e);
    out.push(markdownTable(t.header, t.align, t.rows));
    out.push('', `Everything — wrk, the director's XDP and HAProxy, three real servers' Node.js processes, the bridge — shares this machine's ${m.cpus} CPUs, ` +
      'so these figures compare the paths under the same load rather than show what the director alone could carry. ' +
      'A direct path is the ceiling of what one real server gives; xdpvs and HAProxy spread over three but add a hop.');
    const cell = (target: string, mode: string) => e.cells.find((c) => c.target === target && c.mode === mode);
    const bx = cell('xdpvs', 'bulk');
    const bh = cell('haproxy', 'bulk');
    if (bx && bh && bh.bytesPerSec > 0) {
      out.push('', `In bulk, xdpvs carried ${(bx.bytesPerSec / bh.bytesPerSec).toFixed(1)}× what HAProxy did (${bytes(bx.bytesPerSec)}/s against ${bytes(bh.bytesPerSec)}/s): ` +
        'in direct routing the answers go from the real servers straight to the client and the director only sees the requests and ACKs, while a proxy ' +
        'receives and sends every byte of every answer on the same CPUs that run everything else here.');
    }
    if (e.xdpvsSpread) out.push('', `New connections the director counted per real server over the xdpvs runs (warm-up included): ${Object.entries(e.xdpvsSpread).map(([ip, n]) => `${ip} ${thousands(n)}`).join(', ')}.`);
    if (e.error) out.push('', `**The end-to-end part failed:** ${e.error}`);
  }
  for (const [part, msg] of Object.entries(run.failures)) out.push('', `**${part} failed:** ${msg}`);
  out.push('');
  return out.join('\n');
}
