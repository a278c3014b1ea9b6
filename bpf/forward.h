/* SPDX-License-Identifier: MIT */
/*
 * The forwarding pipeline for a packet of a service: choose the real server, rewrite the
 * Ethernet header, count, XDP_TX. The generated program defines the XDPVS_*_TIMEOUT_NS
 * constants before including this file, and xdpvs_ring_lookup() (its scheduling tables) after.
 */
#ifndef XDPVS_FORWARD_H
#define XDPVS_FORWARD_H

#include "parse.h"
#include "maps.h"
#include "hash.h"

static __always_inline __u32 *xdpvs_ring_lookup(__u32 ring_class, __u32 svc, __u32 hash);

/* Schedulers: how a service's table is indexed. */
#define XDPVS_SCHED_MAGLEV 0 /* the table is a Maglev permutation of the flow hash */
#define XDPVS_SCHED_SH 1     /* the same table, indexed by the client address only */

/*
 * A service reference, as the generated match returns it: one constant that says which table
 * (id in its size class's map of tables) and how to index it. Bit 31 keeps it apart from the
 * match's other results.
 */
#define XDPVS_SERVICE(id, ring_class, sched) (1u << 31 | (sched) << 24 | (ring_class) << 16 | (id))
#define XDPVS_SERVICE_ID(ref) ((ref) & 0xffff)
#define XDPVS_SERVICE_RING_CLASS(ref) (((ref) >> 16) & 0xff)
#define XDPVS_SERVICE_SCHED(ref) (((ref) >> 24) & 0x7f)

static __always_inline int xdpvs_count_total(__u32 reason, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&totals, &reason);

	if (n)
		*n += 1;
	return verdict;
}

static __always_inline __u64 xdpvs_timeout_ns(const struct xdpvs_flow *f, __u32 conn_flags)
{
	if (f->proto == IPPROTO_UDP)
		return XDPVS_UDP_TIMEOUT_NS;
	return conn_flags & XDPVS_CONN_CLOSING ? XDPVS_TCP_FIN_TIMEOUT_NS : XDPVS_TCP_TIMEOUT_NS;
}

/* The backend at index b when it still belongs to svc, else NULL. */
static __always_inline struct xdpvs_backend *xdpvs_backend_of(__u32 svc, __u32 b)
{
	struct xdpvs_backend *be = bpf_map_lookup_elem(&backends, &b);

	if (!be || !(be->flags & XDPVS_BACKEND_PRESENT) || be->service != svc)
		return NULL;
	return be;
}

/*
 * Whether this packet must consult the connection table: its slot changed recently, it may open
 * a flow (TCP SYN, and every UDP datagram since UDP has no handshake to mark a start), or it
 * closes one (FIN/RST shortens the idle timeout). Everything else is an established TCP packet
 * on an unchanged slot: consistent hashing already gives the backend it was recorded with.
 */
static __always_inline int xdpvs_needs_conn(const struct xdpvs_packet *pkt, __u32 entry)
{
	if (entry & XDPVS_RING_DIRTY || pkt->flow.proto != IPPROTO_TCP)
		return 1;
	return pkt->tcp_flags & (XDPVS_TCP_SYN | XDPVS_TCP_FIN | XDPVS_TCP_RST);
}

static __always_inline __u32 xdpvs_closing(const struct xdpvs_packet *pkt)
{
	return pkt->tcp_flags & (XDPVS_TCP_FIN | XDPVS_TCP_RST) ? XDPVS_CONN_CLOSING : 0;
}

/* A flow starts with a SYN or a first datagram; other packets missing from the table belong to
 * flows that started before the table knew them (another director, an earlier table). */
static __always_inline int xdpvs_starts_flow(const struct xdpvs_packet *pkt)
{
	return pkt->flow.proto == IPPROTO_UDP ||
	       (pkt->tcp_flags & (XDPVS_TCP_SYN | XDPVS_TCP_ACK)) == XDPVS_TCP_SYN;
}

__noinline int xdpvs_forward(struct xdp_md *ctx, struct xdpvs_packet *pkt, __u32 service)
{
	if (!pkt)
		return XDP_ABORTED;

	__u32 svc = XDPVS_SERVICE_ID(service);
	__u32 hash = XDPVS_SERVICE_SCHED(service) == XDPVS_SCHED_SH ? xdpvs_hash_source(&pkt->flow)
								   : xdpvs_hash_flow(&pkt->flow);
	__u32 *slot = xdpvs_ring_lookup(XDPVS_SERVICE_RING_CLASS(service), svc, hash);
	if (!slot)
		return xdpvs_count_total(XDPVS_TOTAL_DROP_NO_BACKEND, XDP_DROP);
	__u32 entry = *slot;
	__u32 b = entry & XDPVS_RING_BACKEND_MASK;
	struct xdpvs_backend *be = NULL;
	int needs_conn = xdpvs_needs_conn(pkt, entry);
	int new_flow = 0;
	__u64 now = 0;

	if (needs_conn) {
		now = bpf_ktime_get_coarse_ns();
		struct xdpvs_conn *conn = bpf_map_lookup_elem(&conns, &pkt->flow);

		if (conn && now - conn->last_seen_ns <= xdpvs_timeout_ns(&pkt->flow, conn->flags))
			be = xdpvs_backend_of(svc, conn->backend);
		if (be) {
			b = conn->backend;
			if (!pkt->icmp_error) {
				conn->last_seen_ns = now;
				conn->flags |= xdpvs_closing(pkt);
			}
		}
	}
	if (!be) {
		/* the table's choice: a new flow, or a recorded one whose backend is gone */
		be = xdpvs_backend_of(svc, b);
		if (!be)
			return xdpvs_count_total(XDPVS_TOTAL_DROP_NO_BACKEND, XDP_DROP);
		if (needs_conn && !pkt->icmp_error) {
			struct xdpvs_conn fresh = { .backend = b, .flags = xdpvs_closing(pkt), .last_seen_ns = now };

			new_flow = xdpvs_starts_flow(pkt);
			bpf_map_update_elem(&conns, &pkt->flow, &fresh, BPF_ANY);
		}
	}

	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_ABORTED;
	/* DR: the frame was addressed to the director, so its destination MAC is the director's */
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, be->mac, ETH_ALEN);

	struct xdpvs_counters *c = bpf_map_lookup_elem(&backend_stats, &b);
	if (c) {
		c->connections += new_flow;
		c->packets += 1;
		c->bytes += pkt->len;
	}
	return XDP_TX;
}

#endif
