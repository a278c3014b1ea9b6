import t from 'tap';
import {
  flowWords,
  hashFlow,
  hashSource,
  hashWords,
  portsWord,
  ringSlot,
  sourceWords,
} from '../src/sched/hash.js';
import { prng } from './helpers/prng.js';

// Straightforward BigInt transcription of the spec, to check the optimised implementation.
const MASK64 = (1n << 64n) - 1n;
function refHash(words: readonly number[]): number {
  let h = 0x9e3779b97f4a7c15n;
  for (const w of words) {
    h = ((h ^ BigInt(w >>> 0)) * 0xff51afd7ed558ccdn) & MASK64;
    h ^= h >> 32n;
  }
  h = ((h ^ (h >> 33n)) * 0xc4ceb9fe1a85ec53n) & MASK64;
  h ^= h >> 33n;
  return Number(h & 0xffffffffn);
}


const v4flow = {
  saddr: Buffer.from([192, 168, 1, 10]),
  daddr: Buffer.from([10, 0, 0, 1]),
  sport: 12345,
  dport: 80,
  proto: 6,
};
const v6flow = {
  saddr: Buffer.from('20010db8000000000000000000000001', 'hex'),
  daddr: Buffer.from('20010db8000000000000000000000002', 'hex'),
  sport: 40000,
  dport: 443,
  proto: 17,
};

t.test('literal vectors (cross-checked with an independent Python transcription)', async (t) => {
  // If any of these changes, the BPF program and user space no longer agree.
  const vectors: [number[], number][] = [
    [[], 0xd918dd23],
    [[0], 0xb3874b5f],
    [[1], 0xa68ab806],
    [[0xffffffff], 0x1957523b],
    [[1, 2, 3, 4], 0x2619aecb],
    [[0x0a01a8c0, 0x0100000a, 0x50003930, 6], 0x3035d752],
  ];
  for (const [words, want] of vectors) {
    t.equal(hashWords(words), want, `hashWords(${JSON.stringify(words)})`);
    t.equal(refHash(words), want, `reference(${JSON.stringify(words)})`);
  }
  t.equal(hashFlow(v4flow), 0x3035d752, 'v4 flow');
  t.equal(hashFlow(v6flow), 0x7266d616, 'v6 flow');
  t.equal(hashWords(Uint32Array.from([1, 2, 3, 4])), 0x2619aecb, 'typed array input');
});

t.test('matches the BigInt reference on random inputs', async (t) => {
  const rnd = prng(12345);
  let bad = 0;
  for (let i = 0; i < 20000; i++) {
    const n = rnd() % 12;
    const words: number[] = [];
    for (let j = 0; j < n; j++) {
      // Mix in edge values often.
      const r = rnd();
      words.push(r % 7 === 0 ? 0 : r % 7 === 1 ? 0xffffffff : r % 7 === 2 ? 0x80000000 : rnd());
    }
    const got = hashWords(words);
    if (got !== refHash(words)) {
      bad++;
      if (bad < 5) t.fail(`mismatch for ${JSON.stringify(words)}`);
    }
    if (!Number.isInteger(got) || got < 0 || got > 0xffffffff) bad++;
  }
  t.equal(bad, 0, 'no mismatches, results are u32');
});

