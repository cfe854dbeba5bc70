// SPDX-License-Identifier: GPL-2.0-only OR MIT
//
// Trunkgate RTP fast path: a TC (clsact) classifier that forwards established RTP streams of
// the edge's relay without the packet reaching a socket. The edge's worker installs a stream
// direction once both ends are latched (key: the latched source and the relay port it sends
// to; value: the addresses to rewrite to and the RFC 3550 receive state to carry on). Anything
// else - another source, another SSRC, RTCP, IP options, fragments, IPv6 - is left to the
// userspace relay: TC_ACT_UNSPEC, so the next classifier on the interface (another edge's, a
// CNI's) still sees the packet and, with none, the stack takes it. The receive statistics follow RFC 3550 A.1 (sequence, loss) and
// A.8 (jitter) exactly as the userspace relay computes them (dataplane/media/src/quality.rs),
// with jitter in 1/65536 timestamp units instead of a float.

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Set on a packet this program rewrote, so that it is never taken for a stream again (a relay
// pointed at its own ports by a bad SDP cannot loop in the kernel).
#define FP_MARK 0x7e5a0000u

#define MAX_DROPOUT 3000
#define MAX_MISORDER 100
#define IP_CSUM_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, check))
#define UDP_CSUM_OFF (ETH_HLEN + sizeof(struct iphdr) + __builtin_offsetof(struct udphdr, check))
#define IP_SRC_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, saddr))
#define IP_DST_OFF (ETH_HLEN + __builtin_offsetof(struct iphdr, daddr))
#define UDP_SPORT_OFF (ETH_HLEN + sizeof(struct iphdr) + __builtin_offsetof(struct udphdr, source))
#define UDP_DPORT_OFF (ETH_HLEN + sizeof(struct iphdr) + __builtin_offsetof(struct udphdr, dest))

// Addresses and ports in network order, as they are in the packet.
struct fp_key {
	__u32 src_ip;
	__u32 dst_ip;
	__u16 src_port;
	__u16 dst_port;
};

struct fp_value {
	struct bpf_spin_lock lock;
	// Where the packet goes: rewritten source (the relay's other port) and destination.
	__u32 out_src_ip;
	__u32 out_dst_ip;
	__u16 out_src_port;
	__u16 out_dst_port;
	// The one SSRC this entry carries (host order); others go to userspace.
	__u32 ssrc;
	__u32 clock_rate;
	// CLOCK_MONOTONIC of the userspace receiver's epoch (arrival time origin).
	__u64 epoch_ns;
	// Counters (host order) since the entry was installed.
	__u64 packets;
	__u64 bytes;
	__u64 forwarded;
	__u64 last_ns;
	// RFC 3550 A.1 state, carried over from and back to userspace.
	__u32 base_seq;
	__u32 cycles;
	__u32 max_seq;
	__u32 bad_seq; // 0x10000 + seq when set, 0 when none
	__u64 received;
	__u64 prior_expected;
	__u64 prior_received;
	// RFC 3550 A.8 state.
	__s32 last_transit;
	__u32 has_transit;
	__u32 last_ts;
	__u32 last_pt;
	__u64 jitter_q16;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct fp_key);
	__type(value, struct fp_value);
#ifdef TRUNKGATE_PINNED
	// Pinned under the edge's directory in bpffs: the map outlives a killed edge, and the
	// next run of the same edge loads its program against it.
	__uint(pinning, LIBBPF_PIN_BY_NAME);
#endif
} STREAMS SEC(".maps");

static __always_inline __u32 arrival(__u64 ns, __u64 epoch_ns, __u32 rate)
{
	__u64 since = ns > epoch_ns ? ns - epoch_ns : 0;
	__u64 secs = since / 1000000000ULL;
	__u64 rem = since % 1000000000ULL;
	return (__u32)(secs * rate + rem * rate / 1000000000ULL);
}

// RFC 3550 A.1 update_seq without probation (quality.rs Receiver::update_seq): 1 to count
// the packet, 0 not to.
static __always_inline int update_seq(struct fp_value *v, __u16 seq)
{
	__u16 max = (__u16)v->max_seq;
	__u16 udelta = seq - max;
	if (udelta < MAX_DROPOUT) {
		if (seq < max)
			v->cycles += 1 << 16;
		v->max_seq = seq;
	} else if (udelta <= 0xffff - MAX_MISORDER) {
		if (v->bad_seq == 0x10000u + seq) {
			// The sender restarted: fold the old numbering into the prior counters.
			__u64 ext = (__u64)v->cycles + (__u16)v->max_seq;
			__u64 expected = ext >= v->base_seq ? ext - v->base_seq + 1 : 0;
			v->prior_expected += expected;
			v->prior_received += v->received;
			v->base_seq = seq;
			v->max_seq = seq;
			v->cycles = 0;
			v->bad_seq = 0;
			v->received = 0;
			v->has_transit = 0;
		} else {
			v->bad_seq = 0x10000u + (__u16)(seq + 1);
			return 0;
		}
	}
	return 1;
}

