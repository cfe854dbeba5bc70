//! A carrier target's call quality as counts that add up: what its attempts did (answered,
//! refused by the callee, failed; post-dial delay, talk time, MOS) and the figures they give
//! (ASR, CCR, failure ratio, PDD, ACD, MOS). The edge keeps them in sliding windows and sums
//! them across pods; the operator reads a trunk's sum into `CarrierTrunk.status.quality`. One
//! definition of each figure for both.

use std::time::Duration;

/// Attempts a window must hold before its ratios count, unless `outbound.quality.minSamples`
/// says otherwise.
pub const DEFAULT_MIN_SAMPLES: u32 = 10;

/// The attempts a trunk's windows need before their ratios count.
pub fn min_samples(q: Option<&crate::trunk::Quality>) -> u32 {
    q.map_or(DEFAULT_MIN_SAMPLES, |q| q.min_samples)
}

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

/// What some attempts did, summed: one bucket of a window, a whole window, or what one
/// attempt or call adds (the edges' shared store sums these across pods, and the operator turns a trunk's into
/// `status.quality`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub attempts: u64,
    pub answered: u64,
    pub callee_refused: u64,
    pub failed: u64,
    pub pdd_ms: u64,
    pub pdd_n: u64,
    pub talk_ms: u64,
    pub talk_n: u64,
    /// MOS of answered calls' media (from the relay), in thousandths.
    pub mos_milli: u64,
    pub mos_n: u64,
}

impl Counts {
    /// The number of fields [`Counts::fields`] lists.
    pub const FIELDS: usize = 10;

    /// One attempt that ended with `outcome`, after `pdd` to its first ringing or answer.
    pub fn attempt(outcome: Outcome, pdd: Option<Duration>) -> Self {
        let one = |o: Outcome| u64::from(outcome == o);
        Counts {
            attempts: 1,
            answered: one(Outcome::Answered),
            callee_refused: one(Outcome::CalleeRefused),
            failed: one(Outcome::Failed),
            pdd_ms: pdd.map_or(0, millis),
            pdd_n: u64::from(pdd.is_some()),
            ..Counts::default()
        }
    }

    /// One answered call that ended after `talk`, its media scored `mos` when relayed.
    pub fn talk(talk: Duration, mos: Option<f64>) -> Self {
        Counts {
            talk_ms: millis(talk),
            talk_n: 1,
            mos_milli: mos.map_or(0, |m| (m.clamp(0.0, 5.0) * 1000.0).round() as u64),
            mos_n: u64::from(mos.is_some()),
            ..Counts::default()
        }
    }

    pub fn add(&mut self, o: &Counts) {
        let [a, b] = [self.fields(), o.fields()];
        let mut sum = [0u64; Self::FIELDS];
        for i in 0..Self::FIELDS {
            sum[i] = a[i].saturating_add(b[i]);
        }
        *self = Counts::from_fields(sum);
    }

    /// Its fields in a fixed order, as the store keeps them.
    pub fn fields(&self) -> [u64; Self::FIELDS] {
        [
            self.attempts,
            self.answered,
            self.callee_refused,
            self.failed,
            self.pdd_ms,
            self.pdd_n,
            self.talk_ms,
            self.talk_n,
            self.mos_milli,
            self.mos_n,
        ]
    }

    pub fn from_fields(f: [u64; Self::FIELDS]) -> Self {
        let [
            attempts,
            answered,
            callee_refused,
            failed,
            pdd_ms,
            pdd_n,
            talk_ms,
            talk_n,
            mos_milli,
            mos_n,
        ] = f;
        Counts {
            attempts,
            answered,
            callee_refused,
            failed,
            pdd_ms,
            pdd_n,
            talk_ms,
            talk_n,
            mos_milli,
            mos_n,
        }
    }

    /// The figures these counts give; a ratio needs `min_samples` attempts, an average one
    /// sample.
    pub fn figures(&self, min_samples: u32) -> Figures {
        let enough = self.attempts >= u64::from(min_samples.max(1));
        let ratio = |n: u64| enough.then(|| n as f64 / self.attempts as f64);
        let mean = |ms: u64, n: u64| (n > 0).then(|| Duration::from_millis(ms / n));
        Figures {
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            asr: ratio(self.answered),
            ccr: ratio(self.answered + self.callee_refused),
            failure_rate: ratio(self.failed),
            pdd: enough.then(|| mean(self.pdd_ms, self.pdd_n)).flatten(),
            acd: mean(self.talk_ms, self.talk_n),
            mos: (self.mos_n > 0).then(|| self.mos_milli as f64 / self.mos_n as f64 / 1000.0),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
    /// Mean MOS of the answered calls' relayed media.
    pub mos: Option<f64>,
}
