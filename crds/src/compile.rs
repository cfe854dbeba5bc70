//! `compile()`: every CarrierTrunk, NumberOwnership and referenced Secret in, one `EdgeConfig`
//! out, with a report per object. Pure: no I/O, no clock, same input → same snapshot version.

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;
use kube::ResourceExt;

use crate::digest::DigestCredentials;
use crate::e164::{DialPlan, NumberRange, parse_number_spec};
use crate::report::{ObjectKey, ObjectKind, Reason, Refused, Report};
use crate::snapshot::{
    EdgeConfig, InboundConfig, NumberIndex, OutboundConfig, Owner, OwnershipConfig, RouteConfig,
    SipTarget, TrunkConfig,
};
use crate::{CarrierTrunk, NumberKind, NumberOwnership, SecretRef, Transport};

/// Secret data by (namespace, name), key → bytes.
pub type Secrets = BTreeMap<(String, String), BTreeMap<String, Vec<u8>>>;

/// The result of one compile.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The snapshot built from every valid object (and the last good version of objects that
    /// became invalid).
    pub config: EdgeConfig,
    /// One report per input object, sorted by kind, namespace and name.
    pub reports: Vec<Report>,
}

impl Compiled {
    /// Reports that carry at least one problem.
    pub fn problems(&self) -> impl Iterator<Item = &Report> {
        self.reports.iter().filter(|r| !r.is_ready())
    }

    /// How many numbers the snapshot's ownerships cover.
    pub fn number_count(&self) -> u64 {
        self.config
            .ownerships
            .iter()
            .flat_map(|o| o.ranges.iter())
            .map(NumberRange::count)
            .sum()
    }
}

fn namespace_of<K: ResourceExt>(o: &K) -> String {
    o.namespace().unwrap_or_else(|| "default".to_string())
}

/// Older objects first; objects without a creation time (files) after, by namespace and name.
fn age_key<K: ResourceExt>(o: &K) -> AgeKey {
    let ts = o
        .meta()
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    (ts.is_none(), ts, namespace_of(o), o.name_any())
}

/// Compiles the whole configuration. `previous` is the last published snapshot: an object that
/// is invalid now keeps the version it had there, so a bad edit never changes what the edge runs.
pub fn compile(
    trunks: &[CarrierTrunk],
    ownerships: &[NumberOwnership],
    secrets: &Secrets,
    previous: Option<&EdgeConfig>,
) -> Compiled {
    compile_with_refused(trunks, ownerships, &[], secrets, previous)
}

/// Sort key: undated (files) after dated, then creation time, namespace, name.
type AgeKey = (bool, Option<i64>, String, String);

