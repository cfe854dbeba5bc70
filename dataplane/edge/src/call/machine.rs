//! The call as a machine of its own: a transition takes an input (a request or an answer on one
//! of its legs, a timer) and a narrow context ([`Ctx`]: the time, the id mint, what the call
//! reads of the edge, its relay) and records what it wants done as [`Effect`]s, in order. It
//! cannot reach another call or the worker's tables; the worker carries the effects out
//! (transactions, timers, checkpoints, the end of the call).
//!
//! The transitions cover a call's whole life: set-up (the fleet's verdict, hops, lookups, leg
//! B's INVITE per hop, its answers, failover, redirects, the outcome of a carrier's challenge),
//! in dialog (BYE either way, ACK, CANCEL, relayed re-INVITE, UPDATE, PRACK and INFO and their
//! answers, a 2xx again or from another fork), timers (RFC 4028 session timers, ringing too
//! long), relay events (media timeout), the edge's own decisions (shutdown, making room, an
//! adopted orphan) and the end (record, charge, quality of the target that was tried).

use std::time::{Duration, Instant};

use trunkgate_media::MediaEngine;
use trunkgate_sip::{Method, Request, Response};

use super::b2bua::session_timer::{MIN_SE, SessionTimer, session_expires};
use super::{Attempt, Call, CallState, LegId, Side};
use crate::route::health::quality_clock;
use crate::sip::ids::IdMint;
use crate::sip::msg;
use crate::sip::transaction::TransactionKey;
use crate::transport::Link;

/// What a call reads of the edge it runs on.
pub trait Env {
    /// host:port of the edge in Via and Contact on `side`, over `link`'s transport.
    fn hostport_on(&self, side: Side, link: &Link) -> &str;
    /// Lets answers from `ip` (a carrier target just looked up) through the kernel filter.
    fn allow_source(&self, ip: std::net::IpAddr);
    /// The platform's allow-list (its sources are trusted with their SDP addresses).
    fn platform(&self) -> &crate::guard::platform::PlatformAcl;
    fn settings(&self) -> &crate::config::settings::Settings;
    fn metrics(&self) -> &crate::metrics::Metrics;
    /// Whether the fleet's store counts the trunks' limits (a call changing trunk claims a
    /// place on the new one there).
    fn fleet_shared(&self) -> bool;
    /// What an attempt or a call to carrier `target` of `trunk` did, for the fleet's window
    /// of it (nothing with the embedded store: this process is the fleet).
    fn share_quality(&self, trunk: &str, target: &str, delta: &crate::quality::Counts);
}

/// What a transition may use, and where its effects go.
pub struct Ctx<'a> {
    pub now: Instant,
    pub mint: &'a mut IdMint,
    pub env: &'a dyn Env,
    /// The worker's relay (None: it could not start).
    pub media: Option<&'a mut MediaEngine>,
    pub out: &'a mut Vec<Effect>,
}

impl Ctx<'_> {
    fn push(&mut self, e: Effect) {
        self.out.push(e);
    }
}

/// Why the call sends a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallPurpose {
    /// The INVITE that sets up leg B.
    Setup,
    /// A request relayed from the other leg; its answer goes back to that server transaction.
    Relay(TransactionKey),
    /// A BYE ending this leg.
    Bye,
    /// An UPDATE of ours refreshing this leg's session (RFC 4028).
    Refresh,
}

/// A request the call sends on one of its legs: a new client transaction.
#[derive(Debug)]
pub struct Sent {
    pub leg: LegId,
    pub purpose: CallPurpose,
    pub side: Side,
    pub dest: Link,
    pub method: Method,
    pub branch: String,
    pub bytes: Vec<u8>,
    pub ruri: String,
    pub ident: String,
    pub cseq: u32,
}

/// A timer of the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallTimer {
    /// A leg's RFC 4028 session timer.
    Session(LegId),
    /// Leg B's INVITE (this attempt) rings too long (`--ringing-seconds`).
    Ringing(TransactionKey),
    /// An outbound target that has not answered this INVITE within `--failover-seconds`.
    Failover(TransactionKey),
    /// The call is over and has absorbed stray requests long enough: forget it.
    Forget,
}

/// What a final or provisional answer to leg B's INVITE left for the worker to do besides
/// the effects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupAnswer {
    Done,
    /// The carrier challenged the trunk (401/407): the worker answers with the trunk's
    /// credentials ([`crate::call::challenge`]) or refuses the caller.
    Challenged,
}

/// What a transition asks the worker to do, in order.
#[derive(Debug)]
pub enum Effect {
    Request(Box<Sent>),
    /// An answer on one of the call's server transactions.
    Respond {
        key: TransactionKey,
        code: u16,
        reason: String,
        lines: String,
        body: Vec<u8>,
    },
    /// A refusal with a Warning (RFC 3261 §20.43).
    Refuse {
        key: TransactionKey,
        code: u16,
        text: String,
        /// More header lines (an Allow).
        extra: String,
    },
    Timer {
        after: Duration,
        timer: CallTimer,
    },
    /// Bytes sent as they are: an ACK (no transaction, RFC 3261 §17.1.1.3).
    Send {
        side: Side,
        dest: Link,
        bytes: Vec<u8>,
    },
    /// Try the call's next hop (failover, a followed redirect), or refuse the caller after
    /// the last.
    NextHop,
    /// An outbound call that failed over to another trunk asks the fleet's count for a place
    /// on it; its verdict comes back to [`Call::on_claimed`].
    Claim(crate::fleet::ClaimRequest),
    /// Send leg B's INVITE to this address of the hop being tried, over a connection the
    /// worker finds or opens ([`Call::send_invite`], [`Call::link_failed`]).
    InviteTo(std::net::SocketAddr),
    /// Look the hop being tried up (RFC 3263); the answer comes to [`Call::on_resolved`].
    Resolve(Box<crate::route::Hop>),
    /// The caller's ACK of the answer is awaited (a full set-up cap may end the call when it
    /// does not come: `worker/recycle.rs`).
    AwaitAck,
    /// CANCEL leg B's pending INVITE (built from its client transaction, RFC 3261 §9.1).
    CancelB,
    /// The ACK of our 2xx on this server transaction came: its retransmissions stop
    /// (RFC 3261 §13.3.1.4).
    Acked(TransactionKey),
    /// The call changed in a way a restarted edge must find.
    Checkpoint,
    /// The call is over: its checkpoint goes (a restarted edge must not bring it back).
    ForgetCheckpoint,
    /// The call is over: its record is written (`--cdr`).
    Record,
    /// The call is over: its record, its relay, its places.
    Finish,
}

/// What changing an outbound call's trunk on failover came to ([`Call::next_hop`]).
enum Changed {
    /// The call holds places on the new trunk: its hop goes next.
    Ready,
    /// It waits for the fleet's verdict on the new trunk.
    Claiming,
    /// The trunk is at a limit: its hops are skipped.
    Refused,
}

/// Where `len` bytes starting at `at` lie in a call's header lines.
fn span(at: usize, len: usize) -> (u32, u32) {
    let at = u32::try_from(at).unwrap_or(u32::MAX);
    (
        at,
        at.saturating_add(u32::try_from(len).unwrap_or(u32::MAX)),
    )
}

/// What a 2xx that came again to leg B's INVITE was ([`Call::answered_again`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Again {
    /// The answer the call took: our ACK went again.
    Same,
    /// Another fork's answer; `first` the first time it came.
    Fork { first: bool },
}

/// What a new call is made of, once admission let its INVITE through.
pub struct NewCall {
    pub rt: std::sync::Arc<crate::config::Runtime>,
    pub admission: crate::route::admission::Admission,
    /// Leg A's INVITE, its server transaction and where it came from.
    pub invite: TransactionKey,
    pub side: Side,
    pub src: Link,
    /// Our To tag on leg A.
    pub tag: String,
    /// The INVITE's body as leg B sends it (through the relay, or as it came).
    pub b_body: Vec<u8>,
    pub media: Option<trunkgate_media::SessionId>,
    pub setup: crate::config::SetupSlot,
    pub setup_source: Option<crate::guard::census::Admitted>,
}

