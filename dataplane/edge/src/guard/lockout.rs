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
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Failures that cost nothing; each one after them doubles the wait before the next try.
const FREE_FAILURES: u32 = 3;
/// The longest wait between tries before the block.
const MAX_WAIT: Duration = Duration::from_secs(32);
/// Failures older than this are forgotten.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Most addresses remembered; past it expired ones are pruned and new ones not tracked (only
/// allowed carriers' addresses get this far: bounded by the config).
const MAX_KEYS: usize = 65_536;

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

/// Told of each failure and of each success that cleared failures (the fleet's store).
pub type Hook = Box<dyn Fn(IpAddr, bool) + Send + Sync>;

pub struct Lockout {
    max_failures: u32,
    block: Duration,
    records: Mutex<HashMap<IpAddr, Record>>,
    /// Set once when the fleet shares a store: `(source, failed)`.
    hook: OnceLock<Hook>,
}

impl Lockout {
    pub fn new(max_failures: u32, block: Duration) -> Self {
        Self {
            max_failures: max_failures.max(1),
            block,
            records: Mutex::new(HashMap::new()),
            hook: OnceLock::new(),
        }
    }

    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    pub fn block(&self) -> Duration {
        self.block
    }

    /// Tells `hook` of every failure and every success that cleared failures, from now on.
    pub fn share_with(&self, hook: Hook) {
        let _ = self.hook.set(hook);
    }

    /// What the fleet counted for `source` (every pod's failures, this one's included): the
    /// count here becomes at least that, and a block starts at the limit, so a guesser who
    /// spreads over the pods meets the one lockout.
    pub fn merge(&self, source: IpAddr, failures: u32, now: Instant) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= MAX_KEYS && !records.contains_key(&source) {
            return;
        }
        let r = records.entry(source).or_insert(Record {
            failures: 0,
            last: now,
            blocked_until: None,
        });
        if failures > r.failures {
            r.failures = failures;
            r.last = now;
        }
        if r.failures >= self.max_failures && r.blocked_until.is_none_or(|t| now >= t) {
            r.blocked_until = Some(now + self.block);
        }
    }

    /// Whether an attempt from `source` may be checked now.
    pub fn admit(&self, source: IpAddr, now: Instant) -> Result<(), Verdict> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = records.get(&source) else {
            return Ok(());
        };
        if r.blocked_until.is_some_and(|t| now < t) {
            return Err(Verdict::Blocked);
        }
        if now.saturating_duration_since(r.last) < wait_after(r.failures) {
            return Err(Verdict::TooSoon);
        }
        Ok(())
    }

    /// Counts a failed attempt from `source`; the failures so far when it began a block.
    pub fn failed(&self, source: IpAddr, now: Instant) -> Option<u32> {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= MAX_KEYS {
            records.retain(|_, r| {
                r.blocked_until.is_some_and(|t| now < t)
                    || now.saturating_duration_since(r.last) < WINDOW
            });
            if records.len() >= MAX_KEYS && !records.contains_key(&source) {
                return None;
            }
        }
        let r = records.entry(source).or_insert(Record {
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
        if let Some(hook) = self.hook.get() {
            hook(source, true);
        }
        if r.failures >= self.max_failures && r.blocked_until.is_none() {
            r.blocked_until = Some(now + self.block);
            return Some(r.failures);
        }
        None
    }

    /// A right answer clears the source's count (but not a block: `admit` came first).
    pub fn succeeded(&self, source: IpAddr) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records
            .get(&source)
            .is_some_and(|r| r.blocked_until.is_none())
        {
            records.remove(&source);
            if let Some(hook) = self.hook.get() {
                hook(source, false);
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

    #[test]
    fn the_fleets_count_blocks_a_guesser_who_spread_over_the_pods() {
        let lock = Lockout::new(5, Duration::from_secs(300));
        let t0 = Instant::now();
        // Two failures here, and the fleet counted five in all (three on other pods).
        lock.failed(src(), t0);
        lock.failed(src(), t0);
        lock.merge(src(), 5, t0);
        assert_eq!(lock.admit(src(), t0), Err(Verdict::Blocked));
        assert_eq!(
            lock.admit([192, 0, 2, 8].into(), t0),
            Ok(()),
            "only that address"
        );
        // A lower count (an older message) changes nothing.
        lock.merge(src(), 1, t0);
        assert_eq!(lock.admit(src(), t0), Err(Verdict::Blocked));
    }

    #[test]
    fn the_fleet_hears_of_failures_and_of_clearing_successes_only() {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let lock = Lockout::new(5, Duration::from_secs(300));
        let s = seen.clone();
        lock.share_with(Box::new(move |ip, failed| {
            s.lock().expect("test lock").push((ip, failed))
        }));
        let t0 = Instant::now();
        lock.succeeded(src());
        lock.failed(src(), t0);
        lock.succeeded(src());
        lock.succeeded(src());
        assert_eq!(
            *seen.lock().expect("test lock"),
            vec![(src(), true), (src(), false)]
        );
    }

    fn src() -> IpAddr {
        [192, 0, 2, 7].into()
    }

    #[test]
    fn failures_slow_down_then_block_and_a_block_refuses_everything_until_it_ends() {
        let lock = Lockout::new(6, Duration::from_secs(300));
        let t0 = Instant::now();
        // Three free failures, one right after the other.
        for i in 0..3 {
            assert_eq!(lock.admit(src(), t0), Ok(()), "try {i}");
            assert_eq!(lock.failed(src(), t0), None);
        }
        // The fourth try must wait 1 s after the third failure.
        assert_eq!(lock.admit(src(), t0), Err(Verdict::TooSoon));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(lock.admit(src(), t1), Ok(()));
        lock.failed(src(), t1);
        // Then 2 s.
        assert_eq!(
            lock.admit(src(), t1 + Duration::from_secs(1)),
            Err(Verdict::TooSoon)
        );
        let t2 = t1 + Duration::from_secs(2);
        lock.failed(src(), t2);
        let t3 = t2 + Duration::from_secs(4);
        assert_eq!(lock.failed(src(), t3), Some(6));
        // Blocked: even a right password (success never reached) is refused until it ends.
        lock.succeeded(src());
        assert_eq!(
            lock.admit(src(), t3 + Duration::from_secs(299)),
            Err(Verdict::Blocked)
        );
        assert_eq!(lock.admit(src(), t3 + Duration::from_secs(300)), Ok(()));
        // After the block the count starts again.
        assert_eq!(lock.failed(src(), t3 + Duration::from_secs(301)), None);
    }

    #[test]
    fn a_success_clears_the_count_and_old_failures_are_forgotten() {
        let lock = Lockout::new(4, Duration::from_secs(60));
        let t0 = Instant::now();
        lock.failed(src(), t0);
        lock.failed(src(), t0);
        lock.succeeded(src());
        for _ in 0..3 {
            assert_eq!(lock.failed(src(), t0), None, "the count started again");
        }
        // Ten minutes later the three failures no longer count.
        let later = t0 + WINDOW;
        assert_eq!(lock.failed(src(), later), None);
        assert_eq!(lock.admit(src(), later), Ok(()));
    }

    #[test]
    fn a_blocked_address_does_not_lock_out_the_trunks_other_addresses() {
        let lock = Lockout::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        let guesser: IpAddr = [192, 0, 2, 8].into();
        assert_eq!(lock.failed(guesser, t0), Some(1));
        assert_eq!(lock.admit(guesser, t0), Err(Verdict::Blocked));
        // The carrier's own SBC in the same range has not failed: its attempts are looked at.
        assert_eq!(lock.admit(src(), t0), Ok(()));
    }
}
