#!/usr/bin/env bash
# Tests of the Helm chart, the plain manifests and the GitOps examples, all offline:
# helm lint/template with each tests/chart/values/*.yaml, the failure cases, Kubernetes schema
# validation (kubernetes-validate), RBAC and pod-settings assertions, the values table, the
# manifests drift check and the Argo CD health scripts.
#
# Installs what it lacks into .tools/ (helm via scripts/install-helm.sh, a Python venv with
# pinned packages from PyPI). Ends with "chart tests: N passed, M failed"; exit 1 on any failure.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
KUBE_VERSION="${KUBE_VERSION:-1.33}"
PY_PACKAGES=(kubernetes-validate==1.37.0 PyYAML==6.0.3 lupa==2.8)
chart=charts/trunkgate
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# --- tools ---------------------------------------------------------------------------------------
bash scripts/install-helm.sh || { echo "chart tests: 0 passed, 1 failed (no helm)"; exit 1; }
helm=helm
[ -x .tools/bin/helm ] && helm="$root/.tools/bin/helm"

venv=.tools/venv
if ! "$venv/bin/python" -c 'import kubernetes_validate, yaml, lupa' 2>/dev/null; then
  echo "chart-test: creating $venv with ${PY_PACKAGES[*]}"
  if ! python3 -m venv "$venv"; then
    echo "chart-test: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
    echo "chart tests: 0 passed, 1 failed (no Python venv)"
    exit 1
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}" || {
    echo "chart tests: 0 passed, 1 failed (pip install)"; exit 1; }
fi
py="$venv/bin/python"

# --- helpers ---------------------------------------------------------------------------------------
# check NAME CMD...: runs CMD, indents its output, counts the result.
check() {
  local name="$1"
  shift
  local out
  if out="$("$@" 2>&1)"; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
  fi
  [ -n "$out" ] && sed 's/^/       /' <<<"$out" | grep -v '^ *$' | head -40
  return 0
}

# expect_fail NAME REGEX CMD...: CMD must fail and print a line matching REGEX (grep -E, any
# case: Helm 3 and Helm 4 word schema errors differently).
expect_fail() {
  local name="$1" message="$2"
  shift 2
  local out
  if out="$("$@" 2>&1)"; then
    failed=$((failed + 1))
    echo "FAIL $name (it succeeded)"
  elif grep -qEi -- "$message" <<<"$out"; then
    passed=$((passed + 1))
    echo "ok   $name"
    echo "       -> $(grep -Ei -- "$message" <<<"$out" | head -1 | sed 's/^Error: //')"
  else
    failed=$((failed + 1))
    echo "FAIL $name: expected \"$message\" in:"
    sed 's/^/       /' <<<"$out" | head -20
  fi
}

template() { "$helm" template tg "$chart" --namespace trunkgate-test --kube-version "$KUBE_VERSION.0" "$@"; }
render_to() {
  local out="$1"
  shift
  template "$@" >"$out"
}

# --- the chart ---------------------------------------------------------------------------------------
check "chart CRDs are a copy of crds/crds.yaml" cmp crds/crds.yaml "$chart/crds/crds.yaml"
check "values.yaml, values.schema.json and the README values table agree" \
  "$py" tests/chart/values_doc.py --check
check "helm lint (default values)" "$helm" lint --strict --quiet "$chart"

