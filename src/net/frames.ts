/**
 * A small builder of Ethernet frames for the data-plane tests and the benchmarks: Ethernet with
 * an optional 802.1Q tag, IPv4 (with options, fragments, a correct header checksum, and fields that can be set
 * wrong on purpose), IPv6 (with a fragment header), TCP (flags, options, data offset), UDP,
 * ICMP/ICMPv6 errors quoting an inner packet. TCP, UDP and ICMP checksums are computed too, so
 * every frame is one a real stack would accept unless a test breaks it deliberately.
 *
 * Addresses are strings ("10.0.0.1", "fd00::1"); MACs are 6-byte Buffers or "aa:bb:..." text.
 */
import { parseIp, parseMac } from './addr.js';

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;
export const ETH_P_IPV6 = 0x86dd;

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_FRAGMENT = 44;
export const IPPROTO_ICMPV6 = 58;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

/** The director's MAC (frames to a VIP are addressed to it) and a client-side router's. */
export const DIRECTOR_MAC = Buffer.from([0x02, 0xd1, 0x00, 0x00, 0x00, 0x01]);
export const ROUTER_MAC = Buffer.from([0x02, 0xee, 0x00, 0x00, 0x00, 0xfe]);

export function addr(text: string): Buffer {
  const ip = parseIp(text);
  if (!ip) throw new Error(`frames: not an IP address: ${text}`);
  return ip.bytes;
}

export function mac(m: Buffer | string): Buffer {
  if (Buffer.isBuffer(m)) {
    if (m.length !== 6) throw new Error('frames: a MAC has 6 bytes');
    return m;
  }
  const b = parseMac(m);
  if (!b) throw new Error(`frames: not a MAC: ${m}`);
  return b;
}

