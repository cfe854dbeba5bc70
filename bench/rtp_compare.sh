#!/usr/bin/env bash
# RTP relay: the edge (userspace, and as root with its kernel fast path, --kernel-fast-path lo)
# against rtpengine (userspace, ../shared/bench's config) and the load
# generator talking to itself, all driven by the same generator
# (dataplane/media/examples/relay_bench.rs), in one sitting.
#
#   usage: bench/rtp_compare.sh [PPS...]        (default: 50000 100000)
#          CEILING="150000 200000 250000" bench/rtp_compare.sh
#
# Each PPS: calls = PPS / 100 (each call two streams at 50 pps, both directions; 172-byte
# packets). The edge's calls are set up through its SIP side (--mode edge); rtpengine's through
# its ng control port with offer/answer (--mode rtpengine). CPU per packet is the relay
# process's own CPU time (/proc/PID/stat) over the measured window divided by the packets the
# generator received in that window. Rows run interleaved (edge, rtpengine, no relay) at each
# load, so the machine's drift hits all three alike.
# CEILING: for each system, the loads are stepped up until loss reaches 0.1% or the generator
# falls short of the offered rate; the highest passing load is its zero-loss ceiling.
# The edge runs one worker (EDGE_WORKERS=1): the issue asks for figures per worker core, and on
# 2 cores a second worker only competes with the generator. rtpengine runs RTPENGINE_THREADS
# (default 2, as in ../shared/bench's reference figures).
# Memory per call is read at the first load: right after set-up, and for the edge once the
# calls' setup transactions are gone (34 s later; SETTLE=no skips that wait).
#
# SRTP=SUITE (AES_CM_128_HMAC_SHA1_80 | AES_CM_128_HMAC_SHA1_32 | AEAD_AES_128_GCM; what
# bench/srtp_compare.sh sets) adds SRTP <-> RTP rows (issue 14): the carrier side of every call
# speaks SDES-SRTP, the platform side plain RTP, and the relay decrypts one way and encrypts the
# other. trunkgate-srtp: the edge's trunk has media.srtp: Required and the generator offers
# RTP/SAVP with a=crypto over SIP; rtpengine-srtp: ng offer with transport-protocol RTP/AVP
# towards the platform, answer with RTP/SAVP towards the carrier (userspace SRTP). The
# generator seals and opens the carrier side's packets in its own threads (not in the relay's
# CPU); a packet that does not open counts as lost (srtp_failed). Rows then are, per load:
# trunkgate (plain), trunkgate-srtp, rtpengine-srtp, rtpengine (plain), no-relay.
# ROWS="trunkgate trunkgate-srtp ..." picks the rows (any of those five), in that order.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
. "$SHARED/lib.sh"
LOADS=("$@")
[ ${#LOADS[@]} -gt 0 ] || LOADS=(50000 100000)
read -r -a CEIL <<<"${CEILING:-}"
SECONDS_RUN=${SECONDS_RUN:-10}
THREADS=${RTPENGINE_THREADS:-2}
BENCH=$ROOT/target/release/examples/relay_bench
EDGE_BIN=${EDGE_BIN:-$ROOT/target/release/trunkgate-edge}
[ -x "$BENCH" ] || (cd "$ROOT" && cargo build --release -q -p trunkgate-media --example relay_bench)
[ -x "$EDGE_BIN" ] || { echo "no $EDGE_BIN: cargo build --release -p trunkgate-edge" >&2; exit 2; }
HAVE_RTPENGINE=1
command -v rtpengine >/dev/null || { HAVE_RTPENGINE=0; echo "rtpengine not installed (../shared/bench/setup.sh): its rows are skipped" >&2; }
OUT=$(mktemp -d /tmp/rtpcmp.XXXXXX)
PID=""
cleanup() { stop_pid "$PID" 8; }
trap cleanup EXIT
trap 'exit 2' INT TERM
. "$HERE/config.sh"
bench_config "$OUT/config" "sip:127.0.0.20:5090" true
SRTP=${SRTP:-}
if [ -n "$SRTP" ]; then
	case $SRTP in
	AES_CM_128_HMAC_SHA1_80 | AES_CM_128_HMAC_SHA1_32 | AEAD_AES_128_GCM) ;;
	*) echo "SRTP=$SRTP: not AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32 or AEAD_AES_128_GCM" >&2; exit 2 ;;
	esac
	bench_config "$OUT/config-srtp" "sip:127.0.0.20:5090" true Required
fi
settle=${SETTLE:-yes}

