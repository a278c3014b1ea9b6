/**
 * `make demo`: xdpvs from end to end on this machine, in the lab's namespaces.
 *
 *   1. xdpvs lab up --ipv6                                  (the LVS-DR network, prefix "xdpvs")
 *   2. xdpvs load examples/lab.json -i eth0                 (in the director, native XDP)
 *   3. traffic from the client: HTTP to 10.200.0.100 (new connections, then one keep-alive
 *      connection), UDP to 10.200.0.101:53, HTTP to [fd00:200::100]
 *   4. xdpvs stats, and per service who answered, as the client saw it
 *   5. xdpvs unload -i eth0, xdpvs lab down
 *
 * Step 5 runs whatever happened before (also on Ctrl-C), unless KEEP=1: then the lab stays up
 * with the program loaded, and the demo prints how to look around and how to clean up.
 * Exit status 0 when every step worked, 1 otherwise.
 *
 *   node dist/lab/demo.js        (as root; `make demo` builds first)
 *   KEEP=1 node dist/lab/demo.js
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pinDir, pinRoot, runDir, runRoot } from '../paths.js';
import { execArgv } from './lab.js';
import { buildTopology, DEFAULT_PREFIX, type LabTopology } from './topology.js';
import type { TrafficKind, TrafficReport } from './traffic.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = path.join(REPO_ROOT, 'bin', 'xdpvs');
const TRAFFIC = fileURLToPath(new URL('./traffic.js', import.meta.url));
const SERVICES_FILE = path.join(REPO_ROOT, 'examples', 'lab.json');
const IFACE = 'eth0';

/** How much traffic each part of step 3 sends. */
const HTTP_REQUESTS = 300;
const KEEPALIVE_REQUESTS = 50;
const UDP_QUERIES = 30;
const HTTP6_REQUESTS = 60;

const KEEP = process.env.KEEP === '1';

// ---------------------------------------------------------------------------------------------
// output

const tty = process.stdout.isTTY === true;
const bold = (s: string) => (tty ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string) => (tty ? `\x1b[2m${s}\x1b[0m` : s);

let stepNo = 0;
const STEPS = 5;
function heading(title: string): void {
  stepNo += 1;
  process.stdout.write(`\n${bold(`== ${stepNo}/${STEPS} ${title}`)}\n`);
}

const say = (line = '') => process.stdout.write(`${line}\n`);

// ---------------------------------------------------------------------------------------------
// running commands

class DemoError extends Error {}

interface Ran {
  status: number;
  stdout: string;
}

let interrupted = false;
/** Once cleaning up, signals no longer stop anything: leaving the lab half-removed is worse. */
let cleaning = false;
let current: ReturnType<typeof spawn> | null = null;

/**
 * Runs argv; shows the command as `$ ...` (with `where` for commands in a namespace). With
 * `show`, its output goes to the terminal as it comes; otherwise stdout is returned and stderr
 * still goes to the terminal.
 */
