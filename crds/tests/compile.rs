//! compile(): every rule, table-driven where the rule has cases.
#![allow(clippy::unwrap_used)]

use trunkgate_crds::e164::E164;
use trunkgate_crds::fixtures::secret;
use trunkgate_crds::snapshot::NumberIndex;
use trunkgate_crds::{
    CallerIdPolicy, CarrierTrunk, Compiled, EdgeConfig, NumberOwnership, ObjectKind, Reason,
    Secrets, compile,
};

fn reasons(c: &Compiled, kind: ObjectKind, id: &str) -> Vec<Reason> {
    c.reports
        .iter()
        .find(|r| r.key.kind == kind && r.key.id() == id)
        .unwrap_or_else(|| panic!("no report for {id}"))
        .problems
        .iter()
        .map(|p| p.reason)
        .collect()
}

fn trunk_reasons(c: &Compiled, id: &str) -> Vec<Reason> {
    reasons(c, ObjectKind::CarrierTrunk, id)
}

fn own_reasons(c: &Compiled, id: &str) -> Vec<Reason> {
    reasons(c, ObjectKind::NumberOwnership, id)
}

#[test]
fn single_trunk_rules_table() {
    let base = || CarrierTrunk::test("acme", "t");
    let s = secret("acme", "creds", "alice", "s3cret");
    let cases: Vec<(&str, CarrierTrunk, Secrets, Vec<Reason>)> = vec![
        ("valid minimal", base(), Secrets::new(), vec![]),
        (
            "empty allow-list",
            base().with_cidrs(&[]),
            Secrets::new(),
            vec![Reason::Invalid],
        ),
        (
            "bad CIDR",
            base().with_cidrs(&["203.0.113.300/28"]),
            Secrets::new(),
            vec![Reason::Invalid],
        ),
        (
            "IPv6 CIDR",
            base().with_cidrs(&["2001:db8::/64"]),
            Secrets::new(),
            vec![],
        ),
        (
            "bad destination",
            base().with_destination("http://x"),
            Secrets::new(),
            vec![Reason::Invalid],
        ),
        (
            "bad hostname",
            base().with_hostnames(&["a b"]),
            Secrets::new(),
            vec![Reason::Invalid],
        ),
        (
            "bad country code",
            base().with_number_format("064"),
            Secrets::new(),
            vec![Reason::Invalid],
        ),
        (
            "inbound auth ok",
            base().with_inbound_auth("sip.example", "creds"),
            s.clone(),
            vec![],
        ),
        (
            "inbound auth missing secret",
            base().with_inbound_auth("sip.example", "creds"),
            Secrets::new(),
            vec![Reason::SecretNotFound],
        ),
        (
            "targets ok",
            base().with_targets(&[
                "sip:sbc1.carrier.example:5060;transport=udp",
                "sips:[2001:db8::1]:5061",
                "192.0.2.1",
            ]),
            Secrets::new(),
            vec![],
        ),
        (
            "bad target",
            base().with_targets(&["sip:bad host"]),
            Secrets::new(),
            vec![Reason::Invalid],
        ),
        (
            "bad transport",
            base().with_targets(&["sip:a.example;transport=sctp"]),
            Secrets::new(),
            vec![Reason::Invalid],
        ),
        (
            "outbound auth needs realm",
            base()
                .with_targets(&["sip:a.example"])
                .with_outbound_auth("creds", None),
            s.clone(),
            vec![Reason::SecretInvalid],
        ),
        (
            "outbound auth with realm",
            base()
                .with_targets(&["sip:a.example"])
                .with_outbound_auth("creds", Some("carrier")),
            s.clone(),
            vec![],
        ),
        (
            "routes without outbound",
            base().with_route("+64", 10),
            Secrets::new(),
            vec![Reason::Invalid],
        ),
        (
            "bad route prefix",
            base().with_targets(&["sip:a.example"]).with_route("64", 10),
            Secrets::new(),
            vec![Reason::Invalid],
        ),
    ];
    for (name, trunk, secrets, want) in cases {
        let c = compile(&[trunk], &[], &secrets, None);
        assert_eq!(trunk_reasons(&c, "acme/t"), want, "{name}");
        assert_eq!(
            c.config.trunks.len(),
            usize::from(want.is_empty()),
            "{name}: in snapshot iff valid"
        );
    }
}

