#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer via cargo-fuzz, stable toolchain, --sanitizer none) of every
# parser of network or user input: SIP datagrams and TCP streams, SDP, digest headers, the
# snapshot Secret, CR YAML. Each target runs FUZZ_SECONDS (default 20: the short run of
# `make test`; `make fuzz` runs 600) over its seeds (the RFC 4475 torture messages among them)
# and its own growing corpus. Prints executions and crashes per target; exits 1 on any crash.
#
#   scripts/fuzz.sh [TARGET...]       FUZZ_SECONDS=600 scripts/fuzz.sh sip_message
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
fuzz_dir=tests/fuzz
seconds=${FUZZ_SECONDS:-20}
targets=("$@")
((${#targets[@]})) || targets=(sip_message sip_stream sdp digest snapshot cr_yaml srtp)
shared=${TRUNKGATE_SHARED:-$top/../shared}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
	echo "fuzz: installing cargo-fuzz from crates.io"
	cargo install cargo-fuzz --locked --quiet
fi

# Seeds that need building: the snapshot the examples compile to, gzip and plain JSON.
seeds=$fuzz_dir/target/seeds
mkdir -p "$seeds/snapshot" "$seeds/cr_yaml"
cargo run -q --locked -p trunkgate-operator -- check examples --snapshot-out "$seeds/snapshot/examples.gz" >/dev/null
gzip -dc "$seeds/snapshot/examples.gz" >"$seeds/snapshot/examples.json"
find examples -name '*.yaml' -exec cp {} "$seeds/cr_yaml/" \;

echo "fuzz: building the targets (instrumented, release)"
(cd "$fuzz_dir" && cargo fuzz build --fuzz-dir . --sanitizer none -O >/dev/null 2>"$top/$fuzz_dir/target/build.log") || {
	cat "$fuzz_dir/target/build.log" >&2
	exit 1
}

status=0
passed=0
failed=0
printf '%-12s %12s %10s %8s\n' target executions exec/s crashes
for t in "${targets[@]}"; do
	corpus=$fuzz_dir/corpus/$t
	mkdir -p "$corpus" "$fuzz_dir/artifacts/$t"
	extra=()
	case $t in
	sip_message | sip_stream)
		extra+=("$top/$fuzz_dir/seeds/sip")
		if [ -d "$shared/testdata/rfc4475" ]; then extra+=("$(cd "$shared/testdata/rfc4475" && pwd)"); fi
		;;
	sdp | digest | srtp) extra+=("$top/$fuzz_dir/seeds/$t") ;;
	snapshot | cr_yaml) extra+=("$top/$seeds/$t") ;;
	esac
	log=$fuzz_dir/target/$t.log
	set +e
	(cd "$fuzz_dir" && cargo fuzz run --fuzz-dir . --sanitizer none -O "$t" \
		"$top/$corpus" "${extra[@]}" -- \
		-max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$top/$fuzz_dir/artifacts/$t/" \
		-rss_limit_mb=2048 -max_len=65536) >"$log" 2>&1
	rc=$?
	set -e
	runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
	speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
	crashes=$(find "$fuzz_dir/artifacts/$t" -type f | wc -l)
	printf '%-12s %12s %10s %8s\n' "$t" "${runs:-?}" "${speed:-?}" "$crashes"
	if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
		status=1
		failed=$((failed + 1))
		echo "fuzz: $t failed (exit $rc); its log: $log; inputs in $fuzz_dir/artifacts/$t" >&2
		grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 >&2 || true
	else
		passed=$((passed + 1))
	fi
done
echo "fuzz: $passed passed, $failed failed"
exit $status