impl Call {
    /// A call for leg A's INVITE `req`: leg A is its dialog as the caller made it (we are its
    /// UAS, RFC 3261 §12.1.1), leg B a dialog of ours still to be set up.
    pub fn new(ctx: &mut Ctx, n: NewCall, req: &Request) -> Call {
        let NewCall {
            rt,
            admission: adm,
            invite,
            side,
            src,
            tag,
            b_body,
            media,
            setup,
            setup_source,
        } = n;
        let to = msg::header(req, "To").unwrap_or_default();
        let (cseq, _) = trunkgate_sip::cseq(req).unwrap_or((1, "INVITE"));
        let a = super::Leg {
            side,
            peer: src.clone(),
            call_id: trunkgate_sip::call_id(req).unwrap_or_default().to_string(),
            local_tag: tag,
            remote_tag: trunkgate_sip::from_tag(req).map(str::to_string),
            local: super::b2bua::strip_tag(to),
            remote: msg::header(req, "From").unwrap_or_default().to_string(),
            remote_target: msg::header(req, "Contact")
                .map(msg::uri_of)
                .unwrap_or_default()
                .to_string(),
            // RFC 3261 §12.1.1: the UAS's route set is the Record-Route list in order.
            route_set: msg::list(req, "Record-Route"),
            local_cseq: 1,
            invite_cseq: cseq,
            awaiting_ack: None,
            reinvite_cseq: None,
            session: None,
        };
        let b = super::Leg {
            side: side.other(),
            peer: src,
            call_id: ctx.mint.call_id(),
            local_tag: ctx.mint.tag(),
            remote_tag: None,
            local: adm.from.clone(),
            remote: String::new(),
            remote_target: String::new(),
            route_set: Vec::new(),
            local_cseq: 1,
            invite_cseq: 1,
            awaiting_ack: None,
            reinvite_cseq: None,
            session: None,
        };
        let max_forwards = trunkgate_sip::max_forwards(req)
            .unwrap_or(70)
            .saturating_sub(1)
            .max(1);
        let mut b_lines = format!("Max-Forwards: {max_forwards}\r\n");
        let identity_at = span(b_lines.len(), adm.identity_lines.len());
        b_lines.push_str(&adm.identity_lines);
        b_lines.push_str(&msg::copied_lines(req));
        Call {
            rt,
            trunk: adm.trunk,
            media_trunk: adm.trunk,
            selection: adm.selection,
            carriers: adm.carriers,
            identity_at,
            direction: adm.direction,
            a,
            b,
            state: CallState::Proceeding(Attempt::Calling),
            a_invite: invite,
            b_invite: None,
            hops: adm.hops,
            next_hop: 0,
            b_user: adm.callee_user,
            b_lines,
            b_body,
            auth_line: None,
            auth_tries: 0,
            b_ack: None,
            caller: adm.caller,
            callee: adm.callee,
            started: std::time::SystemTime::now(),
            answered: None,
            final_code: None,
            ended_by: None,
            last_failure: None,
            slot: Some(adm.slot),
            setup: Some(setup),
            setup_source,
            media,
            media_stats: Vec::new(),
            bye_lines: String::new(),
            forks_ended: Vec::new(),
            redirects: 0,
            recovered: false,
            checkpointed: false,
            tried: Vec::new(),
            ended: None,
            charge: None,
        }
    }

    /// The fleet's answer to the call's claim: its places are held with its slots (given back
    /// when they drop) and leg B is set up, or the trunk's fleet-wide limit refuses it 503. A
    /// call CANCELed or ended meanwhile drops the verdict, and with it its places.
    pub fn on_claimed(&mut self, ctx: &mut Ctx, verdict: crate::fleet::Verdict) {
        use crate::fleet::{Hold, Verdict};
        if !matches!(self.state, CallState::Proceeding(_)) || self.b_invite.is_some() {
            return;
        }
        match verdict {
            Verdict::Granted(Hold { concurrent, setup })
            | Verdict::Unavailable(Hold { concurrent, setup }) => {
                if let Some(s) = self.slot.as_mut() {
                    s.hold_in_fleet(concurrent);
                }
                if let Some(s) = self.setup.as_mut() {
                    s.hold_in_fleet(setup);
                }
                self.next_hop(ctx);
            }
            Verdict::Refused(r) => {
                let (reason, text, retry) = r.describe();
                ctx.env
                    .metrics()
                    .refusals
                    .with_label_values(&[self.trunk_id(), self.direction.label(), reason])
                    .inc();
                if !self.tried.is_empty() {
                    // A trunk the call failed over to is full across the fleet: the next one.
                    self.last_failure = Some((503, format!("{text} across the fleet")));
                    self.skip_trunk(self.trunk);
                    return self.next_hop(ctx);
                }
                tracing::info!(
                    trunk = self.trunk_id(),
                    call_id = self.a.call_id.as_str(),
                    reason,
                    "call refused by the fleet's limit"
                );
                self.ended_by = Some("edge");
                self.final_code = Some(503);
                ctx.push(Effect::Refuse {
                    key: self.a_invite.clone(),
                    code: 503,
                    text: format!("{text} across the fleet"),
                    extra: format!("Retry-After: {retry}\r\n"),
                });
                ctx.push(Effect::Finish);
            }
        }
    }

    /// Leg B's INVITE `key` got no answer (`cause`: `timeout`, or `connect_failed` when its
    /// TCP or TLS connection could not be opened): an outbound call's next target is tried,
    /// counted by cause; otherwise the caller gets `code`.
    pub fn setup_failed(
        &mut self,
        ctx: &mut Ctx,
        key: &TransactionKey,
        code: u16,
        cause: &'static str,
        text: String,
    ) {
        if self.b_invite.as_ref() != Some(key) {
            return;
        }
        self.b_invite = None;
        if let Some(t) = self.tried.last_mut() {
            t.failed(cause);
        }
        self.count_attempt(ctx);
        if self.state.cancelled() {
            return ctx.push(Effect::Finish);
        }
        if self.direction == super::Direction::Outbound && self.more_hops() {
            ctx.env
                .metrics()
                .failovers
                .with_label_values(&[self.trunk_id(), cause])
                .inc();
            self.last_failure = Some((code, text));
            self.auth_tries = 0;
            self.auth_line = None;
            return self.next_hop(ctx);
        }
        self.fail_a(ctx, code, &text);
    }

    /// What became of the carrier's challenge to leg B's INVITE (the worker computed the
    /// answer with the trunk's credentials, [`SetupAnswer::Challenged`]): the INVITE goes
    /// again to the same hop with the credentials, or the caller is refused 403 naming the
    /// real cause.
    pub fn challenge_answered(
        &mut self,
        ctx: &mut Ctx,
        outcome: Result<String, super::challenge::Unanswered>,
    ) {
        let label = outcome
            .as_ref()
            .map_or_else(|e| e.metric_label(), |_| "answered");
        ctx.env
            .metrics()
            .carrier_challenges
            .with_label_values(&[self.trunk_id(), "INVITE", label])
            .inc();
        match outcome {
            Ok(line) => {
                self.auth_tries += 1;
                self.auth_line = Some(line);
                // Same hop again (RFC 3261 §22.2): `next_hop` already points past it.
                ctx.push(Effect::InviteTo(self.b.peer.addr()));
            }
            Err(why) => {
                let text = why.text(self.trunk_id(), "INVITE");
                tracing::warn!(call = self.a.local_tag, trunk = self.trunk_id(), "{text}");
                self.fail_a(ctx, 403, &text);
            }
        }
    }

