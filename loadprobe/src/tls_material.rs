//! What both ends of HTTPS take from one place: the crypto provider, and certificates and keys
//! read from PEM files. The run's client (`driver`) and the embedded server (`server`) so read
//! files alike, say the same about a bad one, and agree on the crypto.
//!
//! The crypto provider is *ring*: it builds with a C compiler alone, where aws-lc-rs needs
//! cmake and a much longer C build, and it offers the suites servers negotiate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ProducesTickets;

/// Why a PEM file gives no certificate or key.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read PEM file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no private key")]
    NoKey { path: PathBuf },
}

/// The crypto provider of every TLS configuration of the crate.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's issuer of stateless session tickets, with [`provider`]'s crypto.
pub fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    rustls::crypto::ring::Ticketer::new()
}

/// The certificates of a PEM file, in its order (a chain: the end entity first); at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let read = |source| PemError::Read {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        pem::Error::NoItemsFound => PemError::NoKey {
            path: path.to_path_buf(),
        },
        source => PemError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_told_apart() {
        let missing = Path::new("/nonexistent/loadprobe.pem");
        assert!(matches!(certificates(missing), Err(PemError::Read { .. })));
        assert!(matches!(private_key(missing), Err(PemError::Read { .. })));
        let empty =
            std::env::temp_dir().join(format!("loadprobe-pem-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "no PEM here\n").unwrap();
        let (certs, key) = (certificates(&empty), private_key(&empty));
        let _ = std::fs::remove_file(&empty);
        assert!(
            matches!(certs, Err(PemError::NoCertificate { .. })),
            "{certs:?}"
        );
        assert!(matches!(key, Err(PemError::NoKey { .. })), "{key:?}");
    }
}
