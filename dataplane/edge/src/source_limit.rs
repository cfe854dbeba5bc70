//! Per-source request rate limiting with a temporary block, the role Kamailio's `pike` plays:
//! a carrier-side address that sends more than `rate` datagrams a second (past a burst of twice
//! that) is blocked for a while and everything it sends is dropped unread and unanswered. One
//! flooding address (allowed, or spoofing an allowed one) then costs the edge a table look-up
//! per datagram, and calls from every other address go on.
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

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// What to do with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Dropped: the source is blocked (`newly` for the datagram that started the block).
    Drop {
        newly: bool,
    },
}

pub struct SourceLimiter {
    rate: f64,
    burst: f64,
    block: Duration,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
}

impl SourceLimiter {
    /// `rate` datagrams a second per source (0: no limit), bursts of twice that, `block` long.
    pub fn new(rate: u32, block: Duration) -> Self {
        Self {
            rate: f64::from(rate),
            burst: 2.0 * f64::from(rate),
            block,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, Bucket>> {
        let h = match ip {
            IpAddr::V4(v4) => u32::from(v4) as usize,
            IpAddr::V6(v6) => (u128::from(v6) as usize) ^ ((u128::from(v6) >> 64) as usize),
        };
        &self.shards[(h ^ (h >> 8)) % SHARDS]
    }

    /// Counts one datagram from `ip` at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        if self.rate <= 0.0 {
            return Verdict::Pass;
        }
        let mut map = self.shard(ip).lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_PER_SHARD && !map.contains_key(&ip) {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| {
                b.blocked_until.is_some_and(|t| now < t)
                    || b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
            if map.len() >= MAX_PER_SHARD {
                return Verdict::Pass;
            }
        }
        let b = map.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            blocked_until: None,
        });
        if let Some(until) = b.blocked_until {
            if now < until {
                return Verdict::Drop { newly: false };
            }
            b.blocked_until = None;
            b.tokens = self.burst;
            b.last = now;
        }
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Verdict::Pass;
        }
        b.blocked_until = Some(now + self.block);
        Verdict::Drop { newly: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_over_its_rate_is_blocked_for_a_while_and_others_are_not() {
        let lim = SourceLimiter::new(100, Duration::from_secs(30));
        let t0 = Instant::now();
        let flood: IpAddr = [192, 0, 2, 1].into();
        let calm: IpAddr = [192, 0, 2, 2].into();
        // The burst (twice the rate) passes at once.
        for i in 0..200 {
            assert_eq!(lim.check(flood, t0), Verdict::Pass, "datagram {i}");
        }
        assert_eq!(lim.check(flood, t0), Verdict::Drop { newly: true });
        assert_eq!(lim.check(flood, t0), Verdict::Drop { newly: false });
        assert_eq!(
            lim.check(calm, t0),
            Verdict::Pass,
            "another source is not held back"
        );
        // Still blocked after 29 s, even though tokens would have refilled.
        let later = t0 + Duration::from_secs(29);
        assert_eq!(lim.check(flood, later), Verdict::Drop { newly: false });
        assert_eq!(
            lim.check(flood, t0 + Duration::from_secs(30)),
            Verdict::Pass
        );
    }

    #[test]
    fn a_steady_source_at_its_rate_is_never_blocked() {
        let lim = SourceLimiter::new(100, Duration::from_secs(30));
        let ip: IpAddr = [192, 0, 2, 3].into();
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 10);
            assert_eq!(lim.check(ip, now), Verdict::Pass, "datagram {i}");
        }
        let off = SourceLimiter::new(0, Duration::from_secs(30));
        for _ in 0..1000 {
            assert_eq!(off.check(ip, t0), Verdict::Pass, "0 means no limit");
        }
    }
}
