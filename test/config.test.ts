import { isIPv4, isIPv6 } from 'node:net';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import tap from 'tap';

const t = tap;
import {
  FIELDS,
  parseServicesFile,
  parseServicesText,
  validateServices,
  type FieldSpec,
  type ObjectKind,
} from '../src/config/validate.js';
import { parseMac } from '../src/net/addr.js';
import { UserError } from '../src/errors.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SCHEMA = JSON.parse(readFileSync(join(ROOT, 'schema/services.schema.json'), 'utf8')) as Schema;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** A known-good service to derive bad ones from. */
function svc(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'web',
    vip: '10.200.0.100',
    port: 80,
    protocol: 'tcp',
    backends: [{ ip: '10.200.0.11' }, { ip: '10.200.0.12' }],
    ...over,
  };
}

/** The UserError a document fails with, as message + details; fails the test when it validates. */
function errorsOf(raw: unknown): { message: string; details: string[] } {
  try {
    validateServices(raw);
  } catch (err) {
    if (err instanceof UserError) return { message: err.message, details: err.details };
    throw err;
  }
  throw new Error('expected the document to be rejected');
}

/** The single error of a document with one service. */
function oneError(t: Pick<typeof tap, 'same'>, over: Record<string, unknown>, want: string): void {
  const { message, details } = errorsOf({ services: [svc(over)] });
  t.same({ message, details }, { message: 'services.json: 1 error', details: [want] }, want);
}

// ------------------------------------------------------------------------------------------------
// Examples: each must pass the validator and the schema

const EXAMPLES: Record<string, Json> = {
  // the design contract, verbatim
  contract: {
    services: [
      {
        name: 'web',
        vip: '10.200.0.100',
        port: 80,
        protocol: 'tcp',
        scheduler: 'maglev',
        persistence: 0,
        backends: [
          { ip: '10.200.0.11', weight: 1 },
          { ip: '10.200.0.12', weight: 2, mac: '02:00:00:00:00:12' },
        ],
        healthCheck: { type: 'tcp', port: 80, interval: 2, timeout: 1, rise: 2, fall: 3 },
      },
    ],
  },
  minimal: { services: [{ name: 'dns', vip: '10.200.0.53', port: 53, protocol: 'udp', backends: [] }] },
  empty: { services: [] },
  everything: {
    $schema: '../schema/services.schema.json',
    services: [
      {
        name: 'web-v6',
        vip: '2001:DB8:0:0::100',
        port: 443,
        protocol: 'tcp',
        scheduler: 'wlc',
        persistence: 300,
        persistenceNetmask: 64,
        backends: [
          { ip: '2001:db8::11', weight: 10, mac: '02-00-00-00-00-AA' },
          { ip: '2001:0db8::0012', weight: 0 },
        ],
        healthCheck: { type: 'http', port: 8080, path: '/healthz?full=1', expectStatus: 204, interval: 0.5, timeout: 0.25, rise: 1, fall: 1 },
      },
      {
        name: 'catch-all',
        vip: '10.200.0.100',
        port: 0,
        protocol: 'tcp',
        scheduler: 'sh',
        backends: [{ ip: '10.200.0.11' }],
        healthCheck: { port: 22 },
      },
      { name: 'web', vip: '10.200.0.100', port: 80, protocol: 'tcp', backends: [{ ip: '10.200.0.11' }] },
      { name: 'web-udp', vip: '10.200.0.100', port: 80, protocol: 'udp', backends: [{ ip: '10.200.0.11' }] },
      { name: 'unchecked', vip: '10.200.0.101', port: 0, protocol: 'udp', backends: [], healthCheck: { type: 'none' } },
    ],
    timeouts: { tcp: 3600, tcpFin: 60, udp: 30 },
    connTableSize: 65536,
  },
};

t.test('the design-contract example normalises with defaults filled in', async (t) => {
  const cfg = validateServices(EXAMPLES.contract);
  t.same(cfg.timeouts, { tcp: 900, tcpFin: 120, udp: 300 });
  t.equal(cfg.connTableSize, 1048576);
  t.equal(cfg.services.length, 1);
  const s = cfg.services[0]!;
  t.same(s, {
    name: 'web',
    vip: { family: 4, address: '10.200.0.100', bytes: Buffer.from([10, 200, 0, 100]) },
    port: 80,
    protocol: 'tcp',
    scheduler: 'maglev',
    persistence: 0,
    persistenceNetmask: 32,
    backends: [
      { ip: '10.200.0.11', family: 4, bytes: Buffer.from([10, 200, 0, 11]), weight: 1 },
      { ip: '10.200.0.12', family: 4, bytes: Buffer.from([10, 200, 0, 12]), weight: 2, mac: '02:00:00:00:00:12' },
    ],
    healthCheck: { type: 'tcp', port: 80, interval: 2, timeout: 1, rise: 2, fall: 3 },
  });
  t.notOk('mac' in s.backends[0]!, 'no mac key when none was given');
});