t.test('word extraction', async (t) => {
  // 192.168.1.10 wire bytes c0 a8 01 0a read little-endian.
  t.same(sourceWords(Buffer.from([192, 168, 1, 10])), [0x0a01a8c0]);
  t.same(sourceWords(Buffer.from([10, 0, 0, 1])), [0x0100000a]);
  // 2001:db8::1 → four little-endian loads.
  t.same(sourceWords(v6flow.saddr), [0xb80d0120, 0, 0, 0x01000000]);
  // Ports: 80 = 00 50 on the wire → raw 0x5000; 443 = 01 bb → raw 0xbb01.
  t.equal(portsWord(80, 443), 0xbb015000);
  t.equal(portsWord(0xffff, 0xffff), 0xffffffff);
  t.equal(portsWord(0x1234, 0), 0x3412);
  t.same(flowWords(v4flow), [0x0a01a8c0, 0x0100000a, 0x50003930, 6]);
  t.same(flowWords(v6flow), [
    0xb80d0120, 0, 0, 0x01000000, 0xb80d0120, 0, 0, 0x02000000, 0xbb01409c, 17,
  ]);
  t.equal(hashFlow(v4flow), hashWords(flowWords(v4flow)));
  t.equal(hashFlow(v6flow), hashWords(flowWords(v6flow)));
  t.equal(hashSource(v6flow.saddr), hashWords(sourceWords(v6flow.saddr)));
  t.equal(hashSource(v4flow.saddr), refHash([0x0a01a8c0]));
  t.throws(() => sourceWords(Buffer.alloc(5)), RangeError);
  // Sensitive to every field.
  const base = hashFlow(v4flow);
  t.not(hashFlow({ ...v4flow, sport: 12346 }), base);
  t.not(hashFlow({ ...v4flow, dport: 81 }), base);
  t.not(hashFlow({ ...v4flow, proto: 17 }), base);
  t.not(hashFlow({ ...v4flow, saddr: v4flow.daddr, daddr: v4flow.saddr }), base);
});

t.test('ringSlot', async (t) => {
  const ref = (h: number, size: number) => Number((BigInt(h >>> 0) * BigInt(size)) >> 32n);
  for (const size of [1, 2, 1021, 65521, 1048573, 2097152, 0xffffffff]) {
    t.equal(ringSlot(0, size), 0, `ringSlot(0, ${size})`);
    t.equal(ringSlot(0xffffffff, size), size - 1, `ringSlot(max, ${size})`);
    const rnd = prng(size);
    let bad = 0;
    for (let i = 0; i < 5000; i++) {
      const h = rnd();
      const s = ringSlot(h, size);
      if (s !== ref(h, size) || s < 0 || s >= size) bad++;
    }
    t.equal(bad, 0, `matches floor(h*size/2^32) and stays in range for size ${size}`);
  }
});

/** Chi-square statistic of counts against a uniform expectation. */
function chiSquare(counts: Uint32Array, total: number): number {
  const expected = total / counts.length;
  let x = 0;
  for (const c of counts) x += (c - expected) ** 2 / expected;
  return x;
}

t.test('uniformity (chi-square)', async (t) => {
  // df = size - 1; the statistic has mean df and sd sqrt(2 df). Allow 6 sd.
  const limit = (size: number) => size - 1 + 6 * Math.sqrt(2 * (size - 1));
  const N = 1_000_000;

  for (const size of [1021, 8191]) {
    // ringSlot on random 32-bit values.
    const rnd = prng(size * 7 + 1);
    const counts = new Uint32Array(size);
    for (let i = 0; i < N; i++) counts[ringSlot(rnd(), size)]!++;
    const x = chiSquare(counts, N);
    t.ok(x < limit(size), `ringSlot of random values, size ${size}: chi2 ${x.toFixed(0)} < ${limit(size).toFixed(0)}`);

    // Hash of highly regular flows: one client, sequential source ports.
    const flowCounts = new Uint32Array(size);
    const f = { ...v4flow };
    for (let i = 0; i < N; i++) {
      f.sport = i & 0xffff;
      f.saddr = Buffer.from([10, 1, (i >>> 16) & 0xff, 1]);
      flowCounts[ringSlot(hashFlow(f), size)]!++;
    }
    const y = chiSquare(flowCounts, N);
    t.ok(y < limit(size), `flow hashes, size ${size}: chi2 ${y.toFixed(0)} < ${limit(size).toFixed(0)}`);
  }

  // Sequential single words (e.g. sequential IPv4 source addresses).
  const size = 2039;
  const counts = new Uint32Array(size);
  for (let i = 0; i < N; i++) counts[ringSlot(hashWords([i]), size)]!++;
  const x = chiSquare(counts, N);
  t.ok(x < limit(size), `sequential words: chi2 ${x.toFixed(0)} < ${limit(size).toFixed(0)}`);
});
