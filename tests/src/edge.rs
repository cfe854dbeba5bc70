//! The real `trunkgate-edge` binary as a test runs it: standalone mode on the test's config
//! folder, on fresh loopback ports; its stdout (call detail records) read line by line, its
//! logs kept in the test folder, its admin endpoint read with a plain HTTP/1.0 GET.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

use crate::{EDGE_INTERNAL_IP, EDGE_PUBLIC_IP, Lab, ProcessGroup, free_port, free_ports};

/// How the edge is started.
#[derive(Clone, Debug)]
pub struct EdgeOptions {
    pub workers: usize,
    /// `--failover-seconds`: how long an outbound INVITE waits for any answer from a target.
    pub failover_seconds: f64,
    /// `--reload-ms`: how often the config folder is checked.
    pub reload_ms: u64,
    pub extra_args: Vec<String>,
    /// Environment for the edge (`KUBECONFIG` in cluster mode). With `--snapshot-secret` among
    /// `extra_args` the edge runs in cluster mode and gets no `--config`.
    pub env: Vec<(String, String)>,
    /// Runs the edge without any capability, root or not (`setpriv --bounding-set=-all`): how
    /// an edge without CAP_BPF/CAP_NET_ADMIN behaves.
    pub no_capabilities: bool,
    /// The carrier-side and platform-side SIP addresses (None: fresh ports), to start an edge
    /// again where a killed one was.
    pub sip: Option<(SocketAddr, SocketAddr)>,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            workers: 2,
            failover_seconds: 4.0,
            reload_ms: 100,
            extra_args: vec![],
            env: vec![],
            no_capabilities: false,
            sip: None,
        }
    }
}

impl EdgeOptions {
    /// The defaults with these extra flags.
    pub fn with_args(args: &[&str]) -> Self {
        Self {
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            ..Self::default()
        }
    }
}

/// How long a drop may take to show in [`Edge::denied_count`].
pub const DENIED_COUNT_DELAY: Duration = Duration::from_secs(8);

/// The longest an edge may live: a safety net (`timeout`) should the test process itself be
/// killed before its guards run.
const EDGE_MAX_SECONDS: u64 = 300;

/// The path of the edge binary: `TRUNKGATE_EDGE_BIN`, else `trunkgate-edge` in the target
/// folder this test runs from, built (or found fresh) with `cargo build -p trunkgate-edge`
/// once per test binary.
pub fn edge_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("trunkgate-edge", "TRUNKGATE_EDGE_BIN"))
        .clone()
}

/// The path of the operator binary: `TRUNKGATE_OPERATOR_BIN`, else built as [`edge_bin`] is.
pub fn operator_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("trunkgate-operator", "TRUNKGATE_OPERATOR_BIN"))
        .clone()
}

/// The binary `name` (package and binary of the same name): `$env` when set, else built (or
/// found fresh) in the target folder this test runs from.
fn workspace_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env}={} is not a file", p.display());
        return p;
    }
    // The test runs as <target>/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary under <target>/<profile>/deps")
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .expect("a target folder above the profile folder")
        .to_path_buf();
    let bin = profile_dir.join(name);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", name, "--bin", name])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        cmd.arg("--release");
    }
    let status = cmd.status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "could not build {name} ({cmd:?}: {status:?}); build it with \
         `cargo build -p {name}` or point {env} at a binary"
    );
    assert!(
        bin.is_file(),
        "{} is missing after building; set {env}",
        bin.display()
    );
    bin
}

/// A running edge; dropping it kills it.
pub struct Edge {
    process: ProcessGroup,
    pub public: SocketAddr,
    pub internal: SocketAddr,
    pub admin: SocketAddr,
    /// `--rtp-ports` as given to the edge: `[low, high]`.
    pub rtp_ports: (u16, u16),
    pub log: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
    name: String,
}

impl Edge {
    /// Starts the edge on the lab's config folder (write it first) and waits until `/readyz`
    /// says it loaded a snapshot.
    pub fn start(lab: &Lab, opts: EdgeOptions) -> Edge {
        Self::start_named(lab, "edge", opts)
    }

