import t from 'tap';
import { openTestDatapath, type TestDatapath } from './helpers/datapath.js';
import { addr, flowFrame, TCP_ACK, TCP_FIN, TCP_SYN, type FlowFrame } from '../src/net/frames.js';
import { u32Key, LAYOUTS } from '../src/abi.js';
import { hashFlow, ringSlot } from '../src/sched/hash.js';
import { prng } from './helpers/prng.js';

/*
 * The schedulers and persistence, through the real program on crafted frames: where new flows
 * go, that established flows stay, and that persistence holds a client until it expires.
 */
const mac = (n: number) => `02:00:00:00:${n.toString(16).padStart(2, '0')}:01`;
const backends = (base: number, weights: number[]) => weights.map((weight, j) => ({ ip: `10.2.${base}.${j + 1}`, weight, mac: mac(base * 16 + j) }));
const service = (n: number, scheduler: string, weights: number[], extra: object = {}) => ({
  name: `${scheduler}-${n}`,
  vip: `10.1.0.${n}`,
  port: 80,
  protocol: 'tcp',
  scheduler,
  backends: backends(n, weights),
  healthCheck: { type: 'none' },
  ...extra,
});
const CONFIG = {
  services: [
    service(1, 'wrr', [1, 2, 3]),
    service(2, 'rr', [1, 5, 1]),
    service(3, 'lc', [1, 1, 1]),
    service(4, 'wlc', [1, 2, 3]),
    service(5, 'maglev', [1, 1, 1], { persistence: 300 }),
    {
      name: 'sticky6', vip: 'fd00:1::6', port: 443, protocol: 'tcp', scheduler: 'maglev', persistence: 60, persistenceNetmask: 64,
      backends: [1, 2, 3, 4].map((j) => ({ ip: `fd00:2::${j}`, weight: 1, mac: mac(0x60 + j) })), healthCheck: { type: 'none' },
    },
  ],
};

const { dp, cleanup } = openTestDatapath(CONFIG);
t.teardown(cleanup);

const rand = prng(0x5c4ed);
const client = () => `192.0.2.${1 + (rand() % 250)}`;
const port = () => 1024 + (rand() % 60000);

/** Sends a frame and returns the IP of the backend whose MAC it went to. */
function send(d: TestDatapath, f: FlowFrame): string {
  const r = d.run(flowFrame(f));
  if (r.verdict !== 'TX') throw new Error(`expected TX, got ${r.verdict}`);
  return d.backendByMac(r.out.subarray(0, 6))!.ip;
}
const syn = (dst: string, src = client(), sport = port(), dport = 80): FlowFrame => ({ src, dst, proto: 'tcp', sport, dport, flags: TCP_SYN });
const shares = (ips: string[]) => {
  const n = new Map<string, number>();
  for (const ip of ips) n.set(ip, (n.get(ip) ?? 0) + 1);
  return (ip: string) => (n.get(ip) ?? 0) / ips.length;
};
const setActive = (index: number, n: number) => {
  const v = Buffer.alloc(8);
  v.writeBigInt64LE(BigInt(n));
  dp.dp.maps.backend_active.update(u32Key(index), v);
};
const active = (index: number) => Number(dp.dp.maps.backend_active.lookup(u32Key(index))!.readBigInt64LE(0));

t.test('wrr: new flows follow the weights, interleaved; established flows stay', (t) => {
  const flows = Array.from({ length: 6000 }, () => syn('10.1.0.1'));
  const got = flows.map((f) => send(dp, f));
  const share = shares(got);
  [1, 2, 3].forEach((w, j) => t.ok(Math.abs(share(`10.2.1.${j + 1}`) - w / 6) < 0.01, `weight ${w}: ${share(`10.2.1.${j + 1}`).toFixed(3)}`));
  let run = 1;
  let longest = 1;
  for (let i = 1; i < got.length; i++) longest = Math.max(longest, (run = got[i] === got[i - 1] ? run + 1 : 1));
  t.ok(longest <= 3, `no long runs of one backend (longest ${longest})`);
  const moved = flows.slice(0, 300).filter((f, i) => send(dp, { ...f, flags: TCP_ACK }) !== got[i]);
  t.equal(moved.length, 0, 'every established flow stays where its SYN went');
  t.end();
});

