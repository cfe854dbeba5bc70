#!/usr/bin/env bash
# End-to-end on a real cluster (kind, or k3d with CLUSTER_TOOL=k3d): build both images, create a
# throw-away cluster, install the chart, apply examples/, wait for every CarrierTrunk and
# NumberOwnership to be Ready, then place a sipp call through the edge with the lab tenant
# (examples/lab.yaml: carrier on loopback, platform on 127.0.0.1:5090 of the edge's node).
#
#   make e2e            # needs docker (with a running engine), kind or k3d, kubectl, helm
#
# Not part of `make test`: no cluster can run where CI runs. Everything it creates is deleted at
# the end (KEEP=1 keeps the cluster for a look around).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOL=${CLUSTER_TOOL:-kind}
NAME=${CLUSTER_NAME:-trunkgate-e2e}
NS=trunkgate-system
TAG=e2e
HELM=helm; [ -x .tools/bin/helm ] && HELM=.tools/bin/helm

need() { command -v "$1" >/dev/null 2>&1 || { echo "e2e: '$1' is required ($2)" >&2; exit 2; }; }
need docker "a container engine to build the images and run the cluster"
need kubectl "to talk to the cluster"
need "$TOOL" "to create the cluster (CLUSTER_TOOL=kind|k3d)"
command -v "$HELM" >/dev/null 2>&1 || bash scripts/install-helm.sh
docker info >/dev/null 2>&1 || { echo "e2e: the docker engine is not running" >&2; exit 2; }

cleanup() {
	[ "${KEEP:-0}" = 1 ] && { echo "e2e: keeping cluster $NAME"; return; }
	case "$TOOL" in
	kind) kind delete cluster --name "$NAME" >/dev/null 2>&1 || true ;;
	k3d) k3d cluster delete "$NAME" >/dev/null 2>&1 || true ;;
	esac
}
trap cleanup EXIT

echo "== images"
docker build --target operator -t "localhost/trunkgate-operator:$TAG" .
docker build --target edge -t "localhost/trunkgate-edge:$TAG" .

echo "== cluster ($TOOL)"
case "$TOOL" in
kind)
	kind create cluster --name "$NAME" --wait 120s
	kind load docker-image --name "$NAME" "localhost/trunkgate-operator:$TAG" "localhost/trunkgate-edge:$TAG"
	;;
k3d)
	k3d cluster create "$NAME" --wait
	k3d image import -c "$NAME" "localhost/trunkgate-operator:$TAG" "localhost/trunkgate-edge:$TAG"
	;;
*) echo "e2e: CLUSTER_TOOL must be kind or k3d" >&2; exit 2 ;;
esac
NODE=$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')
NODE_IP=$(kubectl get node "$NODE" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
kubectl label node "$NODE" trunkgate.io/edge=true --overwrite

echo "== install"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=privileged --overwrite
"$HELM" install trunkgate charts/trunkgate -n "$NS" --wait --timeout 5m \
	--set operator.image.repository=localhost/trunkgate-operator --set operator.image.tag="$TAG" \
	--set edge.image.repository=localhost/trunkgate-edge --set edge.image.tag="$TAG" \
	--set operator.image.pullPolicy=Never --set edge.image.pullPolicy=Never \
	--set edgeEndpoint.fqdn=sip.e2e.example

echo "== configuration"
kubectl apply -f examples/namespaces.yaml
# The hostNetwork edge listens on the node's address: the lab tenant's "carrier" and "platform"
# are that address here instead of loopback.
LAB=$(mktemp -d)
sed -e "s|\"127.0.0.0/8\", \"::1/128\"|\"$NODE_IP/32\"|" -e "s|127.0.0.1:5090|$NODE_IP:5090|" examples/lab.yaml >"$LAB/lab.yaml"
for f in examples/acme.yaml examples/globex.yaml "$LAB/lab.yaml"; do
	kubectl apply --server-side -f "$f"
done
kubectl wait --for=condition=Ready carriertrunks --all -A --timeout=180s
kubectl wait --for=condition=Ready numberownerships --all -A --timeout=180s
kubectl wait --for=condition=Programmed carriertrunks --all -A --timeout=180s
kubectl get carriertrunks,numberownerships -A

echo "== a call through the edge (lab tenant)"
# sipp runs on the edge's node (hostNetwork) as both the lab carrier and the lab platform.
kubectl -n "$NS" run sipp --restart=Never --image=debian:bookworm-slim --env="IP=$NODE_IP" \
	--overrides='{"spec":{"hostNetwork":true,"nodeSelector":{"trunkgate.io/edge":"true"}}}' \
	--command -- bash -c '
		set -e
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester >/dev/null
		sipp -sn uas -i "$IP" -p 5090 -m 1 -bg
		sleep 1
		sipp -sn uac "$IP:5060" -i "$IP" -p 5061 -s 099990001 -m 1 -timeout 30s
		echo CALL-OK'
kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Succeeded pod/sipp --timeout=300s
kubectl -n "$NS" logs sipp | tail -3
kubectl -n "$NS" logs sipp | grep -q CALL-OK
echo "e2e: PASS"
