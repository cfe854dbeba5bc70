//! What the edge expects of each carrier's certificates (`CarrierTrunk.spec.tls`): the CA
//! bundle they are checked against, the name its servers' certificates carry, and the names of
//! the client certificate that identifies the trunk (mutual TLS).
//!
//! Client certificates are asked for in the handshake without being trusted there: the
//! handshake only proves the carrier holds the certificate's key (the signature over the
//! handshake is checked as usual, RFC 8446 §4.4.3). Which CA must have issued it depends on the
//! trunk, and the trunk is known only from the source address and the request, so the chain
//! and the names are checked per trunk when a call arrives ([`TrunkTls::accepts_client`]).
//! A certificate that no trunk accepts carries no weight at all.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::transport::tls::TlsError;

/// A carrier's certificate chain as it presented it, end entity first.
pub type PeerChain = Arc<[CertificateDer<'static>]>;

/// Asks every TLS client for a certificate (optional) and checks only that it holds the key;
/// trust is decided per trunk later.
#[derive(Debug)]
pub struct AskForCertificate {
    provider: Arc<CryptoProvider>,
}

impl AskForCertificate {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self { provider }
    }
}

impl ClientCertVerifier for AskForCertificate {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deferred to the trunk the call turns out to be for (module documentation).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Reads a PEM CA bundle into a root store.
pub fn roots_from_pem(pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let c = c.map_err(|e| TlsError::Bundle(e.to_string()))?;
        roots.add(c)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Bundle("no certificate in it".into()));
    }
    Ok(roots)
}

/// One trunk's expectations, ready to use.
pub struct TrunkTls {
    /// For dialling its TLS targets: its roots (or the edge's), the edge's own certificate.
    pub client: Arc<ClientConfig>,
    /// The name its server certificates must carry, instead of the target's host.
    pub server_name: Option<ServerName<'static>>,
    /// Mutual TLS: one of these names must be in its client certificate.
    client_names: Vec<ServerName<'static>>,
    /// Checks a client chain against its roots (or the edge's).
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl TrunkTls {
    /// Built from the snapshot's `tls`: `client` makes a client configuration for given roots
    /// (None: the edge's own), `default_roots` are the edge's `--tls-ca` or system roots.
    pub fn build(
        cfg: &trunkgate_crds::snapshot::TlsConfig,
        provider: Arc<CryptoProvider>,
        default_roots: &Arc<RootCertStore>,
        client: impl Fn(Option<RootCertStore>) -> Result<Arc<ClientConfig>, TlsError>,
    ) -> Result<TrunkTls, TlsError> {
        let own_roots = cfg.ca_pem.as_deref().map(roots_from_pem).transpose()?;
        let verify_roots = own_roots
            .as_ref()
            .map(|r| Arc::new(r.clone()))
            .unwrap_or_else(|| default_roots.clone());
        let name = |n: &str| {
            ServerName::try_from(n.to_string())
                .map_err(|_| TlsError::Bundle(format!("'{n}' is not a name")))
        };
        let client_names = cfg
            .client_names
            .iter()
            .map(|n| name(n))
            .collect::<Result<Vec<_>, _>>()?;
        let verifier = if client_names.is_empty() {
            None
        } else {
            Some(
                WebPkiClientVerifier::builder_with_provider(verify_roots, provider)
                    .build()
                    .map_err(|e| TlsError::Bundle(e.to_string()))?,
            )
        };
        Ok(TrunkTls {
            client: client(own_roots)?,
            server_name: cfg.server_name.as_deref().map(name).transpose()?,
            client_names,
            verifier,
        })
    }

    /// The trunk asks for a client certificate (`clientNames`).
    pub fn wants_client_certificate(&self) -> bool {
        self.verifier.is_some()
    }

    /// Whether `chain` (end entity first) was issued under this trunk's roots for client use,
    /// is valid now, and names one of `clientNames` (RFC 6125 DNS-ID or IP address).
    pub fn accepts_client(&self, chain: &[CertificateDer<'static>]) -> bool {
        let (Some(verifier), Some((ee, intermediates))) = (&self.verifier, chain.split_first())
        else {
            return false;
        };
        if verifier
            .verify_client_cert(ee, intermediates, UnixTime::now())
            .is_err()
        {
            return false;
        }
        let Ok(cert) = webpki::EndEntityCert::try_from(ee) else {
            return false;
        };
        self.client_names
            .iter()
            .any(|n| cert.verify_is_valid_for_subject_name(n).is_ok())
    }
}
