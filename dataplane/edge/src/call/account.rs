//! What a call tried and what it cost, for its record: each INVITE attempt with its target,
//! outcome and post-dial delay, and the charge by the trunk's rate for the called number
//! (`spec.routes[].rate`, [`trunkgate_crds::rate`]).

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use trunkgate_crds::rate::{Micros, RateConfig, format_micros};

/// One INVITE attempt of leg B, as the call record lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tried {
    /// The trunk (`namespace/name`) the attempt went through.
    pub trunk: String,
    /// The target as its hop names it (host, or host:port).
    pub target: String,
    /// The address the INVITE went to, once the target's name was looked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::SocketAddr>,
    /// Why this trunk and target: the tenant's policy that ordered the trunks
    /// (`outbound.selection`), and the trunk's rate for the number when it has one.
    pub chosen_by: ChosenBy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// The trunk's answer-seizure ratio in percent that ranked it, under `quality`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u32>,
    /// How it ended: a final status, or `timeout` / `connect_failed` without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Post-dial delay: INVITE to the first provisional answer above 100 (or to the final
    /// answer when none came), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdd_ms: Option<u64>,
    /// When the INVITE went (this process's clock; not kept in checkpoints).
    #[serde(skip)]
    pub since: Option<Instant>,
    /// Which of the trunk's targets it went to (its quality window), when one.
    #[serde(skip)]
    pub target_index: Option<u16>,
}

impl Tried {
    /// An attempt that starts `now`.
    pub fn new(
        trunk: &str,
        hop: &crate::route::Hop,
        chosen: (trunkgate_crds::Selection, Option<u32>),
        rate: Option<&RateConfig>,
        now: Instant,
    ) -> Self {
        Tried {
            trunk: trunk.to_string(),
            target: hop.uri_host.clone(),
            address: hop.addr,
            chosen_by: ChosenBy::from(chosen.0),
            rate: rate.map(rate_text),
            score: chosen.1,
            status: None,
            failure: None,
            pdd_ms: None,
            since: Some(now),
            target_index: hop.target,
        }
    }

    /// A provisional answer above 100 came `now`: the post-dial delay, the first time.
    pub fn rang(&mut self, now: Instant) {
        if self.pdd_ms.is_none() {
            self.pdd_ms = self.since.map(|s| millis(now.saturating_duration_since(s)));
        }
    }

    /// Its final answer `code` came `now`.
    pub fn answered(&mut self, code: u16, now: Instant) {
        self.rang(now);
        self.status = Some(code);
        self.failure = None;
    }

    /// It ended without a final answer (`cause`: `timeout`, `connect_failed`).
    pub fn failed(&mut self, cause: &str) {
        self.failure = Some(cause.to_string());
    }
}

/// The policy that put an attempt's trunk and target where they were in the call's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChosenBy {
    /// Routes by prefix length and priority; within a trunk, its targets' priorities and
    /// weights (RFC 2782). Demoted targets and trunks after the others (`outbound.quality`),
    /// as under every policy.
    Priority,
    /// The lowest rate for the called number first.
    LeastCost,
    /// The best recent answer-seizure ratio first, the lower rate breaking ties.
    Quality,
}

impl From<trunkgate_crds::Selection> for ChosenBy {
    fn from(s: trunkgate_crds::Selection) -> Self {
        match s {
            trunkgate_crds::Selection::Priority => ChosenBy::Priority,
            trunkgate_crds::Selection::LeastCost => ChosenBy::LeastCost,
            trunkgate_crds::Selection::Quality => ChosenBy::Quality,
        }
    }
}

/// Adds an attempt to a call's list without the spare capacity a growing `Vec` keeps (a call
/// holds its list until it ends; most calls make one attempt).
pub fn push(tried: &mut Vec<Tried>, t: Tried) {
    tried.reserve_exact(1);
    tried.push(t);
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A rate as a record shows it: `0.0125 USD/min 60/60`.
pub fn rate_text(r: &RateConfig) -> String {
    let mut s = format!(
        "{} {}/min {}/{}",
        format_micros(r.per_minute),
        r.currency,
        r.first,
        r.next
    );
    if r.connection_fee > 0 {
        s.push_str(&format!(" +{}", format_micros(r.connection_fee)));
    }
    s
}

/// What an ended call is billed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub billed_seconds: u64,
    /// With the trunk's rate for the number: the cost and its currency.
    pub cost: Option<(Micros, String)>,
}

impl Charge {
    /// The charge of a call answered at `answered` (None: never) and ended at `ended`, by
    /// `rate` (None: only the seconds, rounded up, are billed).
    pub fn of(answered: Option<SystemTime>, ended: SystemTime, rate: Option<&RateConfig>) -> Self {
        let talked_ms = answered
            .and_then(|a| ended.duration_since(a).ok())
            .map_or(0, millis);
        match rate {
            Some(r) => {
                let billed_seconds = r.billed_seconds(talked_ms);
                Charge {
                    billed_seconds,
                    cost: Some((r.cost(billed_seconds), r.currency.clone())),
                }
            }
            None => Charge {
                billed_seconds: talked_ms.div_ceil(1000),
                cost: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate() -> RateConfig {
        RateConfig {
            per_minute: 12_500,
            currency: "USD".into(),
            first: 60,
            next: 60,
            connection_fee: 0,
        }
    }

    #[test]
    fn a_61_second_call_on_60_60_is_billed_two_minutes() {
        let answered = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let ended = answered + Duration::from_secs(61);
        let c = Charge::of(Some(answered), ended, Some(&rate()));
        assert_eq!(c.billed_seconds, 120);
        assert_eq!(c.cost, Some((25_000, "USD".into())));
        let unrated = Charge::of(Some(answered), ended + Duration::from_millis(300), None);
        assert_eq!(
            unrated,
            Charge {
                billed_seconds: 62,
                cost: None
            }
        );
        let unanswered = Charge::of(None, ended, Some(&rate()));
        assert_eq!(unanswered.billed_seconds, 0);
        assert_eq!(unanswered.cost, Some((0, "USD".into())));
    }

    #[test]
    fn an_attempt_keeps_its_post_dial_delay_from_the_first_ringing() {
        let t0 = Instant::now();
        let hop = |host: &str| crate::route::Hop {
            host: host.into(),
            port: None,
            transport: trunkgate_crds::Transport::Udp,
            addr: None,
            secure: false,
            uri_host: host.into(),
            target: None,
            trunk: None,
        };
        let chosen = (trunkgate_crds::Selection::LeastCost, None);
        let mut t = Tried::new(
            "acme/cheap",
            &hop("sbc1.example"),
            chosen,
            Some(&rate()),
            t0,
        );
        assert_eq!(t.rate.as_deref(), Some("0.0125 USD/min 60/60"));
        assert_eq!(t.chosen_by, ChosenBy::LeastCost);
        t.rang(t0 + Duration::from_millis(2500));
        t.rang(t0 + Duration::from_millis(4000));
        t.answered(503, t0 + Duration::from_millis(8000));
        assert_eq!((t.pdd_ms, t.status), (Some(2500), Some(503)));
        let mut silent = Tried::new("acme/cheap", &hop("sbc2.example"), chosen, None, t0);
        silent.failed("timeout");
        assert_eq!(
            (silent.pdd_ms, silent.failure.as_deref()),
            (None, Some("timeout"))
        );
    }
}
