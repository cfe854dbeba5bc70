#!/usr/bin/env bash
# The edge under attack, measured (issue: "the edge under attack"): legitimate calls from two
# carriers run at a steady rate while one attack runs at a time, on loopback only.
#
#   trunk bench/victim: carriers 127.0.0.10 (legitimate) and 127.0.0.12 (the flooder, allowed)
#   trunk other/tenant: carrier 127.0.0.11 (legitimate)                  -> sipp uas 127.0.0.2:5080
#
#   phases: deny  - UDP INVITE flood from 100 addresses outside every allow-list (FLOOD_PPS_DENY)
#           allow - UDP INVITE flood to an owned number from the allowed 127.0.0.12 (FLOOD_PPS_ALLOW)
#           forged - a 1 s burst of FLOOD_PPS_FORGED INVITEs from the victim carrier's own address
#           tcp   - TCP_CONNS connections from 100 addresses outside every allow-list, held
#
#   usage: bench/attack.sh [PHASE...]    env: PHASE_SECONDS [15], LEGIT_CPS [20], EDGE_BIN
# Prints per phase: edge CPU over the phase, edge RSS, legitimate calls attempted and failed per
# trunk, and what the edge counted. The edge runs with its default flags (--source-rate etc.).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
. "$SHARED/lib.sh"
EDGE_BIN=${EDGE_BIN:-$ROOT/target/release/trunkgate-edge}
FLOOD=${FLOOD_BIN:-$ROOT/target/release/examples/flood}
PHASES=("$@")
[ ${#PHASES[@]} -gt 0 ] || PHASES=(deny allow forged tcp)
SECS=${PHASE_SECONDS:-15}
LEGIT_CPS=${LEGIT_CPS:-20}
RUN=$(mktemp -d /tmp/attack.XXXXXX)
EDGE_PID="" UAS_PID=""
cleanup() { stop_pid "$UAS_PID" 3; stop_pid "$EDGE_PID" 5; }
trap cleanup EXIT
trap 'exit 2' INT TERM
for b in "$EDGE_BIN" "$FLOOD"; do
	[ -x "$b" ] || { echo "no $b: cargo build --release -p trunkgate-edge --bins --example flood" >&2; exit 2; }
done

mkdir -p "$RUN/config"
cat >"$RUN/config/attack.yaml" <<YAML
apiVersion: trunkgate.io/v1alpha1
kind: CarrierTrunk
metadata: {name: victim, namespace: bench}
spec:
  inbound:
    allowedCidrs: ["127.0.0.10/32", "127.0.0.12/32"]
    destination: "sip:127.0.0.2:5080"
---
apiVersion: trunkgate.io/v1alpha1
kind: NumberOwnership
metadata: {name: victim-numbers, namespace: bench}
spec: {trunkRef: {name: victim}, kind: Byoc, numbers: ["+6499990000-+6499994999"]}
---
apiVersion: trunkgate.io/v1alpha1
kind: CarrierTrunk
metadata: {name: tenant, namespace: other}
spec:
  inbound:
    allowedCidrs: ["127.0.0.11/32"]
    destination: "sip:127.0.0.2:5080"
---
apiVersion: trunkgate.io/v1alpha1
kind: NumberOwnership
metadata: {name: tenant-numbers, namespace: other}
spec: {trunkRef: {name: tenant}, kind: Byoc, numbers: ["+6499995000-+6499999999"]}
YAML

"$EDGE_BIN" --config "$RUN/config" --public-sip 127.0.0.1:5060 --internal-sip 127.0.0.1:5070 \
	--admin 127.0.0.1:19093 --workers 2 --rtp-ports 20000-39999 >"$RUN/cdr.jsonl" 2>"$RUN/edge.log" &
EDGE_PID=$!
for ((i = 0; i < 100; i++)); do curl -sf 127.0.0.1:19093/readyz >/dev/null 2>&1 && break; sleep 0.1; done
sipp -sn uas -i 127.0.0.2 -p 5080 -mi 127.0.0.2 -nostdin -default_behaviors all,-abortunexp \
	-buff_size 4194304 >"$RUN/uas.out" 2>&1 &
UAS_PID=$!
sleep 0.5

metric() { curl -s 127.0.0.1:19093/metrics | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {printf "%d", s}'; }
rss() { awk '/VmRSS/{print $2}' "/proc/$EDGE_PID/status"; }

# Legitimate calls: LEGIT_CPS from each carrier for the phase, 2 s each.
legit() { # name ip number
	local calls=$((LEGIT_CPS * SECS))
	timeout $((SECS + 60)) sipp -sn uac 127.0.0.1:5060 -i "$2" -p 0 -nostdin -s "$3" \
		-default_behaviors all,-abortunexp -r "$LEGIT_CPS" -m "$calls" -d 2000 -timeout "$((SECS + 40))s" \
		-trace_stat -stf "$RUN/$1.csv" >"$RUN/$1.out" 2>&1
	local failed
	failed=$(grep -E "Failed call" "$RUN/$1.out" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
	echo "$calls ${failed:-?}" >"$RUN/$1.result"
}

printf '%-6s %-24s %9s %9s %12s %16s %16s %s\n' phase attack edge_cpu rss_kib "flood sent" "victim lost/all" "other lost/all" "edge counted"
for phase in "${PHASES[@]}"; do
	rm -f "$RUN"/legit_*.result
	legit legit_victim 127.0.0.10 +6499990077 &
	L1=$!
	legit legit_other 127.0.0.11 +6499995077 &
	L2=$!
	sleep 1
	E0=$(cpu_ticks "$EDGE_PID")
	T0=$(now)
	case $phase in
	deny) FLOOD_PPS=${FLOOD_PPS_DENY:-100000}
		"$FLOOD" udp --to 127.0.0.1:5060 --from 127.0.1.1-127.0.1.100 --pps "$FLOOD_PPS" --seconds "$((SECS - 2))" --kind invite --number +6499990001 >"$RUN/flood_$phase.out"
		what="udp ${FLOOD_PPS} pps, denied" ;;
	allow) FLOOD_PPS=${FLOOD_PPS_ALLOW:-50000}
		"$FLOOD" udp --to 127.0.0.1:5060 --from 127.0.0.12 --pps "$FLOOD_PPS" --seconds "$((SECS - 2))" --kind invite --number +6499990001 >"$RUN/flood_$phase.out"
		what="udp ${FLOOD_PPS} pps INVITE, allowed" ;;
	forged) # A one-second burst of 10,000 INVITEs "from" the victim carrier's own address (UDP
		# sources can be forged; on loopback, the same address from another port), with its
		# legitimate calls running: before the shedding limiter it blocked the carrier for 30 s.
		FLOOD_PPS=${FLOOD_PPS_FORGED:-10000}
		"$FLOOD" udp --to 127.0.0.1:5060 --from 127.0.0.10 --pps "$FLOOD_PPS" --seconds 1 --kind invite --number +6499990001 >"$RUN/flood_$phase.out"
		sleep "$((SECS - 3))"
		what="udp ${FLOOD_PPS} pps 1 s, as the victim" ;;
	tcp) CONNS=${TCP_CONNS:-20000}
		"$FLOOD" tcp --to 127.0.0.1:5060 --from 127.0.1.1-127.0.1.100 --connections "$CONNS" --seconds "$((SECS / 2))" >"$RUN/flood_$phase.out"
		what="tcp ${CONNS} conns, denied" ;;
	*) echo "unknown phase $phase" >&2; exit 2 ;;
	esac
	T1=$(now)
	E1=$(cpu_ticks "$EDGE_PID")
	R=$(rss)
	wait "$L1" "$L2"
	WALL=$(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.3f", b-a}')
	CPU=$(pct $((E1 - E0)) "$WALL")
	read -r vc vf <"$RUN/legit_victim.result"
	read -r oc of <"$RUN/legit_other.result"
	sent=$(grep -oE '(sent|connected)=[0-9]+' "$RUN/flood_$phase.out" | head -1)
	counted="acl_drops=$(metric trunkgate_edge_acl_drops_total) source_dropped=$(metric trunkgate_edge_source_rate_dropped_total) tcp_refused=$(metric trunkgate_edge_tcp_refused_total) kernel_drops=$(metric trunkgate_edge_kernel_receive_drops_total) refusals=$(metric trunkgate_edge_refusals_total)"
	printf '%-6s %-24s %8s%% %9s %12s %16s %16s %s\n' "$phase" "$what" "$CPU" "$R" "${sent#*=}" "$vf/$vc" "$of/$oc" "$counted"
	sleep 3
done
echo "logs: $RUN (command: bench/attack.sh ${PHASES[*]})"