#[test]
fn secret_missing_keys_is_secret_invalid() {
    let mut s = secret("acme", "creds", "alice", "");
    let c = compile(
        &[CarrierTrunk::test("acme", "t").with_inbound_auth("r", "creds")],
        &[],
        &s,
        None,
    );
    assert_eq!(trunk_reasons(&c, "acme/t"), vec![Reason::SecretInvalid]);
    s.insert(("other".into(), "creds".into()), Default::default());
    let c = compile(
        &[CarrierTrunk::test("acme", "t").with_inbound_auth("r", "creds")],
        &[],
        &secret("other", "creds", "a", "b"),
        None,
    );
    assert_eq!(
        trunk_reasons(&c, "acme/t"),
        vec![Reason::SecretNotFound],
        "Secrets are per namespace"
    );
}

#[test]
fn passwords_become_ha1_and_never_reach_the_snapshot() {
    let t = CarrierTrunk::test("acme", "t")
        .with_inbound_auth("sip.example", "creds")
        .with_targets(&["sip:a.example"])
        .with_outbound_auth("creds", Some("carrier.example"));
    let c = compile(
        &[t],
        &[],
        &secret("acme", "creds", "alice", "TopSecretPassword"),
        None,
    );
    let json = serde_json::to_string(&c.config).unwrap();
    assert!(!json.contains("TopSecretPassword"));
    let auth = c.config.trunks[0].inbound.auth.as_ref().unwrap();
    assert_eq!(auth.ha1_md5.len(), 32);
    assert_eq!(auth.ha1_sha256.len(), 64);
    let out = c.config.trunks[0]
        .outbound
        .as_ref()
        .unwrap()
        .auth
        .as_ref()
        .unwrap();
    assert_eq!(out.realm, "carrier.example");
}

#[test]
fn number_ownership_rules_table() {
    let trunks = [
        CarrierTrunk::test("acme", "t"),
        CarrierTrunk::test("acme", "bad").with_cidrs(&[]),
    ];
    let cases: Vec<(&str, NumberOwnership, Vec<Reason>)> = vec![
        (
            "byoc ok",
            NumberOwnership::test(
                "acme",
                "n",
                "t",
                &["+6498879333", "+6498879300-+6498879399"],
            ),
            vec![],
        ),
        (
            "prefix ok",
            NumberOwnership::test("acme", "n", "t", &["+64988793*"]),
            vec![],
        ),
        (
            "not e164",
            NumberOwnership::test("acme", "n", "t", &["098879333"]),
            vec![Reason::Invalid],
        ),
        (
            "reversed range",
            NumberOwnership::test("acme", "n", "t", &["+6498879399-+6498879300"]),
            vec![Reason::Invalid],
        ),
        (
            "length mismatch",
            NumberOwnership::test("acme", "n", "t", &["+649887930-+6498879399"]),
            vec![Reason::Invalid],
        ),
        (
            "missing trunk",
            NumberOwnership::test("acme", "n", "nope", &["+6498879333"]),
            vec![Reason::TrunkNotFound],
        ),
        (
            "trunk in other namespace",
            NumberOwnership::test("other", "n", "t", &["+6498879333"]),
            vec![Reason::TrunkNotFound],
        ),
        (
            "trunk not accepted",
            NumberOwnership::test("acme", "n", "bad", &["+6498879333"]),
            vec![Reason::TrunkNotAccepted],
        ),
        (
            "platform unverified is accepted",
            NumberOwnership::test("acme", "n", "t", &["+6498879333"]).platform(false),
            vec![],
        ),
    ];
    for (name, own, want) in cases {
        let id = format!("{}/n", own.metadata.namespace.as_deref().unwrap());
        let c = compile(&trunks, &[own], &Secrets::new(), None);
        assert_eq!(own_reasons(&c, &id), want, "{name}");
        assert_eq!(
            c.config.ownerships.len(),
            usize::from(want.is_empty()),
            "{name}"
        );
    }
}

