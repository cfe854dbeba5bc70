//! The YAML a test writes into the edge's config folder: CarrierTrunk, NumberOwnership and
//! Secret documents, as a user would write them (field names from the CRDs).

use std::fmt::Write as _;
use std::net::SocketAddr;

/// A `CarrierTrunk` under construction.
#[derive(Clone, Debug)]
pub struct Trunk {
    pub namespace: String,
    pub name: String,
    pub cidrs: Vec<String>,
    pub hostnames: Vec<String>,
    /// (realm, Secret name)
    pub inbound_auth: Option<(String, String)>,
    /// `inbound.auth.algorithms` (empty: not written, the default `[MD5]`).
    pub digest_algorithms: Vec<String>,
    /// Country code of the number format (national prefix 0, international 00).
    pub country_code: Option<String>,
    pub destination: String,
    /// (uri, priority, weight)
    pub targets: Vec<(String, u32, u32)>,
    /// (Secret name, realm)
    pub outbound_auth: Option<(String, String)>,
    pub policy: String,
    pub routes: Vec<(String, u32)>,
    /// Rated routes: (prefix, perMinute, currency, increments).
    pub rates: Vec<(String, String, String, String)>,
    pub max_concurrent: Option<u32>,
    pub max_cps: Option<u32>,
    /// `media.relay` (None: not written, the edge's default of true).
    pub media_relay: Option<bool>,
    /// `media.codecs`.
    pub media_codecs: Vec<String>,
    /// `media.behindNat`.
    pub media_behind_nat: bool,
    /// `media.srtp` (None: not written, the default `Disabled`).
    pub media_srtp: Option<String>,
    /// `tls.caSecretRef.name`, `tls.serverName`, `tls.clientNames`.
    pub tls_ca_secret: Option<String>,
    pub tls_server_name: Option<String>,
    pub tls_client_names: Vec<String>,
    /// `outbound.healthCheck` (intervalSeconds, failureThreshold).
    pub health_check: Option<(u32, u32)>,
    /// `outbound.registration`, as a YAML flow mapping (`{expiresSeconds: 60}`).
    pub registration: Option<String>,
    /// `outbound.quality`, as a YAML flow mapping.
    pub quality: Option<String>,
    /// `outbound.selection` (`Priority`, `LeastCost`, `Quality`).
    pub selection: Option<String>,
}

