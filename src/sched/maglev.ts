/**
 * Scheduling tables for the XDP program.
 *
 * buildMaglev: weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016) over a table of
 * prime size M. Every member has a permutation of the slots derived from two hashes of its key
 * (offset = h1 mod M, skip = h2 mod (M-1) + 1). Members take turns claiming the next free slot of
 * their permutation; the order of turns is a weighted fair sequence: the k-th turn of a member of
 * weight w happens at virtual time k / w (ties broken by key order). With equal weights this is
 * exactly classic Maglev's round robin; with unequal weights each member gets a share of turns —
 * and so of slots, since every turn claims exactly one slot — proportional to its weight (in the
 * spirit of Katran's MaglevHashV2 credit accumulator, but independent of the largest weight, so
 * changing one member's weight does not reorder everybody else's turns).
 *
 * The result depends only on the set of (key, index, weight), not on the order of `members`, and
 * the key hash is SHA-256, so every director with the same backends builds the same table.
 *
 * buildWrrSequence / buildRrSequence: a table holding a weighted round-robin order for the `wrr`
 * and `rr` schedulers, interleaved like IPVS's but smoother (WF2Q order: no bursts of the heaviest
 * member).
 */
import { createHash } from 'node:crypto';
import { RING_NONE } from './ring.js';

export interface RingMember {
  /** Stable identity: the backend IP string. */
  key: string;
  /** Backend index stored in the table (0 .. 0xFFFFFE). */
  index: number;
  /** Relative weight; 0 means the member gets no slots. */
  weight: number;
}

function isPrime(n: number): boolean {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

function checkSize(size: number, prime: boolean): void {
  if (!Number.isInteger(size) || size < 1 || size > 0xffffffff) {
    throw new RangeError(`table size must be a positive integer, got ${size}`);
  }
  if (prime && !isPrime(size)) throw new RangeError(`Maglev table size must be prime, got ${size}`);
}

/** Validate, drop weight-0 members, sort by key (code-unit order, locale independent). */
function activeMembers(members: readonly RingMember[]): RingMember[] {
  const out: RingMember[] = [];
  for (const m of members) {
    if (typeof m.weight !== 'number' || !Number.isFinite(m.weight) || m.weight < 0) {
      throw new RangeError(`member ${m.key}: weight must be a finite number ≥ 0, got ${m.weight}`);
    }
    if (!Number.isInteger(m.index) || m.index < 0 || m.index >= RING_NONE) {
      throw new RangeError(`member ${m.key}: backend index out of range: ${m.index}`);
    }
    if (m.weight > 0) out.push(m);
  }
  out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.index - b.index));
  return out;
}

/** A binary min-heap of small integers (member positions) under a caller-supplied order. */
class IndexHeap {
  private readonly heap: Int32Array;
  private n = 0;

  constructor(
    capacity: number,
    private readonly less: (a: number, b: number) => boolean,
  ) {
    this.heap = new Int32Array(capacity);
  }

  get size(): number {
    return this.n;
  }

  /** Smallest item; the heap must not be empty. */
  peek(): number {
    return this.heap[0]!;
  }

  push(item: number): void {
    const heap = this.heap;
    let i = this.n++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent]!;
      if (!this.less(item, p)) break;
      heap[i] = p;
      i = parent;
    }
    heap[i] = item;
  }

  pop(): number {
    const top = this.heap[0]!;
    const last = this.heap[--this.n]!;
    if (this.n > 0) this.siftDown(0, last);
    return top;
  }

  /** Restore the heap after the top item's key grew. */
  topChanged(): void {
    this.siftDown(0, this.heap[0]!);
  }

  private siftDown(i: number, item: number): void {
    const heap = this.heap;
    const n = this.n;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      let c = l;
      if (r < n && this.less(heap[r]!, heap[l]!)) c = r;
      const child = heap[c]!;
      if (!this.less(child, item)) break;
      heap[i] = child;
      i = c;
    }
    heap[i] = item;
  }
}

/** offset = h1 mod M and skip = h2 mod (M-1) + 1, from SHA-256 of the key. */
function permutation(key: string, size: number): [offset: number, skip: number] {
  const d = createHash('sha256').update(key, 'utf8').digest();
  const h1 = d.readBigUInt64BE(0);
  const h2 = d.readBigUInt64BE(8);
  const m = BigInt(size);
  const offset = Number(h1 % m);
  const skip = size > 1 ? Number(h2 % (m - 1n)) + 1 : 1;
  return [offset, skip];
}

/**
 * Build a weighted Maglev table of `size` (prime) slots holding backend indexes.
 * All slots are RING_NONE if no member has weight > 0.
 */