/// One input object in age order: read, or refused before compile() (schema, in files).
enum Entry<'a, K> {
    Read(&'a K),
    Refused(&'a Refused),
}

fn ordered<'a, K: ResourceExt, B: std::borrow::Borrow<K>>(
    objects: &'a [B],
    refused: &'a [Refused],
    kind: ObjectKind,
) -> Vec<Entry<'a, K>> {
    let mut out: Vec<(AgeKey, Entry<'a, K>)> = objects
        .iter()
        .map(|o| {
            let o = o.borrow();
            (age_key(o), Entry::Read(o))
        })
        .collect();
    for r in refused.iter().filter(|r| r.key.kind == kind) {
        let key = (true, None, r.key.namespace.clone(), r.key.name.clone());
        if !out.iter().any(|(k, _)| k.2 == key.2 && k.3 == key.3) {
            out.push((key, Entry::Refused(r)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, e)| e).collect()
}

/// [`compile`], with objects that were refused before compiling (files whose documents fail the
/// schema): each is reported and keeps its last good version, exactly like an object compile()
/// finds invalid itself. One rule for standalone, `check` and the operator.
pub fn compile_with_refused(
    trunks: &[CarrierTrunk],
    ownerships: &[NumberOwnership],
    refused: &[Refused],
    secrets: &Secrets,
    previous: Option<&EdgeConfig>,
) -> Compiled {
    compile_any(trunks, ownerships, refused, secrets, previous)
}

/// `compile()` over shared objects, as a reflector's store holds them: nothing is copied.
pub fn compile_shared(
    trunks: &[std::sync::Arc<CarrierTrunk>],
    ownerships: &[std::sync::Arc<NumberOwnership>],
    secrets: &Secrets,
    previous: Option<&EdgeConfig>,
) -> Compiled {
    compile_any(trunks, ownerships, &[], secrets, previous)
}

fn compile_any<T, O>(
    trunks: &[T],
    ownerships: &[O],
    refused: &[Refused],
    secrets: &Secrets,
    previous: Option<&EdgeConfig>,
) -> Compiled
where
    T: std::borrow::Borrow<CarrierTrunk>,
    O: std::borrow::Borrow<NumberOwnership>,
{
    let trunk_order = ordered(trunks, refused, ObjectKind::CarrierTrunk);
    let own_order = ordered(ownerships, refused, ObjectKind::NumberOwnership);

    // 1. Each trunk on its own; on failure fall back to its last good version.
    let mut trunk_reports: Vec<Report> = Vec::with_capacity(trunk_order.len());
    let mut valid: Vec<TrunkConfig> = Vec::with_capacity(trunk_order.len());
    let mut valid_report: Vec<usize> = Vec::with_capacity(trunk_order.len());
    // Per namespace: the selection policy its oldest accepted trunk states, and that trunk.
    let mut selections: HashMap<String, (crate::trunk::Selection, String)> = HashMap::new();
    for entry in &trunk_order {
        let (mut report, built) = match entry {
            Entry::Read(t) => {
                let key = ObjectKey {
                    kind: ObjectKind::CarrierTrunk,
                    namespace: namespace_of(*t),
                    name: t.name_any(),
                };
                let mut report = Report::new(key.clone(), t.metadata.generation);
                let built = build_trunk(t, &key, secrets, &mut report);
                (report, built)
            }
            Entry::Refused(r) => {
                let mut report = Report::new(r.key.clone(), None);
                report.problems = r.problems.clone();
                (report, None)
            }
        };
        if let Some(cfg) = &built {
            agree_on_selection(cfg, &selections, &mut report);
        }
        match built {
            Some(cfg) if report.problems.is_empty() => {
                if let Some(s) = cfg.outbound.as_ref().and_then(|o| o.selection) {
                    selections
                        .entry(crate::snapshot::namespace_of_id(&cfg.id).to_string())
                        .or_insert((s, cfg.id.clone()));
                }
                valid.push(cfg);
                valid_report.push(trunk_reports.len());
            }
            _ => {
                if report.problems.iter().all(|p| p.reason.keeps_last_good())
                    && let Some((_, old)) = previous.and_then(|p| p.trunk(&report.key.id()))
                {
                    report.kept_generation = Some(old.generation);
                    valid.push(old.clone());
                    valid_report.push(trunk_reports.len());
                }
            }
        }
        trunk_reports.push(report);
    }
    let trunk_index: HashMap<String, usize> = valid
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .collect();
    let trunk_known = |id: &str| trunk_reports.iter().any(|r| r.key.id() == id);

    // 2. Each NumberOwnership on its own, against the valid trunks.
    struct Candidate {
        report: usize,
        trunk: usize,
        kind: NumberKind,
        verified: bool,
        ranges: Vec<NumberRange>,
        dated: bool,
    }
    let mut own_reports: Vec<Report> = Vec::with_capacity(own_order.len());
    let mut candidates: Vec<Candidate> = Vec::with_capacity(own_order.len());
    for entry in &own_order {
        let o = match entry {
            Entry::Read(o) => *o,
            Entry::Refused(r) => {
                // Refused before compiling: its last good version, on the trunk it had then.
                let mut report = Report::new(r.key.clone(), None);
                report.problems = r.problems.clone();
                let id = report.key.id();
                let old = previous.and_then(|p| {
                    let o = p.ownerships.iter().find(|x| x.id == id)?;
                    let trunk = p.trunks.get(o.trunk as usize)?;
                    Some((o, trunk_index.get(&trunk.id).copied()?, trunk.id.clone()))
                });
                if let Some((old, trunk, trunk_id)) = old {
                    report.kept_generation = Some(None);
                    report.trunk = Some(trunk_id);
                    candidates.push(Candidate {
                        report: own_reports.len(),
                        trunk,
                        kind: old.kind,
                        verified: old.verified,
                        ranges: old.ranges.clone(),
                        dated: false,
                    });
                }
                own_reports.push(report);
                continue;
            }
        };
        let key = ObjectKey {
            kind: ObjectKind::NumberOwnership,
            namespace: namespace_of(o),
            name: o.name_any(),
        };
        let mut report = Report::new(key, o.metadata.generation);
        let trunk_id = format!("{}/{}", report.key.namespace, o.spec.trunk_ref.name);
        report.trunk = Some(trunk_id.clone());
        let ranges = build_ranges(o, &mut report);
        let verified = check_verification(o, &mut report);
        report.verified = (o.spec.kind == NumberKind::Platform).then_some(verified);
        let trunk = trunk_index.get(&trunk_id).copied();
        if trunk.is_none() {
            if trunk_known(&trunk_id) {
                report.problem(
                    "spec.trunkRef.name",
                    Reason::TrunkNotAccepted,
                    format!("CarrierTrunk {trunk_id} is not accepted; fix it first"),
                );
            } else {
                report.problem(
                    "spec.trunkRef.name",
                    Reason::TrunkNotFound,
                    format!(
                        "CarrierTrunk {trunk_id} does not exist (a NumberOwnership can only name a trunk in its own namespace)"
                    ),
                );
            }
        }
        report.number_count = Some(ranges.iter().map(NumberRange::count).sum());
        let dated = o.metadata.creation_timestamp.is_some();
        match trunk {
            Some(trunk) if report.problems.is_empty() => candidates.push(Candidate {
                report: own_reports.len(),
                trunk,
                kind: o.spec.kind,
                verified,
                ranges,
                dated,
            }),
            Some(trunk) if report.problems.iter().all(|p| p.reason.keeps_last_good()) => {
                if let Some(old) = previous.and_then(|p| {
                    let id = report.key.id();
                    p.ownerships.iter().find(|x| x.id == id)
                }) {
                    report.kept_generation = Some(None);
                    candidates.push(Candidate {
                        report: own_reports.len(),
                        trunk,
                        kind: old.kind,
                        verified: old.verified,
                        ranges: old.ranges.clone(),
                        dated,
                    });
                }
            }
            _ => {}
        }
        own_reports.push(report);
    }

    // 3. Number conflicts: the older object keeps the numbers; the newer keeps the rest of its
    // own (a conflict costs only what conflicts). A BYOC number belongs to one carrier; a
    // platform number may be verified with several carriers, but only once per trunk.
    // "Older" is the creation time in a cluster; files carry none, so there the object first by
    // namespace and name wins, and the message says so.
    let conflicts = find_conflicts(
        &candidates
            .iter()
            .map(|c| (c.trunk, c.kind, &c.ranges[..]))
            .collect::<Vec<_>>(),
    );
    let mut accepted = vec![false; candidates.len()];
    for i in 0..candidates.len() {
        let mut lost: Vec<(usize, NumberRange)> = Vec::new();
        for (other, _) in conflicts[i].iter().filter(|(o, _)| *o < i && accepted[*o]) {
            for theirs in &candidates[*other].ranges {
                for mine in &candidates[i].ranges {
                    if let Some(overlap) = mine.overlap(theirs) {
                        lost.push((*other, overlap));
                    }
                }
            }
        }
        if lost.is_empty() {
            accepted[i] = true;
            continue;
        }
        let before: u64 = candidates[i].ranges.iter().map(NumberRange::count).sum();
        let mut ranges = std::mem::take(&mut candidates[i].ranges);
        for (_, r) in &lost {
            ranges = ranges.iter().flat_map(|m| m.minus(r)).collect();
        }
        let after: u64 = ranges.iter().map(NumberRange::count).sum();
        candidates[i].ranges = ranges;
        accepted[i] = after > 0;
        let mut lost_sorted = lost.clone();
        lost_sorted.sort_by_key(|(o, r)| (*o, *r));
        lost_sorted.dedup();
        let (other, range) = lost_sorted[0];
        let other_key = own_reports[candidates[other].report].key.id();
        let why = if candidates[i].dated && candidates[other].dated {
            "which is older"
        } else {
            "which wins because it comes first by namespace and name (objects read from files carry no creation time)"
        };
        let more = match lost_sorted.len() - 1 {
            0 => String::new(),
            n => format!(" ({n} more overlapping block(s))"),
        };
        let rep = &mut own_reports[candidates[i].report];
        rep.kept_generation = None;
        if after > 0 {
            rep.partial_numbers = Some(after);
        }
        rep.problem(
            "spec.numbers",
            Reason::NumberConflict,
            format!(
                "{range} is already claimed by NumberOwnership {other_key}, {why}{more}; {} of this object's {before} numbers are not served; remove the overlap from one of them",
                before - after
            ),
        );
    }

    // 4. Trunks of different tenants behind the same carrier addresses must be told apart by
    // hostnames or by numbers; otherwise the newer trunk is refused.
    let index = NumberIndex::build(
        candidates
            .iter()
            .zip(&accepted)
            .filter(|(_, a)| **a)
            .flat_map(|(c, _)| {
                let owner = Owner {
                    trunk: c.trunk as u32,
                    kind: c.kind,
                    verified: c.verified,
                };
                c.ranges.iter().map(move |r| (*r, owner))
            }),
    );
    let mut refused = vec![false; valid.len()];
    // `valid` is in age order, so `a < b` means a is the older trunk.
    for b in 0..valid.len() {
        for a in 0..b {
            if refused[a] || refused[b] {
                continue;
            }
            let (ta, tb) = (&valid[a], &valid[b]);
            if namespace_part(&ta.id) == namespace_part(&tb.id) {
                continue;
            }
            let Some(shared) = shared_cidr(&ta.inbound.allowed_cidrs, &tb.inbound.allowed_cidrs)
            else {
                continue;
            };
            let by_host = !ta.inbound.hostnames.is_empty()
                && !tb.inbound.hostnames.is_empty()
                && !ta
                    .inbound
                    .hostnames
                    .iter()
                    .any(|h| tb.inbound.hostnames.contains(h));
            let shared_number = index.shared_by(a as u32, b as u32);
            let how = if by_host {
                Some("hostnames")
            } else if shared_number.is_none() {
                Some("numbers")
            } else {
                None
            };
            match how {
                Some(how) => {
                    for (me, other) in [(a, b), (b, a)] {
                        trunk_reports[valid_report[me]].notes.push(format!(
                            "Shares carrier addresses {shared} with CarrierTrunk {}; calls are told apart by {how}.",
                            valid[other].id
                        ));
                    }
                }
                None => {
                    refused[b] = true;
                    let why = match shared_number {
                        Some(n) => format!("both own {n}"),
                        None => "neither has hostnames".to_string(),
                    };
                    let rep = &mut trunk_reports[valid_report[b]];
                    rep.kept_generation = None;
                    rep.problem(
                        "spec.inbound.allowedCidrs",
                        Reason::AddressConflict,
                        format!(
                            "carrier addresses {shared} are also accepted by CarrierTrunk {} of another tenant and nothing tells their calls apart ({why}); give both trunks distinct spec.inbound.hostnames or distinct numbers",
                            ta.id
                        ),
                    );
                }
            }
        }
    }

    // 5. Assemble: final trunk indices sorted by id, ownerships of refused trunks dropped.
    let mut kept: Vec<(usize, TrunkConfig)> = valid
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !refused[*i])
        .collect();
    kept.sort_by(|x, y| x.1.id.cmp(&y.1.id));
    let mut remap = vec![u32::MAX; refused.len()];
    for (new, (old, _)) in kept.iter().enumerate() {
        remap[*old] = new as u32;
    }
    let mut ownership_cfgs = Vec::with_capacity(candidates.len());
    for (c, ok) in candidates.into_iter().zip(accepted) {
        if !ok {
            continue;
        }
        let rep = &mut own_reports[c.report];
        if remap[c.trunk] == u32::MAX {
            rep.kept_generation = None;
            let trunk = rep.trunk.clone().unwrap_or_default();
            rep.problem(
                "spec.trunkRef.name",
                Reason::TrunkNotAccepted,
                format!("CarrierTrunk {trunk} is not accepted; fix it first"),
            );
            continue;
        }
        ownership_cfgs.push(OwnershipConfig {
            id: rep.key.id(),
            trunk: remap[c.trunk],
            kind: c.kind,
            verified: c.verified,
            ranges: c.ranges,
        });
    }
    ownership_cfgs.sort_by(|x, y| x.id.cmp(&y.id));
    let config = EdgeConfig {
        version: String::new(),
        trunks: kept.into_iter().map(|(_, t)| t).collect(),
        ownerships: ownership_cfgs,
    }
    .stamped();
    let mut reports = trunk_reports;
    reports.extend(own_reports);
    reports.sort_by(|x, y| x.key.cmp(&y.key));
    Compiled { config, reports }
}

fn namespace_part(id: &str) -> &str {
    id.split_once('/').map_or(id, |(ns, _)| ns)
}

fn shared_cidr(a: &[IpNet], b: &[IpNet]) -> Option<IpNet> {
    for x in a {
        for y in b {
            if x.contains(&y.network()) {
                return Some(*y);
            }
            if y.contains(&x.network()) {
                return Some(*x);
            }
        }
    }
    None
}

/// For each candidate, the other candidates it must not coexist with, and one overlapping block.
fn find_conflicts(cands: &[(usize, NumberKind, &[NumberRange])]) -> Vec<Vec<(usize, NumberRange)>> {
    let mut all: Vec<(NumberRange, usize)> = cands
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, ranges))| ranges.iter().map(move |r| (*r, i)))
        .collect();
    all.sort_unstable_by_key(|(r, _)| (r.len, r.start));
    let mut out: Vec<Vec<(usize, NumberRange)>> = vec![Vec::new(); cands.len()];
    let mut active: Vec<(NumberRange, usize)> = Vec::new();
    for (r, i) in all {
        active.retain(|(a, _)| a.len == r.len && a.end >= r.start);
        for (a, j) in &active {
            if *j == i {
                continue;
            }
            let (ti, ki, _) = cands[i];
            let (tj, kj, _) = cands[*j];
            if ki == NumberKind::Byoc || kj == NumberKind::Byoc || ti == tj {
                let overlap = NumberRange {
                    len: r.len,
                    start: r.start.max(a.start),
                    end: r.end.min(a.end),
                };
                out[i].push((*j, overlap));
                out[*j].push((i, overlap));
            }
        }
        active.push((r, i));
    }
    out
}

