//! TLS set-up shared by the IMAP client: one crypto provider (ring) for the
//! whole process, the public web PKI roots, and an optional extra CA file for
//! servers behind a private CA.
//!
//! Everything builds on `ring`. If another provider were ever compiled in (a
//! dependency can pull in aws-lc-rs), rustls would refuse to pick one and
//! `ClientConfig::builder()` would panic; [`install_crypto_provider`] at start-up
//! and [`client_config`] (which names its provider explicitly) avoid that.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {}: {source}; check ca_file points to a readable PEM file", path.display())]
    ReadCa {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("CA file {} holds no PEM certificate; check ca_file points to the CA certificate, not a key", path.display())]
    EmptyCa { path: PathBuf },
    #[error("CA file {} holds a certificate rustls cannot use as a trust anchor: {source}", path.display())]
    BadCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{host:?} is not a valid TLS server name; check the host setting")]
    ServerName { host: String },
}

/// Installs ring as the process-wide default rustls provider. Safe to call
/// any number of times (tests call it from every test).
pub fn install_crypto_provider() {
    if CryptoProvider::get_default().is_none() {
        // Err means another thread won the race and installed one: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A client configuration trusting the web PKI roots plus, when given, every
/// certificate in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for cert in read_ca(path)? {
            roots.add(cert).map_err(|source| TlsError::BadCa {
                path: path.to_owned(),
                source,
            })?;
        }
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Reads every certificate of a PEM file; an empty file is an error because
/// it almost always means the wrong file was configured.
pub(crate) fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |source| TlsError::ReadCa {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(TlsError::EmptyCa {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The name the server certificate must match: a DNS name or an IP literal
/// (IPv6 in brackets is accepted, as people write it in URLs).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsError::ServerName {
        host: host.to_owned(),
    })
}

/// Whether `host` names this machine without asking DNS: `localhost` or a
/// loopback IP literal. Plain-text connections (`security = "none"`) are only
/// allowed to such hosts, so passwords never cross a network in clear.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") || bare.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn loopback_hosts() {
        let cases = [
            ("localhost", true),
            ("LOCALHOST", true),
            ("mail.localhost", true),
            ("127.0.0.1", true),
            ("127.1.2.3", true),
            ("::1", true),
            ("[::1]", true),
            ("10.0.0.1", false),
            ("imap.example.com", false),
            ("localhost.example.com", false),
            ("", false),
        ];
        for (host, want) in cases {
            assert_eq!(is_loopback_host(host), want, "{host}");
        }
    }

    #[test]
    fn server_names() {
        assert!(server_name("imap.example.com").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("bad host").is_err());
    }

    #[test]
    fn config_without_ca() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(client_config(None).is_ok());
    }

    #[test]
    fn missing_ca_file_is_named() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn empty_ca_file_is_an_error() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "not a certificate").unwrap();
        let err = client_config(Some(file.path())).unwrap_err();
        assert!(matches!(err, TlsError::EmptyCa { .. }), "{err}");
        assert!(err.to_string().contains(&file.path().display().to_string()));
    }

    #[test]
    fn generated_ca_is_accepted() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(ca.pem().as_bytes()).unwrap();
        assert!(client_config(Some(file.path())).is_ok());
        assert_eq!(read_ca(file.path()).unwrap().len(), 1);
    }
}
