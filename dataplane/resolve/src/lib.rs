//! RFC 3263 §4 server location for outbound SIP: turn a target URI's host, port and transport
//! into an ordered list of addresses to try, through NAPTR, SRV and A/AAAA lookups on a
//! non-blocking resolver.
#![forbid(unsafe_code)]

mod error;
mod select;

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use futures::future::join_all;
use hickory_resolver::{
    TokioResolver,
    config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts},
    net::{DnsError, NetError, runtime::TokioRuntimeProvider},
    proto::rr::{Name, RData, Record, RecordType, rdata::SRV},
};

pub use crate::error::{Error, Result};
use crate::select::Plan;
pub use crate::select::weighted_order;

/// The time budget of one [`Resolver::resolve`] call, all lookups included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// At most this many destinations come back: a client tries them in turn, and a longer list
/// would outlast the INVITE's Timer B anyway (RFC 3261 §17.1.1.2).
pub const MAX_DESTINATIONS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// RFC 3261 §19.1.2: 5061 for TLS, 5060 otherwise.
    pub const fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp => 5060,
            Self::Tls => 5061,
        }
    }

    /// The value of a URI `transport=` parameter.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    /// RFC 3263 §4.1 NAPTR service field.
    const fn naptr_service(self) -> &'static str {
        match self {
            Self::Udp => "SIP+D2U",
            Self::Tcp => "SIP+D2T",
            Self::Tls => "SIPS+D2T",
        }
    }

    /// RFC 3263 §4.1 SRV owner-name prefix.
    const fn srv_prefix(self) -> &'static str {
        match self {
            Self::Udp => "_sip._udp",
            Self::Tcp => "_sip._tcp",
            Self::Tls => "_sips._tcp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parts of a SIP URI that decide where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// Host name, IPv4 address, or IPv6 address with or without brackets.
    pub host: &'a str,
    pub port: Option<u16>,
    /// The URI's `transport=` parameter.
    pub transport: Option<Transport>,
    /// A `sips:` URI: TLS only.
    pub secure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// Locates SIP servers through DNS. Cheap to clone: clones share one cache and one set of
/// nameserver connections, so one per process is enough.
#[derive(Clone)]
pub struct Resolver {
    dns: Arc<TokioResolver>,
    /// The nameservers, for error messages.
    servers: Arc<str>,
    timeout: Duration,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("servers", &self.servers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// Nameservers, search domains and `ndots` from `/etc/resolv.conf`, as a Kubernetes pod has them.
    pub fn from_system_conf() -> Result<Self> {
        let (config, options) =
            hickory_resolver::system_conf::read_system_conf().map_err(|e| Error::Config {
                reason: e.to_string(),
            })?;
        Ok(Self::build(config, options))
    }

    /// One nameserver over UDP (TCP for truncated answers), no search domains.
    pub fn with_nameserver(addr: SocketAddr) -> Self {
        let mut server = NameServerConfig::udp_and_tcp(addr.ip());
        for connection in &mut server.connections {
            connection.port = addr.port();
        }
        Self::build(
            ResolverConfig::from_name_servers(vec![server]),
            ResolverOpts::default(),
        )
    }

    /// Replaces [`DEFAULT_TIMEOUT`], the budget of each [`Resolver::resolve`] call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn build(config: ResolverConfig, mut options: ResolverOpts) -> Self {
        // Carrier trunks are mostly IPv4: offer A before AAAA.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let servers = config
            .name_servers()
            .iter()
            .map(|s| {
                let port = s.connections.first().map_or(53, |c| c.port);
                SocketAddr::new(s.ip, port).to_string()
            })
            .collect::<Vec<_>>()
            .join(",");
        let dns = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            // Building fails only when loading TLS roots for encrypted DNS, a feature left off.
            .expect("a plain UDP/TCP resolver always builds");
        Self {
            dns: Arc::new(dns),
            servers: servers.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The destinations for `target`, in the order to try them (RFC 3263 §4), at most
    /// [`MAX_DESTINATIONS`], within the resolver's timeout.
    pub async fn resolve(&self, target: &Target<'_>) -> Result<Vec<Destination>> {
        let plan = Plan::of(target);
        if let Plan::Literal(destination) = plan {
            return Ok(vec![destination]);
        }
        let invalid = |reason: String| Error::InvalidHost {
            host: target.host.to_owned(),
            reason,
        };
        let name = Name::from_utf8(target.host).map_err(|e| invalid(e.to_string()))?;
        if name.is_root() {
            return Err(invalid("empty".to_owned()));
        }
        tokio::time::timeout(self.timeout, self.locate(target.host, &name, plan))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    name: target.host.to_owned(),
                    servers: self.servers.clone(),
                    after: self.timeout,
                })
            })
    }

    async fn locate(&self, host: &str, name: &Name, plan: Plan) -> Result<Vec<Destination>> {
        let (port, transport, looked_up) = match plan {
            Plan::Literal(destination) => return Ok(vec![destination]),
            Plan::Address { port, transport } => (port, transport, "A/AAAA"),
            Plan::Srv { transport } => {
                if let Some(found) = self.srv_stage(name, &[transport]).await? {
                    return Ok(found);
                }
                (transport.default_port(), transport, "SRV/A/AAAA")
            }
            Plan::Naptr { secure } => {
                if let Some(found) = self.naptr_stage(name, secure).await? {
                    return Ok(found);
                }
                if let Some(found) = self.srv_stage(name, select::srv_transports(secure)).await? {
                    return Ok(found);
                }
                let transport = select::srv_transports(secure)[0];
                (transport.default_port(), transport, "NAPTR/SRV/A/AAAA")
            }
        };
        // RFC 3263 §4.2: no SRV records, so the host's own addresses on the default port.
        let no_records = || Error::NoRecords {
            name: host.to_owned(),
            looked_up,
        };
        let ips = match self.dns.lookup_ip(name.clone()).await {
            Ok(ips) => ips,
            Err(e) if e.is_nx_domain() => {
                return Err(Error::NxDomain {
                    name: host.to_owned(),
                    servers: self.servers.clone(),
                });
            }
            Err(e) if e.is_no_records_found() => return Err(no_records()),
            Err(e) => return Err(self.error(name, e)),
        };
        let mut found = Destinations::default();
        found.extend(ips.iter(), port, transport);
        if found.0.is_empty() {
            return Err(no_records());
        }
        Ok(found.0)
    }

    /// RFC 3263 §4.1: follow the domain's NAPTR records to SRV names. `None` when there are no
    /// usable NAPTR records, or they lead nowhere, so the caller falls back to plain SRV.
    async fn naptr_stage(&self, name: &Name, secure: bool) -> Result<Option<Vec<Destination>>> {
        let Some((answers, mut hints)) = self.query(name, RecordType::NAPTR).await? else {
            return Ok(None);
        };
        let records: Vec<_> = answers
            .into_iter()
            .filter_map(|r| match r.data {
                RData::NAPTR(naptr) => Some(naptr),
                _ => None,
            })
            .collect();
        let replacements = select::naptr_replacements(&records, select::naptr_transports(secure));
        if replacements.is_empty() {
            tracing::debug!(%name, "no usable NAPTR records, trying SRV");
            return Ok(None);
        }
        // The NAPTR answer may carry the SRV records in its additional section (RFC 3403 §4.2).
        let glue = &hints;
        let lookups = replacements.iter().map(|(_, replacement)| async move {
            let glued: Vec<SRV> = glue
                .iter()
                .filter(|r| r.name.eq_ignore_root(replacement))
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(srv.clone()),
                    _ => None,
                })
                .collect();
            if !glued.is_empty() {
                return Ok(Some((glued, Vec::new())));
            }
            self.srv_query(replacement).await
        });
        let results = join_all(lookups).await;
        let mut per_transport = Vec::new();
        let mut failure = None;
        for ((transport, _), result) in replacements.into_iter().zip(results) {
            match result {
                Ok(Some((records, additionals))) => {
                    hints.extend(additionals);
                    per_transport.push((transport, records));
                }
                Ok(None) => {}
                // Another replacement may still work; report this only if none does.
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if per_transport.is_empty() {
            return failure.map_or(Ok(None), Err);
        }
        self.expand(name, per_transport, &hints).await.map(Some)
    }

    /// SRV for each transport in turn. `None` when no SRV records exist at all; once they do,
    /// RFC 3263 §4.2 forbids falling back to the domain's own A/AAAA records.
    async fn srv_stage(
        &self,
        name: &Name,
        transports: &[Transport],
    ) -> Result<Option<Vec<Destination>>> {
        let lookups = transports.iter().map(|t| async move {
            let srv_name = Name::from_ascii(t.srv_prefix())
                .and_then(|prefix| prefix.append_name(name))
                .map_err(|e| Error::InvalidHost {
                    host: name.to_string(),
                    reason: e.to_string(),
                })?;
            self.srv_query(&srv_name).await
        });
        let mut hints = Vec::new();
        let mut per_transport = Vec::new();
        for (transport, result) in transports.iter().zip(join_all(lookups).await) {
            if let Some((records, additionals)) = result? {
                hints.extend(additionals);
                per_transport.push((*transport, records));
            }
        }
        if per_transport.is_empty() {
            return Ok(None);
        }
        self.expand(name, per_transport, &hints).await.map(Some)
    }

    /// SRV records at `name` and the additional section that came with them.
    async fn srv_query(&self, name: &Name) -> Result<Option<(Vec<SRV>, Vec<Record>)>> {
        let Some((answers, additionals)) = self.query(name, RecordType::SRV).await? else {
            return Ok(None);
        };
        // Not filtered by owner name: a search domain may have completed it.
        let records: Vec<SRV> = answers
            .into_iter()
            .filter_map(|r| match r.data {
                RData::SRV(srv) => Some(srv),
                _ => None,
            })
            .collect();
        Ok((!records.is_empty()).then_some((records, additionals)))
    }

    /// Orders each transport's SRV records (RFC 2782) and turns their targets into addresses,
    /// from `hints` (additional sections) where present, else by lookup.
    async fn expand(
        &self,
        domain: &Name,
        per_transport: Vec<(Transport, Vec<SRV>)>,
        hints: &[Record],
    ) -> Result<Vec<Destination>> {
        // The thread-local RNG is not Send: keep it out of the await points.
        let ordered: Vec<(Transport, SRV)> = {
            let mut rng = rand::rng();
            per_transport
                .into_iter()
                .flat_map(|(transport, records)| {
                    select::order_srv(records, &mut rng)
                        .into_iter()
                        .map(move |srv| (transport, srv))
                })
                // RFC 2782: a target of "." means the service is decidedly not available.
                .filter(|(_, srv)| !srv.target.is_root())
                // Every target yields at least one address, so more would be cut anyway.
                .take(MAX_DESTINATIONS)
                .collect()
        };
        let Some((_, first)) = ordered.first() else {
            return Err(Error::NoRecords {
                name: display(domain),
                looked_up: "usable SRV",
            });
        };

        let lookups = ordered
            .iter()
            .map(|(_, srv)| self.addresses(&srv.target, hints));
        let results = join_all(lookups).await;
        let mut found = Destinations::default();
        let mut failure = None;
        for ((transport, srv), result) in ordered.iter().zip(results) {
            match result {
                Ok(ips) => found.extend(ips, srv.port, *transport),
                Err(e) => {
                    tracing::debug!(srv_target = %srv.target, error = %e, "skipping SRV target");
                    failure.get_or_insert(e);
                }
            }
        }
        if found.0.is_empty() {
            return Err(failure.unwrap_or_else(|| Error::NoRecords {
                name: display(&first.target),
                looked_up: "A/AAAA",
            }));
        }
        Ok(found.0)
    }

    /// The addresses of an SRV target: the additional section's, or a fresh A/AAAA lookup.
    async fn addresses(&self, target: &Name, hints: &[Record]) -> Result<Vec<IpAddr>> {
        let glued: Vec<IpAddr> = hints
            .iter()
            .filter(|r| r.name.eq_ignore_root(target))
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            })
            .collect();
        if !glued.is_empty() {
            return Ok(glued);
        }
        match self.dns.lookup_ip(target.clone()).await {
            Ok(ips) => Ok(ips.iter().collect()),
            Err(e) if e.is_no_records_found() => Err(Error::NoRecords {
                name: display(target),
                looked_up: "A/AAAA",
            }),
            Err(e) => Err(self.error(target, e)),
        }
    }

    /// Answers and additional records, or `None` when the name has no such records: in
    /// RFC 3263 an empty answer only moves on to the next step.
    async fn query(
        &self,
        name: &Name,
        record_type: RecordType,
    ) -> Result<Option<(Vec<Record>, Vec<Record>)>> {
        match self.dns.lookup(name.clone(), record_type).await {
            Ok(lookup) => Ok(Some((
                lookup.answers().to_vec(),
                lookup.additionals().to_vec(),
            ))),
            Err(e) if e.is_no_records_found() => Ok(None),
            Err(e) => Err(self.error(name, e)),
        }
    }

    fn error(&self, name: &Name, error: NetError) -> Error {
        let name = display(name);
        let servers = self.servers.clone();
        match &error {
            NetError::Timeout => Error::Timeout {
                name,
                servers,
                after: self.dns.options().timeout,
            },
            NetError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => Error::Timeout {
                name,
                servers,
                after: self.dns.options().timeout,
            },
            NetError::Io(_) | NetError::NoConnections | NetError::Busy => Error::Io {
                name,
                servers,
                reason: error.to_string(),
            },
            NetError::Dns(DnsError::ResponseCode(code)) => Error::ServerFailure {
                name,
                servers,
                reason: code.to_string(),
            },
            other => Error::ServerFailure {
                name,
                servers,
                reason: other.to_string(),
            },
        }
    }
}

/// A name as an operator types it: no trailing dot.
fn display(name: &Name) -> String {
    let mut text = name.to_utf8();
    if text.len() > 1 && text.ends_with('.') {
        text.pop();
    }
    text
}

/// The result list: first occurrence wins, capped at [`MAX_DESTINATIONS`].
#[derive(Default)]
struct Destinations(Vec<Destination>);

impl Destinations {
    fn extend(&mut self, ips: impl IntoIterator<Item = IpAddr>, port: u16, transport: Transport) {
        for ip in ips {
            let destination = Destination {
                addr: SocketAddr::new(ip, port),
                transport,
            };
            if self.0.len() < MAX_DESTINATIONS && !self.0.contains(&destination) {
                self.0.push(destination);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_future_is_send() {
        fn assert_send<T: Send>(_: T) {}
        let resolver = Resolver::with_nameserver(SocketAddr::from(([127, 0, 0, 1], 53)));
        let target = Target {
            host: "sbc1.carrier.example",
            port: None,
            transport: None,
            secure: false,
        };
        assert_send(resolver.resolve(&target));
    }
}
