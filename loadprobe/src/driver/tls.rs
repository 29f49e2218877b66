//! The client side of HTTPS targets: one rustls configuration per run (trust, client
//! certificate, resumption), a handshake per connection, and what a failed handshake is
//! counted as. The crypto provider and the PEM files come from [`crate::tls_material`].

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::errors::{ErrorClass, TlsFailure};
use crate::tls_material::{self, PemError, certificates, private_key};

/// How the run speaks TLS to its target; [`super::DriverConfig::tls`].
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The name sent in SNI and checked against the certificate; `None`: the target's host.
    pub sni: Option<String>,
    pub trust: Trust,
    /// A client certificate chain and its key (PEM files), for servers that ask for one.
    pub identity: Option<Identity>,
    /// Resume sessions from one store shared by all connections; off, every connection is a
    /// new client with a full handshake.
    pub resume: bool,
}

/// Which server certificates are accepted.
#[derive(Debug, Clone, Default)]
pub enum Trust {
    /// The system's root certificates.
    #[default]
    System,
    /// The CA certificates in this PEM file.
    CaFile(PathBuf),
    /// These certificates as roots (the embedded server's own, for `run --tls`).
    Roots(Vec<CertificateDer<'static>>),
    /// Any certificate, valid or not (`--insecure`); signatures are still checked.
    Insecure,
}

/// Client certificate files (PEM).
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why the TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("no system root certificates found; give --cacert FILE (or --insecure)")]
    NoSystemRoots,
    #[error("the certificates of {path} are not usable as roots")]
    BadRoots {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{name:?} is not a valid server name for SNI")]
    ServerName { name: String },
    #[error("the TLS configuration is refused")]
    Rustls(#[source] rustls::Error),
}

/// What one handshake negotiated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handshake {
    pub took: Duration,
    pub resumed: bool,
    /// rustls' names: `TLSv1_3`, `TLS13_AES_128_GCM_SHA256`.
    pub version: &'static str,
    pub suite: &'static str,
}

/// The run's TLS client: built once, shared by every connection.
pub(crate) struct TlsClient {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl TlsClient {
    /// `host` is the target's host (a name or an IP literal without brackets).
    pub(crate) fn new(options: &TlsOptions, host: &str) -> Result<TlsClient, TlsConfigError> {
        let provider = tls_material::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsConfigError::Rustls)?;
        let builder = match &options.trust {
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                    provider.signature_verification_algorithms,
                ))),
            trust => {
                let roots = roots(trust)?;
                let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsConfigError::Rustls(rustls::Error::General(e.to_string())))?;
                builder.with_webpki_verifier(verifier)
            }
        };
        let mut config = match &options.identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(certificates(&id.cert)?, private_key(&id.key)?)
                .map_err(TlsConfigError::Rustls)?,
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // The default store holds 256 sessions, far more than the one server needs.
        config.resumption = if options.resume {
            Resumption::default()
        } else {
            Resumption::disabled()
        };
        let sni = options.sni.as_deref().unwrap_or(host);
        let name =
            ServerName::try_from(sni.to_string()).map_err(|_| TlsConfigError::ServerName {
                name: sni.to_string(),
            })?;
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// The handshake on a connected socket; the error keeps rustls' own (see [`classify`]).
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
    ) -> io::Result<(TlsStream<TcpStream>, Handshake)> {
        let start = Instant::now();
        let stream = self.connector.connect(self.name.clone(), tcp).await?;
        let took = start.elapsed();
        let conn = stream.get_ref().1;
        let handshake = Handshake {
            took,
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            version: conn
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("unknown"),
            suite: conn
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str())
                .unwrap_or("unknown"),
        };
        Ok((stream, handshake))
    }
}