renders=()
for values in tests/chart/values/*.yaml; do
  name="$(basename "$values" .yaml)"
  check "helm lint -f $values" "$helm" lint --strict --quiet "$chart" -f "$values"
  check "helm template -f $values" render_to "$work/$name.yaml" -f "$values" --include-crds
  renders+=("$work/$name.yaml")
done
check "helm template (default values)" render_to "$work/default.yaml"
renders+=("$work/default.yaml")

# --- failure cases ------------------------------------------------------------------------------------
ips3=(--set edge.mode=statefulset --set 'edge.loadBalancer.ips={203.0.113.10,203.0.113.11,203.0.113.12}')
expect_fail "replicas > number of IPs fails" \
  "edge.replicas \(4\) is larger than the number of edge.loadBalancer.ips \(3\)" \
  template "${ips3[@]}" --set edge.replicas=4
expect_fail "HPA minReplicas > number of IPs fails" \
  "edge.autoscaling.minReplicas \(4\) is larger than the number of edge.loadBalancer.ips \(3\)" \
  template "${ips3[@]}" --set edge.autoscaling.enabled=true --set edge.autoscaling.minReplicas=4
expect_fail "statefulset mode without IPs fails" "edge.mode statefulset needs edge.loadBalancer.ips" \
  template --set edge.mode=statefulset
expect_fail "the kernel fast path outside daemonset mode fails" "edge.kernelFastPath needs edge.mode daemonset" \
  template "${ips3[@]}" --set edge.kernelFastPath.enabled=true --set 'edge.kernelFastPath.interfaces={eth0}'
expect_fail "the kernel fast path without interfaces fails" "edge.kernelFastPath.enabled needs edge.kernelFastPath.interfaces" \
  template --set edgeEndpoint.fqdn=sip.example.net --set edge.kernelFastPath.enabled=true
expect_fail "typo'd value key fails helm template (values.schema.json)" \
  "additional propert(y|ies) '?replcas'? (is )?not allowed" template --set edge.replcas=3
expect_fail "typo'd value key fails helm lint" \
  "additional propert(y|ies) '?maxUnavailble'? (is )?not allowed" \
  "$helm" lint "$chart" --set edge.podDisruptionBudget.maxUnavailble=2
expect_fail "unknown edge.mode fails" "value must be one of" template --set edge.mode=deployment
expect_fail "grace period shorter than the drain fails" \
  "edge.terminationGracePeriodSeconds \(100\) must be at least" \
  template --set edge.terminationGracePeriodSeconds=100
expect_fail "networkPolicy in daemonset mode fails" "networkPolicy needs edge.mode statefulset" \
  template --set networkPolicy.enabled=true --set 'networkPolicy.carrierCidrs={203.0.113.0/28}'
expect_fail "networkPolicy without carrier CIDRs fails" "networkPolicy.carrierCidrs is empty" \
  template "${ips3[@]}" --set edge.replicas=1 --set networkPolicy.enabled=true
expect_fail "several operators without leader election fails" "needs operator.leaderElection.enabled" \
  template --set operator.leaderElection.enabled=false

# --- the rendered objects -----------------------------------------------------------------------------
check "every object validates against Kubernetes $KUBE_VERSION (kubernetes-validate, strict)" \
  "$py" tests/chart/chart_checks.py validate "$KUBE_VERSION" "${renders[@]}"
for r in "${renders[@]}"; do
  name="$(basename "$r" .yaml)"
  check "RBAC least privilege ($name)" "$py" tests/chart/chart_checks.py rbac "$r"
  check "edge and operator pod settings ($name)" "$py" tests/chart/chart_checks.py workloads "$r"
done
check "alerts, ServiceMonitors and dashboard (statefulset-ip-pool)" \
  "$py" tests/chart/chart_checks.py monitoring "$work/statefulset-ip-pool.yaml"

# --- the lab Redis (edge.stateStore.deploy) ------------------------------------------------------
# Rendered only when asked and no url is given; the edge's --state-store is its Service.
check "lab Redis (lab-redis.yaml): one non-root, read-only Redis and its Service; the edge's --state-store is it, the password from the edge's Secret" \
  "$py" tests/chart/chart_checks.py redis "$work/lab-redis.yaml" deployed
check "no lab Redis by default" "$py" tests/chart/chart_checks.py redis "$work/default.yaml" absent
redis_url=redis://redis.voice.svc:6379/0
render_to "$work/redis-url-wins.yaml" --set edge.stateStore.deploy=true --set edge.stateStore.url=$redis_url
check "edge.stateStore.url wins over deploy: no lab Redis, the edge uses the url" \
  "$py" tests/chart/chart_checks.py redis "$work/redis-url-wins.yaml" absent "$redis_url"
render_to "$work/redis-cluster-ip.yaml" --set edge.stateStore.deploy=true --set edge.stateStore.redis.clusterIP=10.96.0.63
check "edge.stateStore.redis.clusterIP: the Service pins it and the edge uses redis://10.96.0.63:6379 (no password)" \
  "$py" tests/chart/chart_checks.py redis "$work/redis-cluster-ip.yaml" deployed redis://10.96.0.63:6379
render_to "$work/redis-netpol.yaml" "${ips3[@]}" --set edge.replicas=1 --set networkPolicy.enabled=true \
  --set 'networkPolicy.carrierCidrs={203.0.113.0/28}' --set edge.stateStore.deploy=true
check "statefulset mode with networkPolicy: only the edge pods reach the lab Redis" \
  "$py" tests/chart/chart_checks.py redis "$work/redis-netpol.yaml" deployed
check "the lab Redis renders validate against Kubernetes $KUBE_VERSION" \
  "$py" tests/chart/chart_checks.py validate "$KUBE_VERSION" "$work/redis-cluster-ip.yaml" "$work/redis-netpol.yaml"
expect_fail "edge.stateStore.redis.clusterIP must be an IPv4 address" "clusterIP" \
  template --set edge.stateStore.deploy=true --set edge.stateStore.redis.clusterIP=redis.local
redis_notes() {
  "$helm" install tg "$chart" --dry-run=client --namespace trunkgate-test --set edge.stateStore.deploy=true |
    grep -q 'For labs only: production uses Redis Sentinel or a managed Redis/Valkey'
}
check "NOTES.txt says the lab Redis is for labs only" redis_notes

# --- listening addresses --------------------------------------------------------------------------
# The default renders are checked by `workloads` above (the pod's own address, never a wildcard on
# the host network). A wildcard only when a value asks for it, and then NOTES.txt says so.
wild() {
  template --set edge.adminAddress=0.0.0.0 | grep -A1 'name: TRUNKGATE_ADMIN' | grep -q '"0.0.0.0:9091"' &&
    "$helm" install tg "$chart" --dry-run=client --namespace trunkgate-test --set edge.adminAddress=0.0.0.0 |
    grep -q 'EVERY interface of the node'
}
check "edge.adminAddress=0.0.0.0 binds every address only when asked, and NOTES.txt warns" wild
notes() {
  "$helm" install tg "$chart" --dry-run=client --namespace trunkgate-test |
    grep -q 'platform-side SIP 5080/udp+tcp: only the platform should reach it'
}
check "NOTES.txt warns that platform-side SIP is on the node's IP (daemonset)" notes
# Issue 21: the platform side and admin never bind the carrier-facing address where the chart
# can tell them apart, and every edge takes platform SIP only from the platform's networks.
separate() {
  local out
  out="$(template --set edge.daemonset.publicNetwork=203.0.113.0/24)" || return 1
  grep -A1 'name: TRUNKGATE_PUBLIC_SIP$' <<<"$out" | grep -q '"203.0.113.0/24:5060"' || { echo "carrier side not on the public network"; return 1; }
  if grep -A1 -E 'name: TRUNKGATE_(INTERNAL_SIP|ADMIN|INTERNAL_MEDIA_IP)$' <<<"$out" | grep -q '203\.0\.113'; then
    echo "a platform-side bind is on the carrier-facing network"; return 1
  fi
  grep -A1 -E 'name: TRUNKGATE_(INTERNAL_SIP|ADMIN)$' <<<"$out" | grep -c 'HOST_IP' | grep -qx 2 || { echo "platform SIP and admin not on status.hostIP"; return 1; }
  out="$(template "${ips3[@]}" --set edge.replicas=1)" || return 1
  if grep -A1 -E 'name: TRUNKGATE_(INTERNAL_SIP|ADMIN)$' <<<"$out" | grep -q '203\.0\.113'; then
    echo "statefulset: a platform-side bind is on a load balancer IP"; return 1
  fi
  grep -A1 -E 'name: TRUNKGATE_(INTERNAL_SIP|ADMIN)$' <<<"$out" | grep -c 'POD_IP' | grep -qx 2 || { echo "statefulset: platform SIP and admin not on the pod IP"; return 1; }
  out="$(template --set 'edge.platformCidrs={acme=10.1.0.0/16,10.9.0.0/16}')" || return 1
  grep -A1 'name: TRUNKGATE_PLATFORM_CIDRS$' <<<"$out" | grep -q '"acme=10.1.0.0/16,10.9.0.0/16,$(HOST_IP)"' || { echo "platformCidrs not passed"; return 1; }
}
check "platform SIP and admin never bind the carrier-facing address (publicNetwork, statefulset); platformCidrs reach the edge" separate
expect_fail "admin on loopback in statefulset mode fails" "adminAddress on loopback needs edge.mode daemonset" \
  template "${ips3[@]}" --set edge.replicas=1 --set edge.adminAddress=127.0.0.1
render_to "$work/admin-loopback.yaml" --set edge.adminAddress=127.0.0.1
check "admin on loopback: the probes ask 127.0.0.1 (daemonset)" \
  "$py" tests/chart/chart_checks.py workloads "$work/admin-loopback.yaml"

# --- defaults: binaries, chart, deploy/, Makefile, README ---------------------------------------------
# The binaries' own --help states their defaults; they must be the chart's.
helps() {
  cargo run -q --locked -p trunkgate-edge --bin trunkgate-edge -- --help >"$work/edge-help.txt" 2>"$work/build.log" &&
    cargo run -q --locked -p trunkgate-operator --bin trunkgate-operator -- run --help >"$work/operator-help.txt" 2>>"$work/build.log"
}
if helps; then
  check "defaults agree: edge and operator flags, values.yaml, deploy/, Makefile, README; RTP range fits the examples" \
    "$py" tests/chart/chart_checks.py defaults "$work/edge-help.txt" "$work/operator-help.txt" "$work/default.yaml"
else
  failed=$((failed + 1))
  echo "FAIL defaults agree (could not build the binaries for --help)"
fi

# --- plain manifests and GitOps examples ------------------------------------------------------------
check "deploy/trunkgate.yaml is up to date (scripts/render-manifests.sh --check)" \
  bash scripts/render-manifests.sh --check
check "deploy/trunkgate.yaml validates against Kubernetes $KUBE_VERSION" \
  "$py" tests/chart/chart_checks.py validate "$KUBE_VERSION" deploy/trunkgate.yaml
check "GitOps examples: kinds, chart paths, Argo CD health scripts" "$py" tests/chart/gitops_checks.py

echo "chart tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