fn build_ranges(o: &NumberOwnership, report: &mut Report) -> Vec<NumberRange> {
    let mut ranges = Vec::with_capacity(o.spec.numbers.len());
    if o.spec.numbers.is_empty() {
        report.problem("spec.numbers", Reason::Invalid, "lists no numbers");
    }
    for (i, entry) in o.spec.numbers.iter().enumerate() {
        match parse_number_spec(entry) {
            Ok(mut r) => ranges.append(&mut r),
            Err(e) => report.problem(format!("spec.numbers[{i}]"), Reason::Invalid, e.to_string()),
        }
    }
    merge_ranges(ranges)
}

/// Sorts blocks and joins the ones that overlap or touch.
pub fn merge_ranges(mut ranges: Vec<NumberRange>) -> Vec<NumberRange> {
    ranges.sort_unstable();
    let mut out: Vec<NumberRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.len == r.len && r.start <= last.end.saturating_add(1) => {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    out
}

fn check_verification(o: &NumberOwnership, report: &mut Report) -> bool {
    let Some(v) = &o.spec.verification else {
        return false;
    };
    if v.verified_by.chars().all(|c| c.is_ascii_whitespace()) {
        report.problem(
            "spec.verification.verifiedBy",
            Reason::Invalid,
            "must name who at the carrier verified the numbers",
        );
        return false;
    }
    if v.verified_at.contains(' ') || chrono::DateTime::parse_from_rfc3339(&v.verified_at).is_err()
    {
        report.problem(
            "spec.verification.verifiedAt",
            Reason::Invalid,
            format!(
                "'{}' is not an RFC 3339 time such as 2026-11-02T10:00:00Z",
                v.verified_at
            ),
        );
        return false;
    }
    o.spec.kind == NumberKind::Platform
}

fn build_trunk(
    t: &CarrierTrunk,
    key: &ObjectKey,
    secrets: &Secrets,
    report: &mut Report,
) -> Option<TrunkConfig> {
    let spec = &t.spec;
    let ns = &key.namespace;
    let mut cidrs = Vec::with_capacity(spec.inbound.allowed_cidrs.len());
    if spec.inbound.allowed_cidrs.is_empty() {
        report.problem(
            "spec.inbound.allowedCidrs",
            Reason::Invalid,
            "must list at least one carrier address (inbound is default deny)",
        );
    }
    for (i, c) in spec.inbound.allowed_cidrs.iter().enumerate() {
        // Leading zeros ("010.0.0.0/8") are refused as the API server's isCIDR() refuses them:
        // some parsers read them as octal.
        let parsed = if has_leading_zero(c) {
            Err(())
        } else {
            c.parse::<IpNet>().map_err(|_| ())
        };
        match parsed {
            Ok(net) => {
                if net.trunc() != net {
                    report.warnings.push(format!(
                        "spec.inbound.allowedCidrs[{i}]: '{c}' has host bits set; it is read as {}",
                        net.trunc()
                    ));
                }
                cidrs.push(net.trunc())
            }
            Err(_) => report.problem(
                format!("spec.inbound.allowedCidrs[{i}]"),
                Reason::Invalid,
                format!("'{c}' is not a CIDR such as 203.0.113.0/28 or 2001:db8::/64"),
            ),
        }
    }
    let mut hostnames = Vec::with_capacity(spec.inbound.hostnames.len());
    for (i, h) in spec.inbound.hostnames.iter().enumerate() {
        let h = h.to_ascii_lowercase();
        if valid_host(&h) {
            hostnames.push(h);
        } else {
            report.problem(
                format!("spec.inbound.hostnames[{i}]"),
                Reason::Invalid,
                format!("'{h}' is not a host name"),
            );
        }
    }
    let dial_plan = spec.inbound.number_format.as_ref().and_then(|f| {
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        let ok = !f.country_code.is_empty()
            && f.country_code.len() <= 3
            && digits(&f.country_code)
            && !f.country_code.starts_with('0')
            && digits(&f.national_prefix)
            && digits(&f.international_prefix);
        if !ok {
            report.problem(
                "spec.inbound.numberFormat",
                Reason::Invalid,
                "countryCode must be 1-3 digits (no '+', not starting with 0) and the prefixes digits only",
            );
            return None;
        }
        Some(DialPlan {
            country_code: f.country_code.clone(),
            national_prefix: f.national_prefix.clone(),
            international_prefix: f.international_prefix.clone(),
        })
    });
    let destination = match parse_target(&spec.inbound.destination, None, 1, 1) {
        Ok(d) if spec.inbound.destination.starts_with("sip") => Some(d),
        Ok(_) | Err(_) => {
            report.problem(
                "spec.inbound.destination",
                Reason::Invalid,
                format!(
                    "'{}' is not a SIP URI such as sip:voice-platform.acme.svc.cluster.local:5060",
                    spec.inbound.destination
                ),
            );
            None
        }
    };
    if let Some(a) = &spec.inbound.auth {
        if a.algorithms.is_empty() {
            report.problem(
                "spec.inbound.auth.algorithms",
                Reason::Invalid,
                "list at least one digest algorithm (MD5, SHA-256)",
            );
        }
        for (i, alg) in a.algorithms.iter().enumerate() {
            if a.algorithms[..i].contains(alg) {
                report.problem(
                    "spec.inbound.auth.algorithms",
                    Reason::Invalid,
                    format!("entry {i} ({alg:?}) is listed twice"),
                );
            }
        }
    }
    let inbound_auth = spec.inbound.auth.as_ref().and_then(|a| {
        credentials(
            ns,
            &a.secret_ref,
            Some(a.realm.as_str()),
            "spec.inbound.auth.secretRef",
            secrets,
            report,
        )
    });
    let outbound = spec.outbound.as_ref().map(|o| {
        let mut targets = Vec::with_capacity(o.targets.len());
        if o.targets.is_empty() {
            report.problem(
                "spec.outbound.targets",
                Reason::Invalid,
                "must list at least one target",
            );
        }
        for (i, t) in o.targets.iter().enumerate() {
            let field = format!("spec.outbound.targets[{i}]");
            if !(1..=65535).contains(&t.priority) || t.weight > 65535 {
                report.problem(
                    field.clone(),
                    Reason::Invalid,
                    "priority must be 1-65535 and weight 0-65535",
                );
            }
            match parse_target(&t.uri, t.transport, t.priority, t.weight) {
                Ok(target) => targets.push(target),
                Err(e) => report.problem(field, Reason::Invalid, e),
            }
        }
        // Stable: targets of equal priority keep the order the user wrote.
        targets.sort_by_key(|t| t.priority);
        let auth = o.auth.as_ref().and_then(|a| {
            credentials(
                ns,
                &a.secret_ref,
                a.realm.as_deref(),
                "spec.outbound.auth.secretRef",
                secrets,
                report,
            )
        });
        // Without healthCheck the targets are not probed (interval 0).
        let (interval, threshold) = o.health_check.as_ref().map_or((0, 1), |hc| {
            (hc.interval_seconds.max(1), hc.failure_threshold.max(1))
        });
        let registration = o
            .registration
            .as_ref()
            .and_then(|r| registration(r, o, auth.as_ref(), report));
        OutboundConfig {
            targets,
            auth,
            caller_id_policy: o.caller_id_policy,
            health_interval_seconds: interval,
            health_failure_threshold: threshold,
            registration,
            quality: quality(o.quality.as_ref(), report),
            selection: o.selection,
        }
    });
    let mut routes = Vec::with_capacity(spec.routes.len());
    for (i, r) in spec.routes.iter().enumerate() {
        match r.prefix.strip_prefix('+') {
            Some(d) if d.len() <= 15 && d.bytes().all(|b| b.is_ascii_digit()) => {
                let rate = r
                    .rate
                    .as_ref()
                    .and_then(|rate| rate_config(rate, &format!("spec.routes[{i}].rate"), report));
                routes.push(RouteConfig {
                    prefix: d.to_string(),
                    priority: r.priority,
                    rate,
                })
            }
            _ => report.problem(
                format!("spec.routes[{i}].prefix"),
                Reason::Invalid,
                format!("'{}' is not '+' followed by up to 15 digits", r.prefix),
            ),
        }
    }
    if !routes.is_empty() && outbound.is_none() {
        report.problem(
            "spec.routes",
            Reason::Invalid,
            "routes need spec.outbound: there is no carrier target to send those calls to",
        );
    }
    let limits = spec.limits.clone().unwrap_or_default();
    if limits.max_concurrent_calls == Some(0) || limits.max_calls_per_second == Some(0) {
        report.problem(
            "spec.limits",
            Reason::Invalid,
            "limits must be at least 1 when set",
        );
    }
    let media = spec.media.clone().unwrap_or_default();
    if media
        .codecs
        .iter()
        .any(|c| c.is_empty() || !c.bytes().all(|b| b.is_ascii_graphic()))
    {
        report.problem(
            "spec.media.codecs",
            Reason::Invalid,
            "codec names are SDP encoding names such as PCMU",
        );
    }
    if media.srtp != crate::trunk::SrtpPolicy::Disabled && !media.relay {
        report.problem(
            "spec.media.srtp",
            Reason::Invalid,
            "srtp needs relay: true (SRTP ends in the edge relay)",
        );
    }
    let tls = spec.tls.as_ref().map(|t| trunk_tls(ns, t, secrets, report));
    Some(TrunkConfig {
        id: key.id(),
        generation: t.metadata.generation,
        inbound: InboundConfig {
            allowed_cidrs: cidrs,
            hostnames,
            auth: inbound_auth,
            auth_algorithms: spec.inbound.auth.as_ref().map_or_else(
                || vec![crate::DigestAlgorithm::Md5],
                |a| a.algorithms.clone(),
            ),
            dial_plan,
            destination: destination?,
        },
        outbound,
        routes,
        limits,
        media,
        tls,
    })
}

/// `spec.tls`: the CA bundle read from its Secret, the names checked.
fn trunk_tls(
    ns: &str,
    t: &crate::trunk::TrunkTls,
    secrets: &Secrets,
    report: &mut Report,
) -> crate::snapshot::TlsConfig {
    let name_ok = |n: &str| n.parse::<std::net::IpAddr>().is_ok() || valid_host(n);
    let ca_pem = t.ca_secret_ref.as_ref().and_then(|r| {
        let field = "spec.tls.caSecretRef";
        let data = secret_data(ns, r, field, secrets, report)?;
        let pem = data
            .get("ca.crt")
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|p| p.contains("-----BEGIN CERTIFICATE-----"));
        if pem.is_none() {
            report.problem(
                field,
                Reason::SecretInvalid,
                format!(
                    "Secret {ns}/{} needs a 'ca.crt' key with PEM certificates (-----BEGIN CERTIFICATE-----)",
                    r.name
                ),
            );
        }
        pem.map(str::to_string)
    });
    let server_name = t.server_name.as_ref().map(|n| n.to_ascii_lowercase());
    if let Some(n) = &server_name
        && !name_ok(n)
    {
        report.problem(
            "spec.tls.serverName",
            Reason::Invalid,
            format!("'{n}' is not a host name or IP address"),
        );
    }
    let mut client_names = Vec::with_capacity(t.client_names.len());
    for (i, n) in t.client_names.iter().enumerate() {
        let n = n.to_ascii_lowercase();
        if name_ok(&n) {
            client_names.push(n);
        } else {
            report.problem(
                format!("spec.tls.clientNames[{i}]"),
                Reason::Invalid,
                format!("'{n}' is not a host name or IP address"),
            );
        }
    }
    crate::snapshot::TlsConfig {
        ca_pem,
        server_name,
        client_names,
    }
}

