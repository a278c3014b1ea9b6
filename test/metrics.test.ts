/**
 * The daemon's Prometheus metrics: rendered, then read back with a parser of the text exposition
 * format written here (not the renderer's own code): every family has HELP and TYPE before its
 * samples, names and labels are valid and follow the naming conventions, label values round-trip
 * through escaping, histograms are cumulative. Then on a loaded program in a throw-away
 * namespace: two scrapes with frames through the pinned program in between, whose counters only
 * grow, by exactly what was sent.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BpfProgram, withNetns, XdpAction } from '../src/libbpf.js';
import { flowFrame, TCP_ACK, TCP_SYN } from '../src/net/frames.js';
import { escapeHelp, escapeLabelValue, formatValue, Histogram, renderExposition, type MetricFamily } from '../src/daemon/exposition.js';
import { TestNetns } from './helpers/netns.js';

const NS = `xdpvs-mt-${process.pid}`;
// src/paths.ts reads the roots when it is first imported: set them before importing what uses it
process.env.XDPVS_PIN_ROOT = `/sys/fs/bpf/${NS}`;
process.env.XDPVS_RUN_ROOT = `/run/${NS}`;
const { buildFamilies, readDataPlane, HEALTHCHECK_BUCKETS } = await import('../src/daemon/metrics.js');
type DataPlaneSnapshot = import('../src/daemon/metrics.js').DataPlaneSnapshot;
type HealthCheckStats = import('../src/daemon/metrics.js').HealthCheckStats;
type DaemonStats = import('../src/daemon/metrics.js').DaemonStats;

// ---------------------------------------------------------------------------------------------
// a parser of the text exposition format (0.0.4)
// ---------------------------------------------------------------------------------------------

interface ParsedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
  line: number;
}

interface ParsedFamily {
  name: string;
  help?: string;
  type?: string;
  samples: ParsedSample[];
}

interface Parsed {
  families: Map<string, ParsedFamily>;
  samples: ParsedSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*/;

function unescape(s: string, allowQuote: boolean, where: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] !== '\\') {
      out += s[i];
      continue;
    }
    const c = s[++i];
    if (c === '\\') out += '\\';
    else if (c === 'n') out += '\n';
    else if (c === '"' && allowQuote) out += '"';
    else throw new Error(`${where}: bad escape \\${c ?? ''}`);
  }
  return out;
}

function parseValue(s: string, where: string): number {
  if (s === 'NaN') return NaN;
  if (s === '+Inf' || s === 'Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`${where}: bad value ${JSON.stringify(s)}`);
  return Number(s);
}

/** The family a sample belongs to: its own name, or a histogram's/summary's for _bucket, _sum, _count. */
function familyOf(name: string, families: Map<string, ParsedFamily>): ParsedFamily | undefined {
  const own = families.get(name);
  if (own) return own;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  const base = m && families.get(m[1]!);
  if (base && (base.type === 'histogram' || (base.type === 'summary' && m![2] !== 'bucket'))) return base;
  return undefined;
}

function parseExposition(text: string): Parsed {
  if (text !== '' && !text.endsWith('\n')) throw new Error('the exposition must end with a line feed');
  const families = new Map<string, ParsedFamily>();
  const samples: ParsedSample[] = [];
  const finished = new Set<string>();
  let current: string | undefined;
  const lines = text.split('\n');
  lines.pop();
  lines.forEach((line, i) => {
    const where = `line ${i + 1}`;
    if (line.trim() === '') return;
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string];
      if (!NAME.test(name) || NAME.exec(name)![0] !== name) throw new Error(`${where}: bad metric name ${name}`);
      const f = families.get(name) ?? { name, samples: [] };
      if (f.samples.length > 0) throw new Error(`${where}: ${kind} for ${name} after its samples`);
      if (kind === 'HELP') {
        if (f.help !== undefined) throw new Error(`${where}: second HELP for ${name}`);
        f.help = unescape(rest, false, where);
      } else {
        if (f.type !== undefined) throw new Error(`${where}: second TYPE for ${name}`);
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`${where}: bad type ${rest}`);
        f.type = rest;
      }
      families.set(name, f);
      return;
    }
    if (line.startsWith('#')) return; // a comment
    const nameMatch = NAME.exec(line);
    if (!nameMatch) throw new Error(`${where}: no metric name: ${line}`);
    const name = nameMatch[0];
    let pos = name.length;
    const labels: Record<string, string> = {};
    if (line[pos] === '{') {
      pos++;
      while (line[pos] !== '}') {
        const l = LABEL.exec(line.slice(pos));
        if (!l) throw new Error(`${where}: bad label name at column ${pos + 1}`);
        pos += l[0].length;
        if (line.slice(pos, pos + 2) !== '="') throw new Error(`${where}: expected =" after ${l[0]}`);
        pos += 2;
        let raw = '';
        while (pos < line.length && line[pos] !== '"') {
          if (line[pos] === '\\') raw += line[pos++];
          raw += line[pos++];
        }
        if (line[pos] !== '"') throw new Error(`${where}: unterminated label value`);
        pos++;
        if (l[0] in labels) throw new Error(`${where}: label ${l[0]} twice`);
        labels[l[0]] = unescape(raw, true, where);
        if (line[pos] === ',') pos++;
        else if (line[pos] !== '}') throw new Error(`${where}: expected , or } at column ${pos + 1}`);
      }
      pos++;
    }
    const rest = line.slice(pos);
    if (!/^ \S+( -?\d+)?$/.test(rest)) throw new Error(`${where}: expected " VALUE [TIMESTAMP]", got ${JSON.stringify(rest)}`);
    const value = parseValue(rest.trim().split(' ')[0]!, where);
    const family = familyOf(name, families);
    if (!family) throw new Error(`${where}: sample ${name} without a TYPE line before it`);
    if (family.name !== current) {
      if (finished.has(family.name)) throw new Error(`${where}: samples of ${family.name} are not in one group`);
      if (current) finished.add(current);
      current = family.name;
    }
    const sample = { name, labels, value, line: i + 1 };
    family.samples.push(sample);
    samples.push(sample);
  });
  return { families, samples };
}

