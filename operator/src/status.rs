//! Turns compile() reports into the status subresources, keeping `lastTransitionTime` when a
//! condition's status does not change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use trunkgate_crds::report::Report;
use trunkgate_crds::trunk::{CarrierTrunkStatus, EdgeEndpoint, RegistrationStatus};
use trunkgate_crds::{NumberOwnershipStatus, snapshot::EdgeConfig};

use crate::rollout::Rollout;

/// The latest snapshot could not be published: a problem of the snapshot, not of the objects.
/// Their `Accepted`/`ResolvedRefs` keep saying whether *they* are valid; `Ready` says the
/// snapshot they are in does not run yet, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Unpublished {
    pub error: String,
    /// The version the edges keep running.
    pub running: Option<String>,
}

fn condition(
    type_: &str,
    status: &str,
    reason: String,
    message: String,
    report: &Report,
    existing: &[Condition],
    now: &Time,
) -> Condition {
    let last_transition_time = existing
        .iter()
        .find(|e| e.type_ == type_ && e.status == status)
        .map(|e| e.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason,
        message,
        observed_generation: report.generation,
        last_transition_time,
    }
}

/// Conditions for a report; a condition whose status is unchanged keeps its transition time.
/// `Programmed` (just before `Ready`) says how many edge pods run the snapshot, once known.
pub fn conditions(
    report: &Report,
    snapshot_version: &str,
    rollout: Option<&Rollout>,
    unpublished: Option<&Unpublished>,
    existing: &[Condition],
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = report
        .conditions(snapshot_version)
        .into_iter()
        .map(|mut c| {
            if let (Some(u), "Ready", true) = (unpublished, c.type_, report.in_snapshot()) {
                c.status = false;
                c.reason = "SnapshotNotPublished".into();
                c.message = format!(
                    "Valid and compiled into snapshot {snapshot_version}, which could not be published: {}. The edges keep running snapshot {}.",
                    u.error,
                    u.running.as_deref().unwrap_or("(none yet)")
                );
            }
            let status = if c.status { "True" } else { "False" };
            condition(c.type_, status, c.reason, c.message, report, existing, now)
        })
        .collect();
    let programmed = if !report.in_snapshot() {
        Some((
            "False",
            "NotInSnapshot",
            "This generation is not in the edge snapshot.".to_string(),
        ))
    } else {
        rollout
            .filter(|r| r.version == snapshot_version)
            .map(Rollout::condition)
    };
    if let Some((status, reason, message)) = programmed {
        let at = out.len().saturating_sub(1);
        out.insert(
            at,
            condition(
                "Programmed",
                status,
                reason.to_string(),
                message,
                report,
                existing,
                now,
            ),
        );
    }
    out
}

/// `status.snapshotVersion`: the snapshot that runs this object. When the latest could not be
/// published, the one the object last reported (the edges still run it).
fn running_version(
    report: &Report,
    config: &EdgeConfig,
    unpublished: Option<&Unpublished>,
    last: impl FnOnce() -> Option<String>,
) -> Option<String> {
    match unpublished {
        None => report.in_snapshot().then(|| config.version.clone()),
        Some(_) => last(),
    }
}

/// `status.quality`: the trunk's outbound targets' last 15 minutes as the edge pods running
/// this snapshot report them (none before a call tried it). Ratios need 10 attempts.
fn trunk_quality(
    report: &Report,
    config: &EdgeConfig,
    rollout: Option<&Rollout>,
) -> Option<trunkgate_crds::trunk::TrunkQuality> {
    let (_, trunk) = config.trunk(&report.key.id())?;
    let q = rollout
        .filter(|r| r.version == config.version)?
        .quality
        .get(&trunk.id)?;
    let min_samples = trunkgate_crds::quality::min_samples(
        trunk.outbound.as_ref().and_then(|o| o.quality.as_ref()),
    );
    let counts = trunkgate_crds::quality::Counts::from_fields(q.counts);
    let f = counts.figures(min_samples);
    let percent = |r: Option<f64>| r.map(|r| format!("{}%", (r * 100.0).floor() as u64));
    Some(trunkgate_crds::trunk::TrunkQuality {
        attempts: counts.attempts,
        asr: percent(f.asr),
        ccr: percent(f.ccr),
        acd_seconds: f.acd.map(|d| d.as_secs()),
        pdd_milliseconds: f.pdd.map(|d| d.as_millis() as u64),
        mos: f.mos.map(|m| format!("{m:.1}")),
        demoted_targets: q.demoted,
    })
}

/// `status.targets`: the outbound targets and how many answer the edge pods' probes (the fewest
/// any pod running this snapshot sees), or that they are not probed.
fn target_health(
    report: &Report,
    config: &EdgeConfig,
    rollout: Option<&Rollout>,
) -> Option<trunkgate_crds::trunk::TargetHealth> {
    let (_, trunk) = config.trunk(&report.key.id())?;
    let outbound = trunk.outbound.as_ref()?;
    let total = outbound.targets.len() as u32;
    let (healthy, summary) = if outbound.health_interval_seconds == 0 {
        (total, format!("{total}/{total} (not probed)"))
    } else {
        match rollout
            .filter(|r| r.version == config.version)
            .and_then(|r| r.targets.get(&trunk.id))
        {
            Some((up, _)) => (*up, format!("{up}/{total}")),
            None => (0, format!("?/{total} (no edge pod has reported)")),
        }
    };
    Some(trunkgate_crds::trunk::TargetHealth {
        healthy,
        total,
        summary,
    })
}

