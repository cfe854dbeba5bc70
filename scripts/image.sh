#!/usr/bin/env bash
# Builds the two images from the Dockerfile with whatever container engine is here.
#
#   make image                                   # localhost/trunkgate-{operator,edge}:VERSION
#   REGISTRY=ghcr.io/acme TAG=0.1.0 make image   # then push them with the same engine
#   CONTAINER_ENGINE=podman make image           # pick the engine (default: docker, podman, nerdctl)
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY=${REGISTRY:-localhost}
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)}
ENGINE=${CONTAINER_ENGINE:-}
if [ -z "$ENGINE" ]; then
	for e in docker podman nerdctl; do
		if command -v "$e" >/dev/null 2>&1 && "$e" info >/dev/null 2>&1; then
			ENGINE=$e
			break
		fi
	done
fi
if [ -z "$ENGINE" ]; then
	echo "image: no working container engine (docker, podman or nerdctl with its daemon running);" >&2
	echo "       install one, or run the binaries directly (make build; target/release/)." >&2
	exit 2
fi
for target in operator edge; do
	echo "$ENGINE build --target $target -t $REGISTRY/trunkgate-$target:$TAG ."
	"$ENGINE" build --target "$target" -t "$REGISTRY/trunkgate-$target:$TAG" .
done
echo "built $REGISTRY/trunkgate-operator:$TAG and $REGISTRY/trunkgate-edge:$TAG"
