//! Whether a new call may go through, and where: the carrier ACL, tenant selection, digest,
//! E.164 normalisation, number ownership and limits for inbound calls; trunk selection,
//! caller-ID policy and limits for outbound ones. Each refusal says why, for the NOC.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use trunkgate_crds::e164::{E164, NormaliseError};
use trunkgate_crds::snapshot::{SipTarget, TrunkConfig};
use trunkgate_crds::{CallerIdPolicy, Selection, Transport};
use trunkgate_sip::Request;

use crate::config::{CallSlot, LimitRefusal, Runtime, namespace_of};
use crate::guard::auth::{AuthRefusal, AuthState};
use crate::guard::platform::Tenancy;
use crate::route::{Direction, Hop};
use crate::sip::msg;

/// A call allowed through.
pub struct Admission {
    pub trunk: u32,
    pub direction: Direction,
    pub caller: Option<E164>,
    pub callee: E164,
    /// User part of the B-leg Request-URI and To.
    pub callee_user: String,
    /// From of the B leg (without tag) and the identity lines (P-Asserted-Identity, Privacy).
    pub from: String,
    pub identity_lines: String,
    pub hops: Vec<Hop>,
    pub slot: CallSlot,
    /// The tenant's selection policy (outbound calls).
    pub selection: Selection,
    /// The trunks an outbound call may fail over to, in order, each as it presents the caller
    /// (empty when one trunk alone may carry it: the call then never changes trunk).
    pub carriers: Vec<Carrier>,
}

/// A trunk an outbound call may leave through, and how it presents the caller.
#[derive(Debug, Clone)]
pub struct Carrier {
    pub trunk: u32,
    /// How it presents the caller (shared by the carriers that present it alike).
    pub presentation: std::sync::Arc<Presentation>,
    /// Its answer-seizure ratio in percent when the `Quality` policy ranked it.
    pub score: Option<u32>,
    /// Its targets (indexes in `outbound.targets`) in the order this call tries them, until
    /// the call fails over to it and they become hops (empty then, and for the first).
    pub targets: Box<[u16]>,
}

/// The caller as one trunk presents it.
#[derive(Debug)]
pub struct Presentation {
    pub caller: Option<E164>,
    /// From of leg B (without tag) and the identity lines (P-Asserted-Identity, Privacy).
    pub from: String,
    pub identity_lines: String,
}

/// A call refused, with the status, a metric reason and words for the Warning header.
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    pub text: String,
    pub extra: String,
    pub trunk: Option<u32>,
}

fn refuse(code: u16, reason: &'static str, text: impl Into<String>, trunk: Option<u32>) -> Refusal {
    Refusal {
        code,
        reason,
        text: text.into(),
        extra: String::new(),
        trunk,
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A place under trunk `t`'s limits (this process's share while the fleet's store is down), or
/// the 503 that refuses it.
pub(crate) fn limits(rt: &Runtime, t: u32) -> Result<CallSlot, Refusal> {
    rt.state[t as usize]
        .admit(rt.trunk(t), now_secs(), rt.share())
        .map_err(|l| {
            let (reason, text, retry) = match l {
                LimitRefusal::Concurrent(n) => (
                    "max_concurrent_calls",
                    format!("trunk is at its limit of {n} concurrent calls"),
                    5,
                ),
                LimitRefusal::PerSecond(n) => (
                    "max_calls_per_second",
                    format!("trunk is at its limit of {n} new calls per second"),
                    1,
                ),
            };
            let mut r = refuse(503, reason, text, Some(t));
            r.extra = format!("Retry-After: {retry}\r\n");
            r
        })
}

fn normalise(t: &TrunkConfig, raw: &str) -> Result<E164, NormaliseError> {
    match &t.inbound.dial_plan {
        Some(plan) => plan.normalise(raw),
        None => E164::parse(raw).ok_or(NormaliseError::UnknownFormat),
    }
}

/// The caller as sent: P-Asserted-Identity when present (RFC 3325), else From; and whether the
/// caller asked for privacy (RFC 3323 `Privacy: id`).
fn caller_of(req: &Request) -> (String, bool) {
    let pai = msg::header(req, "P-Asserted-Identity")
        .map(msg::uri_of)
        .and_then(msg::user_of);
    let raw = pai
        .map(str::to_string)
        .or_else(|| trunkgate_sip::from_user(req).map(|u| u.into_owned()))
        .unwrap_or_default();
    let privacy =
        msg::header(req, "Privacy").is_some_and(|p| p.to_ascii_lowercase().contains("id"));
    (raw, privacy)
}

fn is_anonymous(user: &str) -> bool {
    user.is_empty()
        || user.eq_ignore_ascii_case("anonymous")
        || !user.bytes().any(|b| b.is_ascii_digit())
}

/// Where inbound calls of a trunk go.
pub fn hop_of(t: &SipTarget) -> Hop {
    let port = t.port.unwrap_or(if t.secure { 5061 } else { 5060 });
    let host = t.host.clone();
    let bracketed = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let mut uri_host = match t.port {
        Some(p) => format!("{bracketed}:{p}"),
        None => bracketed,
    };
    if t.transport != Transport::Udp {
        uri_host.push_str(match t.transport {
            Transport::Tcp => ";transport=tcp",
            _ => ";transport=tls",
        });
    }
    // A port in the URI means "no SRV" (RFC 3263 §4.2); keep it unresolved otherwise.
    let addr = host
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port));
    Hop {
        host,
        port: t.port,
        transport: t.transport,
        addr,
        secure: t.secure,
        uri_host,
        target: None,
        trunk: None,
    }
}

