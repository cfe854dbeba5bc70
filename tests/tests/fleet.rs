//! One fleet, not N strangers: several real edge processes share a real `redis-server`
//! (`--state-store`), and a trunk's limits hold for all of them: when calls spread over the
//! edges, when an edge is killed with `kill -9` while it holds places, and while Redis itself
//! is down and comes back empty. The same with Redis Sentinel and with a Redis Cluster, each
//! through the failover of the master.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use trunkgate_tests::config::write_acme;
use trunkgate_tests::redis::{Redis, RedisCluster, Store};
use trunkgate_tests::sipp::scenario;
use trunkgate_tests::*;

const NUMBER: &str = "+6498879333";
/// The sorted sets that hold the fleet's places for the trunk `acme/pacific`.
const CALLS_KEY: &str = "trunkgate:{acme/pacific}:calls";
const SETUP_KEY: &str = "trunkgate:{acme/pacific}:setup";

/// The trunk `acme/pacific` for the carrier at 127.0.0.10, delivering to `platform`, limited
/// to `max` calls at once.
fn limited_trunk(lab: &Lab, platform: SocketAddr, max: u32) {
    let trunk = Trunk::new("acme", "pacific", "127.0.0.10/32", platform).max_concurrent_calls(max);
    write_acme(lab, &trunk);
}

/// An edge of the fleet sharing `redis`, with a short lease so a test sees it run out.
fn fleet_edge(lab: &Lab, name: &str, redis: &dyn Store) -> Edge {
    fleet_edge_on(lab, name, &redis.url())
}

/// An edge named `name` on the store at `url` (lease 3 s).
fn fleet_edge_on(lab: &Lab, name: &str, url: &str) -> Edge {
    // Room for every call of a test in one worker's slice, released ports resting included
    // (the harness's default of 32 pairs ran out in one worker now and then: 503).
    let rtp = free_ports(256);
    Edge::start_named(
        lab,
        name,
        EdgeOptions {
            extra_args: vec![
                "--state-store".into(),
                url.into(),
                "--state-lease-seconds".into(),
                "3".into(),
                "--state-identity".into(),
                name.into(),
                "--rtp-ports".into(),
                format!("{rtp}-{}", rtp + 255),
            ],
            ..Default::default()
        },
    )
}

/// `calls` calls from the carrier to `edge`, each held `hold_ms` when answered; a 503 ends a
/// call without failing the run.
fn carrier_calls<'l>(
    lab: &'l Lab,
    name: &str,
    edge: &Edge,
    calls: u32,
    hold_ms: u32,
) -> trunkgate_tests::sipp::SippBuilder<'l> {
    let ruri = edge.public_uri(NUMBER);
    Sipp::uac(
        lab,
        name,
        scenario(
            lab,
            "uac_call_or_refused.xml",
            &[("RURI", &ruri), ("HOLD_MS", &hold_ms.to_string())],
        ),
        CARRIER,
        edge.public,
    )
    .calls(calls)
    .timeout_secs(40)
}

/// Calls of `run` answered `code` (distinct Call-IDs: a retransmitted answer counts once).
fn answered(run: &SippRun, code: u16) -> usize {
    run.received()
        .filter(|m| m.code() == Some(code) && m.cseq_method() == Some("INVITE"))
        .filter_map(|m| m.header("Call-ID").map(str::to_string))
        .collect::<HashSet<_>>()
        .len()
}

/// The checkpoints of the calls up through `edges`, in `store`.
fn checkpoints(store: &dyn Store, edges: &[&str]) -> Option<u64> {
    edges
        .iter()
        .map(|e| store.hlen(&format!("trunkgate:calls:{e}")))
        .sum()
}

const EDGES: [&str; 3] = ["edge-a", "edge-b", "edge-c"];

