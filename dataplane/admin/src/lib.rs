//! The admin endpoint of both binaries: Prometheus `/metrics`, `/healthz` (the process is alive)
//! and `/readyz` (it has what it needs to do its job), plus routes a binary adds.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, Registry, TextEncoder};

/// A route a binary adds: path → (status, content type, body), or None when it is not its path.
pub type Route = Arc<dyn Fn(&str) -> Option<(u16, &'static str, String)> + Send + Sync>;

/// Who may read what the endpoint knows (`/metrics` and a binary's routes); None: anyone.
pub type Allow = Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>;

/// What the admin endpoint reports.
#[derive(Clone)]
pub struct Admin {
    pub registry: Registry,
    pub ready: Arc<AtomicBool>,
    pub extra: Option<Route>,
    /// Sources outside it get 403 for everything but `/healthz` and `/readyz` (which the
    /// kubelet's probes read from the node's own address).
    pub allow: Option<Allow>,
}

impl Admin {
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            ready: Arc::new(AtomicBool::new(false)),
            extra: None,
            allow: None,
        }
    }

    /// Answers one request path from `peer`.
    pub fn respond_to(&self, peer: std::net::IpAddr, path: &str) -> (u16, &'static str, String) {
        let probe = matches!(path, "/healthz" | "/readyz");
        if !probe && self.allow.as_ref().is_some_and(|allow| !allow(peer)) {
            return (403, "text/plain", "forbidden\n".into());
        }
        self.respond(path)
    }

    /// Answers one request path.
    pub fn respond(&self, path: &str) -> (u16, &'static str, String) {
        match path {
            "/metrics" => {
                let mut buf = Vec::new();
                let families = self.registry.gather();
                if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
                    return (500, "text/plain", format!("metrics encoding failed: {e}\n"));
                }
                (
                    200,
                    "text/plain; version=0.0.4",
                    String::from_utf8_lossy(&buf).into_owned(),
                )
            }
            "/healthz" => (200, "text/plain", "ok\n".into()),
            "/readyz" if self.ready.load(Ordering::Acquire) => {
                (200, "text/plain", "ready\n".into())
            }
            "/readyz" => (503, "text/plain", "not ready\n".into()),
            other => self.extra.as_ref().and_then(|f| f(other)).unwrap_or((
                404,
                "text/plain",
                "not found\n".into(),
            )),
        }
    }
}

/// Serves on a listener bound beforehand (so that a taken port fails at start-up, not later in a
/// task), non-blocking, until the task is dropped.
pub async fn serve_listener(listener: std::net::TcpListener, admin: Admin) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "admin endpoint listening");
    // Accept errors (out of file descriptors, most often) back off from 10 ms to 1 s and are
    // logged once per 10 s: a spinning loop would eat a core and fill the log.
    let mut backoff = std::time::Duration::ZERO;
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => {
                backoff = std::time::Duration::ZERO;
                s
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(
                    std::time::Duration::from_millis(10),
                    std::time::Duration::from_secs(1),
                );
                if last_warning.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10)) {
                    last_warning = Some(std::time::Instant::now());
                    tracing::warn!(error = %e, "admin accept failed; backing off (logged once per 10 s)");
                }
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let (status, ctype, body) = admin.respond_to(peer.ip(), req.uri().path());
                async move {
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    if let Ok(v) = ctype.parse() {
                        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_flag_and_metrics_render() {
        let registry = Registry::new();
        let c = prometheus::IntCounter::new("trunkgate_test_total", "test").expect("valid metric");
        registry.register(Box::new(c.clone())).expect("registers");
        c.inc();
        let admin = Admin::new(registry);
        assert_eq!(admin.respond("/readyz").0, 503);
        admin.ready.store(true, Ordering::Release);
        assert_eq!(admin.respond("/readyz").0, 200);
        assert_eq!(admin.respond("/healthz").0, 200);
        assert!(
            admin
                .respond("/metrics")
                .2
                .contains("trunkgate_test_total 1")
        );
        assert_eq!(admin.respond("/nope").0, 404);
    }
}