    pub fn start_named(lab: &Lab, name: &str, opts: EdgeOptions) -> Edge {
        let bin = edge_bin();
        let (public, internal) = opts.sip.unwrap_or_else(|| {
            (
                SocketAddr::new(EDGE_PUBLIC_IP, free_port()),
                SocketAddr::new(EDGE_INTERNAL_IP, free_port()),
            )
        });
        let admin = SocketAddr::new(EDGE_PUBLIC_IP, free_port());
        // A test may give its own `--rtp-ports` (clap refuses the flag twice).
        let own_rtp = opts
            .extra_args
            .iter()
            .position(|a| a == "--rtp-ports")
            .and_then(|i| opts.extra_args.get(i + 1))
            .and_then(|r| r.split_once('-'))
            .and_then(|(lo, hi)| Some((lo.parse().ok()?, hi.parse().ok()?)));
        let rtp_ports = own_rtp.unwrap_or_else(|| {
            let rtp = free_ports(64);
            (rtp, rtp + 63)
        });
        let log = lab.path(&format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("create the edge log");
        let mut cmd = Command::new("timeout");
        cmd.arg(EDGE_MAX_SECONDS.to_string());
        if opts.no_capabilities {
            cmd.args([
                "setpriv",
                "--bounding-set=-all",
                "--inh-caps=-all",
                "--ambient-caps=-all",
                "--",
            ]);
        }
        cmd.arg(&bin);
        if !opts.extra_args.iter().any(|a| a == "--snapshot-secret") {
            cmd.arg("--config").arg(lab.config_dir());
        }
        cmd.args(["--public-sip", &public.to_string()])
            .args(["--internal-sip", &internal.to_string()])
            .args(["--admin", &admin.to_string()])
            .args(["--workers", &opts.workers.to_string()])
            .args(["--failover-seconds", &opts.failover_seconds.to_string()])
            .args(["--reload-ms", &opts.reload_ms.to_string()]);
        if !opts.extra_args.iter().any(|a| a == "--drain-seconds") {
            cmd.args(["--drain-seconds", "0"]);
        }
        if own_rtp.is_none() {
            cmd.args([
                "--rtp-ports".to_string(),
                format!("{}-{}", rtp_ports.0, rtp_ports.1),
            ]);
        }
        // `TRUNKGATE_TEST_KERNEL_FAST_PATH=lo`: the same tests with the RTP fast path on
        // (`make test` runs the media tests both ways).
        if let Some(ifaces) = kernel_fast_path()
            && !opts.extra_args.iter().any(|a| a == "--kernel-fast-path")
        {
            cmd.args(["--kernel-fast-path", &ifaces]);
        }
        if kernel_fast_path().is_some()
            && !opts
                .extra_args
                .iter()
                .any(|a| a == "--kernel-fast-path-pin")
        {
            cmd.arg("--kernel-fast-path-pin").arg(lab.bpf_pin());
        }
        cmd.args(&opts.extra_args)
            .env("RUST_LOG", "debug,kube=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file));
        // The developer's own TRUNKGATE_* settings must not change what the tests run.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TRUNKGATE_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        let mut process = ProcessGroup::spawn(cmd, "trunkgate-edge");
        let out = process.child.stdout.take().expect("the edge's stdout");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = stdout.clone();
        let cdr_copy = lab.path(&format!("{name}.stdout"));
        std::thread::spawn(move || {
            let mut copy = std::fs::File::create(cdr_copy).ok();
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut edge = Edge {
            process,
            public,
            internal,
            admin,
            rtp_ports,
            log,
            stdout,
            name: name.to_string(),
        };
        edge.wait_ready();
        edge
    }

    fn wait_ready(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if !self.process.running() {
                panic!(
                    "{} exited before it was ready; its log:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            if matches!(self.get("/readyz"), Some((200, _))) {
                return;
            }
            if std::time::Instant::now() >= deadline {
                panic!(
                    "{} not ready within 15 s; its log:\n{}",
                    self.name,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the edge process is still running.
    pub fn running(&mut self) -> bool {
        self.process.running()
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the edge's whole process group: a stopped edge
    /// reads nothing, so what arrives meanwhile fills its sockets' buffers.
    pub fn signal(&self, signal: &str) {
        let group = format!("-{}", self.process.id());
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), "--", &group])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} the edge's process group");
    }

    /// Sends `signal` to the edge process alone (not the `timeout` that guards it, which would
    /// pass the signal on a second time).
    pub fn signal_edge(&self, signal: &str) {
        let ok = Command::new("pkill")
            .args([&format!("-{signal}"), "-P", &self.process.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pkill -{signal} the edge");
    }

    /// Waits for the edge to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.process.wait_for(timeout)
    }

    /// The last `n` lines of the edge's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `GET path` on the admin endpoint: (status, body), or None when it does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.admin, path)
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        match self.get("/metrics") {
            Some((200, body)) => body,
            other => panic!("/metrics did not answer 200: {other:?}"),
        }
    }

    /// The sum of the series of `name` whose labels include every `(label, value)` given;
    /// 0 when there is none.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics(), name, labels)
    }

    /// Carrier-side datagrams dropped for their source: in userspace
    /// (`trunkgate_edge_acl_drops_total`) or by the kernel prefilter (counted with the kernel's
    /// receive drops, read every 5 s: wait up to [`DENIED_COUNT_DELAY`] for them).
    pub fn denied_count(&self) -> f64 {
        let text = self.metrics();
        metric_sum(
            &text,
            "trunkgate_edge_acl_drops_total",
            &[("side", "public")],
        ) + metric_sum(
            &text,
            "trunkgate_edge_kernel_receive_drops_total",
            &[("socket", "sip_public")],
        )
    }

    /// The snapshot version in use (`/snapshot`).
    pub fn snapshot_version(&self) -> String {
        let (code, body) = self.get("/snapshot").expect("/snapshot answers");
        assert_eq!(code, 200, "/snapshot: {body}");
        let v: Value = serde_json::from_str(&body).expect("/snapshot is JSON");
        v["version"].as_str().unwrap_or_default().to_string()
    }

    /// Every line the edge wrote to stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The call detail records written so far (stdout lines that are JSON with type "cdr").
    pub fn cdrs(&self) -> Vec<Value> {
        self.stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "cdr")
            .collect()
    }

    /// The refusal records written so far (type "refusal": a refused INVITE that never became
    /// a call).
    pub fn refusal_records(&self) -> Vec<Value> {
        self.stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "refusal")
            .collect()
    }

    /// Waits for a record that `pred` accepts.
    pub fn wait_cdr(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        crate::eventually(Duration::from_secs(10), || {
            self.cdrs().into_iter().find(|c| pred(c))
        })
        .unwrap_or_else(|| {
            panic!(
                "no call detail record for {what} within 10 s; stdout so far:\n{}",
                self.stdout_lines().join("\n")
            )
        })
    }

    /// The edge's `host:port` on the public side, for Request-URIs.
    pub fn public_uri(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.public)
    }

    pub fn internal_uri(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.internal)
    }
}

