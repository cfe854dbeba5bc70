//! Live quality of a carrier target: what its recent call attempts did, over a sliding window
//! of fixed buckets (default 15 minutes in 10-second buckets), and whether that is bad enough
//! to try it last. Sans-I/O: outcomes and the time go in, figures and a verdict come out.
//!
//! The figures follow the industry's usage (and OpenSIPS `qrouting`'s): ASR, answered attempts
//! over attempts; CCR, attempts the network completed (answered, or refused by the callee
//! itself: 486, 600, 603) over attempts; PDD, INVITE to the first ringing or the answer; ACD,
//! talk time per answered call; the failure rate, timeouts and 5xx over attempts. A figure
//! counts only once the window holds `min_samples` attempts.

use std::collections::VecDeque;
use std::time::Duration;

pub use trunkgate_crds::quality::{Counts, Figures, Outcome};

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Bucket {
    /// Seconds since the window's epoch at which this bucket starts.
    start: u64,
    counts: Counts,
}

/// A sliding window of attempt outcomes.
#[derive(Clone, Debug)]
pub struct Window {
    bucket_secs: u64,
    buckets: usize,
    ring: VecDeque<Bucket>,
}

impl Window {
    /// A window of `span`, in buckets of `bucket` (at least one second each).
    pub fn new(span: Duration, bucket: Duration) -> Self {
        let bucket_secs = bucket.as_secs().max(1);
        let buckets = (span.as_secs() / bucket_secs).max(1) as usize;
        Window {
            bucket_secs,
            buckets,
            ring: VecDeque::with_capacity(buckets),
        }
    }

    fn expire(&mut self, now: u64) {
        let span = self.bucket_secs * self.buckets as u64;
        while self
            .ring
            .front()
            .is_some_and(|b| b.start + span <= now || self.ring.len() > self.buckets)
        {
            self.ring.pop_front();
        }
    }

    /// Adds `delta` to the bucket for time `now` (seconds since any fixed epoch), the buckets
    /// that fell out of the window dropped.
    pub fn add(&mut self, now: u64, delta: &Counts) {
        let start = now - now % self.bucket_secs;
        self.expire(now);
        match self.ring.back_mut() {
            Some(b) if b.start == start => b.counts.add(delta),
            _ => self.ring.push_back(Bucket {
                start,
                counts: *delta,
            }),
        }
    }

    /// One attempt ended at `now` with `outcome`, after `pdd` to its first ringing or answer.
    #[cfg(test)]
    pub fn attempt(&mut self, now: u64, outcome: Outcome, pdd: Option<Duration>) {
        self.add(now, &Counts::attempt(outcome, pdd));
    }

    /// An answered call ended at `now` after `talk`.
    #[cfg(test)]
    pub fn talked(&mut self, now: u64, talk: Duration) {
        self.add(now, &Counts::talk(talk, None));
    }

    /// What the window holds at `now`, summed.
    pub fn totals(&mut self, now: u64) -> Counts {
        self.expire(now);
        let mut t = Counts::default();
        for b in &self.ring {
            t.add(&b.counts);
        }
        t
    }

    /// The figures at `now`; a ratio needs `min_samples` attempts, an average one sample.
    #[cfg(test)]
    pub fn figures(&mut self, now: u64, min_samples: u32) -> Figures {
        self.totals(now).figures(min_samples)
    }
}

