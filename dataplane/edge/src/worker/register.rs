//! The worker's side of the trunks' registrations ([`crate::register`]): it sends the
//! REGISTERs the bindings ask for, looks registrars up, and brings the answers back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use trunkgate_crds::Transport;
use trunkgate_crds::snapshot::RegistrationConfig;
use trunkgate_sip::Response;

use super::{Lookup, Purpose, Timer, Worker};
use crate::call::{LegId, Side};
use crate::config::Runtime;
use crate::register::binding::{Binding, Change};
use crate::register::{Status, granted, registration_of, rfc3339};
use crate::sip::message::{Builder, via};
use crate::sip::msg;

impl Worker {
    /// Once a second (with the probes): the registrations this worker holds go out when due;
    /// ones whose trunk left the snapshot, or that another pod of the fleet now holds, are
    /// dropped.
    pub(crate) fn registration_tick(&mut self, rt: &Runtime) {
        let workers = self.shared.handoff.len();
        let now = self.now;
        let mine: Vec<(usize, &RegistrationConfig)> = rt
            .config
            .trunks
            .iter()
            .enumerate()
            .filter(|(i, _)| crate::route::health::prober_of(*i, workers) == self.index)
            .filter_map(|(i, t)| Some((i, t.outbound.as_ref()?.registration.as_ref()?)))
            .filter(|(i, _)| self.shared.fleet.leads(&rt.config.trunks[*i].id, now))
            .collect();
        let keep: Vec<&str> = mine
            .iter()
            .map(|(i, _)| rt.config.trunks[*i].id.as_str())
            .collect();
        let gone: Vec<String> = self
            .registrations
            .keys()
            .filter(|k| !keep.contains(&k.as_str()))
            .cloned()
            .collect();
        for trunk in gone {
            tracing::info!(
                trunk,
                "registration no longer held here (trunk gone, or another edge of the fleet holds it)"
            );
            self.registrations.remove(&trunk);
            self.set_registration_status(&trunk, None);
        }
        for (i, reg) in mine {
            let trunk = &rt.config.trunks[i];
            let id = trunk.id.clone();
            if !self.registrations.contains_key(&id) {
                let b = Binding::new(self.mint.call_id(), self.mint.tag(), reg.expires, now);
                tracing::info!(trunk = id, aor = reg.aor, "registering with the carrier");
                self.registrations.insert(id.clone(), b);
            }
            if self.registrations.get(&id).is_some_and(|b| b.due(now)) {
                self.start_register(&id, reg);
            }
        }
    }

    /// Sends the trunk's REGISTER, resolving the registrar first when it is a name.
    fn start_register(&mut self, trunk: &str, reg: &RegistrationConfig) {
        let Some(b) = self.registrations.get_mut(trunk) else {
            return;
        };
        // In flight from here: a failure to send is an answer too.
        let (cseq, expires) = b.sending();
        let hop = crate::route::admission::hop_of(&reg.registrar);
        let trunk: Arc<str> = trunk.into();
        match hop.addr {
            Some(addr) => self.send_register(trunk, reg, addr, hop.transport, cseq, expires),
            None => self.resolve(
                &hop,
                Lookup::Register {
                    trunk,
                    cseq,
                    expires,
                },
            ),
        }
    }

    /// The registrar's address came back (or did not).
    pub(crate) fn on_register_resolved(
        &mut self,
        trunk: Arc<str>,
        cseq: u32,
        expires: u32,
        result: Result<Vec<trunkgate_resolve::Destination>, trunkgate_resolve::Error>,
    ) {
        let rt = self.shared.runtime.load_full();
        let Some(reg) = registration_of(&rt, &trunk) else {
            return;
        };
        match result.as_deref().map(<[_]>::first) {
            Ok(Some(d)) => {
                self.shared.prefilter.allow_ip(d.addr.ip());
                let transport = crate::route::hop::crds_transport(d.transport);
                self.send_register(trunk, reg, d.addr, transport, cseq, expires)
            }
            Ok(None) => self.register_failed(&trunk, "the registrar's name has no address"),
            Err(e) => self.register_failed(&trunk, &e.to_string()),
        }
    }

    fn send_register(
        &mut self,
        trunk: Arc<str>,
        reg: &RegistrationConfig,
        addr: SocketAddr,
        transport: Transport,
        cseq: u32,
        expires: u32,
    ) {
        let carrier = self.shared.tls.trunk(&trunk);
        let hop = crate::route::admission::hop_of(&reg.registrar);
        let dest = match self.link_to(Side::Public, addr, transport, &hop.host, carrier.as_deref())
        {
            Ok(l) => l,
            Err(e) => return self.register_failed(&trunk, &e.to_string()),
        };
        let Some(b) = self.registrations.get(&*trunk) else {
            return;
        };
        let hostport = self.shared.hostport_on(Side::Public, &dest).to_string();
        let branch = self.mint.branch();
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
        let key = self.open_client(
            0,
            LegId::B,
            Purpose::Register(trunk),
            Side::Public,
            dest,
            trunkgate_sip::Method::Register,
            branch,
            bytes,
            ruri,
            ident,
            cseq,
        );
        let after = self.shared.settings.failover_timeout();
        self.schedule(after, Timer::Failover(key));
    }

    /// The registrar's final answer (a challenge was answered before this, if it could be).
    pub(crate) fn register_answered(&mut self, trunk: &str, resp: &Response) {
        let code = resp.status_code.code();
        if code < 200 {
            return;
        }
        let rt = self.shared.runtime.load_full();
        let Some(reg) = registration_of(&rt, trunk) else {
            return;
        };
        let hostport = self.shared.hostport(Side::Public).to_string();
        let granted = granted(resp, &reg.user, &hostport);
        let min = msg::header(resp, "Min-Expires").and_then(|v| v.trim().parse().ok());
        let cseq = trunkgate_sip::cseq(resp).map_or(0, |(n, _)| n);
        let reason = crate::call::b2bua::reason_of(resp);
        let (now, wall) = (self.now, SystemTime::now());
        let Some(b) = self.registrations.get_mut(trunk) else {
            return;
        };
        let change = b.answered(now, wall, code, &reason, cseq, granted, min);
        self.registration_changed(trunk, change);
    }

    /// The REGISTER got no answer, or could not be sent.
    pub(crate) fn register_failed(&mut self, trunk: &str, why: &str) {
        let now = self.now;
        let Some(b) = self.registrations.get_mut(trunk) else {
            return;
        };
        let change = b.no_answer(now, why);
        self.registration_changed(trunk, change);
    }

    fn registration_changed(&mut self, trunk: &str, change: Change) {
        let Some(b) = self.registrations.get(trunk) else {
            return;
        };
        let m = &self.shared.metrics;
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
                    still_registered = b.registered(self.now),
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
            registered: b.registered(self.now),
            expires: b.expires_at(self.now).and_then(rfc3339),
            registrant: self.shared.identity.clone(),
            last_error: b.last_error.clone(),
        };
        m.registration_up
            .with_label_values(&[trunk])
            .set(i64::from(status.registered));
        self.set_registration_status(trunk, Some(status));
    }

    fn set_registration_status(&self, trunk: &str, status: Option<Status>) {
        let mut map = self
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
                let _ = self
                    .shared
                    .metrics
                    .registration_up
                    .remove_label_values(&[trunk]);
            }
        }
    }
}
