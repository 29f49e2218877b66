//! The embedded server's TLS configuration: a self-signed certificate made in memory (so that
//! HTTPS works on a bare machine), or the user's certificate and key.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::tls_material::{self, PemError};

/// Why the server's TLS configuration cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    #[error("cannot make a self-signed certificate")]
    Generate(#[source] rcgen::Error),
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("the certificate and key are refused")]
    Rustls(#[source] rustls::Error),
}

/// A server configuration and the certificate it shows, for a client to trust.
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub certificate: CertificateDer<'static>,
}

/// The names a self-signed certificate is valid for: what a client on this host may call it.
pub const SELF_SIGNED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A fresh self-signed certificate for [`SELF_SIGNED_NAMES`], its key kept in memory only.
pub fn self_signed() -> Result<ServerTls, ServerTlsError> {
    let names = SELF_SIGNED_NAMES.map(String::from).to_vec();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).map_err(ServerTlsError::Generate)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let certificate = cert.der().clone();
    Ok(ServerTls {
        config: config(vec![certificate.clone()], key)?,
        certificate,
    })
}

/// The certificate chain and key in these PEM files.
pub fn from_files(cert: &Path, key: &Path) -> Result<ServerTls, ServerTlsError> {
    let chain = tls_material::certificates(cert)?;
    let key = tls_material::private_key(key)?;
    // `certificates` returns at least one.
    let certificate = chain[0].clone();
    Ok(ServerTls {
        config: config(chain, key)?,
        certificate,
    })
}

fn config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, ServerTlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(tls_material::provider())
        .with_safe_default_protocol_versions()
        .map_err(ServerTlsError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(ServerTlsError::Rustls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless tickets: resumption works for any number of clients, with no server cache to
    // evict them from.
    config.ticketer = tls_material::ticketer().map_err(ServerTlsError::Rustls)?;
    Ok(Arc::new(config))
}
