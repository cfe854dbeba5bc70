//! The store task of a fleet sharing Redis or Valkey: claims, releases and lease renewals of
//! the calls' places, the pods' heartbeat, and the digest lockout's count and its broadcast.
//! It runs on the control thread; the workers reach it through a channel and never wait on it
//! (a claim's answer comes back as an event).
//!
//! The store is one server, the master Redis Sentinel names, or a Redis Cluster. Every script's
//! keys share one cluster slot ([`FleetKeys`], [`TrunkKeys`]), so the same scripts run on all
//! three; only the pipelined releases and checkpoints are split by slot on a cluster.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{ConnectionInfo, IntoConnectionInfo, Script};

use super::scripts;
use super::{Cmd, FleetRefusal, Hold, Release, StoreSettings, StoreTask, TrunkKeys, Verdict};
use crate::guard::lockout::Lockout;
use crate::metrics::Metrics;

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::CLAIM));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::RENEW));
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::HEARTBEAT));
static AUTH_FAILED: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::AUTH_FAILED));
static AUTH_SUCCEEDED: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::AUTH_SUCCEEDED));
static ELECT: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::ELECT));
static SILENT: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::SILENT));
static ADOPT: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::ADOPT));
static FORGET: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::FORGET));
static LOAD: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::LOAD));

/// Checkpoints kept for a store that does not answer (the last of each call), at most.
const MAX_WAITING_CHECKPOINTS: usize = 100_000;

/// How long releases wait to be sent together.
const RELEASE_BATCH: Duration = Duration::from_millis(10);

/// Places renewed per script call.
const RENEW_BATCH: usize = 512;

/// What the task and its spawned round trips share.
struct State {
    /// The places this process holds, per sorted set: renewed each tick, written back whole
    /// after the store lost them.
    held: Mutex<HashMap<Arc<str>, HashSet<Arc<str>>>>,
    /// Whether the store answered last time. While it does not, claims do not wait for it.
    up: AtomicBool,
    /// Live pods at the last heartbeat.
    pods: AtomicU32,
    /// The share divisor of the pods' own counters.
    share: Arc<AtomicU32>,
    metrics: Metrics,
}

impl State {
    fn hold(&self, key: &Arc<str>, member: &Arc<str>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.entry(key.clone()).or_default().insert(member.clone());
    }

    fn unhold(&self, key: &Arc<str>, member: &Arc<str>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = held.get_mut(key) {
            set.remove(member);
            if set.is_empty() {
                held.remove(key);
            }
        }
    }

    fn snapshot(&self) -> Vec<(Arc<str>, Vec<Arc<str>>)> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.iter()
            .map(|(k, v)| (k.clone(), v.iter().cloned().collect()))
            .collect()
    }

    fn count(&self, op: &str, result: &str) {
        self.metrics
            .store_ops
            .with_label_values(&[op, result])
            .inc();
    }

    /// The store answered: back to the shared figures.
    fn store_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!("state store answers again: trunk limits are the fleet's again");
        }
        self.share.store(1, Ordering::Release);
        self.metrics.store_up.set(1);
        self.metrics.limit_fallback.set(0);
    }

    /// The store did not answer: each pod enforces its share.
    fn store_down(&self, error: &dyn std::fmt::Display) {
        let pods = self.pods.load(Ordering::Acquire).max(1);
        self.share.store(pods, Ordering::Release);
        self.metrics.store_up.set(0);
        self.metrics.limit_fallback.set(1);
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                %error,
                pods,
                "state store unreachable: each trunk limit is enforced as this edge's share (the limit divided by the {pods} live edges last seen) until it answers"
            );
        }
    }
}

