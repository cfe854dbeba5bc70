# Trunkgate. The two commands a new user needs: `make run` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := run
CARGO ?= cargo
RELEASE_BIN := target/release
CRD_FILE := crds/crds.yaml
CHART_CRD_DIR := charts/trunkgate/crds

.PHONY: run check-examples test test-deps lint fmt crds crds-check bench build clean chart-test manifests manifests-check e2e image fuzz module-cycles

EDGE_FLAGS ?= --public-sip 127.0.0.1:5060 --internal-sip 127.0.0.1:5080 --admin 127.0.0.1:9091 --state-dir .trunkgate-state

## run: build and run the edge standalone on examples/ (no cluster needed); Ctrl-C stops it
run: build
	$(RELEASE_BIN)/trunkgate-operator check examples
	$(RELEASE_BIN)/trunkgate-edge --config examples $(EDGE_FLAGS)

build:
	$(CARGO) build --release --bins

## check-examples: validate examples/ as a GitOps repository's CI would
check-examples:
	$(CARGO) run -q -p trunkgate-operator -- check examples

## test: install what the tests need (sipp, helm, ...) when missing, then run every test, the
## end-to-end run on a real single-node cluster included (as root; see scripts/e2e.sh)
test: test-deps
	$(CARGO) test --workspace --all-targets --locked
	$(CARGO) test --workspace --doc --locked
	@if [ "$$(id -u)" = 0 ]; then \
	  echo "media tests again with the RTP fast path in the kernel (--kernel-fast-path lo)"; \
	  TRUNKGATE_TEST_KERNEL_FAST_PATH=lo $(CARGO) test --locked -p trunkgate-tests --test media --test media_attacks --test interop_baresip --test srtp --test survival; \
	else echo "media tests with the kernel fast path skipped: they need root (CAP_BPF, CAP_NET_ADMIN)"; fi
	@bash scripts/chart-test.sh
	@E2E_FROM_MAKE_TEST=1 bash scripts/e2e.sh
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-20} bash scripts/fuzz.sh

## fuzz: coverage-guided fuzzing of every parser of network or user input, 10 minutes a target
fuzz:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-600} bash scripts/fuzz.sh

test-deps:
	@bash scripts/test-deps.sh
	@bash scripts/install-helm.sh

## chart-test: lint/render the Helm chart with tests/chart/values/*, validate offline, check RBAC, deploy/ and examples/gitops
chart-test:
	@bash scripts/chart-test.sh

## manifests: regenerate deploy/trunkgate.yaml (for kubectl apply) from the chart's default values
manifests:
	@bash scripts/render-manifests.sh

manifests-check:
	@bash scripts/render-manifests.sh --check

## lint: formatting, clippy, generated CRD YAML, Helm chart, deploy/trunkgate.yaml up to date
lint: crds-check manifests-check module-cycles
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	@bash scripts/install-helm.sh >/dev/null
	@helm=helm; [ -x .tools/bin/helm ] && helm=.tools/bin/helm; $$helm lint --strict --quiet charts/trunkgate

fmt:
	$(CARGO) fmt --all

## module-cycles: no import circle between the edge's folders (ARCHITECTURE.md's layering)
module-cycles:
	@python3 scripts/module-cycles.py

## crds: regenerate the CRD YAML from the Rust types (and the chart's copy)
crds:
	$(CARGO) run -q -p trunkgate-operator -- crd > $(CRD_FILE)
	@if [ -d $(CHART_CRD_DIR) ]; then cp $(CRD_FILE) $(CHART_CRD_DIR)/crds.yaml; fi
	@bash scripts/render-manifests.sh

crds-check:
	@tmp=$$(mktemp); $(CARGO) run -q -p trunkgate-operator -- crd > $$tmp; \
	if ! diff -u $(CRD_FILE) $$tmp; then echo "$(CRD_FILE) is stale: run 'make crds'"; rm -f $$tmp; exit 1; fi; \
	if [ -d $(CHART_CRD_DIR) ] && ! diff -u $(CRD_FILE) $(CHART_CRD_DIR)/crds.yaml; then \
	  echo "$(CHART_CRD_DIR)/crds.yaml is stale: run 'make crds'"; rm -f $$tmp; exit 1; fi; \
	rm -f $$tmp; echo "CRD YAML up to date"

BENCH_RATES ?= 2000 5000
BENCH_PPS ?= 50000 100000
BENCH_SRTP_PPS ?= 50000 100000
BENCH_TLS_RATES ?= 1000 2000

## image: build the operator and edge image tarballs from the release binaries, and the lab Redis
## one from Debian's redis-server (no engine needed), and load them into docker, podman or nerdctl
## when one runs (REGISTRY, TAG, CONTAINER_ENGINE)
image:
	bash scripts/image.sh

## e2e: the chart on a real cluster: starts ../shared/k8s/cluster (root) or uses $$KUBECONFIG,
## images, helm install with the lab Redis, examples, a call through the edge pod, CR edit, upgrade
## drain, kill -9 of the edge with a call up (restored from Redis), uninstall
e2e:
	bash scripts/e2e.sh

## bench: print the benchmark figures (compile, snapshot at scale on a real API server, SIP parse, the outbound routing decision with 1,000 trunks, CPS against Kamailio in the same sitting,
## RTP and SRTP<->RTP relay against rtpengine, TLS against UDP calls per second through a carrier's Kamailio)
bench: build
	$(CARGO) run --release -q -p trunkgate-crds --example compile_bench
	$(CARGO) build --release -q -p trunkgate-operator -p trunkgate-edge --bins
	$(CARGO) run --release -q -p trunkgate-tests --example snapshot_scale
	$(CARGO) run --release -q -p trunkgate-sip --example parse_bench
	$(CARGO) run --release -q -p trunkgate-edge --example route_bench
	@command -v kamailio >/dev/null 2>&1 && command -v rtpengine >/dev/null 2>&1 || bash ../shared/bench/setup.sh
	bash bench/compare_cps.sh $(BENCH_RATES)
	$(CARGO) build --release -q -p trunkgate-media --example relay_bench
	bash bench/rtp_compare.sh $(BENCH_PPS)
	bash bench/srtp_compare.sh $(BENCH_SRTP_PPS)
	@[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ] || bash scripts/test-deps.sh
	-bash bench/tls_cps.sh $(BENCH_TLS_RATES)
	-bash bench/profile_cps.sh 2000 2
	@command -v redis-server >/dev/null 2>&1 || bash scripts/test-deps.sh
	bash bench/fleet_cps.sh 2000 2
	bash bench/restore_time.sh 10000
	$(CARGO) run --release -q -p trunkgate-media --example uring_probe -- 2000 100000 5

clean:
	$(CARGO) clean