export function buildMaglev(members: readonly RingMember[], size: number): Uint32Array {
  checkSize(size, true);
  const table = new Uint32Array(size).fill(RING_NONE);
  const active = activeMembers(members);
  const n = active.length;
  if (n === 0) return table;

  const pos = new Float64Array(n); // current position in each member's permutation
  const skip = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const [o, s] = permutation(active[i]!.key, size);
    pos[i] = o;
    skip[i] = s;
  }
  // Turn k (1-based) of member i comes at virtual time k / w_i; ties go to the earlier key.
  // Compared by cross-multiplication: exact for integer weights.
  const w = Float64Array.from(active, (m) => m.weight);
  const turns = new Float64Array(n);
  const queue = new IndexHeap(n, (a, b) => {
    const x = (turns[a]! + 1) * w[b]!;
    const y = (turns[b]! + 1) * w[a]!;
    return x < y || (x === y && a < b);
  });
  for (let i = 0; i < n; i++) queue.push(i);

  for (let filled = 0; filled < size; filled++) {
    const i = queue.peek();
    let p = pos[i]!;
    const s = skip[i]!;
    while (table[p] !== RING_NONE) {
      p += s;
      if (p >= size) p -= size;
    }
    table[p] = active[i]!.index;
    p += s;
    if (p >= size) p -= size;
    pos[i] = p;
    turns[i]! += 1;
    queue.topChanged();
  }
  return table;
}

/** Slot indexes whose entries differ between two tables of the same size. */
export function diffRings(oldTable: ArrayLike<number>, newTable: ArrayLike<number>): number[] {
  if (oldTable.length !== newTable.length) {
    throw new RangeError(`cannot diff tables of different sizes (${oldTable.length} vs ${newTable.length})`);
  }
  const out: number[] = [];
  for (let i = 0; i < oldTable.length; i++) {
    if (oldTable[i] !== newTable[i]) out.push(i);
  }
  return out;
}

/**
 * Worst-case fair weighted fair queueing (WF2Q) over unit slots: at step n the "fluid" time is
 * t = n / W (W = sum of weights); a member whose c-th turn is next is eligible once its start time
 * c / w has been reached (c * W <= n * w), and among eligible members the one with the earliest
 * finish time (c + 1) / w goes next (ties to the earlier key). Every member stays within one slot
 * of its exact proportional share at every point of the sequence, and heavy members are
 * interleaved with light ones instead of being served in bursts (3,1,1,1 gives A B A C A D).
 * O(size · log n).
 */
function fillSequence(active: RingMember[], weights: number[], size: number): Uint32Array {
  const table = new Uint32Array(size).fill(RING_NONE);
  const n = active.length;
  if (n === 0) return table;
  const w = Float64Array.from(weights);
  const total = weights.reduce((x, y) => x + y, 0);
  const turns = new Float64Array(n);
  // Waiting members, by start time c / w.
  const waiting = new IndexHeap(n, (a, b) => {
    const x = turns[a]! * w[b]!;
    const y = turns[b]! * w[a]!;
    return x < y || (x === y && a < b);
  });
  // Eligible members, by finish time (c + 1) / w.
  const eligible = new IndexHeap(n, (a, b) => {
    const x = (turns[a]! + 1) * w[b]!;
    const y = (turns[b]! + 1) * w[a]!;
    return x < y || (x === y && a < b);
  });
  for (let i = 0; i < n; i++) eligible.push(i);

  for (let step = 0; step < size; step++) {
    while (waiting.size > 0) {
      const i = waiting.peek();
      if (turns[i]! * total > step * w[i]!) break;
      eligible.push(waiting.pop());
    }
    // Never empty with exact arithmetic: if every member's start were later than step / W, the
    // turns taken so far would add up to more than step. Guard against rounding with
    // non-integer weights anyway.
    if (eligible.size === 0) eligible.push(waiting.pop());
    const i = eligible.pop();
    table[step] = active[i]!.index;
    turns[i]! += 1;
    waiting.push(i);
  }
  return table;
}

/**
 * Weighted round-robin order over a table of `size` slots: every member appears in proportion to
 * its weight, interleaved with the others rather than in runs. Weight-0 members never appear;
 * all slots are RING_NONE if no member has weight > 0.
 */
export function buildWrrSequence(members: readonly RingMember[], size: number): Uint32Array {
  checkSize(size, false);
  const active = activeMembers(members);
  return fillSequence(
    active,
    active.map((m) => m.weight),
    size,
  );
}

/** Plain round robin: buildWrrSequence with every member of weight > 0 treated as weight 1. */
export function buildRrSequence(members: readonly RingMember[], size: number): Uint32Array {
  checkSize(size, false);
  const active = activeMembers(members);
  return fillSequence(
    active,
    active.map(() => 1),
    size,
  );
}
