/**
 * A long-running client for the lab: many keep-alive TCP connections that each send a request
 * every ~100 ms, and a steady trickle of new connections, every answer recorded with the real
 * server that gave it. It shows what changes on the director (backends added, drained,
 * reweighted or removed; programs reloaded) do to established connections and to new ones.
 *
 *   xdpvs lab exec client -- node dist/lab/soak.js 10.200.0.100 --out events.jsonl \
 *       [--port 80] [--keep 40] [--interval 100] [--rate 20] [--timeout 5000] [--duration 600]
 *
 *   --keep N      keep-alive connections opened at the start (one request at a time on each,
 *                 the next --interval ms after the answer); each is one TCP connection for its
 *                 whole life: when it breaks (reset, closed, an answer later than --timeout) it
 *                 is recorded as broken and not reopened
 *   --rate R      new connections per second, each `Connection: close` with one request
 *   --out FILE    one JSON object per line (an Event) for every answer and every failure
 *   --duration S  stops by itself after S seconds, whatever happens to its controller
 *
 * On stdin it takes lines `open N` (N more keep-alive connections) and `stop` (or end of input):
 * it stops sending, closes its connections and exits. On stdout it prints `ready` once every
 * initial keep-alive connection has had its first answer, `opened N` once the connections of an
 * `open` have, and `end` just before it exits. HTTP is spoken by hand over net.Socket, so a
 * connection is exactly one TCP connection (an http.Agent would silently replace a broken one).
 */
import fs from 'node:fs';
import net from 'node:net';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** One line of the events file. */
export type SoakEvent =
  /** an answer (`s`) or the failure (`e`) that broke keep-alive connection `c`, at `t` (ms since the epoch) */
  | { k: 'keep'; c: number; p: number; t: number; s?: string; e?: string }
  /** a new connection started at `t` from port `p`: who answered (`s`) or why nobody did (`e`), at `a` */
  | { k: 'new'; p: number; t: number; a: number; s?: string; e?: string };

export interface SoakOptions {
  host: string;
  port: number;
  keep: number;
  intervalMs: number;
  rate: number;
  timeoutMs: number;
  out: string;
  durationS: number;
}

/** Parses one HTTP/1.1 response from the front of `buf`: the body (the real server's name). */
function parseResponse(buf: Buffer): { length: number; status: number; body: string; close: boolean } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const head = buf.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '')?.[1] ?? 0);
  const header = (name: string) => head.slice(1).find((l) => l.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1).trim();
  const bodyLength = Number(header('content-length') ?? 0);
  if (buf.length < end + 4 + bodyLength) return undefined;
  return {
    length: end + 4 + bodyLength,
    status,
    body: buf.subarray(end + 4, end + 4 + bodyLength).toString('utf8').trim(),
    close: (header('connection') ?? '').toLowerCase() === 'close',
  };
}

const request = (host: string, close: boolean) => `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: ${close ? 'close' : 'keep-alive'}\r\n\r\n`;

class KeepAliveConnection {
  private socket: net.Socket;
  private buf = Buffer.alloc(0);
  private timer: NodeJS.Timeout | undefined;
  private port = 0;
  private done = false;
  private firstAnswer: () => void = () => {};
  readonly answered: Promise<void>;

  constructor(
    readonly id: number,
    private readonly o: SoakOptions,
    private readonly record: (e: SoakEvent) => void,
  ) {
    this.answered = new Promise((resolve) => (this.firstAnswer = resolve));
    this.socket = net.connect({ host: o.host, port: o.port });
    this.socket.setNoDelay(true);
    this.socket.on('connect', () => {
      this.port = this.socket.localPort ?? 0;
      this.send();
    });
    this.socket.on('data', (d: Buffer) => this.onData(d));
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.broken(err.code ?? err.message));
    this.socket.on('close', () => this.broken('closed by the server'));
  }

  private send(): void {
    if (this.done) return;
    this.timer = setTimeout(() => this.broken(`no answer within ${this.o.timeoutMs} ms`), this.o.timeoutMs);
    this.socket.write(request(this.o.host, false));
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    const r = parseResponse(this.buf);
    if (!r) return;
    this.buf = this.buf.subarray(r.length);
    clearTimeout(this.timer);
    if (r.status !== 200) return this.broken(`HTTP ${r.status}`);
    this.record({ k: 'keep', c: this.id, p: this.port, t: Date.now(), s: r.body });
    this.firstAnswer();
    if (r.close) return this.broken('the server announced it closes');
    this.timer = setTimeout(() => this.send(), this.o.intervalMs);
  }

  private broken(why: string): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.record({ k: 'keep', c: this.id, p: this.port, t: Date.now(), e: why });
    this.firstAnswer();
    this.socket.destroy();
  }

  /** Stops sending and closes the connection (not a break). */
  stop(): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.socket.end();
    this.socket.destroy();
  }
}

