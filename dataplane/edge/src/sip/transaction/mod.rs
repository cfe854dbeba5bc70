//! RFC 3261 §17 transactions as state machines that own no socket, clock or timer wheel: each
//! takes an input (a response, a request retransmission, a response to send, a named timer that
//! fired) and returns [`Actions`] (send again, ACK, hand up, arm timers, timed out, over). The
//! worker does the sending and keeps the timers; everything here is unit-tested in microseconds.

use std::time::Duration;

use trunkgate_sip::{HasHeaders, Method, Request};

use crate::sip::msg::method_name;

/// RFC 3261 §17.1.1.1: the round-trip estimate, the longest retransmission interval, and how
/// long a message may stay in the network.
pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
pub const T4: Duration = Duration::from_secs(5);
/// 64·T1: Timers B, F, H, J (RFC 3261) and L, M (RFC 6026).
pub const TIMEOUT: Duration = Duration::from_secs(32);

/// Which end of a transaction the edge is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// We sent the request.
    Client,
    /// We received it.
    Server,
}

/// What identifies a transaction. A server transaction is the top Via's branch and sent-by with
/// the method, ACK counting as INVITE (§17.2.3); a response reaches its client transaction by
/// branch and CSeq method alone (§17.1.3), so a client key has no sent-by. A CANCEL is a
/// transaction of its own; [`TransactionKey::cancelled`] names the INVITE it cancels (§9.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    branch: String,
    sent_by: Option<String>,
    method: Method,
}

impl TransactionKey {
    /// The key of `req` seen as `role` (§17.1.3, §17.2.3). A request without a branch (RFC 2543)
    /// gets the empty branch, so only its sent-by and method tell it apart.
    pub fn from_request(req: &Request, role: Role) -> Self {
        let branch = trunkgate_sip::top_via_branch(req).unwrap_or_default();
        let sent_by = match role {
            Role::Server => Some(trunkgate_sip::top_via_sent_by(req).unwrap_or_default()),
            Role::Client => None,
        };
        Self::new(branch, sent_by, req.method)
    }

    /// The client transaction a response answers: its top Via branch and CSeq method (§17.1.3).
    pub fn of_response(resp: &impl HasHeaders) -> Option<Self> {
        let branch = trunkgate_sip::top_via_branch(resp)?;
        let (_, method) = trunkgate_sip::cseq(resp)?;
        let method = method
            .parse::<Method>()
            .ok()
            .filter(|m| method_name(m) == method)?;
        Some(Self::new(branch, None, method))
    }

    /// The key of a request we send with `branch`.
    pub fn client(branch: &str, method: Method) -> Self {
        Self::new(branch, None, method)
    }

    fn new(branch: &str, sent_by: Option<&str>, method: Method) -> Self {
        // §17.2.3: an ACK belongs to the INVITE transaction it acknowledges.
        let method = match method {
            Method::Ack => Method::Invite,
            m => m,
        };
        Self {
            branch: branch.to_string(),
            sent_by: sent_by.map(str::to_string),
            method,
        }
    }

    /// The INVITE transaction a CANCEL with this key cancels: same branch and sent-by (§9.2).
    pub fn cancelled(&self) -> Self {
        Self {
            method: Method::Invite,
            ..self.clone()
        }
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    pub fn method(&self) -> Method {
        self.method
    }
}

/// The timers of RFC 3261 §17 and RFC 6026 by their names, plus the 2xx retransmission a UAS
/// core runs (§13.3.1.4), which the edge keeps with the INVITE server transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// INVITE client: retransmit the request (§17.1.1.2).
    A,
    /// INVITE client: give up waiting for any response.
    B,
    /// INVITE client: stop absorbing retransmitted non-2xx finals.
    D,
    /// Non-INVITE client: retransmit the request (§17.1.2.2).
    E,
    /// Non-INVITE client: give up waiting for a final response.
    F,
    /// Non-INVITE client: stop absorbing retransmitted finals.
    K,
    /// INVITE server: retransmit a non-2xx final (§17.2.1).
    G,
    /// INVITE server: give up waiting for the ACK of a non-2xx final.
    H,
    /// INVITE server: stop absorbing retransmitted ACKs.
    I,
    /// Non-INVITE server: stop absorbing retransmitted requests (§17.2.2).
    J,
    /// INVITE server: stop waiting for the ACK of a 2xx (RFC 6026 §8.7).
    L,
    /// INVITE client: stop absorbing retransmitted 2xx (RFC 6026 §8.4).
    M,
    /// INVITE server: retransmit a 2xx until its ACK comes (§13.3.1.4).
    Retransmit2xx,
}

/// What a transaction asks of the worker after an input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Send the request (client) or the last response (server) again.
    pub resend: bool,
    /// Send the ACK of this non-2xx final response (INVITE client, §17.1.1.3).
    pub ack: bool,
    /// Hand the response up to the transaction user.
    pub deliver: Delivery,
    /// Timers to start: at most two at once.
    pub arm: [Option<(Timer, Duration)>; 2],
    /// No answer in time: Timer B or F (client), no ACK: Timer H or L (server).
    pub timed_out: bool,
    /// The transaction is over; the worker forgets it.
    pub terminated: bool,
}