/** RFC 1071 one's-complement sum of the concatenated buffers, folded and inverted. */
export function inetChecksum(...parts: Buffer[]): number {
  const data = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum += data.readUInt16BE(i);
  if (data.length % 2 === 1) sum += data[data.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

// ---------------------------------------------------------------------------------------------
// Layer 2

export interface EthernetOptions {
  dst?: Buffer | string;
  src?: Buffer | string;
  /** EtherType of the payload */
  type: number;
  payload: Buffer;
  /** one 802.1Q tag (VLAN id 0-4095) */
  vlan?: number;
  /** tag protocol id of the VLAN tag: 0x8100 (default) or 0x88a8 */
  vlanTpid?: number;
  /** priority code point of the tag */
  pcp?: number;
}

export function ethernet(o: EthernetOptions): Buffer {
  const dst = mac(o.dst ?? DIRECTOR_MAC);
  const src = mac(o.src ?? ROUTER_MAC);
  const tag = Buffer.alloc(o.vlan === undefined ? 0 : 4);
  if (o.vlan !== undefined) {
    tag.writeUInt16BE(o.vlanTpid ?? ETH_P_8021Q, 0);
    tag.writeUInt16BE((((o.pcp ?? 0) & 7) << 13) | (o.vlan & 0xfff), 2);
  }
  const type = Buffer.alloc(2);
  type.writeUInt16BE(o.type);
  // with a tag, the tag's TPID sits where the EtherType would be and the real one follows it
  return o.vlan === undefined ? Buffer.concat([dst, src, type, o.payload]) : Buffer.concat([dst, src, tag, type, o.payload]);
}

/** An ARP request (who-has target, tell sender) as an Ethernet payload. */
export function arpRequest(senderMac: Buffer, senderIp: string, targetIp: string): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt16BE(1, 0); // Ethernet
  b.writeUInt16BE(ETH_P_IP, 2);
  b[4] = 6;
  b[5] = 4;
  b.writeUInt16BE(1, 6); // request
  senderMac.copy(b, 8);
  addr(senderIp).copy(b, 14);
  addr(targetIp).copy(b, 24);
  return b;
}

// ---------------------------------------------------------------------------------------------
// Layer 4 (checksums are filled in by ipv4()/ipv6(), which know the pseudo-header)

export interface TcpOptions {
  sport: number;
  dport: number;
  flags?: number;
  seq?: number;
  ack?: number;
  window?: number;
  /** TCP options, padded with zeros (end of option list) to a multiple of 4 */
  options?: Buffer;
  /** override the data offset (in 32-bit words), e.g. to make it invalid */
  doff?: number;
  payload?: Buffer;
}

export function tcp(o: TcpOptions): Buffer {
  const opts = o.options ?? Buffer.alloc(0);
  const padded = Buffer.concat([opts, Buffer.alloc((4 - (opts.length % 4)) % 4)]);
  const h = Buffer.alloc(20);
  h.writeUInt16BE(o.sport, 0);
  h.writeUInt16BE(o.dport, 2);
  h.writeUInt32BE((o.seq ?? 1) >>> 0, 4);
  h.writeUInt32BE((o.ack ?? 0) >>> 0, 8);
  h[12] = ((o.doff ?? 5 + padded.length / 4) & 0xf) << 4;
  h[13] = o.flags ?? TCP_SYN;
  h.writeUInt16BE(o.window ?? 64240, 14);
  return Buffer.concat([h, padded, o.payload ?? Buffer.alloc(0)]);
}

/** MSS, SACK-permitted, timestamps, NOP, window scale: what Linux puts in a SYN. */
export function synOptions(tsval = 0x01020304): Buffer {
  const b = Buffer.alloc(20);
  b.set([2, 4, 0x05, 0xb4], 0); // MSS 1460
  b.set([4, 2], 4); // SACK permitted
  b.set([8, 10], 6); // timestamps
  b.writeUInt32BE(tsval >>> 0, 8);
  b.writeUInt32BE(0, 12);
  b.set([1, 3, 3, 7], 16); // NOP, window scale 7
  return b;
}

export function udp(o: { sport: number; dport: number; payload?: Buffer }): Buffer {
  const payload = o.payload ?? Buffer.alloc(0);
  const h = Buffer.alloc(8);
  h.writeUInt16BE(o.sport, 0);
  h.writeUInt16BE(o.dport, 2);
  h.writeUInt16BE(8 + payload.length, 4);
  return Buffer.concat([h, payload]);
}

/** An ICMPv4 error quoting `quoted` (an IP packet, usually cut to its header + 8 bytes). */
export function icmp4Error(o: { type?: number; code?: number; mtu?: number; quoted: Buffer }): Buffer {
  const h = Buffer.alloc(8);
  h[0] = o.type ?? 3; // destination unreachable
  h[1] = o.code ?? 4; // fragmentation needed
  if (o.mtu !== undefined) h.writeUInt16BE(o.mtu, 6);
  const msg = Buffer.concat([h, o.quoted]);
  msg.writeUInt16BE(inetChecksum(msg), 2);
  return msg;
}

/** An ICMPv4 echo request. */
export function icmp4Echo(id = 1, seq = 1, payload = Buffer.from('ping')): Buffer {
  const h = Buffer.alloc(8);
  h[0] = 8;
  h.writeUInt16BE(id, 4);
  h.writeUInt16BE(seq, 6);
  const msg = Buffer.concat([h, payload]);
  msg.writeUInt16BE(inetChecksum(msg), 2);
  return msg;
}

/** An ICMPv6 error quoting `quoted`; its checksum is filled in by ipv6(). Default: packet too big. */
export function icmp6Error(o: { type?: number; code?: number; mtu?: number; quoted: Buffer }): Buffer {
  const h = Buffer.alloc(8);
  h[0] = o.type ?? 2;
  h[1] = o.code ?? 0;
  h.writeUInt32BE(o.mtu ?? 1280, 4);
  return Buffer.concat([h, o.quoted]);
}

/** An ICMPv6 echo request; its checksum is filled in by ipv6(). */
export function icmp6Echo(id = 1, seq = 1, payload = Buffer.from('ping')): Buffer {
  const h = Buffer.alloc(8);
  h[0] = 128;
  h.writeUInt16BE(id, 4);
  h.writeUInt16BE(seq, 6);
  return Buffer.concat([h, payload]);
}

/** Offset of the checksum field in an L4 header of this protocol, if it has one covered by a pseudo-header. */
function l4ChecksumOffset(proto: number): number | undefined {
  return proto === IPPROTO_TCP ? 16 : proto === IPPROTO_UDP ? 6 : proto === IPPROTO_ICMPV6 ? 2 : undefined;
}

function fillL4Checksum(proto: number, payload: Buffer, pseudo: Buffer): Buffer {
  const at = l4ChecksumOffset(proto);
  if (at === undefined || payload.length < at + 2) return payload;
  const out = Buffer.from(payload);
  out.writeUInt16BE(0, at);
  let sum = inetChecksum(pseudo, out);
  if (proto === IPPROTO_UDP && sum === 0) sum = 0xffff;
  out.writeUInt16BE(sum, at);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Layer 3

export interface Ipv4Options {
  src: string;
  dst: string;
  protocol: number;
  payload: Buffer;
  ttl?: number;
  id?: number;
  tos?: number;
  df?: boolean;
  /** more fragments */
  mf?: boolean;
  /** fragment offset in 8-byte units */
  fragOffset?: number;
  /** IP options, padded with zeros (end of options) to a multiple of 4 */
  options?: Buffer;
  /** overrides, to build malformed headers; the checksum still covers what is written */
  ihl?: number;
  version?: number;
  totalLength?: number;
  /** fill the TCP/UDP checksum (default true; off for fragments that carry no L4 header) */
  l4Checksum?: boolean;
}

export function ipv4(o: Ipv4Options): Buffer {
  const opts = o.options ?? Buffer.alloc(0);
  const padded = Buffer.concat([opts, Buffer.alloc((4 - (opts.length % 4)) % 4)]);
  const hlen = 20 + padded.length;
  const src = addr(o.src);
  const dst = addr(o.dst);
  if (src.length !== 4 || dst.length !== 4) throw new Error('frames: ipv4() needs IPv4 addresses');
  const fragment = (o.mf ?? false) || (o.fragOffset ?? 0) !== 0;
  let payload = o.payload;
  if (o.l4Checksum ?? !fragment) {
    const pseudo = Buffer.alloc(12);
    src.copy(pseudo, 0);
    dst.copy(pseudo, 4);
    pseudo[9] = o.protocol;
    pseudo.writeUInt16BE(payload.length, 10);
    payload = fillL4Checksum(o.protocol, payload, pseudo);
  }
  const h = Buffer.alloc(hlen);
  h[0] = ((o.version ?? 4) << 4) | ((o.ihl ?? hlen / 4) & 0xf);
  h[1] = o.tos ?? 0;
  h.writeUInt16BE(o.totalLength ?? hlen + payload.length, 2);
  h.writeUInt16BE(o.id ?? 0x1234, 4);
  h.writeUInt16BE(((o.df ? 0x4000 : 0) | (o.mf ? 0x2000 : 0) | ((o.fragOffset ?? 0) & 0x1fff)) >>> 0, 6);
  h[8] = o.ttl ?? 64;
  h[9] = o.protocol;
  src.copy(h, 12);
  dst.copy(h, 16);
  padded.copy(h, 20);
  h.writeUInt16BE(inetChecksum(h), 10);
  return Buffer.concat([h, payload]);
}

/** A router alert option (RFC 2113): 4 bytes, a common option in the wild. */
export const IPV4_OPT_ROUTER_ALERT = Buffer.from([0x94, 0x04, 0x00, 0x00]);
/** A record-route option with room for `slots` addresses. */
export function ipv4RecordRoute(slots: number): Buffer {
  const b = Buffer.alloc(3 + 4 * slots);
  b[0] = 7;
  b[1] = b.length;
  b[2] = 4;
  return b;
}

export interface Ipv6Options {
  src: string;
  dst: string;
  nextHeader: number;
  payload: Buffer;
  hopLimit?: number;
  flowLabel?: number;
  trafficClass?: number;
  /** overrides, to build malformed headers */
  payloadLength?: number;
  version?: number;
  /** fill the TCP/UDP/ICMPv6 checksum (default true when the payload is not a fragment) */
  l4Checksum?: boolean;
}

export function ipv6(o: Ipv6Options): Buffer {
  const src = addr(o.src);
  const dst = addr(o.dst);
  if (src.length !== 16 || dst.length !== 16) throw new Error('frames: ipv6() needs IPv6 addresses');
  let payload = o.payload;
  if (o.l4Checksum ?? o.nextHeader !== IPPROTO_FRAGMENT) {
    const pseudo = Buffer.alloc(40);
    src.copy(pseudo, 0);
    dst.copy(pseudo, 16);
    pseudo.writeUInt32BE(payload.length, 32);
    pseudo[39] = o.nextHeader;
    payload = fillL4Checksum(o.nextHeader, payload, pseudo);
  }
  const h = Buffer.alloc(40);
  h.writeUInt32BE((((o.version ?? 6) & 0xf) * 0x10000000 + ((o.trafficClass ?? 0) << 20) + ((o.flowLabel ?? 0) & 0xfffff)) >>> 0, 0);
  h.writeUInt16BE(o.payloadLength ?? payload.length, 4);
  h[6] = o.nextHeader;
  h[7] = o.hopLimit ?? 64;
  src.copy(h, 8);
  dst.copy(h, 24);
  return Buffer.concat([h, payload]);
}

/** An IPv6 fragment header followed by `payload` (a piece of the fragmentable part). */
export function ipv6Fragment(o: { nextHeader: number; offset?: number; more?: boolean; id?: number; payload: Buffer }): Buffer {
  const h = Buffer.alloc(8);
  h[0] = o.nextHeader;
  h.writeUInt16BE((((o.offset ?? 0) & 0x1fff) << 3) | (o.more ? 1 : 0), 2);
  h.writeUInt32BE((o.id ?? 0xabcdef) >>> 0, 4);
  return Buffer.concat([h, o.payload]);
}

// ---------------------------------------------------------------------------------------------
// Whole frames for a flow

export type L4 = 'tcp' | 'udp';

export interface FlowFrame {
  /** source and destination address, both IPv4 or both IPv6 */
  src: string;
  dst: string;
  proto: L4;
  sport: number;
  dport: number;
  /** TCP flags (default SYN) */
  flags?: number;
  tcpOptions?: Buffer;
  payload?: Buffer;
  vlan?: number;
  vlanTpid?: number;
  ipOptions?: Buffer;
  ethDst?: Buffer | string;
  ethSrc?: Buffer | string;
  seq?: number;
  ack?: number;
}

export function isV6(address: string): boolean {
  return address.includes(':');
}

/** The IP packet (no Ethernet) of a TCP segment or UDP datagram. */
export function ipPacket(f: FlowFrame): Buffer {
  const l4 =
    f.proto === 'tcp'
      ? tcp({ sport: f.sport, dport: f.dport, flags: f.flags, options: f.tcpOptions, payload: f.payload, seq: f.seq, ack: f.ack })
      : udp({ sport: f.sport, dport: f.dport, payload: f.payload });
  const protocol = f.proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP;
  if (isV6(f.src)) {
    if (f.ipOptions) throw new Error('frames: IPv4 options on an IPv6 packet');
    return ipv6({ src: f.src, dst: f.dst, nextHeader: protocol, payload: l4 });
  }
  return ipv4({ src: f.src, dst: f.dst, protocol, payload: l4, options: f.ipOptions });
}

/** An Ethernet frame carrying one TCP segment or UDP datagram. */
export function flowFrame(f: FlowFrame): Buffer {
  return ethernet({
    dst: f.ethDst,
    src: f.ethSrc,
    vlan: f.vlan,
    vlanTpid: f.vlanTpid,
    type: isV6(f.src) ? ETH_P_IPV6 : ETH_P_IP,
    payload: ipPacket(f),
  });
}

/** Wraps an IP packet in Ethernet, choosing the EtherType from its version nibble. */
export function ipFrame(packet: Buffer, o: { vlan?: number; dst?: Buffer | string; src?: Buffer | string } = {}): Buffer {
  const type = packet.length > 0 && packet[0]! >> 4 === 6 ? ETH_P_IPV6 : ETH_P_IP;
  return ethernet({ type, payload: packet, ...o });
}

/**
 * An ICMP error (v4: destination unreachable / fragmentation needed; v6: packet too big) from a
 * router on the path back to the client, about a packet the real server sent from VIP:vport to
 * client:cport; it is addressed to the VIP, so it reaches the director. `quoteBytes` caps the
 * quoted packet (v4 routers quote the header + 8 bytes; v6 as much as fits in 1280).
 */
export function icmpErrorFrame(o: {
  router: string;
  vip: string;
  vport: number;
  client: string;
  cport: number;
  proto: L4;
  mtu?: number;
  vlan?: number;
  quoteBytes?: number;
  type?: number;
  code?: number;
}): Buffer {
  const reply = ipPacket({
    src: o.vip,
    dst: o.client,
    proto: o.proto,
    sport: o.vport,
    dport: o.cport,
    flags: TCP_SYN | TCP_ACK,
    payload: Buffer.alloc(64, 0x61),
  });
  if (isV6(o.vip)) {
    const quoted = reply.subarray(0, Math.min(reply.length, o.quoteBytes ?? reply.length));
    const msg = icmp6Error({ type: o.type, code: o.code, mtu: o.mtu ?? 1280, quoted });
    return ethernet({ vlan: o.vlan, type: ETH_P_IPV6, payload: ipv6({ src: o.router, dst: o.vip, nextHeader: IPPROTO_ICMPV6, payload: msg }) });
  }
  const ihl = (reply[0]! & 0xf) * 4;
  const quoted = reply.subarray(0, Math.min(reply.length, o.quoteBytes ?? ihl + 8));
  const msg = icmp4Error({ type: o.type, code: o.code, mtu: o.mtu ?? 1400, quoted });
  return ethernet({ vlan: o.vlan, type: ETH_P_IP, payload: ipv4({ src: o.router, dst: o.vip, protocol: IPPROTO_ICMP, payload: msg }) });
}

/** The first `length` bytes of a frame (a copy). */
export function truncate(frame: Buffer, length: number): Buffer {
  return Buffer.from(frame.subarray(0, Math.max(0, Math.min(length, frame.length))));
}

/** Where the IP header starts in a frame built here (after Ethernet and an optional tag). */
export function l3Offset(frame: Buffer): number {
  const type = frame.readUInt16BE(12);
  return type === ETH_P_8021Q || type === ETH_P_8021AD ? 18 : 14;
}

/** Re-computes the IPv4 header checksum of a frame in place, after a test edited the header. */
export function fixIpv4Checksum(frame: Buffer): Buffer {
  const at = l3Offset(frame);
  const ihl = (frame[at]! & 0xf) * 4;
  frame.writeUInt16BE(0, at + 10);
  frame.writeUInt16BE(inetChecksum(frame.subarray(at, at + Math.max(20, Math.min(ihl, frame.length - at)))), at + 10);
  return frame;
}