function run(argv: string[], display: string, opts: { show?: boolean } = {}): Promise<Ran> {
  say(dim(`$ ${display}`));
  return new Promise((resolve, reject) => {
    // its own process group: Ctrl-C reaches only the demo, which decides what to stop
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', opts.show ? 'inherit' : 'pipe', 'inherit'], detached: true });
    current = child;
    let stdout = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.on('error', (err) => {
      current = null;
      reject(new DemoError(`could not run ${argv[0]}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      current = null;
      resolve({ status: code ?? (signal ? 128 : 1), stdout });
    });
  });
}

async function must(argv: string[], display: string, opts: { show?: boolean } = {}): Promise<string> {
  const r = await run(argv, display, opts);
  if (interrupted) throw new DemoError('interrupted');
  if (r.status !== 0) throw new DemoError(`\`${display}\` failed (exit ${r.status})`);
  return r.stdout;
}

/** `xdpvs ARGS` on this host. */
const xdpvs = (args: string[], opts: { show?: boolean } = {}) =>
  must([process.execPath, BIN, ...args], `xdpvs ${args.join(' ')}`, opts);

/** `xdpvs lab exec ROLE -- COMMAND`, run directly (same namespaces, one process less). */
function inLab(t: LabTopology, role: string, command: string[], display: string, opts: { show?: boolean } = {}): Promise<string> {
  return must(execArgv(t, role, command), `xdpvs lab exec ${role} -- ${display}`, opts);
}

const xdpvsIn = (t: LabTopology, role: string, args: string[], opts: { show?: boolean } = {}) =>
  inLab(t, role, [process.execPath, BIN, ...args], `xdpvs ${args.join(' ')}`, opts);

async function traffic(t: LabTopology, kind: TrafficKind, host: string, port: number, count: number): Promise<TrafficReport> {
  const args = [kind, host, '--port', String(port), '--count', String(count)];
  const out = await inLab(t, 'client', [process.execPath, TRAFFIC, ...args], `node dist/lab/traffic.js ${args.join(' ')}`);
  const report = JSON.parse(out) as TrafficReport;
  const who = Object.entries(report.byServer).map(([rs, n]) => `${rs} ${n}`).join(', ') || 'nobody';
  say(`   ${report.answered}/${report.sent} answered (${who}) over ${report.flows} ${report.flows === 1 ? 'connection' : kind === 'udp' ? 'flows' : 'connections'} in ${report.elapsedMs} ms`);
  if (report.failed > 0) {
    const errors = [...new Set(report.results.map((r) => r.error).filter(Boolean))].join(', ');
    throw new DemoError(`${report.failed} of ${report.sent} ${kind} requests to ${host}:${port} got no answer (${errors})`);
  }
  return report;
}

// ---------------------------------------------------------------------------------------------
// the report: who answered, per service

interface FileService {
  name: string;
  vip: string;
  port: number;
  protocol: string;
  scheduler?: string;
  backends: Array<{ ip: string; weight: number }>;
}

interface StatsJson {
  services: Array<{ name: string; connections: number; packets: number; backends: Array<{ ip: string; connections: number; packets: number }> }>;
}

const endpoint = (ip: string, port: number) => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);

function whoAnswered(t: LabTopology, services: FileService[], reports: Map<string, TrafficReport[]>, stats: StatsJson | null): void {
  const roleOf = new Map(t.realServers.flatMap((rs) => [[rs.ipv4, rs.role], [rs.ipv6 ?? '', rs.role]] as const));
  for (const s of services) {
    const rs = reports.get(s.name) ?? [];
    if (rs.length === 0) continue;
    const sent = rs.reduce((n, r) => n + r.sent, 0);
    const conns = rs.reduce((n, r) => n + r.flows, 0);
    const totalWeight = s.backends.reduce((n, b) => n + b.weight, 0);
    const fromStats = stats?.services.find((x) => x.name === s.name);
    say(`${bold(s.name)}  ${s.protocol.toUpperCase()} ${endpoint(s.vip, s.port)}  ${s.scheduler ?? 'maglev'}: ${sent} requests over ${conns} ${s.protocol === 'udp' ? 'flows' : 'connections'}` +
      (fromStats ? `; the director counted ${fromStats.connections} connections, ${fromStats.packets} packets` : ''));
    const rows = s.backends.map((b) => {
      const role = roleOf.get(b.ip) ?? '?';
      const answers = rs.reduce((n, r) => n + (r.byServer[role] ?? 0), 0);
      const share = sent > 0 ? (100 * answers) / sent : 0;
      const expected = totalWeight > 0 ? (100 * b.weight) / totalWeight : 0;
      const dc = fromStats?.backends.find((x) => x.ip === b.ip)?.connections;
      return [
        `  ${role}`,
        b.ip,
        `weight ${b.weight}`,
        `answered ${String(answers).padStart(4)}  (${share.toFixed(1).padStart(5)}%, weight share ${expected.toFixed(1)}%)`,
        dc === undefined ? '' : `director: ${dc} conns`,
      ];
    });
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) say(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
  }
}

// ---------------------------------------------------------------------------------------------
// main

/** Something loaded under these pin/run roots that is not this lab's (another lab's director?). */
function foreignState(t: LabTopology): string | null {
  const stateFile = path.join(runDir(IFACE), 'state.json');
  if (!fs.existsSync(stateFile) && !fs.existsSync(pinDir(IFACE))) return null;
  let progId = 0;
  try {
    progId = (JSON.parse(fs.readFileSync(stateFile, 'utf8')) as { progId?: number }).progId ?? 0;
  } catch {
    // pins without state: not ours either
  }
  const r = spawnSync('ip', ['-j', '-d', '-n', t.director.namespace, 'link', 'show', 'dev', t.director.interface], { encoding: 'utf8' });
  if (r.status === 0 && progId !== 0) {
    const link = JSON.parse(r.stdout) as Array<{ xdp?: { prog?: { id?: number } } }>;
    if (link[0]?.xdp?.prog?.id === progId) return null; // a KEEP=1 demo left it: ours to replace
  }
  return `${pinDir(IFACE)} / ${runDir(IFACE)} hold a loaded ${IFACE} that is not this lab's director`;
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('demo: needs root (network namespaces, XDP); run it as root: sudo make demo\n');
    return 1;
  }
  if (!fs.existsSync(BIN) || !fs.existsSync(TRAFFIC)) {
    process.stderr.write('demo: build first (make build, or npx tsc -p .)\n');
    return 1;
  }
  const t = buildTopology({ prefix: DEFAULT_PREFIX, ipv6: true });
  const services = (JSON.parse(fs.readFileSync(SERVICES_FILE, 'utf8')) as { services: FileService[] }).services;
  const rootsBefore = { pin: fs.existsSync(pinRoot), run: fs.existsSync(runRoot) };

  const foreign = foreignState(t);
  if (foreign) {
    process.stderr.write(`demo: ${foreign}\n  remove it (xdpvs unload -i ${IFACE}) or run the demo with other XDPVS_PIN_ROOT / XDPVS_RUN_ROOT\n`);
    return 1;
  }

  say(bold('xdpvs demo: LVS direct routing in XDP, in network namespaces on this machine'));
  say(`client ${t.client.ipv4} -> switch -> director ${t.director.ipv4} (XDP on ${t.director.interface}) -> real servers ${t.realServers.map((r) => r.ipv4).join(', ')}`);
  say('replies go from the real servers straight to the client; the director only sees the requests');

  let failure: unknown = null;
  let labStarted = false;
  let loadStarted = false;
  try {
    heading('Bring up the lab');
    labStarted = true;
    await xdpvs(['lab', 'up', '--ipv6'], { show: true });

    heading(`Load ${path.relative(REPO_ROOT, SERVICES_FILE)} on the director's ${IFACE} (native XDP)`);
    loadStarted = true;
    await xdpvsIn(t, 'director', ['load', SERVICES_FILE, '-i', IFACE, '--mode', 'native'], { show: true });

    heading('Send traffic from the client');
    const reports = new Map<string, TrafficReport[]>();
    const add = (name: string, r: TrafficReport) => reports.set(name, [...(reports.get(name) ?? []), r]);
    const byName = (name: string) => services.find((s) => s.name === name)!;
    const web = byName('web');
    const dns = byName('dns');
    const web6 = byName('web6');
    say(`HTTP to ${endpoint(web.vip, web.port)}, ${HTTP_REQUESTS} requests, each on a new connection:`);
    add('web', await traffic(t, 'http', web.vip, web.port, HTTP_REQUESTS));
    say(`HTTP to ${endpoint(web.vip, web.port)}, ${KEEPALIVE_REQUESTS} requests on one keep-alive connection (a flow stays on its real server):`);
    add('web', await traffic(t, 'keepalive', web.vip, web.port, KEEPALIVE_REQUESTS));
    say(`UDP to ${endpoint(dns.vip, dns.port)}, ${UDP_QUERIES} queries, each from a new source port:`);
    add('dns', await traffic(t, 'udp', dns.vip, dns.port, UDP_QUERIES));
    say(`HTTP to ${endpoint(web6.vip, web6.port)}, ${HTTP6_REQUESTS} requests, each on a new connection:`);
    add('web6', await traffic(t, 'http', web6.vip, web6.port, HTTP6_REQUESTS));

    heading('What the director counted, and who answered');
    await xdpvsIn(t, 'director', ['stats', '-i', IFACE], { show: true });
    let stats: StatsJson | null = null;
    try {
      stats = JSON.parse(await xdpvsIn(t, 'director', ['stats', '-i', IFACE, '--json'])) as StatsJson;
    } catch (err) {
      if (interrupted) throw err;
      say(`(could not read xdpvs stats --json: ${(err as Error).message})`);
    }
    say();
    say('Who answered, as the client saw it (each real server answers with its name):');
    whoAnswered(t, services, reports, stats);
  } catch (err) {
    failure = err;
  }

  heading(KEEP ? 'Keep the lab (KEEP=1)' : 'Unload and take the lab down');
  const cleanupFailures: string[] = [];
  if (KEEP) {
    say('the lab stays up with the program loaded. Look around:');
    say('  xdpvs lab info');
    say(`  xdpvs lab exec director -- xdpvs stats -i ${IFACE}`);
    say('  xdpvs lab exec client -- curl -s http://10.200.0.100/');
    say('clean up with:');
    say(`  xdpvs lab exec director -- xdpvs unload -i ${IFACE} && xdpvs lab down`);
  } else {
    cleaning = true;
    interrupted = false; // cleanup runs even after Ctrl-C
    if (loadStarted) {
      try {
        await xdpvsIn(t, 'director', ['unload', '-i', IFACE], { show: true });
      } catch (err) {
        cleanupFailures.push((err as Error).message);
      }
    }
    if (labStarted) {
      try {
        await xdpvs(['lab', 'down'], { show: true });
      } catch (err) {
        cleanupFailures.push((err as Error).message);
      }
    }
    // the per-interface dirs are gone with unload; their parents too, if the demo made them
    for (const [root, existed] of [[pinRoot, rootsBefore.pin], [runRoot, rootsBefore.run]] as const) {
      if (existed) continue;
      try {
        fs.rmdirSync(root);
      } catch {
        // not empty (someone else's interface), or never made
      }
    }
    const left = [pinDir(IFACE), runDir(IFACE)].filter((d) => fs.existsSync(d));
    if (left.length > 0) cleanupFailures.push(`left behind: ${left.join(', ')}`);
    if (cleanupFailures.length === 0) say('nothing left behind');
  }

  if (failure || cleanupFailures.length > 0) {
    say();
    if (failure) process.stderr.write(`demo failed: ${failure instanceof DemoError ? failure.message : (failure as Error).stack ?? String(failure)}\n`);
    for (const f of cleanupFailures) process.stderr.write(`demo: cleanup: ${f}\n`);
    return 1;
  }
  say();
  say(bold('demo done'));
  return 0;
}

// Ctrl-C or SIGTERM: stop the step that runs, then clean up as after any failure.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (cleaning) {
      process.stderr.write(`\ndemo: ${sig}: cleaning up, a moment\n`);
      return;
    }
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\ndemo: ${sig}, stopping and cleaning up\n`);
    current?.kill('SIGTERM');
  });
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`demo: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
