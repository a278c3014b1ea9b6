/**
 * `xdpvs realserver`: the plan as pure functions, then the CLI in a throw-away namespace
 * (xdpvs-rs<pid>, a veth xva/xvb with 10.77.0.1/24 on xva, lo down as in any new namespace) with
 * its record under /run/xdpvs-rs<pid>-record: check lists every fix and fails, print shows the
 * commands, apply makes it right, apply again changes nothing, check passes, remove restores.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import t from 'tap';
import { UserError } from '../src/errors.js';
import { evaluate, parseVips, routeInterface, stepCommand, stepsOf, type SystemSnapshot } from '../src/realserver/plan.js';
import { TestNetns } from './helpers/netns.js';

// ---------------------------------------------------------------------------------------------
// pure

t.test('parseVips', async (t) => {
  t.same(parseVips('10.0.0.100, fd00:0::100,10.0.0.100'), [
    { address: '10.0.0.100', family: 4, prefix: 32 },
    { address: 'fd00::100', family: 6, prefix: 128 },
  ], 'canonical, deduplicated, /32 and /128');
  for (const bad of ['', '10.0.0.300', '127.0.0.1', '0.0.0.0', '224.0.0.1', 'fe80::1', '::1']) {
    t.throws(() => parseVips(bad), UserError, `rejects ${JSON.stringify(bad)}`);
  }
  t.throws(() => parseVips('10.0.0.300'), { message: '--vip: "10.0.0.300" is not an IPv4 or IPv6 address' });
});

t.test('routeInterface: the longest prefix, then the lowest metric; lo and unreachable do not count', async (t) => {
  const routes = [
    { dst: 'default', dev: 'mgmt0', metric: 100 },
    { dst: 'default', dev: 'eth9', metric: 50 },
    { dst: '10.0.0.0/24', dev: 'eth1' },
    { dst: '10.0.0.0/16', dev: 'eth2' },
    { dst: '10.0.0.128/25', type: 'unreachable' },
    { dst: '10.5.0.0/16', dev: 'lo' },
  ];
  t.equal(routeInterface(routes, '10.0.0.100'), 'eth1');
  t.equal(routeInterface(routes, '10.0.7.1'), 'eth2');
  t.equal(routeInterface(routes, '192.0.2.1'), 'eth9', 'the default route with the lowest metric');
  t.equal(routeInterface(routes, '10.0.0.200'), 'eth1', 'an unreachable route is skipped');
  t.equal(routeInterface(routes, '10.5.0.1'), 'eth9', 'a route through lo is skipped');
  t.equal(routeInterface([{ dst: '10.0.0.0/24', dev: 'eth1' }], '192.0.2.1'), undefined);
});

t.test('evaluate: every wrong setting with its fix, sysctls before addresses', async (t) => {
  const vips = parseVips('10.0.0.100,10.0.0.101,fd00::100');
  const sys: SystemSnapshot = {
    loUp: true,
    addresses: [
      { ifname: 'lo', family: 4, address: '127.0.0.1', prefixlen: 8 },
      { ifname: 'eth0', family: 4, address: '10.0.0.100', prefixlen: 24 },
      { ifname: 'lo', family: 4, address: '10.0.0.101', prefixlen: 32 },
      { ifname: 'lo', family: 6, address: 'fd00::100', prefixlen: 64 },
    ],
    sysctls: { 'all.arp_ignore': 1, 'all.arp_announce': 0, 'eth0.arp_ignore': 0, 'eth0.arp_announce': 2 },
  };
  const findings = evaluate(vips, 'eth0', sys);
  t.same(findings.filter((f) => f.ok).map((f) => f.text), [
    'lo is up',
    'net.ipv4.conf.all.arp_ignore = 1',
    'net.ipv4.conf.eth0.arp_announce = 2',
    '10.0.0.101/32 on lo',
  ]);
  t.same(stepsOf(findings).map(stepCommand), [
    'sysctl -w net.ipv4.conf.all.arp_announce=2',
    'sysctl -w net.ipv4.conf.eth0.arp_ignore=1',
    'ip addr del 10.0.0.100/24 dev eth0',
    'ip -6 addr del fd00::100/64 dev lo',
    'ip addr add 10.0.0.100/32 dev lo',
    'ip -6 addr add fd00::100/128 dev lo nodad valid_lft forever preferred_lft 0',
  ]);
  t.match(findings.find((f) => f.text.startsWith('10.0.0.100'))?.text, /is on eth0, where this host answers ARP for it/);
  t.same(evaluate(parseVips('fd00::1'), null, { loUp: false, addresses: [], sysctls: {} }).flatMap((f) => f.steps.map(stepCommand)), [
    'ip link set dev lo up',
    'ip -6 addr add fd00::1/128 dev lo nodad valid_lft forever preferred_lft 0',
  ], 'IPv6 only: no ARP sysctl, no interface needed');
  const vlan = evaluate(parseVips('10.0.0.1'), 'eth0.100', { loUp: true, addresses: [], sysctls: {} });
  t.ok(vlan.some((f) => f.text.startsWith('net/ipv4/conf/eth0.100/arp_ignore')), 'a VLAN interface takes the slash form');
});

// ---------------------------------------------------------------------------------------------
// in a namespace

const skip = process.getuid?.() !== 0 ? 'needs root' : spawnSync('sh', ['-c', 'command -v ip nsenter']).status !== 0 ? 'needs ip, nsenter' : false;

t.test('xdpvs realserver in a namespace', { skip }, async (t) => {
  const ns = new TestNetns(`xdpvs-rs${process.pid}`);
  const record = `/run/xdpvs-rs${process.pid}-record`;
  t.teardown(() => {
    ns.destroy();
    fs.rmSync(record, { recursive: true, force: true });
  });
  const VIPS = '10.77.0.100,fd00:77::100';
  const rs = (...args: string[]) => ns.xdpvs(['realserver', '--vip', VIPS, ...args], { XDPVS_REALSERVER_ROOT: record });
  const sysctl = (name: string) => Number(fs.readFileSync(`/proc/sys/net/ipv4/conf/all/${name}`, 'utf8')); // this process's namespace: must stay untouched
  const nsSysctl = (conf: string, name: string) => Number(spawnSync('ip', ['netns', 'exec', ns.name, 'cat', `/proc/sys/net/ipv4/conf/${conf}/${name}`], { encoding: 'utf8' }).stdout.trim());
  const lo = () => JSON.parse(ns.ip('-j', 'addr', 'show', 'dev', 'lo').stdout) as Array<{ flags: string[]; addr_info: Array<{ local: string; prefixlen: number; preferred_life_time?: number }> }>;
  const hostBefore = { ignore: sysctl('arp_ignore'), announce: sysctl('arp_announce') };

  // a starting point that is not the kernel's default, so restoring is visible
  t.equal(spawnSync('ip', ['netns', 'exec', ns.name, 'sysctl', '-qw', 'net.ipv4.conf.xva.arp_announce=1']).status, 0);

  const check1 = rs();
  t.equal(check1.status, 1, 'check: exit 1 when settings are wrong');
  t.match(check1.stdout, /ARP sysctls on all and xva/, 'the interface is the route to the VIP');
  for (const fix of [
    'ip link set dev lo up',
    'sysctl -w net.ipv4.conf.all.arp_ignore=1',
    'sysctl -w net.ipv4.conf.all.arp_announce=2',
    'sysctl -w net.ipv4.conf.xva.arp_ignore=1',
    'sysctl -w net.ipv4.conf.xva.arp_announce=2',
    'ip addr add 10.77.0.100/32 dev lo',
    'ip -6 addr add fd00:77::100/128 dev lo nodad valid_lft forever preferred_lft 0',
  ]) {
    t.match(check1.stdout, `fix: ${fix}\n`, `check lists: ${fix}`);
  }
  t.match(check1.stdout, /WRONG {2}net\.ipv4\.conf\.xva\.arp_announce is 1, needs 2/);
  t.match(check1.stdout, /7 of 7 settings wrong/);
  t.match(check1.stderr, /^xdpvs: 7 settings are wrong on this real server\n {2}fix: xdpvs realserver --vip 10\.77\.0\.100,fd00:77::100 --apply\n$/);

  const printed = rs('--print');
  t.equal(printed.status, 0, 'print: exit 0');
  t.same(printed.stdout.trim().split('\n'), [
    'ip link set dev lo up',
    'sysctl -w net.ipv4.conf.all.arp_ignore=1',
    'sysctl -w net.ipv4.conf.all.arp_announce=2',
    'sysctl -w net.ipv4.conf.xva.arp_ignore=1',
    'sysctl -w net.ipv4.conf.xva.arp_announce=2',
    'ip addr add 10.77.0.100/32 dev lo',
    'ip -6 addr add fd00:77::100/128 dev lo nodad valid_lft forever preferred_lft 0',
  ], 'print: the commands, sysctls before addresses');
  t.equal(rs().status, 1, 'print changed nothing');

  const applied = rs('--apply');
  t.equal(applied.status, 0, `apply: ${applied.stderr}`);
  t.match(applied.stdout, /changed: net\.ipv4\.conf\.xva\.arp_announce: 1 -> 2/);
  t.match(applied.stdout, /7 changes/);
  t.same([nsSysctl('all', 'arp_ignore'), nsSysctl('all', 'arp_announce'), nsSysctl('xva', 'arp_ignore'), nsSysctl('xva', 'arp_announce')], [1, 2, 1, 2], 'arp_ignore=1, arp_announce=2 on all and xva');
  const addrs = lo()[0]!;
  t.ok(addrs.flags.includes('UP'), 'lo is up');
  t.ok(addrs.addr_info.some((a) => a.local === '10.77.0.100' && a.prefixlen === 32), '10.77.0.100/32 on lo');
  t.ok(addrs.addr_info.some((a) => a.local === 'fd00:77::100' && a.prefixlen === 128 && a.preferred_life_time === 0), 'fd00:77::100/128 on lo, never chosen as a source');
  t.ok(fs.existsSync(`${record}/realserver.json`), 'the previous values are recorded');

  const again = rs('--apply');
  t.equal(again.status, 0, 'apply again: exit 0');
  t.match(again.stdout, /^nothing to change: .* are already right\n$/, 'apply again: says nothing changed');
  t.notMatch(again.stdout, /changed:/);
  t.equal(rs('--print').stdout, `# nothing to change: VIPs 10.77.0.100/32, fd00:77::100/128 on lo, ARP sysctls on all and xva are already right\n`, 'print: nothing to do');

  const check2 = rs();
  t.equal(check2.status, 0, 'check: exit 0 once all is right');
  t.match(check2.stdout, /all 7 settings are right/);
  t.notMatch(check2.stdout, /WRONG/);

  const removed = rs('--remove');
  t.equal(removed.status, 0, `remove: ${removed.stderr}`);
  t.match(removed.stdout, /removed 10\.77\.0\.100\/32 from lo/);
  t.match(removed.stdout, /restored net\.ipv4\.conf\.xva\.arp_announce: 2 -> 1 \(its value before --apply\)/);
  t.same([nsSysctl('all', 'arp_ignore'), nsSysctl('all', 'arp_announce'), nsSysctl('xva', 'arp_ignore'), nsSysctl('xva', 'arp_announce')], [0, 0, 0, 1], 'the sysctls are as before --apply');
  t.notOk(lo()[0]!.addr_info.some((a) => a.local === '10.77.0.100' || a.local === 'fd00:77::100'), 'the VIPs are off lo');
  t.notOk(fs.existsSync(`${record}/realserver.json`), 'the record is gone');

  // without a record: the kernel defaults, said so
  t.equal(rs('--apply').status, 0);
  fs.rmSync(`${record}/realserver.json`);
  const noRecord = rs('--remove');
  t.equal(noRecord.status, 0);
  t.match(noRecord.stdout, /no record of the values before --apply .*: setting the kernel defaults, arp_ignore=0 and arp_announce=0/);
  t.same([nsSysctl('all', 'arp_ignore'), nsSysctl('all', 'arp_announce'), nsSysctl('xva', 'arp_ignore'), nsSysctl('xva', 'arp_announce')], [0, 0, 0, 0], 'kernel defaults');

  // errors name what is wrong
  const badIface = ns.xdpvs(['realserver', '--vip', '10.77.0.100', '--iface', 'nosuch0'], { XDPVS_REALSERVER_ROOT: record });
  t.equal(badIface.status, 1);
  t.match(badIface.stderr, /--iface nosuch0: no such network interface here/);
  const noRoute = ns.xdpvs(['realserver', '--vip', '192.0.2.7'], { XDPVS_REALSERVER_ROOT: record });
  t.equal(noRoute.status, 1);
  t.match(noRoute.stderr, /cannot tell which interface the traffic for 192\.0\.2\.7 uses/);
  const both = rs('--apply', '--remove');
  t.not(both.status, 0, '--apply and --remove together are refused');

  t.same({ ignore: sysctl('arp_ignore'), announce: sysctl('arp_announce') }, hostBefore, "the host's own sysctls were not touched");
});
