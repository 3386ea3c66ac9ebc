//! Test certificates and the test client's TLS configuration.
//!
//! webpki refuses a self-signed leaf as its own trust anchor, so the servers
//! get a leaf (`localhost`, `127.0.0.1`) signed by a throw-away CA, and clients
//! trust only that CA.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// Installs ring as the process-wide rustls provider (once; later calls and a
/// provider installed by someone else are fine).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`.
pub fn write_certificates(dir: &Path) -> anyhow::Result<()> {
    let ca_key = KeyPair::generate().context("generate the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "privacy-mailroom test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).context("self-sign the CA")?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate().context("generate the server key")?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .context("server certificate parameters")?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .context("sign the server certificate")?;

    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).context("write ca.pem")?;
    std::fs::write(dir.join("cert.pem"), leaf_cert.pem()).context("write cert.pem")?;
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).context("write key.pem")?;
    Ok(())
}

/// A client configuration that trusts exactly the CA in `ca_pem`.
pub fn client_config(ca_pem: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)
        .with_context(|| format!("read {}", ca_pem.display()))?
    {
        roots
            .add(cert.context("parse the CA certificate")?)
            .context("add the CA certificate")?;
    }
    client_config_with_roots(roots)
}

/// A client configuration that trusts only the public web roots — the test
/// CA is unknown to it, so handshakes with the test servers must fail.
pub fn client_config_without_ca() -> anyhow::Result<Arc<ClientConfig>> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    client_config_with_roots(roots)
}

fn client_config_with_roots(roots: rustls::RootCertStore) -> anyhow::Result<Arc<ClientConfig>> {
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}