#[test]
fn conflicts_older_object_wins_and_newer_names_it() {
    let trunks = [
        CarrierTrunk::test("acme", "a"),
        CarrierTrunk::test("acme", "b").with_cidrs(&["198.51.100.7/32"]),
    ];
    // (description, first (older), second (newer), newer conflicted?)
    let cases: Vec<(&str, NumberOwnership, NumberOwnership, bool)> = vec![
        (
            "byoc overlap across trunks",
            NumberOwnership::test("acme", "old", "a", &["+6498879300-+6498879399"]),
            NumberOwnership::test("acme", "new", "b", &["+6498879350"]),
            true,
        ),
        (
            "byoc vs platform",
            NumberOwnership::test("acme", "old", "a", &["+6498879350"]),
            NumberOwnership::test("acme", "new", "b", &["+6498879350"]).platform(true),
            true,
        ),
        (
            "platform twice on one trunk",
            NumberOwnership::test("acme", "old", "a", &["+6498879350"]).platform(true),
            NumberOwnership::test("acme", "new", "a", &["+64988793*"]).platform(true),
            true,
        ),
        (
            "platform verified with two carriers",
            NumberOwnership::test("acme", "old", "a", &["+6498879350"]).platform(true),
            NumberOwnership::test("acme", "new", "b", &["+6498879350"]).platform(true),
            false,
        ),
        (
            "adjacent, no overlap",
            NumberOwnership::test("acme", "old", "a", &["+6498879300-+6498879349"]),
            NumberOwnership::test("acme", "new", "b", &["+6498879350-+6498879399"]),
            false,
        ),
        (
            "same digits, other length",
            NumberOwnership::test("acme", "old", "a", &["+6498879350"]),
            NumberOwnership::test("acme", "new", "b", &["+64988793500"]),
            false,
        ),
    ];
    for (name, old, new, conflicted) in cases {
        // Input order must not matter: age decides.
        let c = compile(
            &trunks,
            &[new.created_at(2_000), old.created_at(1_000)],
            &Secrets::new(),
            None,
        );
        assert_eq!(own_reasons(&c, "acme/old"), vec![], "{name}");
        let newer = c.reports.iter().find(|r| r.key.id() == "acme/new").unwrap();
        if conflicted {
            assert_eq!(
                own_reasons(&c, "acme/new"),
                vec![Reason::NumberConflict],
                "{name}"
            );
            assert!(
                newer.problems[0].message.contains("acme/old"),
                "{name}: names the other object"
            );
            let cond = newer
                .conditions("v")
                .into_iter()
                .find(|c| c.type_ == "Conflicted")
                .unwrap();
            assert!(cond.status && cond.message.contains("acme/old"), "{name}");
        } else {
            assert_eq!(own_reasons(&c, "acme/new"), vec![], "{name}");
        }
    }
}

#[test]
fn shared_carrier_addresses_across_tenants() {
    let t = |ns: &str| CarrierTrunk::test(ns, "carrier").with_cidrs(&["203.0.113.0/28"]);
    // (description, tenant-b trunk, numbers of a, numbers of b, tenant b refused?, how)
    let cases = vec![
        (
            "hostnames tell apart",
            t("b").with_hostnames(&["b.sip.example"]),
            true,
            "hostnames",
            false,
        ),
        ("numbers tell apart", t("b"), false, "numbers", false),
        ("nothing tells apart", t("b"), true, "", true),
    ];
    for (name, tb, hosts, how, refused) in cases {
        let ta = if hosts {
            t("a").with_hostnames(&["a.sip.example"])
        } else {
            t("a")
        };
        let (na, nb) = if refused {
            (
                NumberOwnership::test("a", "n", "carrier", &["+6498879350"]).platform(true),
                NumberOwnership::test("b", "n", "carrier", &["+6498879350"]).platform(true),
            )
        } else {
            (
                NumberOwnership::test("a", "n", "carrier", &["+6498879350"]),
                NumberOwnership::test("b", "n", "carrier", &["+6498879351"]),
            )
        };
        let c = compile(
            &[tb.created_at(2), ta.created_at(1)],
            &[na, nb],
            &Secrets::new(),
            None,
        );
        assert_eq!(trunk_reasons(&c, "a/carrier"), vec![], "{name}");
        if refused {
            assert_eq!(
                trunk_reasons(&c, "b/carrier"),
                vec![Reason::AddressConflict],
                "{name}"
            );
            assert_eq!(
                own_reasons(&c, "b/n"),
                vec![Reason::TrunkNotAccepted],
                "{name}: its numbers follow"
            );
            assert_eq!(c.config.trunks.len(), 1);
        } else {
            let rep = c
                .reports
                .iter()
                .find(|r| r.key.id() == "b/carrier" && r.key.kind == ObjectKind::CarrierTrunk)
                .unwrap();
            assert!(
                rep.notes[0].contains(how) && rep.notes[0].contains("a/carrier"),
                "{name}: {:?}",
                rep.notes
            );
            assert_eq!(c.config.trunks.len(), 2);
        }
    }
    // Same tenant: overlapping addresses are fine.
    let c = compile(
        &[CarrierTrunk::test("a", "x"), CarrierTrunk::test("a", "y")],
        &[],
        &Secrets::new(),
        None,
    );
    assert!(c.problems().next().is_none());
}

