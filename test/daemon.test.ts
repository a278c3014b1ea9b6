/**
 * `xdpvs daemon`: the pure parts (rise and fall, the checker's schedule, log lines, --metrics
 * addresses, the probes against local listeners), then the daemon itself in a throw-away
 * namespace. Its backends are addresses of the namespace's veth with small HTTP servers started
 * here; the daemon checks them from the same namespace, as it would from the director:
 *
 *   - a server killed: after `fall` failures the backend is down in `status --json`, has no slot
 *     in its service's table, and /metrics says so; restarted: up again after `rise`;
 *   - an HTTP check that gets 503 takes the backend down for that service only;
 *   - a backend with no MAC anywhere is held down until the neighbour table has one; a MAC that
 *     changes in the neighbour table is re-applied and logged;
 *   - a changed file is reloaded (tables swapped, same program); an invalid one, on change or on
 *     SIGHUP, is logged with its validation details and ignored;
 *   - SIGTERM: exit 0 with the program attached; a new daemon adopts it and its verdicts.
 */
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpfMap } from '../src/libbpf.js';
import { readRing } from '../src/runtime/datapath.js';
import { ringClassFor, RING_BACKEND_MASK } from '../src/sched/ring.js';
import { ringMapName } from '../src/codegen/program.js';
import { Checker, HealthState, probeHttp, probeTcp, type ProbeResult, type ProbeTarget } from '../src/daemon/health.js';
import { formatLogLine, Logger } from '../src/daemon/log.js';
import { parseListenAddress } from '../src/daemon/server.js';
import { TestNetns, sh } from './helpers/netns.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const bin = path.join(repo, 'bin', 'xdpvs');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// pure
// ---------------------------------------------------------------------------------------------

t.test('rise and fall', async (t) => {
  const h = new HealthState('up', 2, 3);
  t.same([false, false].map((ok) => h.record(ok)), [undefined, undefined], 'two failures: still up (fall 3)');
  t.equal(h.record(true), undefined, 'a success resets the failures');
  t.same([false, false, false].map((ok) => h.record(ok)), [undefined, undefined, 'down'], 'down at the third failure in a row');
  t.equal(h.record(false), undefined, 'more failures change nothing');
  t.same([true, false, true, true].map((ok) => h.record(ok)), [undefined, undefined, undefined, 'up'], 'up at the second success in a row');
  t.equal(h.verdict, 'up');
  const d = new HealthState('down', 1, 1);
  t.equal(d.record(true), 'up', 'rise 1: one success');
  t.equal(d.record(false), 'down', 'fall 1: one failure');
});

t.test('a checker probes every interval and reports changes', async (t) => {
  const results = [true, false, false, true, true];
  const seen: boolean[] = [];
  const changes: string[] = [];
  const times: number[] = [];
  const target: ProbeTarget = { type: 'tcp', host: '192.0.2.1', port: 1, timeoutMs: 10 };
  const fake = async (): Promise<ProbeResult> => {
    times.push(Date.now());
    const ok = results.shift() ?? true;
    return { ok, reason: ok ? 'fine' : 'broken', seconds: 0.001 };
  };
  const c = new Checker(target, 50, 'up', 2, 2, { onResult: (r) => seen.push(r.ok), onChange: (from, to, r, streak) => changes.push(`${from}->${to} ${r.reason} ${streak}`) }, fake);
  c.start(0);
  await sleep(600);
  c.stop();
  const n = seen.length;
  await sleep(150);
  t.equal(seen.length, n, 'no probe after stop');
  t.same(seen.slice(0, 5), [true, false, false, true, true]);
  t.same(changes, ['up->down broken 2', 'down->up fine 2']);
  const gaps = times.slice(1, 6).map((x, i) => x - times[i]!);
  t.ok(gaps.every((g) => g >= 40), `probes an interval apart (${gaps.join(', ')} ms)`);
});