# start_edge TAG [CONFIG_DIR [EXTRA_FLAG...]]
start_edge() {
	local tag=$1 cfg=${2:-$OUT/config}
	shift $(($# < 2 ? $# : 2))
	"$EDGE_BIN" --config "$cfg" --public-sip 127.0.0.1:15060 --internal-sip 127.0.0.1:15070 \
		--admin 127.0.0.1:19092 --workers "${EDGE_WORKERS:-1}" --rtp-ports 10000-32767 --media-timeout 3600 \
		--drain-seconds 0 --source-rate 0 "$@" >"$OUT/edge_cdr.jsonl" 2>"$OUT/edge_$tag.log" &
	PID=$!
	for ((i = 0; i < 100; i++)); do curl -sf 127.0.0.1:19092/readyz >/dev/null 2>&1 && return 0; sleep 0.1; done
	echo "the edge did not become ready: $OUT/edge_$tag.log" >&2
	return 1
}

start_rtpengine() {
	rtpengine --config-file="$SHARED/rtpengine/rtpengine.conf" --num-threads="$THREADS" \
		--pidfile="$OUT/rtpengine.pid" >"$OUT/rtpengine_$1.log" 2>&1 &
	PID=$!
	for ((i = 0; i < 50; i++)); do
		python3 "$SHARED/tools/ng.py" ping >/dev/null 2>&1 && return 0
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.2
	done
	echo "rtpengine did not answer on its ng port: $OUT/rtpengine_$1.log" >&2
	return 1
}

# run SYSTEM PPS: one measured run; prints a table row, sets PASS (0/1).
run() {
	local sys=$1 pps=$2 calls=$(($2 / 100)) f="$OUT/$1_$2.txt" args=() mode
	PASS=0
	wait_quiet
	case $sys in
	trunkgate)
		start_edge "$pps" || return
		mode=edge
		args=(--edge-sip 127.0.0.1:15060 --pid "$PID" --settle "$settle")
		settle=no ;;
	trunkgate-kernel)
		# The RTP fast path on lo: the edge process only sets calls up, the kernel forwards.
		start_edge "kernel_$pps" "$OUT/config" --kernel-fast-path lo || return
		mode=edge
		args=(--edge-sip 127.0.0.1:15060 --pid "$PID") ;;
	trunkgate-srtp)
		start_edge "srtp_$pps" "$OUT/config-srtp" || return
		mode=edge
		args=(--edge-sip 127.0.0.1:15060 --pid "$PID" --srtp "$SRTP") ;;
	rtpengine)
		start_rtpengine "$pps" || return
		mode=rtpengine
		args=(--pid "$PID") ;;
	rtpengine-srtp)
		start_rtpengine "srtp_$pps" || return
		mode=rtpengine
		args=(--pid "$PID" --srtp "$SRTP") ;;
	no-relay) mode=direct ;;
	*) echo "unknown row $sys" >&2; return ;;
	esac
	"$BENCH" --mode "$mode" "${args[@]}" --calls "$calls" --pps "$pps" --seconds "$SECONDS_RUN" --ports 32768-60999 >"$f" 2>&1
	stop_pid "$PID" 8
	PID=""
	local recv loss tx lat cpu per noisy failed
	recv=$(grep -m1 'sent=' "$f" | sed -E 's/.*received=([0-9]+).*/\1/')
	loss=$(grep -m1 'sent=' "$f" | sed -E 's/.*loss=([0-9.]+)%.*/\1/')
	tx=$(grep -m1 'sent=' "$f" | sed -E 's/.* tx=([0-9]+) pps.*/\1/')
	lat=$(grep -m1 'latency' "$f" | sed -E 's/.*p50=([>0-9.]+ [^ ]+) p99=([>0-9.]+ [^ ]+).*/\1 \/ \2/')
	cpu=$(grep -m1 "^  $mode (pid" "$f" | sed -E 's/.*= ([0-9.]+)% of a core.*/\1/')
	per=$(grep -m1 "^  $mode (pid" "$f" | sed -E 's/.*→ ([0-9.]+) µs.*/\1/')
	noisy=$(grep -m1 'other tenants' "$f" | sed -E 's/.*other tenants ([0-9.]+)%.*/\1/')
	failed=$(grep -m1 'sent=' "$f" | sed -nE 's/.*srtp_failed=([0-9]+).*/\1/p')
	mach=$(grep -m1 '^  machine:' "$f" | sed -E 's/.*machine: ([0-9.]+) µs.*/\1/')
	MACH[$sys,$pps]=$mach
	[ -n "$loss" ] || { echo "$sys at $pps: no result, see $f" >&2; return; }
	awk -v l="$loss" -v tx="${tx:-0}" -v p="$pps" 'BEGIN{exit !(l < 0.1 && tx >= 0.98 * p)}' && PASS=1
	awk -v n="${noisy:-0}" 'BEGIN{exit !(n > 10)}' && noisy=" (noisy: others ${noisy}%)" || noisy=""
	[ "${failed:-0}" -gt 0 ] && noisy="$noisy (srtp_failed=$failed, counted as lost)"
	printf '%-16s %-8s %-6s %-9s %-9s %-9s %-10s %-8s %-9s %-18s %s\n' "$sys" "$pps" "$calls" "${tx:--}" "${recv:--}" "$loss" "${cpu:--}" "${per:--}" "${mach:--}" "${lat:--}" "$([ $PASS = 1 ] && echo PASS || echo FAIL)$noisy"
}

