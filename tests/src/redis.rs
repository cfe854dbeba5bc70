//! A real `redis-server` (Debian's), as the fleet's shared store: started on a free loopback
//! port with nothing saved to disk, killed when the guard drops. Tests read it with Debian's
//! `redis-cli`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Lab, ProcessGroup, free_port};

pub struct Redis {
    process: Option<ProcessGroup>,
    pub addr: SocketAddr,
    log: std::path::PathBuf,
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
        let out = Command::new("redis-cli")
            .args(["-h", &self.addr.ip().to_string()])
            .args(["-p", &self.addr.port().to_string()])
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    /// How many members the sorted set `key` has (0 when it does not exist).
    pub fn zcard(&self, key: &str) -> Option<u64> {
        self.cli(&["ZCARD", key])?.parse().ok()
    }
}
