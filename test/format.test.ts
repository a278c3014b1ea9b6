import t from 'tap';
import type { Test } from 'tap';
import {
  DR_FOOTNOTE,
  alignColumns,
  columnWidths,
  dottedMask,
  formatStatsTable,
  formatStatusTable,
  hostPort,
  largeNum,
  serviceLine,
} from '../src/cli/format.js';
import type { StatsReport, StatusReport, StatusService } from '../src/runtime/read.js';

/** ipvsadm's printf formats (ipvsadm.c print_title / print_service_entry), as references. */
const left = (v: string | number, w: number) => String(v).padEnd(w);
const right = (v: string | number, w: number) => String(v).padStart(w);
const ipvsadm = {
  listDest: (d: string, fwd: string, w: number, a: number, i: number) => `  -> ${left(d, 28)} ${left(fwd, 7)} ${left(w, 6)} ${left(a, 10)} ${left(i, 10)}`,
  statsTitle: (...h: string[]) => `${left('Prot LocalAddress:Port', 33)} ${h.map((x) => right(x, 8)).join(' ')}`,
  statsSvc: (name: string, ...n: string[]) => `${left(name, 33)}${n.map((x) => right(x, 9)).join('')}`,
  statsDest: (d: string, ...n: string[]) => `  -> ${left(d, 28)}${n.map((x) => right(x, 9)).join('')}`,
  rateDest: (d: string, cps: number, inpps: number, outpps: number, ...n: string[]) =>
    `  -> ${left(d, 28)} ${right(cps, 8)} ${right(inpps, 8)} ${right(outpps, 8)}${n.map((x) => right(x, 9)).join('')}`,
};
const startsWith = (t: Test, line: string | undefined, prefix: string, msg = `starts with ${JSON.stringify(prefix)}`) => t.equal(line?.slice(0, prefix.length), prefix, msg);

t.test('alignColumns pads left and right, grows to the longest cell, trims line ends', (t) => {
  const rows = [
    ['name', 'n', 'tail'],
    ['a-much-longer-name', '12345', ''],
    ['b', '7', 'x'],
  ];
  const cols = [{}, { align: 'right' as const, min: 3 }, {}];
  t.same(columnWidths(rows, cols), [18, 5, 4]);
  t.same(alignColumns(rows, cols), [
    'name                   n tail',
    'a-much-longer-name 12345',
    'b                      7 x',
  ]);
  t.same(alignColumns([['a', 'b']], [{ min: 4 }], ' | '), ['a    | b'], 'separator and min width');
  t.same(alignColumns([['x'], ['y', 'z']], []), ['x', 'y z'], 'ragged rows');
  t.end();
});

t.test('hostPort: IPv6 in brackets, port 0 as ipvsadm shows it', (t) => {
  t.equal(hostPort('10.0.0.1', 80), '10.0.0.1:80');
  t.equal(hostPort('fd00:200::100', 80), '[fd00:200::100]:80');
  t.equal(hostPort('::1', 0), '[::1]:0');
  t.equal(hostPort('10.0.0.1', 0), '10.0.0.1:0');
  t.end();
});

t.test("largeNum is ipvsadm's print_largenum", (t) => {
  t.equal(largeNum(0), '0');
  t.equal(largeNum(99_999_999), '99999999', 'plain below 100 million');
  t.equal(largeNum(100_000_000), '100000K');
  t.equal(largeNum(999_999_999), '999999K');
  t.equal(largeNum(1_000_000_000), '1000M');
  t.equal(largeNum(99_999_999_999), '99999M');
  t.equal(largeNum(100_000_000_000), '100G');
  t.equal(largeNum(100_000_000_000_000), '100T');
  t.equal(largeNum(123_456_789_012, true), '123456789012', '--exact');
  t.equal(largeNum(-3), '0');
  t.end();
});

t.test('service line flags as ipvsadm -L -n', (t) => {
  const s = { protocol: 'tcp', vip: '10.0.0.1', port: 80, scheduler: 'maglev', persistence: 0 };
  t.equal(serviceLine(s), 'TCP  10.0.0.1:80 maglev');
  t.equal(serviceLine({ ...s, persistence: 300 }), 'TCP  10.0.0.1:80 maglev persistent 300');
  t.equal(serviceLine({ ...s, persistence: 300, persistenceNetmask: 32 }), 'TCP  10.0.0.1:80 maglev persistent 300');
  t.equal(serviceLine({ ...s, persistence: 60, persistenceNetmask: 24 }), 'TCP  10.0.0.1:80 maglev persistent 60 mask 255.255.255.0');
  t.equal(serviceLine({ ...s, vip: 'fd00::1', protocol: 'udp', port: 0, persistence: 60, persistenceNetmask: 64 }), 'UDP  [fd00::1]:0 maglev persistent 60 mask 64');
  t.equal(dottedMask(0), '0.0.0.0');
  t.equal(dottedMask(20), '255.255.240.0');
  t.equal(dottedMask(32), '255.255.255.255');
  t.end();
});

