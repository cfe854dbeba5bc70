//! The fleet: what every edge process of one deployment must agree on, so that N pods behave as
//! one edge. A trunk's `maxConcurrentCalls`, `maxCallsPerSecond` and `maxCallsInSetup` hold for
//! the fleet, and a digest guesser spread over the pods meets one lockout.
//!
//! Two stores behind one boundary (`--state-store`):
//! - **embedded** (no flag; `make run`): the single process is the fleet, the limits are the
//!   per-process counters of [`crate::config::TrunkState`], nothing leaves the process;
//! - **Redis 7 / Valkey 8** (`redis://`, `rediss://`, Sentinel, Cluster): a call claims a place
//!   in each limit with one Lua script (one round trip, off the worker's loop: the call waits
//!   as it waits for DNS).
//!   A place is a member of a sorted set scored by its lease's end; its pod renews it every
//!   third of `--state-lease-seconds`, so a killed pod's places free themselves within a lease,
//!   and a release is a removal (a BYE that crosses another cannot drive a count negative).
//!
//! When the store does not answer, each pod enforces its share of every limit (the limit divided
//! by the live pods it last saw), says so (`trunkgate_edge_limit_fallback`, a log line), and
//! goes back to the shared figures by itself when the store answers again; an empty store (a
//! restarted Redis) is refilled with the places the pods hold.

pub mod journal;
pub mod queue;
mod redis_store;
mod scripts;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;

use crate::quality::Counts;

pub use redis_store::{Source, load_calls, run};

/// How to reach the shared store, from `--state-store`.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    pub url: String,
    /// Overrides the URL's password (`TRUNKGATE_STATE_STORE_PASSWORD`, from a Secret).
    pub password: Option<String>,
    /// Prefix of every key, so fleets may share one Redis.
    pub prefix: String,
    /// This process's name in the fleet (the pod's name).
    pub identity: String,
    pub lease: Duration,
}

/// What one call asks of the fleet's limits.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    pub trunk: String,
    pub max_concurrent: Option<u32>,
    pub max_per_second: Option<u32>,
    pub max_in_setup: u32,
}

/// Which limit of the fleet refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetRefusal {
    Concurrent(u32),
    PerSecond(u32),
    InSetup(u32),
}

impl FleetRefusal {
    /// The refusal's metric reason, status text and Retry-After seconds.
    pub fn describe(self) -> (&'static str, String, u32) {
        match self {
            FleetRefusal::Concurrent(n) => (
                "max_concurrent_calls",
                format!("trunk is at its limit of {n} concurrent calls"),
                5,
            ),
            FleetRefusal::PerSecond(n) => (
                "max_calls_per_second",
                format!("trunk is at its limit of {n} new calls per second"),
                1,
            ),
            FleetRefusal::InSetup(n) => (
                "max_calls_in_setup",
                format!("trunk is at its limit of {n} calls in set-up"),
                5,
            ),
        }
    }
}

/// The store's answer to a claim.
pub enum Verdict {
    /// The call holds a place in the fleet's concurrent calls and calls in set-up.
    Granted(Hold),
    Refused(FleetRefusal),
    /// The store did not answer: the pod's own share (already checked) decides. The places are
    /// held all the same, and written to the store once it answers again.
    Unavailable(Hold),
}

/// A call's places in the fleet's limits; each is given back when its half drops.
pub struct Hold {
    pub concurrent: Release,
    pub setup: Release,
}

/// One place in a sorted set of the store, removed when dropped.
pub struct Release {
    key: Arc<str>,
    member: Arc<str>,
    tx: Tx,
}

impl Release {
    /// A place released through `tx`, for tests that play the store.
    #[cfg(test)]
    pub fn test(key: &str, member: &str, tx: &Tx) -> Self {
        Release {
            key: key.into(),
            member: member.into(),
            tx: tx.clone(),
        }
    }
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Release({} {})", self.key, self.member)
    }
}

impl Release {
    /// The place's name in the store (a checkpoint keeps it: crate::fleet::restore).
    pub fn member(&self) -> &str {
        &self.member
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.tx.push(Cmd::Release {
            key: self.key.clone(),
            member: self.member.clone(),
        });
    }
}

/// The store task's queue.
pub type Tx = Arc<queue::Queue<Cmd>>;