t.test('a minimal service gets every default', async (t) => {
  const cfg = validateServices(EXAMPLES.minimal);
  const s = cfg.services[0]!;
  t.equal(s.scheduler, 'maglev');
  t.equal(s.persistence, 0);
  t.equal(s.persistenceNetmask, 32);
  t.same(s.backends, []);
  t.same(s.healthCheck, { type: 'tcp', port: 53, interval: 2, timeout: 1, rise: 2, fall: 3 });
  t.same(validateServices(EXAMPLES.empty), {
    services: [],
    timeouts: { tcp: 900, tcpFin: 120, udp: 300 },
    connTableSize: 1048576,
    connRecordRate: 250000,
  });
});

t.test('everything given: canonical addresses, http defaults, port-0 services', async (t) => {
  const cfg = validateServices(EXAMPLES.everything);
  t.same(cfg.timeouts, { tcp: 3600, tcpFin: 60, udp: 30 });
  t.equal(cfg.connTableSize, 65536);
  const [v6, all, web, webUdp, unchecked] = cfg.services;
  t.same(v6!.vip, { family: 6, address: '2001:db8::100', bytes: Buffer.from('20010db8000000000000000000000100', 'hex') });
  t.same(
    v6!.backends.map((b) => [b.ip, b.family, b.weight, b.mac]),
    [
      ['2001:db8::11', 6, 10, '02:00:00:00:00:aa'],
      ['2001:db8::12', 6, 0, undefined],
    ],
  );
  t.equal(v6!.persistenceNetmask, 64);
  t.equal(v6!.persistence, 300);
  t.same(v6!.healthCheck, {
    type: 'http',
    port: 8080,
    path: '/healthz?full=1',
    expectStatus: 204,
    interval: 0.5,
    timeout: 0.25,
    rise: 1,
    fall: 1,
  });
  t.same(all!.healthCheck, { type: 'tcp', port: 22, interval: 2, timeout: 1, rise: 2, fall: 3 });
  t.equal(all!.port, 0);
  t.equal(web!.port, 80, 'a specific port next to a port-0 service on the same VIP is allowed');
  t.equal(webUdp!.protocol, 'udp', 'the same VIP and port with another protocol is allowed');
  t.same(unchecked!.healthCheck, { type: 'none', interval: 2, timeout: 1, rise: 2, fall: 3 });

  const http = validateServices({ services: [svc({ healthCheck: { type: 'http' } })] }).services[0]!;
  t.same(http.healthCheck, { type: 'http', port: 80, path: '/', expectStatus: 200, interval: 2, timeout: 1, rise: 2, fall: 3 });
  const v6default = validateServices({ services: [svc({ vip: '2001:db8::1', backends: [] })] }).services[0]!;
  t.equal(v6default.persistenceNetmask, 128);
});

// ------------------------------------------------------------------------------------------------
// Errors, one kind at a time, with their exact wording

t.test('addresses', async (t) => {
  oneError(
    t,
    { backends: [{ ip: '10.200.0.11' }, { ip: '10.200.0.300' }] },
    'services[0].backends[1].ip: "10.200.0.300" is not an IPv4 or IPv6 address',
  );
  oneError(t, { vip: 'fe80::1%eth0' }, 'services[0].vip: "fe80::1%eth0" is not an IPv4 or IPv6 address');
  oneError(
    t,
    { vip: '2001:db8::100', backends: [{ ip: '2001:db8::11' }, { ip: '10.200.0.12' }] },
    'services[0].backends[1].ip: "10.200.0.12" is IPv4 but the VIP "2001:db8::100" (services[0].vip) is IPv6',
  );
  oneError(
    t,
    { backends: [{ ip: '2001:db8::11' }] },
    'services[0].backends[0].ip: "2001:db8::11" is IPv6 but the VIP "10.200.0.100" (services[0].vip) is IPv4',
  );
  oneError(
    t,
    { backends: [{ ip: '10.200.0.11' }, { ip: '10.200.0.12' }, { ip: '10.200.0.11' }] },
    'services[0].backends[2].ip: "10.200.0.11" duplicates services[0].backends[0].ip',
  );
  oneError(
    t,
    { vip: '2001:db8::100', backends: [{ ip: '2001:db8::11' }, { ip: '2001:DB8:0::0011' }] },
    'services[0].backends[1].ip: "2001:DB8:0::0011" (2001:db8::11) duplicates services[0].backends[0].ip',
  );
  oneError(
    t,
    { backends: [{ ip: '10.200.0.100' }] },
    `services[0].backends[0].ip: "10.200.0.100" is the service's own VIP (services[0].vip); a backend must be another host`,
  );
  oneError(
    t,
    { vip: '::ffff:10.200.0.100', backends: [] },
    'services[0].vip: "::ffff:10.200.0.100" is an IPv4-mapped IPv6 address, write "10.200.0.100"',
  );
  oneError(t, { vip: '0.0.0.0' }, 'services[0].vip: "0.0.0.0" is the unspecified address');
  oneError(t, { vip: '::', backends: [] }, 'services[0].vip: "::" is the unspecified address');
  oneError(t, { vip: '239.1.1.1' }, 'services[0].vip: "239.1.1.1" is a multicast or broadcast address');
  oneError(
    t,
    { backends: [{ ip: '255.255.255.255' }] },
    'services[0].backends[0].ip: "255.255.255.255" is a multicast or broadcast address',
  );
  oneError(
    t,
    { vip: 10 },
    'services[0].vip: expected an IPv4 or IPv6 address string, found number 10',
  );
});

