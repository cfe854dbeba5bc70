#!/usr/bin/env bash
# How long a restarted edge takes to restore its calls: a call journal (--state-dir) of N
# answered calls is written, the edge started on it, and the time until /readyz answers 200
# (every call rebuilt: dialogs, slots, checkpoints rewritten) is printed with the count.
# Signalling only (N relayed calls would need 2N port pairs).
#
#   usage: bench/restore_time.sh [N]      env: EDGE_BIN [target/release/trunkgate-edge]
set -uo pipefail
N=${1:-10000}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
EDGE_BIN=${EDGE_BIN:-$ROOT/target/release/trunkgate-edge}
[ -x "$EDGE_BIN" ] || { echo "no $EDGE_BIN: run cargo build --release -p trunkgate-edge" >&2; exit 2; }
RUN=$(mktemp -d /tmp/restore.XXXXXX)
EDGE_PID=""
trap '[ -n "$EDGE_PID" ] && kill "$EDGE_PID" 2>/dev/null; wait 2>/dev/null' EXIT
. "$HERE/config.sh"
bench_config "$RUN/config" "sip:127.0.0.2:5080" false
mkdir -p "$RUN/state"
python3 - "$N" "$RUN/state/calls.jsonl" <<'PY'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    for i in range(n):
        key = f"tg{i % 2:02x}{i:016x}"
        leg = lambda public, peer, cid, tag: {
            "public": public, "peer": peer, "transport": "UDP", "callId": cid,
            "localTag": tag, "remoteTag": f"r{i}", "local": "<sip:+6499990001@127.0.0.1>",
            "remote": "<sip:+6499990002@127.0.0.10>", "remoteTarget": f"sip:x@{peer}",
            "localCseq": 1, "inviteCseq": 1}
        call = {"key": key, "trunk": "bench/bench-carrier", "inbound": True,
                "a": leg(True, "127.0.0.10:5061", f"{i}@carrier", key),
                "b": leg(False, "127.0.0.2:5080", f"tg{i % 2:02x}b{i}", f"tg{i % 2:02x}{i:016x}b"),
                "callee": "+6499990001", "startedMs": 1800000000000, "answeredMs": 1800000001000}
        f.write(json.dumps({"key": key, "call": call}) + "\n")
PY
T0=$(date +%s.%N)
"$EDGE_BIN" --config "$RUN/config" --public-sip 127.0.0.1:15060 --internal-sip 127.0.0.1:15070 \
	--admin 127.0.0.1:19092 --workers 2 --state-dir "$RUN/state" --cdr false >"$RUN/edge.out" 2>"$RUN/edge.log" &
EDGE_PID=$!
for ((i = 0; i < 600; i++)); do
	curl -sf 127.0.0.1:19092/readyz >/dev/null 2>&1 && break
	kill -0 "$EDGE_PID" 2>/dev/null || { echo "edge died:" >&2; tail -5 "$RUN/edge.log" >&2; exit 2; }
	sleep 0.01
done
T1=$(date +%s.%N)
RESTORED=$(curl -sf 127.0.0.1:19092/metrics | awk '/^trunkgate_edge_calls_restored_total\{result="ok"\}/{print $NF}')
RSS=$(awk '/VmRSS/{print $2}' "/proc/$EDGE_PID/status")
awk -v a="$T0" -v b="$T1" -v n="$N" -v r="${RESTORED:-0}" -v rss="$RSS" 'BEGIN{
	printf "restore: %d of %d calls restored, ready %.2f s after start (journal read, calls rebuilt, checkpoints rewritten); rss %d KiB\n", r, n, b-a, rss}'
[ "${RESTORED:-0}" = "$N" ]
