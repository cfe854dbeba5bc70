//! A worker's timers. Most SIP timers have one of a few fixed lengths (T1, T4, 64·T1: RFC 3261
//! §17), and timers of one length expire in the order they were set, so each of those lengths
//! gets a FIFO queue (O(1) to set and to expire). The rest (doubling retransmission intervals,
//! the failover time, probes) go to an ordered map. Timers are never cancelled: one that is no
//! longer wanted finds its transaction gone or done when it fires.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::sip::transaction::{T1, T4, TIMEOUT as TX_TIMEOUT};

/// The lengths that get a FIFO queue of their own.
const FIXED: [Duration; 3] = [T1, T4, TX_TIMEOUT];

pub struct Timers<T> {
    fixed: [VecDeque<(Instant, T)>; 3],
    other: BTreeMap<(Instant, u64), T>,
    seq: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Self {
            fixed: Default::default(),
            other: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<T> Timers<T> {
    /// Sets `t` to fire `after` from `now`.
    pub fn set(&mut self, now: Instant, after: Duration, t: T) {
        let at = now + after;
        match FIXED.iter().position(|d| *d == after) {
            // `now` never goes back, so a queue stays sorted.
            Some(i) => self.fixed[i].push_back((at, t)),
            None => {
                self.seq += 1;
                self.other.insert((at, self.seq), t);
            }
        }
    }

    /// When the next timer fires.
    pub fn next_deadline(&self) -> Option<Instant> {
        let fixed = self
            .fixed
            .iter()
            .filter_map(|q| q.front().map(|(at, _)| *at));
        let other = self.other.first_key_value().map(|((at, _), _)| *at);
        fixed.chain(other).min()
    }

    /// The earliest timer due at `now`, removed.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        let mut best: Option<(Instant, usize)> = None;
        for (i, q) in self.fixed.iter().enumerate() {
            if let Some((at, _)) = q.front()
                && *at <= now
                && best.is_none_or(|(b, _)| *at < b)
            {
                best = Some((*at, i));
            }
        }
        if let Some(entry) = self.other.first_entry()
            && entry.key().0 <= now
            && best.is_none_or(|(b, _)| entry.key().0 < b)
        {
            return Some(entry.remove());
        }
        let (_, i) = best?;
        self.fixed[i].pop_front().map(|(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_deadline_order_across_queues() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set(t0, TX_TIMEOUT, "32s");
        t.set(t0, T1, "t1");
        t.set(t0, Duration::from_secs(1), "1s");
        t.set(t0 + Duration::from_millis(10), T1, "t1-later");
        t.set(t0, T4, "t4");
        t.set(t0, Duration::from_millis(100), "100ms");
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(t.pop_due(t0), None, "nothing due yet");
        let end = t0 + Duration::from_secs(60);
        let order: Vec<_> = std::iter::from_fn(|| t.pop_due(end)).collect();
        assert_eq!(order, ["100ms", "t1", "t1-later", "1s", "t4", "32s"]);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn only_what_is_due_fires() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set(t0, T1, 1);
        t.set(t0, T4, 2);
        assert_eq!(t.pop_due(t0 + T1), Some(1));
        assert_eq!(t.pop_due(t0 + T1), None);
        assert_eq!(t.next_deadline(), Some(t0 + T4));
    }
}
