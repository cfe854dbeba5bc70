//! The worker's side of the trunks' registrations ([`crate::register`]): it sends the
//! REGISTERs the bindings ask for, looks registrars up, and brings the answers back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use trunkgate_crds::Transport;
use trunkgate_crds::snapshot::RegistrationConfig;
use trunkgate_sip::Response;

use super::io::Io;
use super::transactions::NewClient;
use super::{Lookup, Purpose, Table, Timer};
use crate::call::{LegId, Side};
use crate::config::Runtime;
use crate::register::binding::{Binding, Change};
use crate::register::{Status, granted, registration_of, rfc3339};
use crate::sip::message::{Builder, via};
use crate::sip::msg;

/// The trunk registrations one worker holds, by trunk id.
#[derive(Default)]
pub struct Registrar {
    bindings: Table<String, Binding>,
}

impl Registrar {
    /// Once a second (with the probes): the registrations of the trunks worker `index` probes
    /// go out when due; ones whose trunk left the snapshot, or that another pod of the fleet
    /// now holds, are dropped.
    pub fn tick(&mut self, io: &mut Io, rt: &Runtime, index: usize) {
        let workers = io.shared.handoff.len();
        let now = io.now;
        let mine: Vec<(usize, &RegistrationConfig)> = rt
            .config
            .trunks
            .iter()
            .enumerate()
            .filter(|(i, _)| crate::route::health::prober_of(*i, workers) == index)
            .filter_map(|(i, t)| Some((i, t.outbound.as_ref()?.registration.as_ref()?)))
            .filter(|(i, _)| io.shared.fleet.leads(&rt.config.trunks[*i].id, now))
            .collect();
        let keep: Vec<&str> = mine
            .iter()
            .map(|(i, _)| rt.config.trunks[*i].id.as_str())
            .collect();
        let gone: Vec<String> = self
            .bindings
            .keys()
            .filter(|k| !keep.contains(&k.as_str()))
            .cloned()
            .collect();
        for trunk in gone {
            tracing::info!(
                trunk,
                "registration no longer held here (trunk gone, or another edge of the fleet holds it)"
            );
            self.bindings.remove(&trunk);
            set_status(io, &trunk, None);
        }
        for (i, reg) in mine {
            let id = rt.config.trunks[i].id.clone();
            if !self.bindings.contains_key(&id) {
                let b = Binding::new(io.mint.call_id(), io.mint.tag(), reg.expires, now);
                tracing::info!(trunk = id, aor = reg.aor, "registering with the carrier");
                self.bindings.insert(id.clone(), b);
            }
            if self.bindings.get(&id).is_some_and(|b| b.due(now)) {
                self.start(io, &id, reg);
            }
        }
    }

    /// Sends the trunk's REGISTER, resolving the registrar first when it is a name.
    fn start(&mut self, io: &mut Io, trunk: &str, reg: &RegistrationConfig) {
        let Some(b) = self.bindings.get_mut(trunk) else {
            return;
        };
        // In flight from here: a failure to send is an answer too.
        let (cseq, expires) = b.sending();
        let hop = crate::route::admission::hop_of(&reg.registrar);
        let trunk: Arc<str> = trunk.into();
        match hop.addr {
            Some(addr) => self.send(io, trunk, reg, addr, hop.transport, cseq, expires),
            None => {
                let lookup = Lookup::Register {
                    trunk: trunk.clone(),
                    cseq,
                    expires,
                };
                if let Err(e) = io.resolve(&hop, lookup) {
                    self.failed(io, &trunk, &e.to_string());
                }
            }
        }
    }