/// The data of the Secret `r` names in `ns`; a missing one is `SecretNotFound` on `field`.
fn secret_data<'s>(
    ns: &str,
    r: &SecretRef,
    field: &str,
    secrets: &'s Secrets,
    report: &mut Report,
) -> Option<&'s std::collections::BTreeMap<String, Vec<u8>>> {
    let data = secrets.get(&(ns.to_string(), r.name.clone()));
    if data.is_none() {
        report.problem(
            field,
            Reason::SecretNotFound,
            format!("Secret {ns}/{} does not exist", r.name),
        );
    }
    data
}

fn credentials(
    ns: &str,
    r: &SecretRef,
    realm: Option<&str>,
    field: &str,
    secrets: &Secrets,
    report: &mut Report,
) -> Option<DigestCredentials> {
    let data = secret_data(ns, r, field, secrets, report)?;
    let get = |k: &str| {
        data.get(k)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|s| s.trim_end_matches(['\r', '\n']))
            .filter(|s| !s.is_empty())
    };
    let (Some(user), Some(pass)) = (get("username"), get("password")) else {
        report.problem(
            field,
            Reason::SecretInvalid,
            format!(
                "Secret {ns}/{} needs non-empty UTF-8 'username' and 'password' keys",
                r.name
            ),
        );
        return None;
    };
    let Some(realm) = realm.filter(|r| !r.is_empty()).or_else(|| get("realm")) else {
        report.problem(
            field,
            Reason::SecretInvalid,
            format!(
                "no digest realm: set spec.outbound.auth.realm or a 'realm' key in Secret {ns}/{} (only hashes for that realm reach the edge)",
                r.name
            ),
        );
        return None;
    };
    Some(DigestCredentials::new(realm, user, pass))
}