t.test('log lines: text and JSON', async (t) => {
  const time = new Date('2026-01-02T03:04:05.678Z');
  const fields = { service: 'web', backend: '10.200.0.12', from: 'up', to: 'down', reason: 'connect to 10.200.0.12:80: ECONNREFUSED (2 consecutive failures, fall 2)', skipped: undefined };
  t.equal(
    formatLogLine('text', time, 'warn', 'backend-down', fields),
    '2026-01-02T03:04:05.678Z warn  backend-down service=web backend=10.200.0.12 from=up to=down reason="connect to 10.200.0.12:80: ECONNREFUSED (2 consecutive failures, fall 2)"',
  );
  t.same(JSON.parse(formatLogLine('json', time, 'warn', 'backend-down', fields)), {
    time: '2026-01-02T03:04:05.678Z',
    level: 'warn',
    event: 'backend-down',
    service: 'web',
    backend: '10.200.0.12',
    from: 'up',
    to: 'down',
    reason: 'connect to 10.200.0.12:80: ECONNREFUSED (2 consecutive failures, fall 2)',
  });
  t.equal(formatLogLine('text', time, 'error', 'reload-invalid', { details: ['a: x', 'b: "y"'], empty: '' }), '2026-01-02T03:04:05.678Z error reload-invalid details="a: x; b: \\"y\\"" empty=""');
  const lines: string[] = [];
  new Logger('json', (l) => lines.push(l), () => time).info('started', { n: 1 });
  t.same(lines, ['{"time":"2026-01-02T03:04:05.678Z","level":"info","event":"started","n":1}\n'], 'one line per event');
});

t.test('--metrics addresses', async (t) => {
  t.same(parseListenAddress('127.0.0.1:9469'), { host: '127.0.0.1', port: 9469 });
  t.same(parseListenAddress('[::1]:9469'), { host: '::1', port: 9469 });
  t.same(parseListenAddress(':9469'), { host: undefined, port: 9469 });
  t.same(parseListenAddress('localhost:80'), { host: 'localhost', port: 80 });
  for (const bad of ['9469', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000', '::1:9469', '[nope]:1', '1.2.3.4:x']) {
    t.throws(() => parseListenAddress(bad), /is not/, bad);
  }
});

t.test('probes against local listeners', async (t) => {
  const http = await import('node:http');
  const net = await import('node:net');
  let status = 200;
  const server = http.createServer((req, res) => {
    if (req.url === '/silent') return; // never answers
    res.statusCode = req.url === '/health' ? status : 404;
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  const port = (server.address() as { port: number }).port;
  // a port nobody listens on: bound and closed again
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const closed = (probe.address() as { port: number }).port;
  await new Promise((r) => probe.close(r));

  const tcp = await probeTcp({ type: 'tcp', host: '127.0.0.1', port, timeoutMs: 1000 });
  t.match(tcp, { ok: true, reason: `connected to 127.0.0.1:${port}` });
  t.ok(tcp.seconds >= 0 && tcp.seconds < 1, 'duration measured');
  t.match(await probeTcp({ type: 'tcp', host: '127.0.0.1', port: closed, timeoutMs: 1000 }), { ok: false, reason: `connect to 127.0.0.1:${closed}: ECONNREFUSED` });
  const target: ProbeTarget = { type: 'http', host: '127.0.0.1', port, path: '/health', expectStatus: 200, timeoutMs: 1000 };
  t.match(await probeHttp(target), { ok: true, reason: `GET http://127.0.0.1:${port}/health: HTTP 200` });
  status = 503;
  t.match(await probeHttp(target), { ok: false, reason: `GET http://127.0.0.1:${port}/health: HTTP 503, expected 200` });
  t.match(await probeHttp({ ...target, path: '/', expectStatus: 404 }), { ok: true }, 'the expected status need not be 200');
  const slow = await probeHttp({ ...target, path: '/silent', timeoutMs: 200 });
  t.match(slow, { ok: false, reason: `GET http://127.0.0.1:${port}/silent: no answer within 0.2 s` }, 'a timeout');
  t.ok(slow.seconds >= 0.2, `after the timeout (${slow.seconds.toFixed(3)} s)`);
  const ac = new AbortController();
  const stopped = probeHttp({ ...target, path: '/silent', timeoutMs: 5000 }, ac.signal);
  setTimeout(() => ac.abort(), 50);
  t.match(await stopped, { ok: false, reason: 'stopped' }, 'a probe can be abandoned');
});

// ---------------------------------------------------------------------------------------------
// the daemon in a namespace
// ---------------------------------------------------------------------------------------------

const missing = ['ip', 'nsenter', 'clang'].filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0);
const skip = process.getuid?.() !== 0 ? 'needs root' : missing.length > 0 ? `needs ${missing.join(', ')}` : false;

const NS = `xdpvs-dm-${process.pid}`;
const IFACE = 'xva';
const METRICS = '127.0.0.1:9469';

/** HTTP on IP:8080 (the tcp check's port) and IP:8081 (/health answers with `status`, set by "status N" on stdin). */
const BACKEND_SCRIPT = `
const http = require('node:http');
const ip = process.argv[1];
let status = 200;
const listen = (port, handler) => new Promise((resolve) => http.createServer(handler).listen(port, ip, resolve));
Promise.all([
  listen(8080, (req, res) => res.end('tcp ' + ip + '\\n')),
  listen(8081, (req, res) => { res.statusCode = req.url === '/health' ? status : 404; res.end(); }),
]).then(() => console.log('ready'));
process.stdin.setEncoding('utf8').on('data', (d) => {
  const m = /status (\\d+)/.exec(d);
  if (m) { status = Number(m[1]); console.log('status ' + status); }
});
`;

interface LogEvent {
  time: string;
  level: string;
  event: string;
  service?: string;
  backend?: string;
  from?: string;
  to?: string;
  reason?: string;
  trigger?: string;
  details?: string[];
  program?: number;
  action?: string;
  [k: string]: unknown;
}

class Proc {
  out = '';
  err = '';
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (this.out += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (this.err += d));
    this.exit = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The daemon's JSON log lines so far. */
  events(): LogEvent[] {
    return this.err
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as LogEvent);
  }
}

async function waitFor<T>(what: string, fn: () => T | undefined | false | null, timeoutMs = 20_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false && v !== null) return v;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(100);
  }
}