/// Runs the store task of `task` until every worker has gone; `lockout` is the edge's digest
/// lockout, which it shares with the fleet.
pub async fn run(
    task: StoreTask,
    lockout: Arc<Lockout>,
    metrics: Metrics,
    quality: Arc<dyn super::QualityView>,
) {
    let mut source = match Source::of(&task.settings) {
        Ok(s) => s,
        Err(e) => {
            // Refused at start already (`Settings::start_problems`); never reached in practice.
            tracing::error!(error = %e, "--state-store: unusable");
            return;
        }
    };
    let Ok((mut conn, subscribers)) = source.connect().await else {
        tracing::error!("--state-store: unusable");
        return;
    };
    let cluster = source.is_cluster();
    let (clients, client_rx) = tokio::sync::watch::channel(subscribers);
    let state = Arc::new(State {
        held: Mutex::new(HashMap::new()),
        up: AtomicBool::new(true),
        pods: AtomicU32::new(1),
        share: task.share.clone(),
        metrics,
    });
    state.metrics.store_up.set(1);
    state.metrics.fleet_pods.set(1);
    let prefix = task.settings.prefix.clone();
    let keys = FleetKeys::new(&prefix);
    let channel = keys.channel();
    tokio::spawn(listen(client_rx, channel.clone(), lockout.clone()));
    let lease = task.settings.lease;
    let lease_ms = lease.as_millis().min(u128::from(u32::MAX)) as u64;
    let pod = format!("{}:{}", task.settings.identity, task.boot);
    let renewing = Arc::new(AtomicBool::new(false));
    let mut releases: HashMap<Arc<str>, Vec<Arc<str>>> = HashMap::new();
    // Checkpoints since the last flush, the last one of each call winning.
    let mut journal: HashMap<String, Option<String>> = HashMap::new();
    let calls_key = keys.calls(&task.settings.identity);
    let mut flush_at = tokio::time::Instant::now();
    let queue = task.tx.clone();
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = queue.next_batch() => {
                for cmd in batch {
                match cmd {
                    Cmd::Claim { req, reply } => {
                        let keys = TrunkKeys::new(&prefix, &req.trunk);
                        let member = task.member();
                        let tx = task.tx.clone();
                        let hold = move |keys: &TrunkKeys, member: &Arc<str>| Hold {
                            concurrent: Release {
                                key: keys.concurrent.clone(),
                                member: member.clone(),
                                tx: tx.clone(),
                            },
                            setup: Release {
                                key: keys.setup.clone(),
                                member: member.clone(),
                                tx,
                            },
                        };
                        if !state.up.load(Ordering::Acquire) {
                            state.hold(&keys.concurrent, &member);
                            state.hold(&keys.setup, &member);
                            state.count("claim", "skipped");
                            reply(Verdict::Unavailable(hold(&keys, &member)));
                            continue;
                        }
                        let (mut conn, state) = (conn.clone(), state.clone());
                        tokio::spawn(async move {
                            let limit = |l: Option<u32>| l.map_or(-1, i64::from);
                            let r: redis::RedisResult<i64> = CLAIM
                                .key(&*keys.concurrent)
                                .key(&*keys.setup)
                                .key(&keys.per_second)
                                .arg(&*member)
                                .arg(lease_ms)
                                .arg(limit(req.max_concurrent))
                                .arg(limit(req.max_per_second))
                                .arg(i64::from(req.max_in_setup))
                                .invoke_async(&mut conn)
                                .await;
                            let refused = |r: FleetRefusal| {
                                state.count("claim", "refused");
                                state.store_up();
                                Verdict::Refused(r)
                            };
                            let verdict = match r {
                                Ok(0) => {
                                    state.hold(&keys.concurrent, &member);
                                    state.hold(&keys.setup, &member);
                                    state.count("claim", "ok");
                                    state.store_up();
                                    Verdict::Granted(hold(&keys, &member))
                                }
                                Ok(1) => refused(FleetRefusal::Concurrent(
                                    req.max_concurrent.unwrap_or(0),
                                )),
                                Ok(2) => refused(FleetRefusal::PerSecond(
                                    req.max_per_second.unwrap_or(0),
                                )),
                                Ok(_) => refused(FleetRefusal::InSetup(req.max_in_setup)),
                                Err(e) => {
                                    state.count("claim", "error");
                                    state.store_down(&e);
                                    state.hold(&keys.concurrent, &member);
                                    state.hold(&keys.setup, &member);
                                    Verdict::Unavailable(hold(&keys, &member))
                                }
                            };
                            reply(verdict);
                        });
                    }
                    Cmd::Release { key, member } => {
                        state.unhold(&key, &member);
                        if state.up.load(Ordering::Acquire) {
                            // Batched: one pipeline every RELEASE_BATCH, a removal per set.
                            if releases.is_empty() && journal.is_empty() {
                                flush_at = tokio::time::Instant::now() + RELEASE_BATCH;
                            }
                            releases.entry(key).or_default().push(member);
                        }
                    }
                    Cmd::Keep { key, member } => {
                        state.hold(&key, &member);
                        let (mut conn, state) = (conn.clone(), state.clone());
                        tokio::spawn(async move {
                            // Renewed, or written back when its lease lapsed meanwhile.
                            let r: redis::RedisResult<i64> = RENEW
                                .key(&*key)
                                .arg(lease_ms)
                                .arg("")
                                .arg(&*member)
                                .invoke_async(&mut conn)
                                .await;
                            match r {
                                Ok(_) => state.count("keep", "ok"),
                                Err(e) => {
                                    // Written back with the rest when the store answers.
                                    state.count("keep", "error");
                                    state.store_down(&e);
                                }
                            }
                        });
                    }
                    Cmd::Journal(e) => {
                        if releases.is_empty() && journal.is_empty() {
                            flush_at = tokio::time::Instant::now() + RELEASE_BATCH;
                        }
                        journal.insert(e.key, e.json);
                    }
                    Cmd::AuthFailed(ip) | Cmd::AuthSucceeded(ip) => {
                        let failed = matches!(cmd, Cmd::AuthFailed(_));
                        let (mut conn, state) = (conn.clone(), state.clone());
                        let (fail_key, block_key) = keys.lockout(ip);
                        let (window, max, block) = (
                            crate::guard::lockout::WINDOW.as_millis() as u64,
                            lockout.max_failures(),
                            lockout.block().as_millis().max(1) as u64,
                        );
                        let channel = channel.clone();
                        tokio::spawn(async move {
                            let r: redis::RedisResult<i64> = if failed {
                                AUTH_FAILED
                                    .key(&fail_key)
                                    .key(&block_key)
                                    .arg(window)
                                    .arg(max)
                                    .arg(block)
                                    .arg(&channel)
                                    .arg(ip.to_string())
                                    .invoke_async(&mut conn)
                                    .await
                            } else {
                                AUTH_SUCCEEDED
                                    .key(&fail_key)
                                    .key(&block_key)
                                    .invoke_async(&mut conn)
                                    .await
                            };
                            match r {
                                Ok(_) => state.count("lockout", "ok"),
                                Err(e) => {
                                    state.count("lockout", "error");
                                    state.store_down(&e);
                                }
                            }
                        });
                    }
                }
                }
                // Under load, let the next messages gather: one wake for many.
                tokio::time::sleep(super::queue::GATHER).await;
            }
            _ = tokio::time::sleep_until(flush_at), if !releases.is_empty() || !journal.is_empty() => {
                if !state.up.load(Ordering::Acquire) {
                    // The store is down: its places are written back whole when it answers;
                    // the calls' checkpoints wait for it (the last of each call, bounded).
                    releases.clear();
                    if journal.len() > MAX_WAITING_CHECKPOINTS {
                        tracing::warn!(
                            dropped = journal.len(),
                            "state store down too long: call checkpoints dropped"
                        );
                        journal.clear();
                    }
                    flush_at = tokio::time::Instant::now() + Duration::from_secs(1);
                    continue;
                }
                // One pipeline; on a cluster one per slot, as a cluster node answers only
                // for its own slots (none needs to be atomic: each command stands alone).
                let mut pipes: HashMap<Option<Slot>, redis::Pipeline> = HashMap::new();
                let slot = |key: &str| cluster.then(|| Slot::for_key(key));
                for (key, members) in releases.drain() {
                    pipes.entry(slot(&key)).or_default().cmd("ZREM").arg(&*key).arg(members.iter().map(|m| &**m).collect::<Vec<_>>()).ignore();
                }
                for (key, json) in journal.drain() {
                    let pipe = pipes.entry(slot(&calls_key)).or_default();
                    match json {
                        Some(json) => pipe.cmd("HSET").arg(&calls_key).arg(key).arg(json).ignore(),
                        None => pipe.cmd("HDEL").arg(&calls_key).arg(key).ignore(),
                    };
                }
                for pipe in pipes.into_values() {
                    let (mut conn, state) = (conn.clone(), state.clone());
                    tokio::spawn(async move {
                        let r: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
                        match r {
                            Ok(()) => state.count("release", "ok"),
                            Err(e) => {
                                state.count("release", "error");
                                state.store_down(&e);
                            }
                        }
                    });
                }
            }
            _ = tick.tick() => {
                if renewing.swap(true, Ordering::AcqRel) {
                    continue;
                }
                // After a failure, a new connection. Redis Sentinel: ask where the master is
                // now. Redis Cluster: start again from the nodes of the URL, which name the
                // masters now (the connection's own slot refresh does not always follow a
                // failover promptly). One server: the connection manager reconnects after a
                // dropped connection, but not after a reply that was not RESP (something else
                // answered on the address for a while).
                if !state.up.load(Ordering::Acquire)
                    && let Ok((c, subscribers)) = source.connect().await
                {
                    conn = c;
                    let _ = clients.send(subscribers);
                }
                let (mut conn, state, renewing, pod) =
                    (conn.clone(), state.clone(), renewing.clone(), pod.clone());
                let (registrants, keys) = (task.registrants.clone(), keys.clone());
                let (orphans, orphan_after) = (task.orphans.clone(), task.orphan_after);
                let identity = task.settings.identity.clone();
                let (share, view, prefix) = (task.quality.clone(), quality.clone(), prefix.clone());
                tokio::spawn(async move {
                    heartbeat(&mut conn, &state, &keys, &identity, &pod, lease_ms).await;
                    elect(&mut conn, &state, &registrants, &keys, &pod, lease_ms).await;
                    if !orphan_after.is_zero() {
                        adopt(&mut conn, &state, &orphans, &keys, &identity, &pod, orphan_after).await;
                    }
                    sync_quality(&mut conn, &state, &prefix, &share, view.as_ref()).await;
                    renewing.store(false, Ordering::Release);
                });
            }
        }
    }
}