/// A port as the CRD's rule takes it: digits without a leading zero, 1-65535.
fn parse_port(p: &str) -> Option<u16> {
    if p.starts_with('0') || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|p| *p != 0)
}

/// Whether a dotted-quad part of an address starts with 0 and has more digits after it.
fn has_leading_zero(cidr: &str) -> bool {
    let addr = cidr.split('/').next().unwrap_or_default();
    let mask = cidr.split_once('/').map(|(_, m)| m);
    let octal = |part: &str| {
        part.len() > 1 && part.starts_with('0') && part.bytes().all(|b| b.is_ascii_digit())
    };
    (addr.contains('.') && addr.split('.').any(octal)) || mask.is_some_and(octal)
}

fn valid_host(h: &str) -> bool {
    if h.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Takes a SIP URI (`sip:host:port;transport=udp`, `sips:[2001:db8::1]:5061`) or a bare host
/// (`sbc.carrier.example`, `192.0.2.1:5060`) apart (RFC 3261 §19.1.1).
pub fn parse_target(
    uri: &str,
    transport: Option<Transport>,
    priority: u32,
    weight: u32,
) -> Result<SipTarget, String> {
    let raw = uri;
    let bad = || {
        format!(
            "'{raw}' is not a SIP URI or host such as sip:sbc1.carrier.example:5060;transport=udp"
        )
    };
    let (secure, rest) = if let Some(r) = raw.strip_prefix("sips:") {
        (true, r)
    } else if let Some(r) = raw.strip_prefix("sip:") {
        (false, r)
    } else {
        (false, raw)
    };
    if raw.contains(char::is_whitespace) {
        return Err(bad());
    }
    let rest = rest.split_once('@').map_or(rest, |(_, h)| h);
    let mut parts = rest.split(';');
    let hostport = parts.next().unwrap_or_default();
    let mut param_transport = None;
    for p in parts {
        if let Some(v) = p.strip_prefix("transport=") {
            param_transport = Some(match v.to_ascii_lowercase().as_str() {
                "udp" => Transport::Udp,
                "tcp" => Transport::Tcp,
                "tls" => Transport::Tls,
                _ => {
                    return Err(format!(
                        "'{raw}': unsupported transport '{v}' (udp, tcp or tls)"
                    ));
                }
            });
        }
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p).ok_or_else(bad)?),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        (h.to_string(), port)
    } else if hostport.matches(':').count() > 1 {
        (hostport.to_string(), None)
    } else if let Some((h, p)) = hostport.split_once(':') {
        (h.to_string(), Some(parse_port(p).ok_or_else(bad)?))
    } else {
        (hostport.to_string(), None)
    };
    let host = host.to_ascii_lowercase();
    if !valid_host(&host) || port == Some(0) {
        return Err(bad());
    }
    let transport = param_transport.or(transport).unwrap_or(if secure {
        Transport::Tls
    } else {
        Transport::Udp
    });
    Ok(SipTarget {
        uri: raw.to_string(),
        secure,
        host,
        port,
        transport,
        priority,
        weight,
    })
}