/// Carrier → platform.
/// `client_cert(t)`: for a trunk whose `spec.tls.clientNames` asks for a client certificate,
/// whether the connection the request came on presented one that trunk accepts
/// (`Some(true)`/`Some(false)`); None for a trunk that asks for none.
pub fn inbound(
    rt: &Runtime,
    auth: &mut AuthState,
    src: SocketAddr,
    req: &Request,
    host: &str,
    client_cert: impl Fn(u32) -> Option<bool>,
) -> Result<Admission, Refusal> {
    let candidates = rt.trunks_for_source(src.ip());
    let ruri_host = msg::host_of(&req.uri.to_string())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let by_host: Vec<u32> = candidates
        .iter()
        .copied()
        .filter(|t| {
            let hosts = &rt.trunk(*t).inbound.hostnames;
            hosts.is_empty() || hosts.contains(&ruri_host)
        })
        .collect();
    if by_host.is_empty() {
        return Err(refuse(
            404,
            "unknown_hostname",
            format!("Request-URI host {ruri_host} is not served for this carrier"),
            None,
        ));
    }
    // Mutual TLS: a trunk that asks for a client certificate takes only calls that presented
    // one it accepts; a certificate it accepts picks it among trunks sharing addresses.
    let checks: Vec<(u32, Option<bool>)> = by_host.iter().map(|t| (*t, client_cert(*t))).collect();
    let by_host: Vec<u32> = if checks.iter().any(|(_, c)| *c == Some(true)) {
        checks
            .iter()
            .filter(|(_, c)| *c == Some(true))
            .map(|(t, _)| *t)
            .collect()
    } else {
        checks
            .iter()
            .filter(|(_, c)| c.is_none())
            .map(|(t, _)| *t)
            .collect()
    };
    if by_host.is_empty() {
        return Err(refuse(
            403,
            "client_certificate",
            "this trunk takes calls only over TLS with a client certificate from its CA naming one of its clientNames",
            checks.first().map(|(t, _)| *t),
        ));
    }
    // A call to a registration trunk's registered contact (its Request-URI user is the
    // contact's user) is that trunk's, the called number where the trunk says the carrier puts
    // it (To by default).
    let ruri_user = trunkgate_sip::request_uri_user(req);
    let registered_to = by_host.iter().copied().find_map(|t| {
        let reg = rt.trunk(t).outbound.as_ref()?.registration.as_ref()?;
        (Some(reg.user.as_str()) == ruri_user).then_some((t, reg.called_number))
    });
    let by_host = match registered_to {
        Some((t, _)) => vec![t],
        None => by_host,
    };
    let to_user = || trunkgate_sip::to_user(req).map(|u| u.into_owned());
    let raw_b = match registered_to {
        Some((_, trunkgate_crds::CalledNumberFrom::To)) => to_user(),
        _ => ruri_user.map(str::to_string).or_else(to_user),
    }
    .unwrap_or_default();
    // Pick the trunk: the one (of those left) on which the called number is owned.
    let mut chosen: Option<(u32, Result<E164, NormaliseError>)> = None;
    for t in &by_host {
        let n = normalise(rt.trunk(*t), &raw_b);
        let owned = n
            .as_ref()
            .is_ok_and(|n| rt.owners(*n).iter().any(|o| o.trunk == *t));
        if owned {
            chosen = Some((*t, n));
            break;
        }
        if chosen.is_none() {
            chosen = Some((*t, n));
        }
    }
    let Some((t, callee)) = chosen else {
        return Err(refuse(404, "unknown_trunk", "no trunk", None));
    };
    let trunk = rt.trunk(t);
    if let Some(c) = &trunk.inbound.auth {
        match auth.check(req, c, &trunk.inbound.auth_algorithms, src.ip()) {
            Ok(()) => {}
            Err(AuthRefusal::Challenge { values, label }) => {
                let mut r = refuse(
                    401,
                    label.unwrap_or("challenge"),
                    "authentication required",
                    Some(t),
                );
                r.extra = values
                    .iter()
                    .map(|v| format!("WWW-Authenticate: {v}\r\n"))
                    .collect();
                return Err(r);
            }
            Err(AuthRefusal::Forbidden { label, text }) => {
                return Err(refuse(403, label, text, Some(t)));
            }
        }
    }
    let callee = callee.map_err(|e| {
        refuse(
            484,
            "number_format",
            format!("called number '{raw_b}' {e}"),
            Some(t),
        )
    })?;
    if !rt.owners(callee).iter().any(|o| o.trunk == t) {
        return Err(refuse(
            404,
            "number_not_owned",
            format!("{callee} is not a number of trunk {}", trunk.id),
            Some(t),
        ));
    }
    let (raw_a, privacy) = caller_of(req);
    let caller = if is_anonymous(&raw_a) {
        None
    } else {
        Some(normalise(trunk, &raw_a).map_err(|e| {
            refuse(
                484,
                "number_format",
                format!("calling number '{raw_a}' {e}"),
                Some(t),
            )
        })?)
    };
    let slot = limits(rt, t)?;
    let display = msg::header(req, "From").and_then(msg::display_of);
    let (from, identity_lines) = identity(caller, display, host, privacy);
    Ok(Admission {
        trunk: t,
        direction: Direction::Inbound,
        caller,
        callee,
        callee_user: callee.to_string(),
        from,
        identity_lines: format!("{identity_lines}X-Trunkgate-Trunk: {}\r\n", trunk.id),
        hops: vec![hop_of(&trunk.inbound.destination)],
        slot,
        selection: Selection::Priority,
        carriers: Vec::new(),
    })
}

