//! Digest guessing made slow and then futile: failures are counted per source address (shared
//! by every worker, since one source's calls spread over all of them). After a few failures each
//! further attempt from that address must wait longer (1 s, 2 s, 4 s, ... up to 32 s, refused
//! unchecked before that), and after `max_failures` the address is blocked for `block`: every
//! attempt from it, a right password included, is refused. Only the address that failed pays:
//! a guesser elsewhere in a carrier's allowed range never locks out the carrier's own SBCs (a
//! per-username count would), and a right password from an address that has not failed is
//! always looked at. The role Kamailio's `pike` and fail2ban play in front of a registrar.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures that cost nothing; each one after them doubles the wait before the next try.
const FREE_FAILURES: u32 = 3;
/// The longest wait between tries before the block.
const MAX_WAIT: Duration = Duration::from_secs(32);
/// Failures older than this are forgotten.
const WINDOW: Duration = Duration::from_secs(600);
/// Most keys remembered; past it expired ones are pruned and new ones not tracked (usernames
/// tracked are allowed carriers': bounded by the config).
const MAX_KEYS: usize = 65_536;

/// What is counted: the address the attempts come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Source(IpAddr),
}

impl Key {
    pub fn scope(&self) -> &'static str {
        match self {
            Key::Source(_) => "source",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Why an attempt is refused before its credentials are looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Blocked after too many failures, until this instant.
    Blocked,
    /// Too soon after the last failure: the wait doubles with each one.
    TooSoon,
}

impl Verdict {
    pub fn metric_label(self) -> &'static str {
        match self {
            Verdict::Blocked => "blocked",
            Verdict::TooSoon => "throttled",
        }
    }
}

/// A block that just began, for the log line and the metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBlock {
    pub key: Key,
    pub failures: u32,
}

pub struct Lockout {
    max_failures: u32,
    block: Duration,
    records: Mutex<HashMap<Key, Record>>,
}

impl Lockout {
    pub fn new(max_failures: u32, block: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            block,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an attempt under any of `keys` may be checked now.
    pub fn admit(&self, keys: &[Key], now: Instant) -> Result<(), Verdict> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            let Some(r) = records.get(k) else { continue };
            if r.blocked_until.is_some_and(|t| now < t) {
                return Err(Verdict::Blocked);
            }
            if now.saturating_duration_since(r.last) < wait_after(r.failures) {
                return Err(Verdict::TooSoon);
            }
        }
        Ok(())
    }

    /// Counts a failed attempt under each key; returns the blocks it started.
    pub fn failed(&self, keys: &[Key], now: Instant) -> Vec<NewBlock> {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= MAX_KEYS {
            records.retain(|_, r| {
                r.blocked_until.is_some_and(|t| now < t)
                    || now.saturating_duration_since(r.last) < WINDOW
            });
        }
        let mut started = Vec::new();
        for k in keys {
            if records.len() >= MAX_KEYS && !records.contains_key(k) {
                continue;
            }
            let r = records.entry(k.clone()).or_insert(Record {
                failures: 0,
                last: now,
                blocked_until: None,
            });
            let expired_block = r.blocked_until.is_some_and(|t| now >= t);
            if expired_block || now.saturating_duration_since(r.last) >= WINDOW {
                r.failures = 0;
                r.blocked_until = None;
            }
            r.failures += 1;
            r.last = now;
            if r.failures >= self.max_failures && r.blocked_until.is_none() {
                r.blocked_until = Some(now + self.block);
                started.push(NewBlock {
                    key: k.clone(),
                    failures: r.failures,
                });
            }
        }
        started
    }

    /// A right answer clears the counts of its keys (but not a block: `admit` came first).
    pub fn succeeded(&self, keys: &[Key]) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            if records.get(k).is_some_and(|r| r.blocked_until.is_none()) {
                records.remove(k);
            }
        }
    }
}

/// How long after the last failure the next try is looked at: nothing for the first few,
/// then 1 s, 2 s, 4 s, ... up to [`MAX_WAIT`].
fn wait_after(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - FREE_FAILURES).min(5);
    Duration::from_secs(1u64 << doublings).min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Key {
        Key::Source([192, 0, 2, 7].into())
    }

    #[test]
    fn failures_slow_down_then_block_and_a_block_refuses_everything_until_it_ends() {
        let lock = Lockout::new(6, Duration::from_secs(300));
        let t0 = Instant::now();
        let keys = [src()];
        // Three free failures, one right after the other.
        for i in 0..3 {
            assert_eq!(lock.admit(&keys, t0), Ok(()), "try {i}");
            assert!(lock.failed(&keys, t0).is_empty());
        }
        // The fourth try must wait 1 s after the third failure.
        assert_eq!(lock.admit(&keys, t0), Err(Verdict::TooSoon));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(lock.admit(&keys, t1), Ok(()));
        lock.failed(&keys, t1);
        // Then 2 s.
        assert_eq!(
            lock.admit(&keys, t1 + Duration::from_secs(1)),
            Err(Verdict::TooSoon)
        );
        let t2 = t1 + Duration::from_secs(2);
        lock.failed(&keys, t2);
        let t3 = t2 + Duration::from_secs(4);
        let started = lock.failed(&keys, t3);
        assert_eq!(
            started,
            [NewBlock {
                key: src(),
                failures: 6
            }]
        );
        // Blocked: even a right password (success never reached) is refused until it ends.
        lock.succeeded(&keys);
        assert_eq!(
            lock.admit(&keys, t3 + Duration::from_secs(299)),
            Err(Verdict::Blocked)
        );
        assert_eq!(lock.admit(&keys, t3 + Duration::from_secs(300)), Ok(()));
        // After the block the count starts again.
        assert!(lock.failed(&keys, t3 + Duration::from_secs(301)).is_empty());
    }

    #[test]
    fn a_success_clears_the_count_and_old_failures_are_forgotten() {
        let lock = Lockout::new(4, Duration::from_secs(60));
        let t0 = Instant::now();
        let keys = [src()];
        lock.failed(&keys, t0);
        lock.failed(&keys, t0);
        lock.succeeded(&keys);
        for _ in 0..3 {
            assert!(lock.failed(&keys, t0).is_empty(), "the count started again");
        }
        // Ten minutes later the three failures no longer count.
        let later = t0 + WINDOW;
        assert!(lock.failed(&keys, later).is_empty());
        assert_eq!(lock.admit(&keys, later), Ok(()));
    }

    #[test]
    fn a_blocked_address_does_not_lock_out_the_trunks_other_addresses() {
        let lock = Lockout::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        let guesser = Key::Source([192, 0, 2, 8].into());
        assert_eq!(lock.failed(std::slice::from_ref(&guesser), t0).len(), 1);
        assert_eq!(
            lock.admit(std::slice::from_ref(&guesser), t0),
            Err(Verdict::Blocked)
        );
        // The carrier's own SBC in the same range has not failed: its attempts are looked at.
        assert_eq!(lock.admit(&[src()], t0), Ok(()));
    }
}
