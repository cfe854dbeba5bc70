//! SIP over TLS (RFC 3261 §26.2, TLS 1.2 and 1.3 with rustls): the edge's certificate read
//! from PEM files (a Kubernetes TLS Secret's `tls.crt`/`tls.key`, mounted) and read again when
//! they change, the roots it checks peers against, and why a handshake failed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}: no certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("certificate and key do not fit: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("CA bundle: {0}")]
    Bundle(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = |e: rustls_pki_types::pem::Error| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(file)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(file)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// What the edge serves: its chain and key. `ask_clients`: ask for a client certificate
/// (optional; trusted per trunk later, see [`crate::transport::tls_peer`]).
pub fn server_config(
    cert: &Path,
    key_path: &Path,
    ask_clients: bool,
) -> Result<ServerConfig, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS)?;
    let builder = if ask_clients {
        builder.with_client_cert_verifier(Arc::new(
            crate::transport::tls_peer::AskForCertificate::new(provider()),
        ))
    } else {
        builder.with_no_client_auth()
    };
    Ok(builder.with_single_cert(certs(cert)?, key(key_path)?)?)
}

/// What the edge checks servers it connects to against: `roots`; it presents its own
/// certificate when it has one (carriers that want mutual TLS).
pub fn client_config(
    roots: RootCertStore,
    own: Option<(&Path, &Path)>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots);
    Ok(match own {
        Some((cert, key_path)) => builder.with_client_auth_cert(certs(cert)?, key(key_path)?)?,
        None => builder.with_no_client_auth(),
    })
}

/// The edge's own roots: `ca` (PEM, `--tls-ca`) or the system's.
pub fn default_roots(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for c in certs(path)? {
                roots.add(c)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "a system root certificate could not be read");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no system root certificates: connections to sips: targets will fail; give --tls-ca"
                );
            }
        }
    }
    Ok(roots)
}

/// The edge's TLS material as it is now: swapped whole when the files change.
pub struct Tls {
    files: Option<(PathBuf, PathBuf)>,
    ca: Option<PathBuf>,
    pub server: ArcSwap<Option<Arc<ServerConfig>>>,
    pub client: ArcSwap<ClientConfig>,
    /// `--tls-ca` or the system's roots.
    roots: ArcSwap<RootCertStore>,
    /// Per trunk id, its `spec.tls` made ready; rebuilt with each snapshot and each change of
    /// the files (the trunks' client configurations carry the edge's certificate).
    trunks: ArcSwap<HashMap<String, Arc<crate::transport::tls_peer::TrunkTls>>>,
    /// The snapshot's `tls` sections the map was built from.
    trunk_configs: Mutex<Vec<(String, trunkgate_crds::snapshot::TlsConfig)>>,
    /// Some trunk wants client certificates: the listeners ask for one.
    ask_clients: std::sync::atomic::AtomicBool,
    /// Modification times of the files the current material came from.
    seen: Mutex<Vec<Option<SystemTime>>>,
}