fn identity(
    caller: Option<E164>,
    display: Option<&str>,
    host: &str,
    privacy: bool,
) -> (String, String) {
    match caller {
        Some(n) => {
            let uri = format!("sip:{n}@{host};user=phone");
            let from = crate::sip::message::name_addr(display, &uri, None);
            let mut lines = format!("P-Asserted-Identity: <{uri}>\r\n");
            if privacy {
                lines.push_str("Privacy: id\r\n");
            }
            (from, lines)
        }
        None => (
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>".to_string(),
            "Privacy: id\r\n".to_string(),
        ),
    }
}

/// Platform → carrier. `tenancy` is what `--platform-cidrs` says of the source: an outbound
/// call only ever uses a trunk of the tenant (namespace) it belongs to. That tenant is the
/// source's own when its entry names one; a shared platform's call names it with
/// `X-Trunkgate-Tenant`, or `X-Trunkgate-Trunk`, or implies it by a caller number a tenant
/// owns; when only one tenant has outbound trunks it is that one. Otherwise 403.
pub fn outbound(
    rt: &Runtime,
    req: &Request,
    host: &str,
    tenancy: &Tenancy,
) -> Result<Admission, Refusal> {
    let raw_b = trunkgate_sip::request_uri_user(req)
        .unwrap_or_default()
        .to_string();
    let callee = E164::parse(&raw_b).ok_or_else(|| {
        refuse(
            484,
            "number_format",
            format!("called number '{raw_b}' is not E.164 (+ and digits)"),
            None,
        )
    })?;
    let (raw_a, privacy) = caller_of(req);
    let caller = if is_anonymous(&raw_a) {
        None
    } else {
        E164::parse(&raw_a)
    };
    if caller.is_none() && !is_anonymous(&raw_a) {
        return Err(refuse(
            484,
            "number_format",
            format!("calling number '{raw_a}' is not E.164"),
            None,
        ));
    }
    let named = msg::header(req, "X-Trunkgate-Tenant")
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if let Some(ns) = named
        && !tenancy.admits(ns)
    {
        return Err(refuse(
            403,
            "tenant_not_allowed",
            format!("this platform address may not place calls for tenant {ns} (--platform-cidrs)"),
            None,
        ));
    }
    let admits = |t: u32| {
        let ns = namespace_of(&rt.trunk(t).id);
        tenancy.admits(ns) && named.is_none_or(|n| n == ns)
    };
    // The trunks that may carry it: the one named, else the one owning a BYOC caller ID, else
    // the carriers a platform caller ID is verified with, else those routing the number.
    let explicit = msg::header(req, "X-Trunkgate-Trunk").map(str::trim);
    // Each with the index of its longest rated route for the number, when it has one.
    let mut candidates: Vec<(u32, Option<u32>)> = Vec::new();
    match explicit {
        Some(id) => match rt.config.trunk(id) {
            Some((t, _)) if !admits(t) => {
                return Err(refuse(
                    403,
                    "tenant_not_allowed",
                    format!(
                        "trunk {id} belongs to tenant {}, not to this call's",
                        namespace_of(id)
                    ),
                    None,
                ));
            }
            Some((t, cfg)) if cfg.outbound.is_some() => {
                candidates.push((t, rt.rate_route(t, callee)));
            }
            Some(_) => {
                return Err(refuse(
                    404,
                    "no_outbound",
                    format!("trunk {id} has no outbound targets"),
                    None,
                ));
            }
            None => {
                return Err(refuse(
                    404,
                    "unknown_trunk",
                    format!("no CarrierTrunk {id}"),
                    None,
                ));
            }
        },
        None => {
            let owners = caller.map_or(&[][..], |n| rt.owners(n));
            let presents = |o: &&trunkgate_crds::snapshot::Owner| {
                o.may_present() && rt.trunk(o.trunk).outbound.is_some() && admits(o.trunk)
            };
            let byoc = owners
                .iter()
                .filter(presents)
                .find(|o| o.kind == trunkgate_crds::NumberKind::Byoc);
            match byoc {
                // A BYOC number leaves only through the trunk that owns it.
                Some(o) => candidates.push((o.trunk, rt.rate_route(o.trunk, callee))),
                // A platform number through any carrier that verified it.
                None => {
                    for o in owners.iter().filter(presents) {
                        if !candidates.iter().any(|(t, _)| *t == o.trunk) {
                            candidates.push((o.trunk, rt.rate_route(o.trunk, callee)));
                        }
                    }
                }
            }
            if candidates.is_empty() && named.is_none() {
                let mut tenants = rt.outbound_tenants.iter().filter(|ns| tenancy.admits(ns));
                if let (Some(_), Some(_)) = (tenants.next(), tenants.next()) {
                    return Err(refuse(
                        403,
                        "tenant_unknown",
                        "the call does not say which tenant it belongs to: send X-Trunkgate-Tenant or X-Trunkgate-Trunk, a caller ID the tenant owns, or tag the platform's --platform-cidrs entry",
                        None,
                    ));
                }
            }
            if candidates.is_empty() {
                // The routes of the tenant the call names, else of those its source may use
                // (the one whose route matches the longest prefix).
                let tenants: Vec<&str> = match (named, tenancy) {
                    (Some(ns), _) => vec![ns],
                    (None, Tenancy::Only(list)) => list.iter().map(String::as_str).collect(),
                    (None, Tenancy::Any) => {
                        rt.outbound_tenants.iter().map(String::as_str).collect()
                    }
                };
                let mut longest = None;
                for ns in tenants {
                    let mut found = Vec::new();
                    let len = rt.routes_matching(callee, ns, admits, &mut found);
                    if len.is_some() && len > longest {
                        longest = len;
                        candidates = found;
                    }
                }
            }
            if candidates.is_empty() {
                return Err(refuse(
                    404,
                    "no_route",
                    format!("no CarrierTrunk routes {callee}"),
                    None,
                ));
            }
        }
    }
    let selection = rt.selection(namespace_of(&rt.trunk(candidates[0].0).id));
    let ranked = rank_candidates(rt, &candidates, selection);
    // Each in turn, as long as it may present the caller ID, carries the same media as the
    // first and (the first only, now) has room under its limits.
    let display = msg::header(req, "From").and_then(msg::display_of);
    let mut refusal: Option<Refusal> = None;
    let mut carriers: Vec<Carrier> = Vec::with_capacity(ranked.len());
    let mut slot: Option<CallSlot> = None;
    let mut hops: Vec<Hop> = Vec::new();
    for c in ranked {
        let t = c.trunk;
        let trunk = rt.trunk(t);
        let Some(out) = &trunk.outbound else {
            continue;
        };
        if let Some(first) = carriers.first()
            && rt.trunk(first.trunk).media != trunk.media
        {
            continue;
        }
        let mut presented = caller;
        if let Some(n) = caller {
            let may = rt.owners(n).iter().any(|o| o.trunk == t && o.may_present());
            if !may {
                match out.caller_id_policy {
                    CallerIdPolicy::Strict => {
                        refusal.get_or_insert_with(|| refuse(
                            403,
                            "caller_id_not_allowed",
                            format!(
                                "caller ID {n} is neither a BYOC number of {} nor a platform number verified for it",
                                trunk.id
                            ),
                            Some(t),
                        ));
                        continue;
                    }
                    CallerIdPolicy::Anonymize => presented = None,
                    CallerIdPolicy::PassThrough => {}
                }
            }
        }
        if slot.is_none() {
            match limits(rt, t) {
                Ok(s) => slot = Some(s),
                Err(r) => {
                    refusal.get_or_insert(r);
                    continue;
                }
            }
        }
        // Carriers presenting the caller alike share one presentation.
        let presentation = match carriers.iter().find(|c| c.presentation.caller == presented) {
            Some(c) => c.presentation.clone(),
            None => {
                let (from, identity_lines) = identity(
                    presented,
                    display.filter(|_| presented.is_some()),
                    host,
                    privacy,
                );
                std::sync::Arc::new(Presentation {
                    caller: presented,
                    from,
                    identity_lines,
                })
            }
        };
        // The first carrier's targets are the hops now; the others' become hops if the call
        // fails over to them.
        let targets: Box<[u16]> = if carriers.is_empty() {
            hops.extend(c.targets.iter().filter_map(|&(_, i)| {
                Some(Hop {
                    target: Some(i),
                    trunk: Some(t),
                    ..hop_of(out.targets.get(usize::from(i))?)
                })
            }));
            Box::default()
        } else {
            c.targets.iter().map(|(_, i)| *i).collect()
        };
        carriers.push(Carrier {
            trunk: t,
            presentation,
            score: c.score,
            targets,
        });
    }
    let (Some(slot), Some(first)) = (slot, carriers.first()) else {
        return Err(refusal.unwrap_or_else(|| {
            refuse(
                404,
                "no_route",
                format!("no CarrierTrunk routes {callee}"),
                None,
            )
        }));
    };
    let trunk = first.trunk;
    let Presentation {
        caller: presented,
        from,
        identity_lines,
    } = &*first.presentation;
    let (presented, from, identity_lines) = (*presented, from.clone(), identity_lines.clone());
    // A call one trunk alone may carry keeps no list (memory per call).
    if carriers.len() == 1 {
        carriers = Vec::new();
    }
    Ok(Admission {
        trunk,
        direction: Direction::Outbound,
        caller: presented,
        callee,
        callee_user: callee.to_string(),
        from,
        identity_lines,
        hops,
        slot,
        selection,
        carriers,
    })
}