/// `outbound.registration` checked and filled in: the registrar (default the first target), the
/// address of record (default the credentials' username at the registrar's host).
fn registration(
    r: &crate::trunk::Registration,
    o: &crate::trunk::Outbound,
    auth: Option<&crate::digest::DigestCredentials>,
    report: &mut Report,
) -> Option<crate::snapshot::RegistrationConfig> {
    let field = "spec.outbound.registration";
    let uri = match (&r.registrar, o.targets.first()) {
        (Some(u), _) => (u.clone(), None),
        (None, Some(t)) => (t.uri.clone(), t.transport),
        (None, None) => return None,
    };
    let registrar = match parse_target(&uri.0, uri.1, 1, 1) {
        Ok(t) => t,
        Err(e) => {
            report.problem(format!("{field}.registrar"), Reason::Invalid, e);
            return None;
        }
    };
    if !(60..=86400).contains(&r.expires_seconds) {
        report.problem(
            format!("{field}.expiresSeconds"),
            Reason::Invalid,
            "must be between 60 and 86400",
        );
        return None;
    }
    let aor = match (&r.aor, auth) {
        (Some(a), _) => a.trim().to_string(),
        (None, Some(c)) => {
            let host = if registrar.host.contains(':') {
                format!("[{}]", registrar.host)
            } else {
                registrar.host.clone()
            };
            format!("sip:{}@{host}", c.username)
        }
        (None, None) => {
            report.problem(
                format!("{field}.aor"),
                Reason::Invalid,
                "give the address of record to register (sip:USER@DOMAIN), or outbound.auth whose username names it",
            );
            return None;
        }
    };
    let user = aor
        .strip_prefix("sip:")
        .or_else(|| aor.strip_prefix("sips:"))
        .and_then(|rest| rest.split_once('@'))
        .filter(|(u, host)| {
            !u.is_empty()
                && !host.is_empty()
                && u.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/%".contains(&b))
                && !host
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b == b'<' || b == b'>')
        })
        .map(|(u, _)| u.to_string());
    let Some(user) = user else {
        report.problem(
            format!("{field}.aor"),
            Reason::Invalid,
            format!("'{aor}' is not sip:USER@DOMAIN"),
        );
        return None;
    };
    Some(crate::snapshot::RegistrationConfig {
        registrar,
        aor,
        user,
        expires: r.expires_seconds,
        called_number: r.called_number,
    })
}