/// How the fleet's quality windows meet the snapshot running: which carrier targets to read,
/// and what to do with the fleet's sums of them (`crate::route::fleet_quality`).
pub trait QualityView: Send + Sync {
    /// The targets' keys, as [`quality_key`] names them.
    fn targets(&self) -> Vec<String>;
    /// The fleet's window of each (every pod's attempts over the last 15 minutes).
    fn apply(&self, sums: HashMap<String, Counts>);
}

/// A carrier target's name in the fleet's quality windows.
pub fn quality_key(trunk: &str, target: &str) -> String {
    format!("{trunk} {target}")
}

/// The fleet's windows keep 10-second buckets of wall-clock time for 15 minutes (as the
/// pods' own: crate::config::health).
pub const QUALITY_BUCKET_S: u64 = 10;
pub const QUALITY_SPAN_S: u64 = 15 * 60;

/// Buckets of attempts waiting to be added to the fleet's windows at most (one per target and
/// 10 seconds; more is dropped, counted as `quality`/`dropped` store ops).
const MAX_PENDING_QUALITY: usize = 10_000;

/// What this pod's attempts added to the fleet's quality windows since the store task last
/// wrote them: (target key, bucket start in Unix seconds) → counts. Workers add to it under a
/// lock without waking the store task; its tick writes them (off every call's path).
#[derive(Default)]
pub struct QualityShare {
    pending: Mutex<HashMap<(String, u64), Counts>>,
}

impl QualityShare {
    /// Takes what waits to be written.
    pub fn take(&self) -> HashMap<(String, u64), Counts> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Work for the store task.
pub enum Cmd {
    Claim {
        req: ClaimRequest,
        reply: Box<dyn FnOnce(Verdict) + Send>,
    },
    Release {
        key: Arc<str>,
        member: Arc<str>,
    },
    /// A call's checkpoint, or its end.
    Journal(journal::Entry),
    /// A restored call keeps the place it held before the restart (written back if the store
    /// lost it), renewed from now on by this process.
    Keep {
        key: Arc<str>,
        member: Arc<str>,
    },
    /// A digest failure from this address, for the fleet's count.
    AuthFailed(IpAddr),
    /// A right answer from this address clears the fleet's count.
    AuthSucceeded(IpAddr),
}

/// The registration trunks (`outbound.registration`) of the fleet, and which of them this
/// process holds: exactly one pod registers each trunk.
#[derive(Default, Debug)]
pub struct Registrants {
    /// The registration trunks of the snapshot running.
    pub wanted: Vec<String>,
    /// The ones this process holds, each until its election runs out unless renewed.
    pub held: HashMap<String, Instant>,
}

/// This process's handle on the fleet.
pub struct Fleet {
    store: Option<Handle>,
    /// Attempts for the fleet's quality windows, written by the store task.
    quality: Arc<QualityShare>,
    /// Where calls' checkpoints go: the store task, or the file journal's writer.
    file_journal: std::sync::OnceLock<std::sync::mpsc::Sender<journal::Entry>>,
    registrants: Arc<Mutex<Registrants>>,
    orphans: Arc<Mutex<Vec<String>>>,
    /// What each pod's counters divide the trunk limits by: 1 while the store answers (or with
    /// the embedded store), the live pods last seen while it does not.
    share: Arc<AtomicU32>,
}

struct Handle {
    tx: Tx,
    /// The store's key prefix (`--state-prefix`).
    prefix: String,
}

/// The store task's side of a shared fleet, for [`run`].
pub struct StoreTask {
    /// The workers' commands; also for the [`Release`]s of granted places.
    pub tx: Tx,
    pub settings: StoreSettings,
    /// Random per process start, so a restarted pod's places never collide with the ones its
    /// previous life left to expire.
    pub boot: String,
    pub seq: AtomicU64,
    /// The share divisor the pods' own counters use ([`Fleet::share`]).
    pub share: Arc<AtomicU32>,
    /// The registration trunks to hold and the ones held ([`Fleet::leads`]).
    pub registrants: Arc<Mutex<Registrants>>,
    /// Calls of edges gone for good, adopted to be ended ([`Fleet::take_orphans`]).
    pub orphans: Arc<Mutex<Vec<String>>>,
    /// Calls of an edge silent this long are ended by this one (0: never).
    pub orphan_after: std::time::Duration,
    /// This pod's attempts for the fleet's quality windows.
    pub quality: Arc<QualityShare>,
}

impl StoreTask {
    fn member(&self) -> Arc<str> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{}:{}:{n}", self.settings.identity, self.boot).into()
    }
}

