import { SocketAddress } from 'node:net';
import t from 'tap';
import {
  canonicalIp,
  formatIp,
  formatMac,
  isMulticastOrBroadcastIp,
  isUnspecifiedIp,
  isV4MappedIp,
  maskPrefix,
  parseIp,
  parseMac,
} from '../src/net/addr.js';

const hex = (b: Buffer | null | undefined) => b?.toString('hex');

t.test('parseIp: IPv4', async (t) => {
  t.same(parseIp('10.200.0.100'), { family: 4, bytes: Buffer.from([10, 200, 0, 100]) });
  t.equal(hex(parseIp('0.0.0.0')?.bytes), '00000000');
  t.equal(hex(parseIp('255.255.255.255')?.bytes), 'ffffffff');
  for (const bad of ['10.200.0.300', '1.2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.04', '0x1.2.3.4', ' 1.2.3.4', '1.2.3.4 ', '', '1.2.3.', 'a.b.c.d', '1.2.3.-4']) {
    t.equal(parseIp(bad), null, JSON.stringify(bad));
  }
});

t.test('parseIp: IPv6', async (t) => {
  const cases: Array<[string, string]> = [
    ['::', '00000000000000000000000000000000'],
    ['::1', '00000000000000000000000000000001'],
    ['1::', '00010000000000000000000000000000'],
    ['2001:db8::100', '20010db8000000000000000000000100'],
    ['2001:DB8:0:0:0:0:0:100', '20010db8000000000000000000000100'],
    ['2001:0db8:0000:0000:0000:0000:0000:0100', '20010db8000000000000000000000100'],
    ['1:2:3:4:5:6:7::', '00010002000300040005000600070000'],
    ['::2:3:4:5:6:7:8', '00000002000300040005000600070008'],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008'],
    ['::ffff:1.2.3.4', '00000000000000000000ffff01020304'],
    ['::FFFF:1.2.3.4', '00000000000000000000ffff01020304'],
    ['64:ff9b::192.0.2.33', '0064ff9b0000000000000000c0000221'],
    ['1:2:3:4:5:6:1.2.3.4', '00010002000300040005000601020304'],
    ['::1.2.3.4', '00000000000000000000000001020304'],
    ['fe80::abcd:ef01', 'fe8000000000000000000000abcdef01'],
  ];
  for (const [s, h] of cases) {
    const p = parseIp(s);
    t.equal(p?.family, 6, s);
    t.equal(hex(p?.bytes), h, s);
  }
  for (const bad of [
    'fe80::1%eth0', // zone ids are not addresses
    '1::2::3',
    '12345::',
    '1:2:3:4:5:6:7:8::',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7',
    ':1:2:3:4:5:6:7',
    '::1.2.3',
    '::01.2.3.4',
    '::1.2.3.4:1',
    '1:2:3:4:5:6:7:1.2.3.4',
    '[::1]',
    'g::1',
    ' ::1',
  ]) {
    t.equal(parseIp(bad), null, JSON.stringify(bad));
  }
});

t.test('formatIp: RFC 5952 as inet_ntop prints it', async (t) => {
  const cases: Array<[string, string]> = [
    ['::', '::'],
    ['::1', '::1'],
    ['::0.0.0.1', '::1'],
    ['1::', '1::'],
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of two equal runs
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'], // longest run, not the first
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
    ['::2:3:4:5:6:7:8', '0:2:3:4:5:6:7:8'],
    ['0:0:0:0:0:1:0:0', '::1:0:0'],
    ['ABCD::EF', 'abcd::ef'],
    ['fe80:0000:0000:0000:0202:b3ff:fe1e:8329', 'fe80::202:b3ff:fe1e:8329'],
    ['::ffff:1.2.3.4', '::ffff:1.2.3.4'],
    ['::ffff:102:304', '::ffff:1.2.3.4'],
    ['::ffff:0:0', '::ffff:0.0.0.0'],
    ['::ffff:0:1.2.3.4', '::ffff:0:102:304'], // IPv4-translated: hex, as inet_ntop
    ['::102:304', '::1.2.3.4'], // IPv4-compatible: dotted, as inet_ntop
    ['1::ffff:1.2.3.4', '1::ffff:102:304'],
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
    ['10.200.0.100', '10.200.0.100'],
    ['0.0.0.0', '0.0.0.0'],
  ];
  for (const [input, want] of cases) {
    t.equal(canonicalIp(input), want, input);
    // and canonical forms are fixed points
    t.equal(canonicalIp(want), want, `${want} round trip`);
  }
  t.throws(() => formatIp(Buffer.alloc(5)), RangeError);
});

