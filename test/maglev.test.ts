import t from 'tap';
import { createHash } from 'node:crypto';
import {
  buildMaglev,
  buildRrSequence,
  buildWrrSequence,
  diffRings,
  type RingMember,
} from '../src/sched/maglev.js';
import {
  RING_BACKEND_MASK,
  RING_DIRTY,
  RING_NONE,
  RING_SIZES,
  entryBackend,
  entryDirty,
  ringClassFor,
  ringEntry,
  ringSize,
} from '../src/sched/ring.js';

// sha256 (first 16 hex digits) of the comma-joined M=1021 table for weights 1,2,3 below.
const MAGLEV_FINGERPRINT = '034f2aeb8abcd4fc';

function members(weights: readonly number[], keyPrefix = '10.1.'): RingMember[] {
  return weights.map((weight, i) => ({ key: `${keyPrefix}${i >> 8}.${i & 255}`, index: i, weight }));
}

function counts(table: Uint32Array, n: number): number[] {
  const c = new Array<number>(n).fill(0);
  for (const e of table) if (e !== RING_NONE) c[e]!++;
  return c;
}

/** Deterministic Fisher-Yates shuffle. */
function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const out = xs.slice();
  let s = seed >>> 0 || 1;
  for (let i = out.length - 1; i > 0; i--) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function isPrime(n: number): boolean {
  if (n < 2) return false;
  for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
  return true;
}

t.test('ring size classes and entries', async (t) => {
  for (let i = 0; i < RING_SIZES.length; i++) {
    t.ok(isPrime(RING_SIZES[i]!), `${RING_SIZES[i]} is prime`);
    if (i > 0) t.ok(RING_SIZES[i]! > RING_SIZES[i - 1]!, 'ascending');
    t.equal(ringSize(i), RING_SIZES[i]);
  }
  t.throws(() => ringSize(RING_SIZES.length), RangeError);
  t.equal(ringClassFor(0), 0);
  t.equal(ringClassFor(1), 0);
  t.equal(ringClassFor(10), 0, '1000 ≤ 1021');
  t.equal(ringClassFor(11), 1, '1100 → 2039');
  t.equal(ringClassFor(20), 1);
  t.equal(ringClassFor(21), 2);
  t.equal(ringClassFor(655), 6, '65500 → 65521');
  t.equal(ringClassFor(656), 7);
  t.equal(ringClassFor(10485), 10);
  t.equal(ringClassFor(65536), RING_SIZES.length - 1, 'capped');
  for (let n = 0; n < 12000; n += 37) {
    const cls = ringClassFor(n);
    const want = 100 * Math.max(n, 1);
    if (cls < RING_SIZES.length - 1) {
      t.ok(RING_SIZES[cls]! >= want && (cls === 0 || RING_SIZES[cls - 1]! < want), `class for ${n}`);
    }
  }

  t.equal(RING_NONE, 0xffffff);
  t.equal(RING_DIRTY, 0x80000000);
  t.equal(RING_BACKEND_MASK, 0xffffff);
  t.equal(ringEntry(5, false), 5);
  t.equal(ringEntry(5, true), 0x80000005);
  t.equal(ringEntry(RING_NONE, true), 0x80ffffff);
  t.equal(entryBackend(0x80000005), 5);
  t.equal(entryDirty(0x80000005), true);
  t.equal(entryDirty(5), false);
  t.equal(entryBackend(ringEntry(0xabcdef, true)), 0xabcdef);
  t.throws(() => ringEntry(0x1000000, false), RangeError);
  t.throws(() => ringEntry(-1, false), RangeError);
});

t.test('maglev basics', async (t) => {
  const empty = buildMaglev([], 1021);
  t.equal(empty.length, 1021);
  t.ok(empty.every((e) => e === RING_NONE), 'no members → all RING_NONE');
  t.ok(
    buildMaglev(members([0, 0]), 1021).every((e) => e === RING_NONE),
    'only weight-0 members → all RING_NONE',
  );
  t.ok(buildMaglev(members([0, 7]), 1021).every((e) => e === 1), 'single active member owns everything');

  const ms = members([1, 1, 1, 1, 1, 1, 1]);
  const a = buildMaglev(ms, 2039);
  t.ok(a.every((e) => e < ms.length), 'every slot filled with a member index');
  const c = counts(a, ms.length);
  t.ok(Math.max(...c) - Math.min(...c) <= 1, `equal weights → equal shares (${c.join(',')})`);
  for (let seed = 1; seed <= 5; seed++) {
    t.same(buildMaglev(shuffled(ms, seed), 2039), a, `independent of member order (shuffle ${seed})`);
  }

  // Stored index comes from `index`, identity from `key`.
  const renumbered = ms.map((m) => ({ ...m, index: m.index + 100 }));
  t.same(
    Array.from(buildMaglev(renumbered, 2039)),
    Array.from(a, (e) => e + 100),
    'index only relabels slots',
  );

  // Literal fingerprint: two directors (or two versions) with the same backends must build the
  // same table. Changing this value breaks consistency across an upgrade.
  const fp = createHash('sha256')
    .update(Array.from(buildMaglev(members([1, 2, 3]), 1021)).join(','))
    .digest('hex')
    .slice(0, 16);
  t.equal(fp, MAGLEV_FINGERPRINT, 'table fingerprint is stable');

  t.throws(() => buildMaglev(ms, 1000), RangeError, 'non-prime size rejected');
  t.throws(() => buildMaglev([{ key: 'a', index: 0, weight: -1 }], 1021), RangeError);
  t.throws(() => buildMaglev([{ key: 'a', index: 0, weight: NaN }], 1021), RangeError);
  t.throws(() => buildMaglev([{ key: 'a', index: RING_NONE, weight: 1 }], 1021), RangeError);
  t.throws(() => buildMaglev([{ key: 'a', index: 1.5, weight: 1 }], 1021), RangeError);
});

