/* SPDX-License-Identifier: MIT */
/*
 * The flow hash. src/sched/hash.ts computes the same function bit for bit (the control plane
 * needs it to know which slot a recorded flow hashes to), and test/datapath.test.ts checks the
 * two agree. Words are plain loads of network-order bytes, so nothing is byte-swapped here.
 * It has no secret seed on purpose: directors with the same backends must agree.
 */
#ifndef XDPVS_HASH_H
#define XDPVS_HASH_H

#include <linux/types.h>
#include "xdpvs_abi.h"

#define XDPVS_HASH_INIT 0x9E3779B97F4A7C15ull

static __always_inline __u64 xdpvs_mix(__u64 h, __u32 w)
{
	h = (h ^ w) * 0xFF51AFD7ED558CCDull;
	return h ^ (h >> 32);
}

static __always_inline __u32 xdpvs_finish(__u64 h)
{
	h = (h ^ (h >> 33)) * 0xC4CEB9FE1A85EC53ull;
	return (__u32)(h ^ (h >> 33));
}

/* Address words: 1 for IPv4, 4 for IPv6. */
static __always_inline __u64 xdpvs_mix_addr(__u64 h, const __u32 *addr, __u8 family)
{
	h = xdpvs_mix(h, addr[0]);
	if (family == 6) {
		h = xdpvs_mix(h, addr[1]);
		h = xdpvs_mix(h, addr[2]);
		h = xdpvs_mix(h, addr[3]);
	}
	return h;
}

static __always_inline __u32 xdpvs_hash_flow(const struct xdpvs_flow *f)
{
	__u64 h = xdpvs_mix_addr(XDPVS_HASH_INIT, f->saddr, f->family);
	h = xdpvs_mix_addr(h, f->daddr, f->family);
	h = xdpvs_mix(h, (__u32)f->sport | (__u32)f->dport << 16);
	h = xdpvs_mix(h, f->proto);
	return xdpvs_finish(h);
}

static __always_inline __u32 xdpvs_hash_source(const struct xdpvs_flow *f)
{
	return xdpvs_finish(xdpvs_mix_addr(XDPVS_HASH_INIT, f->saddr, f->family));
}

/* Lemire's multiply-shift: a uniform slot in [0, size) without a division. */
static __always_inline __u32 xdpvs_slot(__u32 hash, __u32 size)
{
	return (__u32)(((__u64)hash * size) >> 32);
}

#endif