t.test('rr: equal turns whatever the weights', (t) => {
  const got = Array.from({ length: 900 }, () => send(dp, syn('10.1.0.2')));
  const counts = [1, 2, 3].map((j) => got.filter((ip) => ip === `10.2.2.${j}`).length);
  t.ok(Math.max(...counts) - Math.min(...counts) <= 2, `turns ${counts.join('/')}`);
  t.end();
});

t.test('lc: new flows avoid the backend with the most active flows; FIN closes count down', (t) => {
  const [a, b, c] = [1, 2, 3].map((j) => dp.backendIndex('lc-3', `10.2.3.${j}`));
  setActive(a!, 1000);
  setActive(b!, 0);
  setActive(c!, 0);
  // 1,500 flows leave the idle two below 1,000 active each: while they are, the busy backend
  // wins only when it is drawn as both candidates (1/9)
  const share = shares(Array.from({ length: 1500 }, () => send(dp, syn('10.1.0.3'))));
  t.ok(share('10.2.3.1') < 0.16, `the busy backend gets ${share('10.2.3.1').toFixed(3)} (equal share would be 0.333)`);
  const f = syn('10.1.0.3');
  const ip = send(dp, f);
  const index = dp.backendIndex('lc-3', ip);
  const before = active(index);
  send(dp, { ...f, flags: TCP_FIN | TCP_ACK });
  t.equal(active(index), before - 1, 'a FIN of a recorded flow counts it out');
  send(dp, { ...f, flags: TCP_FIN | TCP_ACK });
  t.equal(active(index), before - 1, 'only once');
  t.end();
});

t.test('wlc: active flows end up in proportion to weight', (t) => {
  const index = [1, 2, 3].map((j) => dp.backendIndex('wlc-4', `10.2.4.${j}`));
  index.forEach((i) => setActive(i, 0));
  const share = shares(Array.from({ length: 3000 }, () => send(dp, syn('10.1.0.4'))));
  [1, 2, 3].forEach((w, j) => t.ok(Math.abs(share(`10.2.4.${j + 1}`) - w / 6) < 0.03, `weight ${w} gets ${share(`10.2.4.${j + 1}`).toFixed(3)} of new flows`));
  const perWeight = index.map((i, j) => active(i) / (j + 1));
  t.ok(Math.max(...perWeight) - Math.min(...perWeight) <= 10, `active flows per unit of weight: ${perWeight.map((x) => x.toFixed(0)).join('/')}`);
  // a backend far above its share gets new flows only when drawn as both candidates
  setActive(index[2]!, 100000);
  const after = shares(Array.from({ length: 1000 }, () => send(dp, syn('10.1.0.4'))));
  t.ok(after('10.2.4.3') < 0.35, `the overloaded weight-3 backend gets ${after('10.2.4.3').toFixed(3)} (drawn twice: 0.25)`);
  t.end();
});

t.test('persistence: a client stays on one backend across connections until it expires', (t) => {
  const src = '198.51.100.7';
  const first = send(dp, syn('10.1.0.5', src, 40000));
  const others = Array.from({ length: 50 }, (_, i) => send(dp, syn('10.1.0.5', src, 40001 + i)));
  t.same(new Set(others), new Set([first]), 'fifty new connections from the client: one backend');

  // a port whose own hash would choose another backend proves persistence chose it
  const table = dp.expectedRing('maglev-5');
  const byHash = (sport: number) => dp.backendAt(table[ringSlot(hashFlow({ saddr: addr(src), daddr: addr('10.1.0.5'), sport, dport: 80, proto: 6 }), table.length)]!)!.ip;
  const sport = Array.from({ length: 200 }, (_, i) => 41000 + i).find((p) => byHash(p) !== first)!;
  t.equal(send(dp, syn('10.1.0.5', src, sport)), first, 'persistence wins over the hash');

  // age every persistence entry past its timeout
  for (const [k, v] of dp.dp.maps.persist.entries()) {
    v.writeBigUInt64LE(1n, LAYOUTS.xdpvs_persist.fields.last_seen_ns);
    dp.dp.maps.persist.update(k, v);
  }
  t.equal(send(dp, syn('10.1.0.5', src, sport + 1000)), byHash(sport + 1000), 'after the timeout the scheduler chooses again');
  t.end();
});

