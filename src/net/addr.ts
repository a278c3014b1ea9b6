/**
 * Pure address helpers: IPv4/IPv6 and MAC parsing and canonical formatting, prefix masking.
 * Nothing here touches the network or the system; every function is total on its documented input.
 */
import { isIPv4, isIPv6 } from 'node:net';

export type IpFamily = 4 | 6;

export interface ParsedIp {
  family: IpFamily;
  /** 4 bytes for IPv4, 16 for IPv6, network byte order. */
  bytes: Buffer;
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/**
 * Parses an IPv4 dotted quad or an IPv6 address (with `::` compression and an optional embedded
 * IPv4 tail such as `::ffff:1.2.3.4`). Returns null for anything else, including IPv6 zone ids
 * (`fe80::1%eth0`), surrounding white space, and IPv4 with leading zeros or fewer than four parts.
 */
export function parseIp(s: string): ParsedIp | null {
  if (typeof s !== 'string') return null;
  if (isIPv4(s)) {
    const v4 = parseV4(s);
    return v4 && { family: 4, bytes: v4 };
  }
  if (s.includes('%') || !isIPv6(s)) return null;
  const v6 = parseV6(s);
  return v6 && { family: 6, bytes: v6 };
}

function parseV4(s: string): Buffer | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  const out = Buffer.alloc(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

/** Groups of one side of `::` as 16-bit words; an IPv4 tail is allowed only as the last group. */
function v6Words(part: string, mayEndInV4: boolean): number[] | null {
  if (part === '') return [];
  const groups = part.split(':');
  const words: number[] = [];
  for (let i = 0; i < groups.length; i++) {
    const g = groups[i]!;
    if (g.includes('.')) {
      if (!mayEndInV4 || i !== groups.length - 1) return null;
      const v4 = parseV4(g);
      if (!v4) return null;
      words.push(v4.readUInt16BE(0), v4.readUInt16BE(2));
    } else {
      if (!HEX_GROUP.test(g)) return null;
      words.push(parseInt(g, 16));
    }
  }
  return words;
}

function parseV6(s: string): Buffer | null {
  const halves = s.split('::');
  if (halves.length > 2) return null;
  let words: number[];
  if (halves.length === 1) {
    const all = v6Words(s, true);
    if (!all || all.length !== 8) return null;
    words = all;
  } else {
    const head = v6Words(halves[0]!, false);
    const tail = v6Words(halves[1]!, true);
    if (!head || !tail) return null;
    const zeros = 8 - head.length - tail.length;
    if (zeros < 1) return null; // `::` stands for at least one group
    words = [...head, ...new Array<number>(zeros).fill(0), ...tail];
  }
  const out = Buffer.alloc(16);
  words.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

/**
 * Canonical text of a 4- or 16-byte address. IPv6 follows RFC 5952 exactly as `inet_ntop` (and so
 * `ip`, `ipvsadm` and Node's `net.SocketAddress`) prints it: lower-case hex without leading zeros,
 * the longest run of two or more zero groups (the first one on a tie) as `::`, and the IPv4 tail
 * written dotted for IPv4-mapped (`::ffff:1.2.3.4`) and IPv4-compatible (`::1.2.3.4`) addresses.
 */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join('.');
  if (bytes.length !== 16) throw new RangeError(`an IP address has 4 or 16 bytes, not ${bytes.length}`);
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((bytes[i]! << 8) | bytes[i + 1]!);

  // longest run of zero words, length >= 2, first on a tie
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) bestStart = -1;

  const v4Tail =
    bestStart === 0 && (bestLen === 6 || (bestLen === 5 && words[5] === 0xffff))
      ? `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`
      : null;

  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      out += '::';
      i += bestLen - 1;
      continue;
    }
    if (out !== '' && !out.endsWith(':')) out += ':';
    if (v4Tail !== null && i === 6) {
      out += v4Tail;
      break;
    }
    out += words[i]!.toString(16);
  }
  return out;
}

/** `parseIp` then `formatIp`: the canonical spelling of an address, or null if it is not one. */
export function canonicalIp(s: string): string | null {
  const p = parseIp(s);
  return p && formatIp(p.bytes);
}

/** The unspecified address (`0.0.0.0` or `::`). */
export function isUnspecifiedIp(bytes: Uint8Array): boolean {
  return bytes.every((b) => b === 0);
}

/** Multicast (224.0.0.0/4, ff00::/8) or the IPv4 limited broadcast 255.255.255.255. */
export function isMulticastOrBroadcastIp(bytes: Uint8Array): boolean {
  if (bytes.length === 4) return (bytes[0]! & 0xf0) === 0xe0 || bytes.every((b) => b === 255);
  return bytes[0] === 0xff;
}

/** An IPv4-mapped IPv6 address (`::ffff:0:0/96`). */
export function isV4MappedIp(bytes: Uint8Array): boolean {
  return bytes.length === 16 && bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
}

const MAC_RE = /^[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$/i;

/**
 * Parses `02:00:00:00:00:12` (any case, `:` or `-` separators used consistently) into 6 bytes;
 * null for anything else (no dotted Cisco form, no bare hex, no single-digit groups).
 */
export function parseMac(s: string): Buffer | null {
  if (typeof s !== 'string' || !MAC_RE.test(s)) return null;
  return Buffer.from(s.split(/[:-]/).map((h) => parseInt(h, 16)));
}

/** Lower-case, colon-separated form of a 6-byte MAC. */
export function formatMac(buf: Uint8Array): string {
  if (buf.length !== 6) throw new RangeError(`a MAC address has 6 bytes, not ${buf.length}`);
  return Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join(':');
}

/**
 * A copy of `bytes` with every bit after the first `prefixLen` cleared
 * (`maskPrefix(10.1.2.3, 24)` is 10.1.2.0). Throws RangeError for a prefix outside 0..bits.
 */
export function maskPrefix(bytes: Uint8Array, prefixLen: number): Buffer {
  const bits = bytes.length * 8;
  if (!Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > bits) {
    throw new RangeError(`prefix length ${prefixLen} is outside 0-${bits}`);
  }
  const out = Buffer.from(bytes);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.min(8, Math.max(0, prefixLen - i * 8));
    out[i] = out[i]! & ((0xff << (8 - keep)) & 0xff);
  }
  return out;
}