const svc = (over: Partial<StatusService> = {}): StatusService => ({
  name: 'web',
  vip: '10.200.0.100',
  port: 80,
  protocol: 'tcp',
  scheduler: 'maglev',
  persistence: 0,
  persistenceNetmask: 32,
  backends: [
    { ip: '10.200.0.11', port: 80, forward: 'Route', weight: 1, activeConnections: 12, inactiveConnections: 3, mac: '02:00:00:00:00:11', state: 'up' },
    { ip: '10.200.0.12', port: 80, forward: 'Route', weight: 0, activeConnections: 0, inactiveConnections: 0, mac: '02:00:00:00:00:12', state: 'draining' },
  ],
  ...over,
});

t.test('status table: ipvsadm -L -n columns, extras after them', (t) => {
  const lines = formatStatusTable({ services: [svc()] }).split('\n');
  // ipvsadm's own lines, byte for byte, up to where the extras begin
  t.equal(lines[0]!.slice(0, 38), 'Prot LocalAddress:Port Scheduler Flags');
  startsWith(t, lines[1], '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn');
  t.match(lines[2], /^TCP {2}10\.200\.0\.100:80 maglev +web$/);
  t.equal(lines[3], `${ipvsadm.listDest('10.200.0.11:80', 'Route', 1, 12, 3)} up       02:00:00:00:00:11`);
  t.equal(lines[4], `${ipvsadm.listDest('10.200.0.12:80', 'Route', 0, 0, 0)} draining 02:00:00:00:00:12`);
  const at = (line: string, word: string) => line.indexOf(word);
  t.equal(at(lines[0]!, 'Name'), at(lines[1]!, 'State'), 'Name sits over State');
  t.equal(at(lines[2]!, 'web'), at(lines[3]!, 'up'));
  t.equal(at(lines[1]!, 'MAC'), at(lines[3]!, '02:'));
  t.end();
});

t.test('status table: a long IPv6 address widens its column for every row', (t) => {
  const v6 = svc({
    name: 'v6',
    vip: 'fd00:200:0:0:1234:5678:9abc:100',
    port: 0,
    protocol: 'udp',
    backends: [
      { ip: 'fd00:200:0:0:1234:5678:9abc:def0', port: 0, forward: 'Route', weight: 5, activeConnections: 0, inactiveConnections: 7, mac: '02:00:00:00:00:21', state: 'down' },
      { ip: 'fd00::2', port: 0, forward: 'Route', weight: 1, activeConnections: 0, inactiveConnections: 0, mac: '02:00:00:00:00:22', state: 'up' },
    ],
  });
  const lines = formatStatusTable({ services: [svc(), v6] }).split('\n');
  t.match(lines[5], /^UDP {2}\[fd00:200:0:0:1234:5678:9abc:100\]:0 maglev +v6$/);
  const long = lines.find((l) => l.includes('def0'))!;
  t.match(long, /^ {2}-> \[fd00:200:0:0:1234:5678:9abc:def0\]:0 Route {3}5 {6}0 {10}7 {10}down {5}02:00:00:00:00:21$/);
  const forwardAt = lines[1]!.indexOf('Forward');
  for (const l of lines.slice(1).filter((l) => l.startsWith('  ->') && !l.includes('RemoteAddress'))) t.equal(l.indexOf('Route'), forwardAt, `aligned: ${l}`);
  t.end();
});

const stats = (): StatsReport => ({
  interface: 'eth0',
  services: [
    {
      name: 'web',
      vip: '10.200.0.100',
      port: 80,
      protocol: 'tcp',
      connections: 120,
      packets: 4810,
      bytes: 392114,
      backends: [
        { ip: '10.200.0.11', mac: '02:00:00:00:00:11', weight: 1, state: 'up', connections: 40, packets: 1600, bytes: 130000 },
        { ip: '10.200.0.12', mac: '02:00:00:00:00:12', weight: 2, state: 'up', connections: 80, packets: 3210, bytes: 262114 },
      ],
    },
    {
      name: 'dns6',
      vip: 'fd00:200::100',
      port: 53,
      protocol: 'udp',
      connections: 2,
      packets: 3,
      bytes: 123_456_789_012,
      backends: [{ ip: 'fd00:200::11', mac: '02:00:00:00:01:11', weight: 1, state: 'draining', connections: 2, packets: 3, bytes: 123_456_789_012 }],
    },
  ],
  totals: { packets: 5003, forwarded: 4813, passed: 190, dropped: 0 },
});

