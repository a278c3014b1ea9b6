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

/* Defined by the generated program: its tables, and its persistent services' settings. */
static __always_inline __u32 *xdpvs_ring_lookup(__u32 ring_class, __u32 svc, __u32 position, int step);
struct xdpvs_persistence {
	__u64 timeout_ns;
	__u32 prefix; /* client address bits that group clients, as ipvsadm -M */
	__u32 pad;
};
static __always_inline const struct xdpvs_persistence *xdpvs_persistence_of(__u32 svc);

/* Schedulers: how a service's table is read. */
#define XDPVS_SCHED_MAGLEV 0 /* a Maglev table indexed by the flow hash: consistent */
#define XDPVS_SCHED_SH 1     /* the same table indexed by the client address: consistent */
#define XDPVS_SCHED_WRR 2    /* a weighted round-robin sequence, walked one step per new flow */
#define XDPVS_SCHED_RR 3     /* the same with equal weights */
#define XDPVS_SCHED_LC 4     /* fewer active flows of two candidates drawn from a Maglev table */
#define XDPVS_SCHED_WLC 5    /* the same, relative to weight */
#define XDPVS_PERSISTENT 0x40 /* or-ed into the scheduler: clients stick, as ipvsadm -p */

/*
 * A service reference, as the generated match returns it: one constant that says which table
 * (id in its size class's map of tables) and how to use it. Bit 31 keeps it apart from the
 * match's other results.
 */
#define XDPVS_SERVICE(id, ring_class, sched) (1u << 31 | (sched) << 24 | (ring_class) << 16 | (id))
#define XDPVS_SERVICE_ID(ref) ((ref) & 0xffff)
#define XDPVS_SERVICE_RING_CLASS(ref) (((ref) >> 16) & 0xff)
#define XDPVS_SERVICE_SCHED(ref) (((ref) >> 24) & 0x3f)
#define XDPVS_SERVICE_PERSISTENT(ref) (((ref) >> 24) & XDPVS_PERSISTENT)

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

static __always_inline int xdpvs_consistent(__u32 sched)
{
	return sched == XDPVS_SCHED_MAGLEV || sched == XDPVS_SCHED_SH;
}

/*
 * Whether this packet must consult the connection table: its slot changed recently, it may open
 * a flow (TCP SYN, and every UDP datagram since UDP has no handshake to mark a start), or it
 * closes one (FIN/RST shortens the idle timeout). So must every packet of a service whose
 * scheduler is not a consistent hash, or that is persistent. Everything else is an established
 * TCP packet on an unchanged slot: consistent hashing already gives the backend it was recorded
 * with.
 */
