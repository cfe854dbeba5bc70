//! Call detail records: one JSON object per finished call on stdout.

use std::io::Write;
use std::time::SystemTime;

use serde::Serialize;

use crate::call::Call;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    trunk: &'a str,
    direction: &'static str,
    caller: Option<String>,
    callee: String,
    start: String,
    answer: Option<String>,
    end: String,
    duration_seconds: f64,
    final_status: u16,
    ended_by: Option<&'static str>,
    carrier_call_id: &'a str,
    platform_call_id: &'a str,
    /// How each leg's signalling travelled: udp, tcp or tls.
    carrier_transport: String,
    platform_transport: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    media: Vec<MediaRecord>,
    /// `edge_lost`: the edge of the call died and another one ended it.
    #[serde(skip_serializing_if = "Option::is_none")]
    end_reason: Option<&'static str>,
    /// The call was restored by a restarted edge from its checkpoint.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    recovered: bool,
    /// Seconds billed: by the rate's increments, else the talk time rounded up.
    billed_seconds: u64,
    /// What the call cost by its trunk's rate for the called number (null: no rate).
    cost: Option<String>,
    currency: Option<&'a str>,
    /// An outbound call's INVITE attempts in order: trunk, target, outcome, post-dial delay, why
    /// chosen.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    attempts: &'a [crate::call::account::Tried],
}

/// One stream direction's quality at call end.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MediaRecord {
    stream: usize,
    from: &'static str,
    packets: u64,
    bytes: u64,
    lost: u64,
    jitter_ms: f64,
    mos: Option<f64>,
    /// Datagrams dropped because they came from an unexpected address, and the first such one.
    #[serde(skip_serializing_if = "is_zero")]
    unexpected_source_packets: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    unexpected_source: Option<String>,
    /// Datagrams held back instead of sent to the other side's SDP address, which may not be
    /// sent to before it is heard from (outside its allow-list, or its unheard budget spent),
    /// and that address: the relay does not reflect media at addresses that never asked.
    #[serde(skip_serializing_if = "is_zero")]
    held_packets: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    held_destination: Option<String>,
    /// Why `mos` is null, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    no_media_reason: Option<String>,
    /// The SRTP suite these packets came in when the edge decrypted them (the carrier's, on a
    /// trunk with `media.srtp`); absent for plain RTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    srtp: Option<&'static str>,
    /// SRTP/SRTCP packets refused: failed authentication, replays, too many SSRCs.
    #[serde(skip_serializing_if = "is_zero")]
    srtp_rejected_packets: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Why a stream direction has no quality figures: nothing came, or it came from elsewhere.
fn no_media_reason(s: &trunkgate_media::StreamStats) -> Option<String> {
    if s.packets > 0 {
        return None;
    }
    let expected = s
        .latched
        .map_or_else(|| "no address yet".to_string(), |a| a.to_string());
    Some(match s.first_foreign {
        Some(src) => format!(
            "RTP came only from unexpected address {src} (expected {expected}); with media.behindNat a source in the trunk's allowedCidrs latches"
        ),
        None => format!("no RTP arrived (expected from {expected})"),
    })
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Writes the call's record as one line.
pub fn write(c: &Call) {
    let end = c.ended.unwrap_or_else(SystemTime::now);
    let (carrier, platform) = match c.direction {
        crate::call::Direction::Inbound => (&c.a, &c.b),
        crate::call::Direction::Outbound => (&c.b, &c.a),
    };
    let duration = c
        .answered
        .and_then(|a| end.duration_since(a).ok())
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0);
    let record = Record {
        kind: "cdr",
        trunk: c.trunk_id(),
        direction: c.direction.label(),
        caller: c.caller.map(|n| n.to_string()),
        callee: c.callee.to_string(),
        start: rfc3339(c.started),
        answer: c.answered.map(rfc3339),
        end: rfc3339(end),
        duration_seconds: duration,
        final_status: c.final_code.unwrap_or(500),
        ended_by: c.ended_by,
        recovered: c.recovered,
        end_reason: (c.ended_by == Some("edge_lost")).then_some("edge_lost"),
        carrier_call_id: &carrier.call_id,
        platform_call_id: &platform.call_id,
        carrier_transport: carrier.peer.transport().to_ascii_lowercase(),
        platform_transport: platform.peer.transport().to_ascii_lowercase(),
        billed_seconds: c.charge.as_ref().map_or(0, |ch| ch.billed_seconds),
        cost: c
            .charge
            .as_ref()
            .and_then(|ch| ch.cost.as_ref())
            .map(|(m, _)| trunkgate_crds::rate::format_micros(*m)),
        currency: c
            .charge
            .as_ref()
            .and_then(|ch| ch.cost.as_ref())
            .map(|(_, cur)| cur.as_str()),
        attempts: &c.tried,
        media: c
            .media_stats
            .iter()
            .map(|s| MediaRecord {
                stream: s.stream,
                from: s.from.party(),
                packets: s.packets,
                bytes: s.bytes,
                lost: s.lost,
                jitter_ms: (s.jitter_ms * 100.0).round() / 100.0,
                mos: s.mos.map(|m| (m * 100.0).round() / 100.0),
                unexpected_source_packets: s.foreign,
                unexpected_source: s.first_foreign.map(|a| a.to_string()),
                held_packets: s.held,
                held_destination: s.held_destination.map(|a| a.to_string()),
                no_media_reason: no_media_reason(s),
                srtp: s.srtp.map(|suite| suite.name()),
                srtp_rejected_packets: s.srtp_rejected,
            })
            .collect(),
    };
    if let Ok(line) = serde_json::to_string(&record) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}

/// A call attempt the edge refused before it became a call: what a carrier's ticket ("my call
/// at 10:42 got 403") is matched against.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Refusal<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    /// `carrier` or `platform`: who sent the request.
    from: &'static str,
    source: String,
    method: &'a str,
    call_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trunk: Option<&'a str>,
    status: u16,
    reason: &'a str,
}

/// What a refusal record says.
pub struct RefusalRecord<'a> {
    pub from: &'static str,
    pub source: std::net::SocketAddr,
    pub method: &'a str,
    pub call_id: &'a str,
    /// The trunk, when the refusal came after the trunk was known.
    pub trunk: Option<&'a str>,
    pub status: u16,
    pub reason: &'a str,
}

/// Writes a refusal record as one line.
pub fn write_refusal(r: RefusalRecord<'_>) {
    let record = Refusal {
        kind: "refusal",
        time: rfc3339(SystemTime::now()),
        from: r.from,
        source: r.source.to_string(),
        method: r.method,
        call_id: r.call_id,
        trunk: r.trunk,
        status: r.status,
        reason: r.reason,
    };
    if let Ok(line) = serde_json::to_string(&record) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}