t.test('ports, protocols, schedulers and numbers', async (t) => {
  oneError(t, { port: 65536 }, 'services[0].port: 65536 is out of range (expected an integer 0-65535)');
  oneError(t, { port: -1 }, 'services[0].port: -1 is out of range (expected an integer 0-65535)');
  oneError(t, { port: '80' }, 'services[0].port: expected an integer 0-65535, found string "80"');
  oneError(t, { port: 80.5 }, 'services[0].port: expected an integer 0-65535, found number 80.5');
  oneError(t, { port: null }, 'services[0].port: expected an integer 0-65535, found null');
  oneError(t, { protocol: 'icmp' }, 'services[0].protocol: "icmp" is not one of "tcp", "udp"');
  oneError(t, { protocol: 'TCP' }, 'services[0].protocol: "TCP" is not one of "tcp", "udp" (did you mean "tcp"?)');
  oneError(t, { protocol: 6 }, 'services[0].protocol: expected one of "tcp", "udp", found number 6');
  oneError(
    t,
    { scheduler: 'random' },
    'services[0].scheduler: "random" is not one of "maglev", "wrr", "rr", "sh", "lc", "wlc"',
  );
  oneError(
    t,
    { scheduler: 'wrrr' },
    'services[0].scheduler: "wrrr" is not one of "maglev", "wrr", "rr", "sh", "lc", "wlc" (did you mean "wrr"?)',
  );
  oneError(
    t,
    { backends: [{ ip: '10.200.0.11', weight: 65536 }] },
    'services[0].backends[0].weight: 65536 is out of range (expected an integer 0-65535)',
  );
  oneError(
    t,
    { backends: [{ ip: '10.200.0.11', weight: -1 }] },
    'services[0].backends[0].weight: -1 is out of range (expected an integer 0-65535)',
  );
  oneError(
    t,
    { backends: [{ ip: '10.200.0.11', weight: 1.5 }] },
    'services[0].backends[0].weight: expected an integer 0-65535, found number 1.5',
  );
  oneError(t, { persistence: -5 }, 'services[0].persistence: -5 is out of range (expected an integer 0-4294967295)');
  oneError(
    t,
    { persistence: 60, persistenceNetmask: 33 },
    'services[0].persistenceNetmask: 33 is out of range for an IPv4 VIP (expected an integer 0-32)',
  );
  oneError(
    t,
    { vip: '2001:db8::1', backends: [], persistenceNetmask: 129 },
    'services[0].persistenceNetmask: 129 is out of range (expected an integer 0-128)',
  );
});

t.test('names', async (t) => {
  oneError(t, { name: 'Web' }, 'services[0].name: "Web" is not a name of a-z, 0-9 and "-", at most 32 characters');
  oneError(t, { name: 'web_1' }, 'services[0].name: "web_1" is not a name of a-z, 0-9 and "-", at most 32 characters');
  oneError(t, { name: '' }, 'services[0].name: must not be empty (expected a name of a-z, 0-9 and "-", at most 32 characters)');
  oneError(
    t,
    { name: 'a'.repeat(33) },
    `services[0].name: "${'a'.repeat(33)}" is 33 characters long, at most 32 are allowed`,
  );
  t.equal(validateServices({ services: [svc({ name: 'a'.repeat(32) })] }).services[0]!.name.length, 32);
  const { details } = errorsOf({ services: [svc(), svc({ vip: '10.200.0.101' })] });
  t.same(details, ['services[1].name: "web" is already used by services[0]']);
});

t.test('duplicate VIP+port+protocol', async (t) => {
  const { message, details } = errorsOf({
    services: [
      svc({ name: 'a', vip: '2001:db8::100', backends: [] }),
      svc({ name: 'b', vip: '2001:db8::100', port: 0, healthCheck: { port: 80 }, backends: [] }),
      svc({ name: 'c', vip: '2001:DB8:0::100', backends: [] }),
    ],
  });
  t.equal(message, 'services.json: 1 error');
  t.same(details, ['services[2]: vip "2001:db8::100" port 80 protocol "tcp" is already defined by services[0] ("a")']);
});

t.test('MAC addresses', async (t) => {
  oneError(
    t,
    { backends: [{ ip: '10.200.0.11', mac: '02:00:00:00:12' }] },
    'services[0].backends[0].mac: "02:00:00:00:12" is not a MAC address like "02:00:00:00:00:12"',
  );
  oneError(
    t,
    { backends: [{ ip: '10.200.0.11', mac: '01:00:5e:00:00:01' }] },
    'services[0].backends[0].mac: "01:00:5e:00:00:01" is not a unicast MAC address',
  );
  oneError(
    t,
    { backends: [{ ip: '10.200.0.11', mac: '00:00:00:00:00:00' }] },
    'services[0].backends[0].mac: "00:00:00:00:00:00" is not a unicast MAC address',
  );
});

