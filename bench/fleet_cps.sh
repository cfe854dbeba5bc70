#!/usr/bin/env bash
# The price of the fleet's shared store: bench/edge_cps.sh at RATE without a store, then with a
# local redis-server (--state-store), alternated ROUNDS times in one sitting. Prints each run's
# line (edge CPU per call, store round trips per call) and the mean CPU per call of each.
#
#   usage: bench/fleet_cps.sh [RATE] [ROUNDS]      env: DURATION [15], as edge_cps.sh
set -uo pipefail
RATE=${1:-2000}
ROUNDS=${2:-2}
export DURATION=${DURATION:-15}
HERE=$(cd "$(dirname "$0")" && pwd)
command -v redis-server >/dev/null || { echo "no redis-server: apt-get install redis-server" >&2; exit 2; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$PORT" --save "" --appendonly no >/tmp/fleet_cps_redis.log 2>&1 &
REDIS=$!
trap 'kill $REDIS 2>/dev/null' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
declare -A SUM=([embedded]=0 [redis]=0)
for r in $(seq "$ROUNDS"); do
	for mode in embedded redis; do
		extra=""
		[ "$mode" = redis ] && extra="--state-store redis://127.0.0.1:$PORT/0"
		line=$(EDGE_EXTRA="$extra" DEFAULT_FLAGS=1 bash "$HERE/edge_cps.sh" "$RATE")
		echo "round $r $mode: $line"
		us=$(sed -n 's/.*(\([0-9.]*\) us\/call).*/\1/p' <<<"$line")
		SUM[$mode]=$(awk -v a="${SUM[$mode]}" -v b="${us:-0}" 'BEGIN{print a+b}')
	done
done
awk -v e="${SUM[embedded]}" -v s="${SUM[redis]}" -v n="$ROUNDS" -v r="$RATE" 'BEGIN{
	printf "fleet store at %s cps: edge CPU %.1f us/call embedded, %.1f us/call with Redis (%+.1f%%)\n", r, e/n, s/n, 100*(s-e)/e}'
