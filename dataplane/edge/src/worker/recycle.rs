//! Set-up caps that a forged flood cannot fill for long. A carrier call counts against its
//! trunk's `maxCallsInSetup` and its source's `--max-calls-in-setup-per-source` until the
//! caller acknowledges the 2xx, and RFC 3261 §13.3.1.4 keeps an unacknowledged 2xx alive for
//! 64·T1. A flood of INVITEs forged with a carrier's address is answered towards the real
//! carrier, which never acknowledges: without more, the caps fill with those calls for 32 s and
//! refuse the carrier's own calls. So when a cap is full, the oldest call of that scope whose
//! 2xx has gone unacknowledged for [`RECYCLE_AFTER`] ends (BYE both ways, a record with the
//! reason) and gives its place to the new call: a live caller acknowledges within a round trip,
//! and the caps still bound what an unacknowledged flood holds.

use std::time::{Duration, Instant};

use super::calls::Calls;
use crate::call::{Call, CallState, LegId};

/// How long a 2xx may wait for its ACK before its call may make room (two transmissions of the
/// 2xx by then, RFC 3261 §13.3.1.4: T1 and 2·T1).
pub(crate) const RECYCLE_AFTER: Duration = Duration::from_secs(1);
/// Entries looked at per attempt, so a full cap costs a bounded scan per refused INVITE.
const SCAN: usize = 256;

impl Calls {
    /// Notes that call `id` answered its carrier 2xx at `now` and waits for the ACK.
    pub fn await_ack(&mut self, now: Instant, id: u64) {
        // Drop what is settled at the front, so the queue holds about the calls still waiting.
        while let Some(&(_, front)) = self.unacked.front() {
            if waiting_for_ack(self.get(front)) {
                break;
            }
            self.unacked.pop_front();
        }
        self.unacked.push_back((now, id));
    }

    /// The oldest call `of_scope` admits that has waited for its ACK for at least
    /// [`RECYCLE_AFTER`] at `now`: the one to end ([`Call::make_room`]).
    pub fn recycle(&mut self, now: Instant, of_scope: impl Fn(&Call) -> bool) -> Option<u64> {
        let mut victim = None;
        for (i, &(since, id)) in self.unacked.iter().enumerate().take(SCAN) {
            if now.saturating_duration_since(since) < RECYCLE_AFTER {
                break;
            }
            let Some(c) = self.get(id) else {
                continue;
            };
            if waiting_for_ack(Some(c)) && of_scope(c) {
                victim = Some((i, id));
                break;
            }
        }
        let (i, id) = victim?;
        self.unacked.remove(i);
        Some(id)
    }
}

/// Whether a call answered its caller and still waits for the ACK (its set-up places held).
fn waiting_for_ack(c: Option<&Call>) -> bool {
    c.is_some_and(|c| {
        c.state == CallState::Confirmed
            && c.setup.is_some()
            && c.leg(LegId::A).awaiting_ack.is_some()
    })
}