/** One request on a new connection; resolves when it is recorded. */
function newConnection(o: SoakOptions, record: (e: SoakEvent) => void): Promise<void> {
  return new Promise((resolve) => {
    const t = Date.now();
    let port = 0;
    let buf = Buffer.alloc(0);
    let done = false;
    const socket = net.connect({ host: o.host, port: o.port });
    const finish = (r: { s?: string; e?: string }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      record({ k: 'new', p: port, t, a: Date.now(), ...r });
      resolve();
    };
    const timer = setTimeout(() => finish({ e: `no answer within ${o.timeoutMs} ms` }), o.timeoutMs);
    socket.on('connect', () => {
      port = socket.localPort ?? 0;
      socket.write(request(o.host, true));
    });
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const r = parseResponse(buf);
      if (r) finish(r.status === 200 ? { s: r.body } : { e: `HTTP ${r.status}` });
    });
    socket.on('error', (err: NodeJS.ErrnoException) => finish({ e: err.code ?? err.message }));
    socket.on('close', () => finish({ e: 'closed before the answer' }));
  });
}

export async function soak(o: SoakOptions): Promise<void> {
  const out = fs.createWriteStream(o.out);
  const record = (e: SoakEvent) => out.write(`${JSON.stringify(e)}\n`);
  const conns: KeepAliveConnection[] = [];
  const inFlight = new Set<Promise<void>>();
  const open = (n: number) => {
    const opened: KeepAliveConnection[] = [];
    for (let i = 0; i < n; i++) opened.push(new KeepAliveConnection(conns.length + i, o, record));
    conns.push(...opened);
    return Promise.all(opened.map((c) => c.answered));
  };

  let stopping = false;
  let stopped: () => void = () => {};
  const done = new Promise<void>((resolve) => (stopped = resolve));
  const trickle = setInterval(() => {
    const p = newConnection(o, record);
    inFlight.add(p);
    void p.then(() => inFlight.delete(p));
  }, 1000 / o.rate);
  const stop = () => {
    if (stopping) return;
    stopping = true;
    clearInterval(trickle);
    clearTimeout(deadline);
    stopped();
  };
  const deadline = setTimeout(stop, o.durationS * 1000);

  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === 'stop') stop();
    else if (cmd === 'open' && /^\d+$/.test(arg ?? '')) void open(Number(arg)).then(() => process.stdout.write(`opened ${arg}\n`));
    else process.stderr.write(`soak: unknown command ${JSON.stringify(line)}\n`);
  });
  lines.on('close', stop);

  await open(o.keep);
  process.stdout.write('ready\n');
  await done;
  lines.close();
  await Promise.all(inFlight);
  for (const c of conns) c.stop();
  await new Promise<void>((resolve) => out.end(resolve));
  process.stdout.write('end\n');
}

const USAGE = 'usage: soak.js HOST --out FILE [--port 80] [--keep 40] [--interval 100] [--rate 20] [--timeout 5000] [--duration 600]';

function number(text: string | undefined, flag: string, fallback: number, min = 1): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || n < min) throw new Error(`${flag}: ${JSON.stringify(text)} is not a number >= ${min}`);
  return n;
}

function parse(argv: string[]): SoakOptions {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: 'string' },
      port: { type: 'string' },
      keep: { type: 'string' },
      interval: { type: 'string' },
      rate: { type: 'string' },
      timeout: { type: 'string' },
      duration: { type: 'string' },
    },
  });
  const [host, ...rest] = positionals;
  if (host === undefined || rest.length > 0 || !values.out) throw new Error(USAGE);
  const bare = host.replace(/^\[(.*)\]$/, '$1');
  if (net.isIP(bare) === 0) throw new Error(`${host} is not an IP address`);
  return {
    host: bare,
    out: values.out,
    port: number(values.port, '--port', 80),
    keep: number(values.keep, '--keep', 40, 0),
    intervalMs: number(values.interval, '--interval', 100),
    rate: number(values.rate, '--rate', 20),
    timeoutMs: number(values.timeout, '--timeout', 5000),
    durationS: number(values.duration, '--duration', 600),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === fs.realpathSync(process.argv[1])) {
  let o: SoakOptions;
  try {
    o = parse(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`soak: ${(err as Error).message}\n`);
    process.exit(2);
  }
  soak(o).then(
    () => process.exit(0),
    (err: Error) => {
      process.stderr.write(`soak: ${err.stack ?? err.message}\n`);
      process.exit(1);
    },
  );
}
