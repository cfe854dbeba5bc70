//! Command-line flags, each also read from a `TRUNKGATE_*` environment variable, and the pure
//! functions that turn them into worker and port layouts.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// `trunkgate-edge`: the SIP edge between carriers and the platform.
#[derive(Parser, Debug, Clone)]
#[command(name = "trunkgate-edge", version, about)]
pub struct Settings {
    /// Standalone mode: a folder of CarrierTrunk, NumberOwnership and Secret YAML, reloaded when
    /// a file changes.
    #[arg(
        help_heading = "Configuration",
        long,
        env = "TRUNKGATE_CONFIG",
        conflicts_with = "snapshot_secret"
    )]
    pub config: Option<PathBuf>,
    /// Cluster mode: the operator's snapshot Secret, as NAMESPACE/NAME.
    #[arg(
        help_heading = "Configuration",
        long,
        env = "TRUNKGATE_SNAPSHOT_SECRET"
    )]
    pub snapshot_secret: Option<String>,
    /// Carrier-side SIP address (UDP and TCP): ADDR:PORT, or NETWORK:PORT (e.g.
    /// `203.0.113.0/24:5060`) for this host's own address in that network (a node whose public
    /// and private interfaces differ).
    #[arg(help_heading = "Listeners", long, env = "TRUNKGATE_PUBLIC_SIP", default_value = "0.0.0.0:5060", value_parser = parse_bind)]
    pub public_sip: SocketAddr,
    /// Platform-side SIP address (UDP and TCP).
    #[arg(
        help_heading = "Listeners",
        long,
        env = "TRUNKGATE_INTERNAL_SIP",
        default_value = "0.0.0.0:5080"
    )]
    pub internal_sip: SocketAddr,
    /// The platform's allow-list: platform-side SIP (and RTP) is taken only from these networks,
    /// comma-separated `CIDR` or `TENANT=CIDR`; a tagged entry's sources place calls over that
    /// namespace's trunks only. Everything else on the platform port is dropped unanswered. The
    /// chart sets the cluster's pod and Service networks.
    #[arg(
        help_heading = "Who may talk to the edge",
        long,
        env = "TRUNKGATE_PLATFORM_CIDRS",
        value_delimiter = ',',
        default_value = "127.0.0.0/8,::1/128"
    )]
    pub platform_cidrs: Vec<crate::guard::platform::PlatformNet>,
    /// Who may read the admin endpoint's /metrics and /snapshot (comma-separated CIDRs; /healthz
    /// and /readyz answer anyone, for the kubelet's probes). Default: --platform-cidrs.
    #[arg(
        help_heading = "Who may talk to the edge",
        long,
        env = "TRUNKGATE_ADMIN_CIDRS",
        value_delimiter = ','
    )]
    pub admin_cidrs: Vec<crate::guard::platform::PlatformNet>,
    /// Carrier-side SIP over TLS (RFC 3261 §26; usually port 5061). Needs --tls-cert and
    /// --tls-key. ADDR:PORT or NETWORK:PORT, as --public-sip.
    #[arg(help_heading = "Listeners", long, env = "TRUNKGATE_PUBLIC_SIPS", requires_all = ["tls_cert", "tls_key"], value_parser = parse_bind)]
    pub public_sips: Option<SocketAddr>,
    /// Platform-side SIP over TLS. Needs --tls-cert and --tls-key.
    #[arg(help_heading = "Listeners", long, env = "TRUNKGATE_INTERNAL_SIPS", requires_all = ["tls_cert", "tls_key"])]
    pub internal_sips: Option<SocketAddr>,
    /// The edge's certificate chain (PEM), leaf first: `tls.crt` of a Kubernetes TLS Secret.
    /// Read again when it changes (a rotated Secret), without dropping calls.
    #[arg(
        help_heading = "TLS",
        long,
        env = "TRUNKGATE_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM): `tls.key` of a Kubernetes TLS Secret.
    #[arg(
        help_heading = "TLS",
        long,
        env = "TRUNKGATE_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that sign the carriers' and the platform's TLS certificates, for
    /// connections the edge opens. Default: the system's roots.
    #[arg(help_heading = "TLS", long, env = "TRUNKGATE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A TLS handshake must finish within this many seconds, or the connection is closed.
    #[arg(
        help_heading = "TLS",
        long,
        env = "TRUNKGATE_TLS_HANDSHAKE_SECONDS",
        default_value_t = 5
    )]
    pub tls_handshake_seconds: u64,
    /// New TLS connections a second one source address may open (a burst of twice as many
    /// passes); past it a connection is closed before its handshake, counted in
    /// `trunkgate_edge_tcp_refused_total{reason="tls_handshake_rate"}`. A carrier keeps its
    /// connections open, so this only costs a flood. 0: no limit.
    #[arg(
        help_heading = "Limits and protection",
        long,
        env = "TRUNKGATE_TLS_HANDSHAKE_RATE",
        default_value_t = 20
    )]
    pub tls_handshake_rate: u32,
    /// Address put in carrier-side SDP (defaults to the public SIP address, or the advertised IP).
    #[arg(help_heading = "Media", long, env = "TRUNKGATE_PUBLIC_MEDIA_IP")]
    pub public_media_ip: Option<IpAddr>,
    /// Address put in platform-side SDP (defaults to the internal SIP address).
    #[arg(help_heading = "Media", long, env = "TRUNKGATE_INTERNAL_MEDIA_IP")]
    pub internal_media_ip: Option<IpAddr>,
    /// RTP port range LOW-HIGH, split between the workers.
    #[arg(help_heading = "Media", long, env = "TRUNKGATE_RTP_PORTS", default_value = "20000-29999", value_parser = parse_port_range)]
    pub rtp_ports: (u16, u16),
    /// Worker threads (default, and 0: one per CPU this process may use).
    #[arg(help_heading = "Listeners", long, env = "TRUNKGATE_WORKERS")]
    pub workers: Option<usize>,
    /// Log format on stderr: `json` (one object a line, for collectors) or `text` (for a
    /// terminal).
    #[arg(help_heading = "Output", long, env = "TRUNKGATE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
    /// Admin endpoint: /metrics, /healthz, /readyz, /snapshot.
    #[arg(
        help_heading = "Listeners",
        long,
        env = "TRUNKGATE_ADMIN",
        default_value = "127.0.0.1:9091"
    )]
    pub admin: SocketAddr,
    /// Host carried in carrier-side Via, Contact and Record-Route (an FQDN or IP). Defaults to the
    /// public SIP address.
    #[arg(help_heading = "Listeners", long, env = "TRUNKGATE_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// StatefulSet mode: comma-separated public IPs; pod ordinal N (from POD_NAME) advertises the
    /// Nth.
    #[arg(
        help_heading = "Listeners",
        long,
        env = "TRUNKGATE_ADVERTISE_IP_POOL",
        value_delimiter = ','
    )]
    pub advertise_ip_pool: Vec<IpAddr>,
    /// Answer 403 to SIP from unknown sources instead of dropping it silently.
    #[arg(
        help_heading = "Who may talk to the edge",
        long,
        env = "TRUNKGATE_ACL_REPLY_403",
        default_value_t = false
    )]
    pub acl_reply_403: bool,
    /// Keep each carrier target's quality window (ASR, CCR, PDD, ACD, MOS over 15 minutes) from
    /// outbound calls' attempts, shared with the fleet through --state-store. Demotion
    /// (`outbound.quality`), the `Quality` selection, the trunkgate_edge_target_* quality
    /// gauges and `CarrierTrunk.status.quality` need it; false turns all of those off.
    #[arg(
        help_heading = "Calls",
        long,
        env = "TRUNKGATE_QUALITY_TRACKING",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub quality_tracking: bool,
    /// Seconds a new outbound INVITE waits for any answer from a carrier target before the next
    /// target is tried.
    #[arg(
        help_heading = "Calls",
        long,
        env = "TRUNKGATE_FAILOVER_SECONDS",
        default_value_t = 4.0
    )]
    pub failover_seconds: f64,
    /// Seconds a call may ring (leg B answered provisionally, no final answer) before the edge
    /// CANCELs it and answers the caller 408, so a peer that never answers cannot hold a call
    /// in set-up for ever (the role of RFC 3261 §16.6's Timer C, which is over 3 minutes).
    #[arg(
        help_heading = "Calls",
        long,
        env = "TRUNKGATE_RINGING_SECONDS",
        default_value_t = 180
    )]
    pub ringing_seconds: u64,
    /// Seconds to let calls finish after SIGTERM before exiting.
    #[arg(
        help_heading = "Calls",
        long,
        env = "TRUNKGATE_DRAIN_SECONDS",
        default_value_t = 285
    )]
    pub drain_seconds: u64,
    /// Seconds without RTP before a call is ended.
    #[arg(
        help_heading = "Media",
        long,
        env = "TRUNKGATE_MEDIA_TIMEOUT",
        default_value_t = 60
    )]
    pub media_timeout: u64,
    /// Seconds a freed RTP port pair rests before reuse, so late packets of an old call never
    /// reach a new one. Ports in use plus resting bound the call rate: a call holds two pairs
    /// for its duration plus this, so size --rtp-ports for calls/s × (duration + this) × 2.
    #[arg(
        help_heading = "Media",
        long,
        env = "TRUNKGATE_RTP_QUARANTINE_SECONDS",
        default_value_t = 5
    )]
    pub rtp_quarantine_seconds: u64,
    /// How often standalone mode checks the config folder for changes, in milliseconds.
    #[arg(
        help_heading = "Configuration",
        long,
        env = "TRUNKGATE_RELOAD_MS",
        default_value_t = 1000
    )]
    pub reload_ms: u64,
    /// Most SIP-over-TCP connections the edge holds, accepted and opened, both sides; beyond it
    /// new ones are closed at once. Lowered at start so a reserve of file descriptors stays for
    /// RTP ports, config reloads and the admin endpoint.
    #[arg(
        help_heading = "Limits and protection",
        long,
        env = "TRUNKGATE_TCP_MAX_CONNECTIONS",
        default_value_t = 4096
    )]
    pub tcp_max_connections: usize,
    /// Most TCP connections one source address may hold.
    #[arg(
        help_heading = "Limits and protection",
        long,
        env = "TRUNKGATE_TCP_MAX_PER_SOURCE",
        default_value_t = 32
    )]
    pub tcp_max_per_source: usize,
    /// A TCP connection that brings nothing for this long is closed (CRLF keep-alives count).
    #[arg(
        help_heading = "Limits and protection",
        long,
        env = "TRUNKGATE_TCP_IDLE_SECONDS",
        default_value_t = 300
    )]
    pub tcp_idle_seconds: u64,
    /// A SIP message begun on a TCP connection must be complete within this many seconds.
    #[arg(
        help_heading = "Limits and protection",
        long,
        env = "TRUNKGATE_TCP_MESSAGE_SECONDS",
        default_value_t = 10
    )]
    pub tcp_message_seconds: u64,
    /// Calls of one trunk in set-up at once (final answer not yet acknowledged), unless the
    /// trunk's limits.maxCallsInSetup says otherwise; more get 503.
    #[arg(
        help_heading = "Limits and protection",
        long,
        env = "TRUNKGATE_MAX_CALLS_IN_SETUP",
        default_value_t = 500
    )]
    pub max_calls_in_setup: u32,
    /// Calls in set-up at once from one carrier-side address, over all trunks: a flood of
    /// INVITEs that are never acknowledged from one address leaves room for the trunk's others.
    #[arg(
        help_heading = "Limits and protection",
        long,
        env = "TRUNKGATE_MAX_CALLS_IN_SETUP_PER_SOURCE",
        default_value_t = 100
    )]
    pub max_calls_in_setup_per_source: u32,
    /// New requests a second a carrier-side source address may send at least (a burst of twice
    /// as many passes): a source whose trunks set limits.maxCallsPerSecond gets twice their sum
    /// when that is more. Past it the excess is dropped unanswered, the role Kamailio's `pike`
    /// plays.
    /// Nothing is blocked (a UDP source can be forged): the source is served again as soon as
    /// it slows down, and what continues its calls has a budget four times larger. 0: no limit.
    #[arg(
        help_heading = "Limits and protection",
        long,
        env = "TRUNKGATE_SOURCE_RATE",
        default_value_t = 2000
    )]
    pub source_rate: u32,
    /// No longer used: a source over --source-rate loses only its excess, it is not blocked.
    /// Accepted so that existing command lines still start.
    #[arg(
        help_heading = "Limits and protection",
        long,
        env = "TRUNKGATE_SOURCE_BLOCK_SECONDS",
        hide = true
    )]
    pub source_block_seconds: Option<u64>,
    /// Drop, in the kernel, carrier-side UDP from IPv4 addresses the edge never heard of (no
    /// allowedCidrs entry of any snapshot loaded, no outbound target): a flood from them then
    /// never wakes a worker. Userspace checks everything either way.
    #[arg(help_heading = "Limits and protection", long, env = "TRUNKGATE_KERNEL_PREFILTER", default_value_t = true, action = clap::ArgAction::Set)]
    pub kernel_prefilter: bool,
    /// Forward established RTP streams in the kernel: a TC program on the ingress of these
    /// interfaces (comma-separated, e.g. `eth0` or `lo`) rewrites and redirects their packets
    /// without a socket read; anything else stays with the userspace relay. Needs CAP_BPF and
    /// CAP_NET_ADMIN; without them the edge says so once and relays in userspace. Empty: off.
    #[arg(
        help_heading = "Kernel",
        long,
        env = "TRUNKGATE_KERNEL_FAST_PATH",
        value_delimiter = ',',
        default_value = ""
    )]
    pub kernel_fast_path: Vec<String>,
    /// A folder on bpffs where an edge that restores its calls (--state-store or --state-dir)
    /// pins the fast path's stream map and attachments, in a subfolder of its own: a killed
    /// edge's established streams keep forwarding in the kernel until it is back. Empty: no
    /// pinning (streams pause while the edge restarts).
    #[arg(
        help_heading = "Kernel",
        long,
        env = "TRUNKGATE_KERNEL_FAST_PATH_PIN",
        default_value = "/sys/fs/bpf/trunkgate"
    )]
    pub kernel_fast_path_pin: String,
    /// Carriers get the full reason in every refusal's Warning (which number is not served,
    /// which trunk, why credentials failed). Off by default: that detail helps an attacker
    /// enumerate numbers and usernames; it is always in the log and the metrics. For labs.
    #[arg(
        help_heading = "Who may talk to the edge",
        long,
        env = "TRUNKGATE_DETAILED_WARNINGS",
        default_value_t = false
    )]
    pub detailed_warnings: bool,
    /// Digest failures per source address before that address is blocked; after the
    /// third, each try must wait twice as long as the one before (1 s up to 32 s).
    #[arg(
        help_heading = "Limits and protection",
        long,
        env = "TRUNKGATE_AUTH_MAX_FAILURES",
        default_value_t = 10
    )]
    pub auth_max_failures: u32,
    /// How long a block lasts: every attempt, a right password included, is refused.
    #[arg(
        help_heading = "Limits and protection",
        long,
        env = "TRUNKGATE_AUTH_BLOCK_SECONDS",
        default_value_t = 300
    )]
    pub auth_block_seconds: u64,
    /// The fleet's shared state: `redis://[:PASSWORD@]HOST:PORT[/DB]`, `rediss://…` (TLS),
    /// `redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER` (the master Redis Sentinel names,
    /// followed across failovers), or `redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT…]`
    /// (a Redis Cluster, from any of its nodes; `rediss+cluster://` with TLS); Redis 7 or
    /// Valkey 8. Every edge pod given the same store enforces each trunk's limits and the
    /// digest lockout as one. None: the embedded store (this process is the fleet).
    #[arg(help_heading = "Fleet", long, env = "TRUNKGATE_STATE_STORE")]
    pub state_store: Option<String>,
    /// The store's password, overriding the URL's (the chart reads it from a Secret).
    #[arg(
        help_heading = "Fleet",
        long,
        env = "TRUNKGATE_STATE_STORE_PASSWORD",
        hide_env_values = true
    )]
    pub state_store_password: Option<String>,
    /// Prefix of the store's keys, so several fleets may share one Redis.
    #[arg(
        help_heading = "Fleet",
        long,
        env = "TRUNKGATE_STATE_PREFIX",
        default_value = "trunkgate"
    )]
    pub state_prefix: String,
    /// This edge's name in the fleet. Default: $POD_NAME, else the host name.
    #[arg(help_heading = "Fleet", long, env = "TRUNKGATE_STATE_IDENTITY")]
    pub state_identity: Option<String>,
    /// How long a pod's places in the fleet's limits outlive its last renewal (renewed every
    /// third of it): a killed pod's calls stop counting within this time.
    #[arg(
        help_heading = "Fleet",
        long,
        env = "TRUNKGATE_STATE_LEASE_SECONDS",
        default_value_t = 10
    )]
    pub state_lease_seconds: u64,
    /// With --state-store: calls of an edge not heard of for this long (killed for good, its
    /// node gone) are ended by another edge: BYE on both legs and a call record with
    /// `endReason: edge_lost`. 0: never.
    #[arg(
        help_heading = "Fleet",
        long,
        env = "TRUNKGATE_ORPHAN_SECONDS",
        default_value_t = 60
    )]
    pub orphan_seconds: u64,
    /// Without --state-store: a folder where answered calls are journalled, so that the edge
    /// restarted on it (same folder) restores them. None: calls do not survive a restart.
    #[arg(help_heading = "Fleet", long, env = "TRUNKGATE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Write call detail records (JSON, one per line) to stdout.
    #[arg(help_heading = "Output", long, env = "TRUNKGATE_CDR", default_value_t = true, action = clap::ArgAction::Set)]
    pub cdr: bool,
}

