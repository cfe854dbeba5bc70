//! Per-source request rate limiting, the role Kamailio's `pike` plays, made so that a forged
//! flood cannot turn it into an outage: a carrier-side address that sends more than `rate`
//! datagrams a second (past a burst of twice that) loses only its excess, dropped unread and
//! unanswered, and is served again the moment it slows down. UDP sources can be spoofed, so a
//! block of the address would be a block of the carrier it names. Datagrams that continue
//! something of ours (responses, in-dialog requests: they carry one of our tags or branches)
//! draw from a second budget four times larger, so a flood of new requests from an address
//! does not cost that address its calls in progress.
//!
//! Shared by every worker: the kernel spreads one address's datagrams over the workers' sockets
//! by port, so a per-worker count would let a flood through N times. The table is split into
//! shards by address so workers rarely wait for each other.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Most addresses tracked per shard; past it idle ones are pruned, then new ones pass untracked
/// (only addresses some trunk allows are tracked at all).
const MAX_PER_SHARD: usize = 4096;
/// How much larger the budget of datagrams continuing our transactions and dialogs is.
const ONGOING_FACTOR: f64 = 4.0;
/// A source that sheds again within this time of its last shed is in the same episode (one log
/// line and one count per episode).
const EPISODE: Duration = Duration::from_secs(10);

/// What a datagram is, as far as can be told without parsing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Something new: an INVITE, OPTIONS, a CANCEL, a retransmission of one of them.
    New,
    /// It carries one of our tags or branches: a response, an ACK, an in-dialog request.
    Ongoing,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    new: f64,
    ongoing: f64,
    last: Instant,
    last_shed: Option<Instant>,
    /// This source's rate (new requests a second), and the configuration it was sized from.
    rate: f64,
    sized_by: usize,
}

/// What to do with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Dropped: over the source's budget (`first` for the drop that begins an episode).
    Shed {
        first: bool,
    },
}

pub struct SourceLimiter {
    /// The rate of a source no trunk sizes (`--source-rate`); 0 turns the limiter off.
    rate: f64,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
}

impl SourceLimiter {
    /// `rate` datagrams a second per source (0: no limit), bursts of twice that.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// The edge-wide rate (`--source-rate`), the floor of every source's own.
    pub fn floor(&self) -> u32 {
        self.rate as u32
    }

