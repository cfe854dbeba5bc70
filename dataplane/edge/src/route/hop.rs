//! Where a call goes next: a carrier or platform target, as a hop to resolve (RFC 3263).

/// A place to send the B-leg INVITE.
#[derive(Debug, Clone)]
pub struct Hop {
    pub host: String,
    pub port: Option<u16>,
    pub transport: trunkgate_crds::Transport,
    /// Set once RFC 3263 resolution (or a numeric host) gave an address.
    pub addr: Option<std::net::SocketAddr>,
    /// Whether the URI was sips: (RFC 3263 then only looks for TLS).
    pub secure: bool,
    /// The Request-URI host part (`host` or `host:port`).
    pub uri_host: String,
    /// Which of its trunk's `outbound.targets` it is (None: the platform, a redirect), whose
    /// quality the attempt counts for.
    pub target: Option<u16>,
    /// The trunk whose target it is, for an outbound call that may fail over between trunks
    /// (None: the call's own trunk).
    pub trunk: Option<u32>,
}

impl Hop {
    /// What RFC 3263 resolution looks up for this hop: the URI's transport counts only when the
    /// URI named it or gave a port (§4.1).
    pub fn resolve_target(&self) -> trunkgate_resolve::Target<'_> {
        trunkgate_resolve::Target {
            host: &self.host,
            port: self.port,
            transport: Some(resolve_transport(self.transport))
                .filter(|_| self.uri_host.contains("transport=") || self.port.is_some()),
            secure: self.secure,
        }
    }
}

/// The resolver's name for a configured transport.
pub fn resolve_transport(t: trunkgate_crds::Transport) -> trunkgate_resolve::Transport {
    match t {
        trunkgate_crds::Transport::Udp => trunkgate_resolve::Transport::Udp,
        trunkgate_crds::Transport::Tcp => trunkgate_resolve::Transport::Tcp,
        trunkgate_crds::Transport::Tls => trunkgate_resolve::Transport::Tls,
    }
}

pub fn crds_transport(t: trunkgate_resolve::Transport) -> trunkgate_crds::Transport {
    match t {
        trunkgate_resolve::Transport::Udp => trunkgate_crds::Transport::Udp,
        trunkgate_resolve::Transport::Tcp => trunkgate_crds::Transport::Tcp,
        trunkgate_resolve::Transport::Tls => trunkgate_crds::Transport::Tls,
    }
}
