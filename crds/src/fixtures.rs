//! Chainable builders for tests and benchmarks: `CarrierTrunk::test("acme", "telco")
//! .with_cidr("203.0.113.0/28")`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::compile::Secrets;
use crate::{
    CallerIdPolicy, CarrierTrunk, CarrierTrunkSpec, Inbound, InboundAuth, NumberFormat, NumberKind,
    NumberOwnership, NumberOwnershipSpec, Outbound, OutboundAuth, Route, SecretRef, Target,
    TrunkRef, Verification,
};

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        generation: Some(1),
        uid: Some(format!("uid-{ns}-{name}")),
        ..ObjectMeta::default()
    }
}

fn at(secs: i64) -> Option<Time> {
    jiff::Timestamp::from_second(secs).ok().map(Time)
}

impl CarrierTrunk {
    /// A valid inbound-only trunk from 203.0.113.0/28 delivering to `sip:platform.<ns>.svc:5060`.
    pub fn test(ns: &str, name: &str) -> Self {
        CarrierTrunk {
            metadata: meta(ns, name),
            spec: CarrierTrunkSpec {
                inbound: Inbound {
                    allowed_cidrs: vec!["203.0.113.0/28".into()],
                    hostnames: vec![],
                    auth: None,
                    number_format: None,
                    destination: format!("sip:platform.{ns}.svc:5060"),
                },
                outbound: None,
                routes: vec![],
                limits: None,
                media: None,
                tls: None,
            },
            status: None,
        }
    }
    pub fn created_at(mut self, secs: i64) -> Self {
        self.metadata.creation_timestamp = at(secs);
        self
    }
    pub fn generation(mut self, g: i64) -> Self {
        self.metadata.generation = Some(g);
        self
    }
    pub fn with_cidrs(mut self, cidrs: &[&str]) -> Self {
        self.spec.inbound.allowed_cidrs = cidrs.iter().map(|c| c.to_string()).collect();
        self
    }
    pub fn with_hostnames(mut self, hosts: &[&str]) -> Self {
        self.spec.inbound.hostnames = hosts.iter().map(|c| c.to_string()).collect();
        self
    }
    pub fn with_destination(mut self, d: &str) -> Self {
        self.spec.inbound.destination = d.to_string();
        self
    }
    pub fn with_inbound_auth(mut self, realm: &str, secret: &str) -> Self {
        self.spec.inbound.auth = Some(InboundAuth {
            realm: realm.into(),
            secret_ref: SecretRef {
                name: secret.into(),
            },
            algorithms: vec![crate::DigestAlgorithm::Md5],
        });
        self
    }
    pub fn with_inbound_auth_algorithms(mut self, algorithms: &[crate::DigestAlgorithm]) -> Self {
        if let Some(a) = self.spec.inbound.auth.as_mut() {
            a.algorithms = algorithms.to_vec();
        }
        self
    }
    pub fn with_number_format(mut self, cc: &str) -> Self {
        self.spec.inbound.number_format = Some(NumberFormat {
            country_code: cc.into(),
            national_prefix: "0".into(),
            international_prefix: "00".into(),
        });
        self
    }
    pub fn with_targets(mut self, uris: &[&str]) -> Self {
        let targets = uris
            .iter()
            .enumerate()
            .map(|(i, u)| Target {
                uri: u.to_string(),
                transport: None,
                priority: i as u32 + 1,
                weight: 1,
            })
            .collect();
        let out = self.spec.outbound.get_or_insert_with(|| Outbound {
            targets: vec![],
            auth: None,
            caller_id_policy: CallerIdPolicy::Strict,
            health_check: None,
            registration: None,
            quality: None,
            selection: None,
        });
        out.targets = targets;
        self
    }
    pub fn with_policy(mut self, p: CallerIdPolicy) -> Self {
        if let Some(o) = self.spec.outbound.as_mut() {
            o.caller_id_policy = p;
        }
        self
    }
    pub fn with_outbound_auth(mut self, secret: &str, realm: Option<&str>) -> Self {
        if let Some(o) = self.spec.outbound.as_mut() {
            o.auth = Some(OutboundAuth {
                secret_ref: SecretRef {
                    name: secret.into(),
                },
                realm: realm.map(str::to_string),
            });
        }
        self
    }
    pub fn with_route(mut self, prefix: &str, priority: u32) -> Self {
        self.spec.routes.push(Route {
            prefix: prefix.into(),
            priority,
            rate: None,
        });
        self
    }

    /// A route to `prefix` at `per_minute` `currency` billed in `increments`.
    pub fn with_rate(
        mut self,
        prefix: &str,
        per_minute: &str,
        currency: &str,
        increments: &str,
    ) -> Self {
        self.spec.routes.push(Route {
            prefix: prefix.into(),
            priority: 100,
            rate: Some(crate::trunk::Rate {
                per_minute: per_minute.into(),
                currency: currency.into(),
                increments: increments.into(),
                connection_fee: None,
            }),
        });
        self
    }
}

impl NumberOwnership {
    /// BYOC numbers of `trunk`.
    pub fn test(ns: &str, name: &str, trunk: &str, numbers: &[&str]) -> Self {
        NumberOwnership {
            metadata: meta(ns, name),
            spec: NumberOwnershipSpec {
                trunk_ref: TrunkRef { name: trunk.into() },
                kind: NumberKind::Byoc,
                numbers: numbers.iter().map(|n| n.to_string()).collect(),
                verification: None,
            },
            status: None,
        }
    }
    pub fn created_at(mut self, secs: i64) -> Self {
        self.metadata.creation_timestamp = at(secs);
        self
    }
    /// Platform numbers, verified or not.
    pub fn platform(mut self, verified: bool) -> Self {
        self.spec.kind = NumberKind::Platform;
        self.spec.verification = verified.then(|| Verification {
            verified_by: "Carrier NOC".into(),
            verified_at: "2026-11-02T10:00:00Z".into(),
            reference: Some("PT-4471".into()),
        });
        self
    }
}

/// A Secret store holding one `username`/`password` Secret.
pub fn secret(ns: &str, name: &str, user: &str, pass: &str) -> Secrets {
    let mut data = BTreeMap::new();
    data.insert("username".to_string(), user.as_bytes().to_vec());
    data.insert("password".to_string(), pass.as_bytes().to_vec());
    let mut s = Secrets::new();
    s.insert((ns.to_string(), name.to_string()), data);
    s
}
