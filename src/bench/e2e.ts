/**
 * Part 3 of `make bench`: end to end in the lab, with wrk (Debian's package) as the load
 * generator, run inside the client's namespace.
 *
 * A lab of its own (prefix xdpvs-bench-<pid>, its own pin and state roots, three real servers)
 * carries three ways from the client to the real servers:
 *  - xdpvs: the VIP 10.200.0.100, the director's XDP program in native mode (LVS-DR: replies go
 *    from the real servers straight to the client);
 *  - direct: the client talks to one real server (rs1) itself;
 *  - haproxy: HAProxy (Debian's package) in TCP mode on the director's own address 10.200.0.10,
 *    roundrobin over the same three real servers (a full proxy: both directions pass it).
 * Each is run in three modes, a few bounded runs each, interleaved: short connections (a new
 * TCP connection per request, `Connection: close`), long ones (keep-alive) against the lab's
 * realserver-app (a tiny answer), and bulk (keep-alive, 1 MiB answers from a server the bench
 * starts on each real server). The lab is always taken down, also after a failure or Ctrl-C.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execArgv, labDown, labUp } from '../lab/lab.js';
import type { LabTopology } from '../lab/topology.js';
import { median } from './stats.js';
import { checkStop } from './stop.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = path.join(REPO_ROOT, 'bin', 'xdpvs');
const BLOB_SERVER = fileURLToPath(new URL('./blob-server.js', import.meta.url));
const BLOB_PORT = 8090;
const BLOB_BYTES = 1 << 20;
const WEB_PORT = 80;

export type Target = 'xdpvs' | 'direct' | 'haproxy';
export type Mode = 'short' | 'long' | 'bulk';
export const TARGETS: Target[] = ['xdpvs', 'direct', 'haproxy'];
export const MODES: Mode[] = ['short', 'long', 'bulk'];

export const TARGET_LABELS: Record<Target, string> = {
  xdpvs: 'xdpvs (LVS-DR in XDP, VIP)',
  direct: 'direct to one real server',
  haproxy: 'HAProxy, TCP mode, on the director',
};
export const MODE_LABELS: Record<Mode, string> = {
  short: 'short connections (one request each)',
  long: 'long connections (keep-alive)',
  bulk: `bulk (keep-alive, ${BLOB_BYTES >> 20} MiB answers)`,
};

export interface WrkRun {
  requestsPerSec: number;
  /** bytes per second read by the client */
  bytesPerSec: number;
  latencyMs: { avg: number; p50: number; p99: number };
  requests: number;
  errors: number;
  non2xx: number;
}

export interface E2eCell {
  target: Target;
  mode: Mode;
  runs: WrkRun[];
  requestsPerSec: number;
  bytesPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

export interface E2eOptions {
  durationS: number;
  runs: number;
  connections: number;
  threads: number;
  log?: (line: string) => void;
}

export interface E2eResult {
  options: Omit<E2eOptions, 'log'>;
  wrkVersion: string;
  haproxyVersion: string;
  cells: E2eCell[];
  /** what the director counted per real server for the xdpvs runs (new connections) */
  xdpvsSpread?: Record<string, number>;
  error?: string;
}

// ---------------------------------------------------------------------------------------------

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

function parseSize(text: string): number {
  const m = /^([\d.]+)([KMGT]?)B?$/.exec(text.trim());
  return m ? Number(m[1]) * UNITS[m[2]!]! : NaN;
}

function parseDuration(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

/** wrk's report, as numbers. */
export function parseWrk(out: string): WrkRun {
  const num = (re: RegExp) => {
    const m = re.exec(out);
    return m ? m[1]! : '';
  };
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    requestsPerSec: Number(num(/Requests\/sec:\s+([\d.]+)/)),
    bytesPerSec: parseSize(num(/Transfer\/sec:\s+(\S+)/)),
    latencyMs: {
      avg: parseDuration(num(/Latency\s+(\S+)/)),
      p50: parseDuration(num(/\s50%\s+(\S+)/)),
      p99: parseDuration(num(/\s99%\s+(\S+)/)),
    },
    requests: Number(num(/(\d+) requests in/)),
    errors: socket ? socket.slice(1).reduce((n, x) => n + Number(x), 0) : 0,
    non2xx: Number(num(/Non-2xx or 3xx responses:\s+(\d+)/) || 0),
  };
}

function run(argv: string[], env: NodeJS.ProcessEnv = process.env): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env, maxBuffer: 64 << 20 });
  return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error?.message ?? '') };
}