t.test('stats table: ipvsadm --stats layout, footnote, totals', (t) => {
  const lines = formatStatsTable(stats()).split('\n');
  t.equal(lines[0], `${ipvsadm.statsTitle('Conns', 'InPkts', 'OutPkts', 'InBytes', 'OutBytes')} Name`, "ipvsadm's header, then Name");
  t.equal(lines[0], 'Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes Name');
  t.match(lines[1], /^ {2}-> RemoteAddress:Port +State +MAC$/);
  t.equal(lines[2], `${ipvsadm.statsSvc('TCP  10.200.0.100:80', '120', '4810', '0', '392114', '0')} web`);
  t.equal(lines[3], `${ipvsadm.statsDest('10.200.0.11:80', '40', '1600', '0', '130000', '0')} up       02:00:00:00:00:11`);
  t.equal(lines[5], `${ipvsadm.statsSvc('UDP  [fd00:200::100]:53', '2', '3', '0', '123G', '0')} dns6`);
  t.equal(lines[6], `${ipvsadm.statsDest('[fd00:200::11]:53', '2', '3', '0', '123G', '0')} draining 02:00:00:00:01:11`);
  t.equal(lines[1]!.indexOf('State'), lines[0]!.indexOf('Name'));
  t.equal(lines[7], '');
  t.equal(lines[8], DR_FOOTNOTE);
  t.equal(lines[9], 'Totals: 5003 packets: 4813 forwarded, 190 passed to the kernel, 0 dropped');

  const exact = formatStatsTable(stats(), { exact: true }).split('\n');
  t.match(exact[5], /^UDP {2}\[fd00:200::100\]:53 +2 +3 +0 123456789012 +0 dns6$/);
  t.equal(exact[5]!.indexOf('123456789012') + 12, exact[0]!.indexOf('InBytes') + 7, 'a wide number widens its column, right-aligned');

  const dropped = formatStatsTable({ ...stats(), totals: { packets: 10, forwarded: 4, passed: 1, dropped: 5 } }, { drops: { fragment: 2, noBackend: 3, other: 0 } });
  t.match(dropped, /5 dropped \(2 IP fragments, 3 with no backend to take them\)$/);
  t.end();
});

t.test('rate table: ipvsadm --rate header and whole numbers', (t) => {
  const r = stats();
  Object.assign(r.services[0]!, { connectionsPerSecond: 1.6, packetsPerSecond: 99.4, bytesPerSecond: 100_000_000 });
  Object.assign(r.services[0]!.backends[0]!, { connectionsPerSecond: 0.4, packetsPerSecond: 1200, bytesPerSecond: 5 });
  const lines = formatStatsTable(r, { rate: true, totalsPerSecond: { packets: 11.2, forwarded: 9.6, passed: 1.6, dropped: 0 } }).split('\n');
  t.equal(lines[0], 'Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS Name');
  t.equal(lines[2], `${ipvsadm.statsSvc('TCP  10.200.0.100:80', '2', '99', '0', '100000K', '0')} web`);
  t.equal(lines[3], `${ipvsadm.rateDest('10.200.0.11:80', 0, 1200, 0, '5', '0')} up       02:00:00:00:00:11`);
  startsWith(t, lines[4], ipvsadm.rateDest('10.200.0.12:80', 0, 0, 0, '0', '0'), 'an entry without rates reads 0');
  // a backend's CPS/InPPS/OutPPS are %8u in ipvsadm: never abbreviated
  r.services[0]!.backends[0]!.packetsPerSecond = 120_000_000;
  const wide = formatStatsTable(r, { rate: true }).split('\n');
  t.match(wide[3], / 120000000 /);
  t.equal(wide[3]!.indexOf('120000000') + 9, wide[0]!.indexOf('InPPS') + 5, 'right edges line up');
  t.match(lines.at(-2), /^OutPPS and OutBPS stay 0/);
  t.equal(lines.at(-1), 'Totals per second: 12 packets: 10 forwarded, 2 passed to the kernel, 0 dropped', 'the parts, rounded, add up');
  t.end();
});

t.test('status report type carries what the table needs', (t) => {
  const r: Pick<StatusReport, 'services'> = { services: [] };
  t.same(formatStatusTable(r).split('\n').length, 2, 'headers only without services');
  t.end();
});