    /// The edge is stopping: a call being set up is refused 503 (and leg B CANCELed), an
    /// answered one ends with a BYE on both legs saying why (RFC 3326).
    pub fn shut_down(&mut self, ctx: &mut Ctx) {
        match self.state {
            CallState::Proceeding(_) => {
                self.final_code = Some(503);
                ctx.push(Effect::Refuse {
                    key: self.a_invite.clone(),
                    code: 503,
                    text: "edge shutting down".into(),
                    extra: "Retry-After: 5\r\n".into(),
                });
                self.end(ctx, None, "shutdown");
            }
            CallState::Confirmed => {
                self.bye_lines = "Reason: SIP;cause=503;text=\"edge shutting down\"\r\n".into();
                self.end(ctx, None, "shutdown");
            }
            CallState::Cancelling(_) | CallState::Ending | CallState::Ended => {}
        }
    }

    /// The call is over (its relay session closed by the worker, with these `stats`): the
    /// figures go to the per-trunk histograms and the call record, its places in the limits
    /// are given back, it is counted, its record written and its checkpoint forgotten; it
    /// stays a moment for stray in-dialog requests (they get 481 afterwards).
    pub fn finish(&mut self, ctx: &mut Ctx, stats: Vec<trunkgate_media::StreamStats>) {
        if self.state == CallState::Ended {
            return;
        }
        let m = ctx.env.metrics();
        for st in stats.iter().filter(|st| st.packets > 0) {
            let dir = match st.from {
                Side::Public => "from_carrier",
                Side::Internal => "from_platform",
            };
            let labels = [self.trunk_id(), dir];
            if let Some(mos) = st.mos {
                m.media_mos.with_label_values(&labels).observe(mos);
            }
            m.media_loss
                .with_label_values(&labels)
                .observe(st.lost as f64 / st.expected.max(1) as f64);
            m.media_jitter
                .with_label_values(&labels)
                .observe(st.jitter_ms / 1000.0);
        }
        self.media_stats = stats;
        let ended = std::time::SystemTime::now();
        let charge = super::account::Charge::of(self.answered, ended, self.rate());
        if let Some((cost, currency)) = &charge.cost
            && *cost > 0
        {
            m.call_cost
                .with_label_values(&[self.trunk_id(), currency.as_str()])
                .inc_by(*cost as f64 / 1_000_000.0);
        }
        if let (Some(answered), Some(idx), true) = (
            self.answered,
            self.tried.last().and_then(|t| t.target_index),
            ctx.env.settings().quality_tracking,
        ) && let Some(h) = self.rt.health(self.trunk).get(usize::from(idx))
        {
            let talk = ended.duration_since(answered).unwrap_or_default();
            // The call's MOS: the mean of its streams' that carried packets (relayed calls).
            let scored: Vec<f64> = self.media_stats.iter().filter_map(|st| st.mos).collect();
            let mos =
                (!scored.is_empty()).then(|| scored.iter().sum::<f64>() / scored.len() as f64);
            let delta = crate::quality::Counts::talk(talk, mos);
            let figures = h.add(quality_clock(), &delta, self.min_samples());
            self.publish_quality(m, idx, &figures);
            if let Some(uri) = self.target_uri(idx) {
                ctx.env.share_quality(self.trunk_id(), uri, &delta);
            }
        }
        self.ended = Some(ended);
        self.charge = Some(charge);
        self.state = CallState::Ended;
        self.slot = None;
        self.setup = None;
        self.setup_source = None;
        let code = self.final_code.unwrap_or(500);
        m.calls
            .with_label_values(&[
                self.trunk_id(),
                self.direction.label(),
                crate::metrics::code_class(code),
            ])
            .inc();
        if ctx.env.settings().cdr {
            ctx.push(Effect::Record);
        }
        if self.checkpointed {
            ctx.push(Effect::ForgetCheckpoint);
        }
        // Transactions absorb retransmissions on their own; the call itself only has to
        // outlive stray in-dialog requests for a moment.
        ctx.push(Effect::Timer {
            after: crate::sip::transaction::T4,
            timer: CallTimer::Forget,
        });
    }

    /// BYE on one leg of a confirmed call.
    pub fn send_bye(&mut self, ctx: &mut Ctx, leg: LegId) {
        let lines = self.bye_lines.clone();
        self.request_in_dialog(ctx, leg, Method::Bye, CallPurpose::Bye, &lines, &[]);
    }

    /// A request of ours inside `leg`'s dialog (RFC 3261 §12.2.1.1) with the leg's next CSeq;
    /// INVITE and UPDATE carry our Contact (a target refresh, §12.2).
    fn request_in_dialog(
        &mut self,
        ctx: &mut Ctx,
        leg: LegId,
        method: Method,
        purpose: CallPurpose,
        lines: &str,
        body: &[u8],
    ) {
        let branch = ctx.mint.branch();
        let l = self.leg_mut(leg);
        l.local_cseq += 1;
        let cseq = l.local_cseq;
        let hostport = ctx.env.hostport_on(l.side, &l.peer).to_string();
        let contact = matches!(method, Method::Invite | Method::Update);
        let (bytes, ruri, ident, side, dest) = super::b2bua::in_dialog_request(
            l,
            msg::method_name(&method),
            &branch,
            cseq,
            contact.then_some(hostport.as_str()),
            lines,
            body,
            hostport.clone(),
        );
        ctx.push(Effect::Request(Box::new(Sent {
            leg,
            purpose,
            side,
            dest,
            method,
            branch,
            bytes,
            ruri,
            ident,
            cseq,
        })));
    }

    /// Ends the call from one leg (or from the edge itself when `from` is None): the other leg
    /// gets a BYE when confirmed, a CANCEL while its INVITE is pending.
    pub fn end(&mut self, ctx: &mut Ctx, from: Option<LegId>, why: &'static str) {
        if matches!(
            self.state,
            CallState::Ended | CallState::Ending | CallState::Cancelling(_)
        ) {
            return;
        }
        let confirmed = self.state == CallState::Confirmed;
        self.state = CallState::Ending;
        if self.ended_by.is_none() {
            self.ended_by = Some(match from {
                Some(l) => self.leg(l).side.party(),
                None => "edge",
            });
        }
        tracing::debug!(call = self.a.local_tag, why, "ending call");
        for leg in [LegId::A, LegId::B] {
            if Some(leg) == from {
                continue;
            }
            if confirmed {
                self.send_bye(ctx, leg);
            } else if leg == LegId::B && self.b_invite.is_some() {
                ctx.push(Effect::CancelB);
            }
        }
        ctx.push(Effect::Finish);
    }

    /// The relay heard no RTP for `--media-timeout` on this answered call: it ends with a BYE
    /// on both legs carrying a Reason header (RFC 3326). Before the answer, nothing.
    pub fn media_timeout(&mut self, ctx: &mut Ctx) {
        if self.state != CallState::Confirmed {
            return;
        }
        self.bye_lines = "Reason: SIP;cause=408;text=\"media timeout\"\r\n".to_string();
        ctx.env
            .metrics()
            .media_timeouts
            .with_label_values(&[self.trunk_id()])
            .inc();
        self.end(ctx, None, "media timeout");
    }

    /// A set-up cap is full and this call's 2xx has waited too long for its ACK
    /// (`worker/recycle.rs`): it ends (408 in its record) and gives its places to a new call.
    pub fn make_room(&mut self, ctx: &mut Ctx) {
        self.bye_lines =
            "Reason: SIP;cause=408;text=\"no ACK; place given to a new call\"\r\n".into();
        self.final_code = Some(408);
        ctx.env
            .metrics()
            .setup_recycled
            .with_label_values(&[self.trunk_id()])
            .inc();
        tracing::info!(
            call = self.a.local_tag,
            "a set-up cap is full: a call whose 2xx got no ACK ends to make room"
        );
        self.end(ctx, None, "no ACK; cap full");
    }

    /// The call of an edge gone for good, adopted by this one: it is hung up on both legs, its
    /// record saying `edge_lost`.
    pub fn orphaned(&mut self, ctx: &mut Ctx) {
        self.ended_by = Some("edge_lost");
        self.bye_lines = "Reason: SIP;cause=503;text=\"the edge of this call is gone\"\r\n".into();
        ctx.env.metrics().orphans_ended.inc();
        self.end(ctx, None, "edge_lost");
    }