/// The key of a carrier target's window in the fleet's store: a hash of
/// `<bucket start>.<counter>` fields ([`Counts::fields`] order), expiring once idle.
fn quality_store_key(prefix: &str, target: &str) -> String {
    format!("{prefix}:quality:{target}")
}

/// Adds this pod's attempts since the last tick to the fleet's windows (one pipeline per
/// target, so each stays on one Cluster slot), then reads every target's window back, summed
/// over the last 15 minutes, for the snapshot's targets (`view`); fields that fell out of the
/// window are deleted. A store that does not answer leaves the pods' own windows to judge.
async fn sync_quality(
    conn: &mut Conn,
    state: &State,
    prefix: &str,
    share: &super::QualityShare,
    view: &dyn super::QualityView,
) {
    use super::{QUALITY_SPAN_S, unix_secs};
    use crate::quality::Counts;
    let mut writes: HashMap<String, Vec<(u64, Counts)>> = HashMap::new();
    for ((target, bucket), c) in share.take() {
        writes.entry(target).or_default().push((bucket, c));
    }
    for (target, buckets) in writes {
        let key = quality_store_key(prefix, &target);
        let mut pipe = redis::pipe();
        for (bucket, c) in buckets {
            for (i, v) in c.fields().iter().enumerate().filter(|(_, v)| **v > 0) {
                pipe.cmd("HINCRBY")
                    .arg(&key)
                    .arg(format!("{bucket}.{i}"))
                    .arg(*v)
                    .ignore();
            }
        }
        pipe.cmd("EXPIRE")
            .arg(&key)
            .arg(QUALITY_SPAN_S + 60)
            .ignore();
        let r: redis::RedisResult<()> = pipe.query_async(conn).await;
        match r {
            Ok(()) => state.count("quality", "ok"),
            Err(e) => {
                state.count("quality", "error");
                return state.store_down(&e);
            }
        }
    }
    let now = unix_secs();
    let mut sums = HashMap::new();
    for target in view.targets() {
        let key = quality_store_key(prefix, &target);
        let r: redis::RedisResult<HashMap<String, u64>> =
            redis::cmd("HGETALL").arg(&key).query_async(conn).await;
        let fields = match r {
            Ok(f) => f,
            Err(e) => {
                state.count("quality", "error");
                return state.store_down(&e);
            }
        };
        let mut total = [0u64; Counts::FIELDS];
        let mut stale = Vec::new();
        for (field, v) in fields {
            let parsed = field
                .split_once('.')
                .and_then(|(b, i)| Some((b.parse::<u64>().ok()?, i.parse::<usize>().ok()?)));
            match parsed {
                Some((bucket, _)) if bucket + QUALITY_SPAN_S <= now => stale.push(field),
                Some((_, i)) if i < Counts::FIELDS => total[i] = total[i].saturating_add(v),
                _ => stale.push(field),
            }
        }
        if !stale.is_empty() {
            let r: redis::RedisResult<()> = redis::cmd("HDEL")
                .arg(&key)
                .arg(stale)
                .query_async(conn)
                .await;
            if let Err(e) = r {
                state.count("quality", "error");
                return state.store_down(&e);
            }
        }
        sums.insert(target, Counts::from_fields(total));
    }
    state.count("quality", "ok");
    view.apply(sums);
}