function must(argv: string[], env?: NodeJS.ProcessEnv): string {
  const r = run(argv, env);
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (exit ${r.status}): ${r.stderr.trim().split('\n').slice(-4).join(' | ')}`);
  return r.stdout;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Starts a long-running process in a namespace; resolves once `ready` shows in its output (or after `settleMs`). */
async function startIn(ns: string, argv: string[], o: { readyText?: RegExp; settleMs?: number } = {}): Promise<ChildProcess> {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.on('error', () => {});
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${argv.join(' ')} in ${ns} exited: ${out.trim().split('\n').slice(-3).join(' | ')}`);
    if (o.readyText ? o.readyText.test(out) : Date.now() > deadline - 10_000 + (o.settleMs ?? 500)) return child;
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new Error(`${argv.join(' ')} in ${ns}: not ready after 10 s`);
}

function haproxyConfig(t: LabTopology): string {
  const servers = (port: number) => t.realServers.map((rs) => `\tserver ${rs.role} ${rs.ipv4}:${port}`).join('\n');
  return `# written by the xdpvs benchmark: TCP mode, roundrobin over the lab's real servers
global
\tmaxconn 8000

defaults
\tmode tcp
\ttimeout connect 5s
\ttimeout client 60s
\ttimeout server 60s

frontend web
\tbind ${t.director.ipv4}:${WEB_PORT}
\tdefault_backend web

backend web
\tbalance roundrobin
${servers(WEB_PORT)}

frontend blob
\tbind ${t.director.ipv4}:${BLOB_PORT}
\tdefault_backend blob

backend blob
\tbalance roundrobin
${servers(BLOB_PORT)}
`;
}

function servicesFile(t: LabTopology): unknown {
  const backends = t.realServers.map((rs) => ({ ip: rs.ipv4, weight: 1 }));
  return {
    services: [
      { name: 'web', vip: t.vips.ipv4[0], port: WEB_PORT, protocol: 'tcp', scheduler: 'maglev', backends, healthCheck: { type: 'none' } },
      { name: 'blob', vip: t.vips.ipv4[0], port: BLOB_PORT, protocol: 'tcp', scheduler: 'maglev', backends, healthCheck: { type: 'none' } },
    ],
  };
}

function url(t: LabTopology, target: Target, mode: Mode): string {
  const host = target === 'xdpvs' ? t.vips.ipv4[0] : target === 'direct' ? t.realServers[0]!.ipv4 : t.director.ipv4;
  return `http://${host}:${mode === 'bulk' ? BLOB_PORT : WEB_PORT}/`;
}

function version(argv: string[], re: RegExp): string {
  const r = run(argv);
  const m = re.exec(`${r.stdout}\n${r.stderr}`);
  return m ? m[1]! : 'unknown';
}

