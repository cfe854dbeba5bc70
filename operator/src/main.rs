//! `trunkgate-operator`: `run` (the controller), `crd` (print the CRDs), `check DIR` (offline
//! validation for GitOps repositories).

// mimalloc: the reflector stores and each compile allocate and free many small strings; glibc's
// per-thread arenas kept about twice the live heap resident at 1,000,000 numbers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Parser, Subcommand};
use trunkgate_crds::trunk::EdgeEndpoint;
use trunkgate_operator::controller::{self, Context, Settings};
use trunkgate_operator::leader::LeaseLock;
use trunkgate_operator::metrics::Metrics;

#[derive(Parser)]
#[command(name = "trunkgate-operator", version, about = "Trunkgate operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Validate a folder of CarrierTrunk, NumberOwnership and Secret YAML; exit 1 on any problem.
    Check {
        /// Folder to read (recursively).
        dir: PathBuf,
        /// Also write the snapshot the operator would publish (gzip JSON, the Secret's
        /// `snapshot.json.gz`) to this file.
        #[arg(long)]
        snapshot_out: Option<PathBuf>,
    },
    /// Run the controller in a cluster.
    Run(Box<RunArgs>),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Namespace of the leader Lease, and of the snapshot Secret unless --snapshot-secret names
    /// another.
    #[arg(long, env = "TRUNKGATE_NAMESPACE", default_value = "trunkgate-system")]
    namespace: String,
    /// The snapshot Secret the edge pods watch, as NAMESPACE/NAME, the form the edge's
    /// --snapshot-secret takes [default: NAMESPACE/trunkgate-edge-config, NAMESPACE from
    /// --namespace]. A bare NAME (the older form) is taken in --namespace, with a warning. The
    /// edge pods are looked for in the Secret's namespace.
    #[arg(long, env = "TRUNKGATE_SNAPSHOT_SECRET")]
    snapshot_secret: Option<String>,
    /// Most Secrets one snapshot may take: the named Secret, and for a snapshot over 1 MB
    /// compressed its parts NAME-part-1 .. NAME-part-(N-1), which the edge's RBAC must name (the
    /// chart's snapshotMaxParts sets both).
    #[arg(
        long,
        env = "TRUNKGATE_SNAPSHOT_MAX_PARTS",
        default_value_t = trunkgate_crds::snapshot::DEFAULT_MAX_PARTS,
        value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from)
    )]
    snapshot_max_parts: usize,
    /// Most bytes of compressed snapshot one Secret carries (lower it where etcd's
    /// --max-request-bytes is lower than Kubernetes' default 1.5 MiB).
    #[arg(
        long,
        env = "TRUNKGATE_SNAPSHOT_PART_BYTES",
        default_value_t = trunkgate_crds::snapshot::MAX_SNAPSHOT_BYTES,
        value_parser = clap::value_parser!(u32).range(1024..=trunkgate_crds::snapshot::MAX_SNAPSHOT_BYTES as i64).map(|v| v as usize)
    )]
    snapshot_part_bytes: usize,
    /// The FQDN carriers send calls to (reported in CarrierTrunk status).
    #[arg(long, env = "TRUNKGATE_EDGE_FQDN")]
    edge_fqdn: Option<String>,
    /// Public addresses the edge sends from, for carriers' allow-lists (repeat or comma-separate).
    #[arg(long, env = "TRUNKGATE_EDGE_ADDRESSES", value_delimiter = ',')]
    edge_address: Vec<String>,
    /// Quiet time after a change before recompiling, in milliseconds.
    #[arg(long, env = "TRUNKGATE_DEBOUNCE_MS", default_value_t = 500)]
    debounce_ms: u64,
    /// Label selector of the credential Secrets to watch ("" watches all Secrets).
    #[arg(
        long,
        env = "TRUNKGATE_SECRET_SELECTOR",
        default_value = "trunkgate.io/credentials=true"
    )]
    secret_selector: String,
    /// Admin endpoint: /metrics and /healthz.
    #[arg(long, env = "TRUNKGATE_ADMIN", default_value = "0.0.0.0:9090")]
    admin: SocketAddr,
    /// Leader Lease name; empty disables leader election (single replica only).
    #[arg(
        long,
        env = "TRUNKGATE_LEADER_LEASE",
        default_value = "trunkgate-operator"
    )]
    leader_lease: String,
    /// Label selector of the edge pods in --namespace, for live status ("" disables it).
    #[arg(
        long,
        env = "TRUNKGATE_EDGE_SELECTOR",
        default_value = "app.kubernetes.io/name=trunkgate,app.kubernetes.io/component=edge"
    )]
    edge_selector: String,
    /// Admin port of the edge pods, where /snapshot tells the version they run.
    #[arg(long, env = "TRUNKGATE_EDGE_ADMIN_PORT", default_value_t = 9091)]
    edge_admin_port: u16,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "trunkgate-operator")]
    identity: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", trunkgate_crds::schema::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Check { dir, snapshot_out } => {
            let mut out = std::io::stdout();
            match trunkgate_operator::check::check(&dir, &mut out, snapshot_out.as_deref()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", dir.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::Run(args) => {
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info,kube=warn".into()),
                )
                .init();
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "operator stopped");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// `--snapshot-secret` as (namespace, name, old form used). `NAMESPACE/NAME` like the edge's
/// flag; a bare `NAME` is the older form, taken in `namespace`.
fn snapshot_secret_ref(
    value: Option<&str>,
    namespace: &str,
) -> Result<(String, String, bool), String> {
    let Some(value) = value else {
        return Ok((namespace.to_string(), "trunkgate-edge-config".into(), false));
    };
    match value.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string(), false))
        }
        None if !value.is_empty() => Ok((namespace.to_string(), value.to_string(), true)),
        _ => Err(format!(
            "--snapshot-secret (TRUNKGATE_SNAPSHOT_SECRET) must be NAMESPACE/NAME, got '{value}'"
        )),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (snapshot_namespace, snapshot_name, old_form) =
        snapshot_secret_ref(args.snapshot_secret.as_deref(), &args.namespace)
            .map_err(|e| anyhow::anyhow!(e))?;
    if old_form {
        tracing::warn!(
            secret = %format!("{snapshot_namespace}/{snapshot_name}"),
            "--snapshot-secret (TRUNKGATE_SNAPSHOT_SECRET) without a namespace is the older form; \
             write NAMESPACE/NAME, as the edge takes it (taken in --namespace)"
        );
    }
    let metrics = Metrics::new();
    let admin = trunkgate_admin::Admin::new(metrics.registry.clone());
    admin
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    // Bound here so that a taken port stops the operator at start-up; a later failure of the
    // server is logged (its probes then fail, and the kubelet restarts the pod).
    let listener = std::net::TcpListener::bind(args.admin)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| anyhow::anyhow!("admin endpoint (--admin) TCP {}: {e}", args.admin))?;
    tokio::spawn(async move {
        if let Err(e) = trunkgate_admin::serve_listener(listener, admin).await {
            tracing::error!(error = %e, "admin endpoint failed");
        }
    });
    let client = kube::Client::try_default().await?;
    let settings = Settings {
        snapshot_namespace,
        snapshot_name,
        snapshot_max_parts: args.snapshot_max_parts,
        snapshot_part_bytes: args.snapshot_part_bytes,
        edge: EdgeEndpoint {
            fqdn: args.edge_fqdn,
            addresses: args.edge_address,
        },
        debounce: Duration::from_millis(args.debounce_ms),
        secret_selector: args.secret_selector,
        edge_selector: args.edge_selector,
        edge_admin_port: args.edge_admin_port,
    };
    let ctx = Context::new(client.clone(), settings, metrics.clone());
    if args.leader_lease.is_empty() {
        tokio::select! {
            _ = controller::run(ctx) => {}
            _ = stop_signal() => {}
        }
        return Ok(());
    }
    let lock = LeaseLock {
        api: kube::Api::namespaced(client, &args.namespace),
        name: args.leader_lease,
        identity: args.identity,
        duration: Duration::from_secs(15),
        retry: Duration::from_secs(1),
    };
    tokio::select! {
        _ = lock.acquire() => {}
        _ = stop_signal() => return Ok(()),
    }
    metrics.leader.set(1);
    tracing::info!(identity = %lock.identity, "leading");
    let stopped = tokio::select! {
        _ = controller::run(ctx) => false,
        _ = lock.keep() => false,
        _ = stop_signal() => true,
    };
    metrics.leader.set(0);
    // Whatever ended the term, give the lease up so a standby leads within a second.
    match lock.release().await {
        Ok(true) => tracing::info!(identity = %lock.identity, "released the leader lease"),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not release the leader lease; it expires by itself")
        }
    }
    if stopped {
        return Ok(());
    }
    anyhow::bail!("lost the leader lease or a watch ended; restarting")
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

#[cfg(test)]
mod tests {
    use super::snapshot_secret_ref;

    #[test]
    fn snapshot_secret_is_namespace_slash_name_like_the_edge() {
        let ok = |v: Option<&str>| snapshot_secret_ref(v, "tg").map_err(|e| e.to_string());
        assert_eq!(
            ok(None),
            Ok(("tg".into(), "trunkgate-edge-config".into(), false))
        );
        assert_eq!(
            ok(Some("other/snap")),
            Ok(("other".into(), "snap".into(), false))
        );
        // The older form: a bare name, in --namespace, flagged for a warning.
        assert_eq!(ok(Some("snap")), Ok(("tg".into(), "snap".into(), true)));
        for bad in ["", "/snap", "ns/", "a/b/c"] {
            let err = ok(Some(bad)).expect_err(bad);
            assert!(err.contains("NAMESPACE/NAME"), "{err}");
        }
    }
}