/// The routing decision alone, for `route::bench`: the trunks of tenant `ns` routing
/// `callee`, ordered by its policy; how many there are.
pub(crate) fn route_decision(rt: &Runtime, callee: E164, ns: &str) -> usize {
    let mut candidates = Vec::new();
    rt.routes_matching(callee, ns, |_| true, &mut candidates);
    let Some((first, _)) = candidates.first() else {
        return 0;
    };
    let selection = rt.selection(namespace_of(&rt.trunk(*first).id));
    rank_candidates(rt, &candidates, selection).len()
}

/// A trunk an outbound call may leave through, as its tenant's policy ranked it.
struct Ranked {
    trunk: u32,
    /// Its targets in the order this call tries them, with their rank.
    targets: Vec<(u8, u16)>,
    /// Its answer-seizure ratio in percent under `Quality` (None: too few attempts).
    score: Option<u32>,
}

/// Orders the candidate trunks of an outbound call (in `Priority` order, each with its
/// longest rated route for the number) by the tenant's `selection`, after ranking each one's
/// targets: targets probes found down go last, demoted ones (`outbound.quality`) after the
/// others but for a probing share; a trunk stands where its best target does, so a degraded
/// carrier goes after the healthy ones whatever the policy. Within a standing: `Priority`
/// keeps the order, `LeastCost` puts the lowest rate first (trunks without one last),
/// `Quality` the highest answer ratio in steps of 5 % (50 % while too few attempts are
/// known), the lower rate breaking ties.
fn rank_candidates(
    rt: &Runtime,
    candidates: &[(u32, Option<u32>)],
    selection: Selection,
) -> Vec<Ranked> {
    let now_s = crate::route::health::quality_clock();
    let mut keyed: Vec<((u8, u32, u64, usize), Ranked)> = candidates
        .iter()
        .enumerate()
        .map(|(pos, &(t, rate))| {
            let targets = ranked_targets(rt, t, now_s);
            let standing = targets.first().map_or(u8::MAX, |(r, _)| *r);
            let cost = || {
                rate.and_then(|r| rt.rate_of(t, r))
                    .map_or(u64::MAX, |r| r.per_minute.saturating_add(r.connection_fee))
            };
            let (score, key) = match selection {
                Selection::Priority => (None, (standing, 0, 0, pos)),
                Selection::LeastCost => (None, (standing, 0, cost(), pos)),
                Selection::Quality => {
                    let health = rt.health(t);
                    let best = targets
                        .iter()
                        .filter(|(r, _)| *r == standing)
                        .filter_map(|(_, i)| health.get(usize::from(*i))?.asr_percent())
                        .max();
                    let step = best.unwrap_or(50) / 5;
                    (best, (standing, u32::MAX - step, cost(), pos))
                }
            };
            (
                key,
                Ranked {
                    trunk: t,
                    targets,
                    score,
                },
            )
        })
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, r)| r).collect()
}

