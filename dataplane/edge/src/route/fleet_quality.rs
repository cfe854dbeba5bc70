//! The fleet's quality windows applied to the snapshot running: each carrier target's window
//! summed over every pod by the shared store (`crate::fleet`) is judged against its trunk's
//! `outbound.quality` thresholds, so a target that failed on other pods is demoted here too,
//! though this pod never placed a call to it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Runtime;
use crate::fleet::quality_key;
use crate::metrics::Metrics;
use crate::quality::Counts;
use crate::route::health::quality_clock;

/// The snapshot as the store task sees it.
pub struct FleetQuality {
    /// The snapshot running now.
    pub runtime: Box<dyn Fn() -> Arc<Runtime> + Send + Sync>,
    pub metrics: Metrics,
}

impl crate::fleet::QualityView for FleetQuality {
    fn targets(&self) -> Vec<String> {
        let rt = (self.runtime)();
        rt.config
            .trunks
            .iter()
            .flat_map(|t| {
                let targets = t.outbound.iter().flat_map(|o| &o.targets);
                targets.map(|tg| quality_key(&t.id, &tg.uri))
            })
            .collect()
    }

    fn apply(&self, sums: HashMap<String, Counts>) {
        let rt = (self.runtime)();
        let now_s = quality_clock();
        for (i, t) in rt.config.trunks.iter().enumerate() {
            let Some(out) = &t.outbound else { continue };
            let q = out.quality.as_ref();
            let min_samples = trunkgate_crds::quality::min_samples(q);
            for (j, target) in out.targets.iter().enumerate() {
                let (Some(counts), Some(h)) = (
                    sums.get(&quality_key(&t.id, &target.uri)),
                    rt.health(i as u32).get(j),
                ) else {
                    continue;
                };
                let figures = counts.figures(min_samples);
                let level = q.map_or(0, |q| crate::quality::demotion(&figures, q));
                let before = h.demotion(now_s);
                h.set_fleet(*counts, level, now_s, min_samples);
                let after = h.demotion(now_s);
                if before != after {
                    self.metrics
                        .target_demoted
                        .with_label_values(&[t.id.as_str(), target.uri.as_str()])
                        .set(i64::from(after));
                    tracing::warn!(
                        trunk = t.id,
                        target = target.uri,
                        before,
                        now = after,
                        attempts = figures.attempts,
                        asr = figures.asr,
                        failures = figures.failure_rate,
                        "carrier target's quality standing changed by the fleet's figures (0 meets outbound.quality, 1 below warning, 2 below critical)"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::QualityView;
    use crate::quality::Outcome;
    use trunkgate_crds::{CarrierTrunk, Secrets, compile};

    /// What the other pods learnt demotes a target here: the store's sums are judged against
    /// the trunk's thresholds, and the admission then tries the other target first.
    #[test]
    fn the_fleets_sums_demote_a_target_this_pod_never_called() {
        let mut t = CarrierTrunk::test("acme", "telco")
            .with_targets(&["sip:192.0.2.50:5060", "sip:192.0.2.51:5060"]);
        if let Some(o) = t.spec.outbound.as_mut() {
            o.quality = Some(trunkgate_crds::trunk::Quality {
                min_samples: 5,
                warning: None,
                critical: Some(trunkgate_crds::trunk::QualityThresholds {
                    max_failure_percent: Some(50),
                    ..Default::default()
                }),
                probe_percent: 0,
            });
        }
        let c = compile(&[t], &[], &Secrets::new(), None);
        let metrics = Metrics::new();
        let rt = Arc::new(Runtime::build(c.config, None, &metrics));
        let view = FleetQuality {
            runtime: Box::new({
                let rt = rt.clone();
                move || rt.clone()
            }),
            metrics: metrics.clone(),
        };
        let keys = view.targets();
        assert_eq!(
            keys,
            [
                "acme/telco sip:192.0.2.50:5060",
                "acme/telco sip:192.0.2.51:5060"
            ]
        );
        let mut failing = Counts::default();
        for _ in 0..6 {
            failing.add(&Counts::attempt(Outcome::Failed, None));
        }
        let mut fine = Counts::default();
        for _ in 0..6 {
            fine.add(&Counts::attempt(Outcome::Answered, None));
        }
        view.apply(HashMap::from([
            (keys[0].clone(), failing),
            (keys[1].clone(), fine),
        ]));
        let now_s = quality_clock();
        assert_eq!(rt.health(0)[0].demotion(now_s), 2);
        assert_eq!(rt.health(0)[1].demotion(now_s), 0);
        assert_eq!(
            metrics
                .target_demoted
                .with_label_values(&["acme/telco", "sip:192.0.2.50:5060"])
                .get(),
            2
        );
    }
}
