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
}

impl Redis {
    /// Starts `redis-server` on a free port of 127.0.0.1 and waits until it answers PING.
    pub fn start(lab: &Lab) -> Redis {
        let addr = SocketAddr::new([127, 0, 0, 1].into(), free_port());
        let mut r = Redis {
            process: None,
            addr,
            log: lab.path("redis.log"),
        };
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
        cmd.arg("300")
            .arg("redis-server")
            .args(["--bind", &self.addr.ip().to_string()])
            .args(["--port", &self.addr.port().to_string()])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
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