const seriesId = (s: { name: string; labels: Record<string, string> }) =>
  `${s.name}{${Object.keys(s.labels).sort().map((k) => `${k}=${JSON.stringify(s.labels[k])}`).join(',')}}`;

/** What Prometheus' conventions ask of an exporter's output; returns the problems found. */
function conventionProblems(p: Parsed): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const f of p.families.values()) {
    if (!f.name.startsWith('xdpvs_')) problems.push(`${f.name}: not in the xdpvs_ namespace`);
    if (!f.help) problems.push(`${f.name}: no HELP`);
    if (!f.type) problems.push(`${f.name}: no TYPE`);
    if (f.type === 'counter' && !f.name.endsWith('_total')) problems.push(`${f.name}: a counter's name ends in _total`);
    if (f.type !== 'counter' && f.name.endsWith('_total')) problems.push(`${f.name}: only counters end in _total`);
    if (/_(ms|milliseconds|kb|mb|percent)(_|$)/.test(f.name)) problems.push(`${f.name}: not a base unit`);
    if (f.samples.length === 0) problems.push(`${f.name}: declared without samples`);
    for (const s of f.samples) {
      for (const k of Object.keys(s.labels)) if (k.startsWith('__')) problems.push(`${s.name}: reserved label ${k}`);
      const id = seriesId(s);
      if (seen.has(id)) problems.push(`${id}: twice`);
      seen.add(id);
      if (f.type === 'counter' && !(s.value >= 0)) problems.push(`${id}: a counter below 0`);
    }
    if (f.type === 'histogram') {
      const groups = new Map<string, ParsedSample[]>();
      for (const s of f.samples) {
        const { le: _le, ...rest } = s.labels;
        const key = seriesId({ name: f.name, labels: rest });
        groups.set(key, [...(groups.get(key) ?? []), s]);
      }
      for (const [key, g] of groups) {
        const buckets = g.filter((s) => s.name === `${f.name}_bucket`);
        const count = g.find((s) => s.name === `${f.name}_count`);
        const sum = g.find((s) => s.name === `${f.name}_sum`);
        if (!count || !sum) problems.push(`${key}: no _count or _sum`);
        const les = buckets.map((b) => parseValue(b.labels.le ?? '', key));
        if (les.at(-1) !== Infinity) problems.push(`${key}: the last bucket is not le="+Inf"`);
        if (les.some((le, i) => i > 0 && !(le > les[i - 1]!))) problems.push(`${key}: buckets not in ascending order of le`);
        if (buckets.some((b, i) => i > 0 && b.value < buckets[i - 1]!.value)) problems.push(`${key}: buckets not cumulative`);
        if (count && buckets.at(-1)?.value !== count.value) problems.push(`${key}: +Inf bucket differs from _count`);
      }
    }
  }
  return problems;
}