/// Three edges sharing `store`, with the trunk limited to five calls at once: nine calls spread
/// over them, five up (their checkpoints in the store while they are), four refused where they
/// arrived, and every place and checkpoint given back when the calls end. Returns the edges and
/// the platform's address.
fn three_edges_hold_a_limit_of_five(lab: &Lab, store: &dyn Store) -> (Vec<Edge>, SocketAddr) {
    let platform = Sipp::reserve(PLATFORM);
    limited_trunk(lab, platform, 5);
    let edges: Vec<Edge> = EDGES.iter().map(|n| fleet_edge(lab, n, store)).collect();
    let uas = Sipp::answering(lab, "platform", platform)
        .calls(5)
        .timeout_secs(40)
        .start();
    // Three calls to each edge at once, each held 5 s: nine calls for five places.
    let carriers: Vec<Sipp> = edges
        .iter()
        .enumerate()
        .map(|(i, e)| carrier_calls(lab, &format!("carrier-{i}"), e, 3, 5000).start())
        .collect();
    assert_eventually!(
        checkpoints(store, &EDGES) == Some(5) && store.zcard(CALLS_KEY) == Some(5),
        Duration::from_secs(4),
        "the five calls up are checkpointed and hold the five places: {:?} {:?}",
        checkpoints(store, &EDGES),
        store.zcard(CALLS_KEY)
    );
    let runs: Vec<SippRun> = carriers.into_iter().map(Sipp::wait).collect();
    for r in &runs {
        r.assert_ok();
    }
    let up: usize = runs.iter().map(|r| answered(r, 200)).sum();
    let refused: usize = runs.iter().map(|r| answered(r, 503)).sum();
    println!(
        "per edge (answered, refused): {:?}",
        runs.iter()
            .map(|r| (answered(r, 200), answered(r, 503)))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        (up, refused),
        (5, 4),
        "a limit of 5 across three edges: five calls up, four refused"
    );
    uas.wait().assert_ok();
    let by_limit: f64 = edges
        .iter()
        .map(|e| {
            e.metric(
                "trunkgate_edge_refusals_total",
                &[("reason", "max_concurrent_calls")],
            )
        })
        .sum();
    assert_eq!(by_limit, 4.0, "each refusal counted where it happened");
    // Every call ended: the fleet holds no place, none counted twice or below zero.
    assert_eventually!(
        store.zcard(CALLS_KEY) == Some(0)
            && store.zcard(SETUP_KEY) == Some(0)
            && checkpoints(store, &EDGES) == Some(0),
        Duration::from_secs(5),
        "the places are given back and the checkpoints removed: {:?} {:?} {:?}",
        store.zcard(CALLS_KEY),
        store.zcard(SETUP_KEY),
        checkpoints(store, &EDGES)
    );
    for e in &edges {
        assert_eq!(
            e.metric(
                "trunkgate_edge_state_store_ops_total",
                &[("op", "claim"), ("result", "error")]
            ),
            0.0
        );
    }
    (edges, platform)
}

#[test]
fn a_trunks_call_limit_holds_across_three_edges_sharing_redis() {
    let lab = Lab::new("fleet_limit");
    let redis = Redis::start(&lab);
    three_edges_hold_a_limit_of_five(&lab, &redis);
}

