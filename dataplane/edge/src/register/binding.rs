//! One trunk's registration as a value (RFC 3261 §10.2): when the next REGISTER is due, what
//! it asks for, and what an answer or a silence makes of it. No socket, no clock: time is an
//! input, so unit tests drive it alone.

use std::time::{Duration, Instant, SystemTime};

/// The first wait after a failure; each further failure doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);
pub const MAX_BACKOFF: Duration = Duration::from_secs(1800);
/// A binding is refreshed at half its lifetime, but never sooner than this after the last.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// What an answer did to the binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The registrar holds the binding for this many seconds.
    Registered { expires: u32 },
    /// Refused, or no answer: tried again after `retry_in`.
    Failed { retry_in: Duration },
    /// A 423: asked again at once for the registrar's minimum (RFC 3261 §10.2.8).
    TooBrief { min_expires: u32 },
    /// A provisional answer, or nothing in flight: nothing changes.
    None,
}

/// One trunk's registration with its registrar.
#[derive(Clone, Debug)]
pub struct Binding {
    /// One Call-ID and From tag for every REGISTER of this binding, CSeq rising (§10.2.4).
    pub call_id: String,
    pub tag: String,
    cseq: u32,
    /// The lifetime asked for: the trunk's, raised by a 423's Min-Expires.
    asking: u32,
    due: Instant,
    in_flight: bool,
    failures: u32,
    /// Registered until (monotonic, and wall clock for the status).
    until: Option<(Instant, SystemTime)>,
    pub last_error: Option<String>,
}

impl Binding {
    /// A binding not yet registered, due at `now`.
    pub fn new(call_id: String, tag: String, expires: u32, now: Instant) -> Self {
        Binding {
            call_id,
            tag,
            cseq: 1,
            asking: expires,
            due: now,
            in_flight: false,
            failures: 0,
            until: None,
            last_error: None,
        }
    }

    /// Whether a REGISTER should go out now.
    pub fn due(&self, now: Instant) -> bool {
        !self.in_flight && now >= self.due
    }

    /// A REGISTER goes out: its CSeq and the lifetime it asks for.
    pub fn sending(&mut self) -> (u32, u32) {
        self.in_flight = true;
        let cseq = self.cseq;
        self.cseq += 1;
        (cseq, self.asking)
    }

    /// The final answer `code` to the REGISTER whose CSeq was `cseq` (a challenge answered
    /// with credentials went out with a higher one). `granted` is the lifetime the registrar
    /// gave our contact (its `expires` parameter or the Expires header), `min_expires` a
    /// 423's Min-Expires.
    #[allow(clippy::too_many_arguments)]
    pub fn answered(
        &mut self,
        now: Instant,
        wall: SystemTime,
        code: u16,
        reason: &str,
        cseq: u32,
        granted: Option<u32>,
        min_expires: Option<u32>,
    ) -> Change {
        if code < 200 || !self.in_flight {
            return Change::None;
        }
        self.in_flight = false;
        self.cseq = self.cseq.max(cseq.saturating_add(1));
        match code {
            200..=299 => {
                let expires = granted.unwrap_or(self.asking);
                if expires == 0 {
                    return self.failed(now, "the registrar granted no lifetime (expires=0)");
                }
                self.failures = 0;
                self.last_error = None;
                let life = Duration::from_secs(u64::from(expires));
                self.until = Some((now + life, wall + life));
                self.due = now + (life / 2).max(MIN_REFRESH);
                Change::Registered { expires }
            }
            423 => match min_expires.filter(|m| *m > self.asking) {
                Some(m) => {
                    self.asking = m;
                    self.due = now;
                    Change::TooBrief { min_expires: m }
                }
                None => self.failed(now, "423 Interval Too Brief without a usable Min-Expires"),
            },
            _ => self.failed(now, &format!("{code} {reason}")),
        }
    }

    /// The REGISTER got no answer (timeout, transport error, no address).
    pub fn no_answer(&mut self, now: Instant, why: &str) -> Change {
        if !self.in_flight {
            return Change::None;
        }
        self.in_flight = false;
        self.failed(now, why)
    }

    fn failed(&mut self, now: Instant, why: &str) -> Change {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(why.to_string());
        let retry_in = backoff(self.failures);
        // A binding still held is refreshed before it runs out, whatever the backoff says.
        let retry_at = match self.until {
            Some((until, _)) if until > now => (now + retry_in).min(now + (until - now) / 2),
            _ => now + retry_in,
        };
        self.due = retry_at.max(now + MIN_REFRESH);
        Change::Failed {
            retry_in: self.due - now,
        }
    }

    /// Whether the registrar holds the binding at `now`.
    pub fn registered(&self, now: Instant) -> bool {
        self.until.is_some_and(|(until, _)| until > now)
    }

    /// When the binding runs out, while registered.
    pub fn expires_at(&self, now: Instant) -> Option<SystemTime> {
        self.until
            .filter(|(until, _)| *until > now)
            .map(|(_, wall)| wall)
    }
}