/// The pod's heartbeat, then the renewal of every place it holds. After an outage, or when the
/// store lost this pod (a restarted, empty Redis), places the store does not have are written
/// back; otherwise only the ones still there are renewed (a place released meanwhile stays
/// released).
async fn heartbeat(
    conn: &mut Conn,
    state: &State,
    keys: &FleetKeys,
    identity: &str,
    pod: &str,
    lease_ms: u64,
) {
    let was_up = state.up.load(Ordering::Acquire);
    let r: redis::RedisResult<(u32, u32)> = HEARTBEAT
        .key(keys.pods())
        .key(keys.seen())
        .arg(pod)
        .arg(lease_ms)
        .arg(identity)
        .invoke_async(conn)
        .await;
    let (pods, lost) = match r {
        Ok(v) => v,
        Err(e) => {
            state.count("heartbeat", "error");
            return state.store_down(&e);
        }
    };
    state.count("heartbeat", "ok");
    state.pods.store(pods.max(1), Ordering::Release);
    state.metrics.fleet_pods.set(i64::from(pods.max(1)));
    let write_back = !was_up || lost == 1;
    for (key, members) in state.snapshot() {
        for batch in members.chunks(RENEW_BATCH) {
            let mut inv = RENEW.key(&*key);
            inv.arg(lease_ms).arg(if write_back { "" } else { "XX" });
            for m in batch {
                inv.arg(&**m);
            }
            let r: redis::RedisResult<i64> = inv.invoke_async(conn).await;
            match r {
                Ok(missing) => {
                    state.count("refresh", "ok");
                    if missing > 0 && !write_back {
                        tracing::debug!(%key, missing, "places gone from the store");
                    }
                }
                Err(e) => {
                    state.count("refresh", "error");
                    return state.store_down(&e);
                }
            }
        }
    }
    state.store_up();
}

