/* SPDX-License-Identifier: MIT */
/*
 * Packet parsing. The rule for what cannot be parsed: a frame is only ever forwarded when every
 * header up to and including the TCP/UDP ports is present and consistent. Anything else goes to
 * the kernel unchanged (XDP_PASS), whose own checks drop malformed IP. Nothing is rewritten here.
 */
#ifndef XDPVS_PARSE_H
#define XDPVS_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_endian.h>
#include "xdpvs_abi.h"

#ifndef NULL
#define NULL ((void *)0)
#endif

struct xdpvs_vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* What the pipeline needs to know about a frame, seen from the client's side of the flow. */
struct xdpvs_packet {
	struct xdpvs_flow flow;
	__u32 len;       /* whole frame, for byte counters */
	__u8 tcp_flags;  /* byte 13 of the TCP header; 0 for UDP */
	__u8 fragment;   /* an IP fragment: no ports to read */
	__u8 icmp_error; /* an ICMP error about a flow of a service: flow is the inner one, reversed */
	__u8 pad;
};

#define XDPVS_TCP_FIN 0x01
#define XDPVS_TCP_SYN 0x02
#define XDPVS_TCP_RST 0x04
#define XDPVS_TCP_ACK 0x10

enum xdpvs_parse {
	XDPVS_PARSED = 0,
	XDPVS_NOT_IP = 1, /* or not parsable: pass to the kernel */
};

/*
 * Whether a destination may be a VIP, from the address word the generated match switches on (an
 * IPv4 address, an IPv6 address's last word). Defined by the generated program; a "no" is
 * certain, so a frame for no VIP goes to the kernel before anything beyond its address is read.
 */
static __always_inline int xdpvs_maybe_vip(__u32 word);

#define XDPVS_IP_MF 0x2000
#define XDPVS_IP_OFFSET 0x1fff

/*
 * Ports of a TCP or UDP header at l4 (both start with source and destination port). l4_len is
 * the length of the L4 part as the IP header states it: the TCP or UDP header must lie within
 * it, not only within the frame (bytes after the IP packet are Ethernet padding).
 */
static __always_inline int xdpvs_parse_ports(struct xdpvs_packet *pkt, void *l4, void *end, __u8 proto, __u32 l4_len)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > end || th->doff < 5 || th->doff * 4 > l4_len)
			return XDPVS_NOT_IP;
		pkt->tcp_flags = ((__u8 *)th)[13];
	} else if (proto == IPPROTO_UDP) {
		if (l4 + sizeof(struct udphdr) > end || l4_len < sizeof(struct udphdr))
			return XDPVS_NOT_IP;
	} else {
		return XDPVS_NOT_IP;
	}
	/*
	 * Both ports in one 32-bit store: the flow hash reads them back as one word, and a load that
	 * spans two narrower stores cannot be forwarded from the store buffer (it costs ~8 ns).
	 */
	*(__u32 *)&pkt->flow.sport = *(__u32 *)l4;
	pkt->flow.proto = proto;
	return XDPVS_PARSED;
}

/*
 * An IPv4 header at l3 with its options; returns where its payload starts or NULL. Only the
 * first 8 bytes of the payload are required: an ICMP error quotes no more than that.
 */
static __always_inline void *xdpvs_parse_ipv4_header(struct iphdr *ip, void *end)
{
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
		return NULL;
	void *l4 = (void *)ip + ip->ihl * 4;
	if (l4 + 8 > end)
		return NULL;
	return l4;
}

/*
 * ICMP errors about a flow of a service reach the VIP (the real servers answer from it): a
 * "fragmentation needed" must reach the real server that sent the packet, or path MTU discovery
 * breaks. The quoted packet went from the VIP to the client, so its flow read backwards is the
 * client's flow, and it hashes to the same real server.
 */
static __always_inline int xdpvs_parse_icmp4_error(struct xdpvs_packet *pkt, struct icmphdr *icmp, void *end, __u32 len)
{
	if ((void *)(icmp + 1) > end)
		return XDPVS_NOT_IP;
	if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED)
		return XDPVS_NOT_IP;
	struct iphdr *inner = (void *)(icmp + 1);
	void *l4 = xdpvs_parse_ipv4_header(inner, end);
	if (!l4 || (inner->protocol != IPPROTO_TCP && inner->protocol != IPPROTO_UDP) ||
	    len < sizeof(*icmp) + inner->ihl * 4 + 8) /* the quote must lie within the packet */
		return XDPVS_NOT_IP;
	struct udphdr *ports = l4;
	pkt->flow.saddr[0] = inner->daddr;
	pkt->flow.daddr[0] = inner->saddr;
	pkt->flow.sport = ports->dest;
	pkt->flow.dport = ports->source;
	pkt->flow.proto = inner->protocol;
	pkt->icmp_error = 1;
	return XDPVS_PARSED;
}

/*
 * Starts the packet's record once its destination may be a VIP: a frame for no VIP is not worth
 * clearing the record for (IPv4 flows leave three address words zero in the key, so it must be
 * cleared whole).
 */
static __always_inline void xdpvs_packet_start(struct xdpvs_packet *pkt, __u32 len)
{
	__builtin_memset(pkt, 0, sizeof(*pkt));
	pkt->len = len;
}

