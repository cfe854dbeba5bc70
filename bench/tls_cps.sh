#!/usr/bin/env bash
# TLS calls per second and the edge's CPU per call, against the same calls over UDP (issue 14).
# sipp has no TLS here (Debian's build), so a carrier's Kamailio (tls module, Debian
# kamailio-tls-modules) sits between the carrier's phone and the edge, as in tests/tests/tls.rs:
#
#   sipp uac (udp 127.0.0.11:5062) -> Kamailio (udp 127.0.0.10:5060)
#       -> trunkgate-edge (tls 127.0.0.1:5061 | udp 127.0.0.1:5060; platform side udp 127.0.0.1:5070)
#       -> sipp uas (udp 127.0.0.2:5080)
#
#   usage: bench/tls_cps.sh RATE [RATE...]
#
# For each RATE the same chain runs twice, interleaved so the machine's drift hits both alike:
# Kamailio -> edge over UDP, then over TLS (TRANSPORTS="udp tls" to change). Only the hop
# between Kamailio and the edge changes: the same Kamailio config (stateful, tm; it is the
# phone's outbound proxy: every request of the call, in-dialog ones too, goes to the edge), the
# same edge (fresh each run), certificates and listeners in both runs.
#
# Kamailio's TLS connection to the edge is made once and reused by every call (Kamailio keeps
# one connection per destination, as carriers' SBCs and proxies do): a warm-up call opens it
# (TLS 1.2+, P-256 certificates from a throw-away CA made with openssl, Kamailio presents a
# client certificate and checks the edge's), then RATE x DURATION calls are measured. So the
# TLS figure is the per-message cost of TLS on a long-lived connection (record encryption, TCP
# stream framing), not a handshake per call.
#
# Per run: PASS when sipp's every call succeeded (0 failed calls) and the edge wrote a CDR
# with finalStatus 200 and the expected carrierTransport for each; the edge's CPU (utime+stime
# from /proc/PID/stat over the load window) per call; Kamailio's (all its processes) and the
# sipps' for context. Env: DURATION [20], HOLD_MS [1000], WORKERS [2] (edge --workers),
# KAM_CHILDREN [2] (Kamailio UDP and TCP workers), SIPP_BUF [4194304], EDGE_BIN
# [target/release/trunkgate-edge]. Loopback only; every process started here is stopped by PID.
set -uo pipefail
[ $# -gt 0 ] || { echo "usage: bench/tls_cps.sh RATE [RATE...]" >&2; exit 2; }
RATES=("$@")
read -r -a TRANSPORTS <<<"${TRANSPORTS:-udp tls}"
DURATION=${DURATION:-20}
HOLD_MS=${HOLD_MS:-1000}
WORKERS=${WORKERS:-2}
KAM_CHILDREN=${KAM_CHILDREN:-2}
SIPP_BUF=${SIPP_BUF:-4194304}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
. "$SHARED/lib.sh"
EDGE_BIN=${EDGE_BIN:-$ROOT/target/release/trunkgate-edge}
KAMAILIO=/usr/sbin/kamailio
[ -x "$EDGE_BIN" ] || { echo "no $EDGE_BIN: run cargo build --release -p trunkgate-edge" >&2; exit 2; }
[ -x "$KAMAILIO" ] || { echo "no kamailio: bash ../shared/bench/setup.sh" >&2; exit 2; }
[ -f /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ] || ls /usr/lib/*/kamailio/modules/tls.so >/dev/null 2>&1 ||
	{ echo "no Kamailio tls module: apt-get install kamailio-tls-modules" >&2; exit 2; }
command -v sipp >/dev/null || { echo "no sipp: bash ../shared/bench/setup.sh" >&2; exit 2; }
command -v openssl >/dev/null || { echo "no openssl" >&2; exit 2; }

PHONE=127.0.0.11:5062 KAM_IP=127.0.0.10 KAM_UDP=127.0.0.10:5060 KAM_TLS=127.0.0.10:5061
EDGE_UDP=127.0.0.1:5060 EDGE_TLS=127.0.0.1:5061 EDGE_INTERNAL=127.0.0.1:5070 ADMIN=127.0.0.1:19093
UAS=127.0.0.2:5080

OUT=$(mktemp -d /tmp/tlscps.XXXXXX)
EDGE_PID="" KAM_PID="" UAS_PID="" KAM_TREE=""
stop_all() {
	stop_pid "$UAS_PID" 3
	# Kamailio's main process stops its children; any left are stopped by their own PIDs.
	stop_pid "$KAM_PID" 5
	for p in $KAM_TREE; do stop_pid "$p" 2; done
	stop_pid "$EDGE_PID" 5
	UAS_PID="" KAM_PID="" KAM_TREE="" EDGE_PID=""
}
trap stop_all EXIT
trap 'exit 2' INT TERM

# Certificates: a CA, the edge's for 127.0.0.1, Kamailio's for 127.0.0.10 (P-256, 2 days).
pki() {
	local d=$OUT/pki name
	mkdir -p "$d"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/ca.key" -out "$d/ca.crt" \
		-subj "/CN=Trunkgate bench CA" -days 2 -addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null || return 1
	for name in edge:127.0.0.1 kamailio:$KAM_IP; do
		local file=${name%%:*} ip=${name#*:}
		printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' "$ip" >"$d/$file.ext"
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$d/$file.key" -out "$d/$file.csr" \
			-subj "/CN=$ip" 2>/dev/null || return 1
		openssl x509 -req -in "$d/$file.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
			-out "$d/$file.crt" -days 2 -extfile "$d/$file.ext" 2>/dev/null || return 1
	done
}
pki || { echo "openssl could not make the certificates" >&2; exit 2; }

. "$HERE/config.sh"
bench_config "$OUT/config" "sip:$UAS" false

# kamailio_cfg TRANSPORT: the carrier's proxy; only the hop to the edge differs.
kamailio_cfg() {
	local edge=$EDGE_UDP
	[ "$1" = tls ] && edge=$EDGE_TLS
	cat >"$OUT/tls.cfg" <<CFG
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = $OUT/pki/kamailio.crt
private_key = $OUT/pki/kamailio.key

[client:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
certificate = $OUT/pki/kamailio.crt
private_key = $OUT/pki/kamailio.key
ca_list = $OUT/pki/ca.crt
CFG
	cat >"$OUT/kamailio_$1.cfg" <<CFG
#!KAMAILIO
# The carrier's proxy for bench/tls_cps.sh: the phone's outbound proxy, stateful, to the edge
# over $1.
debug=1
log_stderror=yes
children=$KAM_CHILDREN
tcp_children=$KAM_CHILDREN
auto_aliases=no
dns=no
rev_dns=no
dns_try_ipv6=no
use_dns_cache=off
disable_sctp=yes
# Outgoing TLS from the listening address: the trunk admits 127.0.0.10 only.
tcp_source_ipv4=$KAM_IP
tcp_connection_lifetime=3600
enable_tls=yes
listen=udp:$KAM_UDP
listen=tls:$KAM_TLS

loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "textops.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "pv.so"
loadmodule "tls.so"
modparam("tls", "config", "$OUT/tls.cfg")
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 20000)

request_route {
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	if (\$si != "127.0.0.11") {
		sl_send_reply("403", "Only the bench phone");
		exit;
	}
	if (is_method("CANCEL")) {
		if (t_check_trans()) t_relay();
		exit;
	}
	if (!is_method("ACK")) {
		if (t_precheck_trans()) {
			t_check_trans();
			exit;
		}
		t_check_trans();
	}
	# Every request of the phone's calls, new or in-dialog (the phone sends ACK and BYE here
	# too), goes to the edge.
	\$ru = "sip:" + \$rU + "@$edge";
	\$du = "sip:$edge;transport=$1";
	if (!t_relay()) sl_reply_error();
	exit;
}
CFG
	"$KAMAILIO" -c -f "$OUT/kamailio_$1.cfg" >"$OUT/kamailio_$1.check" 2>&1 ||
		{ echo "kamailio -c refused $OUT/kamailio_$1.cfg:" >&2; tail -5 "$OUT/kamailio_$1.check" >&2; return 1; }
}

# run TRANSPORT RATE: one measured run; prints a result line.
run() {
	local t=$1 rate=$2 calls=$(($2 * DURATION)) tag="$1_$2" i
	for hp in $EDGE_UDP $EDGE_INTERNAL $UAS $KAM_UDP $PHONE; do
		if udp_port_busy "$hp"; then echo "udp $hp already in use; skipping $tag" >&2; return 1; fi
	done
	kamailio_cfg "$t" || return 1
	wait_quiet
	local cpu_ref_s
	cpu_ref_s=$(cpu_ref)
	"$EDGE_BIN" --config "$OUT/config" --public-sip "$EDGE_UDP" --public-sips "$EDGE_TLS" \
		--tls-cert "$OUT/pki/edge.crt" --tls-key "$OUT/pki/edge.key" --tls-ca "$OUT/pki/ca.crt" \
		--internal-sip "$EDGE_INTERNAL" --admin "$ADMIN" --workers "$WORKERS" --source-rate 0 \
		--max-calls-in-setup 1000000 --max-calls-in-setup-per-source 1000000 \
		>"$OUT/cdr_$tag.jsonl" 2>"$OUT/edge_$tag.log" &
	EDGE_PID=$!
	for ((i = 0; i < 100; i++)); do
		curl -sf "$ADMIN/readyz" >/dev/null 2>&1 && break
		kill -0 "$EDGE_PID" 2>/dev/null || { echo "edge died: $OUT/edge_$tag.log" >&2; return 1; }
		sleep 0.1
	done
	mkdir -p "$OUT/kamrun_$tag"
	"$KAMAILIO" -f "$OUT/kamailio_$t.cfg" -DD -E -x tlsf -m "${SHM_MB:-1024}" -M "${PKG_MB:-32}" \
		-Y "$OUT/kamrun_$tag" -P "$OUT/kamrun_$tag/kamailio.pid" -w "$OUT/kamrun_$tag" \
		>"$OUT/kamailio_$tag.log" 2>&1 </dev/null &
	KAM_PID=$!
	for ((i = 0; i < 100; i++)); do
		udp_port_busy "$KAM_UDP" && ss -Htln "src $KAM_TLS" 2>/dev/null | grep -q . && break
		kill -0 "$KAM_PID" 2>/dev/null || { echo "kamailio died: $OUT/kamailio_$tag.log" >&2; return 1; }
		sleep 0.1
	done
	sleep 0.3
	KAM_TREE=$(descendants "$KAM_PID" | tr '\n' ' ')

	sipp -sn uas -i "${UAS%:*}" -p "${UAS#*:}" -mi "${UAS%:*}" -cp 8895 -nostdin -m $((calls + 1)) \
		-default_behaviors all,-abortunexp -buff_size "$SIPP_BUF" -trace_err -error_file "$OUT/uas_errors_$tag.log" \
		>"$OUT/uas_$tag.out" 2>&1 &
	UAS_PID=$!
	sleep 0.5
	local uac=(sipp -sn uac "$KAM_UDP" -i "${PHONE%:*}" -p "${PHONE#*:}" -mi "${PHONE%:*}" -cp 8896 -nostdin
		-s +6499990001 -default_behaviors all,-abortunexp -buff_size "$SIPP_BUF")
	# Warm-up call: opens Kamailio's connection to the edge (the TLS handshake) before the window.
	timeout 20 "${uac[@]}" -m 1 -d 100 -timeout 15s >"$OUT/warmup_$tag.out" 2>&1 ||
		{ echo "$t $rate: the warm-up call failed: $OUT/warmup_$tag.out, $OUT/kamailio_$tag.log, $OUT/edge_$tag.log" >&2; return 1; }
	sleep 0.3

	local limit=$((DURATION * 2 + HOLD_MS / 1000 + 30))
	local e0 k0 u0 t0 a0 e1 k1 u1 t1 a1 rc
	KAM_TREE=$(descendants "$KAM_PID" | tr '\n' ' ')
	a0=$(all_ticks)
	e0=$(cpu_ticks "$EDGE_PID") k0=$(cpu_ticks $KAM_TREE) u0=$(cpu_ticks "$UAS_PID") t0=$(now)
	/usr/bin/time -f "%e %U %S" -o "$OUT/uac_$tag.time" timeout -s TERM "$((limit + 10))" \
		"${uac[@]}" -r "$rate" -m "$calls" -d "$HOLD_MS" -timeout "${limit}s" \
		-trace_err -error_file "$OUT/uac_errors_$tag.log" -fd 1 >"$OUT/uac_$tag.out" 2>&1
	rc=$?
	e1=$(cpu_ticks "$EDGE_PID") k1=$(cpu_ticks $KAM_TREE) u1=$(cpu_ticks "$UAS_PID") t1=$(now)
	a1=$(all_ticks)
	local wall
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
	local ok failed tls_conns cdr_ok cdr_t uac_u uac_s late
	ok=$(grep -E "Successful call" "$OUT/uac_$tag.out" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
	failed=$(grep -E "Failed call" "$OUT/uac_$tag.out" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
	read -r _ uac_u uac_s < <(tail -n 1 "$OUT/uac_$tag.time") || true
	# A 180 relayed after its 200 (two Kamailio workers race; a real UA drops it): tolerated
	# (-abortunexp off, as in ../shared/bench) and counted.
	late=$(cat "$OUT/uac_errors_$tag.log" 2>/dev/null | grep -c 'Continuing call on unexpected message')
	# Give the last BYEs' CDRs a moment, then stop everything of this run.
	sleep 0.5
	tls_conns=$(ss -Htn state established "( sport = :${EDGE_TLS#*:} )" 2>/dev/null | grep -c "${EDGE_TLS%:*}:${EDGE_TLS#*:}")
	stop_all
	cdr_ok=$(grep -c '"finalStatus":200' "$OUT/cdr_$tag.jsonl")
	cdr_t=$(grep '"finalStatus":200' "$OUT/cdr_$tag.jsonl" | grep -c "\"carrierTransport\":\"$t\"")
	local verdict=FAIL
	[ "$rc" -eq 0 ] && [ "${failed:-1}" = 0 ] && [ "$cdr_t" -eq $((calls + 1)) ] && verdict=PASS
	local edge_pct edge_us kam_us uas_pct uac_pct
	edge_pct=$(pct $((e1 - e0)) "$wall")
	edge_us=$(awk -v t=$((e1 - e0)) -v hz="$CLK_TCK" -v n="$calls" 'BEGIN{printf "%.1f", 1e6*t/hz/n}')
	kam_us=$(awk -v t=$((k1 - k0)) -v hz="$CLK_TCK" -v n="$calls" 'BEGIN{printf "%.1f", 1e6*t/hz/n}')
	uas_pct=$(pct $((u1 - u0)) "$wall")
	uac_pct=$(awk -v u="${uac_u:-0}" -v s="${uac_s:-0}" -v w="$wall" 'BEGIN{printf "%.1f", 100*(u+s)/w}')
	# CPU of every other process during the window (another tenant's build): noisy above NOISE_MAX.
	local uac_ticks foreign
	uac_ticks=$(awk -v u="${uac_u:-0}" -v s="${uac_s:-0}" -v hz="$CLK_TCK" 'BEGIN{printf "%d", (u+s)*hz}')
	foreign=$(pct $((a1 - a0 - (e1 - e0) - (k1 - k0) - (u1 - u0) - uac_ticks)) "$wall")
	awk -v f="$foreign" -v m="${NOISE_MAX:-10}" 'BEGIN{exit !(f > m)}' && foreign="$foreign(noisy)"
	printf '%-4s %-6s %-7s %-8s %-7s %-7s %-7s %-12s %-11s %-11s %-13s %-9s %s\n' "$t" "$rate" "$calls" "${ok:-?}" "${failed:-?}" "$verdict" \
		"$edge_pct" "$edge_us" "$kam_us" "$uac_pct/$uas_pct" "$foreign" "$cpu_ref_s" "cdr200=$cdr_ok ($t: $cdr_t, +1 warm-up) unexpected_msgs=$late edge_tls_conns=$tls_conns"
	echo "$t $rate $edge_us" >>"$OUT/per_call"
	[ "$verdict" = PASS ]
}

echo "# bench/tls_cps.sh: sipp uac -> Kamailio -> edge over {${TRANSPORTS[*]}} -> sipp uas; DURATION=${DURATION}s, hold ${HOLD_MS} ms, edge --workers $WORKERS, Kamailio $KAM_CHILDREN+$KAM_CHILDREN workers; one TLS connection reused by every call"
printf '%-4s %-6s %-7s %-8s %-7s %-7s %-7s %-12s %-11s %-11s %-13s %-9s %s\n' hop rate calls ok failed verdict "edge%" "edge_us/call" "kam_us/call" "uac%/uas%" "others%" "cpu_ref_s" notes
status=0
for rate in "${RATES[@]}"; do
	for t in "${TRANSPORTS[@]}"; do run "$t" "$rate" || status=1; done
	awk -v r="$rate" '$2 == r {us[$1] = $3} END {if (us["udp"] > 0 && us["tls"] > 0) printf "  at %s cps: edge CPU per call over TLS / over UDP = %.2f (%+.1f us per call)\n", r, us["tls"] / us["udp"], us["tls"] - us["udp"]}' "$OUT/per_call" 2>/dev/null
done
echo "details: $OUT"
exit $status