SEC("classifier")
int rtp_fastpath(struct __sk_buff *skb)
{
	if (skb->mark == FP_MARK)
		return TC_ACT_UNSPEC;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return TC_ACT_UNSPEC;
	if (ip->frag_off & bpf_htons(0x3fff))
		return TC_ACT_UNSPEC;
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return TC_ACT_UNSPEC;
	__u8 *rtp = (void *)(udp + 1);
	if ((void *)(rtp + 12) > end)
		return TC_ACT_UNSPEC;
	// RTP version 2, not RTCP (RFC 5761 §4: packet types 192-223 are RTCP).
	if ((rtp[0] >> 6) != 2 || (rtp[1] >= 192 && rtp[1] <= 223))
		return TC_ACT_UNSPEC;

	struct fp_key key = {
		.src_ip = ip->saddr,
		.dst_ip = ip->daddr,
		.src_port = udp->source,
		.dst_port = udp->dest,
	};
	struct fp_value *v = bpf_map_lookup_elem(&STREAMS, &key);
	if (!v)
		return TC_ACT_UNSPEC;
	__u32 ssrc = ((__u32)rtp[8] << 24) | ((__u32)rtp[9] << 16) | ((__u32)rtp[10] << 8) | rtp[11];
	if (ssrc != v->ssrc)
		return TC_ACT_UNSPEC;
	__u16 seq = ((__u16)rtp[2] << 8) | rtp[3];
	__u32 ts = ((__u32)rtp[4] << 24) | ((__u32)rtp[5] << 16) | ((__u32)rtp[6] << 8) | rtp[7];
	__u32 pt = rtp[1] & 0x7f;
	__u64 now = bpf_ktime_get_ns();
	__u32 len = skb->len - ETH_HLEN - sizeof(struct iphdr) - sizeof(struct udphdr);
	// Read now: rewriting the packet below invalidates every pointer into it.
	__u16 tot_len = bpf_ntohs(ip->tot_len);
	__u16 udp_check = udp->check;

	bpf_spin_lock(&v->lock);
	v->packets += 1;
	v->bytes += len;
	v->last_ns = now;
	if (update_seq(v, seq)) {
		v->received += 1;
		// RFC 3550 A.8, skipping packets that carry no timing (quality.rs update_jitter).
		__s32 transit = (__s32)(arrival(now, v->epoch_ns, v->clock_rate) - ts);
		if (v->has_transit && pt == v->last_pt && ts != v->last_ts) {
			__s32 d = transit - v->last_transit;
			__u64 dq = (__u64)(d < 0 ? -(__s64)d : d) << 16;
			if (dq >= v->jitter_q16)
				v->jitter_q16 += (dq - v->jitter_q16) >> 4;
			else
				v->jitter_q16 -= (v->jitter_q16 - dq) >> 4;
		}
		v->last_transit = transit;
		v->has_transit = 1;
		v->last_ts = ts;
		v->last_pt = pt;
	}
	v->forwarded += 1;
	__u32 out_src_ip = v->out_src_ip;
	__u32 out_dst_ip = v->out_dst_ip;
	__u16 out_src_port = v->out_src_port;
	__u16 out_dst_port = v->out_dst_port;
	bpf_spin_unlock(&v->lock);

	__u32 old_src_ip = key.src_ip, old_dst_ip = key.dst_ip;
	__u16 old_src_port = key.src_port, old_dst_port = key.dst_port;
	if (udp_check) {
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_src_ip, out_src_ip, BPF_F_PSEUDO_HDR | 4);
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_dst_ip, out_dst_ip, BPF_F_PSEUDO_HDR | 4);
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_src_port, out_src_port, 2);
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_dst_port, out_dst_port, 2);
	}
	bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_src_ip, out_src_ip, 4);
	bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_dst_ip, out_dst_ip, 4);
	bpf_skb_store_bytes(skb, IP_SRC_OFF, &out_src_ip, 4, 0);
	bpf_skb_store_bytes(skb, IP_DST_OFF, &out_dst_ip, 4, 0);
	bpf_skb_store_bytes(skb, UDP_SPORT_OFF, &out_src_port, 2, 0);
	bpf_skb_store_bytes(skb, UDP_DPORT_OFF, &out_dst_port, 2, 0);
	skb->mark = FP_MARK;

	// Out of the interface the kernel would route the destination through, with its
	// neighbour's address (on loopback: back into lo, where the packet meets its socket).
	struct bpf_fib_lookup fib = {
		.family = 2, // AF_INET
		.l4_protocol = IPPROTO_UDP,
		.tot_len = tot_len,
		.ifindex = skb->ingress_ifindex,
		.ipv4_src = out_src_ip,
		.ipv4_dst = out_dst_ip,
	};
	int rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		// Let the stack route it: the rewritten packet goes up as if it had come in.
		return TC_ACT_UNSPEC;
	}
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_SHOT;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	return bpf_redirect(fib.ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
