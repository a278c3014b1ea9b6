/**
 * The programs the data-plane benchmark measures xdpvs against, and the harness for flows that
 * are new on every run. All are written here, compiled with clang and loaded through libbpf.
 *
 *  - floor_pass: `return XDP_PASS`, the cost of running any XDP program at all;
 *  - floor_mac_swap: swap the Ethernet addresses and `XDP_TX`, the least any DR forwarder does;
 *  - fresh_flow: adds 1 to the IPv4 source address of an untagged frame and tail-calls the
 *    program in its `target` slot. BPF_PROG_TEST_RUN does not reset the frame between the runs of
 *    one `repeat`, so every run sees a flow never seen before (a true first SYN). Its own cost
 *    (the add and the tail call) is measured by pointing it at floor_pass.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { compileProgram } from '../codegen/clang.js';
import { BpfObject, type BpfMap, type BpfProgram } from '../libbpf.js';
import { u32Key } from '../abi.js';

const FLOORS_C = `// SPDX-License-Identifier: GPL-2.0
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int floor_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int floor_mac_swap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 tmp[ETH_ALEN];

	if ((void *)(eth + 1) > end)
		return XDP_ABORTED;
	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
`;

const FRESH_FLOW_C = `// SPDX-License-Identifier: GPL-2.0
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target SEC(".maps");

/* Ethernet (14) + the IPv4 header up to its source address (12) */
#define SADDR_OFFSET 26

SEC("xdp")
int fresh_flow(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 *saddr = data + SADDR_OFFSET;

	if ((void *)(saddr + 1) > end)
		return XDP_ABORTED;
	*saddr = bpf_htonl(bpf_ntohl(*saddr) + 1);
	bpf_tail_call(ctx, &target, 0);
	return XDP_ABORTED;
}

char LICENSE[] SEC("license") = "GPL";
`;

export interface Floors {
  pass: BpfProgram;
  macSwap: BpfProgram;
  close(): void;
}

export interface FreshFlow {
  program: BpfProgram;
  close(): void;
}

function compile(dir: string, name: string, source: string): string {
  const file = path.join(dir, `${name}.c`);
  fs.writeFileSync(file, source);
  return compileProgram(file);
}

/** Objects compiled once per process, in a temporary directory removed by cleanupObjects(). */
let buildDir: string | undefined;
const objects = new Map<string, string>();

function object(name: string, source: string): string {
  buildDir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'xdpvs-bench-'));
  let o = objects.get(name);
  if (!o) {
    o = compile(buildDir, name, source);
    objects.set(name, o);
  }
  return o;
}

export function cleanupObjects(): void {
  if (buildDir) fs.rmSync(buildDir, { recursive: true, force: true });
  buildDir = undefined;
  objects.clear();
}

export function loadFloors(): Floors {
  const obj = BpfObject.open(object('floors', FLOORS_C));
  try {
    obj.load();
    return { pass: obj.program('floor_pass').toProgram(), macSwap: obj.program('floor_mac_swap').toProgram(), close: () => obj.close() };
  } catch (err) {
    obj.close();
    throw err;
  }
}

/** The fresh-flow harness in front of `target` (an XDP program). */
export function loadFreshFlow(target: BpfProgram): FreshFlow {
  const obj = BpfObject.open(object('fresh_flow', FRESH_FLOW_C));
  try {
    obj.load();
    const slots: BpfMap = obj.map('target').toMap();
    slots.update(u32Key(0), u32Key(target.fd));
    return { program: obj.program('fresh_flow').toProgram(), close: () => obj.close() };
  } catch (err) {
    obj.close();
    throw err;
  }
}
