/**
 * The lab: topology (pure), then a real `xdpvs lab up/info/exec/down` in namespaces named
 * xdpvs-t<pid>-*, so a running demo lab is never touched. Needs root, iproute2, ethtool, clang.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { UserError } from '../src/errors.js';
import {
  buildTopology,
  isLabNamespace,
  macForIpv4,
  namespaceForRole,
  stateDirFor,
} from '../src/lab/topology.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = path.join(root, 'bin', 'xdpvs');
const prefix = `xdpvs-t${process.pid}`;

// ---------------------------------------------------------------------------------------------
// pure

t.test('topology', async (t) => {
  const topo = buildTopology({ prefix: 'lab1', realServers: 2, ipv6: true });
  t.equal(topo.switch.namespace, 'lab1-switch');
  t.same(topo.switch.ports, ['sw-client', 'sw-director', 'sw-rs1', 'sw-rs2']);
  t.match(topo.client, { role: 'client', namespace: 'lab1-client', interface: 'eth0', ipv4: '10.200.0.2', ipv6: 'fd00:200::2', mac: '02:00:0a:c8:00:02' });
  t.match(topo.director, { namespace: 'lab1-director', ipv4: '10.200.0.10', ipv6: 'fd00:200::10', mac: '02:00:0a:c8:00:0a' });
  t.match(topo.realServers[1], { role: 'rs2', namespace: 'lab1-rs2', switchPort: 'sw-rs2', ipv4: '10.200.0.12', ipv6: 'fd00:200::12', mac: '02:00:0a:c8:00:0c' });
  t.same(topo.vips, { ipv4: ['10.200.0.100', '10.200.0.101'], ipv6: ['fd00:200::100'] });
  t.equal(topo.stateDir, stateDirFor('lab1'));

  const v4only = buildTopology({ prefix: 'lab1' });
  t.equal(v4only.realServers.length, 3);
  t.equal(v4only.client.ipv6, null);
  t.same(v4only.vips.ipv6, []);

  t.equal(macForIpv4('10.200.0.99'), '02:00:0a:c8:00:63');
  t.ok(isLabNamespace('xdpvs', 'xdpvs-rs12'));
  t.notOk(isLabNamespace('xdpvs', 'xdpvs-t42-client'), 'another prefix is not ours');
  t.notOk(isLabNamespace('xdpvs', 'xdpvs-rs0'));
  t.equal(namespaceForRole(topo, 'switch'), 'lab1-switch');
  t.equal(namespaceForRole(topo, 'rs3'), undefined);
  t.throws(() => buildTopology({ prefix: 'Bad Name' }), UserError);
  t.throws(() => buildTopology({ realServers: 0 }), UserError);
  t.throws(() => buildTopology({ realServers: 90 }), UserError);
});

// ---------------------------------------------------------------------------------------------
// on the machine

const missing = ['ip', 'ethtool', 'clang'].filter(
  (tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0,
);
const skip =
  process.getuid?.() !== 0 ? 'needs root' : missing.length > 0 ? `needs ${missing.join(', ')}` : false;

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Children run without tap's NODE_OPTIONS: its loader would load the extensionless bin/xdpvs as
 * CommonJS. tap puts the variable back into any spawn's environment, hence `env -u`.
 */
const CLEAN = ['env', '-u', 'NODE_OPTIONS'];

