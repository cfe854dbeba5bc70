# The edge configuration both edge benchmarks run on: one carrier at 127.0.0.10 whose numbers
# +6499990000..+6499999999 are delivered to a platform at DESTINATION, with limits out of the way
# (the edges run with --source-rate 0 and no set-up caps: the load generator is one address).
#
#   bench_config DIR DESTINATION RELAY [SRTP]
#     BENCH_OUTBOUND_TARGET (env): also outbound calls to this carrier target (a SIP URI), with
#            a rated route for +64 and quality thresholds
#     RELAY: media.relay, true or false
#     SRTP:  media.srtp on the carrier leg, Disabled (default), Optional or Required (needs RELAY
#            true): with Required the carrier must offer SDES-SRTP, the platform gets plain RTP
bench_config() {
	mkdir -p "$1"
	local media="relay: $3"
	if [ -n "${4:-}" ]; then media="$media, srtp: $4"; fi
	local outbound=""
	if [ -n "${BENCH_OUTBOUND_TARGET:-}" ]; then
		outbound="  outbound: {targets: [{uri: \"$BENCH_OUTBOUND_TARGET\"}], callerIdPolicy: Anonymize, quality: {minSamples: 10, critical: {maxFailurePercent: 50}}}
  routes: [{prefix: \"+64\", rate: {perMinute: \"0.0125\", currency: NZD}}]"
	fi
	cat >"$1/bench.yaml" <<YAML
apiVersion: trunkgate.io/v1alpha1
kind: CarrierTrunk
metadata: {name: bench-carrier, namespace: bench}
spec:
  inbound:
    allowedCidrs: ["127.0.0.10/32"]
    numberFormat: {countryCode: "64", nationalPrefix: "0", internationalPrefix: "00"}
    destination: "$2"
  limits: {maxConcurrentCalls: 100000, maxCallsPerSecond: 100000, maxCallsInSetup: 100000}
  media: {$media}
$outbound
---
apiVersion: trunkgate.io/v1alpha1
kind: NumberOwnership
metadata: {name: bench-numbers, namespace: bench}
spec:
  trunkRef: {name: bench-carrier}
  kind: Byoc
  numbers: ["+6499990000-+6499999999"]
YAML
}
