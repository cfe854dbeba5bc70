//! A new call: admission, leg A's server transaction and leg B's first INVITE.

use trunkgate_sip::Request;

use super::Worker;
use crate::call::machine::{Ctx, NewCall};
use crate::call::{Call, LegId, Side};
use crate::guard::platform::Tenancy;
use crate::route::admission;
use crate::transport::Link;

impl Worker {
    pub(crate) fn on_new_invite(&mut self, side: Side, src: &Link, req: &Request) {
        let tag = self.mint.tag();
        let key = self.open_server(side, src, req, Some(&tag));
        if self.draining() {
            return self.refuse(
                &key,
                503,
                "edge is draining for maintenance",
                "Retry-After: 30\r\n",
            );
        }
        let rt = self.shared.runtime.load_full();
        let host = self.hostport(side.other()).to_string();
        let admitted = match side {
            Side::Public => {
                let tls = &self.shared.tls;
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
                admission::inbound(&rt, &mut self.auth, src.addr(), req, &host, client_cert)
            }
            Side::Internal => {
                let tenancy = self
                    .shared
                    .platform
                    .tenancy(src.addr().ip())
                    .unwrap_or(Tenancy::Only(Vec::new()));
                admission::outbound(&rt, req, &host, &tenancy)
            }
        };
        let adm = match admitted {
            Ok(a) => a,
            Err(r) => {
                let trunk = r.trunk.map_or("", |t| rt.trunk(t).id.as_str());
                let dir = if side == Side::Public {
                    "inbound"
                } else {
                    "outbound"
                };
                self.metrics()
                    .refusals
                    .with_label_values(&[trunk, dir, r.reason])
                    .inc();
                if side == Side::Public
                    && (r.code == 403 || r.code == 401 && r.reason != "challenge")
                {
                    self.metrics()
                        .auth_failures
                        .with_label_values(&[trunk, r.reason])
                        .inc();
                }
                let trunk = r.trunk.map(|t| rt.trunk(t).id.as_str());
                return self.refuse_for(&key, trunk, r.code, &r.text, &r.extra);
            }
        };
        let dir = if side == Side::Public {
            "inbound"
        } else {
            "outbound"
        };
        let trunk_cfg = rt.trunk(adm.trunk);
        let max_setup = trunk_cfg
            .limits
            .max_calls_in_setup
            .unwrap_or(self.shared.settings.max_calls_in_setup);
        let trunk_state = &rt.state[adm.trunk as usize];
        // This process's own count: the whole limit, or its share while the fleet's store is
        // unreachable. With a reachable store the fleet's count decides (`on_claimed`).
        let own_max_setup = crate::fleet::share_of(max_setup, rt.share());
        let mut setup = trunk_state.begin_setup(own_max_setup);
        if setup.is_err() && self.recycle_unacked(|c| c.trunk_id() == trunk_cfg.id) {
            setup = trunk_state.begin_setup(own_max_setup);
        }
        let setup = match setup {
            Ok(s) => s,
            Err(n) => {
                self.metrics()
                    .refusals
                    .with_label_values(&[trunk_cfg.id.as_str(), dir, "max_calls_in_setup"])
                    .inc();
                let text = format!("trunk is at its limit of {n} calls in set-up");
                return self.refuse_for(
                    &key,
                    Some(&trunk_cfg.id),
                    503,
                    &text,
                    "Retry-After: 5\r\n",
                );
            }
        };
        let setup_source = if side == Side::Public {
            let ip = src.addr().ip();
            // The trunks that allow this source size its share (issue 26): an SBC carrying a
            // trunk's every call from one address gets the trunk's set-up limit, not only
            // the edge-wide --max-calls-in-setup-per-source.
            let cap = rt.source_setup_budget(ip);
            let census = self.shared.setup_sources.clone();
            let mut admitted = census.admit_up_to(Some(ip), cap);
            if admitted.is_err()
                && self.recycle_unacked(|c| c.setup_source.is_some() && c.a.peer.addr().ip() == ip)
            {
                admitted = census.admit_up_to(Some(ip), cap);
            }
            match admitted {
                Ok(a) => Some(a),
                Err(_) => {
                    self.metrics()
                        .refusals
                        .with_label_values(&[trunk_cfg.id.as_str(), dir, "source_calls_in_setup"])
                        .inc();
                    let text = "this address has its most calls in set-up";
                    return self.refuse_for(
                        &key,
                        Some(&trunk_cfg.id),
                        503,
                        text,
                        "Retry-After: 5\r\n",
                    );
                }
            }
        } else {
            None
        };
        // One trunk cannot take the ports every trunk needs: under pressure it gets its share.
        if trunk_cfg.media.relay
            && let Some(engine) = self.media.as_ref()
        {
            let mine = self.rtp_by_trunk.get(&trunk_cfg.id).copied().unwrap_or(0);
            if !crate::call::media::may_take_ports(
                engine.ports_available(),
                engine.port_pairs(),
                mine,
                rt.relay_trunks,
            ) {
                self.metrics()
                    .refusals
                    .with_label_values(&[trunk_cfg.id.as_str(), dir, "rtp_share"])
                    .inc();
                return self.refuse(
                    &key,
                    503,
                    "trunk holds its share of this edge's RTP ports",
                    "Retry-After: 5\r\n",
                );
            }
        }
        let id = self.next_call;
        self.next_call += 1;
        // Media: the offer goes through this worker's relay unless the trunk says otherwise.
        let trunk_media = &rt.trunk(adm.trunk).media;
        let (media, b_body) = if trunk_media.relay {
            let policy = crate::call::media::peer_policy(
                &self.shared.platform,
                rt.trunk(adm.trunk),
                side,
                src.addr().ip(),
            );
            match crate::call::media::open(
                &mut self.media,
                id,
                side,
                &req.body,
                &trunk_media.codecs,
                &policy,
                crate::call::media::srtp_policy(trunk_media.srtp),
            ) {
                Ok((session, body)) => {
                    *self
                        .rtp_by_trunk
                        .entry(rt.trunk(adm.trunk).id.clone())
                        .or_insert(0) += 1;
                    (Some(session), body)
                }
                Err(r) => {
                    let trunk = rt.trunk(adm.trunk).id.as_str();
                    let dir = if side == Side::Public {
                        "inbound"
                    } else {
                        "outbound"
                    };
                    self.shared
                        .metrics
                        .refusals
                        .with_label_values(&[trunk, dir, r.label])
                        .inc();
                    return self.refuse_for(
                        &key,
                        Some(&rt.trunk(adm.trunk).id),
                        r.code,
                        &r.text,
                        "",
                    );
                }
            }
        } else {
            (None, req.body.clone())
        };
        // RFC 3261 §17.2.1: the B2BUA will take more than 200 ms to answer.
        self.respond(&key, 100, "Trying", "", &[]);
        let claim = self
            .shared
            .fleet
            .is_shared()
            .then(|| crate::fleet::ClaimRequest {
                trunk: trunk_cfg.id.clone(),
                max_concurrent: trunk_cfg.limits.max_concurrent_calls,
                max_per_second: trunk_cfg.limits.max_calls_per_second,
                max_in_setup: max_setup,
            });
        if let Some(tx) = self.servers.get_mut(&key) {
            tx.call = Some((id, LegId::A));
        }
        let new = NewCall {
            rt: rt.clone(),
            admission: adm,
            invite: key,
            side,
            src: src.clone(),
            tag,
            b_body,
            media,
            setup,
            setup_source,
        };
        let mut effects = Vec::new();
        let call = Call::new(
            &mut Ctx {
                now: self.now,
                mint: &mut self.mint,
                env: &*self.shared,
                media: None,
                out: &mut effects,
            },
            new,
            req,
        );
        self.dialogs.insert(
            (call.a.call_id.clone(), call.a.local_tag.clone()),
            (id, LegId::A),
        );
        self.dialogs.insert(
            (call.b.call_id.clone(), call.b.local_tag.clone()),
            (id, LegId::B),
        );
        self.calls.insert(id, call);
        match claim {
            // The fleet's count first: the call waits for the store as it would for DNS.
            Some(req) => self
                .out
                .push(crate::worker::Output::Claim { call: id, req }),
            None => self.next_hop(id),
        }
    }

    /// The fleet's answer to a call's claim ([`Call::on_claimed`]).
    pub(crate) fn on_claimed(&mut self, id: u64, verdict: crate::fleet::Verdict) {
        self.drive(id, |c, ctx| c.on_claimed(ctx, verdict));
    }
}
