//! Signed JWT assertions (RS256, with ring) and reading a token's claims for
//! diagnostics.
//!
//! Two assertions are built here, fresh for every token request and in UTC:
//! - Google service account (RFC 7523 JWT bearer grant): `iss` = the service
//!   account, `sub` = the mailbox (domain-wide delegation), `scope`, `aud` =
//!   the token URL.
//! - Microsoft client certificate (RFC 7523 client assertion): `iss` = `sub` =
//!   the client ID, `aud` = the token URL, `x5t` = the certificate's SHA-1
//!   thumbprint (and `x5t#S256`).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::{Value, json};

/// Problems with a key or certificate. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JwtError {
    #[error(
        "{what} is not a PEM RSA private key (PKCS#8 \"BEGIN PRIVATE KEY\" or PKCS#1 \"BEGIN RSA PRIVATE KEY\")"
    )]
    Key { what: String },
    #[error("{what} holds no PEM certificate")]
    Certificate { what: String },
    #[error("signing the assertion failed")]
    Sign,
}

/// An RSA key that signs assertions.
pub(crate) struct Signer {
    key: RsaKeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(RSA)")
    }
}

impl Signer {
    /// From PEM text; `what` names the source in errors (a file, a JSON key).
    pub fn from_pem(pem: &[u8], what: &str) -> Result<Signer, JwtError> {
        let bad = || JwtError::Key {
            what: what.to_string(),
        };
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| bad())?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err(bad()),
        }
        .map_err(|_| bad())?;
        Ok(Signer { key })
    }

    /// `header.claims.signature`, each base64url without padding.
    pub fn sign(&self, header: &Value, claims: &Value) -> Result<String, JwtError> {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| JwtError::Sign)?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// The SHA-1 and SHA-256 thumbprints of the first certificate in `pem`
/// (base64url), for the `x5t` and `x5t#S256` headers Microsoft matches the
/// uploaded certificate by, and its `notAfter` when it can be read.
pub(crate) fn thumbprints(pem: &[u8], what: &str) -> Result<(String, String), JwtError> {
    let cert = CertificateDer::from_pem_slice(pem).map_err(|_| JwtError::Certificate {
        what: what.to_string(),
    })?;
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_ref());
    let sha256 = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    Ok((
        URL_SAFE_NO_PAD.encode(sha1.as_ref()),
        URL_SAFE_NO_PAD.encode(sha256.as_ref()),
    ))
}

/// When the first certificate in `pem` expires (X.509 `notAfter`), so that
/// `check` and the daemon can warn before Microsoft starts refusing it.
pub(crate) fn certificate_not_after(pem: &[u8]) -> Option<DateTime<Utc>> {
    let cert = CertificateDer::from_pem_slice(pem).ok()?;
    let (_, certificate, _) = der_tlv(cert.as_ref())?;
    let (_, mut tbs, _) = der_tlv(certificate)?;
    // [0] version (optional), serialNumber, signature, issuer, validity.
    let mut fields = Vec::new();
    while !tbs.is_empty() && fields.len() < 5 {
        let (tag, value, rest) = der_tlv(tbs)?;
        fields.push((tag, value));
        tbs = rest;
    }
    let skip = usize::from(fields.first()?.0 == 0xa0);
    let (tag, validity) = *fields.get(skip + 3)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, rest) = der_tlv(validity)?;
    let (tag, not_after, _) = der_tlv(rest)?;
    let text = std::str::from_utf8(not_after).ok()?;
    let full = match tag {
        // UTCTime: YYMMDDHHMMSSZ, years 1950-2049 (RFC 5280 §4.1.2.5.1).
        0x17 => {
            let yy: u32 = text.get(0..2)?.parse().ok()?;
            format!("{}{text}", if yy >= 50 { "19" } else { "20" })
        }
        0x18 => text.to_string(),
        _ => return None,
    };
    chrono::NaiveDateTime::parse_from_str(full.trim_end_matches('Z'), "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

/// One DER element: (tag, contents, what follows).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in input.get(2..2 + n)? {
            len = (len << 8) | usize::from(*b);
        }
        (len, 2 + n)
    };
    let value = input.get(header..header.checked_add(len)?)?;
    Some((tag, value, &input[header + len..]))
}

/// Google's service account key file (the fields used here).
#[derive(Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    #[serde(default)]
    pub token_uri: Option<String>,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

/// How long an assertion is valid (Google allows at most an hour).
const ASSERTION_LIFETIME_SECS: i64 = 600;