t.test('health checks', async (t) => {
  oneError(
    t,
    { healthCheck: { interval: 2, timeout: 3 } },
    'services[0].healthCheck.timeout: 3 must not exceed interval 2',
  );
  oneError(t, { healthCheck: { timeout: 5 } }, 'services[0].healthCheck.timeout: 5 must not exceed interval 2');
  oneError(
    t,
    { healthCheck: { interval: 0 } },
    'services[0].healthCheck.interval: 0 is out of range (expected a number > 0 and <= 3600)',
  );
  oneError(t, { healthCheck: { rise: 0 } }, 'services[0].healthCheck.rise: 0 is out of range (expected an integer 1-100)');
  oneError(
    t,
    { healthCheck: { type: 'icmp' } },
    'services[0].healthCheck.type: "icmp" is not one of "tcp", "http", "none"',
  );
  oneError(
    t,
    { healthCheck: { path: '/x' } },
    'services[0].healthCheck.path: only allowed when type is "http", not "tcp"',
  );
  oneError(
    t,
    { healthCheck: { type: 'none', expectStatus: 200 } },
    'services[0].healthCheck.expectStatus: only allowed when type is "http", not "none"',
  );
  oneError(
    t,
    { healthCheck: { type: 'http', path: 'healthz' } },
    'services[0].healthCheck.path: "healthz" is not a path starting with "/", printable ASCII without spaces',
  );
  oneError(
    t,
    { healthCheck: { type: 'http', path: '/a b' } },
    'services[0].healthCheck.path: "/a b" is not a path starting with "/", printable ASCII without spaces',
  );
  oneError(
    t,
    { healthCheck: { type: 'http', expectStatus: 99 } },
    'services[0].healthCheck.expectStatus: 99 is out of range (expected an integer 100-599)',
  );
  oneError(
    t,
    { port: 0 },
    'services[0].healthCheck.port: missing, required because services[0].port is 0 (all ports); give a port or use "type": "none"',
  );
  oneError(
    t,
    { port: 0, healthCheck: { type: 'http' } },
    'services[0].healthCheck.port: missing, required because services[0].port is 0 (all ports); give a port or use "type": "none"',
  );
  oneError(t, { healthCheck: { port: 0 } }, 'services[0].healthCheck.port: 0 is out of range (expected an integer 1-65535)');
  oneError(t, { healthCheck: 'tcp' }, 'services[0].healthCheck: expected an object, found string "tcp"');
});

t.test('unknown keys, with suggestions', async (t) => {
  oneError(
    t,
    { backends: [{ ip: '10.200.0.11', weigth: 2 }] },
    'services[0].backends[0].weigth: unknown key (did you mean "weight"?)',
  );
  oneError(
    t,
    { weigth: 2 },
    'services[0].weigth: unknown key (did you mean "weight"? It belongs in each entry of services[0].backends)',
  );
  oneError(t, { weight: 2 }, 'services[0].weight: unknown key ("weight" belongs in each entry of services[0].backends)');
  oneError(t, { interval: 5 }, 'services[0].interval: unknown key ("interval" belongs in services[0].healthCheck)');
  oneError(t, { healthcheck: {} }, 'services[0].healthcheck: unknown key (did you mean "healthCheck"?)');
  t.same(errorsOf({ services: [svc({ Protocol: 'tcp', protocol: undefined })] }).details, [
    'services[0].Protocol: unknown key (did you mean "protocol"?)',
    'services[0].protocol: missing (expected one of "tcp", "udp")',
  ]);
  oneError(
    t,
    { backends: [{ ip: '10.200.0.11', port: 8080 }] },
    'services[0].backends[0].port: unknown key (direct routing cannot change the destination port: backends receive packets on the service port)',
  );
  oneError(
    t,
    { 'load balancer': true },
    'services[0]["load balancer"]: unknown key, expected one of: name, vip, port, protocol, scheduler, persistence, persistenceNetmask, backends, healthCheck',
  );
  oneError(
    t,
    { healthCheck: { intervall: 3 } },
    'services[0].healthCheck.intervall: unknown key (did you mean "interval"?)',
  );
  const proto = errorsOf(JSON.parse('{"services": [{"name": "a", "vip": "10.0.0.1", "port": 1, "protocol": "tcp", "backends": [{"ip": "10.0.0.2", "constructor": 1, "__proto__": {}}]}]}'));
  t.same(proto.details, [
    'services[0].backends[0].constructor: unknown key, expected one of: ip, weight, mac',
    'services[0].backends[0].__proto__: unknown key, expected one of: ip, weight, mac',
  ]);
  const root = errorsOf({ services: [], servces: [], timeout: { tcp: 1 }, timeouts: { tcp: 1, udpp: 2 } });
  t.same(root.details, [
    'servces: unknown key (did you mean "services"?)',
    'timeout: unknown key (did you mean "timeouts"?)',
    'timeouts.udpp: unknown key (did you mean "udp"?)',
  ]);
});