const value = (p: Parsed, name: string, labels: Record<string, string>): number | undefined =>
  p.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;

// ---------------------------------------------------------------------------------------------
// pure
// ---------------------------------------------------------------------------------------------

t.test('the parser itself rejects what the format forbids', async (t) => {
  t.throws(() => parseExposition('x 1\n'), /without a TYPE/);
  t.throws(() => parseExposition('# TYPE x gauge\nx{a="1} 1\n'), /unterminated|expected/);
  t.throws(() => parseExposition('# TYPE x gauge\nx{a="\\q"} 1\n'), /bad escape/);
  t.throws(() => parseExposition('# TYPE x gauge\n# TYPE y gauge\nx 1\ny 1\nx{a="b"} 2\n'), /not in one group/);
  t.throws(() => parseExposition('# TYPE x gauge\nx one\n'), /bad value/);
  t.throws(() => parseExposition('# TYPE x gauge\nx 1'), /line feed/);
  const p = parseExposition('# HELP x a \\\\ b\\nc\n# TYPE x gauge\nx{a="q\\"\\\\\\n",b="2",} +Inf 123\n');
  t.equal(p.families.get('x')!.help, 'a \\ b\nc');
  t.same(p.samples[0]!.labels, { a: 'q"\\\n', b: '2' });
  t.equal(p.samples[0]!.value, Infinity);
});