/// `status.registration` of a trunk with `outbound.registration`: what the pod holding it
/// reports (nothing yet: not registered).
fn registration_status(
    report: &Report,
    config: &EdgeConfig,
    rollout: Option<&Rollout>,
) -> Option<RegistrationStatus> {
    let (_, trunk) = config.trunk(&report.key.id())?;
    trunk.outbound.as_ref()?.registration.as_ref()?;
    Some(
        rollout
            .filter(|r| r.version == config.version)
            .and_then(|r| r.registrations.get(&trunk.id).cloned())
            .unwrap_or_default(),
    )
}

/// The `Registered` condition: True while a pod holds a binding.
fn registered_condition(
    r: &RegistrationStatus,
    observed: bool,
) -> (&'static str, &'static str, String) {
    if r.registered {
        let mut msg = "Registered with the carrier".to_string();
        if let Some(e) = &r.expires {
            msg.push_str(&format!(" until {e}"));
        }
        if let Some(p) = &r.registrant {
            msg.push_str(&format!(", by edge pod {p}"));
        }
        return ("True", "Registered", format!("{msg}."));
    }
    match (&r.last_error, observed) {
        (Some(e), _) => (
            "False",
            "RegistrationFailed",
            format!("The registrar did not accept the registration: {e}."),
        ),
        (None, true) => (
            "False",
            "NotRegistered",
            "No edge pod holds the registration yet.".to_string(),
        ),
        (None, false) => (
            "Unknown",
            "NoEdgePods",
            "No edge pod has reported yet.".to_string(),
        ),
    }
}

/// Desired CarrierTrunk status.
pub fn trunk_status(
    report: &Report,
    config: &EdgeConfig,
    rollout: Option<&Rollout>,
    unpublished: Option<&Unpublished>,
    edge: &EdgeEndpoint,
    existing: Option<&CarrierTrunkStatus>,
    now: &Time,
) -> CarrierTrunkStatus {
    let old = existing
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let mut conditions = conditions(report, &config.version, rollout, unpublished, old, now);
    let registration = registration_status(report, config, rollout);
    if let Some(r) = &registration {
        let (status, reason, message) = registered_condition(r, rollout.is_some());
        let c = condition(
            "Registered",
            status,
            reason.to_string(),
            message,
            report,
            old,
            now,
        );
        let at = conditions.len().saturating_sub(1);
        conditions.insert(at, c);
    }
    CarrierTrunkStatus {
        conditions,
        registration,
        observed_generation: report.generation,
        edge: Some(edge.clone()),
        targets: target_health(report, config, rollout),
        quality: trunk_quality(report, config, rollout),
        snapshot_version: running_version(report, config, unpublished, || {
            existing.and_then(|s| s.snapshot_version.clone())
        }),
    }
}