/// Elects this pod, or keeps it, as the holder of each registration trunk nobody else holds.
/// A holder's election lasts four fifths of the lease from before the round trip, so it ends
/// before another pod can take over.
async fn elect(
    conn: &mut Conn,
    state: &State,
    registrants: &Mutex<super::Registrants>,
    keys: &FleetKeys,
    pod: &str,
    lease_ms: u64,
) {
    let wanted = registrants
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .wanted
        .clone();
    for trunk in wanted {
        let before = Instant::now();
        let r: redis::RedisResult<i64> = ELECT
            .key(keys.registrant(&trunk))
            .arg(pod)
            .arg(lease_ms)
            .invoke_async(conn)
            .await;
        let mine = match r {
            Ok(n) => n == 1,
            Err(e) => {
                state.count("elect", "error");
                // Held elections run out by themselves.
                return state.store_down(&e);
            }
        };
        state.count("elect", "ok");
        let mut r = registrants.lock().unwrap_or_else(|e| e.into_inner());
        if mine {
            let until = before + Duration::from_millis(lease_ms * 4 / 5);
            if r.held.insert(trunk.clone(), until).is_none() {
                tracing::info!(
                    trunk,
                    "this edge holds the trunk's registration for the fleet"
                );
            }
        } else if r.held.remove(&trunk).is_some() {
            tracing::info!(
                trunk,
                "another edge of the fleet holds the trunk's registration"
            );
        }
    }
}

/// Adopts the calls of edges silent for `after` (killed for good): one pod takes each
/// edge's calls from the store and its worker 0 ends them ([`crate::fleet::restore`]).
///
/// Taking an edge's calls and forgetting the edge are two steps, each atomic in its own slot
/// (its calls' slot, the heartbeat hash's): the calls are still taken once, by one pod. What
/// is given up is only that both happen at once: between them the edge is still listed as
/// silent, and a pod that looks then finds no calls; if the second step fails, the next round
/// finds no calls and forgets the edge then.
async fn adopt(
    conn: &mut Conn,
    state: &State,
    orphans: &Mutex<Vec<String>>,
    keys: &FleetKeys,
    identity: &str,
    pod: &str,
    after: Duration,
) {
    let after_ms = after.as_millis() as u64;
    let silent: redis::RedisResult<Vec<String>> = SILENT
        .key(keys.seen())
        .arg(identity)
        .arg(after_ms)
        .invoke_async(conn)
        .await;
    let Ok(silent) = silent else {
        return state.count("adopt", "error");
    };
    for gone in silent {
        let r: redis::RedisResult<HashMap<String, String>> = ADOPT
            .key(keys.calls(&gone))
            .key(keys.adopting(&gone))
            .arg(pod)
            .invoke_async(conn)
            .await;
        if r.is_ok() {
            let forgot: redis::RedisResult<i64> = FORGET
                .key(keys.seen())
                .arg(&gone)
                .arg(after_ms)
                .invoke_async(conn)
                .await;
            if forgot.is_err() {
                state.count("adopt", "error");
            }
        }
        match r {
            Ok(calls) if !calls.is_empty() => {
                state.count("adopt", "ok");
                let records = calls.into_values();
                tracing::warn!(
                    edge = gone,
                    calls = records.len(),
                    "an edge of the fleet is gone: ending its calls"
                );
                orphans
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(records);
            }
            Ok(_) => {}
            Err(_) => state.count("adopt", "error"),
        }
    }
}