/// The wait after `failures` failures in a row: 30 s, 60 s, 120 s, ... up to 30 min.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(now: Instant) -> Binding {
        Binding::new("r1@edge".into(), "t1".into(), 3600, now)
    }

    #[test]
    fn registered_then_refreshed_at_half_the_granted_lifetime() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let mut b = binding(t0);
        assert!(b.due(t0));
        assert_eq!(b.sending(), (1, 3600));
        assert!(!b.due(t0), "not twice at once");
        let c = b.answered(t0, wall, 200, "OK", 1, Some(600), None);
        assert_eq!(c, Change::Registered { expires: 600 });
        assert!(b.registered(t0));
        assert_eq!(b.expires_at(t0), Some(wall + Duration::from_secs(600)));
        assert!(!b.due(t0 + Duration::from_secs(299)));
        assert!(b.due(t0 + Duration::from_secs(300)));
        assert_eq!(b.sending(), (2, 3600), "same binding, next CSeq");
        assert!(!b.registered(t0 + Duration::from_secs(600)));
    }

    #[test]
    fn a_challenged_register_moves_the_cseq_past_the_one_with_credentials() {
        let t0 = Instant::now();
        let mut b = binding(t0);
        b.sending();
        // The challenge was answered with CSeq 2 by the transaction layer.
        b.answered(t0, SystemTime::UNIX_EPOCH, 200, "OK", 2, None, None);
        assert_eq!(b.sending().0, 3);
    }

    #[test]
    fn failures_back_off_and_do_not_retry_every_tick() {
        let t0 = Instant::now();
        let mut b = binding(t0);
        b.sending();
        let c = b.answered(t0, SystemTime::UNIX_EPOCH, 403, "Forbidden", 1, None, None);
        assert_eq!(
            c,
            Change::Failed {
                retry_in: Duration::from_secs(30)
            }
        );
        assert_eq!(b.last_error.as_deref(), Some("403 Forbidden"));
        assert!(!b.due(t0 + Duration::from_secs(29)));
        assert!(b.due(t0 + Duration::from_secs(30)));
        b.sending();
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(
            b.no_answer(t1, "no answer within 32 s"),
            Change::Failed {
                retry_in: Duration::from_secs(60)
            }
        );
        assert_eq!(backoff(3), Duration::from_secs(120));
        assert_eq!(backoff(40), MAX_BACKOFF);
        // An answer resets the backoff.
        let t2 = t1 + Duration::from_secs(60);
        b.sending();
        b.answered(t2, SystemTime::UNIX_EPOCH, 200, "OK", 3, Some(120), None);
        assert!(b.last_error.is_none());
        b.sending();
        let c = b.answered(t2, SystemTime::UNIX_EPOCH, 500, "Oops", 4, None, None);
        assert_eq!(
            c,
            Change::Failed {
                retry_in: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn a_held_binding_is_retried_before_it_runs_out() {
        let t0 = Instant::now();
        let mut b = binding(t0);
        b.sending();
        b.answered(t0, SystemTime::UNIX_EPOCH, 200, "OK", 1, Some(60), None);
        let t1 = t0 + Duration::from_secs(30);
        b.sending();
        // Fourth failure in a row would wait minutes; the binding has 30 s left.
        b.failures = 3;
        let c = b.answered(t1, SystemTime::UNIX_EPOCH, 503, "Busy", 2, None, None);
        assert_eq!(
            c,
            Change::Failed {
                retry_in: Duration::from_secs(15)
            }
        );
        assert!(b.registered(t1), "still held meanwhile");
    }

    #[test]
    fn too_brief_asks_again_for_the_registrars_minimum() {
        let t0 = Instant::now();
        let mut b = Binding::new("c".into(), "t".into(), 60, t0);
        b.sending();
        let c = b.answered(
            t0,
            SystemTime::UNIX_EPOCH,
            423,
            "Interval Too Brief",
            1,
            None,
            Some(300),
        );
        assert_eq!(c, Change::TooBrief { min_expires: 300 });
        assert!(b.due(t0));
        assert_eq!(b.sending(), (2, 300));
        let c = b.answered(
            t0,
            SystemTime::UNIX_EPOCH,
            423,
            "Interval Too Brief",
            2,
            None,
            None,
        );
        assert!(
            matches!(c, Change::Failed { .. }),
            "no usable minimum: a failure"
        );
    }

    #[test]
    fn provisional_and_unexpected_answers_change_nothing() {
        let t0 = Instant::now();
        let mut b = binding(t0);
        assert_eq!(
            b.answered(t0, SystemTime::UNIX_EPOCH, 200, "OK", 1, None, None),
            Change::None,
            "nothing in flight"
        );
        b.sending();
        assert_eq!(
            b.answered(t0, SystemTime::UNIX_EPOCH, 100, "Trying", 1, None, None),
            Change::None
        );
        let c = b.answered(t0, SystemTime::UNIX_EPOCH, 200, "OK", 1, Some(0), None);
        assert!(
            matches!(c, Change::Failed { .. }),
            "expires=0 is no binding"
        );
    }
}