#[test]
fn index_merges_ranges_and_answers_lookups() {
    let trunks = [CarrierTrunk::test("acme", "t")];
    let owns = [
        NumberOwnership::test(
            "acme",
            "a",
            "t",
            &[
                "+6498879300-+6498879349",
                "+6498879350-+6498879399",
                "+6498879333",
            ],
        ),
        NumberOwnership::test("acme", "p", "t", &["+14155550100"]).platform(false),
    ];
    let c = compile(&trunks, &owns, &Secrets::new(), None);
    assert!(c.problems().next().is_none());
    let a = c
        .config
        .ownerships
        .iter()
        .find(|o| o.id == "acme/a")
        .unwrap();
    assert_eq!(a.ranges.len(), 1, "adjacent and contained blocks merge");
    assert_eq!(c.number_count(), 101);
    let idx = NumberIndex::of(&c.config);
    let owners = idx.owners(E164::parse("+6498879377").unwrap());
    assert_eq!(owners.len(), 1);
    assert!(owners[0].may_present());
    let p = idx.owners(E164::parse("+14155550100").unwrap());
    assert!(
        !p[0].may_present(),
        "unverified platform number may not be presented"
    );
    assert!(idx.owners(E164::parse("+6498879400").unwrap()).is_empty());
}

#[test]
fn invalid_edit_keeps_last_good_version() {
    let good = CarrierTrunk::test("acme", "t")
        .with_targets(&["sip:a.example"])
        .generation(1);
    let first = compile(
        std::slice::from_ref(&good),
        &[NumberOwnership::test("acme", "n", "t", &["+6498879333"])],
        &Secrets::new(),
        None,
    );
    assert_eq!(first.config.trunks.len(), 1);
    let mut broken = good.clone().generation(2).with_cidrs(&["not-a-cidr"]);
    broken.spec.outbound.as_mut().unwrap().caller_id_policy = CallerIdPolicy::PassThrough;
    let broken_numbers = NumberOwnership::test("acme", "n", "t", &["bogus"]);
    let second = compile(
        &[broken],
        &[broken_numbers],
        &Secrets::new(),
        Some(&first.config),
    );
    assert_eq!(
        second.config, first.config,
        "the edge keeps running what it had"
    );
    let rep = second
        .reports
        .iter()
        .find(|r| r.key.id() == "acme/t")
        .unwrap();
    assert_eq!(rep.kept_generation, Some(Some(1)));
    let ready = rep
        .conditions(&second.config.version)
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        !ready.status && ready.message.contains("keeps running generation 1"),
        "{}",
        ready.message
    );
    // Deleting the object does remove it.
    let third = compile(&[], &[], &Secrets::new(), Some(&second.config));
    assert!(third.config.trunks.is_empty());
}

#[test]
fn version_is_a_content_hash() {
    let mk = |cidr: &str| {
        compile(
            &[CarrierTrunk::test("acme", "t").with_cidrs(&[cidr])],
            &[],
            &Secrets::new(),
            None,
        )
    };
    assert_eq!(
        mk("203.0.113.0/28").config.version,
        mk("203.0.113.0/28").config.version
    );
    assert_ne!(
        mk("203.0.113.0/28").config.version,
        mk("203.0.113.0/29").config.version
    );
    let c = mk("203.0.113.0/28");
    assert_eq!(
        EdgeConfig::decode(&c.config.encode().unwrap()).unwrap(),
        c.config
    );
}

#[test]
fn conditions_read_well() {
    let c = compile(
        &[CarrierTrunk::test("acme", "t")],
        &[NumberOwnership::test("acme", "p", "t", &["+6498879333"]).platform(false)],
        &Secrets::new(),
        None,
    );
    let rep = c.reports.iter().find(|r| r.key.id() == "acme/p").unwrap();
    let conds = rep.conditions(&c.config.version);
    let types: Vec<_> = conds.iter().map(|c| (c.type_, c.status)).collect();
    assert_eq!(
        types,
        vec![
            ("Accepted", true),
            ("ResolvedRefs", true),
            ("Conflicted", false),
            ("Verified", false),
            ("Ready", true)
        ]
    );
    assert!(conds[3].message.contains("acme/t"));
}

