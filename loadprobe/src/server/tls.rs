//! The embedded server's TLS configuration: a self-signed certificate made in memory (so that
//! HTTPS works on a bare machine), or the user's certificate and key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the server's TLS configuration cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    #[error("cannot make a self-signed certificate")]
    Generate(#[source] rcgen::Error),
    #[error("cannot read PEM file {path}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
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
    fn pem(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> ServerTlsError + '_ {
        move |source| ServerTlsError::Pem {
            path: path.to_path_buf(),
            source,
        }
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    let certificate = chain.first().cloned().ok_or(ServerTlsError::Pem {
        path: cert.to_path_buf(),
        source: rustls::pki_types::pem::Error::NoItemsFound,
    })?;
    Ok(ServerTls {
        config: config(chain, key)?,
        certificate,
    })
}

fn config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, ServerTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerTlsError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(ServerTlsError::Rustls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless tickets: resumption works for any number of clients, with no server cache to
    // evict them from.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(ServerTlsError::Rustls)?;
    Ok(Arc::new(config))
}
