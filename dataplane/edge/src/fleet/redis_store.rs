//! The store task of a fleet sharing Redis or Valkey: claims, releases and lease renewals of
//! the calls' places, the pods' heartbeat, and the digest lockout's count and its broadcast.
//! It runs on the control thread; the workers reach it through a channel and never wait on it
//! (a claim's answer comes back as an event).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};

use super::scripts;
use super::{Cmd, FleetRefusal, Hold, Release, StoreSettings, StoreTask, TrunkKeys, Verdict};
use crate::lockout::Lockout;
use crate::metrics::Metrics;

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::CLAIM));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::RENEW));
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::HEARTBEAT));
static AUTH_FAILED: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::AUTH_FAILED));
static AUTH_SUCCEEDED: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::AUTH_SUCCEEDED));
static ELECT: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::ELECT));
static SILENT: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::SILENT));
static ADOPT: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::ADOPT));

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
pub async fn run(task: StoreTask, lockout: Arc<Lockout>, metrics: Metrics) {
    let mut source = match Source::of(&task.settings) {
        Ok(s) => s,
        Err(e) => {
            // Refused at start already (`Settings::start_problems`); never reached in practice.
            tracing::error!(error = %e, "--state-store: unusable");
            return;
        }
    };
    let client = source.client().await;
    let Ok(mut conn) = manager(client.clone()) else {
        tracing::error!("--state-store: unusable");
        return;
    };
    let (clients, client_rx) = tokio::sync::watch::channel(client);
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
    let channel = format!("{prefix}:auth");
    tokio::spawn(listen(client_rx, channel.clone(), lockout.clone()));
    let lease = task.settings.lease;
    let lease_ms = lease.as_millis().min(u128::from(u32::MAX)) as u64;
    let pod = format!("{}:{}", task.settings.identity, task.boot);
    let renewing = Arc::new(AtomicBool::new(false));
    let mut releases: HashMap<Arc<str>, Vec<Arc<str>>> = HashMap::new();
    // Checkpoints since the last flush, the last one of each call winning.
    let mut journal: HashMap<String, Option<String>> = HashMap::new();
    let calls_key = calls_key(&task.settings);
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
                        let fail_key = format!("{prefix}:auth:{ip}:failures");
                        let block_key = format!("{prefix}:auth:{ip}:blocked");
                        let (window, max, block) = (
                            crate::lockout::WINDOW.as_millis() as u64,
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
                let mut pipe = redis::pipe();
                for (key, members) in releases.drain() {
                    pipe.cmd("ZREM").arg(&*key).arg(members.iter().map(|m| &**m).collect::<Vec<_>>()).ignore();
                }
                for (key, json) in journal.drain() {
                    match json {
                        Some(json) => pipe.cmd("HSET").arg(&calls_key).arg(key).arg(json).ignore(),
                        None => pipe.cmd("HDEL").arg(&calls_key).arg(key).ignore(),
                    };
                }
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
            _ = tick.tick() => {
                if renewing.swap(true, Ordering::AcqRel) {
                    continue;
                }
                // Redis Sentinel: after a failure, ask where the master is now.
                if !state.up.load(Ordering::Acquire) && source.follows_sentinel() {
                    let client = source.client().await;
                    if let Ok(m) = manager(client.clone()) {
                        conn = m;
                        let _ = clients.send(client);
                    }
                }
                let (mut conn, state, renewing, pod) =
                    (conn.clone(), state.clone(), renewing.clone(), pod.clone());
                let pods_key = format!("{prefix}:pods");
                let (registrants, prefix) = (task.registrants.clone(), prefix.clone());
                let (orphans, orphan_after) = (task.orphans.clone(), task.orphan_after);
                let identity = task.settings.identity.clone();
                tokio::spawn(async move {
                    heartbeat(&mut conn, &state, &pods_key, &identity, &pod, lease_ms).await;
                    elect(&mut conn, &state, &registrants, &prefix, &pod, lease_ms).await;
                    if !orphan_after.is_zero() {
                        adopt(&mut conn, &state, &orphans, &prefix, &identity, &pod, orphan_after).await;
                    }
                    renewing.store(false, Ordering::Release);
                });
            }
        }
    }
}

