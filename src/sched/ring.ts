/**
 * Scheduling-table size classes and entry encoding.
 *
 * Each size class is a separate BPF array map of fixed (prime) size so that lookups in the XDP
 * program use a compile-time constant. An entry is a u32: bits 0-23 hold the backend index,
 * bit 31 is the "dirty" flag; RING_NONE in the index bits means "no backend".
 */

export const RING_SIZES = [
  1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071, 262139, 524287, 1048573,
] as const;

/** Target number of table slots per backend when choosing a class. */
export const RING_SLOTS_PER_BACKEND = 100;

export const RING_BACKEND_MASK = 0xffffff;
/** Backend index meaning "no backend". */
export const RING_NONE = 0xffffff;
export const RING_DIRTY = 0x80000000;

/** Index into RING_SIZES of the smallest class with ≥ 100 slots per backend (capped at the largest). */
export function ringClassFor(backendCount: number): number {
  const want = RING_SLOTS_PER_BACKEND * Math.max(backendCount, 1);
  for (let i = 0; i < RING_SIZES.length; i++) {
    if (RING_SIZES[i]! >= want) return i;
  }
  return RING_SIZES.length - 1;
}

/** Table size of a class. */
export function ringSize(cls: number): number {
  const size = RING_SIZES[cls];
  if (size === undefined) throw new RangeError(`no ring size class ${cls}`);
  return size;
}

/** Encode a table entry. */
export function ringEntry(backend: number, dirty = false): number {
  if (!Number.isInteger(backend) || backend < 0 || backend > RING_BACKEND_MASK) {
    throw new RangeError(`backend index out of range: ${backend}`);
  }
  return (dirty ? (backend | RING_DIRTY) : backend) >>> 0;
}

/** Backend index of an entry (RING_NONE if none). */
export function entryBackend(e: number): number {
  return e & RING_BACKEND_MASK;
}

/** Whether the entry's dirty flag is set. */
export function entryDirty(e: number): boolean {
  return (e & RING_DIRTY) !== 0;
}