/// Trunk `t`'s outbound targets in the order this call tries them, with their rank: by
/// priority and weight (RFC 2782), then demoted ones after those meeting the trunk's quality
/// thresholds (but for the probing share, crate::quality), then those probes found down.
fn ranked_targets(rt: &Runtime, t: u32, now_s: u64) -> Vec<(u8, u16)> {
    let Some(out) = &rt.trunk(t).outbound else {
        return Vec::new();
    };
    let health = rt.health(t);
    let probe_percent = out.quality.as_ref().map(|q| q.probe_percent);
    let rank = |i: usize| match (health.get(i), probe_percent) {
        (Some(h), _) if !h.is_up() => 3,
        (Some(h), Some(p)) => h.rank(p, now_s),
        _ => 0,
    };
    // One target (most trunks): nothing to draw.
    if out.targets.len() == 1 {
        return vec![(rank(0), 0)];
    }
    let mut order: Vec<(u8, u16)> = weighted_order(&out.targets)
        .into_iter()
        .map(|(i, _)| (rank(i), u16::try_from(i).unwrap_or(u16::MAX)))
        .collect();
    order.sort_by_key(|(rank, _)| *rank);
    order
}

/// Targets (with their index) in RFC 2782 order: by priority, then a weighted random draw.
pub fn weighted_order(targets: &[SipTarget]) -> Vec<(usize, &SipTarget)> {
    trunkgate_resolve::weighted_order(
        targets.iter().enumerate().collect(),
        |(_, t)| t.priority,
        |(_, t)| t.weight,
        &mut rand::rng(),
    )
}

#[cfg(test)]
mod tests {
    use trunkgate_crds::{CarrierTrunk, NumberOwnership, Secrets, compile};

    use super::*;
    use crate::metrics::Metrics;

    /// acme/telco: carrier 203.0.113.0/28, numbers +6498879333 (inbound) and +6498879000
    /// (BYOC, may be presented), outbound to one target with a route for +64.
    fn runtime(policy: CallerIdPolicy) -> Runtime {
        let trunk = CarrierTrunk::test("acme", "telco")
            .with_number_format("64")
            .with_targets(&["sip:192.0.2.50:5060"])
            .with_policy(policy)
            .with_route("+64", 1);
        let owned =
            NumberOwnership::test("acme", "numbers", "telco", &["+6498879333", "+6498879000"]);
        let c = compile(&[trunk], &[owned], &Secrets::new(), None);
        assert!(c.problems().next().is_none(), "fixture compiles");
        Runtime::build(c.config, None, &Metrics::new())
    }

