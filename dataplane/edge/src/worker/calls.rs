//! The worker's side of the call machine ([`crate::call::machine`]): it hands a call its
//! input with a context that reaches nothing else, then carries out the call's effects
//! (transactions, timers, checkpoints, the end of the call), in order.

use trunkgate_sip::Response;

use super::{Purpose, Shared, Timer, Worker};
use crate::call::machine::{CallPurpose, CallTimer, Ctx, Effect, Env};
use crate::call::{Call, LegId, Side};
use crate::sip::transaction::TransactionKey;
use crate::transport::Link;

impl Env for Shared {
    fn hostport_on(&self, side: Side, link: &Link) -> &str {
        Shared::hostport_on(self, side, link)
    }
    fn allow_source(&self, ip: std::net::IpAddr) {
        self.prefilter.allow_ip(ip);
    }
    fn platform(&self) -> &crate::guard::platform::PlatformAcl {
        &self.platform
    }
    fn settings(&self) -> &crate::config::settings::Settings {
        &self.settings
    }
    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }
}

impl From<CallPurpose> for Purpose {
    fn from(p: CallPurpose) -> Self {
        match p {
            CallPurpose::Setup => Purpose::Setup,
            CallPurpose::Relay(k) => Purpose::Relay(k),
            CallPurpose::Bye => Purpose::Bye,
            CallPurpose::Refresh => Purpose::Refresh,
        }
    }
}

impl Worker {
    /// Runs `f` on call `id` with its context, then carries out what it asked (None: no such
    /// call).
    pub(crate) fn drive<R>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut Call, &mut Ctx) -> R,
    ) -> Option<R> {
        // The buffer is reused: a transition costs no allocation for its effects. (A drive
        // nested in carrying out effects gets a fresh one.)
        let mut effects = std::mem::take(&mut self.effects);
        let r = {
            let Some(c) = self.calls.get_mut(&id) else {
                self.effects = effects;
                return None;
            };
            let mut ctx = Ctx {
                now: self.now,
                mint: &mut self.mint,
                env: &*self.shared,
                media: self.media.as_mut(),
                out: &mut effects,
            };
            f(c, &mut ctx)
        };
        self.apply(id, &mut effects);
        self.effects = effects;
        Some(r)
    }

    /// Carries out call `id`'s effects, in order.
    fn apply(&mut self, id: u64, effects: &mut Vec<Effect>) {
        for e in effects.drain(..) {
            match e {
                Effect::Request(s) => {
                    let s = *s;
                    self.open_client(
                        id,
                        s.leg,
                        s.purpose.into(),
                        s.side,
                        s.dest,
                        s.method,
                        s.branch,
                        s.bytes,
                        s.ruri,
                        s.ident,
                        s.cseq,
                    );
                }
                Effect::Respond {
                    key,
                    code,
                    reason,
                    lines,
                    body,
                } => self.respond(&key, code, &reason, &lines, &body),
                Effect::Refuse {
                    key,
                    code,
                    text,
                    extra,
                } => self.refuse(&key, code, &text, &extra),
                Effect::Timer { after, timer } => self.schedule(after, timer_of(id, timer)),
                Effect::Send { side, dest, bytes } => self.out.send(side, &dest, &bytes),
                Effect::CancelB => self.send_cancel(id),
                Effect::NextHop => self.next_hop(id),
                Effect::InviteTo(addr) => self.send_b_invite(id, addr),
                Effect::Resolve(hop) => self.resolve(&hop, super::Lookup::Call(id)),
                Effect::AwaitAck => self.await_ack(id),
                Effect::Checkpoint => self.checkpoint(id),
                Effect::ForgetCheckpoint => {
                    if let Some(c) = self.calls.get(&id) {
                        self.shared.fleet.journal(c.a.local_tag.clone(), None);
                    }
                }
                Effect::Record => {
                    if let Some(c) = self.calls.get(&id) {
                        crate::call::cdr::write(c);
                    }
                }
                Effect::Finish => self.finish_call(id),
            }
        }
    }

    /// Ends a call from one leg (or from the edge itself when `from` is None).
    pub(crate) fn end_call(&mut self, id: u64, from: Option<LegId>, why: &'static str) {
        self.drive(id, |c, ctx| c.end(ctx, from, why));
    }

    pub(crate) fn ringing_too_long(&mut self, id: u64, key: &TransactionKey) {
        self.drive(id, |c, ctx| c.ringing_too_long(ctx, key));
    }

    pub(crate) fn relay_response(
        &mut self,
        id: u64,
        sent_on: LegId,
        server: TransactionKey,
        method: trunkgate_sip::Method,
        cseq: u32,
        resp: &Response,
    ) {
        self.drive(id, |c, ctx| {
            c.relay_response(ctx, sent_on, server, method, cseq, resp)
        });
    }

    pub(crate) fn session_due(&mut self, id: u64, leg: LegId) {
        self.drive(id, |c, ctx| c.session_due(ctx, leg));
    }

    pub(crate) fn refresh_answered(&mut self, id: u64, leg: LegId, resp: &Response) {
        self.drive(id, |c, ctx| c.refresh_answered(ctx, leg, resp));
    }

    pub(crate) fn refresh_failed(&mut self, id: u64, code: u16) {
        self.drive(id, |c, ctx| c.refresh_failed(ctx, code));
    }
}

fn timer_of(id: u64, t: CallTimer) -> Timer {
    match t {
        CallTimer::Session(leg) => Timer::Session(id, leg),
        CallTimer::Ringing(key) => Timer::Ringing(id, key),
        CallTimer::Failover(key) => Timer::Failover(key),
        CallTimer::Forget => Timer::CallForget(id),
    }
}