impl Fleet {
    /// The embedded fleet of one process.
    pub fn embedded() -> Self {
        Fleet {
            store: None,
            quality: Default::default(),
            file_journal: std::sync::OnceLock::new(),
            share: Arc::new(AtomicU32::new(1)),
            registrants: Default::default(),
            orphans: Default::default(),
        }
    }

    /// A fleet sharing the store `settings` name; the task goes to [`run`].
    pub fn shared(settings: StoreSettings, orphan_after: std::time::Duration) -> (Self, StoreTask) {
        let tx: Tx = Default::default();
        let prefix = settings.prefix.clone();
        let share = Arc::new(AtomicU32::new(1));
        let registrants: Arc<Mutex<Registrants>> = Default::default();
        let orphans: Arc<Mutex<Vec<String>>> = Default::default();
        let quality: Arc<QualityShare> = Default::default();
        let task = StoreTask {
            quality: quality.clone(),
            registrants: registrants.clone(),
            orphans: orphans.clone(),
            orphan_after,
            tx: tx.clone(),
            settings,
            boot: format!("{:08x}", rand::random::<u32>()),
            seq: AtomicU64::new(0),
            share: share.clone(),
        };
        (
            Fleet {
                store: Some(Handle { tx, prefix }),
                quality,
                file_journal: std::sync::OnceLock::new(),
                share,
                registrants,
                orphans,
            },
            task,
        )
    }

    pub fn is_shared(&self) -> bool {
        self.store.is_some()
    }

    /// The divisor of the trunk limits each process enforces on its own (see [`share_of`]).
    pub fn share(&self) -> &Arc<AtomicU32> {
        &self.share
    }

    /// Asks the store for a call's places; `reply` gets the verdict on the store task. Without
    /// a running store task (embedded, or shutting down) the process's own counters decide.
    pub fn claim(&self, req: ClaimRequest, reply: Box<dyn FnOnce(Verdict) + Send>) {
        let tx = match &self.store {
            Some(h) => return h.tx.push(Cmd::Claim { req, reply }),
            None => Tx::default(),
        };
        let none = || Release {
            key: "".into(),
            member: "".into(),
            tx: tx.clone(),
        };
        reply(Verdict::Unavailable(Hold {
            concurrent: none(),
            setup: none(),
        }));
    }

    /// What an attempt or a call to carrier `target` of `trunk` did, for the fleet's window
    /// of it: added to this pod's pending counts, written by the store task on its next tick.
    /// Nothing with the embedded store (the process's own window is the fleet's).
    pub fn share_quality(&self, trunk: &str, target: &str, delta: &Counts) {
        if self.store.is_none() {
            return;
        }
        let now = unix_secs();
        let bucket = now - now % QUALITY_BUCKET_S;
        let key = (quality_key(trunk, target), bucket);
        let mut pending = self
            .quality
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING_QUALITY && !pending.contains_key(&key) {
            return;
        }
        pending.entry(key).or_default().add(delta);
    }

    /// The registration trunks of the snapshot now running (the store task elects a holder for
    /// each).
    pub fn want_registrations(&self, trunks: Vec<String>) {
        let mut r = self.registrants.lock().unwrap_or_else(|e| e.into_inner());
        r.held.retain(|t, _| trunks.contains(t));
        r.wanted = trunks;
    }

    /// Whether this process holds `trunk`'s registration at `now`: always with the embedded
    /// store; with a shared one, while its election lasts.
    pub fn leads(&self, trunk: &str, now: Instant) -> bool {
        if self.store.is_none() {
            return true;
        }
        let r = self.registrants.lock().unwrap_or_else(|e| e.into_inner());
        r.held.get(trunk).is_some_and(|until| *until > now)
    }

    /// Calls' checkpoints go to the file journal `tx` (the embedded store with --state-dir).
    pub fn journal_to_file(&self, tx: std::sync::mpsc::Sender<journal::Entry>) {
        let _ = self.file_journal.set(tx);
    }

