/**
 * The flow hash shared by user space and the XDP program. The BPF C code mirrors this bit for bit:
 *
 *   h = 0x9E3779B97F4A7C15
 *   for each u32 word w:  h = (h ^ w) * 0xFF51AFD7ED558CCD  (mod 2^64);  h ^= h >> 32
 *   final:                h = (h ^ (h >> 33)) * 0xC4CEB9FE1A85EC53  (mod 2^64);  h ^= h >> 33
 *   result = low 32 bits of h
 *
 * Words are what a little-endian CPU gets from a plain load of network-order bytes: an IPv4
 * address is one word (its 4 wire bytes read little-endian), an IPv6 address is four such words,
 * the ports word is `sport_raw | dport_raw << 16` where each raw port is its 2 wire bytes read
 * little-endian, and the protocol word is the IP protocol number.
 *
 * The 64-bit state is kept as two u32 halves in plain numbers (no BigInt, no allocation per
 * word); the test suite checks it against a straightforward BigInt implementation.
 */

const SEED_HI = 0x9e3779b9;
const SEED_LO = 0x7f4a7c15;
const M1_HI = 0xff51afd7;
const M1_LO = 0xed558ccd;
const M2_HI = 0xc4ceb9fe;
const M2_LO = 0x1a85ec53;

const TWO32 = 4294967296;

// Hash state: high and low 32-bit halves of the 64-bit value (always kept as u32 numbers).
let sHi = 0;
let sLo = 0;

/** (sHi:sLo) = (sHi:sLo) * (cHi:cLo) mod 2^64. */
function mulState(cHi: number, cLo: number): void {
  const a = sLo;
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = cLo & 0xffff;
  const b1 = cLo >>> 16;
  // Full 64-bit product of the low halves from 16-bit partial products (all exact in doubles).
  const p00 = a0 * b0;
  const mid = a0 * b1 + a1 * b0; // < 2^33
  const low = p00 + (mid % 65536) * 65536; // < 2^33
  const lowWord = low >>> 0;
  const carry = Math.floor(low / TWO32);
  const highWord = a1 * b1 + Math.floor(mid / 65536) + carry;
  // Cross terms only contribute to the high half (mod 2^32).
  sHi = (highWord + Math.imul(sHi, cLo) + Math.imul(a, cHi)) >>> 0;
  sLo = lowWord;
}

function resetState(): void {
  sHi = SEED_HI;
  sLo = SEED_LO;
}

function mixWord(w: number): void {
  sLo = (sLo ^ w) >>> 0;
  mulState(M1_HI, M1_LO);
  // h ^= h >> 32
  sLo = (sLo ^ sHi) >>> 0;
}

function finish(): number {
  // h ^= h >> 33
  sLo = (sLo ^ (sHi >>> 1)) >>> 0;
  mulState(M2_HI, M2_LO);
  // h ^= h >> 33; only the low 32 bits survive.
  return (sLo ^ (sHi >>> 1)) >>> 0;
}

/** Hash a list of u32 words (values are taken modulo 2^32). Returns an unsigned 32-bit number. */
export function hashWords(words: ArrayLike<number>): number {
  resetState();
  for (let i = 0; i < words.length; i++) mixWord(words[i]! >>> 0);
  return finish();
}

/** The 2 wire bytes of a host-order port, read as a little-endian u16 (a raw load on x86). */
function rawPort(port: number): number {
  return ((port & 0xff) << 8) | ((port >>> 8) & 0xff);
}

function addrWordCount(addr: Buffer): number {
  if (addr.length === 4) return 1;
  if (addr.length === 16) return 4;
  throw new RangeError(`address must be 4 (IPv4) or 16 (IPv6) bytes, got ${addr.length}`);
}

function mixAddr(addr: Buffer): void {
  const n = addrWordCount(addr);
  for (let i = 0; i < n; i++) mixWord(addr.readUInt32LE(i * 4));
}

function pushAddr(out: number[], addr: Buffer): void {
  const n = addrWordCount(addr);
  for (let i = 0; i < n; i++) out.push(addr.readUInt32LE(i * 4));
}

export interface FlowKey {
  /** Source address in network byte order: 4 bytes (IPv4) or 16 bytes (IPv6). */
  saddr: Buffer;
  /** Destination address in network byte order, same family as saddr. */
  daddr: Buffer;
  /** Source port, host order (e.g. 80). */
  sport: number;
  /** Destination port, host order. */
  dport: number;
  /** IP protocol number (6 = TCP, 17 = UDP). */
  proto: number;
}

/** The ports word: `rawSport | rawDport << 16`, each raw port being its wire bytes read little-endian. */
export function portsWord(sport: number, dport: number): number {
  return (rawPort(sport) | (rawPort(dport) << 16)) >>> 0;
}

/** The words of a flow in hashing order: saddr words, daddr words, ports word, proto word. */
export function flowWords(f: FlowKey): number[] {
  const out: number[] = [];
  pushAddr(out, f.saddr);
  pushAddr(out, f.daddr);
  out.push(portsWord(f.sport, f.dport), f.proto >>> 0);
  return out;
}

/** The words of a source address alone (source hashing, persistence). */
export function sourceWords(saddr: Buffer): number[] {
  const out: number[] = [];
  pushAddr(out, saddr);
  return out;
}

/** `hashWords(flowWords(f))` without building the word array. */
export function hashFlow(f: FlowKey): number {
  resetState();
  mixAddr(f.saddr);
  mixAddr(f.daddr);
  mixWord(portsWord(f.sport, f.dport));
  mixWord(f.proto >>> 0);
  return finish();
}

/** `hashWords(sourceWords(saddr))` without building the word array. */
export function hashSource(saddr: Buffer): number {
  resetState();
  mixAddr(saddr);
  return finish();
}

/**
 * Map a 32-bit hash onto [0, ringSize): floor(hash32 * ringSize / 2^32) (Lemire's multiply-shift
 * reduction; the BPF side computes `((u64)hash * size) >> 32`).
 */
export function ringSlot(hash32: number, ringSize: number): number {
  const h = hash32 >>> 0;
  // The product stays exact in a double while ringSize < 2^21 (all ring classes are).
  if (ringSize < 2097152) return Math.floor((h * ringSize) / TWO32);
  return Number((BigInt(h) * BigInt(ringSize)) >> 32n);
}