/// The pod's heartbeat, then the renewal of every place it holds. After an outage, or when the
/// store lost this pod (a restarted, empty Redis), places the store does not have are written
/// back; otherwise only the ones still there are renewed (a place released meanwhile stays
/// released).
async fn heartbeat(
    conn: &mut ConnectionManager,
    state: &State,
    pods_key: &str,
    identity: &str,
    pod: &str,
    lease_ms: u64,
) {
    let was_up = state.up.load(Ordering::Acquire);
    let r: redis::RedisResult<(u32, u32)> = HEARTBEAT
        .key(pods_key)
        .key(format!("{pods_key}:seen"))
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
    conn: &mut ConnectionManager,
    state: &State,
    registrants: &Mutex<super::Registrants>,
    prefix: &str,
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
            .key(format!("{prefix}:{{{trunk}}}:registrant"))
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
async fn adopt(
    conn: &mut ConnectionManager,
    state: &State,
    orphans: &Mutex<Vec<super::checkpoint::CallRecord>>,
    prefix: &str,
    identity: &str,
    pod: &str,
    after: Duration,
) {
    let seen = format!("{prefix}:pods:seen");
    let silent: redis::RedisResult<Vec<String>> = SILENT
        .key(&seen)
        .arg(identity)
        .arg(after.as_millis() as u64)
        .invoke_async(conn)
        .await;
    let Ok(silent) = silent else {
        return state.count("adopt", "error");
    };
    for gone in silent {
        let r: redis::RedisResult<HashMap<String, String>> = ADOPT
            .key(format!("{prefix}:calls:{gone}"))
            .key(format!("{prefix}:adopting:{gone}"))
            .key(&seen)
            .arg(pod)
            .arg(&gone)
            .invoke_async(conn)
            .await;
        match r {
            Ok(calls) if !calls.is_empty() => {
                state.count("adopt", "ok");
                let records = super::journal::records(calls);
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
async fn listen(
    clients: tokio::sync::watch::Receiver<redis::Client>,
    channel: String,
    lockout: Arc<Lockout>,
) {
    loop {
        let client = clients.borrow().clone();
        if let Ok(mut ps) = client.get_async_pubsub().await
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

/// The hash of this edge's calls' checkpoints (by identity: a restarted pod reads its own).
fn calls_key(settings: &StoreSettings) -> String {
    format!("{}:calls:{}", settings.prefix, settings.identity)
}

/// The calls this edge (its identity) had checkpointed when it stopped.
pub async fn load_calls(
    settings: &StoreSettings,
) -> redis::RedisResult<Vec<super::checkpoint::CallRecord>> {
    let client = Source::of(settings)?.client().await;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let all: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(calls_key(settings))
        .query_async(&mut conn)
        .await?;
    Ok(super::journal::records(all))
}

/// A connection manager for `client`: short timeouts, so that a store that does not answer
/// turns into the per-pod shares quickly.
fn manager(client: redis::Client) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// Where the store is: one server, or the master a set of Redis Sentinels names
/// (`redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER`).
pub enum Source {
    Direct(redis::Client),
    Sentinel(redis::sentinel::SentinelClient),
}

impl Source {
    pub fn of(settings: &StoreSettings) -> redis::RedisResult<Self> {
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

    fn follows_sentinel(&self) -> bool {
        matches!(self, Source::Sentinel(_))
    }

    /// A client for the store now: the server, or the master the sentinels name (when no
    /// sentinel answers, one that fails, so the store counts as down and is asked again).
    pub async fn client(&mut self) -> redis::Client {
        match self {
            Source::Direct(c) => c.clone(),
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
    let mut info = settings.url.as_str().into_connection_info()?;
    if let Some(p) = settings.password.as_deref().filter(|p| !p.is_empty()) {
        let redis = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(redis);
    }
    redis::Client::open(info)
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
}
