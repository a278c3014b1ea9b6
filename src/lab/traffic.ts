/**
 * The lab's client: sends traffic to a VIP and records which real server answered each request.
 * Run inside the client's namespace; prints one JSON document (a TrafficReport) on stdout.
 *
 *   xdpvs lab exec client -- node dist/lab/traffic.js http 10.200.0.100 [--port 80] [--count 400]
 *   xdpvs lab exec client -- node dist/lab/traffic.js keepalive 10.200.0.100 [--count 100]
 *   xdpvs lab exec client -- node dist/lab/traffic.js udp 10.200.0.101 [--port 53] [--count 30]
 *
 *   http       N GETs, each on a new TCP connection (agent: false, `Connection: close`)
 *   keepalive  M GETs one after the other on one keep-alive connection
 *   udp        N datagrams, each from a new socket (so a new source port: a new flow)
 *
 * The lab's real servers answer with their name (see realserver-app.ts), so the body says who
 * answered. Every result also carries the client's local port, which names the flow (the
 * director's connection table is keyed by the 5-tuple), so a capture or the director's counters
 * can be matched request by request. Exit status 0 even when requests fail: the report says so
 * (`failed`, and `error` per request); 2 on bad arguments.
 */
import dgram from 'node:dgram';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export type TrafficKind = 'http' | 'keepalive' | 'udp';

export interface RequestResult {
  /** The name the real server answered with, or null when nothing answered. */
  server: string | null;
  /** The client's source port for this request (0 if the socket never got one). */
  localPort: number;
  /** Why nothing usable came back (timeout, ECONNREFUSED, HTTP status ...). */
  error?: string;
}

export interface TrafficReport {
  kind: TrafficKind;
  host: string;
  port: number;
  /** Requests sent. */
  sent: number;
  answered: number;
  failed: number;
  /** Answers per real server name. */
  byServer: Record<string, number>;
  /** Distinct client source ports used: TCP connections opened, or UDP flows. */
  flows: number;
  elapsedMs: number;
  results: RequestResult[];
}

export interface TrafficOptions {
  host: string;
  port: number;
  count: number;
  /** Per request, in ms. */
  timeoutMs?: number;
  /** Requests in flight at once (http and udp; keepalive is one connection, so one at a time). */
  concurrency?: number;
}

const DEFAULT_TIMEOUT_MS = 2000;

/** The real server's name from a body like `rs2\n`. */
function nameOf(body: string): string | null {
  const name = body.trim();
  return name === '' ? null : name;
}

function report(kind: TrafficKind, o: TrafficOptions, started: number, results: RequestResult[]): TrafficReport {
  const byServer: Record<string, number> = {};
  for (const r of results) if (r.server !== null) byServer[r.server] = (byServer[r.server] ?? 0) + 1;
  const answered = results.filter((r) => r.server !== null).length;
  return {
    kind,
    host: o.host,
    port: o.port,
    sent: results.length,
    answered,
    failed: results.length - answered,
    byServer: Object.fromEntries(Object.entries(byServer).sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }))),
    flows: new Set(results.map((r) => r.localPort).filter((p) => p !== 0)).size,
    elapsedMs: Date.now() - started,
    results,
  };
}

/** Runs `task(i)` for i < count, at most `concurrency` at a time; results in order of i. */
async function pool<T>(count: number, concurrency: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      out[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, worker));
  return out;
}