/// A route's rate as the edge runs it; a malformed one is a problem at `at` (and no rate).
fn rate_config(
    rate: &crate::trunk::Rate,
    at: &str,
    report: &mut Report,
) -> Option<crate::rate::RateConfig> {
    use crate::rate::{parse_increments, parse_price};
    let price = |v: &str, field: &str, report: &mut Report| {
        let p = parse_price(v);
        if p.is_none() {
            report.problem(
                format!("{at}.{field}"),
                Reason::Invalid,
                format!("'{v}' is not a price such as 0.0125 (digits, up to 6 decimals)"),
            );
        }
        p
    };
    let per_minute = price(&rate.per_minute, "perMinute", report);
    let connection_fee = match &rate.connection_fee {
        Some(fee) => price(fee, "connectionFee", report),
        None => Some(0),
    };
    let currency_ok =
        rate.currency.len() == 3 && rate.currency.bytes().all(|b| b.is_ascii_uppercase());
    if !currency_ok {
        report.problem(
            format!("{at}.currency"),
            Reason::Invalid,
            format!(
                "'{}' is not an ISO 4217 currency code such as USD",
                rate.currency
            ),
        );
    }
    let increments = parse_increments(&rate.increments);
    if increments.is_none() {
        report.problem(
            format!("{at}.increments"),
            Reason::Invalid,
            format!(
                "'{}' is not billing increments first/next in seconds such as 60/60 or 1/1",
                rate.increments
            ),
        );
    }
    let ((first, next), per_minute, connection_fee) = (increments?, per_minute?, connection_fee?);
    currency_ok.then(|| crate::rate::RateConfig {
        per_minute,
        currency: rate.currency.clone(),
        first,
        next,
        connection_fee,
    })
}

