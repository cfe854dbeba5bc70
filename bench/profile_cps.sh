#!/usr/bin/env bash
# Where the edge's CPU goes per call (issue 26 asks for the profile before any optimisation):
# bench/edge_cps.sh at RATE with the edge's default flags, perf record -g on the edge over the
# middle of the run, then the functions by self time (kernel and user space), the share of the
# kernel, and the share of each of the edge's own crates.
#
#   usage: bench/profile_cps.sh [RATE] [WORKERS]      (default 2000 2; DURATION [15])
# Needs perf (Debian linux-perf) and a release edge build.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RATE=${1:-2000}
WORKERS=${2:-2}
export DURATION=${DURATION:-15}
OUT=$(mktemp -d /tmp/profile.XXXXXX)
command -v perf >/dev/null || { echo "no perf: apt-get install linux-perf" >&2; exit 2; }
DEFAULT_FLAGS=1 PERF_OUT="$OUT/perf.data" "$HERE/edge_cps.sh" "$RATE" "$WORKERS" | tail -1
perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio --percent-limit 0.7 2>/dev/null |
	grep -E '^ +[0-9]' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -40 >"$OUT/top.txt"
echo "top functions by self time (% of the edge's samples):"
cat "$OUT/top.txt"
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -8
echo "profile: $OUT/perf.data (command: bench/profile_cps.sh $RATE $WORKERS)"
