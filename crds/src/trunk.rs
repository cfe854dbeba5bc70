//! `CarrierTrunk`: one carrier's SIP trunk — who may call us, where we call them, and the rules
//! in between.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A carrier's SIP trunk: the carrier's addresses that may send us calls, how numbers arrive,
/// where inbound calls go on the platform, the carrier targets for outbound calls, the caller-ID
/// policy and the limits.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "trunkgate.io",
    version = "v1alpha1",
    kind = "CarrierTrunk",
    namespaced,
    status = "CarrierTrunkStatus",
    shortname = "ctrunk",
    category = "trunkgate",
    doc = "A carrier's SIP trunk connected through the Trunkgate edge.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Targets",
        type_ = "string",
        json_path = ".status.targets.summary"
    ),
    printcolumn(name = "ASR", type_ = "string", json_path = ".status.quality.asr"),
    printcolumn(name = "MOS", type_ = "string", json_path = ".status.quality.mos"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CarrierTrunkSpec {
    /// Calls from the carrier to the platform (the carrier's "origination").
    pub inbound: Inbound,
    /// Calls from the platform to the carrier (the carrier's "termination"). Without it the trunk
    /// only receives calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<Outbound>,
    /// Destination prefixes this trunk serves for outbound calls, used when neither the
    /// X-Trunkgate-Trunk header nor the caller's number selects a trunk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub routes: Vec<Route>,
    /// Capacity limits enforced by every edge pod for this trunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Media handling for calls over this trunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
    /// SIP over TLS with this carrier: which CA its certificates are checked against, the name
    /// its servers' certificates carry, and the client certificate names that identify it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TrunkTls>,
}

/// TLS with one carrier (RFC 3261 §26.2, RFC 5922). The edge's own certificate and its TLS
/// listeners are the edge's flags (`--tls-cert`, `--public-sips`, ...); this is what the edge
/// expects of the carrier's.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrunkTls {
    /// A Secret in the trunk's namespace whose `ca.crt` key holds the CA bundle (PEM) the
    /// carrier's certificates are checked against: its servers' when the edge dials a `sips:`
    /// or `;transport=tls` target, its clients' with `clientNames`. Unset: the edge's
    /// `--tls-ca`, else the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretRef>,
    /// The name (DNS name or IP address) the carrier's server certificate must carry, instead
    /// of the target's host: for targets given by address whose certificate names the SBC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
    /// Mutual TLS inbound: calls from this trunk must come over TLS with a client certificate,
    /// checked against the CA bundle, that carries one of these DNS names or IP addresses;
    /// others are refused 403. Among trunks that share `allowedCidrs`, the certificate picks
    /// the trunk. The edge asks carriers for a client certificate only while some trunk sets
    /// this.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub client_names: Vec<String>,
}

/// How the carrier reaches us.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Inbound {
    /// The carrier's signalling addresses in CIDR form (`203.0.113.0/28`, `2001:db8::/64`).
    /// SIP from anywhere else is dropped (default deny).
    #[x_kube(validation = Rule::new("size(self) > 0").message("allowedCidrs must list at least one carrier address"))]
    #[schemars(length(max = 256), inner(length(max = 64)))]
    pub allowed_cidrs: Vec<String>,
    /// Request-URI hosts that belong to this trunk, to tell apart tenants whose calls come from
    /// the same carrier addresses. Empty means any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub hostnames: Vec<String>,
    /// Digest authentication the carrier must pass on top of the address check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<InboundAuth>,
    /// How the carrier writes numbers that are not E.164, to normalise them. Without it only
    /// E.164 numbers (`+` and digits) are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_format: Option<NumberFormat>,
    /// Where inbound calls are delivered on the platform: a SIP URI such as
    /// `sip:voice-platform.acme.svc.cluster.local:5060`.
    #[schemars(length(max = 512))]
    pub destination: String,
}

/// Digest authentication (RFC 3261 §22, RFC 8760) that the carrier must answer.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InboundAuth {
    /// The realm offered in our challenges.
    pub realm: String,
    /// A Secret in the trunk's namespace with `username` and `password` keys.
    pub secret_ref: SecretRef,
    /// Digest algorithms offered, most preferred first: one challenge each, in this order
    /// (RFC 8760 §2.4), and an answer in any other is refused. Default `[MD5]`, the one every
    /// carrier UA answers today (Kamailio `uac_auth`, sipp, baresip take only MD5, and some fail
    /// on a SHA-256 challenge placed before it); add `SHA-256` for carriers that do RFC 8760.
    #[serde(default = "default_algorithms")]
    #[schemars(length(min = 1, max = 2), extend("x-kubernetes-list-type" = "set"))]
    pub algorithms: Vec<DigestAlgorithm>,
}

