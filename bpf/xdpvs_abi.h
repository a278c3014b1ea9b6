/* SPDX-License-Identifier: MIT */
/*
 * The ABI between the XDP program and the xdpvs control plane: limits, flags and every struct
 * that lives in a map. This is the only definition; src/abi.ts holds the TypeScript codecs and
 * test/abi.test.ts checks them against the BTF of a compiled program, so the two cannot drift.
 *
 * Byte order: fields named *addr and *port hold network byte order, exactly as on the wire,
 * so the data path copies them without swapping. Everything else is host order.
 */
#ifndef XDPVS_ABI_H
#define XDPVS_ABI_H

#include <linux/types.h>

#define XDPVS_MAX_BACKENDS 65536 /* all services together, as the design promises */

/* Scheduling table entry: backend index in the low 24 bits, plus a flag. */
#define XDPVS_RING_BACKEND_MASK 0x00ffffffu
#define XDPVS_RING_NONE 0x00ffffffu /* no backend can take new flows */
/*
 * Set on slots whose backend changed while flows recorded in the connection table may still
 * belong to the old one. Only packets hashing to such a slot pay for a connection-table lookup.
 */
#define XDPVS_RING_DIRTY 0x80000000u

/* backends[index] */
#define XDPVS_BACKEND_PRESENT 0x1 /* the index is allocated to a backend of `service` */
struct xdpvs_backend {
	__u8 mac[6];
	__u16 flags;
	__u32 service;
	__u32 weight; /* as scheduled (0 while drained or down): least-connection schedulers divide by it */
};

/*
 * backend_active[index]: flows the director saw open minus those it saw close (FIN/RST), for the
 * least-connection schedulers. Flows that end silently are corrected by the control plane,
 * which recounts the connection table whenever it applies services.
 */

/* backend_stats[index], per CPU. Services are the sum of their backends. */
struct xdpvs_counters {
	__u64 connections; /* new flows scheduled, as IPVS's "Conns" */
	__u64 packets;
	__u64 bytes;
};

/* totals[reason], per CPU: frames not forwarded, by reason. Forwarded = sum of backend_stats. */
enum xdpvs_total {
	XDPVS_TOTAL_PASSED = 0,		/* not for a service (or unparsable): handed to the kernel */
	XDPVS_TOTAL_DROP_FRAGMENT = 1,	/* an IP fragment for a service: cannot be hashed consistently */
	XDPVS_TOTAL_DROP_NO_BACKEND = 2,	/* for a service that has no backend to take it */
	XDPVS_TOTAL_UNRECORDED = 3,	/* new flows forwarded but not recorded: over connRecordRate */
	XDPVS_TOTAL_MAX = 4,
};

/* conns key: a flow as the client sent it. IPv4 addresses use word 0, the rest stay zero. */
struct xdpvs_flow {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family; /* 4 or 6: keeps an IPv4 flow apart from an IPv6 one with the same words */
	__u16 pad;
};

/* persist key: a client (its address masked to the service's persistence prefix) of a service */
struct xdpvs_persist_key {
	__u32 service;
	__u32 family;
	__u32 client[4];
};

/* persist value */
struct xdpvs_persist {
	__u32 backend;
	__u32 pad;
	__u64 last_seen_ns;
};

/* conns value */
#define XDPVS_CONN_CLOSING 0x1 /* FIN or RST seen: the shorter timeout applies */
struct xdpvs_conn {
	__u32 backend;
	__u32 flags;
	__u64 last_seen_ns; /* bpf_ktime_get_coarse_ns() */
};

#endif