/// A plain HTTP/1.0 GET (no client library needed).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Sums the samples of `name` with all of `labels` in Prometheus text format.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let has = |k: &str, v: &str| {
            label_text
                .split(',')
                .any(|kv| kv.trim() == format!("{k}=\"{v}\""))
        };
        if labels.iter().all(|(k, v)| has(k, v)) {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

/// Whether this run's edges pin their fast path (see `--kernel-fast-path-pin`): the fast path
/// is on and bpffs is mounted at /sys/fs/bpf (`make test-deps` mounts it as root). Tests
/// that restore calls then expect the kernel to forward while no edge runs.
pub fn fast_path_pins() -> bool {
    kernel_fast_path().is_some()
        && std::fs::read_to_string("/proc/mounts").is_ok_and(|m| {
            m.lines().any(|l| {
                l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
                    && l.split_whitespace().nth(2) == Some("bpf")
            })
        })
}

/// The interfaces the edges of this test run put the RTP fast path on
/// (`TRUNKGATE_TEST_KERNEL_FAST_PATH`), None when the run is userspace only.
pub fn kernel_fast_path() -> Option<String> {
    std::env::var("TRUNKGATE_TEST_KERNEL_FAST_PATH")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_metric_series_by_label() {
        let text = "# HELP x y\nt_total{trunk=\"a/b\",side=\"public\"} 2\nt_total{trunk=\"a/c\",side=\"public\"} 3\nt_total_other 9\n";
        assert_eq!(metric_sum(text, "t_total", &[]), 5.0);
        assert_eq!(metric_sum(text, "t_total", &[("trunk", "a/b")]), 2.0);
        assert_eq!(metric_sum(text, "t_total", &[("trunk", "zz")]), 0.0);
    }
}
