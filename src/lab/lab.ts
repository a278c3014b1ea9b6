/**
 * Brings the lab described by topology.ts up and down, with `ip`, `ethtool` and `clang`.
 *
 * Everything but the state dir (/run/xdpvs-lab/<prefix>/: lab.json, pid files, logs) lives
 * inside the lab's namespaces, so deleting the namespaces (after killing what runs in them)
 * removes the lab. `labUp` converges: run twice, it leaves one lab; with other options than the
 * running lab's, it takes that one down first. If a step fails, it removes what that run made
 * and reports the step, the command and its stderr.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { UserError } from '../errors.js';
import {
  allHosts,
  allNamespaces,
  buildTopology,
  checkPrefix,
  isLabNamespace,
  LAB_STATE_ROOT,
  namespaceForRole,
  optionsOf,
  stateDirFor,
  type LabHost,
  type LabOptions,
  type LabTopology,
} from './topology.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const XDP_PASS_SOURCE = path.join(REPO_ROOT, 'bpf', 'xdp_pass.c');
const XDP_PASS_OBJECT = path.join(REPO_ROOT, 'build', 'lab', 'xdp_pass.o');
const STATE_FILE = 'lab.json';
/** Empty directory `lab exec` uses to carry /sys/fs/bpf over its fresh /sys (see execArgv). */
const MOUNT_DIR = 'mnt';
const READY_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// running commands

interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

function run(argv: string[]): RunResult {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  if (r.error) return { status: 127, stdout: '', stderr: r.error.message };
  return { status: r.status ?? 128, stdout: r.stdout, stderr: r.stderr };
}

