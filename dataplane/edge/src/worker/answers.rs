//! What leg B's INVITE gets back: provisional and final answers, the carrier's digest
//! challenge, failover, timeouts, the ACK of its 2xx.

use trunkgate_sip::Response;

use super::{Purpose, Timer, Worker};
use crate::call::b2bua::*;
use crate::sip::message::{Builder, via};
use crate::sip::msg;
use crate::sip::transaction::{T4, TransactionKey};

impl Worker {
    /// A response to a request we sent.
    pub(crate) fn client_response(&mut self, key: TransactionKey, resp: &Response) {
        let Some(tx) = self.clients.get(&key) else {
            return;
        };
        let (id, leg, purpose, cseq) = (tx.call, tx.leg, tx.purpose.clone(), tx.cseq);
        match purpose {
            Purpose::Setup => self.setup_response(id, key, resp),
            Purpose::Relay(server) => {
                self.relay_response(id, leg, server, key.method(), cseq, resp)
            }
            Purpose::Probe(probe) => {
                self.probe_answered(&probe, resp.status_code.code(), &reason_of(resp))
            }
            Purpose::Refresh => self.refresh_answered(id, leg, resp),
            Purpose::Register(trunk) => self.register_answered(&trunk, resp),
            Purpose::Bye | Purpose::Cancel => {}
        }
    }

    pub(super) fn setup_response(&mut self, id: u64, key: TransactionKey, resp: &Response) {
        let Some(c) = self.calls.get(&id) else {
            return;
        };
        if c.b_invite.as_ref() != Some(&key) {
            // An abandoned attempt (failover) answered late: accept and hang up at once.
            if (200..300).contains(&resp.status_code.code()) {
                self.ack_and_bye_stray(id, &key, resp, true);
            }
            return;
        }
        let step = self.drive(id, |c, ctx| c.on_setup_answer(ctx, &key, resp));
        if step == Some(crate::call::machine::SetupAnswer::Challenged) {
            self.invite_challenged(id, resp);
        }
    }

    /// The carrier challenged leg B's INVITE (RFC 3261 §22.2): answer once, once more only
    /// after `stale=true`, then give up naming the real cause.
    fn invite_challenged(&mut self, id: u64, resp: &Response) {
        let Some(c) = self.calls.get(&id) else {
            return;
        };
        let creds =
            c.rt.trunk(c.trunk)
                .outbound
                .as_ref()
                .and_then(|o| o.auth.clone());
        let tries = c.auth_tries;
        let ruri = c.b.remote_target.clone();
        let outcome = match creds {
            None => Err(crate::call::challenge::Unanswered::NoCredentials),
            Some(creds) => match self.auth.answer(resp, "INVITE", &ruri, &creds) {
                Err(why) => Err(crate::call::challenge::Unanswered::Unusable(why)),
                Ok((line, stale)) if tries == 0 || (stale && tries < 2) => Ok(line),
                Ok(_) => Err(crate::call::challenge::Unanswered::Refused {
                    username: creds.username.clone(),
                    realm: creds.realm.clone(),
                }),
            },
        };
        self.drive(id, |c, ctx| c.challenge_answered(ctx, outcome));
    }

    /// A request of ours that timed out or was abandoned.
    /// A request we sent got no answer (`cause`: `timeout`, or `connect_failed` when its TCP
    /// or TLS connection could not be opened): a call's next hop is tried, counted by cause.
    pub(crate) fn client_failed(
        &mut self,
        key: TransactionKey,
        code: u16,
        cause: &'static str,
        text: String,
    ) {
        let Some(tx) = self.clients.get_mut(&key) else {
            return;
        };
        tx.machine.give_up();
        let (id, purpose) = (tx.call, tx.purpose.clone());
        self.schedule(T4, Timer::ClientForget(key.clone()));
        match purpose {
            Purpose::Setup => {
                self.drive(id, |c, ctx| c.setup_failed(ctx, &key, code, cause, text));
            }
            Purpose::Relay(server) => self.refuse(&server, code, &text, ""),
            Purpose::Probe(probe) => self.probe_done(&probe, false, &text),
            Purpose::Refresh => self.refresh_failed(id, 408),
            Purpose::Register(trunk) => self.register_failed(&trunk, &text),
            Purpose::Bye | Purpose::Cancel => {}
        }
    }

    /// ACKs a 2xx that no call wants (a late answer of an abandoned attempt, another fork's
    /// answer) and, with `bye`, hangs its dialog up.
    pub(crate) fn ack_and_bye_stray(
        &mut self,
        _id: u64,
        key: &TransactionKey,
        resp: &Response,
        bye: bool,
    ) {
        let Some(tx) = self.clients.get(key) else {
            return;
        };
        let (side, dest, ruri, ident, cseq) = (
            tx.side,
            tx.dest.clone(),
            tx.ruri.clone(),
            tx.ident.clone(),
            tx.cseq,
        );
        let to = msg::header(resp, "To").unwrap_or_default().to_string();
        let target = msg::header(resp, "Contact")
            .map(msg::uri_of)
            .map(str::to_string)
            .unwrap_or(ruri);
        let hostport = self.shared.hostport_on(side, &dest).to_string();
        let requests: &[(&str, u32)] = if bye {
            &[("ACK", cseq), ("BYE", cseq + 1)]
        } else {
            &[("ACK", cseq)]
        };
        for &(method, n) in requests {
            let branch = self.mint.branch();
            let bytes =
                Builder::request_via(method, &target, &via(dest.transport(), &hostport, &branch))
                    .ids(&ident, &to, n, method)
                    .finish();
            // No transaction: an ACK of a 2xx has none (§13.2.2.4); this BYE is sent once.
            self.send(side, &dest, &bytes);
        }
    }
}
