//! One carrier target's health as the snapshot carries it: what OPTIONS probes learnt
//! ([`crate::route::health`]), kept across reloads while the trunk keeps the target.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::quality::{Figures, Outcome, Window};

/// The span of a target's quality window and the width of its buckets.
const QUALITY_SPAN: Duration = Duration::from_secs(15 * 60);
const QUALITY_BUCKET: Duration = Duration::from_secs(10);

/// One carrier target's health, shared by every worker.
#[derive(Debug)]
pub struct TargetHealth {
    up: AtomicBool,
    failures: AtomicU32,
    /// When the next probe is due, in milliseconds since the process started.
    due_ms: AtomicU64,
    /// A probe is on its way: the next waits for its result.
    probing: AtomicBool,
    /// What calls to it did lately ([`crate::quality`]), shared by every worker.
    quality: Mutex<Window>,
    /// Where its figures stand against its trunk's thresholds ([`crate::quality::demotion`]).
    demoted: AtomicU8,
    /// Calls that found it demoted, for the share that still tries it first.
    turns: AtomicU32,
    /// When (seconds on the quality clock) it was last judged.
    judged_s: AtomicU64,
    /// Its answer-seizure ratio in per mille as its window last showed it, `u32::MAX` while
    /// the window holds too few attempts: what the `Quality` selection ranks trunks by.
    asr_permille: AtomicU32,
}

impl Default for TargetHealth {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            due_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            quality: Mutex::new(Window::new(QUALITY_SPAN, QUALITY_BUCKET)),
            demoted: AtomicU8::new(0),
            turns: AtomicU32::new(0),
            judged_s: AtomicU64::new(0),
            asr_permille: AtomicU32::new(u32::MAX),
        }
    }
}

impl TargetHealth {
    /// Up until probes say otherwise (and always, for trunks that are not probed).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records one probe's result; returns `Some(new state)` when the target changed state.
    pub fn record(&self, ok: bool, threshold: u32) -> Option<bool> {
        self.probing.store(false, Ordering::Relaxed);
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            return (!self.up.swap(true, Ordering::Relaxed)).then_some(true);
        }
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures >= threshold.max(1) && self.up.swap(false, Ordering::Relaxed) {
            return Some(false);
        }
        None
    }

    /// An attempt to this target ended at `now_s` (seconds on any fixed clock): its outcome
    /// and post-dial delay; the window's figures after it, with `min_samples`.
    pub fn attempted(
        &self,
        now_s: u64,
        outcome: Outcome,
        pdd: Option<Duration>,
        min_samples: u32,
    ) -> Figures {
        let mut w = self.quality.lock().unwrap_or_else(|e| e.into_inner());
        w.attempt(now_s, outcome, pdd);
        self.keep_asr(w.figures(now_s, min_samples))
    }

    fn keep_asr(&self, f: Figures) -> Figures {
        let permille = f.asr.map_or(u32::MAX, |a| (a * 1000.0).round() as u32);
        self.asr_permille.store(permille, Ordering::Relaxed);
        f
    }

    /// Its answer-seizure ratio in percent as its window last showed it (None: too few
    /// attempts to judge).
    pub fn asr_percent(&self) -> Option<u32> {
        let p = self.asr_permille.load(Ordering::Relaxed);
        (p != u32::MAX).then_some(p / 10)
    }

    /// An answered call to this target ended at `now_s` after `talk`; the figures after it.
    pub fn talked(&self, now_s: u64, talk: Duration, min_samples: u32) -> Figures {
        let mut w = self.quality.lock().unwrap_or_else(|e| e.into_inner());
        w.talked(now_s, talk);
        self.keep_asr(w.figures(now_s, min_samples))
    }

    /// 0: meets its trunk's quality thresholds, 1: misses `warning`, 2: misses `critical`, as
    /// of `now_s`: a standing whose attempts have all left the window since is void (a target
    /// that gets no calls is not kept demoted for ever).
    pub fn demotion(&self, now_s: u64) -> u8 {
        let judged = self.judged_s.load(Ordering::Relaxed);
        if now_s.saturating_sub(judged) >= QUALITY_SPAN.as_secs() {
            return 0;
        }
        self.demoted.load(Ordering::Relaxed)
    }

    /// Records where it stands at `now_s`; the previous standing when it changed.
    pub fn set_demotion(&self, level: u8, now_s: u64) -> Option<u8> {
        self.judged_s.store(now_s, Ordering::Relaxed);
        let before = self.demoted.swap(level, Ordering::Relaxed);
        (before != level).then_some(before)
    }

    /// The rank this call gives it among its trunk's targets (0: its usual place, else its
    /// demotion): one call in `100 / probe_percent` still tries a demoted target in its place,
    /// so it can show it recovered (half-open).
    pub fn rank(&self, probe_percent: u32, now_s: u64) -> u8 {
        let level = self.demotion(now_s);
        if level == 0 || probe_percent == 0 {
            return level;
        }
        let every = (100 / probe_percent.min(100)).max(1);
        if self
            .turns
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(every)
        {
            0
        } else {
            level
        }
    }

    /// Claims the probe due at `now_ms` (and schedules the next one), if one is due.
    pub fn claim(&self, now_ms: u64, interval_ms: u64) -> bool {
        if self.probing.load(Ordering::Relaxed) || self.due_ms.load(Ordering::Relaxed) > now_ms {
            return false;
        }
        self.due_ms.store(now_ms + interval_ms, Ordering::Relaxed);
        self.probing.store(true, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standing_not_judged_again_for_a_whole_window_is_void() {
        let h = TargetHealth::default();
        assert_eq!(h.set_demotion(2, 100), Some(0));
        assert_eq!(h.demotion(100 + 899), 2);
        assert_eq!(h.demotion(100 + 900), 0, "its attempts all left the window");
        assert_eq!(
            h.rank(0, 150),
            2,
            "no probing share: always after the others"
        );
    }
}