/// Every pod's digest failure counts, as the store broadcasts them, merged into `lockout`.
///
/// The subscription is a plain SUBSCRIBE on one server: the store's, or on a Redis Cluster one
/// of the nodes the URL names, the next one after each failure. A cluster carries every PUBLISH
/// to all its nodes (masters and replicas), so any one node hears the whole fleet. (redis-rs's
/// cluster connection subscribes only over RESP3 push messages; one node's connection keeps
/// the store's own connection on RESP2 and this code the same for every source.) A count lost
/// while reconnecting is only late: the next failure of that address carries the whole count.
async fn listen(
    clients: tokio::sync::watch::Receiver<Vec<redis::Client>>,
    channel: String,
    lockout: Arc<Lockout>,
) {
    let mut attempt = 0usize;
    loop {
        let client = {
            let all = clients.borrow();
            all.get(attempt % all.len().max(1)).cloned()
        };
        attempt = attempt.wrapping_add(1);
        if let Some(client) = client
            && let Ok(mut ps) = client.get_async_pubsub().await
            && ps.subscribe(&channel).await.is_ok()
        {
            let mut messages = ps.on_message();
            while let Some(m) = messages.next().await {
                let Ok(text) = m.get_payload::<String>() else {
                    continue;
                };
                if let Some((ip, n)) = parse_count(&text) {
                    lockout.merge(ip, n, Instant::now());
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// "ADDRESS COUNT", as the lockout script publishes it.
fn parse_count(text: &str) -> Option<(IpAddr, u32)> {
    let (ip, n) = text.rsplit_once(' ')?;
    Some((ip.parse().ok()?, n.parse().ok()?))
}

/// The fleet-wide keys, laid out so that each script's keys share one Redis Cluster slot (a
/// single server ignores the braces):
/// - the live pods and each identity's last heartbeat share the tag `{pods}` (HEARTBEAT);
/// - an identity's checkpoints keep their plain name, so each identity has a slot of its own
///   and the fleet's checkpoint writes spread over the masters; its adoption lock is tagged
///   with that name, which puts it in the same slot (ADOPT);
/// - an address's digest failure count and block share the address as tag (AUTH_*);
/// - a trunk's keys share the trunk as tag ([`TrunkKeys`], the registrant: CLAIM, ELECT).
///
/// This holds while the prefix and the identity have no braces of their own (refused with a
/// cluster, [`Source::of`]).
#[derive(Clone)]
struct FleetKeys {
    prefix: String,
}

impl FleetKeys {
    fn new(prefix: &str) -> Self {
        FleetKeys {
            prefix: prefix.to_string(),
        }
    }

    /// The sorted set of live pods, scored by their lease's end.
    fn pods(&self) -> String {
        format!("{}:{{pods}}", self.prefix)
    }

    /// Each identity's last heartbeat.
    fn seen(&self) -> String {
        format!("{}:{{pods}}:seen", self.prefix)
    }

    /// The hash of an identity's calls' checkpoints (by identity: a restarted pod reads its own).
    fn calls(&self, identity: &str) -> String {
        format!("{}:calls:{identity}", self.prefix)
    }

    /// The lock of one pod's adoption of `identity`'s calls, in their slot.
    fn adopting(&self, identity: &str) -> String {
        format!("{}:adopting:{{{}}}", self.prefix, self.calls(identity))
    }

    /// Which pod registers a registration trunk.
    fn registrant(&self, trunk: &str) -> String {
        format!("{}:{{{trunk}}}:registrant", self.prefix)
    }

    /// An address's digest failure count and its block flag.
    fn lockout(&self, ip: IpAddr) -> (String, String) {
        (
            format!("{}:auth:{{{ip}}}:failures", self.prefix),
            format!("{}:auth:{{{ip}}}:blocked", self.prefix),
        )
    }

    /// The channel of the digest failure counts (not a key: a cluster broadcasts it).
    fn channel(&self) -> String {
        format!("{}:auth", self.prefix)
    }
}

/// The calls this edge (its identity) had checkpointed when it stopped, taken with the
/// adoption lock held (scripts::LOAD): never also taken by a pod adopting them.
pub async fn load_calls(settings: &StoreSettings) -> redis::RedisResult<Vec<String>> {
    let mut source = Source::of(settings)?;
    let keys = FleetKeys::new(&settings.prefix);
    let mut load = LOAD.prepare_invoke();
    load.key(keys.calls(&settings.identity))
        .key(keys.adopting(&settings.identity))
        .arg(format!("{}:restart", settings.identity))
        // Until the first heartbeats say this edge is alive again (a pod that saw it silent
        // just before may still be about to adopt); longer would hold its calls from adoption
        // should it die again at once.
        .arg(settings.lease.as_millis() as u64);
    let all: HashMap<String, String> = match &source {
        Source::Cluster { client, .. } => {
            let mut conn = client.get_async_connection().await?;
            load.invoke_async(&mut conn).await?
        }
        _ => {
            let client = source.client().await;
            let mut conn = client.get_multiplexed_async_connection().await?;
            load.invoke_async(&mut conn).await?
        }
    };
    Ok(all.into_values().collect())
}

/// A connection to the store: one server's (a single Redis, or the master Sentinel named), or
/// a Redis Cluster's, which sends each command to its slot's master.
#[derive(Clone)]
enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Server(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// How long a connection or an answer may take: short, so that a store that does not answer
/// turns into the per-pod shares quickly.
const TIMEOUT: Duration = Duration::from_millis(500);

/// A connection manager for `client`, with short timeouts ([`TIMEOUT`]).
fn manager(client: redis::Client) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// Where the store is: one server, the master a set of Redis Sentinels names
/// (`redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER`), or a Redis Cluster
/// (`redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT...]`, `rediss+cluster://` with TLS).
pub enum Source {
    Direct(redis::Client),
    Sentinel(redis::sentinel::SentinelClient),
    /// The cluster, and a client of each node the URL names (for the lockout's SUBSCRIBE).
    Cluster {
        client: ClusterClient,
        nodes: Vec<redis::Client>,
    },
}

impl Source {
    pub fn of(settings: &StoreSettings) -> redis::RedisResult<Self> {
        for (scheme, node) in [
            ("redis+cluster://", "redis"),
            ("rediss+cluster://", "rediss"),
        ] {
            if let Some(rest) = settings.url.strip_prefix(scheme) {
                return cluster(settings, node, rest);
            }
        }
        let Some(rest) = settings.url.strip_prefix("redis+sentinel://") else {
            return client(settings).map(Source::Direct);
        };
        let (hosts, master) = rest.split_once('/').ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "redis+sentinel:// needs /MASTER after the sentinels",
            ))
        })?;
        let sentinels: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("redis://{h}"))
            .collect();
        let mut node = redis::RedisConnectionInfo::default();
        if let Some(p) = settings.password.as_deref().filter(|p| !p.is_empty()) {
            node = node.set_password(p);
        }
        let node =
            redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(node);
        redis::sentinel::SentinelClient::build(
            sentinels,
            master.trim_matches('/'),
            Some(node),
            redis::sentinel::SentinelServerType::Master,
        )
        .map(Source::Sentinel)
    }

    /// A Redis Cluster: pipelines are split by slot.
    fn is_cluster(&self) -> bool {
        matches!(self, Source::Cluster { .. })
    }

    /// A connection to the store now (made lazily: a store that does not answer yet fails the
    /// first commands, it does not stop the edge), and the clients the lockout's SUBSCRIBE may
    /// use, in turn.
    async fn connect(&mut self) -> redis::RedisResult<(Conn, Vec<redis::Client>)> {
        if let Source::Cluster { client, nodes } = self {
            let config = ClusterConfig::new()
                .set_connection_timeout(TIMEOUT)
                .set_response_timeout(TIMEOUT);
            let conn = client.get_pending_async_connection_with_config(config);
            return Ok((Conn::Cluster(conn), nodes.clone()));
        }
        let client = self.client().await;
        Ok((Conn::Server(manager(client.clone())?), vec![client]))
    }

    /// A client for the store now: the server, or the master the sentinels name (when no
    /// sentinel answers, one that fails, so the store counts as down and is asked again). A
    /// cluster: its first node.
    pub async fn client(&mut self) -> redis::Client {
        match self {
            Source::Direct(c) => c.clone(),
            Source::Cluster { nodes, .. } => {
                nodes.first().cloned().unwrap_or_else(unreachable_client)
            }
            Source::Sentinel(s) => match s.async_get_client().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "state store: no sentinel names the master");
                    unreachable_client()
                }
            },
        }
    }
}