t.test('persistenceNetmask groups clients by prefix', (t) => {
  const a = send(dp, syn('fd00:1::6', 'fd00:99:0:1::10', 50000, 443));
  const sameNet = Array.from({ length: 30 }, (_, i) => send(dp, syn('fd00:1::6', `fd00:99:0:1::${(0x20 + i).toString(16)}`, 50001 + i, 443)));
  t.same(new Set(sameNet), new Set([a]), 'clients in one /64 share a backend');
  const otherNets = new Set(Array.from({ length: 40 }, (_, i) => send(dp, syn('fd00:1::6', `fd00:99:0:${(0x100 + i).toString(16)}::10`, 52000 + i, 443))));
  t.ok(otherNets.size > 1, `clients in other /64s spread (${otherNets.size} backends)`);
  t.end();
});

t.test('a persistent client follows its backend through a drain, as IPVS keeps quiescent servers', (t) => {
  const src = '198.51.100.77';
  const ip = send(dp, syn('10.1.0.5', src, 30000));
  const config = structuredClone(CONFIG);
  config.services[4]!.backends.find((b) => b.ip === ip)!.weight = 0;
  dp.update(config);
  t.equal(send(dp, syn('10.1.0.5', src, 30001)), ip, 'drained, yet the persistent client keeps it');
  t.not(send(dp, syn('10.1.0.5', '198.51.100.200', 30002)), undefined);
  t.end();
});


t.test('a SYN flood cannot push recorded flows out faster than connRecordRate', (t) => {
  // the same flood against a table of 1,024 entries holding 150 established flows
  const run = (connRecordRate: number) => {
    const o = openTestDatapath({ ...CONFIG, connTableSize: 1024, connRecordRate });
    try {
      const d = o.dp;
      const established = Array.from({ length: 150 }, (_, i) => syn('10.1.0.1', '203.0.113.1', 20000 + i));
      for (const f of established) send(d, f);
      const recorded = () => established.filter((f) => d.conn({ family: 4, saddr: addr(f.src), daddr: addr(f.dst), sport: f.sport, dport: 80, proto: 6 })).length;
      const before = recorded();
      const spoofed = Array.from({ length: 5000 }, () => syn('10.1.0.1'));
      const started = Date.now();
      const forwarded = spoofed.filter((f) => d.run(flowFrame(f)).verdict === 'TX').length;
      return { before, after: recorded(), forwarded, unrecorded: d.total(3), seconds: (Date.now() - started) / 1000, size: d.connCount() };
    } finally {
      o.cleanup();
    }
  };
  const capped = run(200);
  t.equal(capped.forwarded, 5000, 'every SYN is still forwarded');
  t.equal(capped.before, 150, 'the established flows were recorded');
  // 200 a second with a second's burst: 50 left after the established ones, plus the refill
  t.ok(capped.unrecorded >= 5000 - 50 - 200 * Math.ceil(capped.seconds) * 2, `the rest of the flood is counted as unrecorded (${capped.unrecorded})`);
  t.equal(capped.after, 150, `no established flow was pushed out (table holds ${capped.size})`);
  const uncapped = run(1_000_000);
  t.ok(uncapped.after < 75, `without the cap the same flood pushes most of them out (${uncapped.after} of 150 left)`);
  t.end();
});