t.test('wrong types and missing fields', async (t) => {
  t.same(errorsOf([]).details, ['(top level): expected an object, found an array']);
  t.same(errorsOf({}).details, ['services: missing (expected an array)']);
  t.same(errorsOf({ services: {} }).details, ['services: expected an array, found an object']);
  t.same(errorsOf({ services: [42] }).details, ['services[0]: expected an object, found number 42']);
  t.same(errorsOf({ services: [{}] }).details, [
    'services[0].name: missing (expected a name of a-z, 0-9 and "-", at most 32 characters)',
    'services[0].vip: missing (expected an IPv4 or IPv6 address string)',
    'services[0].port: missing (expected an integer 0-65535)',
    'services[0].protocol: missing (expected one of "tcp", "udp")',
    'services[0].backends: missing (expected an array)',
  ]);
  oneError(t, { backends: { ip: '10.200.0.11' } }, 'services[0].backends: expected an array, found an object');
  oneError(t, { backends: ['10.200.0.11'] }, 'services[0].backends[0]: expected an object, found string "10.200.0.11"');
  oneError(t, { backends: [{ weight: 1 }] }, 'services[0].backends[0].ip: missing (expected an IPv4 or IPv6 address string)');
  t.same(errorsOf({ services: [], timeouts: { tcp: 0, tcpFin: '60', udp: 1.5 }, connTableSize: 1000 }).details, [
    'connTableSize: 1000 is out of range (expected an integer 1024-16777216)',
    'timeouts.tcp: 0 is out of range (expected an integer 1-4294967295)',
    'timeouts.tcpFin: expected an integer 1-4294967295, found string "60"',
    'timeouts.udp: expected an integer 1-4294967295, found number 1.5',
  ]);
  t.same(errorsOf({ services: [], timeouts: [] }).details, ['timeouts: expected an object, found an array']);
  t.same(errorsOf({ services: [], $schema: 1 }).details, ['$schema: expected a string, found number 1']);
});

t.test('all errors are reported together, in document order', async (t) => {
  const { message, details } = errorsOf({
    services: [
      svc({
        vip: '10.200.0.300',
        port: 70000,
        backends: [{ ip: '10.200.0.11', weigth: 1 }, { ip: '10.200.0.12', mac: 'nope' }],
      }),
      svc({ protocol: 'sctp', healthCheck: { interval: 1, timeout: 2 } }),
    ],
  });
  t.same(details, [
    'services[0].vip: "10.200.0.300" is not an IPv4 or IPv6 address',
    'services[0].port: 70000 is out of range (expected an integer 0-65535)',
    'services[0].backends[0].weigth: unknown key (did you mean "weight"?)',
    'services[0].backends[1].mac: "nope" is not a MAC address like "02:00:00:00:00:12"',
    'services[1].name: "web" is already used by services[0]',
    'services[1].protocol: "sctp" is not one of "tcp", "udp"',
    'services[1].healthCheck.timeout: 2 must not exceed interval 1',
  ]);
  t.equal(message, 'services.json: 7 errors');
  // the source name is the caller's
  t.throws(() => validateServices({}, '/etc/xdpvs/services.json'), { message: '/etc/xdpvs/services.json: 1 error' });
});

t.test('limits on the number of services and backends', async (t) => {
  const many = Array.from({ length: 10001 }, (_, i) => svc({ name: `s${i}`, port: i + 1 > 65535 ? 1 : i + 1, backends: [] }));
  t.same(errorsOf({ services: many }).details, ['services: 10001 services, at most 10000 are supported']);
  t.equal(validateServices({ services: many.slice(0, 10000) }).services.length, 10000);

  const ips = (base: number, n: number) =>
    Array.from({ length: n }, (_, i) => ({ ip: `10.${base}.${(i >> 8) & 255}.${i & 255}` }));
  // 65536 distinct addresses need a /16 each; use a different VIP per service so no backend is a VIP
  const a = svc({ name: 'a', vip: '192.168.0.1', backends: ips(1, 32768) });
  const b = svc({ name: 'b', vip: '192.168.0.2', backends: ips(2, 32768) });
  t.equal(validateServices({ services: [a, b] }).services[1]!.backends.length, 32768);
  const c = svc({ name: 'c', vip: '192.168.0.3', backends: [{ ip: '10.3.0.1' }] });
  t.same(errorsOf({ services: [a, b, c] }).details, ['services: 65537 backends in all, at most 65536 are supported']);
});

// ------------------------------------------------------------------------------------------------
// The file: JSON syntax, duplicate keys, read errors

