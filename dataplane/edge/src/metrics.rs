//! `trunkgate_edge_*` Prometheus metrics. Labels are trunk ids, directions, status classes and
//! reasons: never a phone number or an address.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every metric of the edge.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub calls: IntCounterVec,
    pub call_cost: prometheus::CounterVec,
    pub target_attempts: IntGaugeVec,
    pub target_demoted: IntGaugeVec,
    pub target_asr: prometheus::GaugeVec,
    pub target_ccr: prometheus::GaugeVec,
    pub target_failures: prometheus::GaugeVec,
    pub target_pdd: prometheus::GaugeVec,
    pub target_acd: prometheus::GaugeVec,
    pub refusals: IntCounterVec,
    pub active_calls: IntGaugeVec,
    pub calls_in_setup: IntGaugeVec,
    pub source_shedding: IntCounterVec,
    pub source_dropped: IntCounter,
    pub auth_uri_differs: IntCounter,
    pub refusal_records_suppressed: IntCounter,
    pub acl_drops: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub malformed: IntCounterVec,
    pub transactions: IntCounterVec,
    pub retransmissions: IntCounterVec,
    pub timeouts: IntCounterVec,
    pub ringing_timeouts: IntCounterVec,
    pub setup_recycled: IntCounterVec,
    pub session_refreshes: IntCounterVec,
    pub failovers: IntCounterVec,
    pub handoffs: IntCounterVec,
    pub send_errors: IntCounterVec,
    pub snapshot_reloads: IntCounterVec,
    pub snapshot_info: IntGaugeVec,
    pub draining: IntGauge,
    pub targets_configured: IntGaugeVec,
    pub targets_healthy: IntGaugeVec,
    pub target_probes: IntCounterVec,
    pub options_answered: IntCounter,
    pub media_timeouts: IntCounterVec,
    pub media_dropped: IntCounterVec,
    pub carrier_challenges: IntCounterVec,
    pub tcp_refused: IntCounterVec,
    pub auth_blocks: IntCounterVec,
    pub kernel_drops: IntCounterVec,
    pub kernel_fast_path: IntGaugeVec,
    pub media_kernel_forwarded: IntCounterVec,
    pub tcp_closed: IntCounterVec,
    pub tls_handshake_failures: IntCounterVec,
    pub tls_reloads: IntCounterVec,
    pub tcp_connections: IntGauge,
    pub store_ops: IntCounterVec,
    pub checkpoints: IntCounter,
    pub orphans_ended: IntCounter,
    pub calls_restored: IntCounterVec,
    pub registrations: IntCounterVec,
    pub registration_up: IntGaugeVec,
    pub store_up: IntGauge,
    pub fleet_pods: IntGauge,
    pub limit_fallback: IntGauge,
    pub media_mos: prometheus::HistogramVec,
    pub media_loss: prometheus::HistogramVec,
    pub media_jitter: prometheus::HistogramVec,
}

impl Metrics {
    /// Drops a carrier target's quality gauges (its trunk left the snapshot).
    pub fn forget_target(&self, trunk: &str, target: &str) {
        let labels = [trunk, target];
        let _ = self.target_attempts.remove_label_values(&labels);
        let _ = self.target_demoted.remove_label_values(&labels);
        for g in [
            &self.target_asr,
            &self.target_ccr,
            &self.target_failures,
            &self.target_pdd,
            &self.target_acd,
        ] {
            let _ = g.remove_label_values(&labels);
        }
    }

