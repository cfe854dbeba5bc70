//! The calls a worker holds: by id and by dialog (its Call-ID and our tag on each leg). Who may
//! reach a dialog is in `gate.rs`; the answered calls waiting for their ACK in `recycle.rs`.

use std::collections::VecDeque;
use std::time::Instant;

use super::Table;
use crate::call::{Call, CallState, LegId};

/// One worker's calls.
#[derive(Default)]
pub struct Calls {
    by_id: Table<u64, Call>,
    dialogs: Table<(String, String), (u64, LegId)>,
    /// The id the next call gets (never 0: 0 is "no call" for probes and registrations).
    last: u64,
    /// Carrier calls answered 2xx and waiting for their ACK, oldest first (`recycle.rs`).
    pub(super) unacked: VecDeque<(Instant, u64)>,
}

impl Calls {
    /// An id for a call about to be made.
    pub fn next_id(&mut self) -> u64 {
        self.last += 1;
        self.last
    }

    /// Keeps `call` as `id`, found again by either leg's dialog.
    pub fn insert(&mut self, id: u64, call: Call) {
        for (leg, l) in [(LegId::A, &call.a), (LegId::B, &call.b)] {
            self.dialogs
                .insert((l.call_id.clone(), l.local_tag.clone()), (id, leg));
        }
        self.by_id.insert(id, call);
    }

    /// Removes a call and everything that points to it.
    pub fn forget(&mut self, id: u64) {
        if let Some(c) = self.by_id.remove(&id) {
            self.dialogs
                .remove(&(c.a.call_id.clone(), c.a.local_tag.clone()));
            self.dialogs
                .remove(&(c.b.call_id.clone(), c.b.local_tag.clone()));
        }
    }

    pub fn get(&self, id: u64) -> Option<&Call> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Call> {
        self.by_id.get_mut(&id)
    }

    /// The call and leg of the dialog (Call-ID, our tag).
    pub(super) fn dialog(&self, call_id: &str, tag: &str) -> Option<(u64, LegId)> {
        self.dialogs
            .get(&(call_id.to_string(), tag.to_string()))
            .copied()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.by_id.keys().copied().collect()
    }

    /// Whether every call has ended (a stopping worker may go).
    pub fn all_ended(&self) -> bool {
        self.by_id.values().all(|c| c.state == CallState::Ended)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    #[cfg(test)]
    pub fn values(&self) -> impl Iterator<Item = &Call> {
        self.by_id.values()
    }
}