function shellQuote(argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** A command that failed: the step it belonged to, the command line and its stderr. */
class StepError extends Error {
  constructor(readonly step: string, readonly details: string[]) {
    super(step);
  }
}

function commandDetails(argv: string[], r: RunResult): string[] {
  const out = (r.stderr.trim() || r.stdout.trim()).split('\n').filter(Boolean).slice(-10);
  const shown = argv.map((a) => (a.includes('\n') ? '<script>' : a)); // inline node -e / sh -c programs
  return [`command: ${shellQuote(shown)} (exit ${r.status})`, ...out.map((l) => `| ${l}`)];
}

/** Runs `argv` as part of `step`; throws StepError if it fails. Returns stdout. */
function must(step: string, argv: string[]): string {
  const r = run(argv);
  if (r.status !== 0) throw new StepError(step, commandDetails(argv, r));
  return r.stdout;
}

function findTool(tool: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin')
    .split(':')
    .some((dir) => dir !== '' && fs.existsSync(path.join(dir, tool)));
}

function requireRootAndTools(tools: Array<[string, string]>): void {
  if (process.getuid?.() !== 0) {
    throw new UserError('the lab needs root (it creates network namespaces and attaches XDP)');
  }
  const missing = tools.filter(([tool]) => !findTool(tool));
  if (missing.length > 0) {
    throw new UserError(
      `the lab needs ${missing.map(([t]) => t).join(', ')}, not found in PATH`,
      missing.map(([t, pkg]) => `${t}: apt-get install ${pkg}`),
    );
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// namespaces and processes

function listNamespaces(): string[] {
  const r = run(['ip', '-j', 'netns', 'list']);
  if (r.status !== 0 || r.stdout.trim() === '') return [];
  return (JSON.parse(r.stdout) as Array<{ name: string }>).map((n) => n.name);
}

function namespaceExists(ns: string): boolean {
  return fs.existsSync(`/run/netns/${ns}`);
}

function namespacePids(ns: string): number[] {
  const r = run(['ip', 'netns', 'pids', ns]);
  if (r.status !== 0) return [];
  return r.stdout.split(/\s+/).filter(Boolean).map(Number).filter((p) => p !== process.pid);
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // a zombie (exited, not yet reaped by its parent) is as good as gone
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** SIGTERM, up to 3 s of grace, then SIGKILL. Returns the pids that were running. */
async function killAll(pids: number[]): Promise<number[]> {
  const running = [...new Set(pids)].filter(isRunning);
  const signal = (sig: NodeJS.Signals) => {
    for (const pid of running) {
      try {
        process.kill(pid, sig);
      } catch {
        // already gone
      }
    }
  };
  signal('SIGTERM');
  for (let waited = 0; waited < 3000 && running.some(isRunning); waited += 50) await sleep(50);
  if (running.some(isRunning)) {
    signal('SIGKILL');
    for (let waited = 0; waited < 2000 && running.some(isRunning); waited += 50) await sleep(50);
  }
  return running;
}

/** Kills everything in `ns`, then deletes it. Returns the killed pids; throws StepError on failure. */
async function removeNamespace(ns: string): Promise<number[]> {
  const killed = await killAll(namespacePids(ns));
  const argv = ['ip', 'netns', 'del', ns];
  const r = run(argv);
  if (r.status !== 0 && namespaceExists(ns)) throw new StepError(`delete namespace ${ns}`, commandDetails(argv, r));
  return killed;
}

function netnsInode(target: string): number | null {
  try {
    return fs.statSync(target).ino;
  } catch {
    return null;
  }
}

/** Is `pid` a realserver-app started by the lab `prefix` (for `role`, if given)? */
function isServerProcess(pid: number, prefix: string, role?: string): boolean {
  if (!isRunning(pid)) return false;
  try {
    const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const at = (flag: string) => args[args.indexOf(flag) + 1];
    return (
      args.some((a) => a.endsWith('realserver-app.js')) &&
      at('--lab') === prefix &&
      (role === undefined || at('--name') === role)
    );
  } catch {
    return false;
  }
}

/** The realserver-app of this lab and real server, running in that server's namespace? */
function isOurServer(pid: number, topology: LabTopology, rs: LabHost): boolean {
  if (!isServerProcess(pid, topology.prefix, rs.role)) return false;
  const mine = netnsInode(`/proc/${pid}/ns/net`);
  return mine !== null && mine === netnsInode(`/run/netns/${rs.namespace}`);
}

function readPid(file: string): number | null {
  try {
    const pid = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

const pidFile = (t: LabTopology, rs: LabHost) => path.join(t.stateDir, `${rs.role}.pid`);
const logFile = (t: LabTopology, rs: LabHost) => path.join(t.stateDir, `${rs.role}.log`);

// ---------------------------------------------------------------------------------------------
// state

function readState(prefix: string): LabOptions | null {
  const file = path.join(stateDirFor(prefix), STATE_FILE);
  try {
    const s = JSON.parse(fs.readFileSync(file, 'utf8')) as LabOptions;
    return { prefix: s.prefix, realServers: s.realServers, ipv6: s.ipv6 };
  } catch {
    return null;
  }
}

function writeState(t: LabTopology): void {
  const state: LabOptions & { createdAt: string } = {
    ...optionsOf(t),
    createdAt: new Date().toISOString(),
  };
  const file = path.join(t.stateDir, STATE_FILE);
  fs.writeFileSync(`${file}.tmp`, `${JSON.stringify(state, null, 2)}\n`);
  fs.renameSync(`${file}.tmp`, file);
}

/** The topology of the lab that is up under `prefix`; UserError if there is none. */
export function readTopology(prefix: string): LabTopology {
  checkPrefix(prefix);
  const state = readState(prefix);
  if (!state) throw new UserError(`no lab named "${prefix}" is up`, [`start one with: xdpvs lab up --name ${prefix}`]);
  const topology = buildTopology(state);
  const missing = allNamespaces(topology).filter((ns) => !namespaceExists(ns));
  if (missing.length > 0) {
    throw new UserError(`the lab "${prefix}" is incomplete: namespace ${missing.join(', ')} missing`, [
      `rebuild it with: xdpvs lab down --name ${prefix} && xdpvs lab up --name ${prefix}`,
    ]);
  }
  return topology;
}

// ---------------------------------------------------------------------------------------------
// artefacts: the XDP_PASS object and the real server program

/** Compiles bpf/xdp_pass.c into build/lab/ unless an up-to-date object is there. */
export function buildXdpPass(): string {
  const srcTime = fs.statSync(XDP_PASS_SOURCE).mtimeMs;
  if (fs.existsSync(XDP_PASS_OBJECT) && fs.statSync(XDP_PASS_OBJECT).mtimeMs >= srcTime) return XDP_PASS_OBJECT;
  fs.mkdirSync(path.dirname(XDP_PASS_OBJECT), { recursive: true });
  const tmp = `${XDP_PASS_OBJECT}.${process.pid}.tmp`;
  const argv = ['clang', '-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', XDP_PASS_SOURCE, '-o', tmp];
  try {
    must('compile bpf/xdp_pass.c', argv);
    fs.renameSync(tmp, XDP_PASS_OBJECT);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  return XDP_PASS_OBJECT;
}

/** dist/lab/realserver-app.js (next to this module when running from dist). */
function realserverAppPath(): string {
  const candidates = [
    fileURLToPath(new URL('./realserver-app.js', import.meta.url)),
    path.join(REPO_ROOT, 'dist', 'lab', 'realserver-app.js'),
  ];
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) throw new UserError('dist/lab/realserver-app.js is missing', ['build first: npx tsc -p .']);
  return found;
}

// ---------------------------------------------------------------------------------------------
// up

export interface UpResult {
  topology: LabTopology;
  /** Namespaces this run created (empty when the lab was already up as asked). */
  created: string[];
  /** Real servers whose realserver-app this run started. */
  startedServers: string[];
  /** Set when a lab with other options was up under the same prefix and was taken down first. */
  replaced: LabOptions | null;
}

interface UpProgress {
  created: string[];
  started: number[];
  madeStateDir: boolean;
}

/** Sysctls in `ns`: `ip netns exec ns sysctl -w k=v...`. */
function sysctl(step: string, ns: string, settings: Record<string, string | number>): void {
  must(step, ['ip', 'netns', 'exec', ns, 'sysctl', '-q', '-w', ...Object.entries(settings).map(([k, v]) => `${k}=${v}`)]);
}

function linkExists(ns: string, dev: string): boolean {
  return run(['ip', '-n', ns, 'link', 'show', 'dev', dev]).status === 0;
}

function linkInfo(ns: string, dev: string): { address?: string; xdp?: { mode?: number } } {
  const out = must(`read ${dev} in ${ns}`, ['ip', '-j', '-d', '-n', ns, 'link', 'show', 'dev', dev]);
  return (JSON.parse(out) as Array<{ address?: string; xdp?: { mode?: number } }>)[0] ?? {};
}

function makeNamespaces(t: LabTopology, progress: UpProgress): void {
  for (const ns of allNamespaces(t)) {
    if (!namespaceExists(ns)) {
      must(`create namespace ${ns}`, ['ip', 'netns', 'add', ns]);
      progress.created.push(ns);
    }
    must(`bring up lo in ${ns}`, ['ip', '-n', ns, 'link', 'set', 'dev', 'lo', 'up']);
  }
  // The switch is a plain L2 bridge: no addresses of its own, no IPv6 chatter.
  sysctl(`configure ${t.switch.namespace}`, t.switch.namespace, {
    'net.ipv6.conf.all.disable_ipv6': 1,
    'net.ipv6.conf.default.disable_ipv6': 1,
  });
  // Hosts: addresses usable at once (no duplicate address detection), set before eth0 exists.
  for (const h of allHosts(t)) {
    sysctl(`configure ${h.namespace}`, h.namespace, {
      'net.ipv6.conf.all.accept_dad': 0,
      'net.ipv6.conf.default.accept_dad': 0,
    });
  }
}

function makeSwitch(t: LabTopology): void {
  const sw = t.switch.namespace;
  if (!linkExists(sw, t.switch.bridge)) {
    must(`create bridge ${t.switch.bridge} in ${sw}`, [
      'ip', '-n', sw, 'link', 'add', t.switch.bridge, 'type', 'bridge',
      'stp_state', '0', 'forward_delay', '0', 'mcast_snooping', '0',
    ]);
  }
  must(`bring up ${t.switch.bridge}`, ['ip', '-n', sw, 'link', 'set', 'dev', t.switch.bridge, 'up']);
}

function cableHost(t: LabTopology, h: LabHost): void {
  const sw = t.switch.namespace;
  const step = `connect ${h.namespace} to the switch`;
  if (!linkExists(sw, h.switchPort)) {
    must(step, [
      'ip', '-n', sw, 'link', 'add', h.switchPort, 'type', 'veth',
      'peer', 'name', h.interface, 'address', h.mac, 'netns', h.namespace,
    ]);
  }
  if (linkInfo(h.namespace, h.interface).address !== h.mac) {
    must(step, ['ip', '-n', h.namespace, 'link', 'set', 'dev', h.interface, 'down']);
    must(step, ['ip', '-n', h.namespace, 'link', 'set', 'dev', h.interface, 'address', h.mac]);
  }
  must(step, ['ip', '-n', sw, 'link', 'set', 'dev', h.switchPort, 'master', t.switch.bridge, 'up']);
  must(step, ['ip', '-n', h.namespace, 'link', 'set', 'dev', h.interface, 'up']);
  const addrStep = `address ${h.namespace}`;
  must(addrStep, ['ip', '-n', h.namespace, 'addr', 'replace', `${h.ipv4}/24`, 'dev', h.interface]);
  if (h.ipv6) must(addrStep, ['ip', '-n', h.namespace, '-6', 'addr', 'replace', `${h.ipv6}/64`, 'dev', h.interface, 'nodad']);
}

/**
 * VIPs with host prefixes on `dev` in `ns`. The IPv6 VIP is deprecated (preferred_lft 0): still
 * local, still answered by ND on the director, but never chosen as a source address. Without
 * that, RFC 6724's longest-match rule (capped at the prefix length: 128 beats 64) makes the
 * director's own connections to fd00:200::11 leave from fd00:200::100, and the real server,
 * which has that address on lo, answers itself.
 */
function addVips(t: LabTopology, ns: string, dev: string): void {
  const step = `put the VIPs on ${dev} in ${ns}`;
  for (const vip of t.vips.ipv4) must(step, ['ip', '-n', ns, 'addr', 'replace', `${vip}/32`, 'dev', dev]);
  for (const vip of t.vips.ipv6) {
    must(step, [
      'ip', '-n', ns, '-6', 'addr', 'replace', `${vip}/128`, 'dev', dev, 'nodad', 'valid_lft', 'forever', 'preferred_lft', '0',
    ]);
  }
}

function configureRealServer(t: LabTopology, rs: LabHost): void {
  addVips(t, rs.namespace, 'lo');
  // LVS-DR: answer ARP only for addresses on the asking interface (not the VIPs on lo) and
  // announce with the interface's own address. IPv6 needs nothing: Linux answers a neighbour
  // solicitation only for addresses on the interface it arrived on.
  sysctl(`set arp_ignore/arp_announce in ${rs.namespace}`, rs.namespace, {
    'net.ipv4.conf.all.arp_ignore': 1,
    'net.ipv4.conf.all.arp_announce': 2,
    [`net.ipv4.conf.${rs.interface}.arp_ignore`]: 1,
    [`net.ipv4.conf.${rs.interface}.arp_announce`]: 2,
  });
}

/**
 * XDP_TX on a veth hands the frame to the peer, which drops it (xdp_tx_errors) unless the peer
 * runs XDP too: give sw-director an XDP_PASS program, in native mode.
 */
function attachXdpPass(t: LabTopology, object: string): void {
  const sw = t.switch.namespace;
  const port = t.director.switchPort;
  if (linkInfo(sw, port).xdp?.mode === 1) return; // XDP_ATTACHED_DRV
  must(`attach bpf/xdp_pass.c to ${port} (native mode)`, [
    'ip', '-n', sw, 'link', 'set', 'dev', port, 'xdpdrv', 'obj', object, 'sec', 'xdp',
  ]);
}

async function startRealServer(t: LabTopology, rs: LabHost, app: string, progress: UpProgress): Promise<boolean> {
  const existing = readPid(pidFile(t, rs));
  if (existing !== null && isOurServer(existing, t, rs)) return false;
  const argv = [
    'ip', 'netns', 'exec', rs.namespace, process.execPath, app,
    '--name', rs.role, '--lab', t.prefix,
    '--tcp', t.ports.tcp.join(','), '--udp', t.ports.udp.join(','),
  ];
  const log = fs.openSync(logFile(t, rs), 'w');
  const env = { ...process.env };
  delete env.NODE_OPTIONS; // a long-lived server: no loaders or debug hooks of whoever ran `lab up`
  const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', log, log], env });
  fs.closeSync(log);
  child.on('error', () => {}); // reported below through the log and the exit
  child.unref();
  const pid = child.pid;
  const step = `start realserver-app in ${rs.namespace}`;
  if (pid === undefined) throw new StepError(step, [`command: ${shellQuote(argv)}`, '| could not spawn']);
  progress.started.push(pid); // `ip netns exec` execs node: same pid
  fs.writeFileSync(pidFile(t, rs), `${pid}\n`);
  for (let waited = 0; waited < READY_TIMEOUT_MS; waited += 50) {
    const text = fs.readFileSync(logFile(t, rs), 'utf8');
    if (/^ready /m.test(text)) return true;
    if (!isRunning(pid)) {
      throw new StepError(step, [`command: ${shellQuote(argv)}`, ...text.trim().split('\n').slice(-10).map((l) => `| ${l}`)]);
    }
    await sleep(50);
  }
  throw new StepError(step, [`command: ${shellQuote(argv)}`, `| not ready after ${READY_TIMEOUT_MS / 1000} s`]);
}

/** Run in the director: one TCP connection to each real server, so the kernel resolves its MAC. */
const PROBE_SCRIPT = `
const net = require('node:net');
const [port, ...hosts] = process.argv.slice(1);
let failed = 0;
Promise.all(hosts.map((host) => new Promise((done) => {
  const s = net.connect({ host, port: Number(port), timeout: 3000 });
  s.on('connect', () => { s.destroy(); done(); });
  s.on('timeout', () => { console.error(host + ': timed out'); failed++; s.destroy(); done(); });
  s.on('error', (e) => { console.error(host + ': ' + e.message); failed++; done(); });
}))).then(() => process.exit(failed ? 1 : 0));
`;

/** The director's neighbour table gets every real server (v4 and v6), learnt by the kernel. */
function fillDirectorNeighbours(t: LabTopology): void {
  const d = t.director;
  const targets = t.realServers.flatMap((rs) => (rs.ipv6 ? [rs.ipv4, rs.ipv6] : [rs.ipv4]));
  const step = 'reach every real server from the director';
  must(step, ['ip', 'netns', 'exec', d.namespace, process.execPath, '-e', PROBE_SCRIPT, String(t.ports.tcp[0]), ...targets]);
  const neighbours = JSON.parse(
    must(step, ['ip', '-j', '-n', d.namespace, 'neigh', 'show', 'dev', d.interface]) || '[]',
  ) as Array<{ dst: string; lladdr?: string }>;
  const macOf = new Map(t.realServers.flatMap((rs) => [rs.ipv4, rs.ipv6].map((ip) => [ip, rs.mac] as const)));
  const wrong = targets.filter((ip) => neighbours.find((n) => n.dst === ip)?.lladdr !== macOf.get(ip));
  if (wrong.length > 0) {
    throw new StepError(step, [`the director's neighbour table lacks the right MAC for ${wrong.join(', ')}`]);
  }
}

async function rollback(t: LabTopology, progress: UpProgress): Promise<string[]> {
  const notes: string[] = [];
  await killAll(progress.started);
  for (const ns of [...progress.created].reverse()) {
    try {
      await removeNamespace(ns);
    } catch (err) {
      notes.push(`could not delete namespace ${ns}: ${(err as StepError).details.join(' ')}`);
    }
  }
  if (progress.madeStateDir) fs.rmSync(t.stateDir, { recursive: true, force: true });
  if (progress.created.length > 0) notes.push(`removed what this run had made: ${progress.created.join(', ')}`);
  return notes;
}

/** Brings the lab up (or makes the running one whole again). */
export async function labUp(options: Partial<LabOptions> = {}): Promise<UpResult> {
  const t = buildTopology(options);
  requireRootAndTools([
    ['ip', 'iproute2'],
    ['ethtool', 'ethtool'],
    ['clang', 'clang'],
    ['sysctl', 'procps'],
  ]);
  const app = realserverAppPath();
  let object: string;
  try {
    object = buildXdpPass();
  } catch (err) {
    if (err instanceof StepError) throw new UserError(`lab up failed: ${err.step}`, err.details);
    throw err;
  }

  // A lab under this prefix with other options (or unknown ones) is replaced, not patched.
  const previous = readState(t.prefix);
  const leftovers = listNamespaces().filter((ns) => isLabNamespace(t.prefix, ns));
  const same = previous !== null && previous.realServers === t.realServers.length && previous.ipv6 === t.ipv6;
  let replaced: LabOptions | null = null;
  if (!same && (previous !== null || leftovers.length > 0)) {
    replaced = previous ?? { prefix: t.prefix, realServers: 0, ipv6: false };
    await labDown(t.prefix);
  }

  const progress: UpProgress = { created: [], started: [], madeStateDir: !fs.existsSync(t.stateDir) };
  const startedServers: string[] = [];
  try {
    fs.mkdirSync(path.join(t.stateDir, MOUNT_DIR), { recursive: true });
    makeNamespaces(t, progress);
    makeSwitch(t);
    for (const h of allHosts(t)) cableHost(t, h);
    // veth leaves TCP/UDP checksums for the "hardware"; after XDP_TX nothing completes them.
    must(`turn off TX checksum offload in ${t.client.namespace}`, [
      'ip', 'netns', 'exec', t.client.namespace, 'ethtool', '-K', t.client.interface, 'tx', 'off',
    ]);
    addVips(t, t.director.namespace, t.director.interface);
    for (const rs of t.realServers) configureRealServer(t, rs);
    attachXdpPass(t, object);
    for (const rs of t.realServers) {
      if (await startRealServer(t, rs, app, progress)) startedServers.push(rs.role);
    }
    fillDirectorNeighbours(t);
    writeState(t);
  } catch (err) {
    const notes = await rollback(t, progress);
    if (err instanceof StepError) throw new UserError(`lab up failed: ${err.step}`, [...err.details, ...notes]);
    throw err;
  }
  return { topology: t, created: progress.created, startedServers, replaced };
}

// ---------------------------------------------------------------------------------------------
// down

export interface DownResult {
  namespaces: string[];
  processes: number[];
}

/** Removes every namespace of the lab `prefix`, what runs in them, and its state dir. Idempotent. */
export async function labDown(prefix: string): Promise<DownResult> {
  checkPrefix(prefix);
  requireRootAndTools([['ip', 'iproute2']]);
  const stateDir = stateDirFor(prefix);
  const namespaces = listNamespaces().filter((ns) => isLabNamespace(prefix, ns));

  // Real servers whose namespace is already gone still have their pid files.
  const state = readState(prefix);
  const previous = state ? buildTopology(state) : null;
  const strays = (previous?.realServers ?? [])
    .map((rs) => readPid(pidFile(previous!, rs)))
    .filter((pid): pid is number => pid !== null && isServerProcess(pid, prefix));
  const processes = await killAll(strays);

  const failures: string[] = [];
  for (const ns of namespaces) {
    try {
      processes.push(...(await removeNamespace(ns)));
    } catch (err) {
      failures.push(...(err as StepError).details);
    }
  }
  fs.rmSync(stateDir, { recursive: true, force: true });
  try {
    fs.rmdirSync(LAB_STATE_ROOT); // only when no other lab is left
  } catch {
    // not empty, or already gone
  }
  if (failures.length > 0) throw new UserError(`lab down "${prefix}" left something behind`, failures);
  return { namespaces, processes: [...new Set(processes)] };
}

// ---------------------------------------------------------------------------------------------
// exec and info

/**
 * The command line that runs `command` in the namespace of `role` (client, director, switch, rsN).
 *
 * Not plain `ip netns exec`: that mounts a fresh /sys for the namespace, which hides the bpffs
 * at /sys/fs/bpf, so a loader run through it could not pin. This enters the network namespace
 * and a private mount namespace, mounts the namespace's sysfs, and moves the host's bpffs onto
 * its /sys/fs/bpf: /sys/class/net shows the namespace's interfaces, pins are the host's.
 */
export function execArgv(topology: LabTopology, role: string, command: string[]): string[] {
  const ns = namespaceForRole(topology, role);
  if (!ns) {
    const roles = ['client', 'director', 'switch', ...topology.realServers.map((r) => r.role)];
    throw new UserError(`the lab "${topology.prefix}" has no host "${role}"`, [`hosts: ${roles.join(', ')}`]);
  }
  if (command.length === 0) throw new UserError('no command given', ['usage: xdpvs lab exec ROLE -- COMMAND [ARGS...]']);
  const script = [
    'set -e',
    't="$1"; shift',
    'b=',
    'if mountpoint -q /sys/fs/bpf; then mount --bind /sys/fs/bpf "$t"; b=1; fi',
    'umount -l /sys 2>/dev/null || true',
    'mount -t sysfs sysfs /sys',
    'if [ -n "$b" ]; then mount --move "$t" /sys/fs/bpf; fi',
    'exec "$@"',
  ].join('\n');
  return [
    'nsenter', `--net=/run/netns/${ns}`, '--', 'unshare', '--mount', '--propagation', 'private', '--',
    'sh', '-c', script, 'sh', path.join(topology.stateDir, MOUNT_DIR), ...command,
  ];
}

export interface LabInfo extends LabTopology {
  realServers: Array<LabHost & { pid: number | null }>;
}

/** The running lab's topology, with the pid of each real server's realserver-app. */
export function labInfo(prefix: string): LabInfo {
  const t = readTopology(prefix);
  return {
    ...t,
    realServers: t.realServers.map((rs) => {
      const pid = readPid(pidFile(t, rs));
      return { ...rs, pid: pid !== null && isOurServer(pid, t, rs) ? pid : null };
    }),
  };
}