fn modified(paths: &[&Path]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

impl Tls {
    /// Reads the files named by the flags; an error here stops the edge at start-up.
    pub fn load(
        cert: Option<&Path>,
        key_path: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Self, TlsError> {
        let files = cert
            .zip(key_path)
            .map(|(c, k)| (c.to_path_buf(), k.to_path_buf()));
        let tls = Tls {
            files,
            ca: ca.map(Path::to_path_buf),
            server: ArcSwap::from_pointee(None),
            client: ArcSwap::from_pointee(client_config(default_roots(ca)?, None)?),
            roots: ArcSwap::from_pointee(RootCertStore::empty()),
            trunks: ArcSwap::from_pointee(HashMap::new()),
            trunk_configs: Mutex::new(Vec::new()),
            ask_clients: std::sync::atomic::AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
        };
        tls.build()?;
        Ok(tls)
    }

    fn paths(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = Vec::new();
        if let Some((c, k)) = &self.files {
            v.push(c);
            v.push(k);
        }
        if let Some(ca) = &self.ca {
            v.push(ca);
        }
        v
    }

    fn build(&self) -> Result<(), TlsError> {
        let stamps = modified(&self.paths());
        // Tried once per change: a bad file is reported once, not on every look.
        if let Ok(mut seen) = self.seen.lock() {
            *seen = stamps;
        }
        let own = self.files.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let roots = default_roots(self.ca.as_deref())?;
        let client = client_config(roots.clone(), own)?;
        let ask = self.ask_clients.load(std::sync::atomic::Ordering::Acquire);
        let server = match own {
            Some((c, k)) => Some(Arc::new(server_config(c, k, ask)?)),
            None => None,
        };
        self.roots.store(Arc::new(roots));
        self.server.store(Arc::new(server));
        self.client.store(Arc::new(client));
        self.build_trunks();
        Ok(())
    }

    /// Takes the trunks' `spec.tls` of a new snapshot. Returns the trunks whose section cannot
    /// be used (a CA bundle that does not parse): they keep no TLS expectations, so their
    /// client-certificate calls are refused and their targets checked against the edge's roots.
    pub fn apply_trunks(
        &self,
        trunks: &[trunkgate_crds::snapshot::TrunkConfig],
    ) -> Vec<(String, TlsError)> {
        let configs: Vec<_> = trunks
            .iter()
            .filter_map(|t| t.tls.clone().map(|c| (t.id.clone(), c)))
            .collect();
        let ask = configs.iter().any(|(_, c)| !c.client_names.is_empty());
        if let Ok(mut held) = self.trunk_configs.lock() {
            *held = configs;
        }
        let was = self
            .ask_clients
            .swap(ask, std::sync::atomic::Ordering::AcqRel);
        if was != ask
            && let Some((c, k)) = &self.files
        {
            match server_config(c, k, ask) {
                Ok(server) => self.server.store(Arc::new(Some(Arc::new(server)))),
                Err(e) => tracing::warn!(error = %e, "TLS listener configuration not rebuilt"),
            }
        }
        self.build_trunks()
    }

    fn build_trunks(&self) -> Vec<(String, TlsError)> {
        let configs = self
            .trunk_configs
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        let own = self.files.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let default = self.roots.load_full();
        let mut map = HashMap::new();
        let mut failed = Vec::new();
        for (id, cfg) in configs {
            let client = |roots: Option<RootCertStore>| match roots {
                Some(r) => client_config(r, own).map(Arc::new),
                None => Ok(self.client.load_full()),
            };
            match crate::transport::tls_peer::TrunkTls::build(&cfg, provider(), &default, client) {
                Ok(t) => {
                    map.insert(id, Arc::new(t));
                }
                Err(e) => {
                    tracing::warn!(trunk = %id, error = %e, "trunk TLS settings cannot be used");
                    failed.push((id, e));
                }
            }
        }
        self.trunks.store(Arc::new(map));
        failed
    }

    /// Some trunk asks for client certificates (`clientNames`).
    pub fn asks_clients(&self) -> bool {
        self.ask_clients.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A trunk's TLS expectations, when its CarrierTrunk has `spec.tls`.
    pub fn trunk(&self, id: &str) -> Option<Arc<crate::transport::tls_peer::TrunkTls>> {
        self.trunks.load().get(id).cloned()
    }

    /// Reads the files again when one changed (a rotated Secret): Ok(true) when new material
    /// is in use, Ok(false) when nothing changed. On an error the material in use stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = modified(&self.paths());
        let changed = self.seen.lock().map(|s| *s != now).unwrap_or(true);
        if !changed {
            return Ok(false);
        }
        self.build()?;
        Ok(true)
    }
}

/// Looks at the files every `every` and swaps in what they hold when they change; counted in
/// `trunkgate_edge_tls_reloads_total`. Connections up keep the material they began with.
pub async fn watch(tls: Arc<Tls>, metrics: crate::metrics::Metrics, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tls.reload_if_changed() {
            Ok(false) => {}
            Ok(true) => {
                metrics.tls_reloads.with_label_values(&["ok"]).inc();
                tracing::info!("TLS certificate files changed: new connections use them");
            }
            Err(e) => {
                metrics.tls_reloads.with_label_values(&["error"]).inc();
                tracing::warn!(error = %e, "TLS certificate files changed but cannot be used; keeping the ones in use");
            }
        }
    }
}

/// Why a handshake failed, as a metric label.
pub fn failure_label(e: &std::io::Error) -> &'static str {
    use rustls::Error as E;
    if e.kind() == std::io::ErrorKind::TimedOut {
        return "timeout";
    }
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return "peer_closed";
    }
    match e.get_ref().and_then(|i| i.downcast_ref::<E>()) {
        Some(E::InvalidMessage(_)) => "not_tls",
        Some(E::InvalidCertificate(_)) => "certificate",
        Some(E::AlertReceived(a)) => match a {
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateExpired
            | rustls::AlertDescription::CertificateUnknown => "certificate_refused",
            _ => "alert",
        },
        Some(E::PeerIncompatible(_)) | Some(E::NoCertificatesPresented) => "incompatible",
        Some(_) => "protocol",
        None => "io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_empty_files_say_which() {
        let dir = std::env::temp_dir().join(format!("tg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let e = server_config(&empty, &empty, false).expect_err("no certificate");
        assert!(e.to_string().contains("empty.pem"), "{e}");
        let missing = dir.join("missing.pem");
        let e = server_config(&missing, &missing, false).expect_err("no file");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn timeouts_and_plaintext_have_their_labels() {
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake");
        assert_eq!(failure_label(&timeout), "timeout");
        let plain = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert_eq!(failure_label(&plain), "not_tls");
    }
}