t.test('JSON syntax errors name the file and line:column', async (t) => {
  const dir = t.testdir({
    'trailing-comma.json': '{\n  "services": [\n    { "name": "a", }\n  ]\n}\n',
    'missing-comma.json': '{\n  "services": [\n    { "name": "a"\n      "vip": "10.0.0.1" }\n  ]\n}\n',
    'bare-word.json': '{ "services": [ { "name": tru } ] }',
    'comment.json': '{\n  // services\n  "services": []\n}\n',
    'empty.json': '',
    'truncated.json': '{ "services": [',
    'single-quotes.json': "{ 'services': [] }",
    'two-values.json': '{ "services": [] } {}',
    'leading-zero.json': '{ "services": [], "connTableSize": 01024 }',
    'newline-in-string.json': '{ "services": [ { "name": "we\nb" } ] }',
  });
  const cases: Array<[string, string, string[]]> = [
    ['trailing-comma.json', `3:18: invalid JSON: trailing comma before '}'`, ['    { "name": "a", }', '                 ^']],
    [
      'missing-comma.json',
      `4:7: invalid JSON: expected ',' or '}' after property value, found '"'`,
      ['      "vip": "10.0.0.1" }', '      ^'],
    ],
    [
      'bare-word.json',
      '1:27: invalid JSON: expected a value, found "tru" (strings must be in double quotes)',
      ['{ "services": [ { "name": tru } ] }', '                          ^'],
    ],
    [
      'comment.json',
      '2:3: invalid JSON: expected a double-quoted property name, found a comment (JSON has no comments)',
      ['  // services', '  ^'],
    ],
    ['empty.json', '1:1: invalid JSON: expected a value, found end of file', ['', '^']],
    ['truncated.json', '1:16: invalid JSON: expected a value, found end of file', ['{ "services": [', '               ^']],
    ['single-quotes.json', '1:3: invalid JSON: property names must be in double quotes', ["{ 'services': [] }", '  ^']],
    [
      'two-values.json',
      `1:20: invalid JSON: expected end of file after the JSON value, found '{'`,
      ['{ "services": [] } {}', '                   ^'],
    ],
    [
      'leading-zero.json',
      '1:36: invalid JSON: invalid number "01024"',
      ['{ "services": [], "connTableSize": 01024 }', '                                   ^'],
    ],
    [
      'newline-in-string.json',
      '1:27: invalid JSON: unterminated string (line break inside a string)',
      ['{ "services": [ { "name": "we', '                          ^'],
    ],
  ];
  const long = JSON.stringify({ services: Array.from({ length: 20 }, (_, i) => svc({ name: `s${i}`, port: i + 1 })) });
  const broken = long.replace('"s10"', '"s10",');
  const err = (() => {
    try {
      parseServicesText(broken, 'min.json');
    } catch (e) {
      return e as UserError;
    }
    return undefined;
  })();
  t.match(err?.message, /^min\.json:1:\d+: invalid JSON: expected a double-quoted property name, found ','$/, 'minified');
  const [line, caret] = err!.details;
  t.ok(line!.length <= 106 && line!.startsWith('...') && line!.endsWith('...'), 'a long line is cut around the error');
  t.equal(line!.slice(caret!.length - 7, caret!.length), '"s10",,', 'the caret still points at the second comma');

  for (const [file, msg, details] of cases) {
    const path = join(dir, file);
    t.throws(() => parseServicesFile(path), { name: 'UserError', message: `${path}:${msg}`, details }, file);
  }
});

t.test('a key given twice in one object is an error', async (t) => {
  const text = '{\n  "services": [\n    { "name": "web", "vip": "10.200.0.100", "port": 80, "protocol": "tcp",\n      "backends": [ { "ip": "10.200.0.11", "weight": 1, "weight": 2 } ], "port": 81 }\n  ]\n}\n';
  t.throws(() => parseServicesText(text, 'dup.json'), {
    message: 'dup.json: 2 errors',
    details: [
      'services[0].backends[0].weight: key appears more than once (line 4:44 and line 4:57); JSON keeps only the last',
      'services[0].port: key appears more than once (line 3:45 and line 4:74); JSON keeps only the last',
    ],
  });
});

t.test('reading files', async (t) => {
  const dir = t.testdir({
    'ok.json': '\ufeff' + JSON.stringify(EXAMPLES.contract, null, 2),
    'bad.json': JSON.stringify({ services: [svc({ port: 99999 })] }),
    sub: {},
  });
  t.equal(parseServicesFile(join(dir, 'ok.json')).services[0]!.name, 'web', 'a UTF-8 BOM is ignored');
  const bad = join(dir, 'bad.json');
  t.throws(() => parseServicesFile(bad), {
    message: `${bad}: 1 error`,
    details: ['services[0].port: 99999 is out of range (expected an integer 0-65535)'],
  });
  const missing = join(dir, 'nope.json');
  t.throws(() => parseServicesFile(missing), { name: 'UserError', message: `${missing}: no such file` });
  t.throws(() => parseServicesFile(join(dir, 'sub')), {
    name: 'UserError',
    message: `${join(dir, 'sub')}: is a directory, expected a JSON file`,
  });
});