    /// A 2xx to leg B's INVITE came again (RFC 3261 §13.2.2.4) with To tag `tag`: the same
    /// answer gets our ACK again; another fork's answer is the worker's to acknowledge and,
    /// the first time (`Fork { first: true }`), to hang up, or that branch stays answered
    /// (and billed) at the carrier.
    pub fn answered_again(&mut self, ctx: &mut Ctx, tag: Option<&str>) -> Again {
        match tag {
            Some(tag) if Some(tag) != self.b.remote_tag.as_deref() => {
                let first = !self.forks_ended.iter().any(|t| t == tag);
                if first {
                    self.forks_ended.push(tag.to_string());
                }
                Again::Fork { first }
            }
            _ => {
                if let Some(ack) = &self.b_ack {
                    ctx.push(Effect::Send {
                        side: self.b.side,
                        dest: self.b.peer.clone(),
                        bytes: ack.clone(),
                    });
                }
                Again::Same
            }
        }
    }

    /// The CSeq of a request of ours on `leg` (sent with `sent`) sent again with credentials:
    /// one higher, and the leg's CSeq moves on with it (RFC 3261 §22.2).
    pub fn cseq_for_credentials(&mut self, leg: LegId, sent: u32) -> u32 {
        let l = self.leg_mut(leg);
        l.local_cseq = l.local_cseq.max(sent) + 1;
        l.local_cseq
    }

    /// The last attempt ended: its outcome and post-dial delay count in its target's quality
    /// window ([`crate::quality`]). A challenge (the attempt goes on with credentials) and an
    /// attempt the caller abandoned say nothing of the carrier, and do not count.
    fn count_attempt(&mut self, ctx: &mut Ctx) {
        if !ctx.env.settings().quality_tracking {
            return;
        }
        let Some(t) = self.tried.last() else { return };
        let (Some(idx), false) = (t.target_index, self.state.cancelled()) else {
            return;
        };
        if matches!(t.status, Some(401 | 407)) {
            return;
        }
        let Some(h) = self.rt.health(self.trunk).get(usize::from(idx)) else {
            return;
        };
        let outcome = crate::quality::Outcome::of(t.status);
        let pdd = t.pdd_ms.map(Duration::from_millis);
        let delta = crate::quality::Counts::attempt(outcome, pdd);
        let trunk = self.rt.trunk(self.trunk);
        let thresholds = trunk.outbound.as_ref().and_then(|o| o.quality.as_ref());
        let now_s = quality_clock();
        let figures = h.add(now_s, &delta, self.min_samples());
        let m = ctx.env.metrics();
        self.publish_quality(m, idx, &figures);
        let uri = self.target_uri(idx).unwrap_or_default();
        ctx.env.share_quality(self.trunk_id(), uri, &delta);
        let Some(q) = thresholds else { return };
        let level = crate::quality::demotion(&figures, q);
        if let Some(before) = h.set_demotion(level, now_s) {
            m.target_demoted
                .with_label_values(&[self.trunk_id(), uri])
                .set(i64::from(h.demotion(now_s)));
            tracing::warn!(
                trunk = self.trunk_id(),
                target = uri,
                before,
                now = level,
                asr = figures.asr,
                failures = figures.failure_rate,
                pdd_ms = figures.pdd.map(|d| d.as_millis() as u64),
                "carrier target's quality standing changed (0 meets outbound.quality, 1 below warning, 2 below critical)"
            );
        }
    }

    /// Attempts a target's window must hold before its figures count (`outbound.quality`).
    fn min_samples(&self) -> u32 {
        let out = self.rt.trunk(self.trunk).outbound.as_ref();
        trunkgate_crds::quality::min_samples(out.and_then(|o| o.quality.as_ref()))
    }

    /// The URI of the call's trunk's outbound target `idx`.
    fn target_uri(&self, idx: u16) -> Option<&str> {
        let out = self.rt.trunk(self.trunk).outbound.as_ref()?;
        out.targets.get(usize::from(idx)).map(|t| t.uri.as_str())
    }

    /// Sets target `idx`'s quality gauges from `figures` (those with enough samples).
    fn publish_quality(
        &self,
        m: &crate::metrics::Metrics,
        idx: u16,
        figures: &crate::quality::Figures,
    ) {
        let Some(uri) = self.target_uri(idx) else {
            return;
        };
        let labels = [self.trunk_id(), uri];
        m.target_attempts
            .with_label_values(&labels)
            .set(i64::from(figures.attempts));
        for (gauge, value) in [
            (&m.target_asr, figures.asr),
            (&m.target_ccr, figures.ccr),
            (&m.target_failures, figures.failure_rate),
            (&m.target_pdd, figures.pdd.map(|d| d.as_secs_f64())),
            (&m.target_acd, figures.acd.map(|d| d.as_secs_f64())),
        ] {
            if let Some(v) = value {
                gauge.with_label_values(&labels).set(v);
            }
        }
    }

    /// Leg B has rung for `--ringing-seconds` without a final answer to the INVITE `key`:
    /// CANCEL it and answer the caller 408 (RFC 3261 §16.6 Timer C plays this part in a proxy).
    pub fn ringing_too_long(&mut self, ctx: &mut Ctx, key: &TransactionKey) {
        let CallState::Proceeding(attempt) = self.state else {
            return;
        };
        if self.b_invite.as_ref() != Some(key) {
            return;
        }
        self.final_code = Some(408);
        self.ended_by = Some("edge");
        self.state = CallState::Cancelling(attempt);
        let secs = ctx.env.settings().ringing_seconds;
        ctx.env
            .metrics()
            .ringing_timeouts
            .with_label_values(&[self.trunk_id()])
            .inc();
        ctx.push(Effect::Refuse {
            key: self.a_invite.clone(),
            code: 408,
            text: format!("no final answer after {secs} s of ringing"),
            extra: String::new(),
        });
        ctx.push(Effect::CancelB);
    }

    /// A request inside the dialog of `leg` (server transaction `server`), from that leg's own
    /// peer: BYE ends the call, REFER is refused, anything else is relayed to the other leg.
    pub fn on_in_dialog(
        &mut self,
        ctx: &mut Ctx,
        leg: LegId,
        server: TransactionKey,
        req: &Request,
    ) {
        // Transfer policy: the edge does not carry REFER (RFC 3515). Passed on, its Refer-To
        // would send the other side to an address of this side (a platform pod, a carrier's
        // SBC) and its NOTIFYs back through a dialog neither leg owns; refused 405 with Allow,
        // the platform transfers by re-INVITE, which the edge relays with its media.
        if req.method == Method::Refer {
            return ctx.push(Effect::Refuse {
                key: server,
                code: 405,
                text: "the edge does not carry REFER: transfer with a re-INVITE".into(),
                extra: format!("Allow: {}\r\n", crate::sip::message::ALLOW),
            });
        }
        if matches!(req.method, Method::Invite | Method::Update) {
            super::b2bua::refresh_target(self.leg_mut(leg), req);
        }
        if req.method == Method::Bye {
            ctx.push(Effect::Respond {
                key: server,
                code: 200,
                reason: "OK".into(),
                lines: String::new(),
                body: Vec::new(),
            });
            return self.end(ctx, Some(leg), "BYE");
        }
        self.relay_request(ctx, leg, server, req);
    }