/// A digest algorithm (RFC 7616 §3.3, RFC 8760 §2).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    #[serde(rename = "MD5")]
    Md5,
    #[serde(rename = "SHA-256")]
    Sha256,
}

fn default_algorithms() -> Vec<DigestAlgorithm> {
    vec![DigestAlgorithm::Md5]
}

/// A Secret in the same namespace as the object that names it.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    pub name: String,
}

/// National dialling conventions of the carrier, for normalising numbers to E.164.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NumberFormat {
    /// Country calling code without `+`, e.g. `64`.
    #[x_kube(validation = Rule::new("self.matches('^[1-9][0-9]{0,2}$')").message("countryCode is 1 to 3 digits without '+'"))]
    pub country_code: String,
    /// Trunk prefix of national numbers, e.g. `0`. Empty when the country has none.
    #[serde(default = "default_national_prefix")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{0,4}$')").message("nationalPrefix is up to 4 digits"))]
    pub national_prefix: String,
    /// International call prefix, e.g. `00` or `011`.
    #[serde(default = "default_international_prefix")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{0,4}$')").message("internationalPrefix is up to 4 digits"))]
    pub international_prefix: String,
}

fn default_national_prefix() -> String {
    "0".into()
}
fn default_international_prefix() -> String {
    "00".into()
}

/// How we reach the carrier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Outbound {
    /// The carrier's SIP servers, tried by priority (lowest first) and by weight within one
    /// priority, with failover on timeout, transport error, 408 and 5xx.
    #[x_kube(validation = Rule::new("size(self) > 0").message("outbound.targets must list at least one target"))]
    #[schemars(length(max = 32))]
    pub targets: Vec<Target>,
    /// Credentials for answering the carrier's digest challenges (401/407).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<OutboundAuth>,
    /// What to do with a caller ID (A-number) that this trunk may not present.
    #[serde(default)]
    pub caller_id_policy: CallerIdPolicy,
    /// OPTIONS health probes of the targets (RFC 3261 §11). Without it targets are not probed.
    /// With it, a target that fails `failureThreshold` probes in a row (no answer, transport
    /// error or 503) is tried only after the targets that answer, until it answers again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Register with the carrier (RFC 3261 §10), for carriers that deliver calls only to a
    /// registered contact. One edge pod of the fleet holds the registration (the fleet's store
    /// elects it); calls to the registered contact are this trunk's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,
    /// Demote targets whose recent calls go badly: each target's last 15 minutes of attempts
    /// (ASR, failures, post-dial delay) are judged against these thresholds, and a target below
    /// `warning` is tried after those that meet it, one below `critical` after those. A small
    /// share of calls (`probePercent`) still tries a demoted target in its usual place, so it
    /// comes back once its figures recover. Without it targets go by priority and weight alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// How this tenant's outbound calls choose among the trunks that may carry them (the
    /// trunk owning a BYOC caller ID, the carriers a platform number is verified with, the
    /// routes matching the called number): `Priority` (the routes' prefix length and
    /// priority; the default), `LeastCost` (the cheapest rate for the called number first)
    /// or `Quality` (the best recent answer ratio first, cost breaking ties). It is the
    /// namespace's policy: every outbound trunk of a namespace that states one must state the
    /// same. Degraded trunks (`quality`) go after the others whatever the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
}

/// How a tenant's outbound calls order the trunks that may carry them.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Selection {
    /// Longest matching route prefix first, then the route's priority.
    #[default]
    Priority,
    /// The lowest rate (`routes[].rate`) for the called number first; trunks without a rate
    /// for it after those with one.
    LeastCost,
    /// The highest answer-seizure ratio over the last 15 minutes first (a trunk with fewer
    /// attempts than `quality.minSamples` counts as 50 %), the lower rate breaking ties.
    Quality,
}

/// Quality thresholds of a trunk's targets.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Quality {
    /// Attempts a target's window must hold before its figures judge it (default 10).
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 1, max = 100000))]
    pub min_samples: u32,
    /// A target missing any of these is tried after the targets that meet them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<QualityThresholds>,
    /// A target missing any of these is tried last (before targets probes found down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<QualityThresholds>,
    /// Percent of calls that still try a demoted target in its usual place (default 5).
    #[serde(default = "default_probe_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub probe_percent: u32,
}

/// What a target's recent calls must achieve.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct QualityThresholds {
    /// Lowest answer-seizure ratio (answered / attempts), in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub min_asr_percent: Option<u32>,
    /// Highest share of attempts that time out, cannot connect or get 5xx, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_failure_percent: Option<u32>,
    /// Longest mean post-dial delay (INVITE to the first ringing or the answer), in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub max_pdd_seconds: Option<u32>,
}

