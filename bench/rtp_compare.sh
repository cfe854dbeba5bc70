#!/usr/bin/env bash
# RTP relay: the edge against rtpengine (userspace, ../shared/bench's config) and the load
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
settle=${SETTLE:-yes}

start_edge() {
	"$EDGE_BIN" --config "$OUT/config" --public-sip 127.0.0.1:15060 --internal-sip 127.0.0.1:15070 \
		--admin 127.0.0.1:19092 --workers "${EDGE_WORKERS:-1}" --rtp-ports 10000-32767 --media-timeout 3600 \
		--drain-seconds 0 --source-rate 0 >"$OUT/edge_cdr.jsonl" 2>"$OUT/edge_$1.log" &
	PID=$!
	for ((i = 0; i < 100; i++)); do curl -sf 127.0.0.1:19092/readyz >/dev/null 2>&1 && return 0; sleep 0.1; done
	echo "the edge did not become ready: $OUT/edge_$1.log" >&2
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
	rtpengine)
		start_rtpengine "$pps" || return
		mode=rtpengine
		args=(--pid "$PID") ;;
	no-relay) mode=direct ;;
	esac
	"$BENCH" --mode "$mode" "${args[@]}" --calls "$calls" --pps "$pps" --seconds "$SECONDS_RUN" --ports 32768-60999 >"$f" 2>&1
	stop_pid "$PID" 8
	PID=""
	local recv loss tx lat cpu per noisy
	recv=$(grep -m1 'sent=' "$f" | sed -E 's/.*received=([0-9]+).*/\1/')
	loss=$(grep -m1 'sent=' "$f" | sed -E 's/.*loss=([0-9.]+)%.*/\1/')
	tx=$(grep -m1 'sent=' "$f" | sed -E 's/.* tx=([0-9]+) pps.*/\1/')
	lat=$(grep -m1 'latency' "$f" | sed -E 's/.*p50=([>0-9.]+ [^ ]+) p99=([>0-9.]+ [^ ]+).*/\1 \/ \2/')
	cpu=$(grep -m1 "^  $mode (pid" "$f" | sed -E 's/.*= ([0-9.]+)% of a core.*/\1/')
	per=$(grep -m1 "^  $mode (pid" "$f" | sed -E 's/.*→ ([0-9.]+) µs.*/\1/')
	noisy=$(grep -m1 'other tenants' "$f" | sed -E 's/.*other tenants ([0-9.]+)%.*/\1/')
	[ -n "$loss" ] || { echo "$sys at $pps: no result, see $f" >&2; return; }
	awk -v l="$loss" -v tx="${tx:-0}" -v p="$pps" 'BEGIN{exit !(l < 0.1 && tx >= 0.98 * p)}' && PASS=1
	awk -v n="${noisy:-0}" 'BEGIN{exit !(n > 10)}' && noisy=" (noisy: others ${noisy}%)" || noisy=""
	printf '%-10s %-8s %-6s %-9s %-9s %-9s %-10s %-8s %-18s %s\n' "$sys" "$pps" "$calls" "${tx:--}" "${recv:--}" "$loss" "${cpu:--}" "${per:--}" "${lat:--}" "$([ $PASS = 1 ] && echo PASS || echo FAIL)$noisy"
}

SYSTEMS=(trunkgate)
[ $HAVE_RTPENGINE = 1 ] && SYSTEMS+=(rtpengine)
SYSTEMS+=(no-relay)
echo "# $BENCH --mode {edge,rtpengine,direct} --calls PPS/100 --pps PPS --seconds $SECONDS_RUN (edge: 1 worker; rtpengine: $THREADS threads, userspace)"
printf '%-10s %-8s %-6s %-9s %-9s %-9s %-10s %-8s %-18s %s\n' system offered calls tx_pps received loss% "cpu%core" "us/pkt" "p50 / p99 latency" verdict
for pps in "${LOADS[@]}"; do
	for sys in "${SYSTEMS[@]}"; do run "$sys" "$pps"; done
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
		awk -v e="${BEST[trunkgate]}" -v r="${BEST[rtpengine]}" -v d="${BEST[no-relay]}" \
			'BEGIN{printf "ceiling ratio trunkgate/rtpengine: %.2f (the generator alone: %s pps)\n", e / r, d}'
	fi
fi
grep -h "memory" "$OUT"/*_*.txt | sed 's/^ */  /'
echo "details: $OUT"