    /// Passes an in-dialog request to the other leg; its answer comes back to `server`.
    pub fn relay_request(
        &mut self,
        ctx: &mut Ctx,
        from: LegId,
        server: TransactionKey,
        req: &Request,
    ) {
        let to = from.other();
        let method = req.method;
        let body = match self.relay_body(ctx, from, &req.body, super::media::request_exchange(req))
        {
            Ok(b) => b,
            Err(r) => {
                return ctx.push(Effect::Refuse {
                    key: server,
                    code: r.code,
                    text: r.text,
                    extra: String::new(),
                });
            }
        };
        let invite_cseq_to = self.leg(to).invite_cseq;
        if self.leg(to).remote_tag.is_none() {
            return ctx.push(Effect::Refuse {
                key: server,
                code: 491,
                text: "the other leg has no dialog yet".into(),
                extra: String::new(),
            });
        }
        let mut lines = msg::copied_lines(req);
        if method == Method::PRack {
            // RFC 3262 §7.2: RAck names the INVITE of the leg it is sent on.
            if let Some(rack) = msg::header(req, "RAck") {
                let rseq = rack.split_whitespace().next().unwrap_or("1");
                lines.push_str(&format!("RAck: {rseq} {invite_cseq_to} INVITE\r\n"));
            }
        }
        self.request_in_dialog(ctx, to, method, CallPurpose::Relay(server), &lines, &body);
    }

    /// The answer to a relayed request (sent on leg `sent_on`, CSeq `cseq`) goes back on the
    /// leg it came from, to its server transaction `server`.
    pub fn relay_response(
        &mut self,
        ctx: &mut Ctx,
        sent_on: LegId,
        server: TransactionKey,
        method: Method,
        cseq: u32,
        resp: &Response,
    ) {
        let code = resp.status_code.code();
        if code == 100 {
            return;
        }
        let body = match self.relay_body(
            ctx,
            sent_on,
            &resp.body,
            super::media::response_exchange(method, resp),
        ) {
            Ok(b) => b,
            Err(r) => {
                return ctx.push(Effect::Refuse {
                    key: server,
                    code: r.code,
                    text: r.text,
                    extra: String::new(),
                });
            }
        };
        let from = sent_on.other();
        let refresh = matches!(method, Method::Invite | Method::Update);
        let ok = (200..300).contains(&code);
        let mut lines = msg::copied_lines(resp);
        if refresh {
            let l = self.leg(from);
            lines = format!(
                "Contact: {}\r\n{lines}",
                super::b2bua::contact(ctx.env.hostport_on(l.side, &l.peer), &l.peer)
            );
        }
        if refresh && ok {
            super::b2bua::refresh_target(self.leg_mut(sent_on), resp);
        }
        if method == Method::Invite && ok {
            self.leg_mut(sent_on).reinvite_cseq = Some(cseq);
            self.leg_mut(from).awaiting_ack = Some(server.clone());
        }
        if refresh && ok {
            // A refresh crossed the edge: both legs' session timers start again.
            self.session_negotiated(ctx, sent_on, resp, true);
            self.session_negotiated(ctx, from, resp, false);
        }
        ctx.push(Effect::Respond {
            key: server,
            code,
            reason: super::b2bua::reason_of(resp),
            lines,
            body,
        });
        if refresh && ok {
            // The dialog or its media moved: a new checkpoint.
            ctx.push(Effect::Checkpoint);
        }
    }

    /// A 2xx to an INVITE or UPDATE passed on `leg` (the edge its UAC or its UAS there): the
    /// leg's session timer starts again from it.
    pub fn session_negotiated(
        &mut self,
        ctx: &mut Ctx,
        leg: LegId,
        resp: &Response,
        edge_is_uac: bool,
    ) {
        let timer = SessionTimer::from_2xx(resp, edge_is_uac, ctx.now);
        self.leg_mut(leg).session = timer;
        if let Some(t) = timer {
            ctx.push(Effect::Timer {
                after: t.due.saturating_duration_since(ctx.now),
                timer: CallTimer::Session(leg),
            });
        }
    }

    /// A leg's session timer fired: refresh it, or end a call whose peer did not refresh.
    pub fn session_due(&mut self, ctx: &mut Ctx, leg: LegId) {
        let now = ctx.now;
        let Some(t) = self.leg(leg).session else {
            return;
        };
        // A refresh since then moved the deadline (its own timer is set), or the call is over.
        if self.state != CallState::Confirmed || now + Duration::from_millis(5) < t.due {
            return;
        }
        let result = if t.edge_refreshes { "sent" } else { "expired" };
        ctx.env
            .metrics()
            .session_refreshes
            .with_label_values(&[self.trunk_id(), result])
            .inc();
        if t.edge_refreshes {
            // Until the refresh is answered, the leg waits as if the peer kept the timer: no
            // answer by that deadline ends the call like a missed refresh would.
            let waiting = SessionTimer::new(t.interval, false, now);
            self.leg_mut(leg).session = Some(waiting);
            ctx.push(Effect::Timer {
                after: waiting.due - now,
                timer: CallTimer::Session(leg),
            });
            return self.send_refresh(ctx, leg, t.interval);
        }
        tracing::info!(
            call = self.a.local_tag,
            ?leg,
            "session timer expired without a refresh: the call ends (RFC 4028 §10)"
        );
        self.bye_lines = "Reason: SIP;cause=408;text=\"session timer expired\"\r\n".into();
        self.end(ctx, None, "session timer expired");
    }

    /// An UPDATE without a body that refreshes the session on `leg` (RFC 4028 §7.4, §9).
    fn send_refresh(&mut self, ctx: &mut Ctx, leg: LegId, interval: u32) {
        // A carrier that challenges it is answered like any request of ours (crate::call::challenge).
        let lines = format!("Session-Expires: {interval};refresher=uac\r\nSupported: timer\r\n");
        self.request_in_dialog(ctx, leg, Method::Update, CallPurpose::Refresh, &lines, &[]);
    }

    /// The answer to our refresh: a 2xx restarts the leg's timer; 481 or 408 (§10) end the
    /// call; anything else (an UPDATE the peer does not take) stops the edge refreshing it.
    pub fn refresh_answered(&mut self, ctx: &mut Ctx, leg: LegId, resp: &Response) {
        let code = resp.status_code.code();
        if (200..300).contains(&code) {
            let interval = self.leg(leg).session.map_or(MIN_SE, |s| s.interval);
            if session_expires(resp).is_some() {
                return self.session_negotiated(ctx, leg, resp, true);
            }
            // A 2xx without Session-Expires: the peer keeps no timer; refresh on our own.
            let t = SessionTimer::new(interval, true, ctx.now);
            self.leg_mut(leg).session = Some(t);
            return ctx.push(Effect::Timer {
                after: t.due.saturating_duration_since(ctx.now),
                timer: CallTimer::Session(leg),
            });
        }
        if code < 200 {
            return;
        }
        if code == 481 || code == 408 {
            return self.refresh_failed(ctx, code);
        }
        tracing::info!(
            call = self.a.local_tag,
            ?leg,
            code,
            "the peer refused the session refresh; the edge stops refreshing this leg"
        );
        self.leg_mut(leg).session = None;
    }

    /// Our refresh got 481/408 or no answer: the session is gone (RFC 4028 §10).
    pub fn refresh_failed(&mut self, ctx: &mut Ctx, code: u16) {
        self.bye_lines = format!("Reason: SIP;cause={code};text=\"session refresh failed\"\r\n");
        self.end(ctx, None, "session refresh failed");
    }

    /// The next hop for leg B's INVITE: sent to its address, looked up first, or — after the
    /// last — the caller refused with the last failure.
    pub fn next_hop(&mut self, ctx: &mut Ctx) {
        if self.state.cancelled() {
            return ctx.push(Effect::Finish);
        }
        loop {
            let Some(hop) = self.hops.get(self.next_hop) else {
                if self.next_carrier_hops() {
                    continue;
                }
                let (code, text) = self
                    .last_failure
                    .clone()
                    .unwrap_or((503, "no carrier target answered".to_string()));
                return self.fail_a(ctx, code, &text);
            };
            if let Some(t) = hop.trunk
                && t != self.trunk
            {
                match self.change_trunk(ctx, t) {
                    Changed::Ready => {}
                    Changed::Claiming => return,
                    Changed::Refused => {
                        self.skip_trunk(t);
                        continue;
                    }
                }
            }
            let Some(hop) = self.hops.get(self.next_hop).cloned() else {
                continue;
            };
            self.next_hop += 1;
            return ctx.push(match hop.addr {
                Some(addr) => Effect::InviteTo(addr),
                None => Effect::Resolve(Box::new(hop)),
            });
        }
    }

