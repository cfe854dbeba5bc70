//! `make bench`: the snapshot at scale against a real kube-apiserver v1.36 (`../shared/k8s`).
//! For each size (numbers over trunks; default 100,000 over 500 and 1,000,000 over 5,000): the
//! CarrierTrunks and NumberOwnerships (one per trunk, its numbers scattered so that none folds
//! into a range) are created, then the release operator starts and the release edge follows in
//! cluster mode. Prints: the operator's start → snapshot published (compile and publish), the
//! snapshot's compressed size and Secret count, the time until every object's status names the
//! snapshot, the operator's and edge's memory, and the edge's start → ready (load).
//!
//!   cargo run --release -p trunkgate-tests --example snapshot_scale -- [NUMBERS:TRUNKS ...]
//!
//! Prints figures; asserts only that the snapshot holds every number.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use trunkgate_crds::snapshot_secrets::{self, Layout};
use trunkgate_crds::{CarrierTrunk, NumberOwnership};
use trunkgate_tests::apiserver::{ApiServer, ensure_namespace, install_crds};
use trunkgate_tests::edge::{edge_bin, operator_bin};
use trunkgate_tests::{Lab, ProcessGroup, free_port};

const NS: &str = "scale";
const SYSTEM: &str = "trunkgate-system";
const HEAD: &str = "trunkgate-edge-config";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<(usize, usize)> = {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let args = if args.is_empty() {
            vec!["100000:500".to_string(), "1000000:5000".to_string()]
        } else {
            args
        };
        args.iter()
            .filter_map(|a| {
                let (n, t) = a.split_once(':')?;
                Some((n.parse().ok()?, t.parse().ok()?))
            })
            .collect()
    };
    println!(
        "== snapshot at scale (cargo run --release -p trunkgate-tests --example snapshot_scale) =="
    );
    for (numbers, trunks) in sizes {
        run(numbers, trunks.max(1)).await;
    }
}

/// Resident and peak memory of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// GET `path` from an admin endpoint: the whole answer ("" when unreachable).
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf
}

/// The status code of GET `path` (0 when unreachable).
fn http_status(port: u16, path: &str) -> u16 {
    http_get(port, path)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The body of GET `path`.
fn http_body(port: u16, path: &str) -> String {
    let answer = http_get(port, path);
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// How many of `items` report `version` as the snapshot they run.
fn count_at<T>(
    items: &[T],
    version_of: impl Fn(&T) -> Option<&str>,
    version: Option<&str>,
) -> usize {
    items.iter().filter(|i| version_of(i) == version).count()
}

fn spawn(
    bin: &std::path::Path,
    args: &[String],
    kubeconfig: &std::path::Path,
    log: &std::path::Path,
    what: &str,
) -> ProcessGroup {
    let file = std::fs::File::create(log).expect("log file");
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info,kube=warn")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TRUNKGATE_") {
            cmd.env_remove(k);
        }
    }
    ProcessGroup::spawn(cmd, what)
}

