/**
 * Health checks of real servers, as keepalived's TCP_CHECK and HTTP_GET: run from the director
 * (the daemon's network namespace) to each real server's own address, never the VIP.
 *
 *   tcp   a TCP connection to IP:port opens within the timeout (and is closed at once)
 *   http  GET path on IP:port answers with the expected status within the timeout
 *
 * A backend is marked down after `fall` consecutive failures and up after `rise` consecutive
 * successes (HealthState, pure); a Checker runs one probe every `interval` seconds.
 */
import http from 'node:http';
import net from 'node:net';
import type { HealthCheck } from '../config/types.js';

export type Verdict = 'up' | 'down';

export interface ProbeResult {
  ok: boolean;
  /** what happened, for the log: `connected`, `HTTP 503, expected 200`, `ECONNREFUSED`, ... */
  reason: string;
  /** from the start of the probe to its outcome */
  seconds: number;
}

// ---------------------------------------------------------------------------------------------
// rise and fall

/** Consecutive results, and the verdict they lead to. */
export class HealthState {
  successes = 0;
  failures = 0;

  constructor(
    public verdict: Verdict,
    readonly rise: number,
    readonly fall: number,
  ) {}

  /** Counts one result; returns the new verdict when this result changes it. */
  record(ok: boolean): Verdict | undefined {
    if (ok) {
      this.failures = 0;
      this.successes++;
      if (this.verdict === 'down' && this.successes >= this.rise) return (this.verdict = 'up');
    } else {
      this.successes = 0;
      this.failures++;
      if (this.verdict === 'up' && this.failures >= this.fall) return (this.verdict = 'down');
    }
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// probes

export interface ProbeTarget {
  type: 'tcp' | 'http';
  host: string;
  port: number;
  /** http */
  path?: string;
  expectStatus?: number;
  timeoutMs: number;
}

/** `10.0.0.1:80`, `[fd00::1]:80` */
export const hostPort = (host: string, port: number): string => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);

const seconds = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e9;

/**
 * Runs `attempt` with a deadline. The deadline is judged after the event loop has handled
 * pending I/O (setImmediate runs after the poll phase): when the loop was blocked (a compile
 * during a reload, a long scrape), an answer that arrived in time is not taken for a timeout.
 */
function withDeadline(
  timeoutMs: number,
  signal: AbortSignal | undefined,
  attempt: (finish: (ok: boolean, reason: string) => void) => () => void,
  timeoutReason: string,
): Promise<ProbeResult> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve) => {
    let done = false;
    let cleanup: () => void = () => {};
    const finish = (ok: boolean, reason: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      cleanup();
      resolve({ ok, reason, seconds: seconds(t0) });
    };
    const onAbort = () => finish(false, 'stopped');
    const timer = setTimeout(() => setImmediate(() => finish(false, timeoutReason)), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    cleanup = attempt(finish);
    if (done) cleanup();
  });
}

const errorText = (err: NodeJS.ErrnoException): string => err.code ?? err.message;

export function probeTcp(target: ProbeTarget, signal?: AbortSignal): Promise<ProbeResult> {
  const where = hostPort(target.host, target.port);
  return withDeadline(
    target.timeoutMs,
    signal,
    (finish) => {
      const socket = net.connect({ host: target.host, port: target.port });
      socket.once('connect', () => finish(true, `connected to ${where}`));
      socket.once('error', (err: NodeJS.ErrnoException) => finish(false, `connect to ${where}: ${errorText(err)}`));
      return () => socket.destroy();
    },
    `connect to ${where}: no answer within ${target.timeoutMs / 1000} s`,
  );
}

export function probeHttp(target: ProbeTarget, signal?: AbortSignal): Promise<ProbeResult> {
  const path = target.path ?? '/';
  const expect = target.expectStatus ?? 200;
  const url = `http://${hostPort(target.host, target.port)}${path}`;
  return withDeadline(
    target.timeoutMs,
    signal,
    (finish) => {
      const req = http.request({
        host: target.host,
        port: target.port,
        path,
        method: 'GET',
        agent: false,
        headers: { Host: hostPort(target.host, target.port), 'User-Agent': 'xdpvs-healthcheck', Connection: 'close' },
      });
      req.once('response', (res) => {
        res.resume();
        const status = res.statusCode ?? 0;
        finish(status === expect, status === expect ? `GET ${url}: HTTP ${status}` : `GET ${url}: HTTP ${status}, expected ${expect}`);
      });
      req.once('error', (err: NodeJS.ErrnoException) => finish(false, `GET ${url}: ${errorText(err)}`));
      req.end();
      return () => req.destroy();
    },
    `GET ${url}: no answer within ${target.timeoutMs / 1000} s`,
  );
}

export function probe(target: ProbeTarget, signal?: AbortSignal): Promise<ProbeResult> {
  return target.type === 'http' ? probeHttp(target, signal) : probeTcp(target, signal);
}

/** What to probe for a backend, or undefined for `none` (always up). */
export function probeTarget(ip: string, hc: HealthCheck): ProbeTarget | undefined {
  if (hc.type === 'none' || hc.port === undefined) return undefined;
  return {
    type: hc.type,
    host: ip,
    port: hc.port,
    ...(hc.type === 'http' ? { path: hc.path ?? '/', expectStatus: hc.expectStatus ?? 200 } : {}),
    timeoutMs: Math.round(hc.timeout * 1000),
  };
}

// ---------------------------------------------------------------------------------------------
// the periodic checker of one backend

export interface CheckerHooks {
  /** every probe's result, after it has been counted */
  onResult(result: ProbeResult): void;
  /** a change of verdict; `streak` is the number of consecutive results that made it */
  onChange(from: Verdict, to: Verdict, result: ProbeResult, streak: number): void;
}

export type ProbeFn = (target: ProbeTarget, signal?: AbortSignal) => Promise<ProbeResult>;

export class Checker {
  readonly state: HealthState;
  private timer: NodeJS.Timeout | undefined;
  private abort: AbortController | undefined;
  private running = false;

  constructor(
    readonly target: ProbeTarget,
    readonly intervalMs: number,
    initial: Verdict,
    rise: number,
    fall: number,
    private readonly hooks: CheckerHooks,
    private readonly probeFn: ProbeFn = probe,
  ) {
    this.state = new HealthState(initial, rise, fall);
  }

  get verdict(): Verdict {
    return this.state.verdict;
  }

  /** Starts probing after `firstDelayMs`, then every interval (measured from each probe's start). */
  start(firstDelayMs = 0): void {
    if (this.running) return;
    this.running = true;
    this.timer = setTimeout(() => void this.tick(), firstDelayMs);
  }

  /** Stops probing; a probe in flight is abandoned and not counted. */
  stop(): void {
    this.running = false;
    clearTimeout(this.timer);
    this.abort?.abort();
  }

  private async tick(): Promise<void> {
    if (!this.running) return;
    const started = Date.now();
    this.abort = new AbortController();
    const result = await this.probeFn(this.target, this.abort.signal);
    this.abort = undefined;
    if (!this.running) return;
    const from = this.state.verdict;
    const to = this.state.record(result.ok);
    try {
      this.hooks.onResult(result);
      if (to !== undefined) this.hooks.onChange(from, to, result, to === 'up' ? this.state.successes : this.state.failures);
    } catch (err) {
      process.stderr.write(`xdpvs: internal error in a health check's hook: ${(err as Error)?.stack ?? String(err)}\n`);
    } finally {
      // whatever a hook does, the next probe comes
      if (this.running) this.timer = setTimeout(() => void this.tick(), Math.max(0, started + this.intervalMs - Date.now()));
    }
  }
}