    /// Whether a hop is left to try: in the list, or among the targets of the carriers the
    /// call may still fail over to.
    pub fn more_hops(&self) -> bool {
        self.next_hop < self.hops.len() || self.carriers.iter().any(|c| !c.targets.is_empty())
    }

    /// The next carrier's targets become hops (`admission::Carrier`), when one is left.
    fn next_carrier_hops(&mut self) -> bool {
        let Some(c) = self.carriers.iter_mut().find(|c| !c.targets.is_empty()) else {
            return false;
        };
        let (t, targets) = (c.trunk, std::mem::take(&mut c.targets));
        if let Some(out) = &self.rt.trunk(t).outbound {
            self.hops.extend(targets.iter().filter_map(|&i| {
                Some(crate::route::Hop {
                    target: Some(i),
                    trunk: Some(t),
                    ..crate::route::admission::hop_of(out.targets.get(usize::from(i))?)
                })
            }));
        }
        true
    }

    /// Moves `next_hop` past trunk `t`'s hops (they are listed together).
    fn skip_trunk(&mut self, t: u32) {
        while self
            .hops
            .get(self.next_hop)
            .is_some_and(|h| h.trunk.is_none_or(|x| x == t))
        {
            self.next_hop += 1;
        }
    }

    /// An outbound call fails over to the next trunk its tenant's policy listed
    /// (`admission::Carrier`): it takes a place in that trunk's limits (giving back the last
    /// one's), presents the caller as that trunk may, and from then on counts, bills, answers
    /// challenges and opens TLS as that trunk's call. Refused when the trunk is at a limit.
    fn change_trunk(&mut self, ctx: &mut Ctx, t: u32) -> Changed {
        let rt = self.rt.clone();
        let cfg = rt.trunk(t);
        let Some(carrier) = self.carriers.iter().find(|c| c.trunk == t) else {
            return Changed::Refused;
        };
        let max_setup = cfg
            .limits
            .max_calls_in_setup
            .unwrap_or(ctx.env.settings().max_calls_in_setup);
        // The same limits as at admission (its refusal's reason for the metric).
        let places = crate::route::admission::limits(&rt, t)
            .map_err(|r| r.reason)
            .and_then(|slot| {
                rt.state[t as usize]
                    .begin_setup(crate::fleet::share_of(max_setup, rt.share()))
                    .map(|setup| (slot, setup))
                    .map_err(|_| "max_calls_in_setup")
            });
        let (slot, setup) = match places {
            Ok(p) => p,
            Err(reason) => {
                ctx.env
                    .metrics()
                    .refusals
                    .with_label_values(&[cfg.id.as_str(), self.direction.label(), reason])
                    .inc();
                tracing::info!(
                    call = self.a.local_tag,
                    trunk = cfg.id,
                    reason,
                    "failover skips a trunk at its limit"
                );
                return Changed::Refused;
            }
        };
        let p = carrier.presentation.clone();
        let (at, end) = (self.identity_at.0 as usize, self.identity_at.1 as usize);
        if end <= self.b_lines.len() && at <= end {
            self.b_lines.replace_range(at..end, &p.identity_lines);
            self.identity_at = span(at, p.identity_lines.len());
        }
        self.b.local = p.from.clone();
        self.caller = p.caller;
        ctx.env
            .metrics()
            .failovers
            .with_label_values(&[self.trunk_id(), "trunk"])
            .inc();
        tracing::info!(
            call = self.a.local_tag,
            from = self.trunk_id(),
            to = cfg.id,
            "failover to another trunk"
        );
        // The last trunk's places go back as its slots drop.
        self.slot = Some(slot);
        self.setup = Some(setup);
        self.trunk = t;
        if ctx.env.fleet_shared() {
            ctx.push(Effect::Claim(crate::fleet::ClaimRequest {
                trunk: cfg.id.clone(),
                max_concurrent: cfg.limits.max_concurrent_calls,
                max_per_second: cfg.limits.max_calls_per_second,
                max_in_setup: max_setup,
            }));
            return Changed::Claiming;
        }
        Changed::Ready
    }

    /// The addresses of the hop being tried replace it, in order (RFC 3263 §4.3: try each).
    pub fn on_resolved(
        &mut self,
        ctx: &mut Ctx,
        result: Result<Vec<trunkgate_resolve::Destination>, trunkgate_resolve::Error>,
    ) {
        let at = self.next_hop.wrapping_sub(1);
        let Some(hop) = self.hops.get(at).cloned() else {
            return;
        };
        match result {
            Ok(dests) if !dests.is_empty() => {
                if self.b.side == Side::Public {
                    // Their answers must pass the kernel filter.
                    for d in &dests {
                        ctx.env.allow_source(d.addr.ip());
                    }
                }
                let expanded = dests.into_iter().map(|d| crate::route::Hop {
                    addr: Some(d.addr),
                    transport: crate::route::hop::crds_transport(d.transport),
                    ..hop.clone()
                });
                self.hops.splice(at..=at, expanded);
                self.next_hop = at;
            }
            Ok(_) => self.last_failure = Some((503, format!("{}: no address", hop.host))),
            Err(e) => self.last_failure = Some((503, e.to_string())),
        }
        self.next_hop(ctx);
    }

    /// The hop being tried (the one `next_hop` moved past).
    pub fn current_hop(&self) -> Option<&crate::route::Hop> {
        self.hops.get(self.next_hop.wrapping_sub(1))
    }

    /// Sends (or sends again, after a challenge) leg B's INVITE to the hop being tried over
    /// `dest`. An outbound call with targets left fails over if this one does not answer in
    /// `--failover-seconds`.
    pub fn send_invite(&mut self, ctx: &mut Ctx, dest: Link) {
        let branch = ctx.mint.branch();
        let Some(hop) = self.current_hop() else {
            return self.fail_a(ctx, 500, "no next hop to send the call to");
        };
        let ruri = format!("sip:{}@{}", self.b_user, hop.uri_host);
        let remote = format!("<sip:{}@{}>", self.b_user, hop.uri_host);
        let resent = self.auth_line.is_some()
            && self
                .tried
                .last()
                .is_some_and(|t| matches!(t.status, Some(401 | 407)));
        // A new attempt, unless the same one goes on with credentials (RFC 3261 §22.2). Only
        // the carriers' attempts are listed: an inbound call's leg B is the platform.
        let outbound = self.direction == super::Direction::Outbound;
        let tried = (outbound && !resent).then(|| self.attempt_to(hop, ctx.now));
        match tried {
            Some(t) => super::account::push(&mut self.tried, t),
            None => {
                if let Some(t) = self.tried.last_mut() {
                    t.status = None;
                    t.pdd_ms = None;
                }
            }
        }
        self.b.remote = remote;
        self.b.peer = dest.clone();
        self.b.remote_target = ruri.clone();
        self.b.remote_tag = None;
        let cseq = self.b.local_cseq;
        self.b.local_cseq += 1;
        self.b.invite_cseq = cseq;
        if let CallState::Proceeding(a) = &mut self.state {
            *a = Attempt::Calling;
        }
        let side = self.b.side;
        let hostport = ctx.env.hostport_on(side, &dest);
        let ident = format!(
            "From: {};tag={}\r\nCall-ID: {}\r\n",
            self.b.local, self.b.local_tag, self.b.call_id
        );
        let mut b = crate::sip::message::Builder::request("INVITE", &ruri)
            .header(
                "Via",
                &crate::sip::message::via(dest.transport(), hostport, &branch),
            )
            .ids(&ident, &self.b.remote, cseq, "INVITE")
            .header("Contact", &super::b2bua::contact(hostport, &dest))
            .raw(&self.b_lines);
        if let Some(auth) = &self.auth_line {
            b = b.raw(auth);
        }
        let bytes = b.body(&self.b_body);
        let key = TransactionKey::client(&branch, Method::Invite);
        self.b_invite = Some(key.clone());
        ctx.push(Effect::Request(Box::new(Sent {
            leg: LegId::B,
            purpose: CallPurpose::Setup,
            side,
            dest,
            method: Method::Invite,
            branch,
            bytes,
            ruri,
            ident,
            cseq,
        })));
        if self.direction == super::Direction::Outbound && self.more_hops() {
            ctx.push(Effect::Timer {
                after: ctx.env.settings().failover_timeout(),
                timer: CallTimer::Failover(key),
            });
        }
    }