t.test('formatIp agrees with inet_ntop (net.SocketAddress) on random addresses', async (t) => {
  // deterministic PRNG; words drawn mostly from 0 so that zero runs of every shape occur
  let seed = 12345;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed >>> 8;
  };
  let mismatches = 0;
  for (let n = 0; n < 5000; n++) {
    const b = Buffer.alloc(16);
    for (let w = 0; w < 8; w++) {
      const r = rnd() % 10;
      const v = r < 6 ? 0 : r === 6 ? 0xffff : r === 7 ? rnd() & 0xf : rnd() & 0xffff;
      b.writeUInt16BE(v, w * 2);
    }
    const ours = formatIp(b);
    const theirs = new SocketAddress({ address: ours, family: 'ipv6' }).address;
    const reparsed = parseIp(ours);
    if (ours !== theirs || !reparsed || !reparsed.bytes.equals(b)) {
      mismatches++;
      if (mismatches < 5) t.fail(`${b.toString('hex')}: ours ${ours}, inet_ntop ${theirs}`);
    }
  }
  t.equal(mismatches, 0);
  for (let n = 0; n < 1000; n++) {
    const b = Buffer.from([rnd() & 255, rnd() & 255, rnd() & 255, rnd() & 255]);
    const s = formatIp(b);
    t.ok(parseIp(s)?.bytes.equals(b), s);
  }
});

t.test('address classes', async (t) => {
  const b = (s: string) => parseIp(s)!.bytes;
  t.ok(isUnspecifiedIp(b('0.0.0.0')));
  t.ok(isUnspecifiedIp(b('::')));
  t.notOk(isUnspecifiedIp(b('::1')));
  t.ok(isMulticastOrBroadcastIp(b('224.0.0.1')));
  t.ok(isMulticastOrBroadcastIp(b('239.255.255.255')));
  t.ok(isMulticastOrBroadcastIp(b('255.255.255.255')));
  t.notOk(isMulticastOrBroadcastIp(b('223.255.255.255')));
  t.notOk(isMulticastOrBroadcastIp(b('240.0.0.1')));
  t.ok(isMulticastOrBroadcastIp(b('ff02::1')));
  t.notOk(isMulticastOrBroadcastIp(b('fe80::1')));
  t.ok(isV4MappedIp(b('::ffff:10.0.0.1')));
  t.notOk(isV4MappedIp(b('::10.0.0.1')));
  t.notOk(isV4MappedIp(b('10.0.0.1')));
});

t.test('MAC addresses', async (t) => {
  const want = '020000000012';
  for (const s of ['02:00:00:00:00:12', '02-00-00-00-00-12', '02:00:00:00:00:12'.toUpperCase()]) {
    t.equal(hex(parseMac(s)), want, s);
  }
  t.equal(hex(parseMac('aB:cD:eF:01:23:45')), 'abcdef012345');
  for (const bad of [
    '02:00:00:00:12',
    '02:00:00:00:00:12:34',
    '02:00-00:00:00:12', // mixed separators
    '2:0:0:0:0:12',
    '020000000012',
    '0200.0000.0012',
    '02:00:00:00:00:1g',
    ' 02:00:00:00:00:12',
    '02:00:00:00:00:12\n',
    '',
  ]) {
    t.equal(parseMac(bad), null, JSON.stringify(bad));
  }
  t.equal(formatMac(Buffer.from('abcdef012345', 'hex')), 'ab:cd:ef:01:23:45');
  t.equal(formatMac(parseMac('AB-CD-EF-01-02-03')!), 'ab:cd:ef:01:02:03');
  t.throws(() => formatMac(Buffer.alloc(5)), RangeError);
});

t.test('maskPrefix', async (t) => {
  const b = (s: string) => parseIp(s)!.bytes;
  t.equal(formatIp(maskPrefix(b('10.1.2.3'), 24)), '10.1.2.0');
  t.equal(formatIp(maskPrefix(b('10.1.2.3'), 32)), '10.1.2.3');
  t.equal(formatIp(maskPrefix(b('10.1.2.3'), 0)), '0.0.0.0');
  t.equal(formatIp(maskPrefix(b('10.255.255.255'), 9)), '10.128.0.0');
  t.equal(formatIp(maskPrefix(b('10.1.2.3'), 31)), '10.1.2.2');
  t.equal(formatIp(maskPrefix(b('2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff'), 64)), '2001:db8:aaaa:bbbb::');
  t.equal(formatIp(maskPrefix(b('2001:db8:aaaa:bbbb::1'), 36)), '2001:db8:a000::');
  t.equal(formatIp(maskPrefix(b('2001:db8::1'), 128)), '2001:db8::1');
  // the input is not modified
  const orig = b('10.1.2.3');
  maskPrefix(orig, 8);
  t.equal(formatIp(orig), '10.1.2.3');
  t.throws(() => maskPrefix(orig, 33), RangeError);
  t.throws(() => maskPrefix(orig, -1), RangeError);
  t.throws(() => maskPrefix(orig, 1.5), RangeError);
  t.doesNotThrow(() => maskPrefix(b('::1'), 128));
});
