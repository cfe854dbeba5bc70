#!/usr/bin/env bash
# SRTP <-> RTP relay CPU per packet against plain RTP and against rtpengine doing the same
# SDES-SRTP <-> RTP bridging in userspace (issue 14), one generator, one sitting:
#
#   usage: bench/srtp_compare.sh [PPS...]          (default: 50000 100000)
#          SRTP=AEAD_AES_128_GCM bench/srtp_compare.sh 50000
#
# bench/rtp_compare.sh with SRTP=SUITE (default AES_CM_128_HMAC_SHA1_80, what carriers offer
# first): per load, interleaved, the rows
#   trunkgate       the edge, plain RTP on both legs
#   trunkgate-srtp  the edge, trunk media.srtp: Required: SRTP from/to the carrier, RTP to/from the platform
#   rtpengine-srtp  rtpengine (userspace, ../shared/bench's config), the same bridging set up with ng
#   rtpengine       rtpengine, plain RTP on both legs
#   no-relay        the generator talking to itself (the floor for latency)
# each with offered/sent/received packets/s, loss (an SRTP packet that does not open counts as
# lost), the relay process's CPU per packet (/proc/PID/stat; the generator's own sealing and
# opening run in its threads and are not counted) and p50/p99 one-way latency. Calls = PPS/100
# (two 50 pps streams each way per call). Every other knob (SECONDS_RUN, ROWS, CEILING,
# RTPENGINE_THREADS, EDGE_WORKERS, SETTLE) is rtp_compare.sh's.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export SRTP=${SRTP:-AES_CM_128_HMAC_SHA1_80}
export SETTLE=${SETTLE:-no}
exec bash "$HERE/rtp_compare.sh" "$@"
