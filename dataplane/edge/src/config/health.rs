//! One carrier target's health as the snapshot carries it: what OPTIONS probes learnt
//! ([`crate::route::health`]), kept across reloads while the trunk keeps the target.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// One carrier target's health, shared by every worker.
#[derive(Debug)]
pub struct TargetHealth {
    up: AtomicBool,
    failures: AtomicU32,
    /// When the next probe is due, in milliseconds since the process started.
    due_ms: AtomicU64,
    /// A probe is on its way: the next waits for its result.
    probing: AtomicBool,
}

impl Default for TargetHealth {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            due_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
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
