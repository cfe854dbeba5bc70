//! A new INVITE's admission: the route's checks ([`crate::route::admission`]) with what this
//! edge knows of the source (its TLS client certificate, the platform source's tenancy); a
//! refusal is counted by trunk, direction and reason.

use trunkgate_sip::Request;

use std::time::Instant;

use super::Shared;
use super::transactions::Transactions;
use crate::call::Side;
use crate::config::Runtime;
use crate::guard::auth::AuthState;
use crate::guard::platform::Tenancy;
use crate::route::admission::{self, Admission, Refusal};
use crate::sip::transaction::TransactionKey;
use crate::transport::Link;

/// The metric label of a call's direction by the side its INVITE came from.
pub fn direction_label(side: Side) -> &'static str {
    match side {
        Side::Public => "inbound",
        Side::Internal => "outbound",
    }
}

/// Admits the INVITE `req` from `src` on `side` against `rt`, or says why not (counted).
pub fn admit(
    shared: &Shared,
    rt: &Runtime,
    auth: &mut AuthState,
    side: Side,
    src: &Link,
    req: &Request,
) -> Result<Admission, Refusal> {
    let host = shared.hostport(side.other());
    let admitted = match side {
        Side::Public => {
            let tls = &shared.tls;
            let chain = src.peer_chain();
            // No trunk asks for a client certificate (the usual case): no lookups per INVITE.
            let asks = tls.asks_clients();
            let client_cert = |t: u32| {
                if !asks {
                    return None;
                }
                let wanted = tls
                    .trunk(&rt.trunk(t).id)
                    .filter(|tt| tt.wants_client_certificate())?;
                Some(chain.is_some_and(|c| wanted.accepts_client(c)))
            };
            admission::inbound(rt, auth, src.addr(), req, host, client_cert)
        }
        Side::Internal => {
            let tenancy = shared
                .platform
                .tenancy(src.addr().ip())
                .unwrap_or(Tenancy::Only(Vec::new()));
            admission::outbound(rt, req, host, &tenancy)
        }
    };
    admitted.inspect_err(|r| {
        let trunk = r.trunk.map_or("", |t| rt.trunk(t).id.as_str());
        let m = &shared.metrics;
        m.refusals
            .with_label_values(&[trunk, direction_label(side), r.reason])
            .inc();
        if side == Side::Public && (r.code == 403 || r.code == 401 && r.reason != "challenge") {
            m.auth_failures.with_label_values(&[trunk, r.reason]).inc();
        }
    })
}

/// A new call refused for want of room (a set-up cap, RTP ports): 503 with Retry-After, counted.
pub struct Busy<'a> {
    pub trunk: &'a str,
    pub direction: &'static str,
    /// The refusal's metric label.
    pub reason: &'static str,
    pub key: &'a TransactionKey,
    pub now: Instant,
}

impl Busy<'_> {
    pub fn refuse(self, shared: &Shared, sip: &mut Transactions, text: &str) {
        shared
            .metrics
            .refusals
            .with_label_values(&[self.trunk, self.direction, self.reason])
            .inc();
        let trunk = Some(self.trunk);
        sip.refuse_for(self.now, self.key, trunk, 503, text, "Retry-After: 5\r\n");
    }
}