impl Settings {
    /// The IP picked from `--advertise-ip-pool` by this pod's ordinal.
    pub fn advertised_pool_ip(&self) -> Option<IpAddr> {
        let pod = std::env::var("POD_NAME").ok()?;
        pool_ip_for(&self.advertise_ip_pool, &pod)
    }

    /// The IP carrier-side SDP advertises: the flag, else the pool IP, else the public SIP IP.
    pub fn public_media(&self) -> IpAddr {
        self.public_media_ip
            .or_else(|| self.advertised_pool_ip())
            .unwrap_or_else(|| self.public_sip.ip())
    }

    /// The IP platform-side SDP advertises.
    pub fn internal_media(&self) -> IpAddr {
        self.internal_media_ip
            .unwrap_or_else(|| self.internal_sip.ip())
    }

    /// This process's name in the fleet: `--state-identity`, else $POD_NAME, else the host name.
    pub fn identity(&self) -> String {
        self.state_identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .filter(|i| !i.is_empty())
            .or_else(|| {
                let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
                Some(h.trim().to_string()).filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "edge".to_string())
    }

    /// Where this edge pins its fast path (see `--kernel-fast-path-pin`): one folder per
    /// edge that restores its calls, named by its identity and where it journals them (two
    /// edges on one node never share one). None when the edge restores nothing.
    pub fn fast_path_pin(&self) -> Option<PathBuf> {
        let root = self.kernel_fast_path_pin.trim();
        if root.is_empty() {
            return None;
        }
        let journal = match (&self.state_store, &self.state_dir) {
            (Some(url), _) if !url.trim().is_empty() => {
                format!("{}|{}", url.trim(), self.state_prefix)
            }
            (_, Some(dir)) => std::path::absolute(dir)
                .unwrap_or_else(|_| dir.clone())
                .display()
                .to_string(),
            _ => return None,
        };
        let identity: String = self
            .identity()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        Some(PathBuf::from(root).join(format!("{identity}-{:08x}", fnv1a(&journal))))
    }

    /// How to reach the fleet's store (None: the embedded store).
    pub fn store(&self) -> Option<crate::fleet::StoreSettings> {
        let url = self.state_store.as_ref().filter(|u| !u.trim().is_empty())?;
        let identity = self.identity();
        Some(crate::fleet::StoreSettings {
            url: url.trim().to_string(),
            password: self.state_store_password.clone(),
            prefix: self.state_prefix.clone(),
            identity,
            lease: Duration::from_secs(self.state_lease_seconds.clamp(3, 3600)),
        })
    }

    pub fn failover_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.failover_seconds.clamp(0.2, 32.0))
    }
}