static __always_inline int xdpvs_needs_conn(const struct xdpvs_packet *pkt, __u32 service, __u32 entry)
{
	if (entry & XDPVS_RING_DIRTY || pkt->flow.proto != IPPROTO_TCP || XDPVS_SERVICE_PERSISTENT(service) ||
	    !xdpvs_consistent(XDPVS_SERVICE_SCHED(service)))
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

static __always_inline void xdpvs_add_active(__u32 b, __s64 n)
{
	__s64 *active = bpf_map_lookup_elem(&backend_active, &b);

	if (active)
		__sync_fetch_and_add(active, n);
}

static __always_inline __s64 xdpvs_active(__u32 b)
{
	__s64 *active = bpf_map_lookup_elem(&backend_active, &b);

	return active && *active > 0 ? *active : 0;
}

/*
 * Least connections at XDP: the director cannot scan every backend per packet, so it draws two
 * candidates from the service's weighted Maglev table and takes the one with fewer active flows
 * (relative to weight for wlc) — the "power of two choices", which keeps the load close to the
 * least-loaded backends' without a loop over them.
 */
static __always_inline __u32 xdpvs_least(__u32 service, __u32 hash, __u32 first)
{
	__u32 *slot = xdpvs_ring_lookup(XDPVS_SERVICE_RING_CLASS(service), XDPVS_SERVICE_ID(service),
					 hash * 0x9E3779B1u + 0x7F4A7C15u, 0);
	if (!slot)
		return first;
	__u32 second = *slot & XDPVS_RING_BACKEND_MASK;
	__s64 a = xdpvs_active(first), b = xdpvs_active(second);
	if (XDPVS_SERVICE_SCHED(service) == XDPVS_SCHED_WLC) {
		struct xdpvs_backend *fa = bpf_map_lookup_elem(&backends, &first);
		struct xdpvs_backend *fb = bpf_map_lookup_elem(&backends, &second);
		if (!fa || !fb)
			return first;
		a *= fb->weight;
		b *= fa->weight;
	}
	return b < a ? second : first;
}

/* The scheduler's choice for a new flow, or XDPVS_RING_NONE. */
static __always_inline __u32 xdpvs_schedule(__u32 service, __u32 hash, __u32 entry)
{
	__u32 sched = XDPVS_SERVICE_SCHED(service);
	__u32 b = entry & XDPVS_RING_BACKEND_MASK;

	if (sched == XDPVS_SCHED_WRR || sched == XDPVS_SCHED_RR) {
		__u32 svc = XDPVS_SERVICE_ID(service);
		__u32 *cursor = bpf_map_lookup_elem(&rr_cursor, &svc);
		if (!cursor)
			return XDPVS_RING_NONE;
		__u32 *slot = xdpvs_ring_lookup(XDPVS_SERVICE_RING_CLASS(service), svc, (*cursor)++, 1);
		return slot ? *slot & XDPVS_RING_BACKEND_MASK : XDPVS_RING_NONE;
	}
	if ((sched == XDPVS_SCHED_LC || sched == XDPVS_SCHED_WLC) && b != XDPVS_RING_NONE)
		return xdpvs_least(service, hash, b);
	return b;
}

/*
 * Whether a new flow may be recorded: at most XDPVS_CONN_RECORD_RATE per second per CPU, with a
 * burst of one second's worth. Beyond that a flood of new flows (a SYN flood) is forwarded all
 * the same but cannot push recorded flows out of the connection table any faster.
 */
static __always_inline int xdpvs_may_record(__u64 now)
{
	__u32 zero = 0;
	struct xdpvs_record_budget *budget = bpf_map_lookup_elem(&record_budget, &zero);

	if (!budget)
		return 0;
	__u64 elapsed = now - budget->refilled_ns;
	if (elapsed >= 1000000000ull) {
		budget->tokens = XDPVS_CONN_RECORD_RATE;
		budget->refilled_ns = now;
	} else if (elapsed >= 1000000000ull / XDPVS_CONN_RECORD_RATE + 1) {
		__u64 add = elapsed * XDPVS_CONN_RECORD_RATE / 1000000000ull;
		budget->tokens = budget->tokens + add > XDPVS_CONN_RECORD_RATE ? XDPVS_CONN_RECORD_RATE : budget->tokens + add;
		budget->refilled_ns += add * 1000000000ull / XDPVS_CONN_RECORD_RATE;
	}
	if (budget->tokens == 0)
		return 0;
	budget->tokens--;
	return 1;
}

/* The persistence entry of the packet's client for this service, masked to its prefix. */
static __always_inline void xdpvs_persist_key(struct xdpvs_persist_key *key, const struct xdpvs_packet *pkt, __u32 svc,
					      __u32 prefix)
{
	key->service = svc;
	key->family = pkt->flow.family;
	for (int i = 0; i < 4; i++) {
		__u32 bits = prefix > 32 * i ? prefix - 32 * i : 0;
		__u32 mask = bits >= 32 ? 0xffffffffu : bits == 0 ? 0 : ~(0xffffffffu >> bits);
		key->client[i] = pkt->flow.saddr[i] & __builtin_bswap32(mask);
	}
}

__noinline int xdpvs_forward(struct xdp_md *ctx, struct xdpvs_packet *pkt, __u32 service)
{
	if (!pkt)
		return XDP_ABORTED;

	__u32 svc = XDPVS_SERVICE_ID(service);
	__u32 hash = XDPVS_SERVICE_SCHED(service) == XDPVS_SCHED_SH ? xdpvs_hash_source(&pkt->flow)
								   : xdpvs_hash_flow(&pkt->flow);
	__u32 *slot = xdpvs_ring_lookup(XDPVS_SERVICE_RING_CLASS(service), svc, hash, 0);
	if (!slot)
		return xdpvs_count_total(XDPVS_TOTAL_DROP_NO_BACKEND, XDP_DROP);
	__u32 entry = *slot;
	__u32 b = entry & XDPVS_RING_BACKEND_MASK;
	struct xdpvs_backend *be = NULL;
	int needs_conn = xdpvs_needs_conn(pkt, service, entry);
	int new_flow = 0;
	__u64 now = 0;
	const struct xdpvs_persistence *persistence = NULL;
	struct xdpvs_persist_key pkey;

	if (needs_conn) {
		now = bpf_ktime_get_coarse_ns();
		struct xdpvs_conn *conn = bpf_map_lookup_elem(&conns, &pkt->flow);

		/*
		 * A SYN on the 5-tuple of a flow that closed (FIN/RST seen) is a new connection that
		 * reuses the client's port: it is scheduled afresh (as IPVS's conn_reuse_mode), and the
		 * old entry goes, so its later packets cannot follow the old flow's backend either.
		 */
		if (conn && conn->flags & XDPVS_CONN_CLOSING && pkt->flow.proto == IPPROTO_TCP && xdpvs_starts_flow(pkt)) {
			bpf_map_delete_elem(&conns, &pkt->flow);
			conn = NULL;
		}
		if (conn && now - conn->last_seen_ns <= xdpvs_timeout_ns(&pkt->flow, conn->flags))
			be = xdpvs_backend_of(svc, conn->backend);
		if (be) {
			b = conn->backend;
			if (!pkt->icmp_error) {
				__u32 closing = xdpvs_closing(pkt);
				if (closing && !(conn->flags & XDPVS_CONN_CLOSING))
					xdpvs_add_active(b, -1);
				conn->last_seen_ns = now;
				conn->flags |= closing;
			}
		}
	}
	if (XDPVS_SERVICE_PERSISTENT(service) && !pkt->icmp_error) {
		persistence = xdpvs_persistence_of(svc);
		if (persistence) {
			xdpvs_persist_key(&pkey, pkt, svc, persistence->prefix);
			struct xdpvs_persist *p = bpf_map_lookup_elem(&persist, &pkey);
			if (p && !be && now - p->last_seen_ns <= persistence->timeout_ns && xdpvs_backend_of(svc, p->backend))
				entry = p->backend; /* the client's backend, as if the table had chosen it */
			else if (!be)
				entry = xdpvs_schedule(service, hash, entry);
		}
	} else if (!be && needs_conn) {
		entry = xdpvs_schedule(service, hash, entry);
	}
	if (!be) {
		/* a new flow, or a recorded one whose backend is gone */
		b = entry & XDPVS_RING_BACKEND_MASK;
		be = xdpvs_backend_of(svc, b);
		if (!be)
			return xdpvs_count_total(XDPVS_TOTAL_DROP_NO_BACKEND, XDP_DROP);
		if (needs_conn && !pkt->icmp_error) {
			struct xdpvs_conn fresh = { .backend = b, .flags = xdpvs_closing(pkt), .last_seen_ns = now };

			new_flow = xdpvs_starts_flow(pkt);
			if (!xdpvs_may_record(now)) {
				xdpvs_count_total(XDPVS_TOTAL_UNRECORDED, 0);
			} else {
				if (!fresh.flags)
					xdpvs_add_active(b, 1);
				bpf_map_update_elem(&conns, &pkt->flow, &fresh, BPF_ANY);
			}
		}
	}
	if (persistence) {
		/* the client stays with its backend for the timeout after its last packet */
		struct xdpvs_persist stick = { .backend = b, .last_seen_ns = now };
		bpf_map_update_elem(&persist, &pkey, &stick, BPF_ANY);
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