/// Redis Cluster (`redis+cluster://NODE,NODE,…`, three masters with a replica each): the same
/// limit across three edges; then the master of the trunk's slot dies, its replica takes over,
/// and the edges go back to the fleet's figures on it without a restart.
#[test]
fn a_trunks_call_limit_holds_on_a_redis_cluster_through_a_master_failover() {
    let lab = Lab::new("fleet_cluster");
    trunkgate_tests::edge::edge_bin();
    let mut cluster = RedisCluster::start(&lab, 3, 1);
    let (edges, platform) = three_edges_hold_a_limit_of_five(&lab, &cluster);

    // Two long calls hold two of the five places; the master of their slot dies.
    let uas = Sipp::answering(&lab, "platform-2", platform)
        .calls(5)
        .timeout_secs(60)
        .start();
    let held = carrier_calls(&lab, "carrier-held", &edges[0], 2, 30_000).start();
    assert_eventually!(
        cluster.zcard(CALLS_KEY) == Some(2),
        Duration::from_secs(5),
        "two places held: {:?}",
        cluster.zcard(CALLS_KEY)
    );
    let master = cluster
        .master_of(CALLS_KEY)
        .expect("a master serves the trunk");
    cluster.kill(master);
    let killed = Instant::now();
    assert_eventually!(
        cluster.master_of(CALLS_KEY).is_some()
            && edges
                .iter()
                .all(|e| e.metric("trunkgate_edge_limit_fallback", &[]) == 0.0)
            && cluster.zcard(CALLS_KEY) == Some(2),
        Duration::from_secs(20),
        "a replica promoted, the edges on it with the calls' places: master {:?}, fallback {:?}, places {:?}",
        cluster.master_of(CALLS_KEY),
        edges
            .iter()
            .map(|e| e.metric("trunkgate_edge_limit_fallback", &[]))
            .collect::<Vec<_>>(),
        cluster.zcard(CALLS_KEY)
    );
    println!(
        "the edges were on the new master {:?} after the old one was killed",
        killed.elapsed()
    );
    // The limit holds again for the fleet: three more calls fit, the fourth does not; each
    // edge asks the new master (also one that never saw the old one fail).
    let claim_errors = || -> Vec<f64> {
        edges
            .iter()
            .map(|e| {
                e.metric(
                    "trunkgate_edge_state_store_ops_total",
                    &[("op", "claim"), ("result", "error")],
                )
            })
            .collect()
    };
    let errors_before = claim_errors();
    let after: Vec<SippRun> = [(1, 2), (2, 2)]
        .iter()
        .map(|&(e, n)| {
            carrier_calls(&lab, &format!("carrier-after-{e}"), &edges[e], n, 3000).start()
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(Sipp::wait)
        .collect();
    for r in &after {
        r.assert_ok();
    }
    assert_eq!(
        (
            after.iter().map(|r| answered(r, 200)).sum::<usize>(),
            after.iter().map(|r| answered(r, 503)).sum::<usize>()
        ),
        (3, 1),
        "two places held, three free: three calls up, one refused"
    );
    assert_eq!(
        claim_errors(),
        errors_before,
        "every claim after the failover answered by the cluster"
    );
    drop(held);
    drop(uas);
}

#[test]
fn a_killed_edges_places_free_themselves_within_the_lease() {
    let lab = Lab::new("fleet_kill");
    let redis = Redis::start(&lab);
    let platform = Sipp::reserve(PLATFORM);
    limited_trunk(&lab, platform, 2);
    let mut a = fleet_edge(&lab, "edge-a", &redis);
    let b = fleet_edge(&lab, "edge-b", &redis);
    let uas = Sipp::answering(&lab, "platform", platform)
        .calls(5)
        .timeout_secs(60)
        .start();
    // Two long calls through edge A fill the trunk.
    let held = carrier_calls(&lab, "carrier-held", &a, 2, 30_000).start();
    assert_eventually!(
        redis.zcard(CALLS_KEY) == Some(2),
        Duration::from_secs(5),
        "two places held: {:?}",
        redis.zcard(CALLS_KEY)
    );
    // Edge B knows the trunk is full.
    let over = carrier_calls(&lab, "carrier-over", &b, 1, 100).run();
    over.assert_ok();
    assert_eq!(
        answered(&over, 503),
        1,
        "the third call is refused on another edge"
    );
    // Edge A dies without a word; its places stop being renewed.
    a.signal("KILL");
    let killed = Instant::now();
    let mut tries = 0;
    let freed_after = loop {
        tries += 1;
        let run = carrier_calls(&lab, &format!("carrier-retry-{tries}"), &b, 1, 100).run();
        run.assert_ok();
        if answered(&run, 200) == 1 {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the killed edge's places never freed"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    println!(
        "a call through edge B was admitted {freed_after:?} after edge A was killed (lease 3 s)"
    );
    assert!(
        freed_after >= Duration::from_millis(500),
        "the dead edge's places counted until their lease ran out"
    );
    drop(held);
    let after = carrier_calls(&lab, "carrier-after", &b, 2, 200).run();
    after.assert_ok();
    assert_eq!(
        answered(&after, 200),
        2,
        "the fleet has the trunk's two places again"
    );
    assert!(!a.running(), "edge A stays dead");
    drop(uas);
}

#[test]
fn without_redis_each_edge_enforces_its_share_then_the_fleet_figures_return() {
    let lab = Lab::new("fleet_store_down");
    let mut redis = Redis::start(&lab);
    let platform = Sipp::reserve(PLATFORM);
    limited_trunk(&lab, platform, 4);
    let a = fleet_edge(&lab, "edge-a", &redis);
    let b = fleet_edge(&lab, "edge-b", &redis);
    for e in [&a, &b] {
        assert_eventually!(
            e.metric("trunkgate_edge_fleet_pods", &[]) == 2.0,
            Duration::from_secs(5),
            "each edge sees two live edges"
        );
    }
    redis.kill();
    for e in [&a, &b] {
        assert_eventually!(
            e.metric("trunkgate_edge_limit_fallback", &[]) == 1.0,
            Duration::from_secs(5),
            "the edge says it enforces its share"
        );
        // And so does its /snapshot, which the operator reads into Programmed.
        let (_, body) = e.get("/snapshot").expect("the admin endpoint");
        let snap: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(snap["stateStore"]["fallback"], true, "{snap}");
    }
    let uas = Sipp::answering(&lab, "platform", platform)
        .calls(2)
        .timeout_secs(60)
        .start();
    // A limit of 4 over the 2 edges last seen: 2 each.
    let calls = carrier_calls(&lab, "carrier-down", &a, 3, 8000).start();
    assert_eventually!(
        uas.has_received("ACK"),
        Duration::from_secs(5),
        "calls are up without the store"
    );
    // Redis comes back empty: the places of the calls up are written back.
    redis.restart();
    assert_eventually!(
        a.metric("trunkgate_edge_limit_fallback", &[]) == 0.0 && redis.zcard(CALLS_KEY) == Some(2),
        Duration::from_secs(5),
        "back to the fleet's figures, with the calls up counted: fallback {}, places {:?}",
        a.metric("trunkgate_edge_limit_fallback", &[]),
        redis.zcard(CALLS_KEY)
    );
    // The checkpoints of the calls answered while it was down waited for it.
    assert_eventually!(
        redis.cli(&["HLEN", "trunkgate:calls:edge-a"]).as_deref() == Some("2"),
        Duration::from_secs(5),
        "the calls' checkpoints reach the store: {:?}",
        redis.cli(&["HLEN", "trunkgate:calls:edge-a"])
    );
    let run = calls.wait();
    run.assert_ok();
    assert_eq!(
        (answered(&run, 200), answered(&run, 503)),
        (2, 1),
        "the edge's share of 4 over 2 edges is 2"
    );
    uas.wait().assert_ok();
    assert_eventually!(
        redis.zcard(CALLS_KEY) == Some(0),
        Duration::from_secs(5),
        "the ended calls' places are given back"
    );
    assert!(
        std::fs::read_to_string(&a.log)
            .unwrap_or_default()
            .contains("state store unreachable"),
        "the log says the store was lost"
    );
}

/// Redis with Sentinel (`redis+sentinel://SENTINEL/MASTER`): the master dies, the sentinel
/// promotes its replica, and the edge follows it: back to the fleet's figures on the new
/// master, with the places of its calls written there.
#[test]
fn the_fleet_follows_its_store_through_a_sentinel_failover() {
    let lab = Lab::new("fleet_sentinel");
    trunkgate_tests::edge::edge_bin();
    let mut master = Redis::start_with(&lab, "master", &[]);
    let replica = Redis::start_with(
        &lab,
        "replica",
        &[
            "--replicaof".into(),
            master.addr.ip().to_string(),
            master.addr.port().to_string(),
        ],
    );
    let sentinel = Redis::sentinel(&lab, "voice", &master);
    let platform = Sipp::reserve(PLATFORM);
    limited_trunk(&lab, platform, 4);
    let edge = fleet_edge_on(
        &lab,
        "edge",
        &format!("redis+sentinel://{}/voice", sentinel.addr),
    );
    let uas = Sipp::answering(&lab, "platform", platform)
        .calls(1)
        .timeout_secs(60)
        .start();
    let call = carrier_calls(&lab, "carrier", &edge, 1, 25_000).start();
    assert_eventually!(
        master.zcard(CALLS_KEY) == Some(1),
        Duration::from_secs(5),
        "the call's place on the master"
    );
    master.kill();
    let killed = Instant::now();
    assert_eventually!(
        replica
            .cli(&["ROLE"])
            .is_some_and(|r| r.starts_with("master"))
            && edge.metric("trunkgate_edge_limit_fallback", &[]) == 0.0
            && replica.zcard(CALLS_KEY) == Some(1),
        Duration::from_secs(20),
        "the replica promoted, the edge on it with its call's place: role {:?}, fallback {}, places {:?}",
        replica.cli(&["ROLE"]),
        edge.metric("trunkgate_edge_limit_fallback", &[]),
        replica.zcard(CALLS_KEY)
    );
    println!(
        "the edge was on the new master {:?} after the old one was killed",
        killed.elapsed()
    );
    drop(call);
    drop(uas);
}