fn default_min_samples() -> u32 {
    crate::quality::DEFAULT_MIN_SAMPLES
}

fn default_probe_percent() -> u32 {
    5
}

/// A registration with the carrier's registrar.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// The registrar (a SIP URI or host). Default: the first outbound target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub registrar: Option<String>,
    /// The address of record registered (`sip:USER@DOMAIN`). Default: the username of
    /// `outbound.auth`'s Secret at the registrar's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub aor: Option<String>,
    /// The binding's lifetime asked for, in seconds (default 3600); the edge refreshes it at
    /// half the lifetime the registrar grants.
    #[serde(default = "default_expires")]
    #[schemars(range(min = 60, max = 86400))]
    pub expires_seconds: u32,
    /// Where the carrier puts the called number on calls to the registered contact: `To` (the
    /// default; the Request-URI then names the contact) or `RequestUri`.
    #[serde(default)]
    pub called_number: CalledNumberFrom,
}

fn default_expires() -> u32 {
    3600
}

/// Where the called number of a call to a registered contact is read.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum CalledNumberFrom {
    /// The user part of the To header.
    #[default]
    To,
    /// The user part of the Request-URI.
    RequestUri,
}

/// One carrier SIP server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// A SIP URI (`sip:sbc1.carrier.example:5060;transport=udp`, `sips:host:5061`) or a bare host
    /// name or IP address. A host name without a port is resolved by RFC 3263 (NAPTR, SRV, A/AAAA).
    #[schemars(length(max = 512))]
    pub uri: String,
    /// Transport to use when the URI does not say; default UDP (TLS for sips:).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    /// Lower is tried first (1..65535).
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("priority must be between 1 and 65535"))]
    pub priority: u32,
    /// Share of calls among targets of the same priority (0..65535); as in RFC 2782, a target
    /// of weight 0 beside weighted ones is tried first only rarely.
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 65535").message("weight must be between 0 and 65535"))]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// SIP transport protocol.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// SIP over UDP.
    #[serde(rename = "udp")]
    Udp,
    /// SIP over TCP.
    #[serde(rename = "tcp")]
    Tcp,
    /// SIP over TLS.
    #[serde(rename = "tls")]
    Tls,
}

/// Credentials for answering the carrier's challenges.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutboundAuth {
    /// A Secret in the trunk's namespace with `username` and `password` keys (and optionally
    /// `realm`).
    pub secret_ref: SecretRef,
    /// The carrier's digest realm. Needed (here or as the Secret's `realm` key) because only
    /// digest hashes for this realm, never the password, reach the edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
}

/// Caller-ID (A-number) policy for outbound calls.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum CallerIdPolicy {
    /// Refuse (403) a call whose A-number is not a BYOC number of this trunk or a Platform number
    /// verified for it.
    #[default]
    Strict,
    /// Send such calls with `anonymous` as caller and `Privacy: id` (RFC 3323).
    Anonymize,
    /// Send any A-number unchanged. For labs only: carriers reject or bill spoofed numbers.
    PassThrough,
}

/// OPTIONS health probes. Any final answer but 503 counts as alive (carriers often answer
/// OPTIONS with 403 or 405).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Seconds between probes of each target (default 30).
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
    /// Consecutive failed probes before a target is taken out of rotation (default 3).
    #[serde(default = "default_failures")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
}

fn default_interval() -> u32 {
    30
}
fn default_failures() -> u32 {
    3
}

/// An outbound destination prefix.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// E.164 prefix such as `+64`; `+` alone matches everything.
    #[schemars(length(max = 16))]
    pub prefix: String,
    /// Lower wins among trunks whose prefixes are equally long (default 100).
    #[serde(default = "default_route_priority")]
    #[schemars(range(min = 0, max = 65535))]
    pub priority: u32,
    /// What the carrier charges for calls to numbers under this prefix. A call is rated by the
    /// longest prefix of its trunk that has a rate; its record carries `cost`, `currency` and
    /// `billedSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
}

/// A carrier's price for calls to a prefix, as its rate deck states it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    /// Price per minute as a decimal string with up to 6 decimals, e.g. `"0.0125"`.
    #[schemars(length(min = 1, max = 16))]
    pub per_minute: String,
    /// ISO 4217 currency code, e.g. `USD`.
    #[schemars(length(min = 3, max = 3))]
    pub currency: String,
    /// Billing increments `first/next` in seconds: an answered call is billed at least `first`
    /// seconds, then in steps of `next` (default `60/60`; `1/1` is per-second billing,
    /// `30/6` a 30-second minimum then 6-second steps).
    #[serde(default = "default_increments")]
    #[schemars(length(min = 3, max = 9))]
    pub increments: String,
    /// Charged once per answered call, on top of the minutes (decimal string, up to 6
    /// decimals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16))]
    pub connection_fee: Option<String>,
}