if [ -n "${ROWS:-}" ]; then
	read -r -a SYSTEMS <<<"$ROWS"
elif [ -n "$SRTP" ]; then
	SYSTEMS=(trunkgate trunkgate-srtp rtpengine-srtp rtpengine no-relay)
else
	SYSTEMS=(trunkgate rtpengine no-relay)
	# The kernel fast path needs CAP_BPF/CAP_NET_ADMIN.
	[ "$(id -u)" = 0 ] && SYSTEMS=(trunkgate trunkgate-kernel rtpengine no-relay)
fi
if [ $HAVE_RTPENGINE = 0 ]; then
	kept=()
	for sys in "${SYSTEMS[@]}"; do [[ $sys == rtpengine* ]] || kept+=("$sys"); done
	SYSTEMS=("${kept[@]}")
fi
for sys in "${SYSTEMS[@]}"; do
	if [[ $sys == *-srtp ]] && [ -z "$SRTP" ]; then echo "row $sys needs SRTP=SUITE" >&2; exit 2; fi
done
echo "# $BENCH --mode {edge,rtpengine,direct} --calls PPS/100 --pps PPS --seconds $SECONDS_RUN (edge: 1 worker; rtpengine: $THREADS threads, userspace)${SRTP:+; *-srtp rows: --srtp $SRTP, carrier side SDES-SRTP, platform side RTP}"
printf '%-16s %-8s %-6s %-9s %-9s %-9s %-10s %-8s %-9s %-18s %s\n' system offered calls tx_pps received loss% "cpu%core" "us/pkt" "mach_us" "p50 / p99 latency" verdict
declare -A MACH
for pps in "${LOADS[@]}"; do
	for sys in "${SYSTEMS[@]}"; do run "$sys" "$pps"; done
	# us/pkt is the relay process's own CPU; the kernel fast path works in softirq outside it,
	# so every row is also put on one scale: the whole machine's CPU per packet minus the
	# generator's own (the no-relay row of the same load).
	base=${MACH[no-relay,$pps]:-}
	if [ -n "$base" ]; then
		for sys in "${SYSTEMS[@]}"; do
			m=${MACH[$sys,$pps]:-}
			[ -n "$m" ] && [ "$sys" != no-relay ] && awk -v s="$sys" -v p="$pps" -v m="$m" -v b="$base" \
				'BEGIN{printf "added machine CPU per packet at %s pps, %s: %.2f us\n", p, s, m - b}'
		done
	fi
done
if [ ${#CEIL[@]} -gt 0 ]; then
	echo "# zero-loss ceiling: loads stepped up per system until loss >= 0.1% or the generator falls short"
	declare -A BEST
	for sys in "${SYSTEMS[@]}"; do
		BEST[$sys]=0
		for pps in "${CEIL[@]}"; do
			run "$sys" "$pps"
			[ "$PASS" = 1 ] || break
			BEST[$sys]=$pps
		done
	done
	for sys in "${SYSTEMS[@]}"; do echo "ceiling $sys: ${BEST[$sys]} pps with loss < 0.1%"; done
	if [ "${BEST[rtpengine]:-0}" -gt 0 ]; then
		awk -v e="${BEST[trunkgate]:-0}" -v r="${BEST[rtpengine]}" -v d="${BEST[no-relay]:--}" \
			'BEGIN{printf "ceiling ratio trunkgate/rtpengine: %.2f (the generator alone: %s pps)\n", e / r, d}'
	fi
fi
for f in "$OUT"/*_*.txt; do
	grep -h "memory" "$f" | sed "s/^ */  $(basename "$f" .txt): /"
done
echo "details: $OUT"
