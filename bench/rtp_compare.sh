#!/usr/bin/env bash
# RTP relay through the running edge against rtpengine (userspace, ../shared/bench) at the same
# load, in one sitting, plus the harness talking to itself (its own ceiling).
#
#   usage: bench/rtp_compare.sh [PPS...]        (default: 100000 120000)
#
# Calls = PPS / 100 (each call: two streams at 50 pps, both directions). The edge's calls are set
# up through its SIP side by dataplane/media/examples/relay_bench.rs --mode edge; CPU per packet
# is the edge process's own CPU time over the measured window divided by packets delivered.
# Memory per call is read twice at the first load: right after the calls are set up, and once
# their setup transactions are gone (34 s later; SETTLE=no skips that wait).
# The edge runs one worker (EDGE_WORKERS=1): the issue asks for figures per worker core, and on
# 2 cores a second worker only competes with the load generator.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
. "$SHARED/lib.sh"
LOADS=("$@")
[ ${#LOADS[@]} -gt 0 ] || LOADS=(100000 120000)
SECONDS_RUN=${SECONDS_RUN:-10}
BENCH=$ROOT/target/release/examples/relay_bench
EDGE_BIN=${EDGE_BIN:-$ROOT/target/release/trunkgate-edge}
[ -x "$BENCH" ] || (cd "$ROOT" && cargo build --release -q -p trunkgate-media --example relay_bench)
[ -x "$EDGE_BIN" ] || { echo "no $EDGE_BIN: cargo build --release -p trunkgate-edge" >&2; exit 2; }
OUT=$(mktemp -d /tmp/rtpcmp.XXXXXX)
EDGE_PID=""
cleanup() { stop_pid "$EDGE_PID" 5; }
trap cleanup EXIT
trap 'exit 2' INT TERM
. "$HERE/config.sh"
bench_config "$OUT/config" "sip:127.0.0.20:5090" true
printf '%-10s %-8s %-7s %-10s %-10s %-14s %-16s %s\n' system offered calls received loss% "cpu(%core)" "us CPU/packet" "p50/p99 latency"
settle=${SETTLE:-yes}
for pps in "${LOADS[@]}"; do
	calls=$((pps / 100))
	wait_quiet
	"$EDGE_BIN" --config "$OUT/config" --public-sip 127.0.0.1:15060 --internal-sip 127.0.0.1:15070 \
		--admin 127.0.0.1:19092 --workers "${EDGE_WORKERS:-1}" --rtp-ports 10000-32767 --media-timeout 3600 --drain-seconds 0 >"$OUT/edge_cdr_$pps.jsonl" 2>"$OUT/edge_$pps.log" &
	EDGE_PID=$!
	for ((i = 0; i < 100; i++)); do curl -sf 127.0.0.1:19092/readyz >/dev/null 2>&1 && break; sleep 0.1; done
	"$BENCH" --mode edge --edge-sip 127.0.0.1:15060 --edge-pid "$EDGE_PID" --calls "$calls" --pps "$pps" --seconds "$SECONDS_RUN" --ports 32768-60999 --settle "$settle" >"$OUT/edge_$pps.txt" 2>&1
	settle=no
	stop_pid "$EDGE_PID" 5; EDGE_PID=""
	recv=$(grep -m1 'sent=' "$OUT/edge_$pps.txt" | sed -E 's/.*received=([0-9]+).*/\1/')
	loss=$(grep -m1 'sent=' "$OUT/edge_$pps.txt" | sed -E 's/.*loss=([0-9.]+)%.*/\1/')
	lat=$(grep -m1 'latency' "$OUT/edge_$pps.txt" | sed -E 's/.*p50=([0-9.]+ [^ ]+) p99=([0-9.]+ [^ ]+).*/\1 \/ \2/')
	cpu=$(grep -m1 '^  edge (pid' "$OUT/edge_$pps.txt" | sed -E 's/.*= ([0-9.]+)% of a core.*/\1/')
	per=$(grep -m1 '^  edge (pid' "$OUT/edge_$pps.txt" | sed -E 's/.*→ ([0-9.]+) µs.*/\1/')
	printf '%-10s %-8s %-7s %-10s %-10s %-14s %-16s %s\n' trunkgate "$pps" "$calls" "$recv" "$loss" "$cpu" "$per" "$lat"
	RESULTS="$OUT/rtpengine.tsv" DURATION="$SECONDS_RUN" "$SHARED/rtpengine_pps.sh" $((calls * 2)) "$pps" 2 >"$OUT/rtpengine_$pps.txt" 2>&1
	tail -n 1 "$OUT/rtpengine.tsv" 2>/dev/null | awk -F'\t' -v pps="$pps" -v calls="$calls" '{
		per = ($11 > 0) ? $16 / 100 / $11 * 1e6 : 0
		printf "%-10s %-8s %-7s %-10s %-10s %-14s %-16.2f %s\n", "rtpengine", pps, calls, $8, $9, $16, per, "-"
	}'
	"$BENCH" --mode direct --calls "$calls" --pps "$pps" --seconds "$SECONDS_RUN" --ports 32768-60999 >"$OUT/direct_$pps.txt" 2>&1
	dl=$(grep -m1 'sent=' "$OUT/direct_$pps.txt" | sed -E 's/.*loss=([0-9.]+)%.*/\1/')
	dlat=$(grep -m1 'latency' "$OUT/direct_$pps.txt" | sed -E 's/.*p50=([0-9.]+ [^ ]+) p99=([0-9.]+ [^ ]+).*/\1 \/ \2/')
	printf '%-10s %-8s %-7s %-10s %-10s %-14s %-16s %s\n' no-relay "$pps" "$calls" "-" "$dl" "-" "-" "$dlat"
done
grep -h "memory per active call" "$OUT"/edge_*.txt | sed 's/^ */trunkgate /'
echo "rtpengine: ../shared/bench/rtpengine_pps.sh STREAMS PPS 2 (userspace, 2 threads); its CPU per packet = its CPU / received pps"
echo "details: $OUT"
