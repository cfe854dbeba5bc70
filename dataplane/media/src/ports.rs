//! One worker's slice of the RTP port range, handed out as pairs: RTP on the even port, RTCP on
//! the odd one above it (RFC 3550 §11). A released pair sits in quarantine before it is handed
//! out again, so late packets of an ended call never reach a new one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Default time a released pair waits before reuse.
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Every pair is in use or in quarantine: the edge answers 503.
    #[error("no free RTP port pair in this worker's slice")]
    Exhausted,
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Exhausted => "ports_exhausted",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The pairs of `[lo, hi]` (each `p` even with `p + 1 <= hi`), free or quarantined.
#[derive(Debug, Clone)]
pub struct PortPool {
    free: VecDeque<u16>,
    /// Released pairs by release time; the quarantine is the same for all, so the queue stays
    /// ordered by the time each one becomes free.
    quarantine: VecDeque<(Instant, u16)>,
    hold: Duration,
    capacity: usize,
}

impl PortPool {
    pub fn new((lo, hi): (u16, u16), quarantine: Duration) -> Self {
        let lo = u32::from(lo.max(2));
        let lo = lo + (lo % 2);
        let free: VecDeque<u16> = (lo..u32::from(hi))
            .step_by(2)
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        Self {
            capacity: free.len(),
            free,
            quarantine: VecDeque::new(),
            hold: quarantine,
        }
    }

    /// Pairs in the slice.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Pairs that could be handed out at `now`.
    pub fn available(&self, now: Instant) -> usize {
        // The queue is ordered by release time: the rested ones are a prefix.
        self.free.len() + self.quarantine.partition_point(|(t, _)| *t <= now)
    }

    /// Takes a pair; returns its even (RTP) port.
    pub fn allocate(&mut self, now: Instant) -> Result<u16> {
        while let Some(&(until, port)) = self.quarantine.front() {
            if until > now {
                break;
            }
            self.quarantine.pop_front();
            self.free.push_back(port);
        }
        self.free.pop_front().ok_or(Error::Exhausted)
    }

    /// Takes the pair of `port` (a restored call's), free or resting; false when it is not in
    /// this pool or already in use.
    pub fn take(&mut self, port: u16) -> bool {
        if let Some(i) = self.free.iter().position(|p| *p == port) {
            self.free.remove(i);
            return true;
        }
        if let Some(i) = self.quarantine.iter().position(|(_, p)| *p == port) {
            self.quarantine.remove(i);
            return true;
        }
        false
    }

    /// Gives back a pair that carried media: usable again after the quarantine.
    pub fn release(&mut self, port: u16, now: Instant) {
        self.quarantine.push_back((now + self.hold, port));
    }

    /// Gives back a pair that never carried media (a failed open): usable at once.
    pub fn restore(&mut self, port: u16) {
        self.free.push_front(port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn pairs_are_even_disjoint_and_inside_the_slice() {
        let now = Instant::now();
        let mut pool = PortPool::new((20001, 20011), DEFAULT_QUARANTINE);
        // 20002/3 … 20010/11: five pairs.
        assert_eq!(pool.capacity(), 5);
        let mut seen = HashSet::new();
        while let Ok(p) = pool.allocate(now) {
            assert_eq!(p % 2, 0);
            assert!((20002..=20010).contains(&p) && p < 20011);
            assert!(seen.insert(p), "{p} handed out twice");
        }
        assert_eq!(seen.len(), 5);
        // An odd top port has no RTP partner below it: 20000-20002 holds one pair.
        assert_eq!(
            PortPool::new((20000, 20002), DEFAULT_QUARANTINE).capacity(),
            1
        );
        assert_eq!(
            PortPool::new((65534, 65535), DEFAULT_QUARANTINE).capacity(),
            1
        );
        assert_eq!(
            PortPool::new((30000, 30000), DEFAULT_QUARANTINE).capacity(),
            0
        );
    }

    #[test]
    fn exhaustion_is_an_error_until_something_is_freed() {
        let t0 = Instant::now();
        let mut pool = PortPool::new((30000, 30003), Duration::from_secs(30));
        let a = pool.allocate(t0).ok();
        let b = pool.allocate(t0).ok();
        assert!(a.is_some() && b.is_some());
        assert_eq!(pool.allocate(t0), Err(Error::Exhausted));
        assert_eq!(Error::Exhausted.metric_label(), "ports_exhausted");
        pool.restore(b.unwrap_or_default());
        assert_eq!(pool.allocate(t0).ok(), b);
    }

    #[test]
    fn quarantine_is_respected_with_an_injected_clock() {
        let t0 = Instant::now();
        let q = Duration::from_secs(30);
        let mut pool = PortPool::new((40000, 40003), q);
        let a = pool.allocate(t0).unwrap_or_default();
        let b = pool.allocate(t0).unwrap_or_default();
        pool.release(a, t0);
        pool.release(b, t0 + Duration::from_secs(10));
        assert_eq!(
            pool.allocate(t0 + Duration::from_secs(29)),
            Err(Error::Exhausted)
        );
        assert_eq!(pool.available(t0 + Duration::from_secs(29)), 0);
        assert_eq!(pool.allocate(t0 + q), Ok(a));
        assert_eq!(pool.allocate(t0 + q), Err(Error::Exhausted));
        assert_eq!(pool.allocate(t0 + Duration::from_secs(40)), Ok(b));
    }
}