// ------------------------------------------------------------------------------------------------
// The schema: same keys, types, ranges and defaults as the validator's table, and the examples
// (and every services file under examples/) pass both

interface Schema {
  [k: string]: unknown;
  type?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  $defs?: Record<string, Schema>;
  $ref?: string;
  items?: Schema;
}

const KIND_SCHEMA: Record<ObjectKind, Schema> = {
  config: SCHEMA,
  service: SCHEMA.$defs!.service!,
  backend: SCHEMA.$defs!.backend!,
  healthCheck: SCHEMA.$defs!.healthCheck!,
  timeouts: SCHEMA.$defs!.timeouts!,
};

t.test('the schema describes exactly the validator table', async (t) => {
  t.equal(SCHEMA.$schema, 'https://json-schema.org/draft/2020-12/schema');
  t.same(Object.keys(SCHEMA.$defs!).sort(), Object.keys(FIELDS).filter((k) => k !== 'config').sort());
  for (const kind of Object.keys(FIELDS) as ObjectKind[]) {
    const table = FIELDS[kind] as Record<string, FieldSpec>;
    const schema = KIND_SCHEMA[kind];
    t.equal(schema.type, 'object', `${kind}: type`);
    t.equal(schema.additionalProperties, false, `${kind}: additionalProperties`);
    t.equal(typeof schema.description, 'string', `${kind}: description`);
    t.same(Object.keys(schema.properties!).sort(), Object.keys(table).sort(), `${kind}: the same keys`);
    t.same(
      [...(schema.required ?? [])].sort(),
      Object.keys(table)
        .filter((k) => table[k]!.required)
        .sort(),
      `${kind}: the same required keys`,
    );
    for (const [key, spec] of Object.entries(table)) {
      const prop = schema.properties![key];
      const where = `${kind}.${key}`;
      if (!prop) continue; // reported by the key comparison
      t.ok(typeof prop.description === 'string' && prop.description.length > 10, `${where}: has a description`);
      if (spec.ref) {
        t.equal(prop.$ref, `#/$defs/${spec.ref}`, `${where}: $ref`);
        continue;
      }
      t.equal(prop.type, spec.type, `${where}: type`);
      if (spec.items) t.same(prop.items, { $ref: `#/$defs/${spec.items}` }, `${where}: items`);
      for (const kw of ['enum', 'minimum', 'maximum', 'exclusiveMinimum', 'default', 'pattern', 'maxLength'] as const) {
        if (kw === 'pattern' && spec.format === 'mac') continue; // checked by parseMac, compared below
        t.same(prop[kw], spec[kw], `${where}: ${kw}`);
      }
      if (spec.format === 'ip') t.same(prop.anyOf, [{ format: 'ipv4' }, { format: 'ipv6' }], `${where}: ip format`);
      if (spec.format === 'mac') {
        const re = new RegExp(prop.pattern as string);
        for (const s of ['02:00:00:00:00:12', '02-00-00-00-00-12', 'AB:cd:EF:01:23:45', '02:00-00:00:00:12', '02:00:00:00:12', '0200.0000.0012', 'x']) {
          t.equal(re.test(s), parseMac(s) !== null, `${where}: the schema pattern and parseMac agree on ${s}`);
        }
      }
    }
  }
});

/**
 * A validator for exactly the JSON Schema keywords services.schema.json uses; it throws on any
 * other keyword so that the schema cannot silently outgrow it.
 */