#[test]
fn targets_are_probed_only_when_the_trunk_asks() {
    let plain = CarrierTrunk::test("a", "plain").with_targets(&["sip:192.0.2.1"]);
    let mut probed = CarrierTrunk::test("a", "probed").with_targets(&["sip:192.0.2.2"]);
    if let Some(out) = probed.spec.outbound.as_mut() {
        out.health_check = Some(trunkgate_crds::HealthCheck {
            interval_seconds: 10,
            failure_threshold: 2,
        });
    }
    let c = compile(&[plain, probed], &[], &Secrets::new(), None);
    assert!(c.problems().next().is_none());
    let probe = |id: &str| {
        c.config
            .trunks
            .iter()
            .find(|t| t.id == id)
            .and_then(|t| t.outbound.as_ref())
            .map(|o| (o.health_interval_seconds, o.health_failure_threshold))
    };
    assert_eq!(probe("a/plain"), Some((0, 1)), "no healthCheck: not probed");
    assert_eq!(probe("a/probed"), Some((10, 2)));
}

/// A conflict costs only what conflicts: the newer object keeps its other numbers, says how many
/// it lost and to whom, and "older" is the creation time (files: first by namespace and name).
#[test]
fn conflict_costs_only_the_overlap() {
    let trunks = [
        CarrierTrunk::test("acme", "a"),
        CarrierTrunk::test("acme", "b").with_cidrs(&["198.51.100.7/32"]),
    ];
    let old = NumberOwnership::test("acme", "old", "a", &["+6498879350-+6498879359"]);
    let new = NumberOwnership::test(
        "acme",
        "new",
        "b",
        &["+6498879300-+6498879399", "+6498870000"],
    );
    let c = compile(
        &trunks,
        &[new.clone().created_at(2_000), old.clone().created_at(1_000)],
        &Secrets::new(),
        None,
    );
    let rep = c.reports.iter().find(|r| r.key.id() == "acme/new").unwrap();
    assert_eq!(own_reasons(&c, "acme/new"), vec![Reason::NumberConflict]);
    assert_eq!(
        rep.partial_numbers,
        Some(91),
        "101 numbers less the 10 taken"
    );
    assert!(rep.in_snapshot() && !rep.is_ready());
    let msg = &rep.problems[0].message;
    assert!(
        msg.contains("acme/old")
            && msg.contains("which is older")
            && msg.contains("10 of this object's 101"),
        "{msg}"
    );
    let ready = rep
        .conditions(&c.config.version)
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready
            .message
            .contains("other 91 numbers are in edge snapshot"),
        "{}",
        ready.message
    );
    let index = NumberIndex::of(&c.config);
    let b = c.config.trunk("acme/b").unwrap().0;
    let a = c.config.trunk("acme/a").unwrap().0;
    let owner = |n: &str| {
        index
            .owners(E164::parse(n).unwrap())
            .first()
            .map(|o| o.trunk)
    };
    assert_eq!(owner("+6498879300"), Some(b), "the rest still routes");
    assert_eq!(owner("+6498870000"), Some(b));
    assert_eq!(
        owner("+6498879355"),
        Some(a),
        "the overlap stays with the older"
    );

    // Without creation times (files), the first by namespace and name wins, and says why.
    let c = compile(&trunks, &[new, old], &Secrets::new(), None);
    let rep = c.reports.iter().find(|r| r.key.id() == "acme/old").unwrap();
    assert!(
        rep.problems[0]
            .message
            .contains("comes first by namespace and name"),
        "{}",
        rep.problems[0].message
    );
}