t.test('maglev weights', async (t) => {
  for (const size of [65521, 1021]) {
    for (const weights of [
      [1, 2, 3, 4],
      [4, 3, 2, 1],
      [100, 1, 1],
      [1, 0, 5, 0, 10],
      [3, 3, 3, 1, 1, 1, 7],
    ]) {
      const table = buildMaglev(members(weights), size);
      const c = counts(table, weights.length);
      const sum = weights.reduce((x, y) => x + y, 0);
      weights.forEach((w, i) => {
        const share = c[i]! / size;
        t.ok(
          Math.abs(share - w / sum) < 0.01,
          `M=${size} weights ${weights.join(',')}: member ${i} share ${share.toFixed(4)} ≈ ${(w / sum).toFixed(4)}`,
        );
        if (w === 0) t.equal(c[i], 0, 'weight 0 gets no slots');
      });
    }
  }
  // Only ratios matter.
  t.same(buildMaglev(members([2, 4, 6]), 4093), buildMaglev(members([1, 2, 3]), 4093), 'scaling weights changes nothing');
});

t.test('maglev minimal disruption on removal', async (t) => {
  const size = 65521;
  for (const n of [5, 10, 50]) {
    for (const unequal of [false, true]) {
      const weights = Array.from({ length: n }, (_, i) => (unequal ? 1 + ((i * 7) % 5) : 1));
      const ms = members(weights);
      const full = buildMaglev(ms, size);
      const removes = n <= 10 ? [...Array(n).keys()] : [0, 7, 13, 24, 31, 49];
      for (const r of removes) {
        const less = buildMaglev(
          ms.filter((m) => m.index !== r),
          size,
        );
        const changed = diffRings(full, less);
        const share = counts(full, n)[r]! / size;
        const moved = changed.length / size;
        const collateral = changed.filter((s) => full[s] !== r).length / size;
        t.ok(
          moved <= 1.2 * share + 0.01,
          `n=${n}${unequal ? ' weighted' : ''} remove ${r}: moved ${moved.toFixed(4)} ≤ 1.2 × ${share.toFixed(4)} + 0.01`,
        );
        t.ok(collateral <= 0.02, `collateral ${collateral.toFixed(4)} ≤ 0.02`);
        t.ok(
          changed.every((s) => less[s] !== r),
          'removed member is gone',
        );
        // Adding it back (in any order) restores exactly the original table.
        const back = buildMaglev(shuffled([...ms.filter((m) => m.index !== r), ms[r]!], r + 1), size);
        t.equal(diffRings(full, back).length, 0, 'adding it back restores the original table');
      }
    }
  }
});

t.test('maglev weight change moves slots to/from that member', async (t) => {
  const size = 65521;
  const base = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5];
  const before = buildMaglev(members(base), size);
  for (const [who, w] of [
    [0, 2],
    [4, 10],
    [4, 1],
    [7, 0],
  ] as const) {
    const weights = base.slice();
    weights[who] = w;
    const after = buildMaglev(members(weights), size);
    const changed = diffRings(before, after);
    const other = changed.filter((s) => before[s] !== who && after[s] !== who).length / size;
    const sumB = base.reduce((x, y) => x + y, 0);
    const sumA = weights.reduce((x, y) => x + y, 0);
    const expected = Math.abs(w / sumA - base[who]! / sumB);
    t.ok(other <= 0.02, `member ${who} weight ${base[who]}→${w}: slots moved between other members ${other.toFixed(4)} ≤ 0.02`);
    t.ok(
      changed.length / size <= 1.2 * expected + 0.02,
      `total moved ${(changed.length / size).toFixed(4)} close to share change ${expected.toFixed(4)}`,
    );
    const c = counts(after, base.length)[who]! / size;
    t.ok(Math.abs(c - w / sumA) < 0.01, 'new share honoured');
  }
});

t.test('maglev speed: 1000 members, M = 65521', async (t) => {
  const ms = members(new Array<number>(1000).fill(1), '192.168.');
  const t0 = performance.now();
  const table = buildMaglev(ms, 65521);
  const ms0 = performance.now() - t0;
  const c = counts(table, 1000);
  t.ok(Math.min(...c) >= 65 && Math.max(...c) <= 66, `every member has 65-66 slots (${ms0.toFixed(0)} ms)`);
});

