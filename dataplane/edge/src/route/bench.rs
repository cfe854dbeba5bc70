//! The routing decision at scale, measured by `examples/route_bench.rs` (`make bench`): the
//! whole admission of an outbound call (tenant, candidate trunks from the routes, their order
//! by the tenant's policy, caller-ID presentation, limits, hops) on a snapshot of many trunks
//! and rate prefixes, from INVITEs parsed beforehand.

use std::time::Instant;

use trunkgate_crds::{CallerIdPolicy, CarrierTrunk, Secrets, Selection, compile};

use crate::config::Runtime;
use crate::guard::platform::Tenancy;
use crate::metrics::Metrics;

/// What one run measured.
pub struct Measured {
    pub trunks: usize,
    pub prefixes: usize,
    /// Candidate trunks each call had (the tenant's trunks routing its number).
    pub candidates: usize,
    pub calls: usize,
    /// The whole admission of the call (from the parsed INVITE to its hops and limits place).
    pub ns_per_call: f64,
    /// The routing decision alone: the candidate trunks and their order by the policy.
    pub decision_ns: f64,
}

/// `tenants` namespaces of `per_tenant` trunks each; every trunk of a tenant rates the same
/// `prefixes` prefixes (`+6421000`, `+6421001`, …) at its own price, so each call has
/// `per_tenant` candidates; `calls` admissions under `selection`.
pub fn routing_decision(
    tenants: usize,
    per_tenant: usize,
    prefixes: usize,
    calls: usize,
    selection: Selection,
) -> Result<Measured, String> {
    let mut trunks = Vec::with_capacity(tenants * per_tenant);
    for t in 0..tenants {
        for c in 0..per_tenant {
            let mut trunk = CarrierTrunk::test(&format!("t{t}"), &format!("c{c}"))
                .with_cidrs(&[&format!("10.{}.{}.0/24", t % 250, c % 250)])
                .with_targets(&[&format!("sip:192.0.2.{}:{}", 1 + c % 250, 5060 + t % 1000)])
                .with_policy(CallerIdPolicy::Anonymize);
            for p in 0..prefixes {
                // A price per trunk and prefix, in tenths of a cent.
                let price = format!("0.0{:03}", (c * 37 + p * 11) % 1000);
                trunk = trunk.with_rate(&format!("+6421{p:03}"), &price, "NZD", "60/60");
            }
            if let Some(o) = trunk.spec.outbound.as_mut() {
                o.selection = Some(selection);
            }
            trunks.push(trunk);
        }
    }
    let compiled = compile(&trunks, &[], &Secrets::new(), None);
    if let Some(p) = compiled.problems().next() {
        return Err(format!("the bench's trunks do not compile: {p:?}"));
    }
    let rt = Runtime::build(compiled.config, None, &Metrics::new());
    let distinct = 4096;
    let mut requests = Vec::with_capacity(distinct);
    let mut numbers = Vec::with_capacity(distinct);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..distinct {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let tenant = seed as usize % tenants;
        let prefix = (seed >> 20) as usize % prefixes;
        let line = (seed >> 40) % 10_000;
        let text = format!(
            "INVITE sip:+6421{prefix:03}{line:04}@edge.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKb{seed}\r\nMax-Forwards: 70\r\nFrom: <sip:anonymous@anonymous.invalid>;tag=f1\r\nTo: <sip:+6421{prefix:03}{line:04}@edge.example>\r\nCall-ID: bench{seed}@platform\r\nCSeq: 1 INVITE\r\nX-Trunkgate-Tenant: t{tenant}\r\nContent-Length: 0\r\n\r\n"
        );
        match trunkgate_sip::parse(text.as_bytes()) {
            Ok(trunkgate_sip::SipMessage::Request(r)) => requests.push(r),
            _ => return Err("the bench's INVITE does not parse".into()),
        }
        let callee = trunkgate_crds::e164::E164::parse(&format!("+6421{prefix:03}{line:04}"))
            .ok_or("the bench's number is not E.164")?;
        numbers.push((callee, format!("t{tenant}")));
    }
    let mut candidates = 0;
    let started = Instant::now();
    for i in 0..calls {
        match crate::route::admission::outbound(
            &rt,
            &requests[i % distinct],
            "edge.example",
            &Tenancy::Any,
        ) {
            Ok(a) => candidates = std::hint::black_box(a).carriers.len().max(1),
            Err(r) => return Err(format!("refused {} {}", r.code, r.text)),
        }
    }
    let elapsed = started.elapsed();
    let started = Instant::now();
    for i in 0..calls {
        let (callee, ns) = &numbers[i % distinct];
        std::hint::black_box(crate::route::admission::route_decision(&rt, *callee, ns));
    }
    let decision = started.elapsed();
    Ok(Measured {
        decision_ns: decision.as_nanos() as f64 / calls as f64,
        trunks: trunks.len(),
        prefixes: trunks.len() * prefixes,
        candidates,
        calls,
        ns_per_call: elapsed.as_nanos() as f64 / calls as f64,
    })
}