    /// Whether calls are checkpointed (a shared store, or a file journal).
    pub fn journals(&self) -> bool {
        self.store.is_some() || self.file_journal.get().is_some()
    }

    /// Writes a call's checkpoint (`json`), or forgets it (None). Never waits.
    pub fn journal(&self, key: String, json: Option<String>) {
        let entry = journal::Entry { key, json };
        match &self.store {
            Some(h) => h.tx.push(Cmd::Journal(entry)),
            None => {
                if let Some(tx) = self.file_journal.get() {
                    let _ = tx.send(entry);
                }
            }
        }
    }

    /// A restored call's place in `trunk`'s concurrent calls, `member` as its checkpoint names
    /// it: the same place, renewed by this process from now on, so the call counts once (its
    /// old life's place is this one) and nothing is claimed again. None with the embedded
    /// store.
    pub fn keep_place(&self, trunk: &str, member: &str) -> Option<Release> {
        let h = self.store.as_ref()?;
        let key = TrunkKeys::new(&h.prefix, trunk).concurrent;
        let member: Arc<str> = member.into();
        h.tx.push(Cmd::Keep {
            key: key.clone(),
            member: member.clone(),
        });
        Some(Release {
            key,
            member,
            tx: h.tx.clone(),
        })
    }

    /// Calls of edges gone for good that this process adopted, to end them.
    pub fn take_orphans(&self) -> Vec<String> {
        std::mem::take(&mut *self.orphans.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The store task's queue (None: the embedded store).
    pub fn sender(&self) -> Option<Tx> {
        self.store.as_ref().map(|h| h.tx.clone())
    }
}

/// The keys one trunk's limits live under. The trunk id in braces keeps them in one Redis
/// Cluster slot, as a script needs.
pub struct TrunkKeys {
    pub concurrent: Arc<str>,
    pub setup: Arc<str>,
    pub per_second: String,
}

impl TrunkKeys {
    pub fn new(prefix: &str, trunk: &str) -> Self {
        TrunkKeys {
            concurrent: format!("{prefix}:{{{trunk}}}:calls").into(),
            setup: format!("{prefix}:{{{trunk}}}:setup").into(),
            per_second: format!("{prefix}:{{{trunk}}}:cps"),
        }
    }
}

/// `url` without the password it may carry, for logs and error messages.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// A limit as one process enforces it when it cannot reach the store: its share of the fleet's
/// `max` over `pods` live pods, rounded down so the fleet stays within the contract, but never
/// below one call.
pub fn share_of(max: u32, pods: u32) -> u32 {
    if pods <= 1 {
        return max;
    }
    (max / pods).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limits_share_never_adds_up_to_more_than_the_contract_with_enough_calls() {
        assert_eq!(share_of(5, 1), 5);
        assert_eq!(share_of(5, 0), 5, "no pod seen yet: the whole limit");
        assert_eq!(share_of(5, 3), 1);
        assert_eq!(share_of(30, 3), 10);
        assert_eq!(share_of(31, 3), 10, "rounded down");
        assert_eq!(share_of(2, 5), 1, "never below one call");
    }

    #[test]
    fn a_store_url_is_logged_without_its_password() {
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redacted("rediss://redis.svc:6380"),
            "rediss://redis.svc:6380"
        );
    }

    #[test]
    fn a_trunks_keys_share_one_cluster_slot() {
        let k = TrunkKeys::new("trunkgate", "voice/acme");
        assert_eq!(&*k.concurrent, "trunkgate:{voice/acme}:calls");
        assert_eq!(&*k.setup, "trunkgate:{voice/acme}:setup");
        assert_eq!(k.per_second, "trunkgate:{voice/acme}:cps");
    }

    #[test]
    fn a_dropped_place_is_given_back_once() {
        let tx: Tx = Default::default();
        let r = Release {
            key: "k".into(),
            member: "m".into(),
            tx: tx.clone(),
        };
        drop(r);
        let got = tx.take();
        assert!(matches!(got.as_slice(), [Cmd::Release { .. }]));
        assert!(tx.take().is_empty());
    }

    #[test]
    fn the_embedded_fleet_is_one_process() {
        let f = Fleet::embedded();
        assert!(!f.is_shared());
        assert_eq!(f.share().load(Ordering::Relaxed), 1);
    }
}