async fn run(numbers: usize, trunks: usize) {
    let lab = Lab::new("snapshot-scale");
    let server = ApiServer::start(&lab.dir);
    let client = server.client().await;
    install_crds(&client).await;
    ensure_namespace(&client, NS).await;
    ensure_namespace(&client, SYSTEM).await;

    // The objects: trunk i admits 10.a.b.0/24; its numbers are +64 9 then 9 digits, spread so
    // that no two are neighbours.
    let per = numbers.div_ceil(trunks);
    let t0 = Instant::now();
    let trunk_api: Api<CarrierTrunk> = Api::namespaced(client.clone(), NS);
    let own_api: Api<NumberOwnership> = Api::namespaced(client.clone(), NS);
    let mut n = 0usize;
    let mut objects = Vec::with_capacity(trunks);
    for i in 0..trunks {
        let name = format!("carrier-{i}");
        let cidr = format!("10.{}.{}.0/24", i / 256, i % 256);
        let trunk = CarrierTrunk::test(NS, &name).with_cidrs(&[&cidr]);
        let list: Vec<String> = (0..per)
            .take_while(|_| {
                n += 1;
                n <= numbers
            })
            .map(|k| {
                let at = (i * per + k) as u64;
                format!("+649{:09}", (at * 2_654_435_761) % 1_000_000_000)
            })
            .collect();
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        let own = NumberOwnership::test(NS, &format!("numbers-{i}"), &name, &refs);
        objects.push((trunk, own));
    }
    let created = futures::stream::iter(objects)
        .map(|(trunk, own)| {
            let (trunk_api, own_api) = (trunk_api.clone(), own_api.clone());
            async move {
                let a = trunk_api
                    .create(&PostParams::default(), &trunk)
                    .await
                    .is_ok();
                let b = own_api.create(&PostParams::default(), &own).await.is_ok();
                usize::from(a) + usize::from(b)
            }
        })
        .buffer_unordered(16)
        .fold(0, |acc, n| async move { acc + n })
        .await;
    println!(
        "\n{numbers} numbers over {trunks} trunks: {created} objects created in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // The operator.
    let op_port = free_port();
    let t_op = Instant::now();
    let mut operator = spawn(
        &operator_bin(),
        &[
            "run".into(),
            format!("--namespace={SYSTEM}"),
            format!("--admin=127.0.0.1:{op_port}"),
            "--leader-lease=".into(),
            "--debounce-ms=100".into(),
        ],
        &server.kubeconfig,
        &lab.path("operator.log"),
        "operator",
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), SYSTEM);
    let deadline = Instant::now() + Duration::from_secs(600);
    let (config, head) = loop {
        if Instant::now() > deadline || !operator.running() {
            println!(
                "  the operator published nothing in time; log: {}",
                lab.path("operator.log").display()
            );
            return;
        }
        if let Ok(Some(head)) = secrets.get_opt(HEAD).await {
            let mut parts = Vec::new();
            if let Ok(Layout::Parts(names)) = snapshot_secrets::layout(&head) {
                for name in names {
                    parts.push(secrets.get_opt(&name).await.ok().flatten());
                }
            }
            if let Ok(c) = snapshot_secrets::assemble(&head, &parts)
                && c.trunks.len() == trunks
            {
                break (c, head);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let published = t_op.elapsed();
    let held: u64 = config
        .ownerships
        .iter()
        .flat_map(|o| o.ranges.iter())
        .map(|r| r.end - r.start + 1)
        .sum();
    let count = match snapshot_secrets::layout(&head) {
        Ok(Layout::Parts(names)) => names.len() + 1,
        _ => 1,
    };
    let bytes = config.encode().map(|b| b.len()).unwrap_or(0);
    println!(
        "  operator: start -> snapshot published {:.2} s (list, compile, publish); {held} numbers; {bytes} bytes gzip in {count} Secret(s)",
        published.as_secs_f64()
    );
    assert_eq!(held as usize, numbers, "the snapshot holds every number");

    // Statuses: the operator's own count of status writes says when to look (listing 10,000
    // objects often would load the API server the operator writes to); a list confirms.
    let version = config.version.clone();
    let ready_in = loop {
        let writes = http_body(op_port, "/metrics")
            .lines()
            .filter(|l| l.starts_with("trunkgate_operator_status_writes_total"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>() as usize;
        if writes >= 2 * trunks {
            let at = t_op.elapsed();
            let lp = ListParams::default();
            let v = Some(version.as_str());
            let done_t = trunk_api.list(&lp).await.map_or(0, |l| {
                count_at(
                    &l.items,
                    |t| t.status.as_ref()?.snapshot_version.as_deref(),
                    v,
                )
            });
            let done_o = own_api.list(&lp).await.map_or(0, |l| {
                count_at(
                    &l.items,
                    |o| o.status.as_ref()?.snapshot_version.as_deref(),
                    v,
                )
            });
            if done_t + done_o == 2 * trunks {
                break Some(at);
            }
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    match ready_in {
        Some(d) => println!(
            "  operator: start -> all {} statuses name the snapshot {:.1} s",
            2 * trunks,
            d.as_secs_f64()
        ),
        None => println!("  operator: statuses not all written within 600 s"),
    }
    let (rss, hwm) = memory(operator.id());
    println!("  operator memory: {rss:.0} MiB resident, {hwm:.0} MiB peak");

    // The edge, on the published Secrets.
    let admin = free_port();
    let t_edge = Instant::now();
    let mut edge = spawn(
        &edge_bin(),
        &[
            format!("--snapshot-secret={SYSTEM}/{HEAD}"),
            format!("--public-sip=127.0.0.1:{}", free_port()),
            format!("--internal-sip=127.0.0.1:{}", free_port()),
            format!("--admin=127.0.0.1:{admin}"),
            "--workers=1".into(),
            "--rtp-ports=40000-40099".into(),
            "--drain-seconds=0".into(),
        ],
        &server.kubeconfig,
        &lab.path("edge.log"),
        "edge",
    );
    let loaded = loop {
        if http_status(admin, "/readyz") == 200 {
            break Some(t_edge.elapsed());
        }
        if t_edge.elapsed() > Duration::from_secs(300) || !edge.running() {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    match loaded {
        Some(d) => {
            // Let the allocator settle after decoding.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (rss, hwm) = memory(edge.id());
            println!(
                "  edge: start -> ready {:.2} s (read {count} Secret(s), decode, index); memory {rss:.0} MiB resident, {hwm:.0} MiB peak",
                d.as_secs_f64()
            );
            if d > Duration::from_secs(5) {
                // Slower than a load takes: keep the edge's log to see why.
                let kept = std::env::temp_dir().join(format!("snapshot_scale-edge-{numbers}.log"));
                let _ = std::fs::copy(lab.path("edge.log"), &kept);
                println!("  (edge log kept in {})", kept.display());
            }
        }
        None => println!(
            "  edge: not ready within 300 s; log: {}",
            lab.path("edge.log").display()
        ),
    }
    edge.kill();
    operator.kill();
    drop(server);
}