/// How a response goes up to the transaction user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Delivery {
    /// Not at all: absorbed by the transaction.
    #[default]
    None,
    /// As news: a provisional, the first final, or a final after the user gave up.
    Response,
    /// A 2xx again (RFC 6026 Accepted): the user repeats its ACK (§13.2.2.4).
    Retransmitted2xx,
}

impl Actions {
    fn arm(mut self, timer: Timer, after: Duration) -> Self {
        if let Some(slot) = self.arm.iter_mut().find(|s| s.is_none()) {
            *slot = Some((timer, after));
        }
        self
    }

    fn over() -> Self {
        Self {
            terminated: true,
            ..Self::default()
        }
    }

    fn resend() -> Self {
        Self {
            resend: true,
            ..Self::default()
        }
    }

    fn deliver(how: Delivery) -> Self {
        Self {
            deliver: how,
            ..Self::default()
        }
    }

    /// A linger timer, or the end at once over a reliable transport (where it is zero).
    fn linger(self, timer: Timer, unreliable: Duration, reliable: bool) -> Self {
        if reliable {
            Self {
                terminated: true,
                ..self
            }
        } else {
            self.arm(timer, unreliable)
        }
    }
}

/// Client transaction states (§17.1.1.2 figure 5, §17.1.2.2 figure 6, RFC 6026 Accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, no response yet.
    Calling,
    /// Non-INVITE sent, no response yet.
    Trying,
    /// A provisional response came.
    Proceeding,
    /// A 2xx to the INVITE came: later 2xx go up for the ACK to be repeated.
    Accepted,
    /// A final (any final of a non-INVITE, a non-2xx of an INVITE) came: retransmissions of it
    /// are absorbed.
    Completed,
    /// Over, by timeout or because the user gave up: late finals are still ACKed or handed up.
    Terminated,
}

/// A request we sent.
#[derive(Clone, Debug)]
pub struct ClientTransaction {
    invite: bool,
    reliable: bool,
    state: ClientState,
    interval: Duration,
}

impl ClientTransaction {
    /// A request just sent; Timer A or E (over an unreliable transport) and Timer B or F.
    pub fn start(invite: bool, reliable: bool) -> (Self, Actions) {
        let tx = Self {
            invite,
            reliable,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            interval: T1,
        };
        let (retransmit, timeout) = if invite {
            (Timer::A, Timer::B)
        } else {
            (Timer::E, Timer::F)
        };
        let mut actions = Actions::default().arm(timeout, TIMEOUT);
        if !reliable {
            actions = actions.arm(retransmit, T1);
        }
        (tx, actions)
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    /// Whether any response has come (the failover timer waits for none).
    pub fn answered(&self) -> bool {
        !matches!(self.state, ClientState::Calling | ClientState::Trying)
    }

    /// Whether it still waits for a final response (the user has not given up either).
    pub fn pending(&self) -> bool {
        matches!(
            self.state,
            ClientState::Calling | ClientState::Trying | ClientState::Proceeding
        )
    }

    /// A response with status `code` arrived for this transaction.
    pub fn on_response(&mut self, code: u16) -> Actions {
        use ClientState as S;
        let provisional = code < 200;
        match (self.state, provisional) {
            (S::Calling | S::Trying | S::Proceeding, true) => {
                self.state = S::Proceeding;
                Actions::deliver(Delivery::Response)
            }
            (S::Calling | S::Proceeding, false) if self.invite && code < 300 => {
                self.state = S::Accepted;
                Actions::deliver(Delivery::Response).arm(Timer::M, TIMEOUT)
            }
            (S::Calling | S::Proceeding, false) if self.invite => {
                self.state = S::Completed;
                let acked = Actions {
                    ack: true,
                    ..Actions::deliver(Delivery::Response)
                };
                acked.linger(Timer::D, TIMEOUT, self.reliable)
            }
            (S::Trying | S::Proceeding, false) => {
                self.state = S::Completed;
                Actions::deliver(Delivery::Response).linger(Timer::K, T4, self.reliable)
            }
            (S::Accepted, false) if code < 300 => Actions::deliver(Delivery::Retransmitted2xx),
            // §17.1.1.3: a retransmitted non-2xx final is ACKed again, not handed up.
            (S::Completed, false) if self.invite && code >= 300 => Actions {
                ack: true,
                ..Actions::default()
            },
            // A final after the user gave up: an INVITE's non-2xx is still ACKed so that the
            // server stops retransmitting it; a 2xx goes up, for the user to end that dialog.
            (S::Terminated, false) if self.invite && code >= 300 => Actions {
                ack: true,
                ..Actions::default()
            },
            (S::Terminated, false) if self.invite => Actions::deliver(Delivery::Response),
            _ => Actions::default(),
        }
    }

    /// `timer` fired; a timer the current state does not run is ignored (timers are not
    /// cancelled, they lapse).
    pub fn on_timer(&mut self, timer: Timer) -> Actions {
        use ClientState as S;
        match (timer, self.state) {
            // §17.1.1.2: Timer A doubles each time, until Timer B.
            (Timer::A, S::Calling) => {
                self.interval *= 2;
                Actions::resend().arm(Timer::A, self.interval)
            }
            // §17.1.2.2: Timer E doubles up to T2; in Proceeding it is T2.
            (Timer::E, S::Trying) => {
                self.interval = (self.interval * 2).min(T2);
                Actions::resend().arm(Timer::E, self.interval)
            }
            (Timer::E, S::Proceeding) => Actions::resend().arm(Timer::E, T2),
            (Timer::B, S::Calling) | (Timer::F, S::Trying | S::Proceeding) => {
                self.state = S::Terminated;
                Actions {
                    timed_out: true,
                    ..Actions::over()
                }
            }
            (Timer::D | Timer::K, S::Completed) | (Timer::M, S::Accepted) => {
                self.state = S::Terminated;
                Actions::over()
            }
            _ => Actions::default(),
        }
    }

    /// The user stops waiting (failover to another target): no more retransmissions or
    /// timeouts; the worker keeps the transaction a while to absorb late answers.
    pub fn give_up(&mut self) {
        self.state = ClientState::Terminated;
    }
}

/// Server transaction states (§17.2.1 figure 7, §17.2.2 figure 8, RFC 6026 Accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE received, nothing sent yet.
    Trying,
    /// A provisional sent (an INVITE starts here: §17.2.1 sends 100 Trying at once).
    Proceeding,
    /// A 2xx to the INVITE sent, its ACK not yet come (RFC 6026).
    Accepted,
    /// A final sent: a non-2xx to an INVITE waiting for the ACK, or any final to a non-INVITE.
    Completed,
    /// The ACK came (for a 2xx too: the edge then absorbs retransmissions for Timer I as for a
    /// non-2xx, rather than until Timer L).
    Confirmed,
    Terminated,
}

