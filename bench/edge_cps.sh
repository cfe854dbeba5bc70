#!/usr/bin/env bash
# Trunkgate edge CPS run, the same harness shape as ../shared/bench/kamailio_cps.sh so the two
# compare side by side:
#
#   sipp uac (127.0.0.10:5061) -> trunkgate-edge (udp 127.0.0.1:5060 | 127.0.0.1:5070) -> sipp uas (127.0.0.2:5080)
#
#   usage: bench/edge_cps.sh RATE [WORKERS]
#
# Every call is a full B2BUA call: ACL, trunk selection, E.164 normalisation, number ownership,
# limits, two legs, CDR. Env: DURATION [25], HOLD_MS [1000], SIPP_BUF [4194304], EDGE_BIN,
# DEFAULT_FLAGS [0], PERF_OUT, EDGE_EXTRA (more edge flags, e.g. "--state-store redis://…")
# [target/release/trunkgate-edge], MEDIA_RELAY [false: signalling only, like the Kamailio
# baseline, which relays no media; true also opens a relay session (4 sockets) per call],
# DIRECTION [inbound; outbound: sipp uac as the platform (127.0.0.20:5061) -> the edge's
# internal side -> sipp uas as the carrier's target: trunk selection, caller-ID policy, the
# rated route, each attempt in the call record and the target's quality window].
# Prints one result line; exit 0 when every call succeeded.
set -uo pipefail
RATE=${1:?usage: edge_cps.sh RATE [WORKERS]}
WORKERS=${2:-2}
DURATION=${DURATION:-25}
HOLD_MS=${HOLD_MS:-1000}
SIPP_BUF=${SIPP_BUF:-4194304}
CALLS=$((RATE * DURATION))
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
. "$SHARED/lib.sh"
EDGE_BIN=${EDGE_BIN:-$ROOT/target/release/trunkgate-edge}
RUN=$(mktemp -d /tmp/edgecps.XXXXXX)
EDGE_PID="" UAS_PID=""
cleanup() { stop_pid "$UAS_PID" 3; stop_pid "$EDGE_PID" 5; }
trap cleanup EXIT
trap 'exit 2' INT TERM
[ -x "$EDGE_BIN" ] || { echo "no $EDGE_BIN: run cargo build --release -p trunkgate-edge" >&2; exit 2; }

. "$HERE/config.sh"
DIRECTION=${DIRECTION:-inbound}
if [ "$DIRECTION" = outbound ]; then
	BENCH_OUTBOUND_TARGET="sip:127.0.0.2:5080" bench_config "$RUN/config" "sip:127.0.0.2:5080" ${MEDIA_RELAY:-false}
	UAC_TO=127.0.0.1:5070 UAC_IP=127.0.0.20
else
	bench_config "$RUN/config" "sip:127.0.0.2:5080" ${MEDIA_RELAY:-false}
	UAC_TO=127.0.0.1:5060 UAC_IP=127.0.0.10
fi

for hp in 127.0.0.1:5060 127.0.0.1:5070 127.0.0.2:5080 "$UAC_IP:5061"; do
	if udp_port_busy "$hp"; then echo "udp $hp already in use; aborting" >&2; exit 2; fi
done
wait_quiet
CPU_REF=$(cpu_ref)

# DEFAULT_FLAGS=1: the edge's own defaults (--source-rate, the set-up caps), which the trunk's
# limits size for its carrier (issue 26); otherwise those protections are turned off.
if [ "${DEFAULT_FLAGS:-0}" = 1 ]; then
	PROTECTION=()
else
	PROTECTION=(--source-rate 0 --max-calls-in-setup 1000000 --max-calls-in-setup-per-source 1000000)
fi
"$EDGE_BIN" --config "$RUN/config" --public-sip 127.0.0.1:5060 --internal-sip 127.0.0.1:5070 \
	--admin 127.0.0.1:19091 --workers "$WORKERS" "${PROTECTION[@]}" ${EDGE_EXTRA:-} >"$RUN/cdr.jsonl" 2>"$RUN/edge.log" &
EDGE_PID=$!
for ((i = 0; i < 100; i++)); do
	curl -sf 127.0.0.1:19091/readyz >/dev/null 2>&1 && break
	kill -0 "$EDGE_PID" 2>/dev/null || { echo "edge died:" >&2; cat "$RUN/edge.log" >&2; exit 2; }
	sleep 0.1
done
RSS0=$(awk '/VmRSS/{print $2}' "/proc/$EDGE_PID/status")

sipp -sn uas -i 127.0.0.2 -p 5080 -mi 127.0.0.2 -cp 8893 -nostdin -m "$CALLS" \
	-default_behaviors all,-abortunexp -buff_size "$SIPP_BUF" -trace_err -error_file "$RUN/uas_errors.log" \
	>"$RUN/uas.out" 2>&1 &
UAS_PID=$!
sleep 0.5