/// `ips[ordinal]` for a StatefulSet pod name `name-ORDINAL`.
pub fn pool_ip_for(ips: &[IpAddr], pod_name: &str) -> Option<IpAddr> {
    let ordinal: usize = pod_name.rsplit('-').next()?.parse().ok()?;
    ips.get(ordinal).copied()
}

/// How a socket address is written in SIP (RFC 3261 §25.1: IPv6 in brackets).
pub fn host_of(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

/// `host:port` as written in SIP.
pub fn host_port(addr: SocketAddr) -> String {
    format!("{}:{}", host_of(addr), addr.port())
}

/// `ADDR:PORT`, or `NETWORK:PORT` (`203.0.113.0/24:5060`, `[2001:db8::/64]:5060`): this host's
/// first interface address inside NETWORK, so one setting serves every node of a DaemonSet.
fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    if !s.contains('/') {
        return s
            .parse()
            .map_err(|_| format!("'{s}' is not ADDR:PORT or NETWORK:PORT"));
    }
    let (net, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("'{s}' has no :PORT"))?;
    let net = net.trim_start_matches('[').trim_end_matches(']');
    let net: ipnet::IpNet = net
        .parse()
        .map_err(|_| format!("'{net}' is not a network such as 203.0.113.0/24"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("'{port}' is not a port"))?;
    let mine = local_addresses()?;
    let ip = address_in(net, &mine).ok_or_else(|| {
        let list: Vec<String> = mine.iter().map(IpAddr::to_string).collect();
        format!(
            "no address of this host lies in {net} (it has {})",
            list.join(", ")
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// The first of `addrs` inside `net`.
fn address_in(net: ipnet::IpNet, addrs: &[IpAddr]) -> Option<IpAddr> {
    addrs.iter().copied().find(|a| net.contains(a))
}

/// Every interface address of this host.
fn local_addresses() -> Result<Vec<IpAddr>, String> {
    let ifs = nix::ifaddrs::getifaddrs().map_err(|e| format!("cannot list interfaces: {e}"))?;
    Ok(ifs
        .filter_map(|i| {
            let a = i.address?;
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect())
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or("expected LOW-HIGH, e.g. 20000-29999")?;
    let lo: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("'{a}' is not a port"))?;
    let hi: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("'{b}' is not a port"))?;
    if lo == 0 || lo >= hi {
        return Err("LOW must be at least 1 and below HIGH".into());
    }
    Ok((lo, hi))
}

/// Worker threads: what the user asked for, else (or for 0, as the chart means it) one per CPU
/// the process may run on, at least one and at most 64 (the owner index fits two hex digits).
pub fn worker_count(requested: Option<usize>, available: usize) -> usize {
    requested
        .filter(|n| *n > 0)
        .unwrap_or(available)
        .clamp(1, 64)
}

impl Settings {
    /// What cannot work as given, each with what to set instead: the edge refuses to start
    /// rather than run with an address nobody can reach it at or a port range no call fits in.
    pub fn start_problems(&self, workers: usize) -> Vec<String> {
        let mut out = Vec::new();
        let (public, internal) = (self.public_sip, self.internal_sip);
        let overlap = public.port() == internal.port()
            && (public.ip() == internal.ip()
                || public.ip().is_unspecified()
                || internal.ip().is_unspecified());
        if overlap {
            out.push(format!(
                "--public-sip {public} and --internal-sip {internal} overlap: carrier INVITEs would be taken for platform calls; give the platform side its own port or address"
            ));
        }
        let advertised = self.advertise_host.is_some() || self.advertised_pool_ip().is_some();
        if public.ip().is_unspecified() && !advertised {
            out.push(format!(
                "--public-sip {public} binds every address, so the edge cannot tell carriers where it is (its Contact would say {}): bind the carrier-facing address (--public-sip 203.0.113.10:5060) or set --advertise-host",
                host_port(public)
            ));
        }
        if self.public_media().is_unspecified() {
            out.push(
                "no carrier-side media address: SDP would say c=IN IP4 0.0.0.0; set --public-media-ip (or bind --public-sip to an address)".into(),
            );
        }
        if internal.ip().is_unspecified() {
            out.push(format!(
                "--internal-sip {internal} binds every address, so the platform would be told to send to {}: bind the platform-facing address (--internal-sip 10.0.0.5:5080)",
                host_port(internal)
            ));
        }
        if self.internal_media().is_unspecified() && !internal.ip().is_unspecified() {
            out.push("--internal-media-ip 0.0.0.0 cannot be put in SDP: give an address".into());
        }
        let per_worker = rtp_slices(self.rtp_ports, workers)
            .first()
            .map_or(0, |(lo, hi)| (usize::from(*hi) + 1 - usize::from(*lo)) / 2);
        if per_worker < 2 {
            let (lo, hi) = self.rtp_ports;
            out.push(format!(
                "--rtp-ports {lo}-{hi} leaves {per_worker} port pair(s) to each of {workers} workers, and a relayed call needs 2 (one per side): give at least {} ports",
                4 * workers
            ));
        }
        if let Some(store) = self.store()
            && let Err(e) = crate::fleet::Source::of(&store)
        {
            out.push(format!(
                "--state-store {}: {e} (give redis://HOST:PORT, rediss://HOST:PORT, redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER or redis+cluster://HOST:PORT[,HOST:PORT])",
                crate::fleet::redacted(&store.url)
            ));
        }
        out
    }
}

/// The CPUs this process may use (cgroup quota and affinity, as std reports them).
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Splits `[lo, hi]` into `workers` disjoint slices, each starting on an even port (RTP even,
/// RTCP odd: RFC 3550 §11).
pub fn rtp_slices((lo, hi): (u16, u16), workers: usize) -> Vec<(u16, u16)> {
    let lo = lo + (lo % 2);
    let pairs = (usize::from(hi) + 1 - usize::from(lo)) / 2;
    let per = pairs / workers.max(1);
    (0..workers)
        .map(|w| {
            let start = usize::from(lo) + w * per * 2;
            let end = start + per * 2 - 1;
            (start as u16, end as u16)
        })
        .collect()
}

/// FNV-1a (32 bits): a name that stays the same from one build to the next.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_count_table() {
        for (requested, cpus, want) in [
            (None, 2, 2),
            (None, 0, 1),
            (Some(4), 2, 4),
            (Some(0), 8, 8),
            (None, 512, 64),
        ] {
            assert_eq!(worker_count(requested, cpus), want, "{requested:?} {cpus}");
        }
    }

    fn settings(args: &[&str]) -> Settings {
        let mut all = vec!["trunkgate-edge"];
        all.extend_from_slice(args);
        <Settings as Parser>::try_parse_from(all).expect("flags parse")
    }

    #[test]
    fn what_cannot_work_is_refused_at_start_with_what_to_set() {
        let ok = settings(&[
            "--public-sip",
            "192.0.2.1:5060",
            "--internal-sip",
            "10.0.0.5:5080",
        ]);
        assert!(
            ok.start_problems(2).is_empty(),
            "{:?}",
            ok.start_problems(2)
        );
        let none = settings(&[]);
        let p = none.start_problems(2).join("\n");
        assert!(
            p.contains("--public-sip 0.0.0.0:5060 binds every address"),
            "{p}"
        );
        assert!(p.contains("c=IN IP4 0.0.0.0"), "{p}");
        assert!(
            p.contains("--internal-sip 0.0.0.0:5080 binds every address"),
            "{p}"
        );
        let advertised = settings(&[
            "--public-sip",
            "0.0.0.0:5060",
            "--advertise-host",
            "sip.example.net",
            "--public-media-ip",
            "192.0.2.1",
            "--internal-sip",
            "10.0.0.5:5080",
        ]);
        assert!(
            advertised.start_problems(2).is_empty(),
            "{:?}",
            advertised.start_problems(2)
        );
        let same = settings(&[
            "--public-sip",
            "192.0.2.1:5060",
            "--internal-sip",
            "192.0.2.1:5060",
        ]);
        assert!(
            same.start_problems(1)[0].contains("overlap"),
            "{:?}",
            same.start_problems(1)
        );
        let tiny = settings(&[
            "--public-sip",
            "192.0.2.1:5060",
            "--internal-sip",
            "10.0.0.5:5080",
            "--rtp-ports",
            "20000-20001",
        ]);
        let p = tiny.start_problems(1).join("\n");
        assert!(
            p.contains("needs 2") && p.contains("at least 4 ports"),
            "{p}"
        );
        assert!(tiny.start_problems(2).join("").contains("at least 8 ports"));
    }

    #[test]
    fn rtp_slices_are_disjoint_and_even() {
        let s = rtp_slices((20000, 29999), 2);
        assert_eq!(s, vec![(20000, 24999), (25000, 29999)]);
        let s = rtp_slices((20001, 20010), 2);
        assert_eq!(s, vec![(20002, 20005), (20006, 20009)]);
    }

    #[test]
    fn a_bind_by_network_picks_this_hosts_address_in_it() {
        let lo = parse_bind("127.0.0.0/8:5060").expect("loopback is on every host");
        assert!(lo.ip().is_loopback() && lo.port() == 5060, "{lo}");
        assert_eq!(
            parse_bind("192.0.2.7:5060").ok(),
            Some(SocketAddr::from(([192, 0, 2, 7], 5060)))
        );
        let e = parse_bind("240.0.0.0/4:5060").expect_err("reserved space is on no host");
        assert!(
            e.contains("no address of this host lies in 240.0.0.0/4"),
            "{e}"
        );
        let addrs: Vec<IpAddr> = vec![[10, 0, 0, 5].into(), [203, 0, 113, 9].into()];
        let net: ipnet::IpNet = "203.0.113.0/24".parse().expect("a network");
        assert_eq!(address_in(net, &addrs), Some(addrs[1]));
    }

    #[test]
    fn pool_ip_by_ordinal() {
        let ips: Vec<IpAddr> = vec![
            "192.0.2.10".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            "192.0.2.11".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        ];
        assert_eq!(pool_ip_for(&ips, "trunkgate-edge-1"), Some(ips[1]));
        assert_eq!(pool_ip_for(&ips, "trunkgate-edge-2"), None);
        assert_eq!(pool_ip_for(&ips, "nonsense"), None);
    }
}