    /// The registrar's address came back (or did not).
    pub fn on_resolved(
        &mut self,
        io: &mut Io,
        trunk: Arc<str>,
        cseq: u32,
        expires: u32,
        result: Result<Vec<trunkgate_resolve::Destination>, trunkgate_resolve::Error>,
    ) {
        let rt = io.shared.runtime.load_full();
        let Some(reg) = registration_of(&rt, &trunk) else {
            return;
        };
        match result.as_deref().map(<[_]>::first) {
            Ok(Some(d)) => {
                io.shared.prefilter.allow_ip(d.addr.ip());
                let transport = crate::route::hop::crds_transport(d.transport);
                self.send(io, trunk, reg, d.addr, transport, cseq, expires)
            }
            Ok(None) => self.failed(io, &trunk, "the registrar's name has no address"),
            Err(e) => self.failed(io, &trunk, &e.to_string()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        io: &mut Io,
        trunk: Arc<str>,
        reg: &RegistrationConfig,
        addr: SocketAddr,
        transport: Transport,
        cseq: u32,
        expires: u32,
    ) {
        let carrier = io.shared.tls.trunk(&trunk);
        let hop = crate::route::admission::hop_of(&reg.registrar);
        let dest = match io.link_to(Side::Public, addr, transport, &hop.host, carrier.as_deref()) {
            Ok(l) => l,
            Err(e) => return self.failed(io, &trunk, &e.to_string()),
        };
        let Some(b) = self.bindings.get(&*trunk) else {
            return;
        };
        let hostport = io.shared.hostport_on(Side::Public, &dest).to_string();
        let branch = io.mint.branch();
        let scheme = if reg.registrar.secure { "sips" } else { "sip" };
        let ruri = format!("{scheme}:{}", hop.uri_host);
        let ident = format!(
            "From: <{}>;tag={}\r\nCall-ID: {}\r\n",
            reg.aor, b.tag, b.call_id
        );
        let param = match dest.transport() {
            "TCP" => ";transport=tcp",
            "TLS" => ";transport=tls",
            _ => "",
        };
        let contact = format!("<sip:{}@{hostport}{param}>", reg.user);
        let bytes = Builder::request_via(
            "REGISTER",
            &ruri,
            &via(dest.transport(), &hostport, &branch),
        )
        .ids(&ident, &format!("<{}>", reg.aor), cseq, "REGISTER")
        .header("Contact", &contact)
        .header("Expires", &expires.to_string())
        .header("Allow", crate::worker::ALLOW)
        .body(&[]);
        let key = io.open_client(NewClient {
            call: 0,
            leg: LegId::B,
            purpose: Purpose::Register(trunk),
            side: Side::Public,
            dest,
            method: trunkgate_sip::Method::Register,
            branch,
            bytes,
            ruri,
            ident,
            cseq,
        });
        let after = io.shared.settings.failover_timeout();
        io.schedule(after, Timer::Failover(key));
    }

    /// The registrar's final answer (a challenge was answered before this, if it could be).
    pub fn answered(&mut self, io: &mut Io, trunk: &str, resp: &Response) {
        let code = resp.status_code.code();
        if code < 200 {
            return;
        }
        let rt = io.shared.runtime.load_full();
        let Some(reg) = registration_of(&rt, trunk) else {
            return;
        };
        let granted = granted(resp, &reg.user, io.shared.hostport(Side::Public));
        let min = msg::header(resp, "Min-Expires").and_then(|v| v.trim().parse().ok());
        let cseq = trunkgate_sip::cseq(resp).map_or(0, |(n, _)| n);
        let reason = crate::call::b2bua::reason_of(resp);
        let Some(b) = self.bindings.get_mut(trunk) else {
            return;
        };
        let change = b.answered(io.now, SystemTime::now(), code, &reason, cseq, granted, min);
        self.changed(io, trunk, change);
    }

    /// The REGISTER got no answer, or could not be sent.
    pub fn failed(&mut self, io: &mut Io, trunk: &str, why: &str) {
        let Some(b) = self.bindings.get_mut(trunk) else {
            return;
        };
        let change = b.no_answer(io.now, why);
        self.changed(io, trunk, change);
    }

    fn changed(&mut self, io: &mut Io, trunk: &str, change: Change) {
        let Some(b) = self.bindings.get(trunk) else {
            return;
        };
        let m = &io.shared.metrics;
        match &change {
            Change::Registered { expires } => {
                m.registrations.with_label_values(&[trunk, "ok"]).inc();
                tracing::info!(
                    trunk,
                    expires,
                    call_id = b.call_id,
                    "registered with the carrier"
                );
            }
            Change::Failed { retry_in } => {
                m.registrations.with_label_values(&[trunk, "failed"]).inc();
                tracing::warn!(
                    trunk,
                    error = b.last_error.as_deref().unwrap_or_default(),
                    retry_in_seconds = retry_in.as_secs(),
                    still_registered = b.registered(io.now),
                    "registration failed"
                );
            }
            Change::TooBrief { min_expires } => {
                tracing::info!(
                    trunk,
                    min_expires,
                    "registrar wants a longer lifetime: asking again"
                );
            }
            Change::None => return,
        }
        let status = Status {
            registered: b.registered(io.now),
            expires: b.expires_at(io.now).and_then(rfc3339),
            registrant: io.shared.identity.clone(),
            last_error: b.last_error.clone(),
        };
        m.registration_up
            .with_label_values(&[trunk])
            .set(i64::from(status.registered));
        set_status(io, trunk, Some(status));
    }
}

/// Publishes a registration's status for `/snapshot` (None: no longer held here).
fn set_status(io: &Io, trunk: &str, status: Option<Status>) {
    let mut map = io
        .shared
        .registrations
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match status {
        Some(s) => {
            map.insert(trunk.to_string(), s);
        }
        None => {
            map.remove(trunk);
            let _ = io
                .shared
                .metrics
                .registration_up
                .remove_label_values(&[trunk]);
        }
    }
}