t.test('the daemon in a namespace', { skip }, async (t) => {
  const ns = new TestNetns(NS);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdpvs-dm-'));
  const procs = new Set<Proc>();
  t.teardown(async () => {
    for (const p of procs) p.child.kill('SIGKILL');
    await Promise.all([...procs].map((p) => p.exit));
    ns.xdpvs(['unload', '-i', IFACE]);
    ns.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const env = { ...process.env, XDPVS_PIN_ROOT: ns.pinRoot, XDPVS_RUN_ROOT: ns.runRoot };
  const inNs = (argv: string[]) => spawn('nsenter', [`--net=/run/netns/${NS}`, 'env', '-u', 'NODE_OPTIONS', ...argv], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  t.equal(ns.ip('link', 'set', 'dev', 'lo', 'up').status, 0, 'lo up (for the metrics endpoint)');
  for (const n of [11, 12]) t.equal(ns.ip('addr', 'add', `10.77.0.${n}/24`, 'dev', IFACE).status, 0, `10.77.0.${n} on ${IFACE}`);
  // .13 resolves through the neighbour table; .14 resolves nowhere (nobody answers ARP on xvb)
  t.equal(ns.ip('neigh', 'replace', '10.77.0.13', 'lladdr', '02:00:00:00:00:13', 'dev', IFACE, 'nud', 'permanent').status, 0);

  const backends = new Map<string, Proc>();
  async function startBackend(ip: string): Promise<void> {
    const p = new Proc(inNs([process.execPath, '-e', BACKEND_SCRIPT, ip]));
    procs.add(p);
    backends.set(ip, p);
    await waitFor(`the server on ${ip}`, () => p.out.includes('ready') || !p.running);
    if (!p.running) throw new Error(`server on ${ip}: ${p.err}`);
  }
  async function stopBackend(ip: string): Promise<void> {
    const p = backends.get(ip)!;
    p.child.kill('SIGKILL');
    await p.exit;
    procs.delete(p);
  }

  const file = path.join(dir, 'services.json');
  const hc = { interval: 1, timeout: 0.5, rise: 2, fall: 2 };
  const services = (webWeight12 = 1) => ({
    services: [
      {
        name: 'web', vip: '10.77.0.100', port: 80, protocol: 'tcp',
        backends: [{ ip: '10.77.0.11', weight: 1, mac: '02:00:00:00:00:11' }, { ip: '10.77.0.12', weight: webWeight12, mac: '02:00:00:00:00:12' }],
        healthCheck: { type: 'tcp', port: 8080, ...hc },
      },
      {
        name: 'api', vip: '10.77.0.100', port: 443, protocol: 'tcp',
        backends: [{ ip: '10.77.0.11', weight: 1, mac: '02:00:00:00:00:11' }, { ip: '10.77.0.12', weight: 1, mac: '02:00:00:00:00:12' }],
        healthCheck: { type: 'http', port: 8081, path: '/health', expectStatus: 200, ...hc },
      },
      {
        name: 'static', vip: '10.77.0.101', port: 80, protocol: 'tcp',
        backends: [{ ip: '10.77.0.13', weight: 1 }, { ip: '10.77.0.14', weight: 1 }],
        healthCheck: { type: 'none' },
      },
    ],
  });
  const writeServices = (doc: unknown) => {
    // as editors do: a new file renamed over the old one
    fs.writeFileSync(`${file}.tmp`, JSON.stringify(doc, null, 2));
    fs.renameSync(`${file}.tmp`, file);
  };
  writeServices(services());

  let daemon!: Proc;
  const startDaemon = async () => {
    daemon = new Proc(inNs([process.execPath, bin, 'daemon', file, '-i', IFACE, '--metrics', METRICS, '--log-format', 'json', '--mac-interval', '1']));
    procs.add(daemon);
    return waitFor('the daemon to start', () => daemon.events().find((e) => e.event === 'started') ?? exited(), 60_000);
  };
  /** In a waitFor: fails at once when the daemon is gone. */
  const exited = (): undefined => {
    if (!daemon.running) throw new Error(`the daemon exited: ${daemon.err}`);
    return undefined;
  };
  const since = (n: number) => daemon.events().slice(n);
  const eventAfter = (n: number, what: string, match: (e: LogEvent) => boolean, timeoutMs = 20_000) =>
    waitFor(what, () => since(n).find(match) ?? exited(), timeoutMs);

  interface StatusJson {
    programId: number;
    attached: boolean;
    services: Array<{ name: string; backends: Array<{ ip: string; weight: number; state: string; mac: string }> }>;
  }
  const status = (): StatusJson => {
    const r = ns.xdpvs(['status', '-i', IFACE, '--json']);
    if (r.status !== 0) throw new Error(`status: ${r.stderr}`);
    return JSON.parse(r.stdout) as StatusJson;
  };
  const backendOf = (s: StatusJson, service: string, ip: string) => s.services.find((x) => x.name === service)!.backends.find((b) => b.ip === ip)!;
  const stateOf = (service: string, ip: string) => backendOf(status(), service, ip).state;
  /** Backend IPs with slots in the service's table, from the pinned map of tables. */
  const inTable = (service: string): string[] => {
    const state = JSON.parse(fs.readFileSync(path.join(ns.runRoot, IFACE, 'state.json'), 'utf8')) as {
      allocation: { services: Record<string, number>; backends: Record<string, number> };
      services: ReturnType<typeof services>;
    };
    const svc = state.services.services.find((s) => s.name === service)!;
    const skey = `${svc.protocol}/${svc.vip}/${svc.port}`;
    const rings = BpfMap.fromPin(path.join(ns.pinRoot, IFACE, ringMapName(ringClassFor(svc.backends.length))));
    try {
      const table = readRing(rings, state.allocation.services[skey]!)!;
      const indexes = new Set([...table].map((e) => e & RING_BACKEND_MASK));
      return svc.backends.filter((b) => indexes.has(state.allocation.backends[`${skey}/${b.ip}`]!)).map((b) => b.ip);
    } finally {
      rings.close();
    }
  };
  const fetchText = (urlPath: string): { status: number; body: string } => {
    const script = `fetch('http://${METRICS}${urlPath}').then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })), (e) => { console.error(e.message); process.exit(1); })`;
    const r = sh('nsenter', [`--net=/run/netns/${NS}`, 'env', '-u', 'NODE_OPTIONS', process.execPath, '-e', script]);
    if (r.status !== 0) throw new Error(`GET ${urlPath}: ${r.stderr}`);
    return JSON.parse(r.stdout) as { status: number; body: string };
  };
  /** One sample's value from the exposition (labels given must match; others may be there). */
  const metric = (name: string, labels: Record<string, string>): number | undefined => {
    for (const line of fetchText('/metrics').body.split('\n')) {
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (!m || m[1] !== name) continue;
      const have = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
      if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
    }
    return undefined;
  };

  await startBackend('10.77.0.11');
  await startBackend('10.77.0.12');

  const started = await startDaemon();
  const programId = started.program!;
  t.equal(started.action, 'loaded', 'nothing was loaded: it loads');

  await t.test('start: every backend checked and up; one without a MAC is held down', async (t) => {
    const unresolved = daemon.events().find((e) => e.event === 'mac-unresolved');
    t.match(unresolved, { level: 'warn', service: 'static', backend: '10.77.0.14' }, 'logged: no MAC for 10.77.0.14');
    const s = status();
    t.equal(s.programId, programId);
    t.ok(s.attached, 'attached');
    t.same(
      s.services.map((x) => [x.name, x.backends.map((b) => `${b.ip} ${b.state}`)]),
      [
        ['web', ['10.77.0.11 up', '10.77.0.12 up']],
        ['api', ['10.77.0.11 up', '10.77.0.12 up']],
        ['static', ['10.77.0.13 up', '10.77.0.14 down']],
      ],
    );
    t.same(inTable('web'), ['10.77.0.11', '10.77.0.12'], 'web: both in the table');
    t.same(inTable('static'), ['10.77.0.13'], 'static: only the backend with a MAC');
    const h = fetchText('/healthz');
    t.same(h, { status: 200, body: 'ok\n' }, '/healthz');
    await waitFor('a few checks', () => (metric('xdpvs_healthcheck_total', { service: 'web', backend: '10.77.0.12', result: 'success' }) ?? 0) >= 2);
    t.equal(metric('xdpvs_backend_up', { service: 'web', backend: '10.77.0.12' }), 1, 'metrics: web/10.77.0.12 up');
    t.equal(metric('xdpvs_healthcheck_total', { service: 'web', backend: '10.77.0.12', result: 'failure' }), 0, 'no failed check');
    t.equal(metric('xdpvs_program_info', { interface: IFACE, id: String(programId), mode: 'native' }), 1, 'program info');
  });

  await t.test('a backend whose server dies goes down after fall, and up after rise', async (t) => {
    const n = daemon.events().length;
    const killedAt = Date.now();
    await stopBackend('10.77.0.12');
    const down = await eventAfter(n, 'web/10.77.0.12 down', (e) => e.event === 'backend-down' && e.service === 'web' && e.backend === '10.77.0.12');
    t.match(down, { level: 'warn', from: 'up', to: 'down', reason: /^connect to 10\.77\.0\.12:8080: ECONNREFUSED \(2 consecutive failures, fall 2\)$/ });
    const apiDown = await eventAfter(n, 'api/10.77.0.12 down', (e) => e.event === 'backend-down' && e.service === 'api' && e.backend === '10.77.0.12');
    t.match(apiDown.reason, /^GET http:\/\/10\.77\.0\.12:8081\/health: ECONNREFUSED/, 'the HTTP check fails too');
    t.comment(`marked down ${Date.parse(down.time) - killedAt} ms after the kill (fall 2 x interval 1 s)`);
    await eventAfter(n, 'the apply', (e) => e.event === 'applied' && e.reason === 'health' && (e.down as number) >= 3);
    t.equal(stateOf('web', '10.77.0.12'), 'down', 'status: down');
    t.equal(stateOf('web', '10.77.0.11'), 'up', 'status: the other one up');
    t.same(inTable('web'), ['10.77.0.11'], 'web: no slot for 10.77.0.12');
    t.same(inTable('api'), ['10.77.0.11'], 'api: no slot for 10.77.0.12');
    t.equal(backendOf(status(), 'web', '10.77.0.12').weight, 1, 'its weight in the file is kept (inhibit_on_failure)');
    t.equal(status().programId, programId, 'the same program: only tables changed');
    t.equal(metric('xdpvs_backend_up', { service: 'web', backend: '10.77.0.12' }), 0, 'metrics: down');
    t.equal(metric('xdpvs_backend_state', { service: 'web', backend: '10.77.0.12', state: 'down' }), 1);
    t.equal(metric('xdpvs_backend_effective_weight', { service: 'web', backend: '10.77.0.12' }), 0);
    t.ok(metric('xdpvs_healthcheck_total', { service: 'web', backend: '10.77.0.12', result: 'failure' })! >= 2, 'failed checks counted');

    const m = daemon.events().length;
    await startBackend('10.77.0.12');
    const up = await eventAfter(m, 'web/10.77.0.12 up', (e) => e.event === 'backend-up' && e.service === 'web' && e.backend === '10.77.0.12');
    t.match(up, { level: 'info', from: 'down', to: 'up', reason: /^connected to 10\.77\.0\.12:8080 \(2 consecutive successes, rise 2\)$/ });
    await eventAfter(m, 'api/10.77.0.12 up', (e) => e.event === 'backend-up' && e.service === 'api' && e.backend === '10.77.0.12');
    await waitFor('the apply', () => since(m).filter((e) => e.event === 'applied').some((e) => e.down === 1));
    t.equal(stateOf('web', '10.77.0.12'), 'up', 'status: up');
    t.same(inTable('web'), ['10.77.0.11', '10.77.0.12'], 'web: back in the table');
    t.same(inTable('api'), ['10.77.0.11', '10.77.0.12'], 'api: back in the table');
  });

  await t.test('an HTTP check that gets the wrong status', async (t) => {
    const n = daemon.events().length;
    backends.get('10.77.0.11')!.child.stdin!.write('status 503\n');
    const down = await eventAfter(n, 'api/10.77.0.11 down', (e) => e.event === 'backend-down' && e.backend === '10.77.0.11');
    t.match(down, { service: 'api', reason: /^GET http:\/\/10\.77\.0\.11:8081\/health: HTTP 503, expected 200 \(2 consecutive failures, fall 2\)$/ });
    await eventAfter(n, 'the apply', (e) => e.event === 'applied');
    t.equal(stateOf('api', '10.77.0.11'), 'down', 'api: down');
    t.equal(stateOf('web', '10.77.0.11'), 'up', 'web (a TCP check on another port): still up');
    t.same(inTable('api'), ['10.77.0.12']);
    const m = daemon.events().length;
    backends.get('10.77.0.11')!.child.stdin!.write('status 200\n');
    await eventAfter(m, 'api/10.77.0.11 up', (e) => e.event === 'backend-up' && e.backend === '10.77.0.11');
    await eventAfter(m, 'the apply', (e) => e.event === 'applied');
    t.same(inTable('api'), ['10.77.0.11', '10.77.0.12']);
  });

  await t.test('MACs: one that appears is applied, one that changes is re-applied and logged', async (t) => {
    const n = daemon.events().length;
    t.equal(ns.ip('neigh', 'replace', '10.77.0.14', 'lladdr', '02:00:00:00:00:14', 'dev', IFACE, 'nud', 'permanent').status, 0);
    t.equal(ns.ip('neigh', 'replace', '10.77.0.13', 'lladdr', '02:00:00:00:00:31', 'dev', IFACE, 'nud', 'permanent').status, 0);
    const resolved = await eventAfter(n, 'mac-resolved', (e) => e.event === 'mac-resolved');
    t.match(resolved, { service: 'static', backend: '10.77.0.14', to: '02:00:00:00:00:14' });
    const changed = await eventAfter(n, 'mac-change', (e) => e.event === 'mac-change');
    t.match(changed, { level: 'warn', service: 'static', backend: '10.77.0.13', from: '02:00:00:00:00:13', to: '02:00:00:00:00:31' });
    await eventAfter(n, 'the apply', (e) => e.event === 'applied' && e.reason === 'mac');
    const s = status();
    t.same(
      s.services.find((x) => x.name === 'static')!.backends.map((b) => [b.ip, b.mac, b.state]),
      [['10.77.0.13', '02:00:00:00:00:31', 'up'], ['10.77.0.14', '02:00:00:00:00:14', 'up']],
      'the backends map has the new MACs; the resolved backend is up',
    );
    t.same(inTable('static'), ['10.77.0.13', '10.77.0.14']);
    t.equal(metric('xdpvs_daemon_mac_changes_total', {}), 1, 'metrics: one MAC change');
    t.equal(metric('xdpvs_backend_info', { service: 'static', backend: '10.77.0.13' , mac: '02:00:00:00:00:31' }), 1);
  });

  await t.test('a changed file is reloaded; an invalid one is logged and ignored', async (t) => {
    let n = daemon.events().length;
    writeServices(services(3));
    const reloaded = await eventAfter(n, 'the reload', (e) => e.event === 'reloaded');
    t.match(reloaded, { trigger: 'file', services: 3, backends: 6 });
    t.equal(backendOf(status(), 'web', '10.77.0.12').weight, 3, 'the new weight is applied');
    t.equal(status().programId, programId, 'tables swapped: the same program');

    n = daemon.events().length;
    const bad = services(3);
    (bad.services[0]!.backends[1] as { ip: string }).ip = '10.77.0.300';
    writeServices(bad);
    const invalid = await eventAfter(n, 'the invalid file on change', (e) => e.event === 'reload-invalid' && e.trigger === 'file');
    t.match(invalid, { level: 'error', error: /services\.json: 1 error/, details: ['services[0].backends[1].ip: "10.77.0.300" is not an IPv4 or IPv6 address'] });
    n = daemon.events().length;
    daemon.child.kill('SIGHUP');
    const onHup = await eventAfter(n, 'the invalid file on SIGHUP', (e) => e.event === 'reload-invalid' && e.trigger === 'SIGHUP');
    t.match(onHup.details, ['services[0].backends[1].ip: "10.77.0.300" is not an IPv4 or IPv6 address'], 'SIGHUP: the same details');
    t.ok(daemon.running, 'the daemon runs on');
    t.equal(backendOf(status(), 'web', '10.77.0.12').ip, '10.77.0.12', 'the running services stay');
    t.equal(backendOf(status(), 'web', '10.77.0.12').weight, 3);
    t.equal(metric('xdpvs_daemon_config_last_reload_successful', {}), 0, 'metrics: the last reload failed');
    const checks = metric('xdpvs_healthcheck_total', { service: 'web', backend: '10.77.0.12', result: 'success' })!;
    await waitFor('more checks', () => metric('xdpvs_healthcheck_total', { service: 'web', backend: '10.77.0.12', result: 'success' })! > checks);
    t.pass('health checks go on');

    n = daemon.events().length;
    writeServices(services(1));
    await eventAfter(n, 'the reload of the fixed file', (e) => e.event === 'reloaded');
    t.equal(backendOf(status(), 'web', '10.77.0.12').weight, 1);

    // `xdpvs backend` writes the change into the file: the daemon reloads it and keeps it
    n = daemon.events().length;
    const drain = ns.xdpvs(['backend', 'drain', '-i', IFACE, 'web', '10.77.0.12']);
    t.equal(drain.status, 0, `backend drain: ${drain.stderr}`);
    t.match(await eventAfter(n, 'the reload of what backend wrote', (e) => e.event === 'reloaded'), { trigger: 'file' });
    t.match(backendOf(status(), 'web', '10.77.0.12'), { weight: 0, state: 'draining' }, 'drained, and it stays so');
    t.same(inTable('web'), ['10.77.0.11']);
    n = daemon.events().length;
    writeServices(services(1));
    await eventAfter(n, 'the reload of the file as before', (e) => e.event === 'reloaded');
    t.same(inTable('web'), ['10.77.0.11', '10.77.0.12']);
    n = daemon.events().length;
    daemon.child.kill('SIGHUP');
    t.match(await eventAfter(n, 'the reload on SIGHUP', (e) => e.event === 'reloaded'), { trigger: 'SIGHUP' }, 'SIGHUP reloads a valid file');
  });

  await t.test('refused at start: a second daemon for the interface, an invalid file', async (t) => {
    const second = new Proc(inNs([process.execPath, bin, 'daemon', file, '-i', IFACE, '--metrics', '127.0.0.1:9470']));
    procs.add(second);
    t.same(await second.exit, { code: 1, signal: null }, 'a second daemon exits 1');
    t.match(second.err, new RegExp(`xdpvs: a daemon already runs for ${IFACE} \\(pid ${daemon.child.pid}\\)`), 'naming the one that runs');
    const bad = path.join(dir, 'bad.json');
    fs.writeFileSync(bad, '{ "services": [ { "name": "web", "vip": "10.77.0.300", "port": 80, "protocol": "tcp", "backends": [] } ] }');
    const invalid = new Proc(inNs([process.execPath, bin, 'daemon', bad, '-i', 'xvb']));
    procs.add(invalid);
    t.same(await invalid.exit, { code: 1, signal: null }, 'an invalid file: exit 1');
    t.match(invalid.err, /xdpvs: .*bad\.json: 1 error\n {2}services\[0\]\.vip: "10\.77\.0\.300" is not/, 'with the validation details');
    t.notMatch(ns.ip('link', 'show', 'dev', 'xvb').stdout, /xdp/, 'nothing attached');
    t.ok(daemon.running, 'the first daemon runs on');
  });

  await t.test('SIGTERM leaves the program attached; a new daemon adopts it and its verdicts', async (t) => {
    let n = daemon.events().length;
    await stopBackend('10.77.0.12');
    await eventAfter(n, 'web/10.77.0.12 down', (e) => e.event === 'backend-down' && e.service === 'web' && e.backend === '10.77.0.12');
    await eventAfter(n, 'the apply', (e) => e.event === 'applied' && (e.down as number) >= 2);
    daemon.child.kill('SIGTERM');
    const exit = await daemon.exit;
    t.same(exit, { code: 0, signal: null }, 'exit 0');
    t.notOk(fs.existsSync(path.join(ns.runRoot, IFACE, 'daemon.pid')), 'its pid file is gone');
    t.same(since(n).map((e) => e.event).filter((e) => e.startsWith('stop')), ['stopping', 'stopped'], 'logged');
    t.match(ns.ip('link', 'show', 'dev', IFACE).stdout, new RegExp(`prog/xdp id ${programId} `), `program ${programId} still attached`);
    const s = status();
    t.ok(s.attached, 'status: attached');
    t.equal(backendOf(s, 'web', '10.77.0.12').state, 'down', 'the verdict stays recorded');
    t.same(inTable('web'), ['10.77.0.11'], 'the tables as the daemon left them');

    const again = await startDaemon();
    t.equal(again.program, programId, 'the same program');
    t.match(again.action, /^adopted the running program/, 'adopted: tables swapped');
    t.match(again.down, ['tcp/10.77.0.100/80/10.77.0.12'], 'starting from the recorded verdicts');
    t.equal(stateOf('web', '10.77.0.12'), 'down', 'still down');
    t.same(inTable('web'), ['10.77.0.11']);
    n = daemon.events().length;
    await startBackend('10.77.0.12');
    await eventAfter(n, 'web/10.77.0.12 up', (e) => e.event === 'backend-up' && e.service === 'web' && e.backend === '10.77.0.12');
    await waitFor('the apply', () => since(n).some((e) => e.event === 'applied' && e.down === 0));
    t.same(inTable('web'), ['10.77.0.11', '10.77.0.12'], 'up again after rise');
    daemon.child.kill('SIGINT');
    t.same(await daemon.exit, { code: 0, signal: null }, 'SIGINT: exit 0 too');
    t.match(ns.ip('link', 'show', 'dev', IFACE).stdout, new RegExp(`prog/xdp id ${programId} `), 'still attached');
  });

  await t.test('unloaded under a running daemon: verdicts do not put it back, SIGHUP does', async (t) => {
    await startDaemon();
    let n = daemon.events().length;
    const unload = ns.xdpvs(['unload', '-i', IFACE]);
    t.equal(unload.status, 0, `unload: ${unload.stderr}`);
    await stopBackend('10.77.0.12');
    await eventAfter(n, 'web/10.77.0.12 down', (e) => e.event === 'backend-down' && e.service === 'web' && e.backend === '10.77.0.12');
    const gone = await eventAfter(n, 'program-gone', (e) => e.event === 'program-gone');
    t.match(gone, { level: 'error', reason: /state is gone/ });
    await sleep(500);
    t.notMatch(ns.ip('link', 'show', 'dev', IFACE).stdout, /prog\/xdp/, 'nothing attached');
    t.equal(fetchText('/healthz').status, 503, '/healthz: 503');
    n = daemon.events().length;
    daemon.child.kill('SIGHUP');
    const reloaded = await eventAfter(n, 'the reload', (e) => e.event === 'reloaded');
    t.match(reloaded, { trigger: 'SIGHUP' });
    t.match(ns.ip('link', 'show', 'dev', IFACE).stdout, /prog\/xdp id \d+ /, 'attached again');
    t.equal(stateOf('web', '10.77.0.12'), 'down', 'with the verdicts');
    t.ok(fs.existsSync(path.join(ns.runRoot, IFACE, 'daemon.pid')), 'and its pid file');
    t.equal(fetchText('/healthz').status, 200, '/healthz: 200');
    daemon.child.kill('SIGTERM');
    t.same(await daemon.exit, { code: 0, signal: null }, 'exit 0');
  });
});
