//! The cost of an outbound call's routing decision with 1,000 trunks and 100,000 rate
//! prefixes (issue 24's goal: under 2 µs), under each selection policy: the decision alone
//! (the tenant's trunks routing the number, in the policy's order) and the whole admission
//! around it (headers, caller-ID presentation, limits, the first trunk's hops), from INVITEs
//! parsed beforehand. Two shapes: 100 tenants of 10 carriers each (10 candidates a call) and
//! 1,000 tenants of one carrier; every trunk rates 100 prefixes.
//!
//!   cargo run --release -p trunkgate-edge --example route_bench [CALLS]

use trunkgate_crds::Selection;
use trunkgate_edge::route_bench::routing_decision;

fn main() {
    let calls: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let shapes: Vec<(usize, usize, usize)> =
        match std::env::var("ROUTE_BENCH_SHAPE").ok().as_deref() {
            Some("one") => vec![(1000, 1, 100)],
            Some("ten") => vec![(100, 10, 100)],
            _ => vec![(100, 10, 100), (1000, 1, 100)],
        };
    for (tenants, per_tenant, prefixes) in shapes {
        for selection in [
            Selection::Priority,
            Selection::LeastCost,
            Selection::Quality,
        ] {
            match routing_decision(tenants, per_tenant, prefixes, calls, selection) {
                Ok(m) => println!(
                    "route_decision policy={selection:?} trunks={} prefixes={} candidates_per_call={} calls={} decision_ns={:.0} admission_ns={:.0}",
                    m.trunks, m.prefixes, m.candidates, m.calls, m.decision_ns, m.ns_per_call
                ),
                Err(e) => {
                    eprintln!("route_bench: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}
