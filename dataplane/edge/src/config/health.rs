//! One carrier target's health as the snapshot carries it: what OPTIONS probes learnt
//! ([`crate::route::health`]), kept across reloads while the trunk keeps the target.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::quality::{Counts, Figures, Window};

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
    /// The whole fleet's window of it, as the shared store last summed it (every pod's
    /// attempts, this one's included), with its standing then and when (quality clock).
    fleet: Mutex<Counts>,
    fleet_level: AtomicU8,
    fleet_judged_s: AtomicU64,
}

/// A fleet's view older than this is not used (the store stopped answering): the pod's own
/// window judges alone until it comes back.
const FLEET_VIEW_FRESH_S: u64 = 60;

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
            fleet: Mutex::new(Counts::default()),
            fleet_level: AtomicU8::new(0),
            fleet_judged_s: AtomicU64::new(0),
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
    #[cfg(test)]
    pub fn attempted(
        &self,
        now_s: u64,
        outcome: crate::quality::Outcome,
        pdd: Option<Duration>,
        min_samples: u32,
    ) -> Figures {
        self.add(now_s, &Counts::attempt(outcome, pdd), min_samples)
    }

    /// Adds what an attempt or a call did (`delta`) to its window at `now_s`; the figures
    /// after it, with `min_samples` (the fleet's view when fresh, else this pod's).
    pub fn add(&self, now_s: u64, delta: &Counts, min_samples: u32) -> Figures {
        let mut w = self.quality.lock().unwrap_or_else(|e| e.into_inner());
        w.add(now_s, delta);
        let own = w.totals(now_s);
        drop(w);
        let counts = match self.fleet_view(now_s) {
            // The fleet's last sum holds this pod's attempts up to then; this one is newer.
            Some(mut fleet) => {
                fleet.add(delta);
                fleet
            }
            None => own,
        };
        self.keep_asr(counts.figures(min_samples))
    }

    /// What the fleet's store last summed for this target, while fresh.
    fn fleet_view(&self, now_s: u64) -> Option<Counts> {
        let judged = self.fleet_judged_s.load(Ordering::Relaxed);
        if judged == 0 || now_s.saturating_sub(judged) >= FLEET_VIEW_FRESH_S {
            return None;
        }
        Some(*self.fleet.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The fleet's view at `now_s` (every pod's window, summed by the store) and its standing
    /// against the trunk's thresholds: it demotes the target here too, though this pod never
    /// placed a call to it. Returns the figures, with `min_samples`.
    pub fn set_fleet(&self, counts: Counts, level: u8, now_s: u64, min_samples: u32) -> Figures {
        *self.fleet.lock().unwrap_or_else(|e| e.into_inner()) = counts;
        self.fleet_level.store(level, Ordering::Relaxed);
        self.fleet_judged_s.store(now_s.max(1), Ordering::Relaxed);
        self.keep_asr(counts.figures(min_samples))
    }

    /// What its window holds at `now_s`: the fleet's while its view is fresh, else this pod's.
    pub fn totals(&self, now_s: u64) -> Counts {
        self.fleet_view(now_s).unwrap_or_else(|| {
            self.quality
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .totals(now_s)
        })
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

    /// 0: meets its trunk's quality thresholds, 1: misses `warning`, 2: misses `critical`, as
    /// of `now_s`: a standing whose attempts have all left the window since is void (a target
    /// that gets no calls is not kept demoted for ever).
    /// With a shared store, the fleet's standing counts too (the worse of the two) while its
    /// view is fresh.
    pub fn demotion(&self, now_s: u64) -> u8 {
        let judged = self.judged_s.load(Ordering::Relaxed);
        let own = if now_s.saturating_sub(judged) >= QUALITY_SPAN.as_secs() {
            0
        } else {
            self.demoted.load(Ordering::Relaxed)
        };
        let fleet_judged = self.fleet_judged_s.load(Ordering::Relaxed);
        let fleet = if fleet_judged == 0 || now_s.saturating_sub(fleet_judged) >= FLEET_VIEW_FRESH_S
        {
            0
        } else {
            self.fleet_level.load(Ordering::Relaxed)
        };
        own.max(fleet)
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

    /// The fleet's sums (every pod's attempts) demote a target this pod never called; a view
    /// the store stopped refreshing lapses after a minute, leaving the pod's own window.
    #[test]
    fn the_fleets_view_demotes_a_target_this_pod_never_called_while_it_is_fresh() {
        use crate::quality::Outcome;
        let h = TargetHealth::default();
        let mut failing = Counts::default();
        for _ in 0..12 {
            failing.add(&Counts::attempt(Outcome::Failed, None));
        }
        let f = h.set_fleet(failing, 2, 1000, 10);
        assert_eq!(f.failure_rate, Some(1.0));
        assert_eq!(h.demotion(1000), 2);
        assert_eq!(h.asr_percent(), Some(0));
        assert_eq!(h.totals(1010).attempts, 12, "the fleet's window");
        // A call of this pod adds to the fleet's view, not to its own few attempts alone.
        let after = h.add(1020, &Counts::attempt(Outcome::Answered, None), 10);
        assert_eq!(after.attempts, 13);
        assert_eq!(h.demotion(1059), 2);
        assert_eq!(h.demotion(1060), 0, "a stale view lapses");
        assert_eq!(h.totals(1060).attempts, 1, "this pod's own window again");
    }
}