    pub fn new() -> Self {
        let registry = Registry::new();
        let cv = |name: &str, help: &str, labels: &[&str]| {
            let m = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition");
            registry
                .register(Box::new(m.clone()))
                .expect("registered once");
            m
        };
        let gv = |name: &str, help: &str, labels: &[&str]| {
            let m =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            registry
                .register(Box::new(m.clone()))
                .expect("registered once");
            m
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let call_cost = prometheus::CounterVec::new(
            Opts::new(
                "trunkgate_edge_call_cost_total",
                "What ended calls cost by their trunk's rate for the called number (spec.routes[].rate), by trunk and currency.",
            ),
            &["trunk", "currency"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(call_cost.clone()))
            .expect("registered once");
        let fgv = |name: &str, help: &str| {
            let m = prometheus::GaugeVec::new(Opts::new(name, help), &["trunk", "target"])
                .expect("static metric definition");
            registry
                .register(Box::new(m.clone()))
                .expect("registered once");
            m
        };
        let target_asr = fgv(
            "trunkgate_edge_target_asr_ratio",
            "Answered over attempted calls to a carrier target in the last 15 minutes (shown once 10 attempts are in the window).",
        );
        let target_ccr = fgv(
            "trunkgate_edge_target_ccr_ratio",
            "Calls a carrier target completed (answered, or refused by the callee: 486, 600, 603) over attempts, last 15 minutes (10 attempts needed).",
        );
        let target_failures = fgv(
            "trunkgate_edge_target_failure_ratio",
            "Attempts to a carrier target that timed out, could not connect or got 5xx, over attempts, last 15 minutes (10 attempts needed).",
        );
        let target_pdd = fgv(
            "trunkgate_edge_target_pdd_seconds",
            "Mean post-dial delay of a carrier target (INVITE to the first ringing or the answer), last 15 minutes (10 attempts needed).",
        );
        let target_acd = fgv(
            "trunkgate_edge_target_acd_seconds",
            "Mean talk time of calls a carrier target answered that ended in the last 15 minutes.",
        );
        let draining = IntGauge::new(
            "trunkgate_edge_draining",
            "1 while the edge drains after SIGTERM.",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(draining.clone()))
            .expect("registered once");
        let options_answered = counter(
            "trunkgate_edge_options_answered_total",
            "OPTIONS requests to the edge itself answered locally.",
        );
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("static metric definition");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        Self {
            call_cost,
            target_asr,
            target_ccr,
            target_failures,
            target_pdd,
            target_acd,
            target_demoted: gv(
                "trunkgate_edge_target_demoted",
                "Where a carrier target stands against its trunk's outbound.quality thresholds: 0 meets them, 1 below warning (tried after those that meet them), 2 below critical (tried last).",
                &["trunk", "target"],
            ),
            target_attempts: gv(
                "trunkgate_edge_target_attempts",
                "Call attempts to a carrier target in its 15-minute quality window.",
                &["trunk", "target"],
            ),
            registrations: cv(
                "trunkgate_edge_registrations_total",
                "Final answers to the edge's REGISTERs of registration trunks, by trunk and result (ok, failed: refused, unanswered or no answer).",
                &["trunk", "result"],
            ),
            registration_up: gv(
                "trunkgate_edge_registration_up",
                "1 while the registrar holds this edge's binding for the trunk (only the edge of the fleet that holds the registration exports it).",
                &["trunk"],
            ),
            checkpoints: counter(
                "trunkgate_edge_call_checkpoints_total",
                "Checkpoints of answered calls written (at the answer and after each re-INVITE or UPDATE), for a restarted edge to restore them.",
            ),
            orphans_ended: counter(
                "trunkgate_edge_orphan_calls_ended_total",
                "Calls of an edge gone for good (silent for --orphan-seconds) that this edge ended: BYE on both legs, record with endReason edge_lost.",
            ),
            calls_restored: cv(
                "trunkgate_edge_calls_restored_total",
                "Calls of a previous run of this edge rebuilt from their checkpoints at start, by result (ok, failed).",
                &["result"],
            ),
            store_ops: cv(
                "trunkgate_edge_state_store_ops_total",
                "Round trips to the fleet's shared store (--state-store), by operation (claim, release, refresh, lockout) and result (ok, refused, error).",
                &["op", "result"],
            ),
            store_up: gauge(
                "trunkgate_edge_state_store_up",
                "1 while the fleet's shared store answers (always 1 with the embedded store).",
            ),
            fleet_pods: gauge(
                "trunkgate_edge_fleet_pods",
                "Edge processes the shared store last saw alive (1 with the embedded store).",
            ),
            limit_fallback: gauge(
                "trunkgate_edge_limit_fallback",
                "1 while the shared store is unreachable and this edge enforces its share of each trunk limit (the limit divided by the live pods it last saw).",
            ),
            calls: cv(
                "trunkgate_edge_calls_total",
                "Calls that reached a final status, by trunk, direction and status class.",
                &["trunk", "direction", "code_class"],
            ),
            refusals: cv(
                "trunkgate_edge_refusals_total",
                "Calls the edge refused itself, by trunk, direction and reason.",
                &["trunk", "direction", "reason"],
            ),
            active_calls: gv(
                "trunkgate_edge_active_calls",
                "Calls up or being set up, by trunk.",
                &["trunk"],
            ),
            acl_drops: cv(
                "trunkgate_edge_acl_drops_total",
                "SIP messages from addresses no trunk allows, dropped (or refused with 403), by side.",
                &["side"],
            ),
            auth_failures: cv(
                "trunkgate_edge_auth_failures_total",
                "Digest authentication failures of carriers, by trunk and reason.",
                &["trunk", "reason"],
            ),
            malformed: cv(
                "trunkgate_edge_malformed_messages_total",
                "Messages refused by the SIP codec, by side and reason.",
                &["side", "reason"],
            ),
            transactions: cv(
                "trunkgate_edge_transactions_total",
                "SIP transactions started, by side and role.",
                &["side", "role"],
            ),
            retransmissions: cv(
                "trunkgate_edge_retransmissions_total",
                "Requests and responses the edge retransmitted (RFC 3261 timers A, E, G) or answered again.",
                &["side"],
            ),
            timeouts: cv(
                "trunkgate_edge_transaction_timeouts_total",
                "Transactions that timed out (timers B, F, H), by side.",
                &["side"],
            ),
            ringing_timeouts: cv(
                "trunkgate_edge_ringing_timeouts_total",
                "Calls CANCELed after ringing for --ringing-seconds without a final answer, by trunk.",
                &["trunk"],
            ),
            session_refreshes: cv(
                "trunkgate_edge_session_refreshes_total",
                "RFC 4028 session timers, by trunk and result: sent (an UPDATE refreshing a leg on which the edge is the refresher), expired (the peer that should refresh did not: the call ended).",
                &["trunk", "result"],
            ),
            setup_recycled: cv(
                "trunkgate_edge_setup_recycled_total",
                "Calls ended because a set-up cap (limits.maxCallsInSetup, --max-calls-in-setup-per-source) was full and their 2xx had waited over a second for its ACK (what a flood of INVITEs forged with a carrier's address leaves), by trunk.",
                &["trunk"],
            ),
            failovers: cv(
                "trunkgate_edge_failovers_total",
                "Outbound calls moved to the next carrier target, by trunk and cause: timeout, 4xx/5xx class, connect_failed, tls_bad_name, tcp_connections_full, trunk (on from this trunk to the next one its tenant's outbound.selection listed), 3xx (a redirect to an address the trunk does not own: the next target instead), 3xx_followed (a redirect within the trunk's targets or allowedCidrs, followed).",
                &["trunk", "cause"],
            ),
            handoffs: cv(
                "trunkgate_edge_worker_handoffs_total",
                "Messages passed to the worker that owns their call, by result.",
                &["result"],
            ),
            send_errors: cv(
                "trunkgate_edge_send_errors_total",
                "Datagrams the socket refused, by side.",
                &["side"],
            ),
            snapshot_reloads: cv(
                "trunkgate_edge_snapshot_reloads_total",
                "Snapshot loads, by result (ok, unchanged, or the error kind).",
                &["result"],
            ),
            snapshot_info: gv(
                "trunkgate_edge_snapshot_info",
                "1 for the snapshot version in use.",
                &["version"],
            ),
            targets_configured: gv(
                "trunkgate_edge_trunk_targets_configured",
                "Outbound targets configured, by trunk.",
                &["trunk"],
            ),
            targets_healthy: gv(
                "trunkgate_edge_trunk_targets_healthy",
                "Outbound targets in rotation, by trunk: all of them unless OPTIONS probes (outbound.healthCheck) took some out.",
                &["trunk"],
            ),
            target_probes: cv(
                "trunkgate_edge_target_probes_total",
                "OPTIONS health probes of carrier targets, by trunk and result (ok, failed).",
                &["trunk", "result"],
            ),
            calls_in_setup: gv(
                "trunkgate_edge_calls_in_setup",
                "Calls being set up (final answer not yet acknowledged), by trunk; capped by limits.maxCallsInSetup or --max-calls-in-setup.",
                &["trunk"],
            ),
            source_shedding: cv(
                "trunkgate_edge_source_shedding_total",
                "Episodes of a carrier-side source sending more than --source-rate datagrams a second (beyond the burst): its excess is dropped, nothing is blocked; one per episode (a source shedding again within 10 s is the same episode), by side.",
                &["side"],
            ),
            refusal_records_suppressed: counter(
                "trunkgate_edge_refusal_records_suppressed_total",
                "Refused INVITEs whose refusal record was not written: more than 50 a second per worker (the refusals themselves count in trunkgate_edge_refusals_total and trunkgate_edge_acl_drops_total).",
            ),
            auth_uri_differs: counter(
                "trunkgate_edge_auth_uri_differs_total",
                "Digest answers accepted whose uri is not the Request-URI (sipp's sip:HOST:PORT, a proxy that rewrote the Request-URI after the UA signed): the response verified over the uri it names.",
            ),
            source_dropped: counter(
                "trunkgate_edge_source_rate_dropped_total",
                "Carrier-side datagrams dropped unanswered because their source was over --source-rate (its excess; datagrams continuing its calls have a budget four times larger).",
            ),
            kernel_fast_path: gv(
                "trunkgate_edge_kernel_fast_path",
                "1 for the state of the RTP fast path in the kernel (--kernel-fast-path): on, off (not asked for), not_built (no clang when the edge was built), load (the kernel refused the program: CAP_BPF and CAP_NET_ADMIN?), attach (an interface refused it); pinned, also 1 with on: its map and attachments are pinned in bpffs (--kernel-fast-path-pin), so streams keep forwarding while the edge restarts.",
                &["state"],
            ),
            media_kernel_forwarded: cv(
                "trunkgate_edge_media_kernel_packets_total",
                "RTP packets of established streams the kernel fast path forwarded (counted when a stream direction is taken back from it: a new SDP, another SSRC, the call's end), by what: forwarded, installs (stream directions handed to the kernel).",
                &["what"],
            ),
            kernel_drops: cv(
                "trunkgate_edge_kernel_receive_drops_total",
                "UDP datagrams the kernel dropped on the edge's sockets before they were read (receive buffer full), by socket: sip_public, sip_internal, rtp. Read from /proc/net/udp every 5 s.",
                &["socket"],
            ),
            auth_blocks: cv(
                "trunkgate_edge_auth_blocks_total",
                "Digest lockouts begun after --auth-max-failures failures, by scope: source (the address that failed; only that address is blocked). Attempts refused while slowed down or blocked count in trunkgate_edge_auth_failures_total{reason=throttled|blocked}.",
                &["scope"],
            ),
            tcp_refused: cv(
                "trunkgate_edge_tcp_refused_total",
                "TCP connections closed at accept, by side and reason: acl (source in no trunk's allowedCidrs, or on the platform side outside --platform-cidrs), tls_handshake_rate (a TLS listener's source over --tls-handshake-rate), source_cap (--tcp-max-per-source), total_cap (--tcp-max-connections), accept_error (e.g. out of file descriptors; the accept loop backs off).",
                &["side", "reason"],
            ),
            tcp_closed: cv(
                "trunkgate_edge_tcp_closed_total",
                "TCP connections the edge closed or saw closed, by side and reason: idle (--tcp-idle-seconds), incomplete (a message not whole within --tcp-message-seconds), framing, oversize, peer.",
                &["side", "reason"],
            ),
            tls_handshake_failures: cv(
                "trunkgate_edge_tls_handshake_failures_total",
                "TLS handshakes that failed, by side, direction (accepted: a peer connected to the edge; opened: the edge connected to a target) and reason: timeout (--tls-handshake-seconds), not_tls (plaintext on the TLS port), certificate (the peer's did not verify), certificate_refused (the peer refused the edge's), incompatible, alert, protocol, peer_closed, io.",
                &["side", "direction", "reason"],
            ),
            tls_reloads: cv(
                "trunkgate_edge_tls_reloads_total",
                "Times the TLS certificate, key or CA files changed and were read again, by result: ok, or error (the material in use stays).",
                &["result"],
            ),
            tcp_connections: {
                let g = IntGauge::new(
                    "trunkgate_edge_tcp_connections",
                    "SIP-over-TCP connections held now, accepted and opened.",
                )
                .expect("static metric definition");
                registry
                    .register(Box::new(g.clone()))
                    .expect("registered once");
                g
            },
            carrier_challenges: cv(
                "trunkgate_edge_carrier_challenges_total",
                "Digest challenges (401/407) from carriers to requests the edge sent after the initial INVITE, by trunk, method and result: answered, refused (challenged again after credentials: wrong username or password), no_credentials (the trunk has no outbound.auth), unusable.",
                &["trunk", "method", "result"],
            ),
            media_dropped: cv(
                "trunkgate_edge_media_packets_dropped_total",
                "RTP/RTCP datagrams the relay did not forward, by reason: unexpected_source (a source that may not latch: not the latched one nor, before latching, the SDP's IP; with media.behindNat also not in the side's allow-list or the signalling address, or one that tried to take over a latch still in use), unconfirmed_destination (held back from an SDP address that may not be sent to yet: outside the side's allow-list and not heard from, or 500 sent to a peer that has sent nothing back), not_forwarded (the other side is on hold, has no address yet, the send failed, or the datagram was too large); on SRTP carrier legs srtp_auth (authentication tag did not verify), srtp_replay (a packet index seen before or behind the replay window), srtp_ssrc_limit (more SSRCs than a stream may carry), srtp_malformed (too short to be SRTP).",
                &["reason"],
            ),
            media_timeouts: cv(
                "trunkgate_edge_media_timeouts_total",
                "Answered calls ended because no RTP came for --media-timeout, by trunk.",
                &["trunk"],
            ),
            media_mos: hv(
                &registry,
                "trunkgate_edge_media_mos",
                "Estimated MOS per stream direction at call end (simplified ITU-T G.107 E-model).",
                vec![1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, 4.6],
            ),
            media_loss: hv(
                &registry,
                "trunkgate_edge_media_loss_ratio",
                "Share of RTP packets lost per stream direction at call end (from sequence gaps).",
                vec![0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
            ),
            media_jitter: hv(
                &registry,
                "trunkgate_edge_media_jitter_seconds",
                "RFC 3550 interarrival jitter per stream direction at call end.",
                vec![0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2],
            ),
            draining,
            options_answered,
            registry,
        }
    }
}

/// The counters every message touches, resolved once per worker: a labelled lookup hashes its
/// labels and takes a lock each time.
pub struct Hot {
    /// `[side][server, client]`, side as [`crate::call::Side::index`].
    pub transactions: [[IntCounter; 2]; 2],
    pub retransmissions: [IntCounter; 2],
    pub handoffs_ok: IntCounter,
}

impl Metrics {
    pub fn hot(&self) -> Hot {
        let sides = ["public", "internal"];
        Hot {
            transactions: sides.map(|s| {
                ["server", "client"].map(|r| self.transactions.with_label_values(&[s, r]))
            }),
            retransmissions: sides.map(|s| self.retransmissions.with_label_values(&[s])),
            handoffs_ok: self.handoffs.with_label_values(&["ok"]),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn hv(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> prometheus::HistogramVec {
    let h = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(name, help).buckets(buckets),
        &["trunk", "direction"],
    )
    .expect("static metric definition");
    registry
        .register(Box::new(h.clone()))
        .expect("registered once");
    h
}

/// `1xx` .. `6xx` for a status code.
pub fn code_class(code: u16) -> &'static str {
    match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "6xx",
    }
}