t.test('diffRings', async (t) => {
  t.same(diffRings(Uint32Array.from([1, 2, 3, 4]), Uint32Array.from([1, 5, 3, 6])), [1, 3]);
  t.same(diffRings(new Uint32Array(3), new Uint32Array(3)), []);
  t.throws(() => diffRings(new Uint32Array(3), new Uint32Array(4)), RangeError);
});

/** Longest run of one value, treating the table as cyclic (the scheduler wraps around). */
function maxRuns(table: Uint32Array): Map<number, number> {
  const runs = new Map<number, number>();
  const n = table.length;
  // Start right after a change so a run crossing the wrap is counted whole.
  let start = 0;
  while (start < n && table[start] === table[(start + n - 1) % n]) start++;
  if (start === n) return new Map([[table[0]!, n]]);
  let len = 0;
  for (let k = 0; k < n; k++) {
    const i = (start + k) % n;
    len = k > 0 && table[i] === table[(i + n - 1) % n] ? len + 1 : 1;
    const v = table[i]!;
    if (len > (runs.get(v) ?? 0)) runs.set(v, len);
  }
  return runs;
}

t.test('wrr sequence', async (t) => {
  const cases = [
    [1, 2, 3, 4],
    [4, 3, 2],
    [100, 1],
    [5, 5, 1],
    [3, 1, 1, 1],
    [1, 0, 2],
    [7, 13, 1, 1, 2, 50, 9],
    [1, 1],
  ];
  for (const size of [1021, 65521]) {
    for (const weights of cases) {
      const table = buildWrrSequence(members(weights), size);
      const c = counts(table, weights.length);
      const sum = weights.reduce((x, y) => x + y, 0);
      const active = weights.filter((w) => w > 0);
      const bound = Math.ceil(Math.max(...active) / Math.min(...active)) + 1;
      const runs = maxRuns(table);
      weights.forEach((w, i) => {
        t.ok(
          Math.abs(c[i]! - (size * w) / sum) <= 1,
          `size ${size} weights ${weights.join(',')}: member ${i} has ${c[i]} ≈ ${((size * w) / sum).toFixed(1)}`,
        );
        t.ok((runs.get(i) ?? 0) <= bound, `member ${i} max run ${runs.get(i) ?? 0} ≤ ${bound}`);
      });
    }
  }
  // Spread out: the heavy member alternates with the others instead of coming in bursts.
  t.same(Array.from(buildWrrSequence(members([3, 1, 1, 1]), 12)), [0, 1, 0, 2, 0, 3, 0, 1, 0, 2, 0, 3]);
  t.same(
    Array.from(buildWrrSequence(members([1, 2, 3, 4]), 20)),
    [3, 2, 1, 3, 2, 3, 0, 1, 2, 3, 3, 2, 1, 3, 2, 3, 0, 1, 2, 3],
  );
  // Every prefix stays within one slot of the exact proportional share.
  {
    const weights = [7, 13, 1, 1, 2, 50, 9];
    const sum = weights.reduce((x, y) => x + y, 0);
    const seq = buildWrrSequence(members(weights), 8191);
    const c = new Array<number>(weights.length).fill(0);
    let worst = 0;
    seq.forEach((e, n) => {
      c[e]!++;
      for (let i = 0; i < weights.length; i++) worst = Math.max(worst, Math.abs(c[i]! - ((n + 1) * weights[i]!) / sum));
    });
    t.ok(worst <= 1, `worst prefix deviation ${worst.toFixed(3)} ≤ 1 slot`);
  }

  const ms = members([5, 1, 3, 2]);
  t.same(buildWrrSequence(shuffled(ms, 9), 4093), buildWrrSequence(ms, 4093), 'independent of member order');
  t.ok(buildWrrSequence([], 1021).every((e) => e === RING_NONE), 'no members → RING_NONE');
  t.ok(buildWrrSequence(members([0, 3]), 1021).every((e) => e === 1), 'single member');
  t.throws(() => buildWrrSequence(members([-1]), 1021), RangeError);
});

t.test('rr sequence', async (t) => {
  const ms = members([5, 0, 1, 3, 2]);
  const table = buildRrSequence(ms, 1021);
  const c = counts(table, ms.length);
  t.equal(c[1], 0, 'weight 0 excluded');
  const act = [c[0]!, c[2]!, c[3]!, c[4]!];
  t.ok(Math.max(...act) - Math.min(...act) <= 1, `equal shares (${act.join(',')})`);
  for (const [v, run] of maxRuns(table)) t.ok(run <= 2, `member ${v} max run ${run} ≤ 2`);
  t.same(Array.from(buildRrSequence(ms, 8)), [0, 2, 3, 4, 0, 2, 3, 4], 'plain rotation in key order');
  t.same(buildRrSequence(ms, 1021), buildWrrSequence(members([1, 0, 1, 1, 1]), 1021), 'rr = wrr with weights 1');
});
