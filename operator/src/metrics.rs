//! `trunkgate_operator_*` Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Everything the operator counts.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub reconcile_failures: IntCounterVec,
    pub status_writes: IntCounterVec,
    pub objects_with_problems: IntGaugeVec,
    pub compile_duration: Histogram,
    pub compiles: prometheus::IntCounter,
    pub snapshot_bytes: IntGauge,
    pub snapshot_secrets: IntGauge,
    pub snapshot_numbers: IntGauge,
    pub snapshot_trunks: IntGauge,
    pub snapshot_publishes: IntCounterVec,
    pub leader: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition is valid");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition is valid");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let reconciles = counter(
            "trunkgate_operator_reconciles_total",
            "Reconciles by kind.",
            &["kind"],
        );
        let reconcile_failures = counter(
            "trunkgate_operator_reconcile_failures_total",
            "Failed reconciles by kind and error.",
            &["kind", "error"],
        );
        let status_writes = counter(
            "trunkgate_operator_status_writes_total",
            "Status patches sent, by kind.",
            &["kind"],
        );
        let snapshot_publishes = counter(
            "trunkgate_operator_snapshot_publishes_total",
            "Attempts to publish the edge snapshot Secret, by result.",
            &["result"],
        );
        let objects_with_problems = IntGaugeVec::new(
            Opts::new(
                "trunkgate_operator_objects_with_problems",
                "Objects left out of (or frozen in) the snapshot, by kind and first problem.",
            ),
            &["kind", "reason"],
        )
        .expect("static metric definition is valid");
        registry
            .register(Box::new(objects_with_problems.clone()))
            .expect("metric registered once");
        let compile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "trunkgate_operator_compile_duration_seconds",
                "Time to compile the snapshot.",
            )
            .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
        )
        .expect("static metric definition is valid");
        registry
            .register(Box::new(compile_duration.clone()))
            .expect("metric registered once");
        Self {
            reconciles,
            reconcile_failures,
            status_writes,
            objects_with_problems,
            compile_duration,
            compiles: {
                let c = prometheus::IntCounter::new(
                    "trunkgate_operator_compiles_total",
                    "Snapshot compiles.",
                )
                .expect("static metric definition is valid");
                registry
                    .register(Box::new(c.clone()))
                    .expect("metric registered once");
                c
            },
            snapshot_bytes: gauge(
                "trunkgate_operator_snapshot_bytes",
                "Compressed size of the published snapshot.",
            ),
            snapshot_secrets: gauge(
                "trunkgate_operator_snapshot_secrets",
                "Secrets the published snapshot takes (1, or its parts when over 1 MB compressed).",
            ),
            snapshot_numbers: gauge(
                "trunkgate_operator_snapshot_numbers",
                "Numbers covered by the snapshot.",
            ),
            snapshot_trunks: gauge(
                "trunkgate_operator_snapshot_trunks",
                "Trunks in the snapshot.",
            ),
            snapshot_publishes,
            leader: gauge(
                "trunkgate_operator_leader",
                "1 while this replica holds the leader lease.",
            ),
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