fn default_increments() -> String {
    "60/60".into()
}

fn default_route_priority() -> u32 {
    100
}

/// Capacity limits.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Calls up at once over this trunk, both directions; more are refused with 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent_calls: Option<u32>,
    /// New calls per second over this trunk, both directions; more are refused with 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_calls_per_second: Option<u32>,
    /// Calls of this trunk being set up at once (INVITE received, final answer not yet
    /// acknowledged); more are refused with 503. Unset: the edge's `--max-calls-in-setup`. Bounds
    /// what a flood of INVITEs that are never ACKed can hold (media ports, memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_calls_in_setup: Option<u32>,
}

/// Media handling.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Media {
    /// Relay RTP through the edge (default true). When false the SDP passes untouched.
    #[serde(default = "yes")]
    pub relay: bool,
    /// Codecs allowed on this trunk by RTP/SDP encoding name (`PCMU`, `PCMA`, `G722`, `opus`).
    /// `telephone-event` is always kept. Empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 32)))]
    pub codecs: Vec<String>,
    /// Latch RTP to the first source seen even when it is not the address in the SDP, for
    /// carriers behind NAT.
    #[serde(default)]
    pub behind_nat: bool,
    /// SRTP on the carrier leg, keyed with SDES (`a=crypto`, RFC 4568): the edge decrypts what
    /// the carrier sends and encrypts what goes to it; the platform leg stays plain RTP.
    /// Suites: AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM. Needs
    /// `relay: true`. Pair it with SIP over TLS, or the keys cross the network in clear.
    #[serde(default)]
    pub srtp: SrtpPolicy,
}

fn yes() -> bool {
    true
}

impl Default for Media {
    fn default() -> Self {
        Self {
            relay: true,
            codecs: Vec::new(),
            behind_nat: false,
            srtp: SrtpPolicy::default(),
        }
    }
}

/// SRTP policy on the carrier leg.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum SrtpPolicy {
    /// The edge does not touch keys: plain RTP is relayed, and an SRTP call passes end to end
    /// between carrier and platform as it is.
    #[default]
    Disabled,
    /// SRTP when the carrier offers it, RTP otherwise; the edge's own offers carry `a=crypto`
    /// on RTP/AVP (best-effort SRTP) and take a plain answer.
    Optional,
    /// Only SRTP: a carrier offer without a usable `a=crypto` is refused 488, the edge offers
    /// RTP/SAVP and a plain answer ends the call.
    Required,
}

/// Observed state of a CarrierTrunk.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CarrierTrunkStatus {
    /// `Accepted`, `ResolvedRefs`, `Programmed` and `Ready`, with reasons.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// What the carrier must configure to reach us and to accept our calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<EdgeEndpoint>,
    /// Outbound target health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetHealth>,
    /// Version of the edge snapshot that includes this generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_version: Option<String>,
    /// The registration with the carrier (`outbound.registration`), as the edge pods report it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<RegistrationStatus>,
    /// How the carrier's outbound targets did over the last 15 minutes (the fleet's figures
    /// with a shared store, else the edge pods' summed), once calls went through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<TrunkQuality>,
}

/// A trunk's recent call quality, from its outbound attempts over the last 15 minutes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrunkQuality {
    /// INVITE attempts to its targets.
    pub attempts: u64,
    /// Answer-seizure ratio: answered attempts over attempts, as `57%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asr: Option<String>,
    /// Attempts the network completed (answered, or refused by the callee: 486, 600, 603)
    /// over attempts, as `81%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ccr: Option<String>,
    /// Mean talk time of answered calls, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acd_seconds: Option<u64>,
    /// Mean post-dial delay (INVITE to the first ringing or the answer), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdd_milliseconds: Option<u64>,
    /// Mean MOS of the answered calls' relayed media (1 to 5), as `4.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mos: Option<String>,
    /// Targets below their `outbound.quality` thresholds now (tried after the others).
    pub demoted_targets: u32,
}

/// Where a trunk's registration stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationStatus {
    /// Whether the registrar holds a binding now.
    pub registered: bool,
    /// When the binding runs out (RFC 3339), while registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The edge pod that holds the registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registrant: Option<String>,
    /// The last failure (status and reason, or why no answer came).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The edge as the carrier sees it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EdgeEndpoint {
    /// The FQDN the carrier sends calls to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    /// Addresses our SIP and RTP come from: the carrier's allow-list of us.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// Health of the outbound targets.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetHealth {
    /// Targets answering health probes.
    pub healthy: u32,
    /// Targets configured.
    pub total: u32,
    /// `healthy/total`, for the printer column.
    pub summary: String,
}
