//! The worker's side of answering carriers' digest challenges ([`crate::call::challenge`]):
//! whose credentials answer a challenged request, and the request sent again from its client
//! transaction with them.

use std::time::Instant;

use trunkgate_crds::digest::DigestCredentials;

use super::transactions::{NewClient, Transactions};
use super::{ClientTxn, Purpose, Shared, Timer};
use crate::call::challenge::{Unanswered, Unusable};
use crate::call::{Call, Side};
use crate::sip::ids::IdMint;
use crate::sip::message::resend_with;
use crate::sip::transaction::TransactionKey;

/// The trunk (its id) whose outbound credentials answer a challenge to `tx`, and those
/// credentials when it went to a carrier: the probed trunk, the registered one, or the trunk
/// of `call`, the call `tx` belongs to.
pub fn credentials(
    shared: &Shared,
    tx: &ClientTxn,
    call: Option<&Call>,
) -> (String, Option<DigestCredentials>) {
    match &tx.purpose {
        Purpose::Probe(p) => (p.trunk_id.clone(), p.auth.clone()),
        Purpose::Register(trunk) => {
            let rt = shared.runtime.load();
            let creds = rt
                .config
                .trunks
                .iter()
                .find(|t| *t.id == **trunk)
                .and_then(|t| t.outbound.as_ref()?.auth.clone());
            (trunk.to_string(), creds)
        }
        Purpose::Relay(_) | Purpose::Bye | Purpose::Setup | Purpose::Cancel | Purpose::Refresh => {
            let Some(c) = call else {
                return (String::new(), None);
            };
            let creds = (tx.side == Side::Public)
                .then(|| c.rt.trunk(c.trunk).outbound.as_ref()?.auth.clone())
                .flatten();
            (c.trunk_id().to_string(), creds)
        }
    }
}

impl Transactions {
    /// Sends the challenged request of `key` (its bytes `sent`) again with the `authorization`
    /// line and CSeq `cseq`, as a new transaction with the same purpose, one more try counted
    /// (RFC 3261 §22.2). A probe's or registration's gets its failover timer.
    pub fn send_with_credentials(
        &mut self,
        now: Instant,
        mint: &mut IdMint,
        key: &TransactionKey,
        sent: &[u8],
        authorization: &str,
        cseq: u32,
    ) -> Result<(), Unanswered> {
        let Some(tx) = self.client(key) else {
            return Err(Unanswered::Unusable(Unusable::Gone));
        };
        let branch = mint.branch();
        let bytes = resend_with(sent, key.branch(), &branch, cseq, authorization)
            .ok_or(Unanswered::Unusable(Unusable::NotRebuilt))?;
        let tries = tx.auth_tries;
        let probe = matches!(tx.purpose, Purpose::Probe(_) | Purpose::Register(_));
        let again = NewClient {
            call: tx.call,
            leg: tx.leg,
            purpose: tx.purpose.clone(),
            side: tx.side,
            dest: tx.dest.clone(),
            method: key.method(),
            branch,
            bytes,
            ruri: tx.ruri.clone(),
            ident: tx.ident.clone(),
            cseq,
        };
        let new = self.open_client(now, again);
        if let Some(tx) = self.client_mut(&new) {
            tx.auth_tries = tries + 1;
        }
        if probe {
            let after = self.failover_timeout();
            self.schedule(now, after, Timer::Failover(new));
        }
        Ok(())
    }
}