function schemaErrors(schema: Schema | boolean, v: unknown, path = '$'): string[] {
  if (schema === true) return [];
  if (schema === false) return [`${path}: not allowed`];
  const errs: string[] = [];
  const ANNOTATIONS = new Set(['$schema', 'title', 'description', 'default', 'examples', '$defs']);
  const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  for (const [kw, arg] of Object.entries(schema)) {
    if (ANNOTATIONS.has(kw)) continue;
    switch (kw) {
      case '$ref': {
        const name = /^#\/\$defs\/(\w+)$/.exec(arg as string)![1]!;
        errs.push(...schemaErrors(SCHEMA.$defs![name]!, v, path));
        break;
      }
      case 'type': {
        const ok =
          arg === 'object'
            ? isObject(v)
            : arg === 'array'
              ? Array.isArray(v)
              : arg === 'integer'
                ? Number.isInteger(v)
                : arg === 'number'
                  ? typeof v === 'number'
                  : typeof v === arg;
        if (!ok) errs.push(`${path}: not ${arg}`);
        break;
      }
      case 'properties':
        if (isObject(v)) {
          for (const [k, s] of Object.entries(arg as Record<string, Schema>)) {
            if (k in v) errs.push(...schemaErrors(s, v[k], `${path}.${k}`));
          }
        }
        break;
      case 'additionalProperties':
        if (isObject(v)) {
          for (const k of Object.keys(v)) {
            if (!(k in (schema.properties ?? {}))) errs.push(...schemaErrors(arg as Schema, v[k], `${path}.${k}`));
          }
        }
        break;
      case 'required':
        if (isObject(v)) for (const k of arg as string[]) if (!(k in v)) errs.push(`${path}.${k}: required`);
        break;
      case 'items':
        if (Array.isArray(v)) v.forEach((x, i) => errs.push(...schemaErrors(arg as Schema, x, `${path}[${i}]`)));
        break;
      case 'maxItems':
        if (Array.isArray(v) && v.length > (arg as number)) errs.push(`${path}: too many items`);
        break;
      case 'enum':
        if (!(arg as unknown[]).includes(v)) errs.push(`${path}: not in enum`);
        break;
      case 'const':
        if (v !== arg) errs.push(`${path}: not ${JSON.stringify(arg)}`);
        break;
      case 'minimum':
        if (typeof v === 'number' && v < (arg as number)) errs.push(`${path}: < minimum`);
        break;
      case 'maximum':
        if (typeof v === 'number' && v > (arg as number)) errs.push(`${path}: > maximum`);
        break;
      case 'exclusiveMinimum':
        if (typeof v === 'number' && v <= (arg as number)) errs.push(`${path}: <= exclusiveMinimum`);
        break;
      case 'maxLength':
        if (typeof v === 'string' && [...v].length > (arg as number)) errs.push(`${path}: too long`);
        break;
      case 'pattern':
        if (typeof v === 'string' && !new RegExp(arg as string, 'u').test(v)) errs.push(`${path}: pattern`);
        break;
      case 'format':
        if (typeof v === 'string' && !(arg === 'ipv4' ? isIPv4(v) : arg === 'ipv6' ? isIPv6(v) : true)) {
          errs.push(`${path}: not ${arg}`);
        }
        break;
      case 'anyOf':
        if (!(arg as Schema[]).some((s) => schemaErrors(s, v, path).length === 0)) errs.push(`${path}: no anyOf branch`);
        break;
      case 'if': {
        const branch = schemaErrors(arg as Schema, v, path).length === 0 ? schema.then : schema.else;
        if (branch !== undefined) errs.push(...schemaErrors(branch as Schema, v, path));
        break;
      }
      case 'then':
      case 'else':
        break;
      default:
        throw new Error(`the test's schema validator does not know the keyword ${kw} (at ${path})`);
    }
  }
  return errs;
}

t.test('the examples pass the schema', async (t) => {
  for (const [name, doc] of Object.entries(EXAMPLES)) {
    t.same(schemaErrors(SCHEMA, doc), [], name);
    t.doesNotThrow(() => validateServices(doc), name);
  }
});

t.test('documents the schema can express are rejected by both', async (t) => {
  const bad: Record<string, unknown> = {
    'unknown key': { services: [svc({ weigth: 1 })] },
    'unknown backend key': { services: [svc({ backends: [{ ip: '10.200.0.11', port: 1 }] })] },
    'bad vip': { services: [svc({ vip: '10.200.0.300' })] },
    'port range': { services: [svc({ port: 65536 })] },
    'protocol': { services: [svc({ protocol: 'sctp' })] },
    'scheduler': { services: [svc({ scheduler: 'dh' })] },
    'weight': { services: [svc({ backends: [{ ip: '10.200.0.11', weight: 1.5 }] })] },
    'mac': { services: [svc({ backends: [{ ip: '10.200.0.11', mac: '02:00:00:00:12' }] })] },
    'name': { services: [svc({ name: 'Web' })] },
    'long name': { services: [svc({ name: 'a'.repeat(33) })] },
    'port 0 without health check': { services: [svc({ port: 0 })] },
    'port 0 with a portless tcp check': { services: [svc({ port: 0, healthCheck: { type: 'tcp' } })] },
    'path on a tcp check': { services: [svc({ healthCheck: { path: '/' } })] },
    'status on a none check': { services: [svc({ healthCheck: { type: 'none', expectStatus: 200 } })] },
    'interval 0': { services: [svc({ healthCheck: { interval: 0 } })] },
    'no services': {},
    'connTableSize': { services: [], connTableSize: 1 },
    'timeouts': { services: [], timeouts: { tcp: 0 } },
    'missing backends': { services: [svc({ backends: undefined })] },
  };
  for (const [name, doc] of Object.entries(bad)) {
    const plain = JSON.parse(JSON.stringify(doc)) as unknown;
    t.not(schemaErrors(SCHEMA, plain).length, 0, `${name}: rejected by the schema`);
    t.throws(() => validateServices(plain), { name: 'UserError' }, `${name}: rejected by the validator`);
  }
});

t.test('services files under examples/ pass the validator and the schema', async (t) => {
  const dir = join(ROOT, 'examples');
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.json')) : [];
  let checked = 0;
  for (const f of files) {
    const path = join(dir, f);
    const doc = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    if (typeof doc !== 'object' || doc === null || !('services' in doc)) continue; // not a services file
    checked++;
    t.doesNotThrow(() => parseServicesFile(path), f);
    t.same(schemaErrors(SCHEMA, doc), [], `${f}: schema`);
  }
  t.pass(`${checked} example services file(s) checked`);
});
