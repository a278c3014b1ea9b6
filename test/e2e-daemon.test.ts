/**
 * The daemon end to end, in a lab of its own (namespaces xdpvs-h<pid>-*, pins and state under
 * /sys/fs/bpf/xdpvs-h<pid> and /run/xdpvs-h<pid>), run on the director as an operator would:
 * `xdpvs lab exec director -- node bin/xdpvs daemon ...`, health checks every second.
 *
 *   - one real server's HTTP service stops: within fall x interval + one interval it is marked
 *     down (weight 0 in the tables), no new connection reaches it, /metrics shows it down;
 *   - restarted: up again after rise, and it gets new connections;
 *   - the daemon killed with SIGKILL: traffic keeps flowing; started again: it adopts the
 *     running program, and a keep-alive connection open across all of it keeps answering from
 *     the same real server.
 *
 * Needs root, iproute2, ethtool, clang, nsenter.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { buildTopology, type LabHost } from '../src/lab/topology.js';
import type { TrafficReport } from '../src/lab/traffic.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = path.join(root, 'bin', 'xdpvs');
const trafficJs = path.join(root, 'dist', 'lab', 'traffic.js');
const prefix = `xdpvs-h${process.pid}`;
const pinRoot = `/sys/fs/bpf/${prefix}`;
const runRoot = `/run/${prefix}`;
const topo = buildTopology({ prefix });
const [, rs2] = topo.realServers as [LabHost, LabHost, LabHost];
const VIP = '10.200.0.100';
const METRICS = '127.0.0.1:9469';
const INTERVAL = 1;
const RISE = 2;
const FALL = 2;

const missing = ['ip', 'ethtool', 'clang', 'nsenter'].filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0);
const skip = process.getuid?.() !== 0 ? 'needs root' : missing.length > 0 ? `needs ${missing.join(', ')}` : false;

const ENV: NodeJS.ProcessEnv = { ...process.env, XDPVS_PIN_ROOT: pinRoot, XDPVS_RUN_ROOT: runRoot };

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** tap's NODE_OPTIONS (its loader) breaks the extensionless bin/xdpvs: children run without it. */
function sh(argv: string[], timeout = 60_000): Run {
  const r = spawnSync('env', ['-u', 'NODE_OPTIONS', ...argv], { encoding: 'utf8', env: ENV, timeout, maxBuffer: 64 << 20 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? r.error?.message ?? '' };
}
const xdpvs = (args: string[]) => sh([process.execPath, bin, ...args]);
const labExecArgv = (role: string, command: string[]) => [process.execPath, bin, 'lab', 'exec', '--name', prefix, role, '--', ...command];
const labExec = (role: string, command: string[]) => sh(labExecArgv(role, command));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Each run of traffic gets client ports no earlier run used, so every connection is a new flow to
 * the director whatever its rules for a SYN on a 5-tuple it still has recorded: these tests are
 * about health checks, not about port reuse.
 */
let nextPorts = 20_000;
function traffic(count: number): TrafficReport {
  const range = `net.ipv4.ip_local_port_range=${nextPorts} ${nextPorts + 1999}`;
  nextPorts += 2000;
  const set = sh(['ip', 'netns', 'exec', topo.client.namespace, 'sysctl', '-qw', range]);
  if (set.status !== 0) throw new Error(`sysctl ${range}: ${set.stderr}`);
  const r = labExec('client', [process.execPath, trafficJs, 'http', VIP, '--port', '80', '--count', String(count), '--concurrency', '4']);
  if (r.status !== 0) throw new Error(`traffic: exit ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as TrafficReport;
}

/** The director's /metrics (or another path), fetched in the director's namespace. */
function fetchText(urlPath: string): string {
  const script = `fetch('http://${METRICS}${urlPath}').then((r) => r.text()).then((b) => process.stdout.write(b), (e) => { console.error(e.message); process.exit(1); })`;
  const r = labExec('director', [process.execPath, '-e', script]);
  if (r.status !== 0) throw new Error(`GET ${urlPath}: ${r.stderr}`);
  return r.stdout;
}

/** A sample's value: the first line of `name` whose labels include `labels`. */
function metric(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

function xdpProgId(): number {
  const out = sh(['ip', '-j', '-d', '-n', topo.director.namespace, 'link', 'show', 'dev', 'eth0']).stdout;
  return (JSON.parse(out) as Array<{ xdp?: { prog?: { id: number } } }>)[0]?.xdp?.prog?.id ?? 0;
}

function isRunning(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Children of `pid`, from /proc/<n>/stat (the parent is its fourth field). */
function childrenOf(pid: number): number[] {
  return fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((d) => {
      try {
        const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
      } catch {
        return false;
      }
    })
    .map(Number);
}

async function waitFor<T>(what: string, fn: () => T | undefined | false | null, timeoutMs = 30_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined && v !== false && v !== null) return v;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(100);
  }
}

interface LogEvent {
  time: string;
  event: string;
  level: string;
  service?: string;
  backend?: string;
  reason?: string;
  program?: number;
  action?: string;
  down?: number | string[];
  [k: string]: unknown;
}

/**
 * The daemon as `xdpvs lab exec director -- node bin/xdpvs daemon ...` runs it: `lab exec`
 * (pid `wrapper`) waits for the daemon (its child: nsenter, unshare and sh exec into it).
 * Signals go to the daemon itself; the wrapper passes on its exit.
 */
class Daemon {
  readonly wrapper: ChildProcess;
  private err = '';
  readonly exit: Promise<number | null>;
  pid = 0;

  constructor(args: string[]) {
    this.wrapper = spawn('env', ['-u', 'NODE_OPTIONS', ...labExecArgv('director', [process.execPath, bin, 'daemon', ...args])], {
      env: ENV,
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true, // a process group of its own, for the teardown
    });
    this.wrapper.stderr!.setEncoding('utf8').on('data', (d: string) => (this.err += d));
    this.exit = new Promise((resolve) => this.wrapper.on('exit', (code) => resolve(code)));
  }

  events(): LogEvent[] {
    return this.err
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as LogEvent);
  }

  get stderr(): string {
    return this.err;
  }

  get running(): boolean {
    return this.wrapper.exitCode === null && this.wrapper.signalCode === null;
  }

  /** Waits for `started` and finds the daemon's pid under the wrapper. */
  async started(): Promise<LogEvent> {
    const ev = await this.event(0, 'the daemon to start', (e) => e.event === 'started', 90_000);
    // `env` execs node (the wrapper); its child is the daemon
    const wrapperNode = this.wrapper.pid!;
    this.pid = await waitFor('the daemon\'s pid', () =>
      childrenOf(wrapperNode).find((p) => {
        try {
          return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes('daemon');
        } catch {
          return false;
        }
      }),
    );
    return ev;
  }

  event(from: number, what: string, match: (e: LogEvent) => boolean, timeoutMs = 30_000): Promise<LogEvent> {
    return waitFor(what, () => {
      const found = this.events().slice(from).find(match);
      if (found) return found;
      if (!this.running) throw new Error(`the daemon exited: ${this.err}`);
      return undefined;
    }, timeoutMs);
  }

  kill(signal: NodeJS.Signals): void {
    process.kill(this.pid, signal);
  }

  /** The wrapper's whole process group. */
  killAll(): void {
    try {
      process.kill(-this.wrapper.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/** In the client: GETs one after another on one keep-alive connection, one line of JSON each. */
const KEEPALIVE_SCRIPT = `
const http = require('node:http');
const [host, port] = process.argv.slice(2);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1 });
let stop = false;
process.stdin.on('data', (d) => { if (String(d).includes('stop')) stop = true; });
process.stdin.on('end', () => { stop = true; });
const one = () => new Promise((resolve) => {
  const req = http.get({ host, port: Number(port), path: '/', agent, timeout: 2000 }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (d) => (body += d));
    res.on('end', () => resolve({ server: body.trim(), localPort: res.socket ? res.socket.localPort : 0 }));
  });
  req.on('timeout', () => req.destroy(new Error('timed out')));
  req.on('error', (e) => resolve({ error: e.code || e.message }));
});
(async () => {
  for (let i = 0; !stop; i++) {
    const r = await one();
    console.log(JSON.stringify({ i, at: Date.now(), ...r }));
    await new Promise((r) => setTimeout(r, 100));
  }
  agent.destroy();
  process.exit(0);
})();
`;

interface KeepAliveResult {
  i: number;
  at: number;
  server?: string;
  localPort?: number;
  error?: string;
}

t.test('the daemon in the lab', { skip }, async (t) => {
  // dist/ holds the CLI, realserver-app.js and traffic.js (type errors elsewhere still emit)
  spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', root], { stdio: 'ignore' });
  t.ok(fs.existsSync(trafficJs), 'dist is built');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  const daemons: Daemon[] = [];
  const others = new Set<ChildProcess>();
  t.teardown(async () => {
    for (const d of daemons) d.killAll();
    for (const c of others) c.kill('SIGKILL');
    await Promise.all(daemons.map((d) => d.exit));
    labExec('director', [process.execPath, bin, 'unload', '-i', 'eth0']);
    xdpvs(['lab', 'down', '--name', prefix]);
    fs.rmSync(pinRoot, { recursive: true, force: true });
    fs.rmSync(runRoot, { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const up = xdpvs(['lab', 'up', '--name', prefix]);
  t.equal(up.status, 0, `lab up: ${up.stderr}`);
  if (up.status !== 0) return;

  const file = path.join(dir, 'services.json');
  fs.writeFileSync(
    file,
    JSON.stringify(
      {
        services: [
          {
            name: 'web',
            vip: VIP,
            port: 80,
            protocol: 'tcp',
            backends: topo.realServers.map((rs) => ({ ip: rs.ipv4, weight: 1 })),
            healthCheck: { type: 'http', port: 80, path: '/', expectStatus: 200, interval: INTERVAL, timeout: 0.5, rise: RISE, fall: FALL },
          },
        ],
      },
      null,
      2,
    ),
  );
  const startDaemon = () => {
    const d = new Daemon([file, '-i', 'eth0', '--metrics', METRICS, '--log-format', 'json']);
    daemons.push(d);
    return d;
  };

  let daemon = startDaemon();
  const started = await daemon.started();
  t.match(started, { action: 'loaded', services: 1, backends: 3, checked: 3 }, 'the daemon loaded the services');
  const programId = started.program!;
  t.equal(xdpProgId(), programId, `program ${programId} attached to the director's eth0`);

  const rs2Connections = () => metric(fetchText('/metrics'), 'xdpvs_backend_connections_total', { service: 'web', backend: rs2.ipv4 })!;

  await t.test('all three real servers take connections', async (t) => {
    await waitFor('the first checks', () => (metric(fetchText('/metrics'), 'xdpvs_healthcheck_total', { backend: rs2.ipv4, result: 'success' }) ?? 0) >= 1);
    const r = traffic(45);
    t.equal(r.answered, 45, '45 requests answered');
    t.same(Object.keys(r.byServer), ['rs1', 'rs2', 'rs3'], `by rs1, rs2, rs3 (${JSON.stringify(r.byServer)})`);
  });

  await t.test(`rs2's HTTP service stops: down within fall x interval + interval, no new connection reaches it`, async (t) => {
    const pid = (JSON.parse(xdpvs(['lab', 'info', '--name', prefix, '--json']).stdout) as { realServers: Array<{ role: string; pid: number | null }> }).realServers.find((r) => r.role === 'rs2')!.pid!;
    t.ok(pid > 0, `rs2's realserver-app is pid ${pid}`);
    const n = daemon.events().length;
    const stoppedAt = Date.now();
    process.kill(pid, 'SIGTERM');
    await waitFor('realserver-app of rs2 to exit', () => !isRunning(pid), 10_000);
    const bound = (FALL * INTERVAL + INTERVAL) * 1000;
    const down = await daemon.event(n, 'rs2 down', (e) => e.event === 'backend-down' && e.backend === rs2.ipv4);
    t.match(down, { service: 'web', from: 'up', to: 'down', reason: /^GET http:\/\/10\.200\.0\.12:80\/: ECONNREFUSED \(2 consecutive failures, fall 2\)$/ });
    const applied = await daemon.event(n, 'the apply', (e) => e.event === 'applied' && e.reason === 'health');
    const took = Date.parse(applied.time) - stoppedAt;
    t.ok(took <= bound, `out of the tables ${took} ms after the service stopped (bound: fall ${FALL} x interval ${INTERVAL} s + interval = ${bound} ms)`);
    t.match(applied, { action: 'tables swapped', program: programId, down: 1 });

    const metrics = fetchText('/metrics');
    t.equal(metric(metrics, 'xdpvs_backend_up', { service: 'web', backend: rs2.ipv4 }), 0, 'metrics: xdpvs_backend_up 0');
    t.equal(metric(metrics, 'xdpvs_backend_state', { service: 'web', backend: rs2.ipv4, state: 'down' }), 1, 'metrics: state down');
    t.equal(metric(metrics, 'xdpvs_backend_effective_weight', { service: 'web', backend: rs2.ipv4 }), 0, 'metrics: effective weight 0');
    t.equal(metric(metrics, 'xdpvs_backend_up', { service: 'web', backend: topo.realServers[0]!.ipv4 }), 1, 'the others up');

    await sleep(Math.max(0, stoppedAt + bound - Date.now()));
    const before = rs2Connections();
    const r = traffic(60);
    t.equal(r.answered, 60, `60 new connections after ${bound} ms, all answered (${JSON.stringify(r.byServer)}${r.failed > 0 ? `; ${JSON.stringify(r.results.filter((x) => x.error))}` : ''})`);
    t.same(Object.keys(r.byServer), ['rs1', 'rs3'], 'by rs1 and rs3 only');
    t.equal(rs2Connections(), before, 'the director scheduled no new connection to rs2');
    const status = JSON.parse(labExec('director', [process.execPath, bin, 'status', '-i', 'eth0', '--json']).stdout) as { services: Array<{ backends: Array<{ ip: string; state: string; weight: number }> }> };
    t.match(status.services[0]!.backends.find((b) => b.ip === rs2.ipv4), { state: 'down', weight: 1 }, 'status: down, its weight kept');
  });

  await t.test('rs2 restarted: up after rise, new connections again', async (t) => {
    const n = daemon.events().length;
    const again = xdpvs(['lab', 'up', '--name', prefix]); // starts the real servers' apps that are not running
    t.equal(again.status, 0, `lab up restarts rs2's app: ${again.stderr}`);
    const restartedAt = Date.now();
    const upEvent = await daemon.event(n, 'rs2 up', (e) => e.event === 'backend-up' && e.backend === rs2.ipv4);
    t.match(upEvent, { from: 'down', to: 'up', reason: /\(2 consecutive successes, rise 2\)$/ });
    const applied = await daemon.event(n, 'the apply', (e) => e.event === 'applied' && e.down === 0);
    const took = Date.parse(applied.time) - restartedAt;
    t.ok(took <= (RISE * INTERVAL + INTERVAL) * 1000, `back in the tables ${Math.max(0, took)} ms after lab up returned (rise ${RISE} x interval ${INTERVAL} s + interval)`);
    t.equal(metric(fetchText('/metrics'), 'xdpvs_backend_up', { service: 'web', backend: rs2.ipv4 }), 1, 'metrics: up');
    const before = rs2Connections();
    const r = traffic(60);
    t.equal(r.answered, 60, `60 answered (${JSON.stringify(r.byServer)})`);
    t.ok((r.byServer.rs2 ?? 0) >= 5, `rs2 takes new connections again (${r.byServer.rs2 ?? 0} of 60)`);
    t.equal(rs2Connections(), before + (r.byServer.rs2 ?? 0), 'counted for rs2');
  });

  await t.test('the daemon killed with SIGKILL: traffic flows; restarted: established connections keep their server', async (t) => {
    const kaFile = path.join(dir, 'keepalive.js');
    fs.writeFileSync(kaFile, KEEPALIVE_SCRIPT);
    const ka = spawn('env', ['-u', 'NODE_OPTIONS', ...labExecArgv('client', [process.execPath, kaFile, VIP, '80'])], { env: ENV, stdio: ['pipe', 'pipe', 'pipe'] });
    others.add(ka);
    let kaOut = '';
    ka.stdout!.setEncoding('utf8').on('data', (d: string) => (kaOut += d));
    const kaExit = new Promise((resolve) => ka.on('exit', resolve));
    const results = () => kaOut.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as KeepAliveResult);
    await waitFor('keep-alive answers', () => results().length >= 5);

    daemon.kill('SIGKILL');
    t.equal(await daemon.exit, 137, 'the daemon is gone (lab exec passes on 128 + SIGKILL)');
    t.equal(xdpProgId(), programId, 'the program stays attached');
    const during = traffic(30);
    t.equal(during.answered, 30, `without a daemon: 30 new connections answered (${JSON.stringify(during.byServer)})`);
    t.same(Object.keys(during.byServer), ['rs1', 'rs2', 'rs3'], 'by all three');
    const answeredBefore = results().length;

    daemon = startDaemon();
    const restarted = await daemon.started();
    t.equal(restarted.program, programId, 'the same program');
    t.match(restarted.action, /^adopted the running program/, `adopted: ${restarted.action}`);
    t.equal(xdpProgId(), programId, 'never replaced');
    const after = traffic(30);
    t.equal(after.answered, 30, `after the restart: 30 new connections answered (${JSON.stringify(after.byServer)})`);
    await sleep(2000);
    ka.stdin!.write('stop\n');
    await kaExit;
    others.delete(ka);
    const all = results();
    t.ok(all.length > answeredBefore + 10, `the keep-alive connection answered throughout (${all.length} requests)`);
    t.same(all.filter((r) => r.error), [], 'no request on it failed');
    t.equal(new Set(all.map((r) => r.localPort)).size, 1, 'one TCP connection from start to end');
    t.equal(new Set(all.map((r) => r.server)).size, 1, `one real server from start to end (${all[0]?.server})`);
    t.same(daemon.events().filter((e) => e.event === 'backend-down'), [], 'the new daemon took nothing down');

    daemon.kill('SIGTERM');
    t.equal(await daemon.exit, 0, 'SIGTERM: exit 0');
    t.equal(xdpProgId(), programId, 'still attached');
    t.equal(traffic(10).answered, 10, 'still forwarding');
  });
});
