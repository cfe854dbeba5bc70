#!/usr/bin/env bash
# Builds the images the same way `make e2e` does, then loads them into a container engine.
#
#   make image                                   # localhost/trunkgate-{operator,edge,redis}:VERSION
#   REGISTRY=ghcr.io/acme TAG=0.1.0 make image   # then push them with the same engine
#   CONTAINER_ENGINE=podman make image           # pick the engine (default: docker, podman, nerdctl)
#   CONTAINER_ENGINE=none make image             # only the tarballs (target/images/*.tar)
#
# One recipe: `cargo build --release`, then scripts/image-tar.py writes a docker-archive tarball
# per image from images/images.json (binary, its shared libraries, CA bundle, passwd; no base
# image). trunkgate-redis, the chart's lab store (edge.stateStore.deploy), holds Debian's
# redis-server instead of a release binary (image-tar.py installs the package when missing).
# The engine only loads those tarballs (`docker load`), so the images you push are the
# ones `make e2e` tested. Without an engine the tarballs are left in target/images/ for
# `ctr -n k8s.io images import`, `kind load image-archive` or `k3d image import`.
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY=${REGISTRY:-localhost}
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)}
OUT=${IMAGE_DIR:-target/images}
ENGINE=${CONTAINER_ENGINE:-}

cargo build --release --locked -p trunkgate-operator -p trunkgate-edge --bins
python3 scripts/image-tar.py --registry "$REGISTRY" --tag "$TAG" --out-dir "$OUT"

if [ -z "$ENGINE" ]; then
	for e in docker podman nerdctl; do
		if command -v "$e" >/dev/null 2>&1 && "$e" info >/dev/null 2>&1; then
			ENGINE=$e
			break
		fi
	done
fi
if [ -z "$ENGINE" ] || [ "$ENGINE" = none ]; then
	echo "image: no container engine running (docker, podman or nerdctl); the images are the tarballs"
	echo "       $OUT/trunkgate-operator.tar, $OUT/trunkgate-edge.tar and $OUT/trunkgate-redis.tar ($REGISTRY/trunkgate-*:$TAG):"
	echo "       load them with 'docker load -i FILE', 'ctr -n k8s.io images import FILE',"
	echo "       'kind load image-archive FILE' or 'k3d image import FILE'."
	exit 0
fi
for name in operator edge redis; do
	echo "$ENGINE load -i $OUT/trunkgate-$name.tar"
	"$ENGINE" load -i "$OUT/trunkgate-$name.tar"
done
echo "loaded $REGISTRY/trunkgate-{operator,edge,redis}:$TAG into $ENGINE"
