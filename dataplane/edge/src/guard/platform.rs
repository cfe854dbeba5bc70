//! Who may use the platform side: `--platform-cidrs`, the platform's allow-list. The platform
//! port places calls on the carriers' trunks, so a source outside this list gets nothing back
//! (as on the carrier port), and an entry may name the tenants (namespaces) its sources call
//! for: `acme=10.1.0.0/16` lets 10.1.0.0/16 place calls over `acme`'s trunks only. An entry
//! without a tenant is a shared platform, whose calls name their tenant themselves
//! ([`crate::route::admission::outbound`]).

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use trunkgate_crds::acl::SourceAcl;

/// One `--platform-cidrs` entry: `CIDR` or `TENANT=CIDR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformNet {
    pub net: IpNet,
    /// The namespace whose trunks this network's calls may use (None: any, named per call).
    pub tenant: Option<String>,
}

impl std::str::FromStr for PlatformNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (tenant, cidr) = match s.split_once('=') {
            Some((t, c)) => (Some(t.trim()), c.trim()),
            None => (None, s),
        };
        if let Some(t) = tenant
            && (t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return Err(format!(
                "'{t}' is not a namespace name (TENANT=CIDR, e.g. acme=10.1.0.0/16)"
            ));
        }
        let net = parse_net(cidr)?;
        Ok(PlatformNet {
            net,
            tenant: tenant.map(str::to_string),
        })
    }
}

/// A CIDR, or a bare address as its host network.
fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("'{s}' is not a CIDR such as 10.0.0.0/8 or fd00::/8"))
}

/// The tenants a platform-side source may place calls for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tenancy {
    /// A shared platform: any tenant, which each call must name (or imply).
    Any,
    /// Only these namespaces' trunks.
    Only(Vec<String>),
}

impl Tenancy {
    /// Whether a call from this source may use a trunk of `namespace`.
    pub fn admits(&self, namespace: &str) -> bool {
        match self {
            Tenancy::Any => true,
            Tenancy::Only(ns) => ns.iter().any(|n| n == namespace),
        }
    }
}

/// The platform's allow-list, looked up per datagram on the platform side.
#[derive(Clone, Debug, Default)]
pub struct PlatformAcl {
    acl: SourceAcl,
    nets: Arc<[PlatformNet]>,
    /// The same networks without tenants, shared with every call's media policy.
    networks: Arc<[IpNet]>,
}

impl PlatformAcl {
    pub fn new(nets: &[PlatformNet]) -> Self {
        let acl = SourceAcl::build(nets.iter().enumerate().map(|(i, n)| (n.net, i as u32)));
        Self {
            acl,
            networks: nets.iter().map(|n| n.net).collect(),
            nets: nets.into(),
        }
    }

    /// Whether any entry holds `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.acl.allows(ip)
    }

    /// The tenants `ip` may call for; None when it is not the platform at all.
    pub fn tenancy(&self, ip: IpAddr) -> Option<Tenancy> {
        let entries = self.acl.trunks(ip);
        if entries.is_empty() {
            return None;
        }
        let mut only = Vec::new();
        for i in entries {
            match self.nets.get(i as usize).and_then(|n| n.tenant.as_ref()) {
                None => return Some(Tenancy::Any),
                Some(t) if !only.contains(t) => only.push(t.clone()),
                Some(_) => {}
            }
        }
        Some(Tenancy::Only(only))
    }

    /// The networks, for media: the platform's RTP must come from (and go to) them.
    pub fn networks(&self) -> Arc<[IpNet]> {
        self.networks.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[&str]) -> PlatformAcl {
        let nets: Vec<PlatformNet> = entries
            .iter()
            .map(|e| e.parse().unwrap_or_else(|err| panic!("{e}: {err}")))
            .collect();
        PlatformAcl::new(&nets)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn entries_parse_with_or_without_a_tenant_and_bad_ones_say_why() {
        let n: PlatformNet = "acme=10.1.0.0/16".parse().expect("tagged");
        assert_eq!(n.tenant.as_deref(), Some("acme"));
        let n: PlatformNet = "10.1.2.3/16".parse().expect("host bits");
        assert_eq!(n.net.to_string(), "10.1.0.0/16", "used as its network");
        let n: PlatformNet = "::1".parse().expect("bare address");
        assert_eq!(n.net.to_string(), "::1/128");
        let e = "10.0.0.300/8"
            .parse::<PlatformNet>()
            .expect_err("not a CIDR");
        assert!(e.contains("'10.0.0.300/8' is not a CIDR"), "{e}");
        let e = "Acme=10.0.0.0/8"
            .parse::<PlatformNet>()
            .expect_err("bad ns");
        assert!(e.contains("not a namespace"), "{e}");
    }

    #[test]
    fn a_source_outside_every_entry_is_not_the_platform() {
        let a = acl(&["127.0.0.0/8", "acme=10.1.0.0/16"]);
        assert_eq!(a.tenancy(ip("192.0.2.1")), None);
        assert!(!a.allows(ip("192.0.2.1")));
        assert_eq!(a.tenancy(ip("127.0.0.20")), Some(Tenancy::Any));
    }

    #[test]
    fn tagged_entries_confine_their_sources_to_their_tenants() {
        let a = acl(&["acme=10.1.0.0/16", "beta=10.1.2.0/24", "10.9.0.0/16"]);
        let only = a.tenancy(ip("10.1.2.3")).expect("allowed");
        assert!(only.admits("acme") && only.admits("beta"));
        assert!(!only.admits("gamma"));
        let acme = a.tenancy(ip("10.1.9.9")).expect("allowed");
        assert_eq!(acme, Tenancy::Only(vec!["acme".into()]));
        assert!(!acme.admits("beta"));
        assert_eq!(a.tenancy(ip("10.9.1.1")), Some(Tenancy::Any));
    }
}