    fn shard(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, Bucket>> {
        let h = match ip {
            IpAddr::V4(v4) => u32::from(v4) as usize,
            IpAddr::V6(v6) => (u128::from(v6) as usize) ^ ((u128::from(v6) >> 64) as usize),
        };
        &self.shards[(h ^ (h >> 8)) % SHARDS]
    }

    /// Counts one datagram of `class` from `ip` at `now` at the edge-wide rate.
    pub fn check(&self, ip: IpAddr, class: Class, now: Instant) -> Verdict {
        self.check_sized(ip, class, now, 0, || self.floor())
    }

    /// Counts one datagram of `class` from `ip` at `now`. `rate` gives the source's own rate
    /// (what the trunks that allow it contract for, at least the floor); it is asked again
    /// only when `sized_by` (the configuration's identity) changes.
    pub fn check_sized(
        &self,
        ip: IpAddr,
        class: Class,
        now: Instant,
        sized_by: usize,
        rate: impl FnOnce() -> u32,
    ) -> Verdict {
        if self.rate <= 0.0 {
            return Verdict::Pass;
        }
        let mut map = self.shard(ip).lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_PER_SHARD && !map.contains_key(&ip) {
            map.retain(|_, b| {
                b.new + now.saturating_duration_since(b.last).as_secs_f64() * b.rate < 2.0 * b.rate
            });
            if map.len() >= MAX_PER_SHARD {
                return Verdict::Pass;
            }
        }
        let b = match map.entry(ip) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let b = e.into_mut();
                if b.sized_by != sized_by {
                    b.rate = f64::from(rate()).max(self.rate);
                    b.sized_by = sized_by;
                }
                b
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                let r = f64::from(rate()).max(self.rate);
                e.insert(Bucket {
                    new: 2.0 * r,
                    ongoing: 2.0 * r * ONGOING_FACTOR,
                    last: now,
                    last_shed: None,
                    rate: r,
                    sized_by,
                })
            }
        };
        let (rate, burst) = (b.rate, 2.0 * b.rate);
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.new = (b.new + elapsed * rate).min(burst);
        b.ongoing = (b.ongoing + elapsed * rate * ONGOING_FACTOR).min(burst * ONGOING_FACTOR);
        b.last = now;
        let tokens = match class {
            Class::New => &mut b.new,
            Class::Ongoing => &mut b.ongoing,
        };
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Verdict::Pass;
        }
        let first = b
            .last_shed
            .is_none_or(|t| now.saturating_duration_since(t) >= EPISODE);
        b.last_shed = Some(now);
        Verdict::Shed { first }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_over_its_rate_loses_only_its_excess_and_is_served_again_at_once() {
        let lim = SourceLimiter::new(100);
        let t0 = Instant::now();
        let flood: IpAddr = [192, 0, 2, 1].into();
        let calm: IpAddr = [192, 0, 2, 2].into();
        // The burst (twice the rate) passes at once.
        for i in 0..200 {
            assert_eq!(
                lim.check(flood, Class::New, t0),
                Verdict::Pass,
                "datagram {i}"
            );
        }
        assert_eq!(
            lim.check(flood, Class::New, t0),
            Verdict::Shed { first: true }
        );
        assert_eq!(
            lim.check(flood, Class::New, t0),
            Verdict::Shed { first: false }
        );
        assert_eq!(
            lim.check(calm, Class::New, t0),
            Verdict::Pass,
            "another source is not held back"
        );
        // No block: 10 ms later its rate has earned it one more datagram.
        let soon = t0 + Duration::from_millis(10);
        assert_eq!(lim.check(flood, Class::New, soon), Verdict::Pass);
        assert_eq!(
            lim.check(flood, Class::New, soon),
            Verdict::Shed { first: false }
        );
        // A second later, at its rate, it passes as before, and a shed after a quiet spell is
        // a new episode.
        let later = t0 + Duration::from_secs(20);
        for i in 0..100 {
            assert_eq!(lim.check(flood, Class::New, later), Verdict::Pass, "{i}");
        }
    }

    #[test]
    fn calls_in_progress_keep_their_own_budget_through_a_flood_of_new_requests() {
        let lim = SourceLimiter::new(100);
        let t0 = Instant::now();
        let carrier: IpAddr = [192, 0, 2, 9].into();
        for _ in 0..10_000 {
            let _ = lim.check(carrier, Class::New, t0);
        }
        assert_eq!(
            lim.check(carrier, Class::New, t0),
            Verdict::Shed { first: false }
        );
        // Its ACKs, BYEs and answers (ours) still pass: four times the budget of new ones.
        for i in 0..800 {
            assert_eq!(
                lim.check(carrier, Class::Ongoing, t0),
                Verdict::Pass,
                "datagram {i}"
            );
        }
        assert!(matches!(
            lim.check(carrier, Class::Ongoing, t0),
            Verdict::Shed { .. }
        ));
    }

    #[test]
    fn a_source_sized_by_its_trunks_gets_their_rate_and_the_floor_stays_for_the_rest() {
        let lim = SourceLimiter::new(100);
        let t0 = Instant::now();
        let carrier: IpAddr = [192, 0, 2, 20].into();
        let stranger: IpAddr = [192, 0, 2, 21].into();
        // The trunk contracts 1,000 calls a second: its carrier's SBC may send 2,000 new
        // requests a second (bursts of 4,000), not the edge-wide 100.
        for i in 0..4000 {
            let v = lim.check_sized(carrier, Class::New, t0, 1, || 2000);
            assert_eq!(v, Verdict::Pass, "datagram {i}");
        }
        assert!(matches!(
            lim.check_sized(carrier, Class::New, t0, 1, || 2000),
            Verdict::Shed { .. }
        ));
        // A source no trunk sizes keeps the floor; a size below it is raised to it.
        for _ in 0..200 {
            assert_eq!(
                lim.check_sized(stranger, Class::New, t0, 1, || 0),
                Verdict::Pass
            );
        }
        assert!(matches!(
            lim.check_sized(stranger, Class::New, t0, 1, || 0),
            Verdict::Shed { .. }
        ));
        // A new configuration resizes the source.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..200 {
            let _ = lim.check_sized(carrier, Class::New, later, 2, || 100);
        }
        assert!(matches!(
            lim.check_sized(carrier, Class::New, later, 2, || 100),
            Verdict::Shed { .. }
        ));
    }

    #[test]
    fn a_steady_source_at_its_rate_is_never_shed() {
        let lim = SourceLimiter::new(100);
        let ip: IpAddr = [192, 0, 2, 3].into();
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 10);
            assert_eq!(
                lim.check(ip, Class::New, now),
                Verdict::Pass,
                "datagram {i}"
            );
        }
        let off = SourceLimiter::new(0);
        for _ in 0..1000 {
            assert_eq!(
                off.check(ip, Class::New, t0),
                Verdict::Pass,
                "0 means no limit"
            );
        }
    }
}