impl Trunk {
    /// A trunk of `namespace/name` that accepts the carrier at `cidr` and delivers inbound
    /// calls to `destination` (a platform UAS).
    pub fn new(namespace: &str, name: &str, cidr: &str, destination: SocketAddr) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            cidrs: vec![cidr.into()],
            hostnames: vec![],
            inbound_auth: None,
            digest_algorithms: Vec::new(),
            country_code: Some("64".into()),
            destination: format!("sip:{destination}"),
            targets: vec![],
            outbound_auth: None,
            policy: "Strict".into(),
            routes: vec![],
            rates: vec![],
            max_concurrent: None,
            max_cps: None,
            media_relay: None,
            media_codecs: vec![],
            media_behind_nat: false,
            media_srtp: None,
            tls_ca_secret: None,
            tls_server_name: None,
            tls_client_names: vec![],
            health_check: None,
            registration: None,
            quality: None,
            selection: None,
        }
    }

    /// `namespace/name`, as in `X-Trunkgate-Trunk` and CDRs.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn hostnames(mut self, hosts: &[&str]) -> Self {
        self.hostnames = hosts.iter().map(|h| h.to_string()).collect();
        self
    }

    pub fn inbound_auth(mut self, realm: &str, secret: &str) -> Self {
        self.inbound_auth = Some((realm.into(), secret.into()));
        self
    }

    /// `inbound.auth.algorithms`, most preferred first (`"MD5"`, `"SHA-256"`).
    pub fn digest_algorithms(mut self, algorithms: &[&str]) -> Self {
        self.digest_algorithms = algorithms.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Adds a carrier target for outbound calls (priority in the order added).
    pub fn target(mut self, addr: SocketAddr) -> Self {
        let priority = self.targets.len() as u32 + 1;
        self.targets.push((format!("sip:{addr}"), priority, 1));
        if self.routes.is_empty() {
            self.routes.push(("+".into(), 100));
        }
        self
    }

    pub fn outbound_auth(mut self, secret: &str, realm: &str) -> Self {
        self.outbound_auth = Some((secret.into(), realm.into()));
        self
    }

    /// `Strict`, `Anonymize` or `PassThrough`.
    /// `outbound.registration` with these fields (a YAML flow mapping such as
    /// `{expiresSeconds: 60}`).
    pub fn registration(mut self, fields: &str) -> Self {
        self.registration = Some(fields.into());
        self
    }

    /// OPTIONS probes of the targets every `interval` seconds, down after `threshold` failures.
    pub fn health_check(mut self, interval: u32, threshold: u32) -> Self {
        self.health_check = Some((interval, threshold));
        self
    }

    /// A route to `prefix` with the carrier's rate (`spec.routes[].rate`).
    pub fn rate(
        mut self,
        prefix: &str,
        per_minute: &str,
        currency: &str,
        increments: &str,
    ) -> Self {
        self.rates.push((
            prefix.into(),
            per_minute.into(),
            currency.into(),
            increments.into(),
        ));
        self
    }

    /// `outbound.selection`: the tenant's policy among its trunks.
    pub fn selection(mut self, s: &str) -> Self {
        self.selection = Some(s.into());
        self
    }

    /// `outbound.quality` as a YAML flow mapping.
    pub fn quality(mut self, q: &str) -> Self {
        self.quality = Some(q.into());
        self
    }

    pub fn policy(mut self, p: &str) -> Self {
        self.policy = p.into();
        self
    }

    pub fn max_concurrent_calls(mut self, n: u32) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    /// `media.codecs`: the codecs allowed on this trunk.
    pub fn codecs(mut self, codecs: &[&str]) -> Self {
        self.media_codecs = codecs.iter().map(|c| c.to_string()).collect();
        self
    }

    /// `media.behindNat: true`: the carrier's RTP may come from any address.
    pub fn behind_nat(mut self) -> Self {
        self.media_behind_nat = true;
        self
    }

    /// `media.srtp`: `Disabled`, `Optional` or `Required`.
    pub fn srtp(mut self, policy: &str) -> Self {
        self.media_srtp = Some(policy.to_string());
        self
    }

    /// `tls`: the carrier's CA bundle (a Secret made by [`ca_secret`]), the name its server
    /// certificates carry, the client certificate names that identify it.
    pub fn tls(
        mut self,
        ca_secret: Option<&str>,
        server_name: Option<&str>,
        client_names: &[&str],
    ) -> Self {
        self.tls_ca_secret = ca_secret.map(str::to_string);
        self.tls_server_name = server_name.map(str::to_string);
        self.tls_client_names = client_names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// `media.relay`: whether RTP flows through the edge.
    pub fn relay(mut self, on: bool) -> Self {
        self.media_relay = Some(on);
        self
    }

    pub fn yaml(&self) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut y = String::new();
        let _ = writeln!(y, "apiVersion: trunkgate.io/v1alpha1");
        let _ = writeln!(y, "kind: CarrierTrunk");
        let _ = writeln!(
            y,
            "metadata: {{name: {}, namespace: {}}}",
            self.name, self.namespace
        );
        let _ = writeln!(y, "spec:");
        let _ = writeln!(y, "  inbound:");
        let _ = writeln!(y, "    allowedCidrs: [{}]", list(&self.cidrs));
        if !self.hostnames.is_empty() {
            let _ = writeln!(y, "    hostnames: [{}]", list(&self.hostnames));
        }
        if let Some((realm, secret)) = &self.inbound_auth {
            let algorithms = if self.digest_algorithms.is_empty() {
                String::new()
            } else {
                format!(", algorithms: [{}]", list(&self.digest_algorithms))
            };
            let _ = writeln!(
                y,
                "    auth: {{realm: \"{realm}\", secretRef: {{name: {secret}}}{algorithms}}}"
            );
        }
        if let Some(cc) = &self.country_code {
            let _ = writeln!(
                y,
                "    numberFormat: {{countryCode: \"{cc}\", nationalPrefix: \"0\", internationalPrefix: \"00\"}}"
            );
        }
        let _ = writeln!(y, "    destination: \"{}\"", self.destination);
        if !self.targets.is_empty() {
            let _ = writeln!(y, "  outbound:");
            let _ = writeln!(y, "    targets:");
            for (uri, priority, weight) in &self.targets {
                let _ = writeln!(
                    y,
                    "      - {{uri: \"{uri}\", priority: {priority}, weight: {weight}}}"
                );
            }
            if let Some((secret, realm)) = &self.outbound_auth {
                let _ = writeln!(
                    y,
                    "    auth: {{secretRef: {{name: {secret}}}, realm: \"{realm}\"}}"
                );
            }
            let _ = writeln!(y, "    callerIdPolicy: {}", self.policy);
            if let Some((interval, threshold)) = self.health_check {
                let _ = writeln!(
                    y,
                    "    healthCheck: {{intervalSeconds: {interval}, failureThreshold: {threshold}}}"
                );
            }
            if let Some(r) = &self.registration {
                let _ = writeln!(y, "    registration: {r}");
            }
            if let Some(s) = &self.selection {
                let _ = writeln!(y, "    selection: {s}");
            }
            if let Some(q) = &self.quality {
                let _ = writeln!(y, "    quality: {q}");
            }
        }
        if !self.routes.is_empty() || !self.rates.is_empty() {
            let rated = self.rates.iter().map(|(p, price, currency, increments)| {
                format!(
                    "{{prefix: \"{p}\", rate: {{perMinute: \"{price}\", currency: {currency}, increments: \"{increments}\"}}}}"
                )
            });
            let routes: Vec<String> = self
                .routes
                .iter()
                .map(|(p, prio)| format!("{{prefix: \"{p}\", priority: {prio}}}"))
                .chain(rated)
                .collect();
            let _ = writeln!(y, "  routes: [{}]", routes.join(", "));
        }
        if self.max_concurrent.is_some() || self.max_cps.is_some() {
            let mut parts = vec![];
            if let Some(n) = self.max_concurrent {
                parts.push(format!("maxConcurrentCalls: {n}"));
            }
            if let Some(n) = self.max_cps {
                parts.push(format!("maxCallsPerSecond: {n}"));
            }
            let _ = writeln!(y, "  limits: {{{}}}", parts.join(", "));
        }
        let mut media = vec![];
        if let Some(on) = self.media_relay {
            media.push(format!("relay: {on}"));
        }
        if !self.media_codecs.is_empty() {
            media.push(format!("codecs: [{}]", list(&self.media_codecs)));
        }
        if self.media_behind_nat {
            media.push("behindNat: true".to_string());
        }
        if let Some(p) = &self.media_srtp {
            media.push(format!("srtp: {p}"));
        }
        if !media.is_empty() {
            let _ = writeln!(y, "  media: {{{}}}", media.join(", "));
        }
        let mut tls = vec![];
        if let Some(n) = &self.tls_ca_secret {
            tls.push(format!("caSecretRef: {{name: {n}}}"));
        }
        if let Some(n) = &self.tls_server_name {
            tls.push(format!("serverName: \"{n}\""));
        }
        if !self.tls_client_names.is_empty() {
            tls.push(format!("clientNames: [{}]", list(&self.tls_client_names)));
        }
        if !tls.is_empty() {
            let _ = writeln!(y, "  tls: {{{}}}", tls.join(", "));
        }
        y
    }
}

