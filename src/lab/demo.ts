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
import { buildTopology, DEFAULT_PREFIX, isLabNamespace, type LabTopology } from './topology.js';
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

interface RunOptions {
  /** the command's stdout goes to the terminal (else it is returned) */
  show?: boolean;
  /** do not print the command line */
  quiet?: boolean;
}

let interrupted = false;
/** Once cleaning up, signals no longer stop anything: leaving the lab half-removed is worse. */
let cleaning = false;
let current: ReturnType<typeof spawn> | null = null;

/**
 * Runs argv, first printing `display` as `$ ...` (the command as the user would type it). With
 * `show`, its output goes to the terminal as it comes; otherwise stdout is returned. stderr
 * always goes to the terminal.
 */
function run(argv: string[], display: string, opts: RunOptions = {}): Promise<Ran> {
  if (!opts.quiet) say(dim(`$ ${display}`));
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

async function must(argv: string[], display: string, opts: RunOptions = {}): Promise<string> {
  const r = await run(argv, display, opts);
  if (interrupted) throw new DemoError('interrupted');
  if (r.status !== 0) throw new DemoError(`\`${display}\` failed (exit ${r.status})`);
  return r.stdout;
}

/** `xdpvs ARGS` on this host. */
const xdpvs = (args: string[], opts: RunOptions = {}) =>
  must([process.execPath, BIN, ...args], `${cliName()} ${args.join(' ')}`, opts);

/** `xdpvs lab exec ROLE -- COMMAND`, run directly (same namespaces, one process less). */
function inLab(t: LabTopology, role: string, command: string[], display: string, opts: RunOptions = {}): Promise<string> {
  return must(execArgv(t, role, command), `${cliName()} lab exec ${role} -- ${display}`, opts);
}

/** Paths as the user would type them from where the demo runs. */
const shown = (arg: string) => (path.isAbsolute(arg) && arg.startsWith(REPO_ROOT) ? path.relative(process.cwd(), arg) || '.' : arg);

const xdpvsIn = (t: LabTopology, role: string, args: string[], opts: RunOptions = {}) =>
  inLab(t, role, [process.execPath, BIN, ...args], `${cliName()} ${args.map(shown).join(' ')}`, opts);

async function traffic(t: LabTopology, kind: TrafficKind, host: string, port: number, count: number): Promise<TrafficReport> {
  const args = [kind, host, '--port', String(port), '--count', String(count)];
  const out = await inLab(t, 'client', [process.execPath, TRAFFIC, ...args], `node ${shown(TRAFFIC)} ${args.join(' ')}`);
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

/**
 * Per service, per real server: how many flows (new connections, or UDP source ports) and
 * requests it answered as the client saw it, next to its weight and what the director counted.
 * Shares are of flows, the unit the scheduler balances: a keep-alive connection's requests all
 * go where its first one went.
 */
function whoAnswered(t: LabTopology, services: FileService[], reports: Map<string, TrafficReport[]>, stats: StatsJson | null): void {
  const roleOf = new Map(t.realServers.flatMap((rs) => [[rs.ipv4, rs.role], [rs.ipv6 ?? '', rs.role]] as const));
  for (const s of services) {
    const rs = reports.get(s.name) ?? [];
    if (rs.length === 0) continue;
    const unit = s.protocol === 'udp' ? 'flows' : 'connections';
    // flow = client source port; its server = who answered on it
    const flowsOf = new Map<string, Set<number>>();
    const requestsOf = new Map<string, number>();
    for (const r of rs) {
      for (const res of r.results) {
        if (res.server === null) continue;
        if (!flowsOf.has(res.server)) flowsOf.set(res.server, new Set());
        flowsOf.get(res.server)!.add(res.localPort);
        requestsOf.set(res.server, (requestsOf.get(res.server) ?? 0) + 1);
      }
    }
    const requests = rs.reduce((n, r) => n + r.sent, 0);
    const flows = [...flowsOf.values()].reduce((n, f) => n + f.size, 0);
    const totalWeight = s.backends.reduce((n, b) => n + b.weight, 0);
    const fromStats = stats?.services.find((x) => x.name === s.name);
    say(`${bold(s.name)}  ${s.protocol.toUpperCase()} ${endpoint(s.vip, s.port)}  ${s.scheduler ?? 'maglev'}: ${requests} requests over ${flows} ${unit}` +
      (fromStats ? `; the director counted ${fromStats.connections} ${unit}` : ''));
    const rows = s.backends.map((b) => {
      const role = roleOf.get(b.ip) ?? '?';
      const mine = flowsOf.get(role)?.size ?? 0;
      const share = flows > 0 ? (100 * mine) / flows : 0;
      const expected = totalWeight > 0 ? (100 * b.weight) / totalWeight : 0;
      const counted = fromStats?.backends.find((x) => x.ip === b.ip)?.connections;
      return [
        `  -> ${role}`,
        b.ip,
        `weight ${b.weight} (${expected.toFixed(1)}%)`,
        `answered ${mine} ${unit} (${share.toFixed(1)}%), ${requestsOf.get(role) ?? 0} requests`,
        counted === undefined ? '' : `director: ${counted} ${unit}`,
      ];
    });
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) say(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
  }
}

// ---------------------------------------------------------------------------------------------
// main

/**
 * What is loaded on eth0 under the pin and state roots before the demo starts: nothing, what a
 * KEEP=1 demo left on this lab's director (unloaded first, so the counters start from zero), or
 * something else (another lab's director, stale pins): the demo stops rather than touch it.
 */
function loadedBefore(t: LabTopology): 'nothing' | 'kept' | 'foreign' {
  const stateFile = path.join(runDir(IFACE), 'state.json');
  if (!fs.existsSync(stateFile) && !fs.existsSync(pinDir(IFACE))) return 'nothing';
  let progId = 0;
  try {
    progId = (JSON.parse(fs.readFileSync(stateFile, 'utf8')) as { progId?: number }).progId ?? 0;
  } catch {
    // pins without state: not ours either
  }
  const r = spawnSync('ip', ['-j', '-d', '-n', t.director.namespace, 'link', 'show', 'dev', t.director.interface], { encoding: 'utf8' });
  if (r.status === 0 && progId !== 0) {
    const link = JSON.parse(r.stdout) as Array<{ xdp?: { prog?: { id?: number } } }>;
    if (link[0]?.xdp?.prog?.id === progId) return 'kept';
  }
  return 'foreign';
}

function labNamespaces(): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return (r.stdout ?? '').split('\n').map((l) => l.split(' ')[0]!).filter((ns) => isLabNamespace(DEFAULT_PREFIX, ns));
}

/** How to run the CLI from where the demo runs: `xdpvs` once installed, else bin/xdpvs. */
function cliName(): string {
  const installed = (process.env.PATH ?? '').split(':').some((d) => d !== '' && fs.existsSync(path.join(d, 'xdpvs')));
  return installed ? 'xdpvs' : shown(BIN).replace(/^(?!\.{0,2}\/)/, './');
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

  const before = loadedBefore(t);
  if (before === 'foreign') {
    process.stderr.write(
      `demo: ${pinDir(IFACE)} or ${runDir(IFACE)} holds services loaded on an ${IFACE} that is not this lab's director\n` +
        `  remove them (${cliName()} unload -i ${IFACE}) or run the demo with other XDPVS_PIN_ROOT and XDPVS_RUN_ROOT\n`,
    );
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
    if (before === 'kept') {
      say('(a KEEP=1 demo left its program loaded: unload it first, so the counters start from zero)');
      await xdpvsIn(t, 'director', ['unload', '-i', IFACE], { show: true });
    }
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
      stats = JSON.parse(await xdpvsIn(t, 'director', ['stats', '-i', IFACE, '--json'], { quiet: true })) as StatsJson;
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

  stepNo = STEPS - 1; // the last step, also when an earlier one failed
  heading(KEEP ? 'Keep the lab (KEEP=1)' : 'Unload and take the lab down');
  const cleanupFailures: string[] = [];
  if (KEEP) {
    const cli = cliName();
    say('the lab stays up with the program loaded. Look around:');
    say(`  ${cli} lab info`);
    say(`  ${cli} lab exec director -- ${cli} status -i ${IFACE}`);
    say(`  ${cli} lab exec director -- ${cli} stats -i ${IFACE}`);
    say(`  ${cli} lab exec client -- node ${shown(TRAFFIC)} http 10.200.0.100 --count 20`);
    say('clean up with:');
    say(`  ${cli} lab exec director -- ${cli} unload -i ${IFACE} && ${cli} lab down`);
  } else {
    cleaning = true;
    interrupted = false; // cleanup runs even after Ctrl-C
    if (loadStarted) {
      // its exit status does not matter by itself ("nothing is loaded" after a failed load):
      // what counts is that no pin or state is left, checked below, and lab down removes the
      // director's eth0 and any program on it
      await run(execArgv(t, 'director', [process.execPath, BIN, 'unload', '-i', IFACE]), `${cliName()} lab exec director -- ${cliName()} unload -i ${IFACE}`, { show: true });
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
    const left = [
      ...[pinDir(IFACE), runDir(IFACE)].filter((d) => fs.existsSync(d)),
      ...labNamespaces().map((ns) => `namespace ${ns}`),
    ];
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