/// How a target's figures stand against its trunk's thresholds (`outbound.quality`): 0 meets
/// them (or has too few samples to judge), 1 misses `warning`, 2 misses `critical`.
pub fn demotion(f: &Figures, q: &trunkgate_crds::trunk::Quality) -> u8 {
    let misses = |t: &trunkgate_crds::trunk::QualityThresholds| {
        let percent = |r: Option<f64>| r.map(|r| r * 100.0);
        let low_asr = matches!((percent(f.asr), t.min_asr_percent), (Some(a), Some(min)) if a < f64::from(min));
        let failing = matches!((percent(f.failure_rate), t.max_failure_percent), (Some(x), Some(max)) if x > f64::from(max));
        let slow = matches!((f.pdd, t.max_pdd_seconds), (Some(p), Some(max)) if p > Duration::from_secs(u64::from(max)));
        low_asr || failing || slow
    };
    if q.critical.as_ref().is_some_and(misses) {
        2
    } else if q.warning.as_ref().is_some_and(misses) {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_missing_a_threshold_is_demoted_and_too_few_samples_judge_nothing() {
        use trunkgate_crds::trunk::{Quality, QualityThresholds};
        let q = Quality {
            min_samples: 4,
            warning: Some(QualityThresholds {
                min_asr_percent: Some(50),
                max_pdd_seconds: Some(5),
                ..Default::default()
            }),
            critical: Some(QualityThresholds {
                max_failure_percent: Some(40),
                ..Default::default()
            }),
            probe_percent: 5,
        };
        let mut w = window();
        for _ in 0..3 {
            w.attempt(1, Outcome::Failed, None);
        }
        assert_eq!(
            demotion(&w.figures(2, q.min_samples), &q),
            0,
            "3 of 4 samples"
        );
        w.attempt(2, Outcome::Answered, Some(Duration::from_secs(2)));
        assert_eq!(demotion(&w.figures(3, q.min_samples), &q), 2, "75 % failed");
        let mut slow = window();
        for _ in 0..4 {
            slow.attempt(1, Outcome::Answered, Some(Duration::from_secs(8)));
        }
        assert_eq!(demotion(&slow.figures(2, 4), &q), 1, "PDD 8 s over 5");
        let mut good = window();
        for _ in 0..4 {
            good.attempt(1, Outcome::Answered, Some(Duration::from_secs(1)));
        }
        assert_eq!(demotion(&good.figures(2, 4), &q), 0);
    }

    fn window() -> Window {
        Window::new(Duration::from_secs(900), Duration::from_secs(10))
    }

    #[test]
    fn outcomes_by_status() {
        assert_eq!(Outcome::of(Some(200)), Outcome::Answered);
        assert_eq!(Outcome::of(Some(486)), Outcome::CalleeRefused);
        assert_eq!(Outcome::of(Some(603)), Outcome::CalleeRefused);
        assert_eq!(Outcome::of(Some(503)), Outcome::Failed);
        assert_eq!(Outcome::of(None), Outcome::Failed);
        assert_eq!(Outcome::of(Some(404)), Outcome::Refused);
    }

    #[test]
    fn figures_count_only_with_enough_samples() {
        let mut w = window();
        for i in 0..9 {
            w.attempt(
                100 + i,
                Outcome::Answered,
                Some(Duration::from_millis(1500)),
            );
        }
        assert_eq!(w.figures(110, 10).asr, None, "9 of the 10 samples needed");
        w.attempt(111, Outcome::Failed, Some(Duration::from_millis(8500)));
        let f = w.figures(112, 10);
        assert_eq!(f.attempts, 10);
        assert_eq!(f.asr, Some(0.9));
        assert_eq!(f.failure_rate, Some(0.1));
        assert_eq!(f.pdd, Some(Duration::from_millis(2200)));
    }

    #[test]
    fn the_callees_own_refusals_count_for_ccr_not_asr() {
        let mut w = window();
        w.attempt(5, Outcome::Answered, None);
        w.attempt(5, Outcome::CalleeRefused, None);
        w.attempt(6, Outcome::Failed, None);
        w.attempt(6, Outcome::Refused, None);
        let f = w.figures(7, 1);
        assert_eq!((f.asr, f.ccr), (Some(0.25), Some(0.5)));
    }

    #[test]
    fn old_buckets_leave_the_window() {
        let mut w = window();
        w.attempt(0, Outcome::Failed, None);
        w.attempt(500, Outcome::Answered, None);
        assert_eq!(w.figures(899, 1).attempts, 2);
        assert_eq!(
            w.figures(900, 1).attempts,
            1,
            "the first bucket is 15 minutes old"
        );
        w.talked(1000, Duration::from_secs(61));
        w.talked(1001, Duration::from_secs(59));
        assert_eq!(w.figures(1002, 1).acd, Some(Duration::from_secs(60)));
        assert_eq!(w.figures(5000, 1), Figures::default(), "all gone");
    }

    #[test]
    fn counts_add_up_across_pods_and_carry_the_media_score() {
        let mut a = Counts::attempt(Outcome::Answered, Some(Duration::from_millis(1200)));
        a.add(&Counts::talk(Duration::from_secs(90), Some(4.3)));
        let mut b = Counts::attempt(Outcome::Failed, None);
        b.add(&Counts::talk(Duration::from_secs(30), Some(3.9)));
        let mut fleet = a;
        fleet.add(&b);
        assert_eq!(Counts::from_fields(fleet.fields()), fleet);
        let f = fleet.figures(2);
        assert_eq!(
            (f.attempts, f.asr, f.failure_rate),
            (2, Some(0.5), Some(0.5))
        );
        assert_eq!(f.acd, Some(Duration::from_secs(60)));
        assert_eq!(f.pdd, Some(Duration::from_millis(1200)));
        let mos = f.mos.unwrap_or_default();
        assert!((mos - 4.1).abs() < 1e-9, "{mos}");
    }
}
