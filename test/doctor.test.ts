/**
 * `xdpvs doctor`: the rules as pure functions, then the real thing in a lab of its own
 * (namespaces xdpvs-d<pid>-*, pins and state under /sys/fs/bpf/xdpvs-d<pid> and /run/xdpvs-d<pid>,
 * two real servers, IPv4 and IPv6):
 *   - before anything is loaded: a FAIL saying so, with the load command;
 *   - the healthy lab after `load`: exit 0, nothing but OK;
 *   - rs1 with arp_ignore=0/arp_announce=0: FAIL for each IPv4 VIP naming rs1's MAC, with the
 *     `xdpvs realserver ... --apply` to run there; running it there makes doctor clean again;
 *   - rs2 with a new MAC: FAIL naming the backend, the MAC it answers from and the stale one;
 *   - the program detached behind xdpvs's back: FAIL "no XDP program is attached";
 *   - the probe's macvlan, namespace and tcpdump are gone after every run.
 *
 * The lab has two real servers, so it loads examples/lab.json without the third one's
 * backends (10.200.0.13, fd00:200::13), written to a temporary file.
 *
 * Needs root, iproute2, ethtool, clang, tcpdump.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import {
  backendFindings,
  programFindings,
  vipAnswerFindings,
  vipFindings,
  xdpTxFindings,
  type BackendInfo,
  type Finding,
} from '../src/doctor/checks.js';
import { parseReply, type ProbeResult } from '../src/doctor/probe.js';
import type { LinkDetails } from '../src/doctor/system.js';
import type { LoadedState } from '../src/runtime/state.js';
import { buildTopology, type LabHost } from '../src/lab/topology.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = path.join(root, 'bin', 'xdpvs');

// ---------------------------------------------------------------------------------------------
// pure

const answers = (m: Record<string, string[]>): ProbeResult => ({
  ran: true,
  answers: new Map(Object.entries(m).map(([ip, macs]) => [ip, new Set(macs)])),
  probeMac: '02:99:99:99:99:99',
  listenedMs: 1000,
});
const RS1 = '02:00:0a:c8:00:0b';
const RS2 = '02:00:0a:c8:00:0c';
const DIRECTOR = '02:00:0a:c8:00:0a';
const backend = (ip: string, mac: string, extra: Partial<BackendInfo> = {}): BackendInfo => ({
  ip, family: ip.includes(':') ? 6 : 4, services: ['web'], vips: ['10.200.0.100'], mac, configuredMac: false, down: false, ...extra,
});
const levels = (fs: Finding[]) => fs.map((f) => f.level);

t.test('parseReply reads tcpdump -e lines of ARP replies and neighbour advertisements', async (t) => {
  t.same(
    parseReply('17:45:02.030408 02:00:0a:c8:00:0b > 2a:7a:94:dc:13:36, ethertype ARP (0x0806), length 42: Reply 10.200.0.100 is-at 02:00:0a:c8:00:0b, length 28'),
    { ip: '10.200.0.100', mac: RS1 },
  );
  t.same(
    parseReply('17:51:39.431410 02:00:0a:c8:00:0c > ce:8f:87:59:d8:55, ethertype IPv6 (0x86dd), length 86: fd00:200::100 > fe80::cc8f:87ff:fe59:d855: ICMP6, neighbor advertisement, tgt is fd00:200::100, length 32'),
    { ip: 'fd00:200::100', mac: RS2 },
  );
  t.equal(parseReply('17:45:02.030371 2a:7a:94:dc:13:36 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Request who-has 10.200.0.100 tell 0.0.0.0, length 28'), null);
  t.equal(parseReply('listening on xdpvsdoc0, link-type EN10MB (Ethernet), snapshot length 262144 bytes'), null);
});

t.test('who answers for a VIP', async (t) => {
  const vips = [{ address: '10.200.0.100', family: 4 as const, services: ['web'] }, { address: 'fd00:200::100', family: 6 as const, services: ['web6'] }];
  const backends = [backend('10.200.0.11', RS1), backend('10.200.0.12', RS2)];
  const clean = vipAnswerFindings({ iface: 'eth0', directorMac: DIRECTOR, vips, backends, probe: answers({ '10.200.0.100': [], 'fd00:200::100': [DIRECTOR], '10.200.0.11': [RS1] }) });
  t.same(levels(clean), ['OK', 'OK'], 'nobody, or only the director: OK');
  const bad = vipAnswerFindings({ iface: 'eth0', directorMac: DIRECTOR, vips, backends, probe: answers({ '10.200.0.100': [RS1, '02:00:00:00:00:77'], 'fd00:200::100': [], '10.200.0.11': [RS1] }) });
  t.same(levels(bad), ['FAIL', 'OK']);
  t.match(bad[0]!.message, `VIP 10.200.0.100: 2 other hosts answer ARP for it: ${RS1} (backend 10.200.0.11), 02:00:00:00:00:77`);
  t.ok(bad[0]!.details.includes(`fix: on the host with MAC ${RS1} (backend 10.200.0.11): xdpvs realserver --vip 10.200.0.100 --apply`), 'the fix names the host and its VIPs');
  t.same(vipAnswerFindings({ iface: 'eth0', directorMac: DIRECTOR, vips, backends, probe: answers({ '10.200.0.100': [] }) }), [], 'no conclusion when nothing at all answered');
  t.same(vipAnswerFindings({ iface: 'eth0', directorMac: DIRECTOR, vips, backends, probe: { ran: false, reason: 'no tcpdump' } }), []);
});

t.test('backends: answering, moved, duplicated, missing from the neighbour table', async (t) => {
  const probe = answers({ '10.200.0.11': [RS1], '10.200.0.12': ['02:00:00:00:00:99'], '10.200.0.13': [], '10.200.0.14': ['02:00:00:00:00:14', '02:00:00:00:00:41'] });
  const neighbours = new Map([
    ['10.200.0.11', { lladdr: RS1, state: ['REACHABLE'] }],
    ['10.200.0.12', { lladdr: RS2, state: ['STALE'] }],
    ['10.200.0.13', { state: ['FAILED'] }],
    ['10.200.0.14', { lladdr: '02:00:00:00:00:14', state: ['REACHABLE'] }],
  ]);
  const found = backendFindings({
    iface: 'eth0',
    source: '/etc/xdpvs/services.json',
    neighbours,
    probe,
    backends: [
      backend('10.200.0.11', RS1),
      backend('10.200.0.12', RS2),
      backend('10.200.0.13', '02:00:00:00:00:13', { down: true }),
      backend('10.200.0.14', '02:00:00:00:00:14'),
    ],
  });
  t.same(levels(found), ['OK', 'FAIL', 'WARN', 'FAIL']);
  t.match(found[1]!.message, 'backend 10.200.0.12 (web) now answers from 02:00:00:00:00:99, but the data plane sends its flows to 02:00:0a:c8:00:0c');
  t.ok(found[1]!.details.includes('fix: ip neigh del 10.200.0.12 dev eth0 && xdpvs load /etc/xdpvs/services.json -i eth0 (takes the MAC from the neighbour table again)'), 'the stale entry goes first');
  t.match(found[2]!.message, /does not answer ARP .* \(the health checker holds it down already\)/, 'a backend held down is a WARN');
  t.match(found[3]!.message, /is answered for by 2 MACs/);
  const unprobed = backendFindings({ iface: 'eth0', source: 'f', neighbours: new Map(), probe: { ran: false, reason: 'x' }, backends: [backend('10.200.0.11', RS1)] });
  t.same(levels(unprobed), ['FAIL'], 'without the probe, no neighbour entry is a FAIL');
});

t.test('program, VIPs, XDP_TX', async (t) => {
  const state = { progId: 7, ifindex: 2, source: '/s.json', loadedAt: 'T', mode: 'native' } as LoadedState;
  const xdp = { progId: 7, mode: 'native' as const, nativeProgId: 7, genericProgId: 0, offloadProgId: 0 };
  const base = { iface: 'eth0', state, ifindex: 2, xdp, pinnedProgId: 7, pinPath: '/p/prog', missingMaps: [], driver: 'veth', mtu: 1500 };
  t.same(levels(programFindings(base)), ['OK', 'OK']);
  const none = programFindings({ ...base, xdp: { ...xdp, progId: 0, mode: null, nativeProgId: 0 } });
  t.equal(none[0]!.level, 'FAIL');
  t.match(none[0]!.message, 'no XDP program is attached to eth0');
  const generic = programFindings({ ...base, mtu: 9000, xdp: { ...xdp, mode: 'generic', nativeProgId: 0, genericProgId: 7 } });
  t.equal(generic[0]!.level, 'WARN');
  t.match(generic[0]!.details.join('\n'), /MTU of eth0 \(9000\) is above one page/);
  t.match(programFindings({ ...base, state: undefined })[0]!.message, 'xdpvs has nothing loaded on eth0');
  t.match(programFindings({ ...base, pinnedProgId: 6 })[1]!.message, 'is program 6, but 7 is attached');

  const vip = (address: string, family: 4 | 6) => ({ address, family, services: ['web'] });
  const vf = vipFindings({
    iface: 'eth0',
    vips: [vip('10.0.0.100', 4), vip('10.0.0.101', 4), vip('fd00::100', 6)],
    addresses: [{ family: 4, address: '10.0.0.100', prefixlen: 32, flags: [] }, { family: 6, address: 'fd00::100', prefixlen: 128, preferred: 3600, flags: [] }],
    elsewhere: new Map([['10.0.0.101', ['lo']]]),
    arpIgnore: 0,
  });
  t.same(levels(vf), ['OK', 'FAIL', 'WARN']);
  t.match(vf[1]!.message, 'VIP 10.0.0.101 (web) is not on eth0 (it is on lo)');
  t.same(levels(vipFindings({ iface: 'eth0', vips: [vip('10.0.0.100', 4)], addresses: [{ family: 4, address: '10.0.0.100', prefixlen: 32, flags: [] }], elsewhere: new Map(), arpIgnore: 2 })), ['FAIL'], 'arp_ignore=2 never answers for a /32');

  const link: LinkDetails = { ifname: 'eth0', ifindex: 2, flags: ['UP', 'LOWER_UP'], mtu: 1500, link_index: 4, link_netnsid: 0, linkinfo: { info_kind: 'veth' } };
  const peer = (mode?: number): LinkDetails => ({ ifname: 'sw0', ifindex: 4, flags: [], mtu: 1500, netns: 'sw', ...(mode ? { xdp: { mode, prog: { id: 9 } } } : {}) });
  const tx = (o: Partial<Parameters<typeof xdpTxFindings>[0]>) =>
    xdpTxFindings({ iface: 'eth0', link, mode: 'native', driver: 'veth', statsBefore: new Map([['rx_queue_0_xdp_tx_errors', 0]]), statsAfter: new Map([['rx_queue_0_xdp_tx_errors', 0]]), features: null, peer: peer(1), ethtool: true, ...o });
  t.same(levels(tx({})), ['OK', 'OK', 'OK']);
  t.match(tx({ peer: peer() })[0]!, { level: 'FAIL', message: /its peer sw0 in namespace sw has no XDP program: veth drops every XDP_TX frame/ });
  t.equal(tx({ peer: peer(), mode: 'generic' })[0]!.level, 'OK', 'generic mode needs nothing on the peer');
  t.equal(tx({ statsAfter: new Map([['rx_queue_0_xdp_tx_errors', 3]]) })[1]!.level, 'FAIL', 'errors while doctor ran');
  t.equal(tx({ statsBefore: new Map([['rx_queue_0_xdp_tx_errors', 3]]), statsAfter: new Map([['rx_queue_0_xdp_tx_errors', 3]]) })[1]!.level, 'WARN', 'old errors');
  const lro = tx({ features: new Map([['large-receive-offload', { on: true, fixed: false }]]) });
  t.ok(lro.some((f) => f.level === 'WARN' && /large-receive-offload/.test(f.message)), 'LRO on: WARN');
});

// ---------------------------------------------------------------------------------------------
// in a lab

const missing = ['ip', 'ethtool', 'clang', 'tcpdump', 'nsenter', 'unshare'].filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0);
const skip = process.getuid?.() !== 0 ? 'needs root' : missing.length > 0 ? `needs ${missing.join(', ')}` : false;

const prefix = `xdpvs-d${process.pid}`;
const pinRoot = `/sys/fs/bpf/${prefix}`;
const runRoot = `/run/${prefix}`;
const rsRecord = `/run/${prefix}-realserver`;
const topo = buildTopology({ prefix, realServers: 2, ipv6: true });
const [rs1, rs2] = topo.realServers as [LabHost, LabHost];
const ENV: NodeJS.ProcessEnv = { ...process.env, XDPVS_PIN_ROOT: pinRoot, XDPVS_RUN_ROOT: runRoot, XDPVS_REALSERVER_ROOT: rsRecord };

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Children run without tap's NODE_OPTIONS (its loader breaks the extensionless bin/xdpvs). */
function sh(argv: string[], timeout = 120_000): Run {
  const r = spawnSync('env', ['-u', 'NODE_OPTIONS', ...argv], { encoding: 'utf8', env: ENV, timeout, maxBuffer: 64 << 20 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? r.error?.message ?? '' };
}
const xdpvs = (args: string[]) => sh([process.execPath, bin, ...args]);
const labExec = (role: string, command: string[]) => xdpvs(['lab', 'exec', '--name', prefix, role, '--', ...command]);
const onDirector = (args: string[]) => labExec('director', [process.execPath, bin, ...args]);

interface Report {
  interface: string;
  findings: Finding[];
  counts: { OK: number; WARN: number; FAIL: number };
}
function doctorJson(): { run: Run; report: Report } {
  const run = onDirector(['doctor', '-i', 'eth0', '--json']);
  return { run, report: JSON.parse(run.stdout) as Report };
}
const notOk = (r: Report) => r.findings.filter((f) => f.level !== 'OK').map((f) => `${f.level} ${f.message}`);

/** Nothing of the probe is left: no macvlan in the director, no tcpdump on it. */
function probeLeftovers(): string[] {
  const links = JSON.parse(sh(['ip', '-j', '-d', '-n', topo.director.namespace, 'link', 'show']).stdout || '[]') as Array<{ ifname: string; linkinfo?: { info_kind?: string } }>;
  const macvlans = links.filter((l) => l.linkinfo?.info_kind === 'macvlan').map((l) => `macvlan ${l.ifname}`);
  const tcpdumps = sh(['pgrep', '-af', 'tcpdump -i xdpvsdoc0']).stdout.split('\n').filter(Boolean);
  return [...macvlans, ...tcpdumps];
}

function setArp(host: LabHost, ignore: number, announce: number): void {
  const r = sh(['ip', 'netns', 'exec', host.namespace, 'sysctl', '-q', '-w',
    `net.ipv4.conf.all.arp_ignore=${ignore}`, `net.ipv4.conf.eth0.arp_ignore=${ignore}`,
    `net.ipv4.conf.all.arp_announce=${announce}`, `net.ipv4.conf.eth0.arp_announce=${announce}`]);
  if (r.status !== 0) throw new Error(`sysctl in ${host.namespace}: ${r.stderr}`);
}

t.test('doctor in the lab', { skip }, async (t) => {
  spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', root], { stdio: 'ignore' });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  t.teardown(() => {
    onDirector(['unload', '-i', 'eth0']);
    xdpvs(['lab', 'down', '--name', prefix]);
    for (const d of [pinRoot, runRoot, rsRecord, tmp]) fs.rmSync(d, { recursive: true, force: true });
  });

  // examples/lab.json without what the third real server would have
  const services = JSON.parse(fs.readFileSync(path.join(root, 'examples', 'lab.json'), 'utf8')) as { services: Array<{ backends: Array<{ ip: string }> }> };
  for (const s of services.services) s.backends = s.backends.filter((b) => !/(\.|::)13$/.test(b.ip));
  const servicesFile = path.join(tmp, 'lab2.json');
  fs.writeFileSync(servicesFile, JSON.stringify(services, null, 2));

  const up = xdpvs(['lab', 'up', '--name', prefix, '--real-servers', '2', '--ipv6']);
  t.equal(up.status, 0, `lab up: ${up.stderr}`);
  if (up.status !== 0) return;

  await t.test('nothing loaded: a FAIL that says so, and how to load', async (t) => {
    const r = onDirector(['doctor', '-i', 'eth0']);
    t.equal(r.status, 1, 'exit 1');
    t.match(r.stdout, /^FAIL {2}xdpvs has nothing loaded on eth0; no XDP program is attached either$/m);
    t.match(r.stdout, /fix: xdpvs load services\.json -i eth0/);
    t.match(r.stderr, /doctor found 1 problem on eth0/);
  });

  const load = onDirector(['load', servicesFile, '-i', 'eth0']);
  t.equal(load.status, 0, `load: ${load.stderr}`);
  if (load.status !== 0) return;

  await t.test('the healthy lab: exit 0, every finding OK', async (t) => {
    const r = onDirector(['doctor', '-i', 'eth0']);
    t.equal(r.status, 0, `exit 0: ${r.stderr}`);
    t.notMatch(r.stdout, /^(WARN|FAIL)/m, 'no WARN, no FAIL');
    t.match(r.stdout, /^OK {4}program \d+ \(xdpvs\) is attached to eth0 in native \(driver\) mode$/m);
    t.match(r.stdout, /^OK {4}the pinned program .* is the attached one$/m);
    for (const vip of ['10.200.0.100', '10.200.0.101', 'fd00:200::100']) {
      t.match(r.stdout, new RegExp(`^OK {4}VIP ${vip} \\(\\w+\\) is on eth0$`, 'm'), `VIP ${vip} on eth0`);
    }
    t.match(r.stdout, /^OK {4}nobody but the director answers ARP for VIP 10\.200\.0\.100$/m);
    t.match(r.stdout, /^OK {4}nobody but the director answers neighbour solicitations \(ND\) for VIP fd00:200::100$/m);
    for (const rs of [rs1, rs2]) {
      t.match(r.stdout, new RegExp(`^OK {4}backend ${rs.ipv4.replace(/\./g, '\\.')} \\(web, dns\\) is at ${rs.mac}, answers on the segment`, 'm'), `${rs.role}'s IPv4 answers with its MAC`);
      t.match(r.stdout, new RegExp(`^OK {4}backend ${rs.ipv6} \\(web6\\) is at ${rs.mac}, answers on the segment`, 'm'), `${rs.role}'s IPv6 answers with its MAC`);
    }
    t.match(r.stdout, /^OK {4}eth0 is a veth; its peer sw-director in namespace .*-switch has a native XDP program/m);
    t.match(r.stdout, /^0 FAIL, 0 WARN, \d+ OK$/m);
    t.same(probeLeftovers(), [], 'no macvlan or tcpdump left behind');

    const quiet = onDirector(['doctor', '-i', 'eth0', '--no-probe']);
    t.equal(quiet.status, 0, '--no-probe: exit 0');
    t.match(quiet.stdout, /^WARN {2}did not ask eth0's segment who answers for the VIPs and backends: skipped \(--no-probe\)$/m, '--no-probe: says what it did not check');
    t.notMatch(quiet.stdout, /answers ARP for VIP/, '--no-probe: no verdict on who answers for the VIPs');
  });

  await t.test('rs1 with arp_ignore=0: doctor names its MAC for each IPv4 VIP', async (t) => {
    setArp(rs1, 0, 0);
    const { run, report } = doctorJson();
    t.equal(run.status, 1, 'exit 1');
    t.match(run.stderr, /doctor found 2 problems on eth0/);
    const arp = report.findings.filter((f) => f.check === 'arp');
    t.same(arp.map((f) => f.level), ['FAIL', 'FAIL', 'OK'], 'both IPv4 VIPs FAIL; the IPv6 VIP (ND) stays OK');
    for (const [i, vip] of ['10.200.0.100', '10.200.0.101'].entries()) {
      t.equal(arp[i]!.message, `VIP ${vip}: another host answers ARP for it: ${rs1.mac} (backend ${rs1.ipv4}, ${rs1.ipv6})`);
      t.ok(arp[i]!.details.includes(`fix: on the host with MAC ${rs1.mac} (backend ${rs1.ipv4}, ${rs1.ipv6}): xdpvs realserver --vip 10.200.0.100,10.200.0.101,fd00:200::100 --apply`), 'the fix to run on rs1');
    }
    t.same(notOk(report).filter((l) => !l.includes('answers ARP for it')), [], 'nothing else is wrong');
    t.same(probeLeftovers(), [], 'no macvlan or tcpdump left behind');

    // the fix doctor gave, run on rs1, makes doctor clean again
    const fix = labExec(rs1.role, [process.execPath, bin, 'realserver', '--vip', '10.200.0.100,10.200.0.101,fd00:200::100', '--apply']);
    t.equal(fix.status, 0, `realserver --apply on rs1: ${fix.stderr}`);
    t.match(fix.stdout, /changed: net\.ipv4\.conf\.all\.arp_ignore: 0 -> 1/);
    const again = doctorJson();
    t.equal(again.run.status, 0, 'doctor is clean after the fix');
    t.same(notOk(again.report), []);
  });

  await t.test('rs2 with a new MAC: the backend answers from it, the data plane still has the old one', async (t) => {
    const moved = '02:00:0a:c8:00:99';
    t.equal(sh(['ip', '-n', rs2.namespace, 'link', 'set', 'dev', 'eth0', 'address', moved]).status, 0);
    t.teardown(() => {
      sh(['ip', '-n', rs2.namespace, 'link', 'set', 'dev', 'eth0', 'address', rs2.mac]);
      for (const ip of [rs2.ipv4, rs2.ipv6!]) sh(['ip', '-n', topo.director.namespace, 'neigh', 'del', ip, 'dev', 'eth0']);
    });
    const { run, report } = doctorJson();
    t.equal(run.status, 1, 'exit 1');
    const rs2Findings = report.findings.filter((f) => f.check === 'backend' && f.level === 'FAIL');
    t.same(rs2Findings.map((f) => f.message.split(' ')[1]), [rs2.ipv4, rs2.ipv6], 'both of rs2\'s addresses FAIL');
    t.match(rs2Findings[0]!.message, `now answers from ${moved}, but the data plane sends its flows to ${rs2.mac}`);
    t.ok(rs2Findings[0]!.details.some((d) => d.startsWith('fix: ') && d.includes(`xdpvs load ${servicesFile} -i eth0`)), 'the fix reloads');
  });

  await t.test('the program detached behind xdpvs\'s back', async (t) => {
    t.equal(sh(['ip', '-n', topo.director.namespace, 'link', 'set', 'dev', 'eth0', 'xdp', 'off']).status, 0, 'detached with ip link');
    const r = onDirector(['doctor', '-i', 'eth0']);
    t.equal(r.status, 1, 'exit 1');
    t.match(r.stdout, /^FAIL {2}no XDP program is attached to eth0: nothing is balanced \(xdpvs loaded program \d+ at /m);
    t.match(r.stdout, new RegExp(`fix: xdpvs load ${servicesFile.replace(/[.]/g, '\\.')} -i eth0 \\(attaches it again`));
    t.match(r.stderr, /doctor found \d+ problems? on eth0/);
  });
});