/// Objects refused before compiling (schema errors in files) follow the same rule as invalid
/// ones: the last good version keeps running, and their NumberOwnerships say the trunk is not
/// accepted (not that it does not exist).
#[test]
fn refused_objects_keep_their_last_good_version() {
    use trunkgate_crds::{ObjectKey, Problem, Refused, compile_with_refused};
    let trunk = CarrierTrunk::test("acme", "t").with_targets(&["sip:a.example"]);
    let numbers = NumberOwnership::test("acme", "n", "t", &["+6498879333"]);
    let first = compile(
        std::slice::from_ref(&trunk),
        std::slice::from_ref(&numbers),
        &Secrets::new(),
        None,
    );
    let refused = |kind, name: &str| Refused {
        key: ObjectKey {
            kind,
            namespace: "acme".into(),
            name: name.into(),
        },
        problems: vec![Problem {
            field: "spec.inbound.allowedCidrs[0]".into(),
            reason: Reason::Invalid,
            message: "'10.0.0.300/8' is not a CIDR".into(),
        }],
    };
    let second = compile_with_refused(
        &[],
        &[],
        &[
            refused(ObjectKind::CarrierTrunk, "t"),
            refused(ObjectKind::NumberOwnership, "n"),
        ],
        &Secrets::new(),
        Some(&first.config),
    );
    assert_eq!(second.config, first.config, "both keep running");
    assert_eq!(trunk_reasons(&second, "acme/t"), vec![Reason::Invalid]);
    // A new ownership of a refused trunk without a last good version: not accepted.
    let third = compile_with_refused(
        &[],
        &[NumberOwnership::test("acme", "m", "u", &["+6498879334"])],
        &[refused(ObjectKind::CarrierTrunk, "u")],
        &Secrets::new(),
        None,
    );
    assert_eq!(
        own_reasons(&third, "acme/m"),
        vec![Reason::TrunkNotAccepted]
    );
    assert!(third.config.trunks.is_empty());
}

#[test]
fn host_bits_give_a_warning_and_the_network_is_used() {
    let c = compile(
        &[CarrierTrunk::test("acme", "t").with_cidrs(&["203.0.113.5/28"])],
        &[],
        &Secrets::new(),
        None,
    );
    let rep = &c.reports[0];
    assert!(rep.is_ready());
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("allowedCidrs[0]") && w.contains("203.0.113.0/28")),
        "{:?}",
        rep.warnings
    );
    assert_eq!(
        c.config.trunks[0].inbound.allowed_cidrs[0].to_string(),
        "203.0.113.0/28"
    );
    let accepted = rep
        .conditions("v")
        .into_iter()
        .find(|c| c.type_ == "Accepted")
        .unwrap();
    assert!(accepted.status && accepted.message.starts_with("Warning:"));
}

#[test]
fn trunk_tls_reads_its_ca_bundle_and_checks_names() {
    use trunkgate_crds::trunk::{SecretRef, TrunkTls};
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let mut secrets = Secrets::new();
    let mut data = std::collections::BTreeMap::new();
    data.insert("ca.crt".to_string(), pem.as_bytes().to_vec());
    secrets.insert(
        ("acme".into(), "carrier-ca".into()),
        data.into_iter().collect(),
    );
    let mut bad = std::collections::BTreeMap::new();
    bad.insert("tls.crt".to_string(), pem.as_bytes().to_vec());
    secrets.insert(
        ("acme".into(), "wrong-key".into()),
        bad.into_iter().collect(),
    );
    let with = |ca: Option<&str>, server: Option<&str>, clients: &[&str]| {
        let mut t = CarrierTrunk::test("acme", "t");
        t.spec.tls = Some(TrunkTls {
            ca_secret_ref: ca.map(|n| SecretRef { name: n.into() }),
            server_name: server.map(str::to_string),
            client_names: clients.iter().map(|c| c.to_string()).collect(),
        });
        compile(&[t], &[], &secrets, None)
    };
    let c = with(
        Some("carrier-ca"),
        Some("SBC.Carrier.example"),
        &["sbc1.carrier.example", "192.0.2.7"],
    );
    assert!(trunk_reasons(&c, "acme/t").is_empty());
    let tls = c.config.trunks[0].tls.clone().unwrap();
    assert_eq!(tls.ca_pem.as_deref(), Some(pem));
    assert_eq!(
        tls.server_name.as_deref(),
        Some("sbc.carrier.example"),
        "names are lower-cased"
    );
    assert_eq!(tls.client_names, vec!["sbc1.carrier.example", "192.0.2.7"]);
    for (ca, server, clients, want) in [
        (Some("missing"), None, vec![], Reason::SecretNotFound),
        (Some("wrong-key"), None, vec![], Reason::SecretInvalid),
        (None, Some("not a name"), vec![], Reason::Invalid),
        (None, None, vec!["bad_name!"], Reason::Invalid),
    ] {
        let c = with(ca, server, &clients);
        assert_eq!(
            trunk_reasons(&c, "acme/t"),
            vec![want],
            "{ca:?} {server:?} {clients:?}"
        );
    }
}

