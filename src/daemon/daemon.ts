/**
 * `xdpvs daemon FILE -i IFACE`: what keepalived does for LVS, for xdpvs.
 *
 *   - applies FILE on start; when the same services already run (an earlier daemon or `load`),
 *     that only swaps tables in the pinned maps, and the recorded health verdicts are the
 *     starting point: a restart does not disturb traffic;
 *   - health-checks every backend from the director to its own address (health.ts); a change of
 *     verdict is logged and re-applied with the new verdicts (a backend held down has weight 0:
 *     no new flows, established flows stay, as keepalived's inhibit_on_failure);
 *   - gives every backend a MAC before each apply (the file's, the neighbour table's, else the
 *     last one used; a backend never resolved is held down) and re-applies when the neighbour
 *     table's MAC of a backend changes (checked every --mac-interval seconds);
 *   - reloads FILE when it changes and on SIGHUP; an invalid file is logged and ignored;
 *   - serves /metrics and /healthz;
 *   - on SIGTERM/SIGINT stops checking and serving and exits 0, leaving the program attached.
 *
 * Applies run one at a time, in order: verdict changes that arrive together go into one apply.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Backend, Service, ServicesConfig } from '../config/types.js';
import { parseServicesText } from '../config/validate.js';
import { UserError } from '../errors.js';
import type { XdpAttachMode } from '../libbpf.js';
import { runDir } from '../paths.js';
import { backendKey } from '../plan.js';
import { applyServices } from '../runtime/load.js';
import { probeNeighbours, readNeighbours } from '../runtime/neigh.js';
import { isAttached } from '../runtime/read.js';
import { readState } from '../runtime/state.js';
import { Checker, probeTarget, type ProbeFn, type ProbeResult, type Verdict } from './health.js';
import { Histogram, renderExposition } from './exposition.js';
import type { Logger } from './log.js';
import { buildFamilies, HEALTHCHECK_BUCKETS, readDataPlane, type DaemonStats, type DataPlaneSnapshot, type HealthCheckStats } from './metrics.js';
import { formatListenAddress, MetricsServer, type ListenAddress } from './server.js';

export interface DaemonOptions {
  file: string;
  iface: string;
  mode: XdpAttachMode;
  metrics?: ListenAddress;
  logger: Logger;
  /** seconds between comparisons of the backends' MACs with the neighbour table */
  macInterval?: number;
  /** seconds before a failed apply of health verdicts is tried again */
  retryInterval?: number;
  /** ms to wait for a file change to settle before reloading */
  reloadDebounceMs?: number;
  /** ms to gather verdict changes into one apply */
  batchMs?: number;
  /** for tests */
  probe?: ProbeFn;
  /** handle SIGTERM, SIGINT, SIGHUP (default true) */
  signals?: boolean;
}

/** Written for a backend no MAC is known for; it is held down, so no slot leads to it. */
export const UNRESOLVED_MAC = '00:00:00:00:00:00';

/** A backend as the daemon watches it. */
interface Watch {
  key: string;
  service: Service;
  backend: Backend;
  /** what its checker checks: a checker is kept across reloads while this stays the same */
  definition: string;
  /** undefined for `none`: always up */
  checker: Checker | undefined;
}

/** What the last successful apply gave the data plane. */
interface Applied {
  health: Record<string, Verdict>;
  macs: Record<string, string>;
  unresolved: Set<string>;
}

type ApplyWhy = 'start' | 'reload' | 'health' | 'mac' | 'retry';

const sameRecord = (a: Record<string, string>, b: Record<string, string>): boolean => {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
};

