//! `trunkgate-media`: the media half of the edge.
//!
//! - [`sdp`]: parse an SDP body, read where each stream wants media, filter codecs, rewrite it
//!   so media flows through the edge. Errors carry the SIP status to answer (400, 488).
//! - [`ports`]: a worker's slice of the RTP range as even/odd pairs with quarantine.
//! - [`relay`]: [`MediaEngine`], one per worker, on that worker's own event loop: sockets,
//!   RTP and RTCP forwarding, per-stream counters, media timeouts.
//! - [`latch`]: which sources may latch (and take over a quiet latch), and which SDP addresses
//!   may be sent to before their peer is heard (no reflection).
//! - [`quality`]: RFC 3550 loss and jitter, and an E-model MOS.
//! - [`srtp`] and [`sdes`]: SRTP on the carrier leg (RFC 3711, RFC 7714), keyed by SDES
//!   (RFC 4568) in the offer/answer exchanges the relay rewrites; the platform leg stays RTP.
//!
//! # How the B2BUA drives it
//!
//! One engine per worker, made inside the worker's tokio runtime on that worker's slice of
//! `--rtp-ports` (the edge's `rtp_slices`):
//!
//! ```no_run
//! # use trunkgate_media::*;
//! # use std::time::Duration;
//! # fn demo(slice: (u16, u16)) -> Result<(), MediaError> {
//! let mut cfg = MediaConfig::new("203.0.113.5".parse().unwrap(), "10.0.0.5".parse().unwrap(), slice);
//! cfg.timeout = Duration::from_secs(60); // --media-timeout
//! let media = MediaEngine::new(cfg)?;
//! # Ok(()) }
//! ```
//!
//! In the worker's `select!` loop (the future borrows the engine only until a branch wins,
//! so the handler may use `&mut self`):
//!
//! ```ignore
//! _ = self.media.wait() => {
//!     for event in self.media.relay() {
//!         match event {
//!             // BYE on both legs with `Reason: SIP;cause=408;text="media timeout"`, then close.
//!             MediaEvent::Timeout { call, session } => {}
//!             // Log once; the packets are counted in `counters().foreign`.
//!             MediaEvent::UnexpectedSource { call, src, .. } => {}
//!         }
//!     }
//! }
//! ```
//!
//! Per call, when the trunk's `media.relay` is true (when false, SDP passes untouched):
//!
//! - **INVITE with SDP** from side S (Public for inbound, Internal for outbound):
//!   `Sdp::parse(body)` (error → answer `e.status()`, 400), `sdp.filter_codecs(&trunk.codecs)`
//!   (→ 488), `media.open(call, sdp.media().len())` (→ 503, count `metric_label()`), then
//!   `media.relay_sdp(s, S, &mut sdp, &policy_of_S)` and send `sdp.to_bytes()` on the other
//!   leg. The [`PeerPolicy`] of the carrier leg is the trunk's `inbound.allowedCidrs`, its
//!   `media.behindNat` and the carrier's signalling address; of the platform leg the platform
//!   networks and the platform's signalling address ([`latch`] has the rules). An INVITE without
//!   SDP: `open(call, 0)`; the offer comes in the 2xx and the answer in the ACK.
//! - **183 / 200 (or ACK, PRACK, UPDATE) with SDP** from the other side T: `Sdp::parse`, then
//!   `media.relay_sdp(s, T, &mut sdp, &policy_of_T)` and pass the rewritten body on. A response
//!   whose SDP fails cannot be answered 400: end that leg (CANCEL/BYE) and answer the caller
//!   with the error's status.
//! - **re-INVITE / UPDATE**: the same `relay_sdp` for the offer (from whichever side sent it)
//!   and again for the answer. A new address or port re-latches that side; a hold
//!   (`sendonly`/`inactive`/`c=0.0.0.0`) stops the relay sending to the held side and, for
//!   `inactive`/`c=0.0.0.0`, pauses the media timeout; the hold attributes pass through.
//! - **BYE, CANCEL, failure, timeout**: `media.close(s)` returns the final [`StreamStats`] per
//!   stream and direction (packets, bytes, loss, jitter, MOS) for the call record and the
//!   per-trunk histograms; the ports rest in quarantine before reuse.
//!
//! [`raise_fd_limit`] at start-up: each stream holds four sockets.

// The workspace denies `unsafe_code`; the one exception is registering the relay's epoll fd
// with tokio (`relay::Poller::new`), which tokio only offers as an unsafe call.

pub mod fastpath;
pub mod latch;
pub mod ports;
pub mod quality;
pub mod relay;
pub mod sdes;
pub mod sdp;
pub mod srtp;

pub use latch::PeerPolicy;
pub use relay::{
    Counters, DEFAULT_TIMEOUT, MediaConfig, MediaEngine, MediaError, MediaEvent, SessionId, Side,
    SrtpState, StreamStats,
};
pub use sdes::{Exchange, Policy as SrtpPolicy};
pub use sdp::{Direction, Remote, Sdp};
pub use srtp::Suite;

/// Raises the soft limit on open files to the hard limit (each relayed stream holds four
/// sockets) and returns the new soft limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}