/// A namespace has one selection policy (`outbound.selection`): a trunk stating another than
/// the one an older trunk of its namespace states is a problem (it keeps its last good
/// version), so the edge never has to choose between two.
fn agree_on_selection(
    cfg: &TrunkConfig,
    selections: &HashMap<String, (crate::trunk::Selection, String)>,
    report: &mut Report,
) {
    let Some(mine) = cfg.outbound.as_ref().and_then(|o| o.selection) else {
        return;
    };
    let ns = crate::snapshot::namespace_of_id(&cfg.id);
    if let Some((theirs, by)) = selections.get(ns)
        && *theirs != mine
    {
        report.problem(
            "spec.outbound.selection",
            Reason::Invalid,
            format!(
                "namespace {ns} selects outbound trunks by {theirs:?} (CarrierTrunk {by}); this trunk says {mine:?}: every trunk of a namespace that states a selection must state the same one"
            ),
        );
    }
}

/// `outbound.quality` as the edge runs it; out-of-range values are problems (the API server's
/// schema refuses them too, standalone files are checked here).
fn quality(
    q: Option<&crate::trunk::Quality>,
    report: &mut Report,
) -> Option<crate::trunk::Quality> {
    let q = q?;
    let mut ok = true;
    let percent = |v: Option<u32>, at: &str, report: &mut Report| {
        let bad = v.is_some_and(|p| p > 100);
        if bad {
            report.problem(
                format!("spec.outbound.quality.{at}"),
                Reason::Invalid,
                "a percentage is 0 to 100",
            );
        }
        !bad
    };
    ok &= percent(Some(q.probe_percent), "probePercent", report);
    for (name, t) in [("warning", q.warning), ("critical", q.critical)] {
        let Some(t) = t else { continue };
        ok &= percent(t.min_asr_percent, &format!("{name}.minAsrPercent"), report);
        ok &= percent(
            t.max_failure_percent,
            &format!("{name}.maxFailurePercent"),
            report,
        );
        if t.max_pdd_seconds == Some(0) {
            ok = false;
            report.problem(
                format!("spec.outbound.quality.{name}.maxPddSeconds"),
                Reason::Invalid,
                "maxPddSeconds is at least 1",
            );
        }
    }
    if q.min_samples == 0 {
        ok = false;
        report.problem(
            "spec.outbound.quality.minSamples",
            Reason::Invalid,
            "minSamples is at least 1",
        );
    }
    ok.then(|| q.clone())
}
