//! One carrier target's health as the snapshot carries it: what OPTIONS probes learnt
//! ([`crate::route::health`]), kept across reloads while the trunk keeps the target.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
}

impl Default for TargetHealth {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            due_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            quality: Mutex::new(Window::new(QUALITY_SPAN, QUALITY_BUCKET)),
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
        w.figures(now_s, min_samples)
    }

    /// An answered call to this target ended at `now_s` after `talk`; the figures after it.
    pub fn talked(&self, now_s: u64, talk: Duration, min_samples: u32) -> Figures {
        let mut w = self.quality.lock().unwrap_or_else(|e| e.into_inner());
        w.talked(now_s, talk);
        w.figures(now_s, min_samples)
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
