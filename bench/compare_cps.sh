#!/usr/bin/env bash
# Kamailio (stateful proxy, ../shared/bench) and the Trunkgate edge (B2BUA) at the same call
# rates, interleaved in one sitting on this machine, with CPU per completed call for both.
#
#   usage: bench/compare_cps.sh [RATE...]      (default: 2000 5000)
#
# Needs sipp and kamailio (../shared/bench/setup.sh installs them) and a release edge build.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED_BENCH:-$HERE/../../shared/bench}
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(2000 5000)
DURATION=${DURATION:-25}
export DURATION
OUT=$(mktemp -d /tmp/cmpcps.XXXXXX)
printf '%-9s %-6s %-8s %-7s %-10s %-12s %s\n' system rate calls verdict "cpu(%core)" "us CPU/call" "command"
for rate in "${RATES[@]}"; do
	RESULTS="$OUT/kamailio.tsv" "$SHARED/kamailio_cps.sh" "$rate" 2 >"$OUT/kam_$rate.txt" 2>&1
	kline=$(grep -m1 '^kamailio_cps:' "$OUT/kam_$rate.txt")
	kcpu=$(grep -m1 'cpu over' "$OUT/kam_$rate.txt" | sed -E 's/.*kamailio=([0-9.]+).*/\1/')
	kwall=$(grep -m1 'cpu over' "$OUT/kam_$rate.txt" | sed -E 's/.*over ([0-9.]+)s.*/\1/')
	kverdict=$(echo "$kline" | sed -E 's/.*-> ([A-Z]+).*/\1/')
	calls=$((rate * DURATION))
	kus=$(awk -v c="$kcpu" -v w="$kwall" -v n="$calls" 'BEGIN{printf "%.1f", c/100*w*1e6/n}')
	printf '%-9s %-6s %-8s %-7s %-10s %-12s %s\n' kamailio "$rate" "$calls" "$kverdict" "$kcpu" "$kus" "$SHARED/kamailio_cps.sh $rate 2"
	"$HERE/edge_cps.sh" "$rate" 2 >"$OUT/edge_$rate.txt" 2>&1
	eline=$(grep -m1 '^edge direction=' "$OUT/edge_$rate.txt")
	ecpu=$(echo "$eline" | sed -E 's/.*edge_cpu=([0-9.]+)%.*/\1/')
	eus=$(echo "$eline" | sed -E 's/.*\(([0-9.]+) us\/call\).*/\1/')
	everdict=$(echo "$eline" | sed -E 's/.*verdict=([A-Z]+).*/\1/')
	printf '%-9s %-6s %-8s %-7s %-10s %-12s %s\n' trunkgate "$rate" "$calls" "$everdict" "$ecpu" "$eus" "bench/edge_cps.sh $rate 2"
	echo "  edge: $eline" >>"$OUT/summary.txt"
done
echo "details: $OUT (kam_RATE.txt, edge_RATE.txt)"
cat "$OUT/summary.txt" 2>/dev/null
