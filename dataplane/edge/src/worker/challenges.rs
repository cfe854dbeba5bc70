//! The worker's side of answering carriers' digest challenges ([`crate::call::challenge`]):
//! a challenged request of ours is sent again from its client transaction with the trunk's
//! credentials.

use trunkgate_crds::digest::DigestCredentials;
use trunkgate_sip::Response;

use super::{Purpose, Timer, Worker};
use crate::call::Side;
use crate::call::challenge::{MAX_TRIES, Unanswered, Unusable};
use crate::sip::message::resend_with;
use crate::sip::msg::method_name;
use crate::sip::transaction::TransactionKey;

impl Worker {
    /// The trunk's outbound credentials for a request of `key`'s transaction, when it went to a
    /// carrier: the call's trunk, or the probed trunk.
    fn challenge_credentials(&self, key: &TransactionKey) -> (String, Option<DigestCredentials>) {
        let Some(tx) = self.clients.get(key) else {
            return (String::new(), None);
        };
        match &tx.purpose {
            Purpose::Probe(p) => (p.trunk_id.clone(), p.auth.clone()),
            Purpose::Register(trunk) => {
                let rt = self.shared.runtime.load();
                let creds = rt
                    .config
                    .trunks
                    .iter()
                    .find(|t| *t.id == **trunk)
                    .and_then(|t| t.outbound.as_ref()?.auth.clone());
                (trunk.to_string(), creds)
            }
            Purpose::Relay(_)
            | Purpose::Bye
            | Purpose::Setup
            | Purpose::Cancel
            | Purpose::Refresh => {
                let Some(c) = self.calls.get(&tx.call) else {
                    return (String::new(), None);
                };
                let creds = (tx.side == Side::Public)
                    .then(|| c.rt.trunk(c.trunk).outbound.as_ref()?.auth.clone())
                    .flatten();
                (c.trunk_id().to_string(), creds)
            }
        }
    }

    /// Sends the challenged request of `key` (its bytes `sent`) again with credentials, as a
    /// new transaction with the same purpose. Err says why it was not, and is counted.
    pub(crate) fn answer_challenge(
        &mut self,
        key: &TransactionKey,
        resp: &Response,
        sent: &[u8],
    ) -> Result<(), Unanswered> {
        let (trunk, creds) = self.challenge_credentials(key);
        let result = self.resend_challenged(key, resp, sent, creds);
        let label = match &result {
            Ok(()) => "answered",
            Err(e) => e.metric_label(),
        };
        self.shared
            .metrics
            .carrier_challenges
            .with_label_values(&[trunk.as_str(), method_name(&key.method()), label])
            .inc();
        result
    }

    fn resend_challenged(
        &mut self,
        key: &TransactionKey,
        resp: &Response,
        sent: &[u8],
        creds: Option<DigestCredentials>,
    ) -> Result<(), Unanswered> {
        let creds = creds.ok_or(Unanswered::NoCredentials)?;
        let Some(tx) = self.clients.get(key) else {
            return Err(Unanswered::Unusable(Unusable::Gone));
        };
        let tries = tx.auth_tries;
        let (line, stale) = self
            .auth
            .answer(resp, method_name(&key.method()), &tx.ruri, &creds)
            .map_err(Unanswered::Unusable)?;
        if tries >= MAX_TRIES || (tries > 0 && !stale) {
            return Err(Unanswered::Refused {
                username: creds.username.clone(),
                realm: creds.realm.clone(),
            });
        }
        // RFC 3261 §22.2: same request, CSeq one higher; inside a dialog the leg's CSeq moves on.
        let cseq = match self.calls.get_mut(&tx.call) {
            Some(c) if !matches!(tx.purpose, Purpose::Probe(_) | Purpose::Register(_)) => {
                let l = c.leg_mut(tx.leg);
                l.local_cseq = l.local_cseq.max(tx.cseq) + 1;
                l.local_cseq
            }
            _ => tx.cseq + 1,
        };
        let branch = self.mint.branch();
        let bytes = resend_with(sent, key.branch(), &branch, cseq, &line)
            .ok_or(Unanswered::Unusable(Unusable::NotRebuilt))?;
        let (call, leg, purpose, side, dest, ruri, ident) = (
            tx.call,
            tx.leg,
            tx.purpose.clone(),
            tx.side,
            tx.dest.clone(),
            tx.ruri.clone(),
            tx.ident.clone(),
        );
        let probe = matches!(purpose, Purpose::Probe(_) | Purpose::Register(_));
        let new = self.open_client(
            call,
            leg,
            purpose,
            side,
            dest,
            key.method(),
            branch,
            bytes,
            ruri,
            ident,
            cseq,
        );
        if let Some(tx) = self.clients.get_mut(&new) {
            tx.auth_tries = tries + 1;
        }
        if probe {
            let after = self.shared.settings.failover_timeout();
            self.schedule(after, Timer::Failover(new));
        }
        Ok(())
    }

    /// A challenge the edge does not answer: the platform gets 403 with the real cause for a
    /// relayed request (its own credentials mean nothing to the carrier); a probe counts the
    /// answer as usual (a challenge means the target is alive); a BYE is logged.
    pub(crate) fn challenge_unanswered(
        &mut self,
        key: TransactionKey,
        resp: &Response,
        why: Unanswered,
    ) {
        let (trunk, _) = self.challenge_credentials(&key);
        let Some(tx) = self.clients.get(&key) else {
            return;
        };
        let text = why.text(&trunk, method_name(&key.method()));
        tracing::warn!(
            trunk,
            method = method_name(&key.method()),
            code = resp.status_code.code(),
            "{text}"
        );
        match tx.purpose.clone() {
            Purpose::Relay(server) => self.refuse(&server, 403, &text, ""),
            Purpose::Probe(probe) => {
                self.probe_answered(&probe, resp.status_code.code(), "challenged")
            }
            Purpose::Register(trunk) => self.register_failed(&trunk, &text),
            Purpose::Bye | Purpose::Cancel | Purpose::Setup | Purpose::Refresh => {}
        }
    }
}
