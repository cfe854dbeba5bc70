//! Starting and stopping the edge: sockets per worker (SO_REUSEPORT), one thread and event loop
//! per worker, the snapshot source, the admin endpoint, and graceful drain on SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, watch};

use crate::call::Side;
use crate::config::settings::{Settings, available_cpus, worker_count};
use crate::lifeline::WorkerError;
use crate::metrics::Metrics;
use crate::worker::{Shared, Worker};

/// A UDP socket that shares its port with the other workers' (SO_REUSEPORT).
pub fn reuseport_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    // Bursts of INVITEs must not overflow the queue while a worker is busy.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Fails, naming the address and protocol, when another process holds `addr` for UDP or TCP
/// (an edge among them: its SO_REUSEPORT sockets refuse a plain bind).
fn ensure_unused(addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let in_use = |proto: &str, e: std::io::Error| {
        anyhow::anyhow!("{what} {proto} {addr} is in use by another process (another edge?): {e}")
    };
    std::net::UdpSocket::bind(addr).map_err(|e| in_use("UDP", e))?;
    std::net::TcpListener::bind(addr).map_err(|e| in_use("TCP", e))?;
    Ok(())
}

/// Runs the edge until SIGTERM/SIGINT and the drain that follows.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let workers = worker_count(settings.workers, available_cpus());
    let problems = settings.start_problems(workers);
    if !problems.is_empty() {
        anyhow::bail!("cannot start:\n  - {}", problems.join("\n  - "));
    }
    let mut handoff_tx = Vec::with_capacity(workers);
    let mut handoff_rx = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = mpsc::channel(4096);
        handoff_tx.push(tx);
        handoff_rx.push(rx);
    }
    // Each relayed stream holds four sockets; TCP connections get what the RTP ports and a
    // reserve leave under the open-file limit.
    let nofile = match trunkgate_media::raise_fd_limit() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            1024
        }
    };
    let tcp_cap = crate::transport::tcp::connection_budget(
        settings.tcp_max_connections,
        nofile,
        settings.rtp_ports,
    );
    if tcp_cap < settings.tcp_max_connections {
        tracing::warn!(
            tcp_cap,
            nofile,
            "--tcp-max-connections lowered to keep file descriptors for RTP ports and the rest"
        );
    }
    let resolver = match trunkgate_resolve::Resolver::from_system_conf() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS resolver: targets must be IP addresses");
            None
        }
    };
    let tls = crate::transport::tls::Tls::load(
        settings.tls_cert.as_deref(),
        settings.tls_key.as_deref(),
        settings.tls_ca.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("TLS (--tls-cert, --tls-key, --tls-ca): {e}"))?;
    let shared = Arc::new(Shared::new(
        settings.clone(),
        metrics.clone(),
        handoff_tx,
        tcp_cap,
        resolver,
        Arc::new(tls),
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let slices = crate::config::settings::rtp_slices(settings.rtp_ports, workers);

    // Bind every worker's sockets before anything runs, so a bad address fails at once. The
    // workers share their ports through SO_REUSEPORT, which would as gladly share them with a
    // second edge started by mistake (splitting the calls between the two): first make sure
    // nobody else holds them.
    for (addr, what) in [
        (settings.public_sip, "carrier-side SIP (--public-sip)"),
        (settings.internal_sip, "platform-side SIP (--internal-sip)"),
    ] {
        ensure_unused(addr, what)?;
    }
    for (addr, what) in [
        (
            settings.public_sips,
            "carrier-side SIP over TLS (--public-sips)",
        ),
        (
            settings.internal_sips,
            "platform-side SIP over TLS (--internal-sips)",
        ),
    ] {
        if let Some(addr) = addr {
            std::net::TcpListener::bind(addr)
                .map_err(|e| anyhow::anyhow!("{what}: TCP {addr}: {e}"))?;
        }
    }
    if let Some(dir) = &settings.config
        && !dir.is_dir()
    {
        anyhow::bail!(
            "--config {}: no such folder (the CarrierTrunk, NumberOwnership and Secret YAML to run)",
            dir.display()
        );
    }
    let admin_listener = std::net::TcpListener::bind(settings.admin)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| anyhow::anyhow!("admin endpoint (--admin) TCP {}: {e}", settings.admin))?;
    let mut sockets = Vec::with_capacity(workers);
    let mut filtered = Vec::with_capacity(workers);
    for _ in 0..workers {
        let public = reuseport_udp(settings.public_sip)?;
        if let Ok(dup) = public.try_clone() {
            filtered.push(dup);
        }
        let mut streams = vec![
            (
                crate::transport::tcp::reuseport_tcp(settings.public_sip)?,
                Side::Public,
                false,
            ),
            (
                crate::transport::tcp::reuseport_tcp(settings.internal_sip)?,
                Side::Internal,
                false,
            ),
        ];
        for (addr, side) in [
            (settings.public_sips, Side::Public),
            (settings.internal_sips, Side::Internal),
        ] {
            if let Some(addr) = addr {
                streams.push((crate::transport::tcp::reuseport_tcp(addr)?, side, true));
            }
        }
        sockets.push(WorkerSockets {
            public,
            internal: reuseport_udp(settings.internal_sip)?,
            streams,
        });
    }
    shared.prefilter.add_sockets(filtered);

    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("trunkgate-control")
        .enable_all()
        .build()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (deaths_tx, mut deaths_rx) = mpsc::unbounded_channel();

    // The fleet's store, when one is given: its task runs here, off the workers' loops.
    let fleet_task = shared
        .fleet_task
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match fleet_task {
        Some(task) => {
            tracing::info!(
                store = %crate::fleet::redacted(&task.settings.url),
                identity = %task.settings.identity,
                lease_seconds = task.settings.lease.as_secs(),
                "trunk limits and the digest lockout are shared with the fleet"
            );
            let runtime = shared.clone();
            let quality = crate::route::fleet_quality::FleetQuality {
                runtime: Box::new(move || runtime.runtime.load_full()),
                metrics: shared.metrics.clone(),
            };
            control.spawn(crate::fleet::run(
                task,
                shared.lockout.clone(),
                shared.metrics.clone(),
                Arc::new(quality),
            ));
        }
        None => {
            shared.metrics.store_up.set(1);
            shared.metrics.fleet_pods.set(1);
        }
    }

    control.spawn(crate::transport::tls::watch(
        shared.tls.clone(),
        shared.metrics.clone(),
        Duration::from_secs(2),
    ));

    // Snapshot first: a standalone folder is loaded before the first packet is read.
    match (&settings.config, &settings.snapshot_secret) {
        (Some(dir), _) => {
            if let Some(cfg) = crate::snapshots::compile_dir(
                dir,
                None,
                &mut Default::default(),
                &mut Default::default(),
                &shared,
            ) {
                crate::snapshots::install(&shared, &ready, cfg);
            }
            control.spawn(crate::snapshots::watch_dir(
                dir.clone(),
                Duration::from_millis(settings.reload_ms.max(50)),
                shared.clone(),
                ready.clone(),
            ));
        }
        (None, Some(secret)) => {
            let (s, r, name) = (shared.clone(), ready.clone(), secret.clone());
            control.spawn(async move {
                if let Err(e) = crate::snapshots::watch_secret(name, s, r).await {
                    tracing::error!(error = %e, "snapshot Secret watch stopped");
                }
            });
        }
        (None, None) => anyhow::bail!(
            "give --config DIR (standalone) or --snapshot-secret NAMESPACE/NAME (cluster)"
        ),
    }

    let mut admin = trunkgate_admin::Admin::new(metrics.registry.clone());
    // Ready: a snapshot runs, and the previous run's calls are back (crate::fleet::restore).
    let gate = Arc::new(AtomicBool::new(false));
    admin.ready = gate.clone();
    // Metrics and the snapshot summary are for the platform's side (Prometheus, the operator)
    // (by default loopback), never a carrier: --admin-cidrs, else --platform-cidrs.
    let admin_acl = if settings.admin_cidrs.is_empty() {
        shared.platform.clone()
    } else {
        crate::guard::platform::PlatformAcl::new(&settings.admin_cidrs)
    };
    admin.allow = Some(Arc::new(move |ip: std::net::IpAddr| admin_acl.allows(ip)));
    let snap = shared.clone();
    admin.extra = Some(Arc::new(move |path: &str| {
        (path == "/snapshot").then(|| {
            let rt = snap.runtime.load();
            let targets: serde_json::Map<String, serde_json::Value> = rt
                .probed_targets()
                .into_iter()
                .map(|(id, up, total)| {
                    (
                        id.to_string(),
                        serde_json::json!({"healthy": up, "total": total}),
                    )
                })
                .collect();
            let quality: serde_json::Map<String, serde_json::Value> = rt
                .quality_report(crate::route::health::quality_clock())
                .into_iter()
                .map(|(id, c, demoted)| {
                    (
                        id.to_string(),
                        serde_json::json!({"counts": c.fields(), "demoted": demoted}),
                    )
                })
                .collect();
            let body = serde_json::json!({
                "targets": targets,
                "quality": quality,
                "version": rt.config.version,
                "trunks": rt.config.trunks.len(),
                "ownerships": rt.config.ownerships.len(),
                "activeCalls": rt.state.iter().map(|s| u64::from(s.active())).sum::<u64>(),
                "registrations": *snap.registrations.lock().unwrap_or_else(|e| e.into_inner()),
                "stateStore": {
                    "shared": snap.fleet.is_shared(),
                    "fallback": snap.metrics.limit_fallback.get() == 1,
                },
            });
            (200, "application/json", format!("{body}\n"))
        })
    }));
    // Kernel receive drops on the edge's UDP sockets, every few seconds.
    {
        let counter = metrics.kernel_drops.clone();
        let (public, internal, rtp) = (
            settings.public_sip.port(),
            settings.internal_sip.port(),
            settings.rtp_ports,
        );
        control.spawn(async move {
            let mut drops = crate::transport::kernel::DropCounter::default();
            let kind = |port: u16| {
                use crate::transport::kernel::Socket;
                if port == public {
                    Some(Socket::SipPublic)
                } else if port == internal {
                    Some(Socket::SipInternal)
                } else if (rtp.0..=rtp.1).contains(&port) {
                    Some(Socket::Rtp)
                } else {
                    None
                }
            };
            loop {
                let tables = tokio::task::spawn_blocking(crate::transport::kernel::read_tables)
                    .await
                    .unwrap_or_default();
                for (socket, n) in drops.read(&tables, kind) {
                    counter.with_label_values(&[socket.label()]).inc_by(n);
                }
                tokio::time::sleep(crate::transport::kernel::EVERY).await;
            }
        });
    }
    control.spawn(async move {
        if let Err(e) = trunkgate_admin::serve_listener(admin_listener, admin).await {
            tracing::error!(error = %e, "admin endpoint failed");
        }
    });

    // The previous run's calls (this identity's), handed to the workers that own them before
    // any of them reads a packet.
    let previous = match settings.store() {
        Some(store) => {
            let load = crate::fleet::load_calls(&store);
            match control
                .block_on(async { tokio::time::timeout(Duration::from_secs(3), load).await })
            {
                Ok(Ok(calls)) => calls,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "state store: the previous run's calls could not be read; none restored");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!(
                        "state store: no answer within 3 s; the previous run's calls are not restored"
                    );
                    Vec::new()
                }
            }
        }
        None => match &settings.state_dir {
            Some(dir) => match crate::fleet::journal::open_file(dir) {
                Ok((calls, tx)) => {
                    shared.fleet.journal_to_file(tx);
                    calls
                }
                Err(e) => {
                    tracing::warn!(error = %e, dir = %dir.display(), "--state-dir: no call journal; calls will not survive a restart");
                    Vec::new()
                }
            },
            None => Vec::new(),
        },
    };
    let previous = crate::call::checkpoint::read_all(previous);
    if !previous.is_empty() {
        tracing::info!(
            calls = previous.len(),
            "restoring the calls of the previous run"
        );
    }
    let mut per_worker: Vec<Vec<crate::call::checkpoint::CallRecord>> = vec![Vec::new(); workers];
    let mut restoring = 0;
    for call in previous {
        match crate::sip::ids::owner(&call.key).filter(|w| *w < workers) {
            Some(w) => {
                per_worker[w].push(call);
                restoring += 1;
            }
            None => {
                tracing::warn!(
                    key = call.key,
                    "a call of the previous run belongs to a worker this run does not have (--workers changed): not restored"
                );
                shared.fleet.journal(call.key, None);
            }
        }
    }
    shared.restoring.store(restoring, Ordering::Release);
    *shared.restore.lock().unwrap_or_else(|e| e.into_inner()) = per_worker;
    // Ready once the snapshot runs and these calls are back.
    {
        let (ready, shared) = (ready.clone(), shared.clone());
        control.spawn(async move {
            let mut swept = false;
            loop {
                let restored = shared.restoring.load(Ordering::Acquire) == 0;
                if restored
                    && !swept
                    && let Some(f) = &shared.fast_path
                {
                    // Restored calls took theirs: the kernel's other entries are the last
                    // run's calls that ended meanwhile.
                    swept = true;
                    let stale = f.sweep();
                    if stale > 0 {
                        tracing::info!(stale, "RTP fast path: entries of ended calls removed");
                    }
                }
                gate.store(ready.load(Ordering::Acquire) && restored, Ordering::Release);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }

    let mut threads = Vec::with_capacity(workers);
    for (index, (worker_sockets, rx)) in sockets.into_iter().zip(handoff_rx).enumerate() {
        let shared = shared.clone();
        let shutdown = shutdown_rx.clone();
        let mut media_cfg = trunkgate_media::MediaConfig::new(
            settings.public_media(),
            settings.internal_media(),
            slices.get(index).copied().unwrap_or(settings.rtp_ports),
        );
        // The advertised public IP may be a load balancer's, NATed onto this pod: bind where
        // SIP binds.
        media_cfg.public_bind = settings.public_sip.ip();
        media_cfg.internal_bind = settings.internal_sip.ip();
        media_cfg.timeout = Duration::from_secs(settings.media_timeout.max(1));
        media_cfg.quarantine = Duration::from_secs(settings.rtp_quarantine_seconds);
        let line = crate::lifeline::Lifeline::new(index, deaths_tx.clone(), shutdown_rx.clone());
        let t = std::thread::Builder::new()
            .name(format!("trunkgate-w{index}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(WorkerError::Runtime)
                    .and_then(|rt| {
                        rt.block_on(run_worker(
                            index,
                            shared,
                            worker_sockets,
                            media_cfg,
                            rx,
                            shutdown,
                        ))
                    });
                line.ended(result);
            })?;
        threads.push(t);
    }
    tracing::info!(
        workers,
        public = %settings.public_sip,
        internal = %settings.internal_sip,
        admin = %settings.admin,
        public_tls = ?settings.public_sips,
        internal_tls = ?settings.internal_sips,
        "trunkgate-edge running"
    );

    // Graceful drain: not ready, new INVITEs get 503, calls run until they end or time is up.
    let drain = Duration::from_secs(settings.drain_seconds);
    let died = control.block_on(async {
        // A worker that dies takes its share of calls with it: the pod drains as on SIGTERM and
        // then exits non-zero, so that it is replaced.
        let died = tokio::select! {
            () = wait_for_signal() => None,
            Some(death) = deaths_rx.recv() => {
                tracing::error!(
                    worker = death.index,
                    reason = death.error.metric_label(),
                    error = %death.error,
                    "worker died; draining, then exiting"
                );
                Some(death)
            }
        };
        tracing::info!(seconds = drain.as_secs(), "draining");
        shared.draining.store(true, Ordering::Release);
        ready.store(false, Ordering::Release);
        metrics.draining.set(1);
        let until = Instant::now() + drain;
        let drained = async {
            loop {
                let active: u64 = shared
                    .runtime
                    .load()
                    .state
                    .iter()
                    .map(|s| u64::from(s.active()))
                    .sum();
                if active == 0 || Instant::now() >= until {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        // A second SIGINT/SIGTERM (Ctrl-C again) ends the drain at once.
        tokio::select! {
            () = drained => {}
            () = wait_for_signal() => tracing::info!("second signal: stopping now"),
        }
        died
    });
    // Workers hang up the calls left (BYE on both legs, or 503 and CANCEL while ringing; a call
    // detail record for each) and stop.
    let _ = shutdown_tx.send(true);
    let deadline = Instant::now() + Duration::from_secs(2);
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    tracing::info!("stopped");
    match died {
        None => Ok(()),
        Some(d) => Err(anyhow::anyhow!("worker {} died: {}", d.index, d.error)),
    }
}

/// One worker's sockets, bound before any worker starts.
struct WorkerSockets {
    public: std::net::UdpSocket,
    internal: std::net::UdpSocket,
    /// TCP and TLS listeners: (listener, side, TLS).
    streams: Vec<(std::net::TcpListener, Side, bool)>,
}

/// A worker's life on its own thread's event loop: until shutdown, or an error that its
/// [`Lifeline`](crate::lifeline::Lifeline) reports.
async fn run_worker(
    index: usize,
    shared: Arc<Shared>,
    sockets: WorkerSockets,
    media_cfg: trunkgate_media::MediaConfig,
    rx: mpsc::Receiver<crate::worker::Handoff>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let WorkerSockets {
        public,
        internal,
        streams,
    } = sockets;
    let public = tokio::net::UdpSocket::from_std(public).map_err(WorkerError::Sockets)?;
    let internal = tokio::net::UdpSocket::from_std(internal).map_err(WorkerError::Sockets)?;
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    for (listener, side, tls) in streams {
        let l = tokio::net::TcpListener::from_std(listener).map_err(WorkerError::Sockets)?;
        tokio::spawn(crate::transport::tcp::accept(
            l,
            side,
            tls,
            crate::worker::deliver(events_tx.clone()),
            shared.listening(),
        ));
    }
    let media = match trunkgate_media::MediaEngine::new(media_cfg) {
        Ok(mut m) => {
            if let Some(f) = &shared.fast_path {
                m.set_fast_path(f.clone());
            }
            Some(m)
        }
        Err(e) => {
            tracing::error!(error = %e, worker = index, "media relay did not start; relayed calls get 503");
            None
        }
    };
    let worker = Worker::new(index, shared.clone(), media);
    let net = crate::worker::runtime::Net {
        public,
        internal,
        events: events_tx,
    };
    crate::worker::runtime::run(worker, net, rx, events_rx, shutdown).await;
    // `run` returns once shutdown has begun; the lifeline tells an early return apart.
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
