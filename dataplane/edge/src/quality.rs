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

/// How one attempt ended, for the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    /// The callee itself refused (486 Busy Here, 600 Busy Everywhere, 603 Decline).
    CalleeRefused,
    /// No final answer in time, or 5xx: the carrier's own failure.
    Failed,
    /// Any other final answer (4xx, 6xx other than the callee's own refusals).
    Refused,
}

impl Outcome {
    /// The outcome of a final status (None: no final answer, a timeout or connect failure).
    pub fn of(status: Option<u16>) -> Self {
        match status {
            Some(200..=299) => Outcome::Answered,
            Some(486 | 600 | 603) => Outcome::CalleeRefused,
            Some(500..=599) | None => Outcome::Failed,
            Some(_) => Outcome::Refused,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Bucket {
    /// Seconds since the window's epoch at which this bucket starts.
    start: u64,
    attempts: u32,
    answered: u32,
    callee_refused: u32,
    failed: u32,
    pdd_ms: u64,
    pdd_n: u32,
    talk_ms: u64,
    talk_n: u32,
}

/// What a window says now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Figures {
    pub attempts: u32,
    pub asr: Option<f64>,
    pub ccr: Option<f64>,
    pub failure_rate: Option<f64>,
    pub pdd: Option<Duration>,
    pub acd: Option<Duration>,
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

    /// The bucket for time `now` (seconds since any fixed epoch), the ones that fell out of
    /// the window dropped.
    fn at(&mut self, now: u64) -> &mut Bucket {
        let start = now - now % self.bucket_secs;
        self.expire(now);
        if self.ring.back().is_none_or(|b| b.start != start) {
            self.ring.push_back(Bucket {
                start,
                ..Bucket::default()
            });
        }
        self.ring.back_mut().expect("a bucket was just pushed")
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

    /// One attempt ended at `now` with `outcome`, after `pdd` to its first ringing or answer.
    pub fn attempt(&mut self, now: u64, outcome: Outcome, pdd: Option<Duration>) {
        let b = self.at(now);
        b.attempts += 1;
        match outcome {
            Outcome::Answered => b.answered += 1,
            Outcome::CalleeRefused => b.callee_refused += 1,
            Outcome::Failed => b.failed += 1,
            Outcome::Refused => {}
        }
        if let Some(p) = pdd {
            b.pdd_ms += p.as_millis() as u64;
            b.pdd_n += 1;
        }
    }

    /// An answered call ended at `now` after `talk`.
    pub fn talked(&mut self, now: u64, talk: Duration) {
        let b = self.at(now);
        b.talk_ms += talk.as_millis() as u64;
        b.talk_n += 1;
    }

    /// The figures at `now`; a ratio needs `min_samples` attempts, an average one sample.
    pub fn figures(&mut self, now: u64, min_samples: u32) -> Figures {
        self.expire(now);
        let mut t = Bucket::default();
        for b in &self.ring {
            t.attempts += b.attempts;
            t.answered += b.answered;
            t.callee_refused += b.callee_refused;
            t.failed += b.failed;
            t.pdd_ms += b.pdd_ms;
            t.pdd_n += b.pdd_n;
            t.talk_ms += b.talk_ms;
            t.talk_n += b.talk_n;
        }
        let enough = t.attempts >= min_samples.max(1);
        let ratio = |n: u32| enough.then(|| f64::from(n) / f64::from(t.attempts));
        let mean = |ms: u64, n: u32| (n > 0).then(|| Duration::from_millis(ms / u64::from(n)));
        Figures {
            attempts: t.attempts,
            asr: ratio(t.answered),
            ccr: ratio(t.answered + t.callee_refused),
            failure_rate: ratio(t.failed),
            pdd: enough.then(|| mean(t.pdd_ms, t.pdd_n)).flatten(),
            acd: mean(t.talk_ms, t.talk_n),
        }
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
}
