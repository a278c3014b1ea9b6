// SPDX-License-Identifier: GPL-2.0
/*
 * The lab attaches this on the switch side of the director's veth (sw-director).
 * A veth delivers XDP_TX'd frames to its peer only when the peer runs XDP itself (see
 * /work/shared/notes/kernel-and-xdp.md); passing every frame is all it has to do.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
