/**
 * Part 2 of `make bench`: the control plane, through the CLI as an operator runs it.
 *
 * A throw-away network namespace with a veth pair; the program is attached in native mode to
 * `xva`; pins and state live under roots of their own, so nothing of another xdpvs is touched.
 * For 1, 100, 1,000 and 10,000 services (10 backends each; 6 each for 10,000, so 60,000 in all,
 * near the 65,536 limit) it times:
 *  - `xdpvs validate`, `xdpvs compile` and `xdpvs load` (a first load: validate, generate,
 *    clang, verifier, fill the maps, attach), each a whole CLI process as an operator runs it;
 *  - a change of one backend's weight to 0 in the file and `xdpvs load` again, until the data
 *    plane uses it: the attached program is polled with BPF_PROG_TEST_RUN with a flow that the
 *    drained backend had, until another backend gets it; `xdpvs backend set` the same way;
 *  - `xdpvs stats --json`;
 *  - the memory the program's maps take (memlock of every map, inner tables included).
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { syntheticEndpoint, syntheticServicesTotal } from './synthetic.js';
import { median } from './stats.js';
import { checkStop, Interrupted, stopRequested } from './stop.js';
import { flowFrame, TCP_ACK } from '../net/frames.js';
import { BpfMap, BpfProgram, MapType, ifindexOf, withNetns, xdpQuery } from '../libbpf.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = path.join(REPO_ROOT, 'bin', 'xdpvs');
const IFACE = 'xva';
const POLL_TIMEOUT_MS = 120_000;

export interface ControlSize {
  services: number;
  backends: number;
}

export const DEFAULT_CONTROL_SIZES: ControlSize[] = [
  { services: 1, backends: 10 },
  { services: 100, backends: 1000 },
  { services: 1000, backends: 10000 },
  { services: 10000, backends: 60000 },
];

export interface MapMemory {
  name: string;
  type: string;
  bytes: number;
  /** inner maps counted in `bytes` (scheduling tables) */
  inner: number;
}

export interface ControlSizeResult {
  size: ControlSize;
  validateMs: number;
  compileMs: number;
  loadMs: number;
  /** `xdpvs load` again after a weight changed in the file: the command, and until the data plane used it */
  reload?: { commandMs: number; dataPlaneMs: number };
  /** `xdpvs backend set --weight 0`, when the CLI has it */
  backendSet?: { commandMs: number; dataPlaneMs: number };
  statsJsonMs: number;
  memory: { total: number; maps: MapMemory[] };
  error?: string;
}

export interface ControlResult {
  /** `node bin/xdpvs --version`: what every command pays before it starts */
  nodeStartMs: number;
  backendSetAvailable: boolean;
  sizes: ControlSizeResult[];
}

interface Ran {
  status: number;
  stdout: string;
  stderr: string;
  ms: number;
}

class Netns {
  readonly pinRoot: string;
  readonly runRoot: string;
  readonly env: NodeJS.ProcessEnv;

