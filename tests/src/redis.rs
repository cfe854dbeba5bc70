//! A real `redis-server` (Debian's), as the fleet's shared store: started on a free loopback
//! port with nothing saved to disk, killed when the guard drops; or a real Redis Cluster of
//! such servers ([`RedisCluster`]). Tests read them with Debian's `redis-cli`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Lab, ProcessGroup, free_port};

pub struct Redis {
    process: Option<ProcessGroup>,
    pub addr: SocketAddr,
    log: std::path::PathBuf,
    /// Its working folder, the lab's: where a replica writes what it syncs.
    dir: std::path::PathBuf,
    /// More arguments (`--replicaof`, or a sentinel's config file and `--sentinel`).
    extra: Vec<String>,
}

impl Redis {
    /// Starts `redis-server` on a free port of 127.0.0.1 and waits until it answers PING.
    pub fn start(lab: &Lab) -> Redis {
        Self::start_with(lab, "redis", &[])
    }

    /// A `redis-server` named `name` (its log file) with more arguments, e.g. a replica
    /// (`--replicaof 127.0.0.1 PORT`).
    pub fn start_with(lab: &Lab, name: &str, extra: &[String]) -> Redis {
        let addr = SocketAddr::new([127, 0, 0, 1].into(), free_port());
        let mut r = Redis {
            process: None,
            addr,
            log: lab.path(&format!("{name}.log")),
            dir: lab.dir.clone(),
            extra: extra.to_vec(),
        };
        r.restart();
        r
    }

    /// A Redis Sentinel watching `master` as `name` (quorum 1, down after 1 s).
    pub fn sentinel(lab: &Lab, name: &str, master: &Redis) -> Redis {
        let conf = lab.path("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor {name} {} {} 1\nsentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n",
                master.addr.ip(),
                master.addr.port()
            ),
        )
        .expect("write sentinel.conf");
        let mut r = Redis {
            process: None,
            addr: SocketAddr::new([127, 0, 0, 1].into(), free_port()),
            log: lab.path("sentinel.log"),
            dir: lab.dir.clone(),
            extra: vec![],
        };
        r.extra = vec![conf.display().to_string(), "--sentinel".into()];
        r.restart();
        r
    }

    /// The URL an edge is given (`--state-store`).
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Starts it again on the same port, empty (after [`Redis::kill`]).
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the redis log");
        let mut cmd = Command::new("timeout");
        cmd.arg("300").arg("redis-server");
        // A config file comes first (a sentinel's); options after it.
        let (file, rest) = match self.extra.first() {
            Some(f) if f.ends_with(".conf") => (Some(f.clone()), self.extra[1..].to_vec()),
            _ => (None, self.extra.clone()),
        };
        cmd.args(file)
            .args(["--bind", &self.addr.ip().to_string()])
            .args(["--port", &self.addr.port().to_string()])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--protected-mode", "no"])
            .args(&rest)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone")))
            .stderr(Stdio::from(log));
        self.process = Some(ProcessGroup::spawn(cmd, "redis-server"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it (SIGKILL): everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// `redis-cli ARGS…`'s answer, trimmed (None when it could not connect).
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        redis_cli(self.addr, &[], args)
    }

    /// How many members the sorted set `key` has (0 when it does not exist).
    pub fn zcard(&self, key: &str) -> Option<u64> {
        self.cli(&["ZCARD", key])?.parse().ok()
    }

    /// Whether it runs (it has not been killed).
    pub fn alive(&self) -> bool {
        self.process.is_some()
    }
}

/// `redis-cli FLAGS… ARGS…` against `addr`, its answer trimmed (None when it could not
/// connect). At most 10 s.
fn redis_cli(addr: SocketAddr, flags: &[&str], args: &[&str]) -> Option<String> {
    let out = Command::new("timeout")
        .args(["10", "redis-cli"])
        .args(["-h", &addr.ip().to_string()])
        .args(["-p", &addr.port().to_string()])
        .args(flags)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
}

/// The fleet's store as a test reads it: one `redis-server`, or a cluster of them.
pub trait Store {
    /// The URL an edge is given (`--state-store`).
    fn url(&self) -> String;
    /// `redis-cli ARGS…`'s answer (on a cluster, from the node that holds the key).
    fn cli(&self, args: &[&str]) -> Option<String>;

    /// How many members the sorted set `key` has (0 when it does not exist).
    fn zcard(&self, key: &str) -> Option<u64> {
        self.cli(&["ZCARD", key])?.parse().ok()
    }

    /// How many fields the hash `key` has (0 when it does not exist).
    fn hlen(&self, key: &str) -> Option<u64> {
        self.cli(&["HLEN", key])?.parse().ok()
    }
}

impl Store for Redis {
    fn url(&self) -> String {
        Redis::url(self)
    }

    fn cli(&self, args: &[&str]) -> Option<String> {
        Redis::cli(self, args)
    }
}

/// A Redis Cluster on loopback: masters, each with its replicas, every node a `redis-server`
/// of its own (killed when the cluster drops), its cluster state in the lab's folder. A master
/// silent for 2 s is failed over to its replica.
pub struct RedisCluster {
    /// The masters first (as created), then the replicas.
    pub nodes: Vec<Redis>,
    masters: usize,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each, joins them with
    /// `redis-cli --cluster create`, and waits until every node says `cluster_state:ok` and
    /// every replica has synced.
    pub fn start(lab: &Lab, masters: usize, replicas: usize) -> RedisCluster {
        let nodes: Vec<Redis> = (0..masters * (1 + replicas))
            .map(|i| {
                let name = format!("cluster-{i}");
                Redis::start_with(
                    lab,
                    &name,
                    &[
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        lab.path(&format!("{name}-nodes.conf"))
                            .display()
                            .to_string(),
                        // The cluster bus on a free port too (not PORT + 10000).
                        "--cluster-port".into(),
                        free_port().to_string(),
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        let out = Command::new("timeout")
            .args(["60", "redis-cli", "--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes, masters };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = cluster.nodes.iter().all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]).unwrap_or_default();
                let replication = n.cli(&["INFO", "replication"]).unwrap_or_default();
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{}", cluster.nodes.len()))
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// The URL an edge is given: `redis+cluster://` and every master.
    pub fn url(&self) -> String {
        let masters: Vec<String> = self.nodes[..self.masters]
            .iter()
            .map(|n| n.addr.to_string())
            .collect();
        format!("redis+cluster://{}", masters.join(","))
    }

    /// The node that serves `key` now: the master of its slot (the others answer MOVED).
    pub fn master_of(&self, key: &str) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.alive()
                && n.cli(&["ROLE"]).is_some_and(|r| r.starts_with("master"))
                && n.cli(&["EXISTS", key])
                    .is_some_and(|r| !r.contains("MOVED"))
        })
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }
}

impl Store for RedisCluster {
    fn url(&self) -> String {
        RedisCluster::url(self)
    }

    /// Asked of the first live node; `redis-cli -c` follows it to the key's master.
    fn cli(&self, args: &[&str]) -> Option<String> {
        let node = self.nodes.iter().find(|n| n.alive())?;
        redis_cli(node.addr, &["-c"], args)
    }
}