    /// An attempt to `hop` starting `now`, for the record: this trunk, why it was chosen
    /// and its rate.
    fn attempt_to(&self, hop: &crate::route::Hop, now: Instant) -> super::account::Tried {
        let score = self
            .carriers
            .iter()
            .find(|c| c.trunk == self.trunk)
            .and_then(|c| c.score);
        let chosen = (self.selection, score);
        super::account::Tried::new(self.trunk_id(), hop, chosen, self.rate(), now)
    }

    /// No connection to the hop being tried could be had (`why`, a metric `label`): the
    /// next hop.
    pub fn link_failed(&mut self, ctx: &mut Ctx, label: &'static str, why: String) {
        if let Some(hop) = self.current_hop()
            && self.direction == super::Direction::Outbound
        {
            let mut tried = self.attempt_to(hop, ctx.now);
            tried.failed(label);
            super::account::push(&mut self.tried, tried);
            self.count_attempt(ctx);
        }
        if self.direction == super::Direction::Outbound && self.more_hops() {
            ctx.env
                .metrics()
                .failovers
                .with_label_values(&[self.trunk_id(), label])
                .inc();
        }
        self.last_failure = Some((503, why));
        self.next_hop(ctx);
    }

    /// An answer to leg B's current INVITE (the worker has matched `key` to this attempt):
    /// a provisional one rings and is relayed, a 2xx confirms the call on both legs, a
    /// failure fails over (outbound), follows a redirect within the trunk, or is relayed.
    pub fn on_setup_answer(
        &mut self,
        ctx: &mut Ctx,
        key: &TransactionKey,
        resp: &Response,
    ) -> SetupAnswer {
        let code = resp.status_code.code();
        if code == 100 {
            return SetupAnswer::Done;
        }
        if code < 200 {
            if let Some(t) = self.tried.last_mut() {
                t.rang(ctx.now);
            }
            if self.state == CallState::Proceeding(Attempt::Calling) {
                let ringing = Duration::from_secs(ctx.env.settings().ringing_seconds.max(1));
                ctx.push(Effect::Timer {
                    after: ringing,
                    timer: CallTimer::Ringing(key.clone()),
                });
            }
            let first = match &mut self.state {
                CallState::Proceeding(a) | CallState::Cancelling(a) => {
                    std::mem::replace(a, Attempt::Ringing) == Attempt::Calling
                }
                _ => false,
            };
            let to = msg::header(resp, "To").unwrap_or_default();
            if msg::header_param(to, "tag").is_some() {
                super::b2bua::learn_dialog(&mut self.b, resp);
            }
            if self.state.cancelled() {
                // Cancelled before leg B rang: its CANCEL goes now (RFC 3261 §9.1).
                if first {
                    ctx.push(Effect::CancelB);
                }
                return SetupAnswer::Done;
            }
            let lines = super::b2bua::answer_lines(ctx.env, &self.a, resp);
            // Early media (183): its SDP goes through the relay; a body we cannot read is
            // dropped rather than passed with the far side's addresses in it.
            let body = self
                .relay_body(
                    ctx,
                    LegId::B,
                    &resp.body,
                    super::media::response_exchange(Method::Invite, resp),
                )
                .unwrap_or_default();
            ctx.push(Effect::Respond {
                key: self.a_invite.clone(),
                code,
                reason: super::b2bua::reason_of(resp),
                lines,
                body,
            });
            return SetupAnswer::Done;
        }
        self.b_invite = None;
        if let Some(t) = self.tried.last_mut() {
            t.answered(code, ctx.now);
        }
        self.count_attempt(ctx);
        if code < 300 {
            self.answered_2xx(ctx, resp);
            return SetupAnswer::Done;
        }
        // 3xx-6xx.
        if self.state.cancelled() {
            ctx.push(Effect::Finish);
            return SetupAnswer::Done;
        }
        if (code == 401 || code == 407) && self.b.side == Side::Public {
            return SetupAnswer::Challenged;
        }
        let outbound = self.direction == super::Direction::Outbound;
        if outbound && (300..400).contains(&code) {
            self.redirected(ctx, resp);
            return SetupAnswer::Done;
        }
        let retryable = code == 408 || (500..600).contains(&code);
        if outbound && retryable && self.more_hops() {
            ctx.env
                .metrics()
                .failovers
                .with_label_values(&[self.trunk_id(), crate::metrics::code_class(code)])
                .inc();
            self.last_failure = Some((code, super::b2bua::reason_of(resp)));
            self.auth_tries = 0;
            self.auth_line = None;
            ctx.push(Effect::NextHop);
            return SetupAnswer::Done;
        }
        self.final_code = Some(code);
        let lines = msg::copied_lines(resp)
            + &msg::header(resp, "Retry-After")
                .map(|v| format!("Retry-After: {v}\r\n"))
                .unwrap_or_default();
        ctx.push(Effect::Respond {
            key: self.a_invite.clone(),
            code,
            reason: super::b2bua::reason_of(resp),
            lines,
            body: Vec::new(),
        });
        ctx.push(Effect::Finish);
        SetupAnswer::Done
    }

    /// Leg B answered 2xx: the call is confirmed and the answer relayed to the caller; a call
    /// whose caller already went (a CANCEL crossed the answer), or whose answer cannot be
    /// relayed, is acknowledged and hung up on leg B.
    fn answered_2xx(&mut self, ctx: &mut Ctx, resp: &Response) {
        let code = resp.status_code.code();
        super::b2bua::learn_dialog(&mut self.b, resp);
        if !matches!(self.state, CallState::Proceeding(_)) {
            // Leg A is already gone (CANCEL raced the answer): confirm and end leg B.
            self.ack_b(ctx, resp);
            self.send_bye(ctx, LegId::B);
            return ctx.push(Effect::Finish);
        }
        let exchange = super::media::response_exchange(Method::Invite, resp);
        let body = match self.relay_body(ctx, LegId::B, &resp.body, exchange) {
            Ok(b) => b,
            Err(r) => {
                // The answer cannot be relayed: confirm leg B and hang it up, refuse leg A.
                self.ack_b(ctx, resp);
                self.send_bye(ctx, LegId::B);
                return self.fail_a(ctx, r.code, &r.text);
            }
        };
        self.state = CallState::Confirmed;
        self.answered = Some(std::time::SystemTime::now());
        self.final_code = Some(code);
        // What re-sending the INVITE (failover, digest) needed is not needed any more: an
        // answered call holds only its dialogs (memory per active call).
        self.b_lines = String::new();
        self.b_body = Vec::new();
        self.hops = Vec::new();
        self.carriers = Vec::new();
        // `auth_line` stays for the ACK (RFC 3261 §13.2.2.4: same credentials as the INVITE).
        self.last_failure = None;
        let a_key = self.a_invite.clone();
        self.a.awaiting_ack = Some(a_key.clone());
        let lines = super::b2bua::answer_lines(ctx.env, &self.a, resp);
        if self.a.side == Side::Public {
            ctx.push(Effect::AwaitAck);
        }
        // RFC 4028: each leg's session timer, from the 2xx the edge got (UAC on leg B) and
        // the one it sends on (UAS on leg A).
        self.session_negotiated(ctx, LegId::B, resp, true);
        self.session_negotiated(ctx, LegId::A, resp, false);
        ctx.push(Effect::Respond {
            key: a_key,
            code,
            reason: super::b2bua::reason_of(resp),
            lines,
            body,
        });
        // Answered: from here a restarted edge must find it (worker/restore.rs).
        ctx.push(Effect::Checkpoint);
    }

