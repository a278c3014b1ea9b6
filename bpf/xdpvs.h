/* SPDX-License-Identifier: MIT */
/*
 * Everything a generated program includes: the pipeline and the macros its service matching
 * is written with. Addresses and ports in generated code are compared in network byte order
 * as loaded from the packet, so the macros build those constants at compile time.
 */
#ifndef XDPVS_H
#define XDPVS_H

#include "forward.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the constants below assume the little-endian BPF target (bpfel)"
#endif

#define XDPVS_BE16(x) ((__u16)((((x) & 0xff) << 8) | (((x) >> 8) & 0xff)))
#define XDPVS_BE32(x) ((__u32)((((x) & 0xffu) << 24) | (((x) & 0xff00u) << 8) | \
			       (((x) >> 8) & 0xff00u) | (((x) >> 24) & 0xffu)))
#define XDPVS_IPV4(a, b, c, d) ((__u32)(a) | (__u32)(b) << 8 | (__u32)(c) << 16 | (__u32)(d) << 24)
/* The first three words of an IPv6 address; generated code switches on the fourth. */
#define XDPVS_IPV6_HEAD(addr, w0, w1, w2) \
	((addr)[0] == XDPVS_BE32(w0) && (addr)[1] == XDPVS_BE32(w1) && (addr)[2] == XDPVS_BE32(w2))

/* What the generated match functions return: one of these, or a service reference. */
#define XDPVS_NO_MATCH 0 /* not for a service: the kernel gets it */
#define XDPVS_FRAGMENT 1 /* a fragment for a VIP and protocol with services: dropped */

/* The fields every match compares, read once. */
#define XDPVS_MATCH_LOCALS(pkt)                 \
	const __u8 proto = (pkt)->flow.proto;   \
	const __u16 dport = (pkt)->flow.dport;  \
	const __u8 fragment = (pkt)->fragment

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#endif