export async function runE2e(o: E2eOptions): Promise<E2eResult> {
  const log = o.log ?? (() => {});
  const prefix = `xdpvs-bench-${process.pid}`;
  const env: NodeJS.ProcessEnv = { ...process.env, XDPVS_PIN_ROOT: `/sys/fs/bpf/${prefix}`, XDPVS_RUN_ROOT: `/run/${prefix}` };
  delete env.NODE_OPTIONS;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdpvs-bench-e2e-'));
  const children: ChildProcess[] = [];
  let t: LabTopology | undefined;
  let loaded = false;
  const result: E2eResult = {
    options: { durationS: o.durationS, runs: o.runs, connections: o.connections, threads: o.threads },
    wrkVersion: version(['wrk', '--version'], /wrk (?:debian\/)?([\w.+-]+)/),
    haproxyVersion: version(['haproxy', '-v'], /version ([\w.-]+)/),
    cells: [],
  };
  try {
    log(`end to end: lab ${prefix} with 3 real servers`);
    t = (await labUp({ prefix, realServers: 3 })).topology;
    const topo = t;
    // many short connections: reuse TIME_WAIT ports, use all of them
    for (const ns of [topo.client.namespace, topo.director.namespace]) {
      must(['ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=1024 65535', 'net.ipv4.tcp_tw_reuse=1']);
    }
    for (const rs of topo.realServers) must(['ip', 'netns', 'exec', rs.namespace, 'sysctl', '-q', '-w', 'net.core.somaxconn=4096', 'net.ipv4.tcp_max_syn_backlog=4096']);

    const file = path.join(dir, 'services.json');
    fs.writeFileSync(file, JSON.stringify(servicesFile(topo), null, 2));
    must(execArgv(topo, 'director', [process.execPath, BIN, 'load', file, '-i', topo.director.interface, '--mode', 'native']), env);
    loaded = true;
    for (const rs of topo.realServers) {
      children.push(await startIn(rs.namespace, [process.execPath, BLOB_SERVER, '--port', String(BLOB_PORT), '--bytes', String(BLOB_BYTES)], { readyText: /^ready/m }));
    }
    const cfg = path.join(dir, 'haproxy.cfg');
    fs.writeFileSync(cfg, haproxyConfig(topo));
    must(['haproxy', '-c', '-q', '-f', cfg]);
    children.push(await startIn(topo.director.namespace, ['haproxy', '-db', '-f', cfg], { settleMs: 500 }));
    log(`  xdpvs loaded on the director (native XDP), HAProxy ${result.haproxyVersion} on ${topo.director.ipv4}, wrk ${result.wrkVersion} in the client`);

    const wrk = (target: Target, mode: Mode, seconds: number): WrkRun => {
      checkStop();
      const argv = ['ip', 'netns', 'exec', topo.client.namespace, 'wrk', '-t', String(o.threads), '-c', String(o.connections), '-d', `${seconds}s`, '--latency', '--timeout', '5s'];
      if (mode === 'short') argv.push('-H', 'Connection: close');
      return parseWrk(must([...argv, url(topo, target, mode)]));
    };
    // a short warm-up of every path (ARP, the servers' JIT), not counted
    for (const target of TARGETS) for (const mode of MODES) wrk(target, mode, 1);

    const runs = new Map<string, WrkRun[]>();
    for (let r = 0; r < o.runs; r++) {
      for (const mode of MODES) {
        // rotate the order of the targets from run to run
        for (let k = 0; k < TARGETS.length; k++) {
          const target = TARGETS[(k + r) % TARGETS.length]!;
          const w = wrk(target, mode, o.durationS);
          const key = `${target}/${mode}`;
          runs.set(key, [...(runs.get(key) ?? []), w]);
          log(`  run ${r + 1}/${o.runs} ${mode.padEnd(5)} ${target.padEnd(7)} ${w.requestsPerSec.toFixed(0).padStart(7)} req/s ${(w.bytesPerSec / (1 << 20)).toFixed(1).padStart(7)} MiB/s  p99 ${w.latencyMs.p99.toFixed(2)} ms${w.errors + w.non2xx ? `  errors ${w.errors + w.non2xx}` : ''}`);
          await sleep(200);
        }
      }
    }
    for (const target of TARGETS) {
      for (const mode of MODES) {
        const rs = runs.get(`${target}/${mode}`) ?? [];
        result.cells.push({
          target,
          mode,
          runs: rs,
          requestsPerSec: median(rs.map((x) => x.requestsPerSec)),
          bytesPerSec: median(rs.map((x) => x.bytesPerSec)),
          p50Ms: median(rs.map((x) => x.latencyMs.p50)),
          p99Ms: median(rs.map((x) => x.latencyMs.p99)),
          errors: rs.reduce((n, x) => n + x.errors + x.non2xx, 0),
        });
      }
    }
    // the director balanced the xdpvs runs over all three real servers
    const stats = JSON.parse(must(execArgv(topo, 'director', [process.execPath, BIN, 'stats', '-i', topo.director.interface, '--json']), env)) as {
      services: Array<{ backends: Array<{ ip: string; connections: number }> }>;
    };
    const spread: Record<string, number> = {};
    for (const s of stats.services) for (const b of s.backends) spread[b.ip] = (spread[b.ip] ?? 0) + b.connections;
    result.xdpvsSpread = spread;
  } catch (err) {
    result.error = (err as Error).message;
    log(`  failed: ${result.error}`);
  } finally {
    for (const c of children) c.kill('SIGTERM');
    if (t && loaded) run(execArgv(t, 'director', [process.execPath, BIN, 'unload', '-i', t.director.interface]), env);
    try {
      await labDown(prefix);
    } catch (err) {
      log(`  lab down: ${(err as Error).message}`);
    }
    for (const d of [env.XDPVS_PIN_ROOT!, env.XDPVS_RUN_ROOT!, dir]) fs.rmSync(d, { recursive: true, force: true });
  }
  return result;
}