    /// A carrier target answered 3xx (RFC 3261 §8.1.3.4). Its Contacts are followed only
    /// where the trunk already sends or takes calls (one of its targets' host and port, or an
    /// address inside its `allowedCidrs`): a 3xx cannot steer a call, and its caller ID, to a
    /// place the trunk's owner never named. Else the next target is tried; after the last the
    /// platform gets the 3xx with its Contacts and decides.
    fn redirected(&mut self, ctx: &mut Ctx, resp: &Response) {
        let code = resp.status_code.code();
        let trunk = self.rt.trunk(self.trunk);
        let follow = (self.redirects < super::b2bua::MAX_REDIRECTS)
            .then(|| {
                msg::list(resp, "Contact")
                    .iter()
                    .map(|v| msg::uri_of(v).to_string())
                    .filter_map(|uri| trunkgate_crds::compile::parse_target(&uri, None, 1, 1).ok())
                    .find(|t| super::b2bua::trunk_takes(trunk, t))
            })
            .flatten();
        let trunk_id = trunk.id.clone();
        self.last_failure = Some((code, super::b2bua::reason_of(resp)));
        self.auth_tries = 0;
        self.auth_line = None;
        let failovers = &ctx.env.metrics().failovers;
        if let Some(target) = follow {
            self.redirects += 1;
            let hop = crate::route::admission::hop_of(&target);
            let at = self.next_hop.min(self.hops.len());
            self.hops.insert(at, hop);
            tracing::info!(call = self.a.local_tag, trunk = trunk_id, target = %target.uri, "following a carrier's {code}");
            failovers
                .with_label_values(&[trunk_id.as_str(), "3xx_followed"])
                .inc();
            return ctx.push(Effect::NextHop);
        }
        if self.more_hops() {
            failovers
                .with_label_values(&[trunk_id.as_str(), "3xx"])
                .inc();
            return ctx.push(Effect::NextHop);
        }
        self.final_code = Some(code);
        let lines = msg::copied_lines(resp) + &msg::header_lines(resp, "Contact");
        ctx.push(Effect::Respond {
            key: self.a_invite.clone(),
            code,
            reason: super::b2bua::reason_of(resp),
            lines,
            body: Vec::new(),
        });
        ctx.push(Effect::Finish);
    }

    /// ACK for leg B's 2xx (a new transaction: RFC 3261 §13.2.2.4), kept for a retransmitted
    /// 2xx.
    pub fn ack_b(&mut self, ctx: &mut Ctx, resp: &Response) {
        let branch = ctx.mint.branch();
        let hostport = ctx.env.hostport_on(self.b.side, &self.b.peer).to_string();
        let to = msg::header(resp, "To").unwrap_or_default();
        let bytes = super::b2bua::ack_of_2xx(&self.b, to, &branch, &hostport);
        self.b_ack = Some(bytes.clone());
        ctx.push(Effect::Send {
            side: self.b.side,
            dest: self.b.peer.clone(),
            bytes,
        });
    }

    /// The call fails before it was answered: the caller gets `code` with `text` as Warning.
    pub fn fail_a(&mut self, ctx: &mut Ctx, code: u16, text: &str) {
        self.final_code = Some(code);
        ctx.push(Effect::Refuse {
            key: self.a_invite.clone(),
            code,
            text: text.to_string(),
            extra: String::new(),
        });
        ctx.push(Effect::Finish);
    }

    /// The end-to-end ACK of a 2xx the call sent on `leg` (the worker has matched it and
    /// stopped that 2xx's retransmission): passed to the other leg (RFC 3261 §13.2.2.4 there).
    /// The caller's ACK of the call's answer ends its set-up; its ACK on leg B is kept for a
    /// retransmitted 2xx.
    pub fn on_ack(&mut self, ctx: &mut Ctx, leg: LegId, req: &Request) {
        // Only the ACK of a 2xx of ours (end to end, its own branch) goes on.
        let Some(acked) = self.leg_mut(leg).awaiting_ack.take() else {
            return;
        };
        ctx.push(Effect::Acked(acked));
        let (ack_cseq, _) = trunkgate_sip::cseq(req).unwrap_or((0, "ACK"));
        let other = leg.other();
        let answers_setup = leg == LegId::A && ack_cseq == self.a.invite_cseq;
        let initial = answers_setup && self.b_ack.is_none();
        if answers_setup {
            // Set up: the caller acknowledged the answer.
            self.setup = None;
            self.setup_source = None;
        }
        let cseq = if initial {
            Some(self.b.invite_cseq)
        } else {
            self.leg_mut(other).reinvite_cseq.take()
        };
        let Some(cseq) = cseq else { return };
        let branch = ctx.mint.branch();
        let body = self
            .relay_body(ctx, leg, &req.body, super::media::request_exchange(req))
            .unwrap_or_default();
        let mut lines = msg::copied_lines(req);
        if initial && let Some(auth) = self.auth_line.take() {
            // RFC 3261 §13.2.2.4: the ACK carries the INVITE's credentials.
            lines.push_str(&auth);
        }
        let l = self.leg(other);
        let hostport = ctx.env.hostport_on(l.side, &l.peer).to_string();
        let (bytes, _, _, side, dest) =
            super::b2bua::in_dialog_request(l, "ACK", &branch, cseq, None, &lines, &body, hostport);
        if initial {
            self.b_ack = Some(bytes.clone());
        }
        ctx.push(Effect::Send { side, dest, bytes });
    }

    /// A CANCEL from `side` matched the call's initial INVITE (server transaction `invite`)
    /// before its final answer: the caller gets 487, and leg B's INVITE is CANCELed once it
    /// has rung (RFC 3261 §9.1), or the call ends if leg B has none pending.
    pub fn on_cancel(&mut self, ctx: &mut Ctx, side: Side, invite: TransactionKey) {
        ctx.push(Effect::Respond {
            key: invite,
            code: 487,
            reason: "Request Terminated".into(),
            lines: String::new(),
            body: Vec::new(),
        });
        let attempt = match self.state {
            CallState::Proceeding(a) | CallState::Cancelling(a) => a,
            _ => Attempt::Calling,
        };
        self.final_code = Some(487);
        self.ended_by = Some(side.party());
        self.state = CallState::Cancelling(attempt);
        if self.b_invite.is_none() {
            ctx.push(Effect::Finish);
        } else if attempt == Attempt::Ringing {
            // Before leg B rang, its CANCEL waits for a provisional answer.
            ctx.push(Effect::CancelB);
        }
    }

    /// Rewrites a body that passes from leg `from` to the other leg, as `exchange`
    /// ([`super::media::exchange_of`]). Bodies of calls without relay, empty ones and ones
    /// that are no SDP exchange (`None`) pass unchanged.
    pub fn relay_body(
        &self,
        ctx: &mut Ctx,
        from: LegId,
        body: &[u8],
        exchange: Option<trunkgate_media::Exchange>,
    ) -> Result<Vec<u8>, super::media::SdpRefusal> {
        let (Some(session), false, Some(exchange)) = (self.media, body.is_empty(), exchange) else {
            return Ok(body.to_vec());
        };
        let leg = self.leg(from);
        let policy = super::media::peer_policy(
            ctx.env.platform(),
            self.rt.trunk(self.trunk),
            leg.side,
            leg.peer.addr().ip(),
        );
        let Some(engine) = ctx.media.as_deref_mut() else {
            return Ok(body.to_vec());
        };
        let mut sdp = trunkgate_media::Sdp::parse(body)?;
        engine.relay_sdp_as(session, leg.side, &mut sdp, &policy, exchange)?;
        Ok(sdp.to_bytes())
    }
}