fn roots(trust: &Trust) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut store = RootCertStore::empty();
    match trust {
        Trust::System => {
            // Unreadable entries are skipped: one bad file in /etc/ssl/certs is no reason to
            // refuse the others.
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(TlsConfigError::NoSystemRoots);
            }
        }
        Trust::CaFile(path) => {
            for cert in certificates(path)? {
                store.add(cert).map_err(|source| TlsConfigError::BadRoots {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        Trust::Roots(certs) => {
            for cert in certs {
                store.add(cert.clone()).map_err(TlsConfigError::Rustls)?;
            }
        }
        Trust::Insecure => {}
    }
    Ok(Arc::new(store))
}

/// What a failed read or write of a connection is counted as: the TLS failure when rustls
/// raised it (a handshake refused, or an alert after it: a TLS 1.3 server refuses a client
/// certificate on the first read), the errno otherwise.
pub(crate) fn classify(e: &io::Error) -> ErrorClass {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return ErrorClass::from_io(e);
    };
    ErrorClass::Tls(failure(tls))
}

fn failure(e: &rustls::Error) -> TlsFailure {
    use rustls::{AlertDescription as Alert, Error, InvalidMessage, PeerIncompatible};
    match e {
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => TlsFailure::UnknownCa,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::NameMismatch
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsFailure::Expired,
            _ => TlsFailure::Handshake,
        },
        Error::AlertReceived(Alert::ProtocolVersion)
        | Error::PeerIncompatible(
            PeerIncompatible::ServerDoesNotSupportTls12Or13
            | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::Tls13RequiredForQuic,
        ) => TlsFailure::ProtocolVersion,
        // The first bytes back were no TLS record: "HTTP/1.1 400" is content type 0x48.
        Error::InvalidMessage(InvalidMessage::InvalidContentType) => TlsFailure::PlainHttp,
        _ => TlsFailure::Handshake,
    }
}

/// `--insecure`: accepts any certificate for any name, but still checks that the server holds
/// the key of the certificate it showed (the handshake signatures).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified() {
        use rustls::Error;
        let cases = [
            (
                Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "tls_unknown_ca",
            ),
            (
                Error::InvalidCertificate(CertificateError::NotValidForName),
                "tls_name_mismatch",
            ),
            (
                Error::InvalidCertificate(CertificateError::Expired),
                "tls_expired",
            ),
            (
                Error::AlertReceived(rustls::AlertDescription::ProtocolVersion),
                "tls_protocol_version",
            ),
            (
                Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                "tls_plain_http_server",
            ),
            (
                Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
                "tls_handshake",
            ),
        ];
        for (e, name) in cases {
            let io = io::Error::new(io::ErrorKind::InvalidData, e);
            assert_eq!(classify(&io).name(), name);
        }
        // Not a TLS error: its errno, as on the plain path.
        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
        assert_eq!(classify(&reset).name(), "ECONNRESET");
    }

    #[test]
    fn configuration_is_checked() {
        let options = TlsOptions {
            trust: Trust::Insecure,
            ..TlsOptions::default()
        };
        assert!(TlsClient::new(&options, "example.test").is_ok());
        assert!(TlsClient::new(&options, "127.0.0.1").is_ok());
        let bad_sni = TlsOptions {
            sni: Some("not a name".into()),
            ..options.clone()
        };
        assert!(matches!(
            TlsClient::new(&bad_sni, "x"),
            Err(TlsConfigError::ServerName { .. })
        ));
        let missing = TlsOptions {
            trust: Trust::CaFile("/nonexistent/ca.pem".into()),
            ..options.clone()
        };
        assert!(matches!(
            TlsClient::new(&missing, "x"),
            Err(TlsConfigError::Pem(PemError::Read { .. }))
        ));
        let empty =
            std::env::temp_dir().join(format!("loadprobe-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let none = TlsOptions {
            trust: Trust::CaFile(empty.clone()),
            ..options
        };
        let result = TlsClient::new(&none, "x");
        let _ = std::fs::remove_file(&empty);
        assert!(matches!(
            result,
            Err(TlsConfigError::Pem(PemError::NoCertificate { .. }))
        ));
    }
}