/// Desired NumberOwnership status.
pub fn ownership_status(
    report: &Report,
    config: &EdgeConfig,
    rollout: Option<&Rollout>,
    unpublished: Option<&Unpublished>,
    existing: Option<&NumberOwnershipStatus>,
    now: &Time,
) -> NumberOwnershipStatus {
    let old = existing
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    NumberOwnershipStatus {
        conditions: conditions(report, &config.version, rollout, unpublished, old, now),
        observed_generation: report.generation,
        number_count: report.number_count,
        snapshot_version: running_version(report, config, unpublished, || {
            existing.and_then(|s| s.snapshot_version.clone())
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use trunkgate_crds::{CarrierTrunk, Secrets, compile};

    #[test]
    fn target_health_from_the_edge_pods_or_not_probed() {
        let mut t = CarrierTrunk::test("a", "t").with_targets(&["sip:x.example", "sip:y.example"]);
        let c = compile(std::slice::from_ref(&t), &[], &Secrets::new(), None);
        let th = target_health(&c.reports[0], &c.config, None).unwrap();
        assert_eq!(
            (th.healthy, th.total, th.summary.as_str()),
            (2, 2, "2/2 (not probed)")
        );
        t.spec.outbound.as_mut().unwrap().health_check = Some(trunkgate_crds::trunk::HealthCheck {
            interval_seconds: 30,
            failure_threshold: 3,
        });
        let c = compile(std::slice::from_ref(&t), &[], &Secrets::new(), None);
        let th = target_health(&c.reports[0], &c.config, None).unwrap();
        assert_eq!(th.summary, "?/2 (no edge pod has reported)");
        let mut r = Rollout {
            version: c.config.version.clone(),
            ..Rollout::default()
        };
        r.targets.insert("a/t".into(), (1, 2));
        let th = target_health(&c.reports[0], &c.config, Some(&r)).unwrap();
        assert_eq!((th.healthy, th.summary.as_str()), (1, "1/2"));
        let none = compile(&[CarrierTrunk::test("a", "u")], &[], &Secrets::new(), None);
        assert!(
            target_health(&none.reports[0], &none.config, None).is_none(),
            "no outbound"
        );
    }

    #[test]
    fn quality_figures_from_the_edge_pods_counters() {
        let t = CarrierTrunk::test("a", "t").with_targets(&["sip:x.example"]);
        let c = compile(std::slice::from_ref(&t), &[], &Secrets::new(), None);
        assert!(trunk_quality(&c.reports[0], &c.config, None).is_none());
        let mut r = Rollout {
            version: c.config.version.clone(),
            ..Rollout::default()
        };
        r.quality.insert(
            "a/t".into(),
            crate::rollout::QualityCounts {
                counts: [20, 12, 4, 3, 36_000, 18, 1_200_000, 10, 42_500, 10],
                demoted: 0,
            },
        );
        let q = trunk_quality(&c.reports[0], &c.config, Some(&r)).unwrap();
        assert_eq!(q.attempts, 20);
        assert_eq!(q.asr.as_deref(), Some("60%"));
        assert_eq!(q.ccr.as_deref(), Some("80%"));
        assert_eq!(q.acd_seconds, Some(120));
        assert_eq!(q.pdd_milliseconds, Some(2000));
        assert_eq!(q.mos.as_deref(), Some("4.2"));
        r.quality.get_mut("a/t").unwrap().counts[0] = 9;
        let few = trunk_quality(&c.reports[0], &c.config, Some(&r)).unwrap();
        assert_eq!(few.asr, None, "ratios wait for 10 attempts");
    }

    #[test]
    fn a_registration_trunk_reports_registered_from_the_pod_that_holds_it() {
        let mut t = CarrierTrunk::test("a", "t").with_targets(&["sip:reg.example"]);
        t.spec.outbound.as_mut().unwrap().registration = Some(trunkgate_crds::Registration {
            registrar: None,
            aor: Some("sip:acme@reg.example".into()),
            expires_seconds: 3600,
            called_number: trunkgate_crds::CalledNumberFrom::To,
        });
        let c = compile(std::slice::from_ref(&t), &[], &Secrets::new(), None);
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let edge = EdgeEndpoint::default();
        let status = |r: Option<&Rollout>| {
            trunk_status(&c.reports[0], &c.config, r, None, &edge, None, &now)
        };
        let registered = |s: &CarrierTrunkStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Registered")
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        let s = status(None);
        assert_eq!(
            registered(&s),
            Some(("Unknown".into(), "NoEdgePods".into()))
        );
        assert_eq!(s.conditions.last().map(|c| c.type_.as_str()), Some("Ready"));
        let mut r = Rollout {
            version: c.config.version.clone(),
            total: 2,
            programmed: 2,
            ..Rollout::default()
        };
        // One pod failed, then the one that holds it reports a binding: it wins.
        let failed = RegistrationStatus {
            last_error: Some("403 Forbidden".into()),
            ..Default::default()
        };
        r.add_pod_registrations([("a/t".to_string(), failed.clone())].into());
        assert_eq!(
            registered(&status(Some(&r))),
            Some(("False".into(), "RegistrationFailed".into()))
        );
        let ok = RegistrationStatus {
            registered: true,
            expires: Some("2026-12-07T13:00:00Z".into()),
            registrant: Some("edge-1".into()),
            last_error: None,
        };
        r.add_pod_registrations([("a/t".to_string(), ok.clone())].into());
        r.add_pod_registrations([("a/t".to_string(), failed)].into());
        let s = status(Some(&r));
        assert_eq!(registered(&s), Some(("True".into(), "Registered".into())));
        assert_eq!(s.registration, Some(ok));
        let plain = compile(&[CarrierTrunk::test("a", "u")], &[], &Secrets::new(), None);
        let s = trunk_status(
            &plain.reports[0],
            &plain.config,
            None,
            None,
            &edge,
            None,
            &now,
        );
        assert!(s.registration.is_none() && registered(&s).is_none());
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let c = compile(&[CarrierTrunk::test("a", "t")], &[], &Secrets::new(), None);
        let rep = &c.reports[0];
        let t1 = Time(jiff::Timestamp::from_second(1_000).unwrap());
        let t2 = Time(jiff::Timestamp::from_second(2_000).unwrap());
        let first = conditions(rep, "v1", None, None, &[], &t1);
        let again = conditions(rep, "v2", None, None, &first, &t2);
        assert!(again.iter().all(|c| c.last_transition_time == t1));
        let bad = compile(
            &[CarrierTrunk::test("a", "t").with_cidrs(&[])],
            &[],
            &Secrets::new(),
            None,
        );
        let flipped = conditions(&bad.reports[0], "v3", None, None, &first, &t2);
        let ready = flipped.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), &ready.last_transition_time),
            ("False", &t2)
        );
        let accepted = flipped.iter().find(|c| c.type_ == "ResolvedRefs").unwrap();
        assert_eq!(
            accepted.last_transition_time, t1,
            "unchanged condition keeps its time"
        );
    }
}