/// Writes `trunk` into the lab's `acme.yaml` with the numbers most tests call:
/// `acme/numbers`, BYOC +6498879300-+6498879399 on trunk `pacific`.
pub fn write_acme(lab: &crate::Lab, trunk: &Trunk) {
    lab.write_config(
        "acme.yaml",
        &documents(&[
            trunk.yaml(),
            Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
        ]),
    );
}

/// A `NumberOwnership` under construction.
#[derive(Clone, Debug)]
pub struct Numbers {
    pub namespace: String,
    pub name: String,
    pub trunk: String,
    /// `Byoc` or `Platform`.
    pub kind: String,
    pub numbers: Vec<String>,
    pub verified: bool,
}

impl Numbers {
    /// BYOC numbers of `trunk` (numbers, ranges `+A-+B` or prefixes `+64*`).
    pub fn byoc(namespace: &str, name: &str, trunk: &str, numbers: &[&str]) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            trunk: trunk.into(),
            kind: "Byoc".into(),
            numbers: numbers.iter().map(|n| n.to_string()).collect(),
            verified: false,
        }
    }

    /// Platform numbers on `trunk`, verified by the carrier or not.
    pub fn platform(
        namespace: &str,
        name: &str,
        trunk: &str,
        numbers: &[&str],
        verified: bool,
    ) -> Self {
        Self {
            kind: "Platform".into(),
            verified,
            ..Self::byoc(namespace, name, trunk, numbers)
        }
    }

    pub fn yaml(&self) -> String {
        let numbers: Vec<String> = self.numbers.iter().map(|n| format!("\"{n}\"")).collect();
        let mut y = format!(
            "apiVersion: trunkgate.io/v1alpha1\nkind: NumberOwnership\nmetadata: {{name: {}, namespace: {}}}\nspec:\n  trunkRef: {{name: {}}}\n  kind: {}\n  numbers: [{}]\n",
            self.name,
            self.namespace,
            self.trunk,
            self.kind,
            numbers.join(", ")
        );
        if self.verified {
            y.push_str(
                "  verification: {verifiedBy: \"Carrier NOC\", verifiedAt: \"2026-11-02T10:00:00Z\", reference: \"NOC-1\"}\n",
            );
        }
        y
    }
}

/// A credentials Secret as the trunks reference it.
/// A Secret whose `ca.crt` is the PEM file at `ca` (a trunk's `tls.caSecretRef`).
pub fn ca_secret(namespace: &str, name: &str, ca: &std::path::Path) -> String {
    let pem = std::fs::read_to_string(ca).expect("read the CA certificate");
    let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{trunkgate.io/credentials: \"true\"}}\ntype: Opaque\nstringData:\n  ca.crt: |\n{indented}"
    )
}

pub fn secret(namespace: &str, name: &str, username: &str, password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{trunkgate.io/credentials: \"true\"}}\ntype: Opaque\nstringData: {{username: \"{username}\", password: \"{password}\"}}\n"
    )
}

/// Joins documents into one multi-document YAML file.
pub fn documents(docs: &[String]) -> String {
    docs.join("---\n")
}