/// A client whose every operation fails at once (nothing listens on port 1 of loopback).
fn unreachable_client() -> redis::Client {
    redis::Client::open("redis://127.0.0.1:1/").unwrap_or_else(|_| unreachable!("a valid URL"))
}

/// A client for `settings`' URL, with the password from the Secret when one is given.
pub fn client(settings: &StoreSettings) -> redis::RedisResult<redis::Client> {
    redis::Client::open(with_password(
        settings.url.as_str().into_connection_info()?,
        settings,
    ))
}

/// `info` with the password from the Secret when one is given.
fn with_password(info: ConnectionInfo, settings: &StoreSettings) -> ConnectionInfo {
    match settings.password.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => {
            let redis = info.redis_settings().clone().set_password(p);
            info.set_redis_settings(redis)
        }
        None => info,
    }
}

/// A Redis Cluster from `rest`, what follows `redis+cluster://` (`scheme` `redis`) or
/// `rediss+cluster://` (`rediss`): `[USER:PASSWORD@]HOST:PORT[,HOST:PORT...][/...]`, the
/// credentials and what follows the `/` applying to every node. The nodes are where the edge
/// starts: the cluster names the others.
fn cluster(settings: &StoreSettings, scheme: &str, rest: &str) -> redis::RedisResult<Source> {
    let invalid =
        |what: &'static str| redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, what));
    // The keys' layout gives each script one slot while these have no braces (FleetKeys).
    if [&settings.prefix, &settings.identity]
        .iter()
        .any(|s| s.contains(['{', '}']))
    {
        return Err(invalid(
            "with a Redis Cluster, --state-prefix and the edge's identity may not contain braces (they would choose the keys' cluster slots)",
        ));
    }
    let (hosts, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, hosts) = match hosts.rsplit_once('@') {
        Some((c, h)) => (format!("{c}@"), h),
        None => (String::new(), hosts),
    };
    let nodes = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| {
            format!("{scheme}://{credentials}{h}/{tail}")
                .into_connection_info()
                .map(|info| with_password(info, settings))
        })
        .collect::<redis::RedisResult<Vec<_>>>()?;
    if nodes.is_empty() {
        return Err(invalid(
            "redis+cluster:// needs HOST:PORT of at least one node",
        ));
    }
    let clients = nodes
        .iter()
        .cloned()
        .map(redis::Client::open)
        .collect::<redis::RedisResult<Vec<_>>>()?;
    let mut builder = ClusterClientBuilder::new(nodes)
        .connection_timeout(TIMEOUT)
        .response_timeout(TIMEOUT)
        // Retries within one second, then the store counts as down (the shares).
        .overall_response_timeout(Some(2 * TIMEOUT))
        .retries(2)
        .min_retry_wait(50)
        .max_retry_wait(250);
    if let Some(p) = settings.password.as_deref().filter(|p| !p.is_empty()) {
        builder = builder.password(p);
    }
    Ok(Source::Cluster {
        client: builder.build()?,
        nodes: clients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lockout_broadcast_is_read_back() {
        assert_eq!(parse_count("192.0.2.7 4"), Some(([192, 0, 2, 7].into(), 4)));
        assert_eq!(
            parse_count("2001:db8::1 12"),
            Some(("2001:db8::1".parse().expect("v6"), 12))
        );
        assert_eq!(parse_count("nonsense"), None);
        assert_eq!(parse_count("192.0.2.7 x"), None);
    }

    #[test]
    fn a_store_url_is_checked_and_takes_the_secrets_password() {
        let s = |url: &str, password: Option<&str>| StoreSettings {
            url: url.into(),
            password: password.map(str::to_string),
            prefix: "trunkgate".into(),
            identity: "edge-0".into(),
            lease: Duration::from_secs(10),
        };
        assert!(client(&s("redis://127.0.0.1:6379/0", None)).is_ok());
        let c = client(&s("redis://127.0.0.1:6379", Some("sesame"))).expect("url");
        assert_eq!(
            c.get_connection_info().redis_settings().password(),
            Some("sesame")
        );
        assert!(client(&s("http://example.com", None)).is_err());
        assert!(matches!(
            Source::of(&s(
                "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/voice",
                None
            )),
            Ok(Source::Sentinel(_))
        ));
        assert!(
            Source::of(&s("redis+sentinel://10.0.0.1:26379", None)).is_err(),
            "no master"
        );
        assert!(matches!(
            Source::of(&s("redis://10.0.0.1:6379", None)),
            Ok(Source::Direct(_))
        ));
    }

    fn settings(url: &str, prefix: &str, identity: &str) -> StoreSettings {
        StoreSettings {
            url: url.into(),
            password: None,
            prefix: prefix.into(),
            identity: identity.into(),
            lease: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_cluster_is_named_by_its_nodes_with_one_password_and_tls_for_all() {
        let nodes = |url: &str| match Source::of(&settings(url, "trunkgate", "edge-0")) {
            Ok(Source::Cluster { nodes, .. }) => nodes
                .iter()
                .map(|c| c.get_connection_info().clone())
                .collect::<Vec<_>>(),
            Ok(_) => panic!("{url}: not a cluster"),
            Err(e) => panic!("{url}: {e}"),
        };
        let plain = nodes("redis+cluster://10.0.0.1:6379,10.0.0.2:6380");
        assert_eq!(plain.len(), 2);
        assert_eq!(plain[1].addr().to_string(), "10.0.0.2:6380");
        let secret = nodes("rediss+cluster://:s3cret@10.0.0.1:6379,10.0.0.2:6379/#insecure");
        for n in &secret {
            assert_eq!(n.redis_settings().password(), Some("s3cret"));
            assert!(matches!(
                n.addr(),
                redis::ConnectionAddr::TcpTls { insecure: true, .. }
            ));
        }
        let refused = |url: &str, prefix: &str, identity: &str| {
            Source::of(&settings(url, prefix, identity)).is_err()
        };
        assert!(
            refused("redis+cluster://", "trunkgate", "edge-0"),
            "no node"
        );
        assert!(
            refused("redis+cluster://10.0.0.1:6379", "{fleet}", "edge-0"),
            "braces would move the keys' slots"
        );
        assert!(refused(
            "redis+cluster://10.0.0.1:6379",
            "trunkgate",
            "edge{0}"
        ));
        assert!(
            !refused("redis://10.0.0.1:6379", "{fleet}", "edge{0}"),
            "one server has no slots"
        );
    }

    /// In a Redis Cluster a script may only touch keys of one slot: each script's keys, as the
    /// store task builds them, hash alike.
    #[test]
    fn each_scripts_keys_share_one_cluster_slot() {
        let same = |keys: &[&str]| {
            let slots: HashSet<Slot> = keys.iter().map(Slot::for_key).collect();
            assert_eq!(slots.len(), 1, "{keys:?}");
        };
        for prefix in ["trunkgate", "lab-2:voice"] {
            let k = FleetKeys::new(prefix);
            let t = TrunkKeys::new(prefix, "acme/pacific");
            same(&[&t.concurrent, &t.setup, &t.per_second]); // CLAIM
            same(&[&k.pods(), &k.seen()]); // HEARTBEAT
            for identity in ["edge-0", "trunkgate-edge-7f9c4-x2b8q"] {
                same(&[&k.calls(identity), &k.adopting(identity)]); // ADOPT
            }
            for ip in ["192.0.2.7", "2001:db8::1"] {
                let (failures, blocked) = k.lockout(ip.parse().expect("ip"));
                same(&[&failures, &blocked]); // AUTH_FAILED, AUTH_SUCCEEDED
            }
        }
        // Checkpoints keep their name (a restarted edge of the previous version reads its own),
        // and spread over the slots by identity.
        let k = FleetKeys::new("trunkgate");
        assert_eq!(k.calls("edge-0"), "trunkgate:calls:edge-0");
        assert_ne!(
            Slot::for_key(k.calls("edge-0")),
            Slot::for_key(k.calls("edge-1"))
        );
    }
}