E0=$(cpu_ticks "$EDGE_PID")
U0=$(cpu_ticks "$UAS_PID")
T0=$(now)
LIMIT=$((DURATION * 2 + HOLD_MS / 1000 + 30))
# Peak memory while calls are up: sample RSS once a second in the background.
( peak=0; while kill -0 "$EDGE_PID" 2>/dev/null; do r=$(awk '/VmRSS/{print $2}' "/proc/$EDGE_PID/status" 2>/dev/null); [ -n "$r" ] && [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$RUN/rss_peak"; sleep 1; done ) &
SAMPLER=$!
# PERF_OUT=FILE: a CPU profile of the edge (perf record -g at 999 Hz) over the middle of the
# run, for bench/profile_cps.sh.
if [ -n "${PERF_OUT:-}" ]; then
	( sleep 2; perf record -q -F 999 -g -p "$EDGE_PID" -o "$PERF_OUT" -- sleep "$((DURATION > 6 ? DURATION - 4 : 2))" >/dev/null 2>&1 ) &
	PERF_PID=$!
fi
/usr/bin/time -f "%e %U %S" -o "$RUN/uac.time" timeout -s TERM "$((LIMIT + 10))" \
	sipp -sn uac "$UAC_TO" -i "$UAC_IP" -p 5061 -mi "$UAC_IP" -cp 8894 -nostdin -s +6499990001 \
	-default_behaviors all,-abortunexp -buff_size "$SIPP_BUF" \
	-r "$RATE" -m "$CALLS" -d "$HOLD_MS" -timeout "${LIMIT}s" \
	-trace_err -error_file "$RUN/uac_errors.log" -trace_stat -stf "$RUN/uac_stat.csv" -fd 1 >"$RUN/uac.out" 2>&1
UAC_RC=$?
[ -n "${PERF_PID:-}" ] && wait "$PERF_PID"
T1=$(now)
E1=$(cpu_ticks "$EDGE_PID")
U1=$(cpu_ticks "$UAS_PID")
kill "$SAMPLER" 2>/dev/null
# Round trips to the fleet's store (--state-store), if any: claims, releases, renewals.
STORE_OPS=$(curl -sf 127.0.0.1:19091/metrics | awk '/^trunkgate_edge_state_store_ops_total/{s+=$NF} END{printf "%d", s}')
DROPS=$(sock_drops 127.0.0.1:5060 127.0.0.1:5070)
WALL=$(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.3f", b-a}')
EDGE_CPU=$(pct $((E1 - E0)) "$WALL")
UAS_CPU=$(pct $((U1 - U0)) "$WALL")
read -r _E UAC_U UAC_S < <(tail -n 1 "$RUN/uac.time") || true
UAC_CPU=$(awk -v u="${UAC_U:-0}" -v s="${UAC_S:-0}" -v w="$WALL" 'BEGIN{printf "%.1f", 100*(u+s)/w}')
OK=$(grep -c '"finalStatus":200' "$RUN/cdr.jsonl" || true)
FAILED=$(awk -F';' 'NR>1{f=$0} END{split(f,a,";"); print "?"}' "$RUN/uac_stat.csv" 2>/dev/null)
FAILED=$(grep -E "Failed call" "$RUN/uac.out" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
US_PER_CALL=$(awk -v t=$((E1 - E0)) -v hz="$CLK_TCK" -v n="$CALLS" 'BEGIN{printf "%.1f", 1e6*t/hz/n}')
PEAK=$(cat "$RUN/rss_peak" 2>/dev/null || echo "$RSS0")
# Calls up at once ~ RATE x hold. Ended calls' transactions stay up to 32 s (RFC 3261 timers
# D/J, 64*T1) to absorb retransmissions, and the call record 5 s (T4): memory is reported per
# call held in any of those states.
CONCURRENT=$(awk -v r="$RATE" -v h="$HOLD_MS" 'BEGIN{printf "%d", r*(h/1000.0+0.01)}')
HELD=$(awk -v r="$RATE" -v h="$HOLD_MS" -v d="$DURATION" 'BEGIN{l=h/1000.0+32; if (l>d+h/1000.0) l=d+h/1000.0; printf "%d", r*l}')
KIB_PER_CALL=$(awk -v a="$PEAK" -v b="$RSS0" -v c="$HELD" 'BEGIN{printf "%.2f", (a-b)/(c>0?c:1)}')
VERDICT=FAIL
[ "$UAC_RC" -eq 0 ] && VERDICT=PASS
STORE_PER_CALL=$(awk -v o="${STORE_OPS:-0}" -v n="$CALLS" 'BEGIN{printf "%.2f", o/n}')
printf 'edge direction=%s media_relay=%s rate=%s workers=%s calls=%s completed_cdr=%s failed=%s verdict=%s edge_cpu=%s%% (%s us/call) store_ops=%s/call uac_cpu=%s%% uas_cpu=%s%% rss_idle=%sKiB rss_peak=%sKiB (%s KiB per call held: %s up, the rest in the 32 s transaction linger) drops=%s cpu_ref=%ss logs=%s\n' \
	"$DIRECTION" "${MEDIA_RELAY:-false}" "$RATE" "$WORKERS" "$CALLS" "$OK" "${FAILED:-?}" "$VERDICT" "$EDGE_CPU" "$US_PER_CALL" "$STORE_PER_CALL" "$UAC_CPU" "$UAS_CPU" "$RSS0" "$PEAK" "$KIB_PER_CALL" "$CONCURRENT" "$DROPS" "$CPU_REF" "$RUN"
[ "$VERDICT" = PASS ]