t.test('escaping and values', async (t) => {
  t.equal(escapeLabelValue('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
  t.equal(escapeHelp('a"b\\c\nd'), 'a"b\\\\c\\nd', 'HELP keeps double quotes');
  t.same([NaN, Infinity, -Infinity, 0, 12, 0.25, 1e21].map(formatValue), ['NaN', '+Inf', '-Inf', '0', '12', '0.25', '1e+21']);
  t.throws(() => renderExposition([{ name: 'bad-name', help: 'x', type: 'gauge', samples: [{ labels: {}, value: 1 }] }]), /invalid metric name/);
  t.throws(() => renderExposition([{ name: 'x', help: 'x', type: 'gauge', samples: [{ labels: { __x: '1' }, value: 1 }] }]), /invalid label name/);
  t.throws(() => renderExposition([{ name: 'x', help: 'x', type: 'gauge', samples: [{ labels: { 'a-b': '1' }, value: 1 }] }]), /invalid label name/);
  const h = new Histogram([0.1, 1]);
  for (const v of [0.05, 0.1, 0.5, 3]) h.observe(v);
  t.same(h.counts, [2, 1, 1], 'a value on a bound counts in that bound\'s bucket');
  t.equal(h.count, 4);
  t.equal(h.sum, 3.65);
  const text = renderExposition([{ name: 'x_seconds', help: 'h', type: 'histogram', samples: [{ labels: { a: 'b' }, ...h }] }]);
  t.same(text.split('\n').filter((l) => !l.startsWith('#')), [
    'x_seconds_bucket{a="b",le="0.1"} 2',
    'x_seconds_bucket{a="b",le="1"} 3',
    'x_seconds_bucket{a="b",le="+Inf"} 4',
    'x_seconds_sum{a="b"} 3.65',
    'x_seconds_count{a="b"} 4',
    '',
  ]);
  const empty: MetricFamily[] = [{ name: 'x', help: 'x', type: 'gauge', samples: [] }];
  t.equal(renderExposition(empty), '', 'a family without samples is left out');
});

const snapshot: DataPlaneSnapshot = {
  iface: 'eth0',
  programId: 42,
  mode: 'native',
  attached: true,
  loadedAt: '2026-01-01T00:00:00.000Z',
  services: [
    {
      name: 'web',
      vip: '10.200.0.100',
      port: 80,
      protocol: 'tcp',
      backends: [
        { ip: '10.200.0.11', mac: '02:00:0a:c8:00:0b', weight: 1, state: 'up', connections: 10, packets: 100, bytes: 9000, activeConnections: 2, inactiveConnections: 1 },
        { ip: '10.200.0.12', mac: '02:00:0a:c8:00:0c', weight: 2, state: 'down', connections: 5, packets: 50, bytes: 4000, activeConnections: 1, inactiveConnections: 0 },
        { ip: '10.200.0.13', mac: '02:00:0a:c8:00:0d', weight: 0, state: 'draining', connections: 0, packets: 0, bytes: 0, activeConnections: 0, inactiveConnections: 0 },
      ],
    },
    {
      name: 'dns6',
      vip: 'fd00:200::100',
      port: 0,
      protocol: 'udp',
      backends: [{ ip: 'fd00:200::11', mac: '02:00:0a:c8:00:0b', weight: 1, state: 'up', connections: 3, packets: 3, bytes: 300, activeConnections: 0, inactiveConnections: 3 }],
    },
  ],
  totals: { forwarded: 153, passed: 7, droppedFragment: 1, droppedNoBackend: 2, droppedOther: 0 },
  connTable: { entries: 7, maxEntries: 1048576 },
};

function healthStats(service: string, backend: string, results: Array<[boolean, number]>): HealthCheckStats {
  const duration = new Histogram(HEALTHCHECK_BUCKETS);
  for (const [, s] of results) duration.observe(s);
  return { service, backend, type: 'tcp', success: results.filter(([ok]) => ok).length, failure: results.filter(([ok]) => !ok).length, duration };
}

const daemonStats: DaemonStats = {
  file: '/etc/xdpvs/we"ird\\dir\nservices.json',
  configSha256: 'ab'.repeat(32),
  startTime: 1767225600,
  applies: { success: 3, failure: 1 },
  lastApplySuccess: 1767225700.5,
  reloads: { success: 1, failure: 2 },
  lastReloadSuccessful: false,
  macChanges: 1,
};

t.test('the exposition parses and follows the conventions', async (t) => {
  const health = [healthStats('web', '10.200.0.11', [[true, 0.0004], [true, 0.002], [false, 0.5]]), healthStats('web', '10.200.0.12', [[false, 0.5], [false, 0.5]])];
  const text = renderExposition(buildFamilies(snapshot, health, daemonStats));
  const p = parseExposition(text);
  t.same(conventionProblems(p), [], 'no problem found');
  t.same(
    [...p.families.values()].map((f) => `${f.name} ${f.type}`),
    [
      'xdpvs_service_connections_total counter',
      'xdpvs_service_packets_total counter',
      'xdpvs_service_bytes_total counter',
      'xdpvs_backend_connections_total counter',
      'xdpvs_backend_packets_total counter',
      'xdpvs_backend_bytes_total counter',
      'xdpvs_backend_active_connections gauge',
      'xdpvs_backend_inactive_connections gauge',
      'xdpvs_backend_up gauge',
      'xdpvs_backend_state gauge',
      'xdpvs_backend_weight gauge',
      'xdpvs_backend_effective_weight gauge',
      'xdpvs_backend_info gauge',
      'xdpvs_healthcheck_total counter',
      'xdpvs_healthcheck_duration_seconds histogram',
      'xdpvs_program_info gauge',
      'xdpvs_program_attached gauge',
      'xdpvs_program_loaded_timestamp_seconds gauge',
      'xdpvs_connection_table_entries gauge',
      'xdpvs_connection_table_max_entries gauge',
      'xdpvs_totals_packets_total counter',
      'xdpvs_daemon_start_time_seconds gauge',
      'xdpvs_daemon_config_info gauge',
      'xdpvs_daemon_applies_total counter',
      'xdpvs_daemon_last_apply_success_timestamp_seconds gauge',
      'xdpvs_daemon_config_reloads_total counter',
      'xdpvs_daemon_config_last_reload_successful gauge',
      'xdpvs_daemon_mac_changes_total counter',
      'xdpvs_scrape_error gauge',
    ],
  );
  const web = { service: 'web', vip: '10.200.0.100', port: '80', protocol: 'tcp' };
  t.equal(value(p, 'xdpvs_service_connections_total', web), 15, 'a service is the sum of its backends');
  t.equal(value(p, 'xdpvs_service_packets_total', web), 150);
  t.equal(value(p, 'xdpvs_service_bytes_total', web), 13000);
  t.equal(value(p, 'xdpvs_service_packets_total', { service: 'dns6', vip: 'fd00:200::100', port: '0', protocol: 'udp' }), 3);
  const b12 = { service: 'web', backend: '10.200.0.12' };
  t.equal(value(p, 'xdpvs_backend_packets_total', { service: 'web', backend: '10.200.0.11' }), 100);
  t.equal(value(p, 'xdpvs_backend_up', b12), 0, 'down');
  t.equal(value(p, 'xdpvs_backend_up', { service: 'web', backend: '10.200.0.13' }), 1, 'draining is not down');
  t.same(
    p.samples.filter((s) => s.name === 'xdpvs_backend_state' && s.labels.backend === '10.200.0.12').map((s) => [s.labels.state, s.value]),
    [['up', 0], ['down', 1], ['draining', 0]],
    'one series per state, 1 for the current one',
  );
  t.equal(value(p, 'xdpvs_backend_weight', b12), 2);
  t.equal(value(p, 'xdpvs_backend_effective_weight', b12), 0, 'held down: weight 0 in the tables');
  t.equal(value(p, 'xdpvs_backend_active_connections', { service: 'web', backend: '10.200.0.11' }), 2);
  t.equal(value(p, 'xdpvs_backend_info', { service: 'web', backend: '10.200.0.11', mac: '02:00:0a:c8:00:0b' }), 1);
  t.equal(value(p, 'xdpvs_healthcheck_total', { service: 'web', backend: '10.200.0.11', result: 'success' }), 2);
  t.equal(value(p, 'xdpvs_healthcheck_total', { service: 'web', backend: '10.200.0.12', result: 'failure' }), 2);
  t.equal(value(p, 'xdpvs_healthcheck_duration_seconds_count', { backend: '10.200.0.11' }), 3);
  t.equal(value(p, 'xdpvs_healthcheck_duration_seconds_bucket', { backend: '10.200.0.11', le: '0.001' }), 1);
  t.equal(value(p, 'xdpvs_healthcheck_duration_seconds_bucket', { backend: '10.200.0.11', le: '0.5' }), 3);
  t.equal(value(p, 'xdpvs_program_info', { interface: 'eth0', id: '42', mode: 'native' }), 1);
  t.equal(value(p, 'xdpvs_program_loaded_timestamp_seconds', {}), 1767225600);
  t.equal(value(p, 'xdpvs_connection_table_entries', {}), 7);
  t.same(
    p.samples.filter((s) => s.name === 'xdpvs_totals_packets_total').map((s) => [s.labels.verdict, s.value]),
    [['forwarded', 153], ['passed', 7], ['dropped_fragment', 1], ['dropped_no_backend', 2], ['dropped_other', 0]],
  );
  const info = p.samples.find((s) => s.name === 'xdpvs_daemon_config_info')!;
  t.equal(info.labels.file, daemonStats.file, 'a label value with a quote, a backslash and a line feed round-trips');
  t.match(text, /file="\/etc\/xdpvs\/we\\"ird\\\\dir\\nservices\.json"/, 'escaped on the wire');
  t.equal(value(p, 'xdpvs_daemon_config_last_reload_successful', {}), 0);
  t.equal(value(p, 'xdpvs_scrape_error', {}), 0);
});

t.test('without a readable data plane: the daemon\'s own metrics and scrape_error 1', async (t) => {
  const p = parseExposition(renderExposition(buildFamilies(undefined, [], daemonStats)));
  t.same(conventionProblems(p), []);
  t.equal(value(p, 'xdpvs_scrape_error', {}), 1);
  t.notOk(p.families.has('xdpvs_program_info'), 'no program family without a program');
  t.ok(p.families.has('xdpvs_daemon_applies_total'));
});

// ---------------------------------------------------------------------------------------------
// on the machine: counters from the pinned maps
// ---------------------------------------------------------------------------------------------

const missing = ['ip', 'nsenter', 'clang'].filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0);
const skip = process.getuid?.() !== 0 ? 'needs root' : missing.length > 0 ? `needs ${missing.join(', ')}` : false;

t.test('counters read from the pinned maps only grow, by what went through', { skip }, async (t) => {
  const ns = new TestNetns(NS);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdpvs-mt-'));
  t.teardown(() => {
    ns.xdpvs(['unload', '-i', 'xva']);
    ns.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const file = path.join(dir, 'services.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      services: [
        {
          name: 'web', vip: '10.77.0.100', port: 80, protocol: 'tcp',
          backends: [{ ip: '10.77.0.11', weight: 1, mac: '02:00:00:00:00:11' }, { ip: '10.77.0.12', weight: 1, mac: '02:00:00:00:00:12' }],
          healthCheck: { type: 'none' },
        },
        {
          name: 'dns', vip: '10.77.0.101', port: 53, protocol: 'udp',
          backends: [{ ip: '10.77.0.11', weight: 1, mac: '02:00:00:00:00:11' }],
          healthCheck: { type: 'none' },
        },
      ],
    }),
  );
  const loaded = ns.xdpvs(['load', file, '-i', 'xva']);
  t.equal(loaded.status, 0, loaded.stderr);
  if (loaded.status !== 0) return;
  const prog = BpfProgram.fromPin(path.join(ns.pinRoot, 'xva', 'prog'));
  t.teardown(() => prog.close());
  // in the namespace, so that "attached" is judged on its xva
  const scrape = () => parseExposition(renderExposition(buildFamilies(withNetns(NS, () => readDataPlane('xva')), [])));

  const first = scrape();
  t.same(conventionProblems(first), [], 'the real exposition follows the conventions');
  t.equal(value(first, 'xdpvs_program_attached', { interface: 'xva' }), 1, 'attached');
  t.equal(value(first, 'xdpvs_program_info', { interface: 'xva', mode: 'native' }), 1, 'program info');
  t.equal(value(first, 'xdpvs_connection_table_max_entries', {}), 1048576, 'connection table size');

  let webBytes = 0;
  let dnsBytes = 0;
  const send = (frame: Buffer, verdict: number) => {
    const r = prog.testRun(frame);
    t.equal(r.retval, verdict, `verdict ${verdict}`);
    return frame.length;
  };
  for (let p = 41000; p < 41006; p++) webBytes += send(flowFrame({ src: '10.77.0.2', dst: '10.77.0.100', proto: 'tcp', sport: p, dport: 80, flags: TCP_SYN }), XdpAction.TX);
  for (let p = 41000; p < 41003; p++) webBytes += send(flowFrame({ src: '10.77.0.2', dst: '10.77.0.100', proto: 'tcp', sport: p, dport: 80, flags: TCP_ACK, payload: Buffer.alloc(50) }), XdpAction.TX);
  dnsBytes += send(flowFrame({ src: '10.77.0.2', dst: '10.77.0.101', proto: 'udp', sport: 5000, dport: 53, payload: Buffer.from('q') }), XdpAction.TX);
  send(flowFrame({ src: '10.77.0.2', dst: '10.77.0.1', proto: 'tcp', sport: 41100, dport: 22 }), XdpAction.PASS);
  send(flowFrame({ src: '10.77.0.2', dst: '10.77.0.1', proto: 'tcp', sport: 41101, dport: 22 }), XdpAction.PASS);

  const second = scrape();
  t.same(conventionProblems(second), []);
  const counters = (p: Parsed) => new Map(p.samples.filter((s) => p.families.get(s.name)?.type === 'counter').map((s) => [seriesId(s), s.value]));
  const before = counters(first);
  const after = counters(second);
  t.same([...before.keys()].filter((k) => !after.has(k)), [], 'every counter series is still there');
  t.same([...before].filter(([k, v]) => !(after.get(k)! >= v)).map(([k]) => k), [], 'no counter went back');
  const delta = (name: string, labels: Record<string, string>) => value(second, name, labels)! - value(first, name, labels)!;
  const web = { service: 'web', vip: '10.77.0.100', port: '80', protocol: 'tcp' };
  t.equal(delta('xdpvs_service_connections_total', web), 6, 'web: 6 new flows');
  t.equal(delta('xdpvs_service_packets_total', web), 9, 'web: 9 packets');
  t.equal(delta('xdpvs_service_bytes_total', web), webBytes, `web: ${webBytes} bytes`);
  t.equal(
    delta('xdpvs_backend_packets_total', { service: 'web', backend: '10.77.0.11' }) + delta('xdpvs_backend_packets_total', { service: 'web', backend: '10.77.0.12' }),
    9,
    'web\'s backends: the same 9 packets between them',
  );
  t.equal(delta('xdpvs_backend_bytes_total', { service: 'dns', backend: '10.77.0.11' }), dnsBytes, 'dns: its datagram');
  t.equal(delta('xdpvs_totals_packets_total', { verdict: 'passed' }), 2, 'totals: 2 passed');
  t.equal(delta('xdpvs_totals_packets_total', { verdict: 'forwarded' }), 10, 'totals: 10 forwarded');
  t.equal(value(second, 'xdpvs_connection_table_entries', {}), 7, 'the connection table holds the 7 new flows');
  const active = ['10.77.0.11', '10.77.0.12'].reduce((n, b) => n + value(second, 'xdpvs_backend_active_connections', { service: 'web', backend: b })!, 0);
  t.equal(active, 6, 'web: 6 active connections');
});