/// The JWT bearer assertion for a Google service account acting for `subject`.
pub(crate) fn google_assertion(
    sa: &ServiceAccount,
    signer: &Signer,
    subject: &str,
    scopes: &[String],
    token_url: &str,
    now: DateTime<Utc>,
) -> Result<String, JwtError> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = &sa.private_key_id {
        header["kid"] = json!(kid);
    }
    let iat = now.timestamp();
    let claims = json!({
        "iss": sa.client_email,
        "sub": subject,
        "scope": scopes.join(" "),
        "aud": token_url,
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME_SECS,
    });
    signer.sign(&header, &claims)
}

/// The client assertion for a Microsoft app registration with a certificate.
pub(crate) fn microsoft_assertion(
    client_id: &str,
    signer: &Signer,
    thumbprints: &(String, String),
    token_url: &str,
    now: DateTime<Utc>,
) -> Result<String, JwtError> {
    let header = json!({
        "alg": "RS256",
        "typ": "JWT",
        "x5t": thumbprints.0,
        "x5t#S256": thumbprints.1,
    });
    let iat = now.timestamp();
    let jti: [u8; 16] = rand::random();
    let claims = json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "jti": hex::encode(jti),
        "nbf": iat,
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME_SECS,
    });
    signer.sign(&header, &claims)
}

/// What a token's payload says, for diagnostics. Read without verifying the
/// signature (the server verifies); the token itself is never kept or shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub aud: Vec<String>,
    pub roles: Vec<String>,
    pub scp: Option<String>,
    /// Microsoft: the service principal's object ID.
    pub oid: Option<String>,
    pub tid: Option<String>,
    pub exp: Option<i64>,
}

/// Decodes the payload of a JWT access token; `None` for opaque tokens.
pub(crate) fn peek_claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let raw = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(payload))
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    let strings = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Some(Claims {
        aud: strings(v.get("aud")),
        roles: strings(v.get("roles")),
        scp: text("scp"),
        oid: text("oid"),
        tid: text("tid"),
        exp: v.get("exp").and_then(Value::as_i64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway 2048-bit RSA key made for these tests only (rcgen with
    /// ring cannot generate RSA keys).
    fn key_pem() -> Vec<u8> {
        include_bytes!("testdata/rsa-test-key.pem").to_vec()
    }

    #[test]
    fn assertions_are_signed_rs256_jwts() {
        let signer = Signer::from_pem(&key_pem(), "test key").unwrap();
        let sa = ServiceAccount {
            client_email: "mailroom@project.iam.gserviceaccount.com".into(),
            private_key: String::new(),
            private_key_id: Some("kid1".into()),
            token_uri: None,
        };
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let jwt = google_assertion(
            &sa,
            &signer,
            "privacy@example.com",
            &["https://mail.google.com/".into()],
            "https://oauth2.googleapis.com/token",
            now,
        )
        .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "kid1");
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "privacy@example.com");
        assert_eq!(claims["scope"], "https://mail.google.com/");
        assert_eq!(claims["exp"], 1_800_000_600);
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 256);
    }

    #[test]
    fn bad_keys_are_named_without_content() {
        let err = Signer::from_pem(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "/etc/k.pem",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/etc/k.pem") && !err.contains("AAAA"), "{err}");
        assert!(thumbprints(b"nothing", "c.pem").is_err());
    }

    #[test]
    fn certificate_expiry_is_read() {
        let mut params = rcgen::CertificateParams::new(vec!["privacy-mailroom".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let at = certificate_not_after(cert.pem().as_bytes()).unwrap();
        assert_eq!(at.format("%Y-%m-%d").to_string(), "2031-05-17");
        params.not_after = rcgen::date_time_ymd(2052, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        let at = certificate_not_after(cert.pem().as_bytes()).unwrap();
        assert_eq!(at.format("%Y-%m-%d").to_string(), "2052-01-02");
        assert!(certificate_not_after(b"not a certificate").is_none());
        assert!(der_tlv(&[0x30, 0x85, 1, 2, 3, 4, 5]).is_none());
        assert!(der_tlv(&[0x30, 0x05, 1]).is_none());
    }

    #[test]
    fn claims_are_read_for_diagnostics() {
        let payload = URL_SAFE_NO_PAD.encode(
            br#"{"aud":"https://outlook.office365.com","roles":["IMAP.AccessAsApp"],"oid":"o-1","exp":5}"#,
        );
        let c = peek_claims(&format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig")).unwrap();
        assert_eq!(c.aud, ["https://outlook.office365.com"]);
        assert_eq!(c.roles, ["IMAP.AccessAsApp"]);
        assert_eq!(c.oid.as_deref(), Some("o-1"));
        assert_eq!(c.exp, Some(5));
        assert!(peek_claims("opaque-token").is_none());
    }
}