/// A request we received.
#[derive(Clone, Debug)]
pub struct ServerTransaction {
    invite: bool,
    reliable: bool,
    state: ServerState,
    interval: Duration,
}

impl ServerTransaction {
    pub fn new(invite: bool, reliable: bool) -> Self {
        Self {
            invite,
            reliable,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            interval: T1,
        }
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    /// Whether a final response went out (a second one may not, and a CANCEL is too late).
    pub fn finished(&self) -> bool {
        !matches!(self.state, ServerState::Trying | ServerState::Proceeding)
    }

    /// Whether the transaction may send a response with status `code`; if so, its state moves
    /// and the returned actions arm its timers. None: the response must not go out.
    pub fn respond(&mut self, code: u16) -> Option<Actions> {
        use ServerState as S;
        if self.finished() {
            return None;
        }
        Some(if code < 200 {
            self.state = S::Proceeding;
            Actions::default()
        } else if !self.invite {
            // §17.2.2: Timer J absorbs retransmitted requests.
            self.state = S::Completed;
            Actions::default().linger(Timer::J, TIMEOUT, self.reliable)
        } else {
            self.interval = T1;
            let (state, retransmit, give_up) = if code < 300 {
                (S::Accepted, Timer::Retransmit2xx, Timer::L)
            } else {
                (S::Completed, Timer::G, Timer::H)
            };
            self.state = state;
            let actions = Actions::default().arm(give_up, TIMEOUT);
            // Over TCP the transport delivers; only the wait for the ACK is bounded.
            if self.reliable {
                actions
            } else {
                actions.arm(retransmit, T1)
            }
        })
    }

    /// The request came again: repeat the last response, if one was sent (§17.2.1, §17.2.2).
    pub fn on_retransmission(&self) -> Actions {
        match self.state {
            ServerState::Trying | ServerState::Terminated => Actions::default(),
            ServerState::Confirmed if self.invite => Actions::default(),
            _ => Actions::resend(),
        }
    }

    /// The ACK of the final response came (hop by hop for a non-2xx, end to end for a 2xx).
    /// Returns None when this transaction waits for no ACK.
    pub fn on_ack(&mut self) -> Option<Actions> {
        match self.state {
            ServerState::Completed | ServerState::Accepted if self.invite => {
                self.state = ServerState::Confirmed;
                Some(Actions::default().linger(Timer::I, T4, self.reliable))
            }
            _ => None,
        }
    }

    pub fn on_timer(&mut self, timer: Timer) -> Actions {
        use ServerState as S;
        match (timer, self.state) {
            // §17.2.1: Timer G doubles up to T2; so does the 2xx retransmission (§13.3.1.4).
            (Timer::G, S::Completed) | (Timer::Retransmit2xx, S::Accepted) => {
                self.interval = (self.interval * 2).min(T2);
                Actions::resend().arm(timer, self.interval)
            }
            (Timer::H, S::Completed) | (Timer::L, S::Accepted) => {
                self.state = S::Terminated;
                Actions {
                    timed_out: true,
                    ..Actions::over()
                }
            }
            (Timer::I, S::Confirmed) | (Timer::J, S::Completed) => {
                self.state = S::Terminated;
                Actions::over()
            }
            _ => Actions::default(),
        }
    }
}

#[cfg(test)]
mod tests;
