//! TLS with rustls: what to trust, whether to verify, and the client certificate.
//!
//! One `rustls::ClientConfig` is built per client. Each user of it (a node's pool, the
//! discovery of one process) takes a copy with a session cache of its own, so TLS sessions are
//! resumed across connections to the same server, and a forked child never shares (or finds
//! locked) a session cache of its parent's. Verification is on unless turned off explicitly;
//! there is never a fall-back to plaintext.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};

/// How to secure connections, before it is turned into a rustls configuration.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TlsSettings {
    /// Trust anchors given directly (DER), e.g. from an `ssl.SSLContext`.
    pub ca_certificates: Vec<Vec<u8>>,
    /// A PEM file of trust anchors.
    pub ca_file: Option<PathBuf>,
    /// Skip all certificate verification. Only ever set explicitly.
    pub skip_verification: bool,
    /// Verify the chain but not that the certificate names the server.
    pub skip_hostname_check: bool,
    /// Client certificate chain (PEM), for servers that require one.
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key_file: Option<PathBuf>,
    /// The name every certificate is verified against (and sent as SNI), instead of each node's
    /// hostname.
    pub server_name: Option<String>,
}

/// A ready rustls configuration and the name override, shared by all connections.
#[derive(Clone)]
pub struct Tls {
    pub(crate) config: Arc<rustls::ClientConfig>,
    pub(crate) server_name: Option<String>,
}

impl Tls {
    /// The same settings with a session cache of their own, for one server and one process
    /// (the caches sit behind a lock, which a forked child must not inherit held).
    pub(crate) fn with_own_sessions(&self) -> Tls {
        let mut config = (*self.config).clone();
        config.resumption = rustls::client::Resumption::in_memory_sessions(SESSIONS_PER_SERVER);
        Tls {
            config: Arc::new(config),
            server_name: self.server_name.clone(),
        }
    }
}

/// TLS sessions kept per server for resumption (each new connection uses one TLS 1.3 ticket).
const SESSIONS_PER_SERVER: usize = 16;

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn config_error(reason: impl fmt::Display) -> Error {
    Error::TlsConfig {
        reason: reason.to_string(),
    }
}

impl TlsSettings {
    /// Builds the rustls configuration: the given CAs, or the system's trust store when none is
    /// given.
    pub fn build(&self) -> Result<Tls> {
        // A name no certificate can match would fail every connection: refuse it now.
        if let Some(name) = &self.server_name {
            server_name(name)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(self.roots()?);
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(config_error)?;
        let verifier: Arc<dyn ServerCertVerifier> = if self.skip_verification {
            Arc::new(Lenient {
                chain: None,
                provider,
            })
        } else {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(config_error)?;
            if self.skip_hostname_check {
                Arc::new(Lenient {
                    chain: Some(webpki),
                    provider,
                })
            } else {
                webpki
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| config_error(format!("cannot read {}: {e}", cert.display())))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| config_error(format!("cannot read {}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(config_error)?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(config_error(
                    "a client certificate needs both tls_cert_file and tls_key_file",
                ))
            }
        };
        let mut config = config;
        // Never used as is: connections use `with_own_sessions` copies (per server, per
        // process). Disabled here so that a path that forgot to would not share one cache.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Tls {
            config: Arc::new(config),
            server_name: self.server_name.clone(),
        })
    }

    fn roots(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for der in &self.ca_certificates {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(config_error)?;
        }
        if let Some(file) = &self.ca_file {
            let certs = CertificateDer::pem_file_iter(file)
                .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| config_error(format!("cannot read {}: {e}", file.display())))?;
            if certs.is_empty() {
                return Err(config_error(format!(
                    "{} holds no certificate",
                    file.display()
                )));
            }
            for cert in certs {
                roots.add(cert).map_err(config_error)?;
            }
        }
        if roots.is_empty() && !self.skip_verification {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                log::warn!("reading the system's trust store: {error}");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(config_error(
                    "no CA certificate given and none found in the system's trust store",
                ));
            }
        }
        Ok(roots)
    }
}

/// The name to verify a node's certificate against.
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned())
        .map_err(|e| config_error(format!("{name:?} cannot be a TLS server name: {e}")))
}

/// A verifier for the explicit opt-outs: with `chain`, the chain to a trusted root is verified
/// but any name is accepted (`check_hostname = False`); without, any certificate is accepted
/// (`verify_mode = CERT_NONE`: encrypted, not authenticated). The handshake signatures are
/// always checked, so the peer holds the certificate's key.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