/// `outbound.registration`: the registrar defaults to the first target, the address of record
/// to the credentials' username at the registrar's host; without credentials an AOR is needed.
#[test]
fn registrations_fill_in_their_defaults_and_name_what_is_missing() {
    let reg = |aor: Option<&str>, expires: u32| trunkgate_crds::Registration {
        registrar: None,
        aor: aor.map(str::to_string),
        expires_seconds: expires,
        called_number: trunkgate_crds::CalledNumberFrom::To,
    };
    let with = |name: &str, r: trunkgate_crds::Registration, auth: bool| {
        let mut t = CarrierTrunk::test("a", name).with_targets(&["sip:reg.carrier.example:5070"]);
        if auth {
            t = t.with_outbound_auth("creds", Some("carrier"));
        }
        if let Some(o) = t.spec.outbound.as_mut() {
            o.registration = Some(r);
        }
        t
    };
    let trunks = [
        with("defaults", reg(None, 600), true),
        with(
            "aor",
            reg(Some("sip:+6491234567@carrier.example"), 3600),
            false,
        ),
        with("no-aor", reg(None, 3600), false),
        with("bad-aor", reg(Some("carrier.example"), 3600), false),
        with("too-short", reg(None, 10), true),
    ];
    let c = compile(&trunks, &[], &secret("a", "creds", "acme", "pw"), None);
    let registration = |id: &str| {
        c.config
            .trunks
            .iter()
            .find(|t| t.id == id)
            .and_then(|t| t.outbound.as_ref()?.registration.clone())
    };
    let d = registration("a/defaults").expect("registered");
    assert_eq!(d.aor, "sip:acme@reg.carrier.example");
    assert_eq!(d.user, "acme");
    assert_eq!(
        (d.registrar.host.as_str(), d.registrar.port),
        ("reg.carrier.example", Some(5070))
    );
    assert_eq!(d.expires, 600);
    assert_eq!(
        registration("a/aor").expect("registered").user,
        "+6491234567"
    );
    for id in ["a/no-aor", "a/bad-aor", "a/too-short"] {
        assert_eq!(trunk_reasons(&c, id), [Reason::Invalid], "{id}");
    }
    let text: Vec<String> = c
        .problems()
        .flat_map(|r| r.problems.iter().map(|p| p.to_string()))
        .collect();
    assert!(
        text.iter()
            .any(|p| p.contains("registration.aor") && p.contains("outbound.auth")),
        "{text:?}"
    );
}

/// A namespace has one selection policy: a newer trunk stating another than an older trunk
/// of its namespace is refused (and keeps its last good version); trunks that state none, and
/// other namespaces, are free.
#[test]
fn a_namespace_selects_its_outbound_trunks_one_way() {
    use trunkgate_crds::Selection;
    let trunk = |ns: &str, name: &str, at: i64, s: Option<Selection>| {
        let mut t = CarrierTrunk::test(ns, name)
            .with_targets(&["sip:192.0.2.50:5060"])
            .created_at(at);
        if let Some(o) = t.spec.outbound.as_mut() {
            o.selection = s;
        }
        t
    };
    let c = compile(
        &[
            trunk("acme", "old", 1, Some(Selection::LeastCost)),
            trunk("acme", "new", 2, Some(Selection::Quality)),
            trunk("acme", "silent", 3, None),
            trunk("acme", "same", 4, Some(Selection::LeastCost)),
            trunk("beta", "other", 5, Some(Selection::Quality)),
        ],
        &[],
        &Secrets::new(),
        None,
    );
    assert!(trunk_reasons(&c, "acme/old").is_empty());
    assert_eq!(trunk_reasons(&c, "acme/new"), [Reason::Invalid]);
    let problem = c
        .problems()
        .find(|r| r.key.id() == "acme/new")
        .and_then(|r| r.problems.first())
        .map(|p| p.message.clone())
        .unwrap_or_default();
    assert!(
        problem.contains("LeastCost") && problem.contains("acme/old"),
        "{problem}"
    );
    for ok in ["acme/silent", "acme/same", "beta/other"] {
        assert!(trunk_reasons(&c, ok).is_empty(), "{ok}");
    }
}
