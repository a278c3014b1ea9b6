/* SPDX-License-Identifier: MIT */
/*
 * The maps every generated program has. Their names are the pin names under
 * /sys/fs/bpf/xdpvs/<iface>/ and are listed once more, for the control plane, in src/abi.ts.
 * The scheduling tables depend on the services and are declared by the generated program.
 */
#ifndef XDPVS_MAPS_H
#define XDPVS_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "xdpvs_abi.h"
#include "hash.h"

#ifndef XDPVS_CONN_TABLE_SIZE
#define XDPVS_CONN_TABLE_SIZE 1048576
#endif

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDPVS_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct xdpvs_backend);
} backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPVS_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct xdpvs_counters);
} backend_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPVS_TOTAL_MAX);
	__type(key, __u32);
	__type(value, __u64);
} totals SEC(".maps");

/*
 * Flows as they start, so that a flow stays on its real server when the scheduling table
 * changes. When full, the least recently used entry goes first.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XDPVS_CONN_TABLE_SIZE);
	__type(key, struct xdpvs_flow);
	__type(value, struct xdpvs_conn);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDPVS_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, __s64);
} backend_active SEC(".maps");

/* Client affinity of persistent services (ipvsadm -p): when full, the least recently used goes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XDPVS_CONN_TABLE_SIZE);
	__type(key, struct xdpvs_persist_key);
	__type(value, struct xdpvs_persist);
} persist SEC(".maps");

/* Each CPU's budget of new connection-table records (a token bucket). */
struct xdpvs_record_budget {
	__u64 tokens;
	__u64 refilled_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdpvs_record_budget);
} record_budget SEC(".maps");

/* Each CPU's position in the round-robin tables, per service. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPVS_SERVICE_COUNT);
	__type(key, __u32);
	__type(value, __u32);
} rr_cursor SEC(".maps");

/*
 * One map of scheduling tables per size class: svc -> table of XDPVS ring entries. All tables
 * of a class have the same size, so the kernel inlines the lookups; a table is replaced whole by
 * swapping the inner map, so a packet never sees one half-written.
 */
#define XDPVS_RING_CLASS(name, size)                                    \
	struct name##_table {                                           \
		__uint(type, BPF_MAP_TYPE_ARRAY);                       \
		__uint(max_entries, size);                              \
		__type(key, __u32);                                     \
		__type(value, __u32);                                   \
	};                                                              \
	struct {                                                        \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);               \
		__uint(max_entries, XDPVS_SERVICE_COUNT);               \
		__type(key, __u32);                                     \
		__array(values, struct name##_table);                   \
	} name SEC(".maps")

/* Slot `position` of a service's table: a hash (spread over the table) or a round-robin step. */
static __always_inline __u32 *xdpvs_ring_entry(void *rings, __u32 svc, __u32 position, int step, __u32 size)
{
	void *table = bpf_map_lookup_elem(rings, &svc);

	if (!table)
		return NULL;
	__u32 slot = step ? position % size : xdpvs_slot(position, size);
	return bpf_map_lookup_elem(table, &slot);
}

#endif