function xdpvs(args: string[], env: NodeJS.ProcessEnv = process.env): Run {
  const r = spawnSync(CLEAN[0]!, [...CLEAN.slice(1), process.execPath, bin, ...args], { encoding: 'utf8', env });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function sh(argv: string[]): Run {
  const r = spawnSync(CLEAN[0]!, [...CLEAN.slice(1), ...argv], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? r.error?.message ?? '' };
}

/** A CommonJS snippet run by node inside a namespace; resolves to its stdout (throws on failure). */
function nodeIn(ns: string, script: string, ...args: string[]): string {
  const r = sh(['ip', 'netns', 'exec', ns, process.execPath, '-e', script, ...args]);
  if (r.status !== 0) throw new Error(`node in ${ns} failed: ${r.stderr.trim()}`);
  return r.stdout;
}

const HTTP_GET = `
const http = require('node:http');
const [host, port] = process.argv.slice(1);
http.get({ host, port: Number(port), timeout: 3000 }, (res) => {
  let body = ''; res.on('data', (d) => (body += d)); res.on('end', () => process.stdout.write(body));
}).on('timeout', function () { this.destroy(new Error('timed out')); })
  .on('error', (e) => { console.error(e.message); process.exit(1); });
`;

const UDP_ASK = `
const dgram = require('node:dgram');
const [host, port] = process.argv.slice(1);
const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
s.connect(Number(port), host, () => s.send('who?'));
s.on('message', (m) => { process.stdout.write(m.toString()); s.close(); process.exit(0); });
setTimeout(() => { console.error('timed out'); process.exit(1); }, 3000);
`;

/** One TCP attempt, whatever its outcome (the director has nothing listening on the VIP). */
const TCP_TRY = `
const s = require('node:net').connect({ host: process.argv[1], port: 80, timeout: 2000 });
const end = () => { s.destroy(); process.exit(0); };
s.on('connect', end); s.on('error', end); s.on('timeout', end);
`;

function labNamespaces(p: string): string[] {
  return sh(['ip', 'netns', 'list'])
    .stdout.split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((ns) => isLabNamespace(p, ns))
    .sort();
}

function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function addresses(ns: string, dev: string): Array<{ local: string; prefixlen: number }> {
  const out = JSON.parse(sh(['ip', '-j', '-n', ns, 'addr', 'show', 'dev', dev]).stdout) as Array<{
    address: string;
    addr_info: Array<{ local: string; prefixlen: number }>;
  }>;
  return out[0]!.addr_info.map(({ local, prefixlen }) => ({ local, prefixlen }));
}

function linkAddress(ns: string, dev: string): string {
  return (JSON.parse(sh(['ip', '-j', '-n', ns, 'link', 'show', 'dev', dev]).stdout) as Array<{ address: string }>)[0]!
    .address;
}

function neighbour(ns: string, ip: string): string | undefined {
  const out = JSON.parse(sh(['ip', '-j', '-n', ns, 'neigh', 'show', ip]).stdout || '[]') as Array<{ lladdr?: string }>;
  return out[0]?.lladdr;
}

function sysctlIn(ns: string, key: string): string {
  return sh(['ip', 'netns', 'exec', ns, 'sysctl', '-n', key]).stdout.trim();
}

t.test('lab on this machine', { skip }, async (t) => {
  // dist/ holds realserver-app.js and the CLI: build it (type errors elsewhere still emit)
  spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', root], { stdio: 'ignore' });
  t.ok(fs.existsSync(path.join(root, 'dist', 'lab', 'realserver-app.js')), 'dist is built');

  const failPrefix = `${prefix}f`;
  t.teardown(() => {
    xdpvs(['lab', 'down', '--name', prefix]);
    xdpvs(['lab', 'down', '--name', failPrefix]);
  });

  await t.test('a failing step is reported and cleaned up', async (t) => {
    const fakeBin = fs.mkdtempSync(path.join(os.tmpdir(), 'xdpvs-lab-test-'));
    t.teardown(() => fs.rmSync(fakeBin, { recursive: true, force: true }));
    fs.writeFileSync(path.join(fakeBin, 'ethtool'), '#!/bin/sh\necho "ethtool says no" >&2\nexit 3\n', { mode: 0o755 });
    const r = xdpvs(['lab', 'up', '--name', failPrefix, '--real-servers', '1'], {
      ...process.env,
      PATH: `${fakeBin}:${process.env.PATH}`,
    });
    t.equal(r.status, 1);
    t.match(r.stderr, /lab up failed: turn off TX checksum offload/);
    t.match(r.stderr, /command: ip netns exec .*-client ethtool -K eth0 tx off/);
    t.match(r.stderr, /ethtool says no/);
    t.same(labNamespaces(failPrefix), [], 'nothing left behind');
    t.notOk(fs.existsSync(stateDirFor(failPrefix)));
  });

  const topo = buildTopology({ prefix, realServers: 2, ipv6: true });
  const up = xdpvs(['lab', 'up', '--name', prefix, '--real-servers', '2', '--ipv6']);
  t.equal(up.status, 0, `lab up: ${up.stderr}`);
  if (up.status !== 0) return;

  t.test('namespaces, addresses and MACs', async (t) => {
    t.same(labNamespaces(prefix), [`${prefix}-client`, `${prefix}-director`, `${prefix}-rs1`, `${prefix}-rs2`, `${prefix}-switch`]);
    for (const h of [topo.client, topo.director, ...topo.realServers]) {
      t.equal(linkAddress(h.namespace, 'eth0'), h.mac, `${h.role} MAC`);
      const addrs = addresses(h.namespace, 'eth0');
      t.has(addrs, [{ local: h.ipv4, prefixlen: 24 }], `${h.role} IPv4`);
      t.ok(addrs.some((a) => a.local === h.ipv6 && a.prefixlen === 64), `${h.role} IPv6`);
    }
    const directorAddrs = addresses(topo.director.namespace, 'eth0');
    for (const vip of topo.vips.ipv4) t.ok(directorAddrs.some((a) => a.local === vip && a.prefixlen === 32), `director has ${vip}`);
    t.ok(directorAddrs.some((a) => a.local === 'fd00:200::100' && a.prefixlen === 128), 'director has the IPv6 VIP');
    for (const rs of topo.realServers) {
      const lo = addresses(rs.namespace, 'lo');
      for (const vip of topo.vips.ipv4) t.ok(lo.some((a) => a.local === vip && a.prefixlen === 32), `${rs.role} has ${vip} on lo`);
      t.ok(lo.some((a) => a.local === 'fd00:200::100' && a.prefixlen === 128), `${rs.role} has the IPv6 VIP on lo`);
      t.notOk(addresses(rs.namespace, 'eth0').some((a) => a.local.endsWith('::100') || a.local.endsWith('.100')));
      for (const key of ['all', 'eth0']) {
        t.equal(sysctlIn(rs.namespace, `net.ipv4.conf.${key}.arp_ignore`), '1', `${rs.role} ${key} arp_ignore`);
        t.equal(sysctlIn(rs.namespace, `net.ipv4.conf.${key}.arp_announce`), '2', `${rs.role} ${key} arp_announce`);
      }
    }
  });

  t.test('the switch: XDP_PASS on sw-director, no TX checksum offload on the client', async (t) => {
    const link = JSON.parse(sh(['ip', '-j', '-d', '-n', topo.switch.namespace, 'link', 'show', 'dev', 'sw-director']).stdout)[0];
    t.equal(link.xdp?.mode, 1, 'native (driver) mode');
    const features = sh(['ip', 'netns', 'exec', topo.client.namespace, 'ethtool', '-k', 'eth0']).stdout;
    t.match(features, /^tx-checksumming: off/m);
    const director = JSON.parse(sh(['ip', '-j', '-d', '-n', topo.director.namespace, 'link', 'show', 'dev', 'eth0']).stdout)[0];
    t.equal(director.xdp, undefined, 'nothing attached on the director');
  });

  t.test('each real server answers with its name', async (t) => {
    for (const rs of topo.realServers) {
      for (const ip of [rs.ipv4, rs.ipv6!]) {
        for (const port of ['80', '8080']) {
          t.equal(nodeIn(topo.client.namespace, HTTP_GET, ip, port), `${rs.role}\n`, `HTTP ${ip} port ${port}`);
        }
        t.equal(nodeIn(topo.client.namespace, UDP_ASK, ip, '53'), `${rs.role}\n`, `UDP ${ip}`);
      }
      // the VIP on lo answers too, from inside the real server
      t.equal(nodeIn(rs.namespace, HTTP_GET, '10.200.0.100', '80'), `${rs.role}\n`);
      t.equal(nodeIn(rs.namespace, UDP_ASK, 'fd00:200::100', '53'), `${rs.role}\n`);
    }
  });

  t.test('the director owns the VIPs on the wire; it knows every real server', async (t) => {
    for (const vip of ['10.200.0.100', 'fd00:200::100']) {
      nodeIn(topo.client.namespace, TCP_TRY, vip);
      t.equal(neighbour(topo.client.namespace, vip), topo.director.mac, `client resolves ${vip} to the director`);
    }
    for (const rs of topo.realServers) {
      t.equal(neighbour(topo.director.namespace, rs.ipv4), rs.mac, `director knows ${rs.ipv4}`);
      t.equal(neighbour(topo.director.namespace, rs.ipv6!), rs.mac, `director knows ${rs.ipv6}`);
    }
  });

  let pids: number[] = [];
  t.test('lab info --json', async (t) => {
    const r = xdpvs(['lab', 'info', '--name', prefix, '--json']);
    t.equal(r.status, 0, r.stderr);
    const info = JSON.parse(r.stdout);
    pids = info.realServers.map((rs: { pid: number }) => rs.pid);
    t.ok(pids.every((p) => Number.isInteger(p) && alive(p)), 'real server pids');
    t.same(info, {
      ...topo,
      realServers: topo.realServers.map((rs, i) => ({ ...rs, pid: pids[i] })),
    });
    t.same(Object.keys(info).sort(), ['client', 'director', 'ipv6', 'ports', 'prefix', 'realServers', 'stateDir', 'subnets', 'switch', 'vips']);
    t.same(Object.keys(info.director).sort(), ['interface', 'ipv4', 'ipv6', 'mac', 'namespace', 'role', 'switchPort']);
    t.same(info.ports, { tcp: [80, 8080], udp: [53] });
    const text = xdpvs(['lab', 'info', '--name', prefix]);
    t.match(text.stdout, /rs2 +\S+-rs2 +eth0 +02:00:0a:c8:00:0c +10\.200\.0\.12 +fd00:200::12/);
  });

  t.test('lab exec', async (t) => {
    const r = xdpvs(['lab', 'exec', '--name', prefix, 'rs1', '--', 'sh', '-c', 'ls /sys/class/net; exit 4']);
    t.equal(r.status, 4, 'exit status carried over');
    t.same(r.stdout.trim().split('\n').sort(), ['eth0', 'lo'], "the namespace's own sysfs");
    const bpffs = xdpvs(['lab', 'exec', '--name', prefix, 'director', '--', 'stat', '-f', '-c', '%T', '/sys/fs/bpf']);
    t.equal(bpffs.stdout.trim(), sh(['stat', '-f', '-c', '%T', '/sys/fs/bpf']).stdout.trim(), '/sys/fs/bpf stays the host bpffs');
    t.match(xdpvs(['lab', 'exec', '--name', prefix, 'rs7', '--', 'true']).stderr, /has no host "rs7"/);
  });

  t.test('up twice leaves one lab', async (t) => {
    const again = xdpvs(['lab', 'up', '--name', prefix, '--real-servers', '2', '--ipv6']);
    t.equal(again.status, 0, again.stderr);
    t.match(again.stdout, /already up/);
    t.equal(labNamespaces(prefix).length, 5);
    const info = JSON.parse(xdpvs(['lab', 'info', '--name', prefix, '--json']).stdout);
    t.same(info.realServers.map((rs: { pid: number }) => rs.pid), pids, 'same real server processes');
    for (const rs of topo.realServers) {
      t.equal(sh(['ip', 'netns', 'pids', rs.namespace]).stdout.trim().split('\n').length, 1, `one process in ${rs.role}`);
      t.equal(addresses(rs.namespace, 'eth0').filter((a) => a.local === rs.ipv4).length, 1);
    }
    t.equal(nodeIn(topo.client.namespace, HTTP_GET, '10.200.0.11', '80'), 'rs1\n');
  });

  t.test('down after a half-gone lab removes everything, and is idempotent', async (t) => {
    // a namespace deleted behind the lab's back: its process lives on, unreachable by `ip netns pids`
    t.equal(sh(['ip', 'netns', 'del', topo.realServers[0]!.namespace]).status, 0);
    t.match(xdpvs(['lab', 'info', '--name', prefix]).stderr, /incomplete/);
    const down = xdpvs(['lab', 'down', '--name', prefix]);
    t.equal(down.status, 0, down.stderr);
    t.same(labNamespaces(prefix), []);
    for (const pid of pids) t.notOk(alive(pid), `pid ${pid} is gone`);
    t.notOk(fs.existsSync(stateDirFor(prefix)), 'state dir removed');
    const again = xdpvs(['lab', 'down', '--name', prefix]);
    t.equal(again.status, 0);
    t.match(again.stdout, /no lab/);
    t.match(xdpvs(['lab', 'info', '--name', prefix]).stderr, /no lab named/);
  });
});