static __always_inline int xdpvs_parse_ipv4(struct xdpvs_packet *pkt, struct iphdr *ip, void *end, __u32 len)
{
	if ((void *)(ip + 1) > end || !xdpvs_maybe_vip(ip->daddr))
		return XDPVS_NOT_IP;
	xdpvs_packet_start(pkt, len);
	void *l4 = xdpvs_parse_ipv4_header(ip, end);

	if (!l4 || bpf_ntohs(ip->tot_len) < ip->ihl * 4 || (void *)ip + bpf_ntohs(ip->tot_len) > end)
		return XDPVS_NOT_IP; /* a truncated packet is never forwarded */
	pkt->flow.family = 4;
	pkt->flow.saddr[0] = ip->saddr;
	pkt->flow.daddr[0] = ip->daddr;
	pkt->flow.proto = ip->protocol;
	if (ip->frag_off & bpf_htons(XDPVS_IP_MF | XDPVS_IP_OFFSET)) {
		pkt->fragment = 1;
		return XDPVS_PARSED;
	}
	if (ip->protocol == IPPROTO_ICMP)
		return xdpvs_parse_icmp4_error(pkt, l4, end, bpf_ntohs(ip->tot_len) - ip->ihl * 4);
	return xdpvs_parse_ports(pkt, l4, end, ip->protocol, bpf_ntohs(ip->tot_len) - ip->ihl * 4);
}

static __always_inline void xdpvs_copy_ipv6(__u32 *dst, struct in6_addr *src)
{
	dst[0] = src->in6_u.u6_addr32[0];
	dst[1] = src->in6_u.u6_addr32[1];
	dst[2] = src->in6_u.u6_addr32[2];
	dst[3] = src->in6_u.u6_addr32[3];
}

static __always_inline int xdpvs_parse_icmp6_error(struct xdpvs_packet *pkt, struct icmp6hdr *icmp, void *end, __u32 len)
{
	if ((void *)(icmp + 1) > end)
		return XDPVS_NOT_IP;
	if (icmp->icmp6_type != ICMPV6_DEST_UNREACH && icmp->icmp6_type != ICMPV6_PKT_TOOBIG &&
	    icmp->icmp6_type != ICMPV6_TIME_EXCEED)
		return XDPVS_NOT_IP;
	struct ipv6hdr *inner = (void *)(icmp + 1);
	struct udphdr *ports = (void *)(inner + 1);
	if ((void *)(ports + 1) > end || (inner->nexthdr != IPPROTO_TCP && inner->nexthdr != IPPROTO_UDP) ||
	    len < sizeof(*icmp) + sizeof(*inner) + sizeof(*ports)) /* the quote must lie within the packet */
		return XDPVS_NOT_IP;
	xdpvs_copy_ipv6(pkt->flow.saddr, &inner->daddr);
	xdpvs_copy_ipv6(pkt->flow.daddr, &inner->saddr);
	pkt->flow.sport = ports->dest;
	pkt->flow.dport = ports->source;
	pkt->flow.proto = inner->nexthdr;
	pkt->icmp_error = 1;
	return XDPVS_PARSED;
}

/*
 * IPv6 extension headers other than a fragment header are not walked: such packets go to the
 * kernel. A fragment header marks the packet as a fragment.
 */
static __always_inline int xdpvs_parse_ipv6(struct xdpvs_packet *pkt, struct ipv6hdr *ip6, void *end, __u32 len)
{
	if ((void *)(ip6 + 1) > end || !xdpvs_maybe_vip(ip6->daddr.in6_u.u6_addr32[3]) || ip6->version != 6 ||
	    (void *)(ip6 + 1) + bpf_ntohs(ip6->payload_len) > end)
		return XDPVS_NOT_IP;
	xdpvs_packet_start(pkt, len);
	pkt->flow.family = 6;
	xdpvs_copy_ipv6(pkt->flow.saddr, &ip6->saddr);
	xdpvs_copy_ipv6(pkt->flow.daddr, &ip6->daddr);
	pkt->flow.proto = ip6->nexthdr;
	void *l4 = ip6 + 1;
	if (ip6->nexthdr == IPPROTO_FRAGMENT) {
		__u8 *frag = l4;
		if (l4 + 8 > end)
			return XDPVS_NOT_IP;
		pkt->flow.proto = frag[0];
		pkt->fragment = 1;
		return XDPVS_PARSED;
	}
	if (ip6->nexthdr == IPPROTO_ICMPV6)
		return xdpvs_parse_icmp6_error(pkt, l4, end, bpf_ntohs(ip6->payload_len));
	return xdpvs_parse_ports(pkt, l4, end, ip6->nexthdr, bpf_ntohs(ip6->payload_len));
}

/* Ethernet, at most one 802.1Q/802.1ad tag, then IPv4 or IPv6. */
static __always_inline int xdpvs_parse(struct xdp_md *ctx, struct xdpvs_packet *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l3 = eth + 1;

	if (l3 > end)
		return XDPVS_NOT_IP;
	__be16 proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct xdpvs_vlan_hdr *vlan = l3;
		if ((void *)(vlan + 1) > end)
			return XDPVS_NOT_IP;
		proto = vlan->proto;
		l3 = vlan + 1;
	}
	if (proto == bpf_htons(ETH_P_IP))
		return xdpvs_parse_ipv4(pkt, l3, end, end - data);
	if (proto == bpf_htons(ETH_P_IPV6))
		return xdpvs_parse_ipv6(pkt, l3, end, end - data);
	return XDPVS_NOT_IP;
}

#endif