  constructor(readonly name: string) {
    this.pinRoot = `/sys/fs/bpf/${name}`;
    this.runRoot = `/run/${name}`;
    this.env = { ...process.env, XDPVS_PIN_ROOT: this.pinRoot, XDPVS_RUN_ROOT: this.runRoot };
    delete this.env.NODE_OPTIONS;
    this.destroy();
    for (const argv of [
      ['ip', 'netns', 'add', name],
      ['ip', '-n', name, 'link', 'add', 'name', 'xva', 'type', 'veth', 'peer', 'name', 'xvb'],
      ['ip', '-n', name, 'link', 'set', 'dev', 'xva', 'up'],
      ['ip', '-n', name, 'link', 'set', 'dev', 'xvb', 'up'],
      ['ip', '-n', name, 'addr', 'add', '10.77.0.1/24', 'dev', 'xva'],
    ]) {
      const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr}`);
    }
  }

  argv(args: string[]): string[] {
    return ['nsenter', `--net=/run/netns/${this.name}`, 'env', '-u', 'NODE_OPTIONS', process.execPath, BIN, ...args];
  }

  /** Runs the CLI in the namespace and waits; the time is the whole process's. */
  xdpvs(args: string[]): Ran {
    const argv = this.argv(args);
    const t0 = performance.now();
    const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env: this.env, maxBuffer: 256 << 20 });
    return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '', ms: performance.now() - t0 };
  }

  must(args: string[]): Ran {
    const r = this.xdpvs(args);
    if (r.status !== 0) throw new Error(`xdpvs ${args.join(' ')} failed (exit ${r.status}): ${r.stderr.trim().split('\n').slice(0, 6).join(' | ')}`);
    return r;
  }

  /** Starts the CLI without waiting. */
  start(args: string[]): { done: Promise<Ran>; t0: number } {
    const argv = this.argv(args);
    const t0 = performance.now();
    const child = spawn(argv[0]!, argv.slice(1), { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const done = new Promise<Ran>((resolve) => {
      child.on('error', (err) => resolve({ status: -1, stdout, stderr: err.message, ms: performance.now() - t0 }));
      child.on('close', (code) => resolve({ status: code ?? -1, stdout, stderr, ms: performance.now() - t0 }));
    });
    return { done, t0 };
  }

  /** The program attached to xva now, run once on `frame`: the destination MAC it sends to. */
  probe(frame: Buffer): string | undefined {
    const id = withNetns(this.name, () => xdpQuery(ifindexOf(IFACE)).progId);
    if (!id) return undefined;
    const prog = BpfProgram.fromId(id);
    try {
      const r = prog.testRun(frame);
      return r.retval === 3 ? r.data.subarray(0, 6).toString('hex') : undefined;
    } finally {
      prog.close();
    }
  }

  attachedProgId(): number {
    return withNetns(this.name, () => xdpQuery(ifindexOf(IFACE)).progId);
  }

  destroy(): void {
    spawnSync('ip', ['netns', 'del', this.name]);
    for (const d of [this.pinRoot, this.runRoot]) fs.rmSync(d, { recursive: true, force: true });
  }
}

function memlockOf(m: BpfMap): number {
  const text = fs.readFileSync(`/proc/self/fdinfo/${m.fd}`, 'utf8');
  const found = /^memlock:\s+(\d+)/m.exec(text);
  return found ? Number(found[1]) : 0;
}

const TYPE_NAMES = new Map<number, string>(Object.entries(MapType).map(([k, v]) => [v, k]));

/** The memlock of every map the program uses, and of the inner maps its maps of maps hold. */
export function programMemory(progId: number): { total: number; maps: MapMemory[] } {
  const r = spawnSync('bpftool', ['prog', 'show', 'id', String(progId), '--json'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bpftool prog show id ${progId}: ${r.stderr.trim()}`);
  const ids = ((JSON.parse(r.stdout) as { map_ids?: number[] }).map_ids ?? []) as number[];
  const maps: MapMemory[] = [];
  for (const id of ids) {
    const m = BpfMap.fromId(id);
    try {
      const info = m.info();
      let bytes = memlockOf(m);
      let inner = 0;
      if (info.type === MapType.array_of_maps || info.type === MapType.hash_of_maps) {
        for (const [, v] of m.entries()) {
          const im = BpfMap.fromId(v.readUInt32LE(0));
          try {
            bytes += memlockOf(im);
            inner++;
          } finally {
            im.close();
          }
        }
      }
      maps.push({ name: info.name, type: TYPE_NAMES.get(info.type) ?? `type ${info.type}`, bytes, inner });
    } finally {
      m.close();
    }
  }
  maps.sort((a, b) => b.bytes - a.bytes);
  return { total: maps.reduce((n, m) => n + m.bytes, 0), maps };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts `args` and polls the attached program with `frame` until it no longer sends it to
 * `fromMac`. Returns the command's time and the time until the data plane changed, both from
 * the start of the command.
 */
async function timeUntilChanged(ns: Netns, args: string[], frame: Buffer, fromMac: string): Promise<{ commandMs: number; dataPlaneMs: number }> {
  const { done, t0 } = ns.start(args);
  let finished: Ran | undefined;
  void done.then((r) => (finished = r));
  let changedAt: number | undefined;
  while (changedAt === undefined) {
    let mac: string | undefined;
    try {
      mac = ns.probe(frame);
    } catch {
      mac = undefined; // between programs: try again
    }
    if (mac !== undefined && mac !== fromMac) changedAt = performance.now();
    else if (finished && finished.status !== 0) throw new Error(`xdpvs ${args.join(' ')} failed: ${finished.stderr.trim().split('\n')[0]}`);
    else if (stopRequested()) {
      await done; // let it finish before the namespace and its pins go
      checkStop();
    } else if (performance.now() - t0 > POLL_TIMEOUT_MS) throw new Error(`xdpvs ${args.join(' ')}: the data plane did not change within ${POLL_TIMEOUT_MS / 1000} s`);
    else await sleep(1);
  }
  const r = await done;
  if (r.status !== 0) throw new Error(`xdpvs ${args.join(' ')} failed: ${r.stderr.trim().split('\n')[0]}`);
  return { commandMs: r.ms, dataPlaneMs: changedAt - t0 };
}

interface FileService {
  name: string;
  backends: Array<{ ip: string; weight: number; mac: string }>;
}

async function measureSize(ns: Netns, size: ControlSize, dir: string, backendSet: boolean, log: (l: string) => void): Promise<ControlSizeResult> {
  const file = path.join(dir, `services-${size.services}.json`);
  const doc = syntheticServicesTotal(size.services, size.backends) as { services: FileService[] };
  fs.writeFileSync(file, JSON.stringify(doc, null, 1));
  const validateMs = ns.must(['validate', file]).ms;
  const compileMs = ns.must(['compile', file, '-o', path.join(dir, `out-${size.services}`)]).ms;
  const loadMs = ns.must(['load', file, '-i', IFACE, '--mode', 'native']).ms;
  log(`  validate ${Math.round(validateMs)} ms, compile ${Math.round(compileMs)} ms, load ${Math.round(loadMs)} ms`);
  const result: ControlSizeResult = { size, validateMs, compileMs, loadMs, statsJsonMs: NaN, memory: { total: 0, maps: [] } };
  try {
    result.memory = programMemory(ns.attachedProgId());

    // a flow of svc-0 (TCP over IPv4), and the backend it goes to now
    const ep = syntheticEndpoint(0);
    const frame = flowFrame({ src: '198.51.100.7', dst: ep.vip, proto: 'tcp', sport: 40000, dport: ep.port, flags: TCP_ACK });
    const macToIp = (mac: string) => doc.services[0]!.backends.find((b) => b.mac.replace(/:/g, '') === mac)?.ip;
    const before = ns.probe(frame);
    const drained = before && macToIp(before);
    if (!before || !drained) throw new Error(`the probe flow is not forwarded to a backend of svc-0 (got ${before ?? 'no XDP_TX'})`);
    doc.services[0]!.backends.find((b) => b.ip === drained)!.weight = 0;
    fs.writeFileSync(file, JSON.stringify(doc, null, 1));
    result.reload = await timeUntilChanged(ns, ['load', file, '-i', IFACE, '--mode', 'native'], frame, before);
    log(`  weight 0 in the file, load again: command ${Math.round(result.reload.commandMs)} ms, data plane changed after ${Math.round(result.reload.dataPlaneMs)} ms`);

    if (backendSet) {
      // another flow, on a backend that still has weight
      let frame2: Buffer | undefined;
      let mac2: string | undefined;
      for (let sport = 41000; sport < 42000 && !frame2; sport++) {
        const f = flowFrame({ src: '198.51.100.8', dst: ep.vip, proto: 'tcp', sport, dport: ep.port, flags: TCP_ACK });
        const m = ns.probe(f);
        if (m && m !== before) [frame2, mac2] = [f, m];
      }
      if (frame2 && mac2) {
        result.backendSet = await timeUntilChanged(ns, ['backend', 'set', 'svc-0', macToIp(mac2)!, '-i', IFACE, '--weight', '0', '--no-save'], frame2, mac2);
        log(`  backend set --weight 0: command ${Math.round(result.backendSet.commandMs)} ms, data plane changed after ${Math.round(result.backendSet.dataPlaneMs)} ms`);
      }
    }

    const statsRuns = [0, 1, 2].map(() => ns.must(['stats', '-i', IFACE, '--json']));
    JSON.parse(statsRuns[0]!.stdout); // it is JSON
    result.statsJsonMs = median(statsRuns.map((r) => r.ms));
    log(`  stats --json ${Math.round(result.statsJsonMs)} ms; maps ${(result.memory.total / (1 << 20)).toFixed(1)} MiB`);
  } finally {
    const u = ns.xdpvs(['unload', '-i', IFACE]);
    if (u.status !== 0) log(`  unload failed: ${u.stderr.trim()}`);
  }
  return result;
}

export async function runControl(o: { sizes?: ControlSize[]; log?: (l: string) => void } = {}): Promise<ControlResult> {
  const log = o.log ?? (() => {});
  const name = `xdpvs-bench-${process.pid}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xdpvs-bench-cp-'));
  const ns = new Netns(name);
  const onSignal = () => ns.destroy();
  process.once('exit', onSignal);
  try {
    const starts = [0, 1, 2].map(() => ns.must(['--version']).ms);
    const backendSetAvailable = ns.xdpvs(['backend', 'set', '--help']).status === 0;
    const sizes: ControlSizeResult[] = [];
    for (const size of o.sizes ?? DEFAULT_CONTROL_SIZES) {
      checkStop();
      log(`control plane: ${size.services} service(s), ${size.backends} backends`);
      try {
        sizes.push(await measureSize(ns, size, dir, backendSetAvailable, log));
      } catch (err) {
        if (err instanceof Interrupted) throw err;
        log(`  failed: ${(err as Error).message}`);
        sizes.push({ size, validateMs: NaN, compileMs: NaN, loadMs: NaN, statsJsonMs: NaN, memory: { total: 0, maps: [] }, error: (err as Error).message });
      }
    }
    return { nodeStartMs: median(starts), backendSetAvailable, sizes };
  } finally {
    process.off('exit', onSignal);
    ns.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