const sha256 = (text: string): string => crypto.createHash('sha256').update(text).digest('hex');
const stripBom = (text: string): string => (text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
const readError = (file: string, err: unknown): string => {
  const code = (err as NodeJS.ErrnoException).code;
  return `${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory, expected a JSON file' : `cannot read: ${(err as Error).message}`}`;
};
const errorFields = (err: unknown) => ({
  error: (err as Error)?.message ?? String(err),
  details: err instanceof UserError && err.details.length > 0 ? err.details : undefined,
});

export class Daemon {
  private readonly log: Logger;
  private readonly source: string;
  private config!: ServicesConfig;
  private raw: unknown;
  private text = '';
  /** the last file content that failed to reload: a change event with the same text is not retried */
  private rejectedText: string | undefined;
  private watches = new Map<string, Watch>();
  private readonly healthStats = new Map<string, HealthCheckStats>();
  private applied: Applied | undefined;
  /** backendKey -> the last MAC used for it, the fallback when the neighbour table lacks it */
  private knownMacs: Record<string, string> = {};

  private chain: Promise<unknown> = Promise.resolve();
  private applyScheduled = false;
  private batchTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private macTimer: NodeJS.Timeout | undefined;
  private reloadTimer: NodeJS.Timeout | undefined;
  private watcher: fs.FSWatcher | undefined;
  private server: MetricsServer | undefined;
  private stopping = false;
  private claimed = false;
  /** the program was taken off by someone else: health changes are not applied */
  private gone = false;
  private stopped!: Promise<void>;
  private resolveStopped!: () => void;
  private readonly signalHandlers: Array<[NodeJS.Signals, () => void]> = [];
  private readonly scrapeErrors = new Set<string>();

  readonly stats: DaemonStats;

  constructor(private readonly opts: DaemonOptions) {
    this.log = opts.logger;
    this.source = path.resolve(opts.file);
    this.stats = {
      file: this.source,
      configSha256: '',
      startTime: Date.now() / 1000,
      applies: { success: 0, failure: 0 },
      lastApplySuccess: 0,
      reloads: { success: 0, failure: 0 },
      lastReloadSuccessful: true,
      macChanges: 0,
    };
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve));
  }

  /** Starts, and resolves once stopped by a signal or stop(). Start-up failures throw (UserError). */
  async run(): Promise<void> {
    const o = this.opts;
    if (o.signals !== false) {
      const on = (sig: NodeJS.Signals, fn: () => void) => {
        process.on(sig, fn);
        this.signalHandlers.push([sig, fn]);
      };
      on('SIGTERM', () => void this.stop('SIGTERM'));
      on('SIGINT', () => void this.stop('SIGINT'));
      on('SIGHUP', () => this.requestReload('SIGHUP'));
    }
    this.log.info('starting', { file: this.source, interface: o.iface, mode: o.mode, metrics: o.metrics && formatListenAddress(o.metrics), pid: process.pid });
    try {
      let text: string;
      try {
        text = fs.readFileSync(this.source, 'utf8');
      } catch (err) {
        throw new UserError(readError(o.file, err));
      }
      const config = parseServicesText(text, o.file);
      const raw = JSON.parse(stripBom(text)) as unknown;
      this.claimInterface();
      if (o.metrics) this.server = await MetricsServer.listen(o.metrics, { metrics: () => this.renderMetrics(), unhealthy: () => this.unhealthy() });

      // what an earlier daemon or `load` left: the verdicts to start from, the MACs it used
      const previous = readState(o.iface);
      this.knownMacs = { ...(previous?.macs ?? {}) };
      const adopted = previous?.health ?? {};
      const next = this.planWatches(config, (key) => adopted[key]);
      const starting = this.applyConfig(config, raw, next, 'start');
      this.chain = starting.then(
        () => undefined,
        () => undefined,
      ); // a stop meanwhile waits for it
      const result = await starting;
      this.config = config;
      this.raw = raw;
      this.text = text;
      this.stats.configSha256 = sha256(text);
      this.swapWatches(next);
      const down = Object.entries(this.applied!.health).filter(([, v]) => v === 'down').map(([k]) => k);
      if (!this.stopping) this.log.info('started', {
        interface: o.iface,
        program: result.progId,
        action: !result.replaced ? 'loaded' : result.reloaded ? 'replaced the running program' : 'adopted the running program (same program: tables swapped, traffic undisturbed)',
        services: config.services.length,
        backends: next.size,
        checked: [...next.values()].filter((w) => w.checker).length,
        down: down.length > 0 ? down : undefined,
        metrics: this.server && formatListenAddress(this.server.address()),
      });
    } catch (err) {
      await this.shutdown();
      throw err;
    }
    if (this.stopping) {
      await this.shutdown();
      return;
    }
    this.watchFile();
    const macEvery = (o.macInterval ?? 30) * 1000;
    this.macTimer = setInterval(() => void this.enqueue(() => this.checkMacs()), macEvery);
    return this.stopped;
  }

  /** Stops checks, the watcher and the metrics server; the program stays attached. */
  async stop(signal = 'stop'): Promise<void> {
    if (this.stopping) return this.stopped;
    this.stopping = true;
    this.log.info('stopping', { signal, note: `the program stays attached to ${this.opts.iface} and keeps forwarding` });
    await this.shutdown();
    this.log.info('stopped', { interface: this.opts.iface });
    this.resolveStopped();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    for (const t of [this.batchTimer, this.retryTimer, this.reloadTimer]) clearTimeout(t);
    clearInterval(this.macTimer);
    this.watcher?.close();
    for (const w of this.watches.values()) w.checker?.stop();
    await this.server?.close();
    this.server = undefined;
    await this.chain; // an apply in flight completes: the data plane and the state stay whole
    this.releaseInterface();
    for (const [sig, fn] of this.signalHandlers.splice(0)) process.off(sig, fn);
  }

  // -------------------------------------------------------------------------------------------
  // one daemon per interface: two would fight over the tables

  private get pidFile(): string {
    return path.join(runDir(this.opts.iface), 'daemon.pid');
  }

  /** Whether `pid` is a running `xdpvs daemon` (a stale file after SIGKILL names a dead one). */
  private static isDaemon(pid: number): boolean {
    try {
      const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return args.includes('daemon') && args.some((a) => path.basename(a) === 'xdpvs');
    } catch {
      return false;
    }
  }

  private claimInterface(): void {
    fs.mkdirSync(runDir(this.opts.iface), { recursive: true });
    for (let attempt = 0; ; attempt++) {
      try {
        fs.writeFileSync(this.pidFile, `${process.pid}\n`, { flag: 'wx' });
        this.claimed = true;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
      }
      const pid = Number(fs.readFileSync(this.pidFile, 'utf8').trim());
      if (pid > 0 && pid !== process.pid && Daemon.isDaemon(pid)) {
        throw new UserError(`a daemon already runs for ${this.opts.iface} (pid ${pid})`, [
          `two daemons would undo each other's verdicts: stop that one first (kill ${pid}, or systemctl stop xdpvs)`,
        ]);
      }
      fs.rmSync(this.pidFile, { force: true }); // left by a daemon that is gone
    }
  }

  private releaseInterface(): void {
    if (!this.claimed) return;
    this.claimed = false;
    try {
      if (Number(fs.readFileSync(this.pidFile, 'utf8').trim()) === process.pid) fs.rmSync(this.pidFile);
    } catch {
      // removed with the state (unload)
    }
  }

  // -------------------------------------------------------------------------------------------
  // backends and their checkers

  private planWatches(config: ServicesConfig, startingVerdict: (key: string) => Verdict | undefined): Map<string, Watch> {
    const next = new Map<string, Watch>();
    for (const service of config.services) {
      for (const backend of service.backends) {
        const key = backendKey(service, backend);
        const hc = service.healthCheck;
        const target = probeTarget(backend.ip, hc);
        const definition = target ? JSON.stringify([target, hc.interval, hc.rise, hc.fall]) : 'none';
        const current = this.watches.get(key);
        if (current && current.definition === definition) {
          next.set(key, { ...current, service, backend });
          continue;
        }
        const verdict = current?.checker?.verdict ?? startingVerdict(key) ?? 'up';
        const checker = target
          ? new Checker(
              target,
              hc.interval * 1000,
              verdict,
              hc.rise,
              hc.fall,
              {
                onResult: (r) => this.onResult(key, r),
                onChange: (from, to, r, streak) => this.onVerdict(key, from, to, r, streak),
              },
              this.opts.probe,
            )
          : undefined;
        next.set(key, { key, service, backend, definition, checker });
      }
    }
    return next;
  }

  /** Makes `next` the watched set: stops checkers no longer used, starts new ones. */
  private swapWatches(next: Map<string, Watch>): void {
    for (const [key, w] of this.watches) if (next.get(key)?.checker !== w.checker) w.checker?.stop();
    for (const [key, w] of next) {
      if (!w.checker) {
        this.healthStats.delete(key);
        continue;
      }
      const type = w.checker.target.type;
      const s = this.healthStats.get(key);
      if (s && s.type === type) {
        s.service = w.service.name;
        s.backend = w.backend.ip;
      } else {
        this.healthStats.set(key, { service: w.service.name, backend: w.backend.ip, type, success: 0, failure: 0, duration: new Histogram(HEALTHCHECK_BUCKETS) });
      }
    }
    for (const key of [...this.healthStats.keys()]) if (!next.has(key)) this.healthStats.delete(key);
    const old = this.watches;
    this.watches = next;
    if (this.stopping) return;
    for (const [key, w] of next) {
      // a new checker's first probe at a random point of its interval, so many backends spread out
      if (w.checker && old.get(key)?.checker !== w.checker) w.checker.start(Math.random() * w.checker.intervalMs);
    }
  }

  private onResult(key: string, r: ProbeResult): void {
    const s = this.healthStats.get(key);
    if (!s) return;
    if (r.ok) s.success++;
    else s.failure++;
    s.duration.observe(r.seconds);
  }

  private onVerdict(key: string, from: Verdict, to: Verdict, r: ProbeResult, streak: number): void {
    const w = this.watches.get(key);
    if (!w || this.stopping) return;
    const hc = w.service.healthCheck;
    this.log.log(to === 'down' ? 'warn' : 'info', to === 'down' ? 'backend-down' : 'backend-up', {
      service: w.service.name,
      backend: w.backend.ip,
      from,
      to,
      reason: `${r.reason} (${streak} consecutive ${to === 'down' ? `failures, fall ${hc.fall}` : `successes, rise ${hc.rise}`})`,
    });
    this.scheduleApply();
  }

  // -------------------------------------------------------------------------------------------
  // applying

  /** Jobs that touch the data plane run one at a time, in order. The promise never rejects. */
  private enqueue(job: () => Promise<unknown>): Promise<void> {
    const run = this.chain.then(job).then(
      () => undefined,
      (err: unknown) => this.log.error('internal-error', errorFields(err)),
    );
    this.chain = run;
    return run;
  }

  /** An apply of the current verdicts soon: changes that arrive meanwhile go into the same one. */
  private scheduleApply(why: ApplyWhy = 'health'): void {
    if (this.applyScheduled || this.stopping) return;
    this.applyScheduled = true;
    this.batchTimer = setTimeout(() => {
      void this.enqueue(async () => {
        this.applyScheduled = false;
        if (this.stopping) return;
        await this.applyConfig(this.config, this.raw, this.watches, why).catch(() => undefined);
      });
    }, this.opts.batchMs ?? 50);
  }

  /**
   * Applies `config` with the verdicts of `watches` and a MAC for every backend. Logs what it
   * did; a failure is logged and thrown (the running program and state stay as they were), and
   * for health and MAC changes tried again after --retry-interval.
   */
  private async applyConfig(config: ServicesConfig, raw: unknown, watches: Map<string, Watch>, why: ApplyWhy): Promise<{ progId: number; replaced: boolean; reloaded: boolean }> {
    if (why === 'health' || why === 'mac' || why === 'retry') {
      // taken off by someone (`xdpvs unload`, `ip link set ... xdp off`): not put back behind their back
      const state = readState(this.opts.iface);
      const gone = !state ? 'the state is gone (xdpvs unload?)' : !isAttached(state) ? `program ${state.progId} is no longer attached` : undefined;
      if (gone) {
        if (!this.gone) this.log.error('program-gone', { interface: this.opts.iface, reason: gone, note: 'verdicts are not applied until a reload (SIGHUP) puts the services back' });
        this.gone = true;
        return { progId: 0, replaced: false, reloaded: false };
      }
    }
    const { filled, macs, unresolved } = await this.resolveMacs(config);
    const health: Record<string, Verdict> = {};
    for (const [key, w] of watches) health[key] = unresolved.has(key) ? 'down' : (w.checker?.verdict ?? 'up');
    const prev = this.applied;
    if ((why === 'health' || why === 'mac' || why === 'retry') && prev && sameRecord(health, prev.health) && sameRecord(macs, prev.macs)) {
      return { progId: 0, replaced: true, reloaded: false }; // the data plane has it already
    }
    for (const key of unresolved) {
      if (prev?.unresolved.has(key)) continue;
      const w = watches.get(key)!;
      this.log.warn('mac-unresolved', {
        service: w.service.name,
        backend: w.backend.ip,
        reason: `not in the neighbour table of ${this.opts.iface} and no answer to ARP/ND: held down until it resolves`,
      });
    }
    try {
      const r = await applyServices({ config: filled, raw, source: this.source, iface: this.opts.iface, mode: this.opts.mode, health });
      this.applied = { health, macs, unresolved };
      this.gone = false;
      if (this.claimed && !fs.existsSync(this.pidFile)) fs.writeFileSync(this.pidFile, `${process.pid}\n`); // after an unload
      for (const [k, mac] of Object.entries(macs)) if (!unresolved.has(k)) this.knownMacs[k] = mac;
      this.stats.applies.success++;
      this.stats.lastApplySuccess = Date.now() / 1000;
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      const down = Object.values(health).filter((v) => v === 'down').length;
      this.log.info('applied', {
        reason: why,
        program: r.state.progId,
        action: !r.replaced ? 'loaded' : r.reloaded ? 'program replaced' : 'tables swapped',
        backends: Object.keys(health).length,
        down,
      });
      return { progId: r.state.progId, replaced: r.replaced, reloaded: r.reloaded };
    } catch (err) {
      this.stats.applies.failure++;
      if (why === 'health' || why === 'mac' || why === 'retry') {
        // start and reload report their own failure
        this.log.error('apply-failed', { reason: why, ...errorFields(err), note: 'the data plane keeps what it had; trying again' });
        this.scheduleRetry();
      }
      throw err;
    }
  }

  private scheduleRetry(): void {
    if (this.stopping || this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.scheduleApply('retry');
    }, (this.opts.retryInterval ?? 5) * 1000);
  }

  /**
   * A MAC for every backend: the file's, else the neighbour table's, else the last one used (a
   * real server that stopped answering ARP is most likely still where it was; its health check
   * decides), else after one ARP/ND probe; a backend still without one is unresolved (held down).
   */
  private async resolveMacs(config: ServicesConfig): Promise<{ filled: ServicesConfig; macs: Record<string, string>; unresolved: Set<string> }> {
    const all = config.services.flatMap((s) => s.backends.map((b) => ({ s, b, key: backendKey(s, b) })));
    let neigh = readNeighbours(this.opts.iface);
    const unknown = all.filter(({ b, key }) => !b.mac && !neigh.has(b.ip) && !this.knownMacs[key]);
    if (unknown.length > 0) {
      await probeNeighbours([...new Set(unknown.map(({ b }) => b.ip))]);
      neigh = readNeighbours(this.opts.iface);
    }
    const macs: Record<string, string> = {};
    const unresolved = new Set<string>();
    for (const { b, key } of all) {
      const mac = b.mac ?? neigh.get(b.ip) ?? this.knownMacs[key];
      if (!mac) unresolved.add(key);
      macs[key] = mac ?? UNRESOLVED_MAC;
    }
    const filled: ServicesConfig = {
      ...config,
      services: config.services.map((s) => ({ ...s, backends: s.backends.map((b) => ({ ...b, mac: macs[backendKey(s, b)]! })) })),
    };
    return { filled, macs, unresolved };
  }

  /** Compares the neighbour table with the MACs applied; a change is logged and re-applied. */
  private async checkMacs(): Promise<void> {
    if (this.stopping || !this.applied) return;
    const neigh = readNeighbours(this.opts.iface);
    const missing = new Set<string>();
    let changed = false;
    for (const w of this.watches.values()) {
      if (w.backend.mac) continue;
      const now = neigh.get(w.backend.ip);
      const before = this.applied.macs[w.key];
      if (!now) {
        missing.add(w.backend.ip);
        continue;
      }
      if (now === before) continue;
      changed = true;
      if (before === undefined || this.applied.unresolved.has(w.key)) {
        this.log.info('mac-resolved', { service: w.service.name, backend: w.backend.ip, to: now });
      } else {
        this.stats.macChanges++;
        this.log.warn('mac-change', { service: w.service.name, backend: w.backend.ip, from: before, to: now, reason: `the neighbour table of ${this.opts.iface} has a new MAC` });
      }
    }
    if (changed) this.scheduleApply('mac');
    // entries the kernel dropped: have it resolve them again for the next round
    if (missing.size > 0) await probeNeighbours([...missing], 0);
  }

  // -------------------------------------------------------------------------------------------
  // reloading

  private watchFile(): void {
    const dir = path.dirname(this.source);
    try {
      // the directory, not the file: editors and config management replace files by rename
      this.watcher = fs.watch(dir, { persistent: true }, () => {
        clearTimeout(this.reloadTimer);
        this.reloadTimer = setTimeout(() => this.requestReload('file'), this.opts.reloadDebounceMs ?? 300);
      });
      this.watcher.on('error', (err) => this.log.warn('watch-failed', { file: this.source, error: err.message, note: 'reload with SIGHUP' }));
    } catch (err) {
      this.log.warn('watch-failed', { file: this.source, error: (err as Error).message, note: 'reload with SIGHUP' });
    }
  }

  private requestReload(trigger: 'SIGHUP' | 'file'): void {
    if (this.stopping) return;
    void this.enqueue(() => this.reload(trigger));
  }

  private async reload(trigger: 'SIGHUP' | 'file'): Promise<void> {
    if (this.stopping || !this.config) return;
    let text: string;
    try {
      text = fs.readFileSync(this.source, 'utf8');
    } catch (err) {
      if (trigger === 'file' && (err as NodeJS.ErrnoException).code === 'ENOENT') return; // mid-rename, or removed: nothing to load
      this.reloadFailed(trigger, readError(this.opts.file, err));
      return;
    }
    if (trigger === 'file' && text === this.text) {
      // back to what runs (after an invalid edit, say): nothing to apply, nothing wrong any more
      this.rejectedText = undefined;
      this.stats.lastReloadSuccessful = true;
      return;
    }
    if (trigger === 'file' && text === this.rejectedText) return; // rejected already
    let config: ServicesConfig;
    let raw: unknown;
    try {
      config = parseServicesText(text, this.opts.file);
      raw = JSON.parse(stripBom(text)) as unknown;
    } catch (err) {
      this.rejectedText = text;
      this.reloadFailed(trigger, err, 'reload-invalid');
      return;
    }
    const next = this.planWatches(config, () => undefined);
    try {
      await this.applyConfig(config, raw, next, 'reload');
    } catch (err) {
      this.rejectedText = text;
      this.reloadFailed(trigger, err);
      return;
    }
    const before = new Set(this.watches.keys());
    this.config = config;
    this.raw = raw;
    this.text = text;
    this.rejectedText = undefined;
    this.swapWatches(next);
    this.stats.configSha256 = sha256(text);
    this.stats.reloads.success++;
    this.stats.lastReloadSuccessful = true;
    const added = [...next.keys()].filter((k) => !before.has(k));
    const removed = [...before].filter((k) => !next.has(k));
    this.log.info('reloaded', {
      file: this.source,
      trigger,
      services: config.services.length,
      backends: next.size,
      added: added.length > 0 ? added : undefined,
      removed: removed.length > 0 ? removed : undefined,
    });
  }

  /** `reload-invalid`: the file does not validate; `reload-failed`: it could not be applied. */
  private reloadFailed(trigger: string, err: unknown, event: 'reload-invalid' | 'reload-failed' = 'reload-failed'): void {
    this.stats.reloads.failure++;
    this.stats.lastReloadSuccessful = false;
    const fields = typeof err === 'string' ? { error: err } : errorFields(err);
    this.log.error(event, { file: this.source, trigger, ...fields, note: 'the running services stay as they are' });
  }

  // -------------------------------------------------------------------------------------------
  // metrics

  renderMetrics(): string {
    let dp: DataPlaneSnapshot | undefined;
    try {
      dp = readDataPlane(this.opts.iface);
      this.scrapeErrors.clear();
    } catch (err) {
      const msg = (err as Error).message;
      if (!this.scrapeErrors.has(msg)) this.log.warn('scrape-error', { error: msg });
      this.scrapeErrors.add(msg);
    }
    return renderExposition(buildFamilies(dp, [...this.healthStats.values()], this.stats));
  }

  private unhealthy(): string | undefined {
    if (this.stopping) return 'stopping';
    const state = readState(this.opts.iface);
    if (!state) return `nothing is loaded on ${this.opts.iface}`;
    if (!isAttached(state)) return `program ${state.progId} is not attached to ${this.opts.iface}`;
    return undefined;
  }

  /** For tests: the verdicts now, by backendKey. */
  verdicts(): Record<string, Verdict> {
    return Object.fromEntries([...this.watches].map(([k, w]) => [k, w.checker?.verdict ?? 'up']));
  }
}