    fn invite(ruri_user: &str, from_user: &str) -> Request {
        let text = format!(
            "INVITE sip:{ruri_user}@edge.example SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKa1\r\nMax-Forwards: 70\r\nFrom: \"Ann\" <sip:{from_user}@carrier.example>;tag=f1\r\nTo: <sip:{ruri_user}@edge.example>\r\nCall-ID: adm1@carrier.example\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        match trunkgate_sip::parse(text.as_bytes()) {
            Ok(trunkgate_sip::SipMessage::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn auth() -> AuthState {
        let lockout = std::sync::Arc::new(crate::guard::lockout::Lockout::new(
            5,
            std::time::Duration::from_secs(60),
        ));
        let m = Metrics::new();
        AuthState::new(
            [7; 32],
            0,
            lockout,
            m.auth_blocks.clone(),
            m.auth_uri_differs.clone(),
        )
    }

    fn carrier() -> SocketAddr {
        "203.0.113.5:5060".parse().expect("an address")
    }

    fn refused(r: Result<Admission, Refusal>) -> (u16, &'static str) {
        match r {
            Ok(a) => panic!("admitted to {} hops", a.hops.len()),
            Err(r) => (r.code, r.reason),
        }
    }

    #[test]
    fn inbound_national_numbers_become_e164_and_reach_the_platform() {
        let rt = runtime(CallerIdPolicy::Strict);
        let a = inbound(
            &rt,
            &mut auth(),
            carrier(),
            &invite("098879333", "021555123"),
            "h",
            |_| None,
        )
        .unwrap_or_else(|r| panic!("refused {} {}", r.code, r.text));
        assert_eq!(a.callee.to_string(), "+6498879333");
        assert_eq!(
            a.caller.map(|c| c.to_string()).as_deref(),
            Some("+6421555123")
        );
        assert!(a.identity_lines.contains("X-Trunkgate-Trunk: acme/telco"));
        assert_eq!(a.hops.len(), 1, "the trunk's platform destination");
    }

    #[test]
    fn inbound_refusals_name_their_cause() {
        let rt = runtime(CallerIdPolicy::Strict);
        let mut auth = auth();
        let unowned = inbound(
            &rt,
            &mut auth,
            carrier(),
            &invite("+6498870001", "+64215"),
            "h",
            |_| None,
        );
        assert_eq!(refused(unowned), (404, "number_not_owned"));
        let letters = inbound(
            &rt,
            &mut auth,
            carrier(),
            &invite("support", "+64215"),
            "h",
            |_| None,
        );
        assert_eq!(refused(letters), (484, "number_format"));
    }

    #[test]
    fn a_trunk_that_asks_for_a_client_certificate_takes_only_calls_that_presented_one_it_accepts() {
        let rt = runtime(CallerIdPolicy::Strict);
        let mut auth = auth();
        let call = |auth: &mut AuthState, cert: Option<bool>| {
            inbound(
                &rt,
                auth,
                carrier(),
                &invite("098879333", "021555123"),
                "h",
                move |_| cert,
            )
        };
        assert_eq!(
            refused(call(&mut auth, Some(false))),
            (403, "client_certificate")
        );
        assert!(call(&mut auth, Some(true)).is_ok(), "its certificate");
        assert!(call(&mut auth, None).is_ok(), "a trunk that asks for none");
    }

    /// A target below its trunk's quality thresholds is tried after the others, but for the
    /// probing share; a target probes found down goes last whatever its quality.
    #[test]
    fn a_demoted_target_goes_after_the_others_but_for_a_probing_share() {
        let mut trunk = CarrierTrunk::test("acme", "telco")
            .with_targets(&["sip:192.0.2.50:5060", "sip:192.0.2.51:5060"])
            .with_policy(CallerIdPolicy::PassThrough)
            .with_route("+64", 1);
        if let Some(o) = trunk.spec.outbound.as_mut() {
            o.targets[1].priority = 2;
            o.quality = Some(trunkgate_crds::trunk::Quality {
                min_samples: 10,
                warning: None,
                critical: None,
                probe_percent: 50,
            });
        }
        let c = compile(&[trunk], &[], &Secrets::new(), None);
        assert!(c.problems().next().is_none(), "fixture compiles");
        let rt = Runtime::build(c.config, None, &Metrics::new());
        let first = |rt: &Runtime| {
            let a = outbound(
                rt,
                &invite("+6421555123", "+6111111111"),
                "edge.example",
                &Tenancy::Any,
            )
            .unwrap_or_else(|r| panic!("refused {} {}", r.code, r.text));
            a.hops[0].uri_host.clone()
        };
        assert_eq!(first(&rt), "192.0.2.50:5060", "priority 1 first");
        let now_s = crate::route::health::quality_clock();
        rt.health(0)[0].set_demotion(2, now_s);
        let firsts: Vec<String> = (0..4).map(|_| first(&rt)).collect();
        assert_eq!(
            firsts,
            [
                "192.0.2.50:5060",
                "192.0.2.51:5060",
                "192.0.2.50:5060",
                "192.0.2.51:5060"
            ],
            "half of the calls still try it first (probePercent 50)"
        );
        rt.health(0)[0].set_demotion(0, now_s);
        rt.health(0)[1].record(false, 1);
        assert_eq!(first(&rt), "192.0.2.50:5060");
        rt.health(0)[0].set_demotion(2, now_s);
        for _ in 0..2 {
            assert_eq!(
                first(&rt),
                "192.0.2.50:5060",
                "a demoted target before one probes found down"
            );
        }
    }

    #[test]
    fn outbound_presents_a_byoc_number_and_refuses_another_under_strict() {
        let rt = runtime(CallerIdPolicy::Strict);
        let a = outbound(
            &rt,
            &invite("+6421555123", "+6498879000"),
            "edge.example",
            &Tenancy::Any,
        )
        .unwrap_or_else(|r| panic!("refused {} {}", r.code, r.text));
        assert!(a.from.contains("+6498879000"), "{}", a.from);
        assert!(a.identity_lines.contains("P-Asserted-Identity"));
        assert_eq!(a.hops.len(), 1);
        let foreign = outbound(
            &rt,
            &invite("+6421555123", "+6111111111"),
            "edge.example",
            &Tenancy::Any,
        );
        assert_eq!(refused(foreign), (403, "caller_id_not_allowed"));
    }

    #[test]
    fn outbound_anonymizes_a_foreign_caller_id_when_the_trunk_says_so() {
        let rt = runtime(CallerIdPolicy::Anonymize);
        let a = outbound(
            &rt,
            &invite("+6421555123", "+6111111111"),
            "edge.example",
            &Tenancy::Any,
        )
        .unwrap_or_else(|r| panic!("refused {} {}", r.code, r.text));
        assert!(a.from.contains("anonymous.invalid"), "{}", a.from);
        assert_eq!(a.identity_lines, "Privacy: id\r\n");
    }

    #[test]
    fn outbound_without_a_route_or_with_a_bad_number_is_refused() {
        let rt = runtime(CallerIdPolicy::Strict);
        let elsewhere = outbound(
            &rt,
            &invite("+4420712345", "anonymous"),
            "edge.example",
            &Tenancy::Any,
        );
        assert_eq!(refused(elsewhere), (404, "no_route"));
        let bad = outbound(
            &rt,
            &invite("0800123", "anonymous"),
            "edge.example",
            &Tenancy::Any,
        );
        assert_eq!(refused(bad), (484, "number_format"));
    }

    /// `acme/telco` routes `+64` at priority 1 and owns `+6498879333`; `beta/cheap` routes the
    /// longer `+649` and owns `+6498870000`.
    fn two_tenants() -> Runtime {
        let acme = CarrierTrunk::test("acme", "telco")
            .with_targets(&["sip:192.0.2.50:5060"])
            .with_policy(CallerIdPolicy::Strict)
            .with_route("+64", 1);
        let beta = CarrierTrunk::test("beta", "cheap")
            .with_cidrs(&["198.51.100.0/24"])
            .with_targets(&["sip:192.0.2.60:5060"])
            .with_policy(CallerIdPolicy::Anonymize)
            .with_route("+649", 1);
        let owned = [
            NumberOwnership::test("acme", "numbers", "telco", &["+6498879333"]),
            NumberOwnership::test("beta", "numbers", "cheap", &["+6498870000"]),
        ];
        let c = compile(&[acme, beta], &owned, &Secrets::new(), None);
        assert!(c.problems().next().is_none(), "fixture compiles");
        Runtime::build(c.config, None, &Metrics::new())
    }

    fn with_header(req: &Request, line: &str) -> Request {
        let text = trunkgate_sip::serialize(&trunkgate_sip::SipMessage::Request(req.clone()));
        let text = String::from_utf8_lossy(&text).replacen("\r\n", &format!("\r\n{line}\r\n"), 1);
        match trunkgate_sip::parse(text.as_bytes()) {
            Ok(trunkgate_sip::SipMessage::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn trunk_of(rt: &Runtime, r: Result<Admission, Refusal>) -> String {
        match r {
            Ok(a) => rt.trunk(a.trunk).id.clone(),
            Err(e) => panic!("refused {} {}: {}", e.code, e.reason, e.text),
        }
    }

    #[test]
    fn an_outbound_call_never_leaves_through_another_tenants_trunk() {
        let rt = two_tenants();
        let acme_only = Tenancy::Only(vec!["acme".into()]);
        let call = invite("+6498001234", "anonymous");
        // The longer +649 prefix is beta's: a source tagged acme routes by acme's +64 instead.
        assert_eq!(
            trunk_of(&rt, outbound(&rt, &call, "e", &acme_only)),
            "acme/telco"
        );
        // Naming beta's trunk, or tenant, from acme's address is refused.
        let named = with_header(&call, "X-Trunkgate-Trunk: beta/cheap");
        assert_eq!(
            refused(outbound(&rt, &named, "e", &acme_only)),
            (403, "tenant_not_allowed")
        );
        let tenant = with_header(&call, "X-Trunkgate-Tenant: beta");
        assert_eq!(
            refused(outbound(&rt, &tenant, "e", &acme_only)),
            (403, "tenant_not_allowed")
        );
        // A beta-owned caller ID from acme's address does not pick beta's trunk either.
        let foreign = invite("+6498001234", "+6498870000");
        assert_eq!(
            refused(outbound(&rt, &foreign, "e", &acme_only)),
            (403, "caller_id_not_allowed")
        );
    }

    #[test]
    fn a_shared_platforms_call_names_or_implies_its_tenant_or_is_refused() {
        let rt = two_tenants();
        let call = invite("+6498001234", "anonymous");
        // Two tenants have outbound trunks and nothing says which one: refused, not guessed.
        assert_eq!(
            refused(outbound(&rt, &call, "e", &Tenancy::Any)),
            (403, "tenant_unknown")
        );
        let acme = with_header(&call, "X-Trunkgate-Tenant: acme");
        assert_eq!(
            trunk_of(&rt, outbound(&rt, &acme, "e", &Tenancy::Any)),
            "acme/telco"
        );
        let beta = with_header(&call, "X-Trunkgate-Tenant: beta");
        assert_eq!(
            trunk_of(&rt, outbound(&rt, &beta, "e", &Tenancy::Any)),
            "beta/cheap"
        );
        // A caller ID the tenant owns implies the tenant.
        let owned = invite("+6498001234", "+6498879333");
        assert_eq!(
            trunk_of(&rt, outbound(&rt, &owned, "e", &Tenancy::Any)),
            "acme/telco"
        );
        // Naming the trunk names its tenant.
        let trunk = with_header(&call, "X-Trunkgate-Trunk: beta/cheap");
        assert_eq!(
            trunk_of(&rt, outbound(&rt, &trunk, "e", &Tenancy::Any)),
            "beta/cheap"
        );
    }

    /// acme's two carriers reach +64: `telco` by priority 1 at 0.02 NZD/min, `cheap` by
    /// priority 2 at 0.01; `telco` owns the BYOC number +6498879000; the platform number
    /// +6498879100 is verified with both; `selection` is acme's policy.
    fn two_carriers(selection: Option<Selection>) -> Runtime {
        let mut telco = CarrierTrunk::test("acme", "telco")
            .with_targets(&["sip:192.0.2.50:5060"])
            .with_policy(CallerIdPolicy::Strict)
            .with_rate("+64", "0.02", "NZD", "60/60");
        let mut cheap = CarrierTrunk::test("acme", "cheap")
            .with_cidrs(&["198.51.100.0/24"])
            .with_targets(&["sip:192.0.2.60:5060"])
            .with_policy(CallerIdPolicy::Strict)
            .with_rate("+64", "0.01", "NZD", "60/60");
        telco.spec.routes[0].priority = 1;
        cheap.spec.routes[0].priority = 2;
        for t in [&mut telco, &mut cheap] {
            if let Some(o) = t.spec.outbound.as_mut() {
                o.selection = selection;
                o.quality = Some(trunkgate_crds::trunk::Quality {
                    min_samples: 2,
                    warning: None,
                    critical: None,
                    probe_percent: 0,
                });
            }
        }
        let owned = [
            NumberOwnership::test("acme", "byoc", "telco", &["+6498879000"]),
            NumberOwnership::test("acme", "platform-telco", "telco", &["+6498879100"])
                .platform(true),
            NumberOwnership::test("acme", "platform-cheap", "cheap", &["+6498879100"])
                .platform(true),
        ];
        let c = compile(&[telco, cheap], &owned, &Secrets::new(), None);
        assert!(c.problems().next().is_none(), "fixture compiles");
        Runtime::build(c.config, None, &Metrics::new())
    }

    /// The trunks a call would try, in order: its own, then those it may fail over to (their
    /// targets become hops only then).
    fn trunks_tried(rt: &Runtime, caller: &str) -> Vec<String> {
        let a = outbound(rt, &invite("+6421555123", caller), "e", &Tenancy::Any)
            .unwrap_or_else(|r| panic!("refused {} {}", r.code, r.text));
        assert!(
            a.hops.iter().all(|h| h.trunk == Some(a.trunk)),
            "hops of the first trunk only"
        );
        let mut out = vec![rt.trunk(a.trunk).id.clone()];
        if let Some((first, rest)) = a.carriers.split_first() {
            assert_eq!(first.trunk, a.trunk, "the first trunk holds the slot");
            assert!(first.targets.is_empty(), "its targets are the hops");
            assert!(rest.iter().all(|c| !c.targets.is_empty()));
            out.extend(rest.iter().map(|c| rt.trunk(c.trunk).id.clone()));
        }
        out
    }

    #[test]
    fn least_cost_sends_a_call_to_the_cheaper_carrier_first_and_fails_over_to_the_other() {
        let rt = two_carriers(Some(Selection::LeastCost));
        assert_eq!(
            trunks_tried(&rt, "anonymous"),
            ["acme/cheap", "acme/telco"],
            "routes of both match: the cheaper first"
        );
        let rt = two_carriers(None);
        assert_eq!(
            trunks_tried(&rt, "anonymous"),
            ["acme/telco", "acme/cheap"],
            "Priority (the default): by the routes' priority"
        );
    }

    #[test]
    fn a_byoc_caller_id_leaves_only_through_its_own_carrier_and_a_verified_platform_number_through_either()
     {
        let rt = two_carriers(Some(Selection::LeastCost));
        assert_eq!(
            trunks_tried(&rt, "+6498879000"),
            ["acme/telco"],
            "BYOC: its own trunk, though the other is cheaper"
        );
        assert_eq!(
            trunks_tried(&rt, "+6498879100"),
            ["acme/cheap", "acme/telco"],
            "verified with both: the policy orders them"
        );
        // Each presents the caller itself.
        let a = outbound(
            &rt,
            &invite("+6421555123", "+6498879100"),
            "e",
            &Tenancy::Any,
        )
        .unwrap_or_else(|r| panic!("refused {} {}", r.code, r.text));
        assert!(
            a.carriers
                .iter()
                .all(|c| c.presentation.from.contains("+6498879100"))
        );
        // A caller ID neither may present (Strict on both) is refused as before.
        assert_eq!(
            refused(outbound(
                &rt,
                &invite("+6421555123", "+6111111111"),
                "e",
                &Tenancy::Any
            )),
            (403, "caller_id_not_allowed")
        );
    }

    #[test]
    fn quality_puts_the_carrier_answering_more_calls_first_and_a_degraded_one_goes_last_in_every_policy()
     {
        use crate::quality::Outcome;
        let rt = two_carriers(Some(Selection::Quality));
        assert_eq!(
            trunks_tried(&rt, "anonymous"),
            ["acme/cheap", "acme/telco"],
            "nothing known: both count as 50 %, the lower rate breaks the tie"
        );
        let now_s = crate::route::health::quality_clock();
        let index = |rt: &Runtime, id: &str| rt.config.trunk(id).map_or(u32::MAX, |(t, _)| t);
        let (telco, cheap) = (index(&rt, "acme/telco"), index(&rt, "acme/cheap"));
        for _ in 0..4 {
            rt.health(telco)[0].attempted(now_s, Outcome::of(Some(200)), None, 2);
            rt.health(cheap)[0].attempted(now_s, Outcome::of(Some(503)), None, 2);
        }
        assert_eq!(trunks_tried(&rt, "anonymous"), ["acme/telco", "acme/cheap"]);
        let a = outbound(&rt, &invite("+6421555123", "anonymous"), "e", &Tenancy::Any)
            .unwrap_or_else(|r| panic!("refused {} {}", r.code, r.text));
        let scores: Vec<Option<u32>> = a.carriers.iter().map(|c| c.score).collect();
        assert_eq!(
            scores,
            [Some(100), Some(0)],
            "each carrier's ASR, for the record"
        );
        let rt = two_carriers(Some(Selection::LeastCost));
        rt.health(index(&rt, "acme/cheap"))[0].set_demotion(2, now_s);
        assert_eq!(
            trunks_tried(&rt, "anonymous"),
            ["acme/telco", "acme/cheap"],
            "the cheaper carrier is demoted: after the other"
        );
    }
}