/** One GET; `agent` false opens a new connection, an Agent with keepAlive reuses one. */
function get(o: TrafficOptions, agent: http.Agent | false): Promise<RequestResult> {
  return new Promise((resolve) => {
    let localPort = 0;
    let done = false;
    const finish = (r: Omit<RequestResult, 'localPort'>) => {
      if (done) return;
      done = true;
      resolve({ ...r, localPort });
    };
    const req = http.get({ host: o.host, port: o.port, path: '/', agent, timeout: o.timeoutMs ?? DEFAULT_TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        if (res.statusCode !== 200) finish({ server: null, error: `HTTP ${res.statusCode}` });
        else finish({ server: nameOf(body) });
      });
      res.on('error', (err) => finish({ server: null, error: err.message }));
    });
    // a reused socket is handed over without a new 'connect': read the port from it either way
    req.on('socket', (socket: net.Socket) => {
      if (socket.localPort) localPort = socket.localPort;
      else socket.once('connect', () => (localPort = socket.localPort ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error(`timed out after ${o.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => finish({ server: null, error: err.code ?? err.message }));
  });
}

/** `count` GETs, each on a new TCP connection. */
export async function httpGets(o: TrafficOptions): Promise<TrafficReport> {
  const started = Date.now();
  const results = await pool(o.count, o.concurrency ?? 1, () => get(o, false));
  return report('http', o, started, results);
}

/** `count` GETs in sequence on one keep-alive connection (a new one only if the server closes it). */
export async function keepAlive(o: TrafficOptions): Promise<TrafficReport> {
  const started = Date.now();
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1 });
  const results: RequestResult[] = [];
  try {
    for (let i = 0; i < o.count; i++) results.push(await get(o, agent));
  } finally {
    agent.destroy();
  }
  return report('keepalive', o, started, results);
}

/** One datagram from a fresh socket, connected to the VIP so only its answer is accepted. */
function query(o: TrafficOptions, i: number): Promise<RequestResult> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket(net.isIPv6(o.host) ? 'udp6' : 'udp4');
    let localPort = 0;
    let done = false;
    const finish = (r: Omit<RequestResult, 'localPort'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.close();
      resolve({ ...r, localPort });
    };
    const timer = setTimeout(() => finish({ server: null, error: `timed out after ${o.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms` }), o.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    socket.on('error', (err: NodeJS.ErrnoException) => finish({ server: null, error: err.code ?? err.message }));
    socket.on('message', (msg) => finish({ server: nameOf(msg.toString('utf8')) }));
    socket.connect(o.port, o.host, () => {
      localPort = socket.address().port;
      socket.send(`query ${i}\n`);
    });
  });
}

/** `count` UDP queries, each from its own socket. */
export async function udpQueries(o: TrafficOptions): Promise<TrafficReport> {
  const started = Date.now();
  const results = await pool(o.count, o.concurrency ?? 1, (i) => query(o, i));
  return report('udp', o, started, results);
}

export const RUNNERS: Record<TrafficKind, (o: TrafficOptions) => Promise<TrafficReport>> = {
  http: httpGets,
  keepalive: keepAlive,
  udp: udpQueries,
};

const USAGE = 'usage: traffic.js http|keepalive|udp HOST [--port N] [--count N] [--concurrency N] [--timeout MS]';

function wholeNumber(text: string | undefined, flag: string, min: number): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min) throw new Error(`${flag}: ${JSON.stringify(text)} is not a whole number >= ${min}`);
  return n;
}

async function main(argv: string[]): Promise<number> {
  let kind: TrafficKind;
  let o: TrafficOptions;
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        port: { type: 'string' },
        count: { type: 'string' },
        concurrency: { type: 'string' },
        timeout: { type: 'string' },
      },
    });
    const [k, host, ...rest] = positionals;
    if (k === undefined || !(k in RUNNERS) || host === undefined || rest.length > 0) throw new Error(USAGE);
    kind = k as TrafficKind;
    // [fd00::1] or plain fd00::1
    const bare = host.replace(/^\[(.*)\]$/, '$1');
    if (net.isIP(bare) === 0) throw new Error(`${host} is not an IP address`);
    o = {
      host: bare,
      port: wholeNumber(values.port, '--port', 1) ?? (kind === 'udp' ? 53 : 80),
      count: wholeNumber(values.count, '--count', 0) ?? (kind === 'keepalive' ? 100 : kind === 'udp' ? 30 : 100),
      concurrency: wholeNumber(values.concurrency, '--concurrency', 1),
      timeoutMs: wholeNumber(values.timeout, '--timeout', 1),
    };
  } catch (err) {
    process.stderr.write(`traffic: ${(err as Error).message}\n`);
    return 2;
  }
  const result = await RUNNERS[kind](o);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === fs.realpathSync(process.argv[1])) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: Error) => {
      process.stderr.write(`traffic: ${err.stack ?? err.message}\n`);
      process.exit(1);
    },
  );
}
