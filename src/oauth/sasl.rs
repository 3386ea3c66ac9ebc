//! SASL XOAUTH2 and OAUTHBEARER (RFC 7628): the client's response and the
//! server's error challenge. Pure: no I/O, used by the IMAP and SMTP edges.
//!
//! After a refusal the server sends one more challenge, a base64 JSON object
//! (`{"status":"401","schemes":"bearer","scope":"…"}`), and waits: the client
//! answers with an empty response (OAUTHBEARER: a single `\x01`), and only
//! then does the tagged NO / `535` arrive.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::settings::SaslMechanism;

/// The mechanism's name on the wire.
pub(crate) fn mechanism_name(mechanism: SaslMechanism) -> &'static str {
    match mechanism {
        SaslMechanism::Xoauth2 => "XOAUTH2",
        SaslMechanism::Oauthbearer => "OAUTHBEARER",
    }
}

/// The client's first response, before base64.
pub fn initial_response(mechanism: SaslMechanism, user: &str, token: &str) -> Vec<u8> {
    match mechanism {
        SaslMechanism::Xoauth2 => format!("user={user}\x01auth=Bearer {token}\x01\x01"),
        // GS2 header: no channel binding, authzid = the user (`,` and `=`
        // escaped as RFC 5801 asks).
        SaslMechanism::Oauthbearer => format!(
            "n,a={},\x01auth=Bearer {token}\x01\x01",
            user.replace('=', "=3D").replace(',', "=2C")
        ),
    }
    .into_bytes()
}

/// What the client answers to the error challenge: XOAUTH2 an empty line,
/// OAUTHBEARER the `%x01` "dummy" response of RFC 7628 §3.2.3.
pub(crate) fn error_ack(mechanism: SaslMechanism) -> &'static [u8] {
    match mechanism {
        SaslMechanism::Xoauth2 => b"",
        SaslMechanism::Oauthbearer => b"\x01",
    }
}

/// Base64 of the initial response, as sent on the wire.
pub(crate) fn encoded_initial_response(
    mechanism: SaslMechanism,
    user: &str,
    token: &str,
) -> String {
    STANDARD.encode(initial_response(mechanism, user, token))
}

/// The longest SMTP command line (RFC 4954 §4: 512 octets including CRLF, as
/// RFC 5321 allows). A longer initial response goes in the two-step form.
pub(crate) const SMTP_LINE_LIMIT: usize = 512;

/// Whether `AUTH MECH <response>` fits on one SMTP command line.
pub(crate) fn fits_inline(mechanism: SaslMechanism, encoded: &str) -> bool {
    "AUTH ".len() + mechanism_name(mechanism).len() + 1 + encoded.len() + 2 <= SMTP_LINE_LIMIT
}

/// The server's JSON error challenge, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct ServerError {
    /// Google and Microsoft: `"400"`, `"401"`; RFC 7628: `"invalid_token"`,
    /// `"insufficient_scope"`, `"invalid_request"`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub schemes: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// What a refusal means for the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The token is expired or revoked: refresh once and retry.
    TokenRejected,
    /// A setting is wrong (scope, user, mechanism): retrying cannot help.
    Setting,
    /// The server said nothing useful.
    Unknown,
}

impl ServerError {
    /// Decodes a challenge given raw (as async-imap hands it over, already
    /// base64-decoded) or still in base64 (SMTP's `334` text).
    pub fn parse(challenge: &[u8]) -> Option<ServerError> {
        if let Ok(e) = serde_json::from_slice::<ServerError>(challenge) {
            return Some(e);
        }
        let trimmed = std::str::from_utf8(challenge).ok()?.trim();
        let raw = STANDARD.decode(trimmed).ok()?;
        serde_json::from_slice(&raw).ok()
    }

    pub fn refusal(&self) -> Refusal {
        match self.status.trim().to_ascii_lowercase().as_str() {
            "401" | "invalid_token" => Refusal::TokenRejected,
            "400" | "403" | "invalid_request" | "insufficient_scope" => Refusal::Setting,
            _ => Refusal::Unknown,
        }
    }

    /// One line for an error message: what the server said, what to check.
    /// Carries no token.
    pub fn describe(&self) -> String {
        let scope = self
            .scope
            .as_deref()
            .map(|s| format!(", the server wants scope {s:?}"))
            .unwrap_or_default();
        let meaning = match self.refusal() {
            Refusal::TokenRejected => {
                "the token is invalid or expired (check the token's audience, issuer and the mailbox it names)"
            }
            Refusal::Setting => {
                "a setting is wrong: check oauth2.scopes and the user name (imap.username / smtp.username)"
            }
            Refusal::Unknown => "no reason given",
        };
        format!("server status {:?}{scope}: {meaning}", self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_response_is_googles_format() {
        let raw = initial_response(SaslMechanism::Xoauth2, "privacy@example.com", "ya29.tok");
        assert_eq!(
            raw,
            b"user=privacy@example.com\x01auth=Bearer ya29.tok\x01\x01"
        );
        // Google's documented example.
        assert_eq!(
            encoded_initial_response(
                SaslMechanism::Xoauth2,
                "someuser@example.com",
                "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
            ),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    }

    #[test]
    fn oauthbearer_response_follows_rfc_7628() {
        let raw = initial_response(
            SaslMechanism::Oauthbearer,
            "user@example.com",
            "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
        );
        assert_eq!(
            raw,
            b"n,a=user@example.com,\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
        );
        let escaped = initial_response(SaslMechanism::Oauthbearer, "a,b=c", "t");
        assert!(escaped.starts_with(b"n,a=a=2Cb=3Dc,\x01"));
        assert_eq!(error_ack(SaslMechanism::Oauthbearer), b"\x01");
        assert_eq!(error_ack(SaslMechanism::Xoauth2), b"");
    }

    #[test]
    fn long_tokens_do_not_go_inline() {
        let short = encoded_initial_response(SaslMechanism::Xoauth2, "u@example.com", "t");
        assert!(fits_inline(SaslMechanism::Xoauth2, &short));
        let token = "x".repeat(8192);
        let long = encoded_initial_response(SaslMechanism::Xoauth2, "u@example.com", &token);
        assert!(!fits_inline(SaslMechanism::Xoauth2, &long));
        // The boundary: exactly 512 octets with CRLF fits.
        let edge = "A".repeat(SMTP_LINE_LIMIT - "AUTH XOAUTH2 ".len() - 2);
        assert!(fits_inline(SaslMechanism::Xoauth2, &edge));
        assert!(!fits_inline(SaslMechanism::Xoauth2, &format!("{edge}A")));
    }

    #[test]
    fn error_challenges_decode() {
        let google = br#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#;
        let e = ServerError::parse(google).unwrap();
        assert_eq!(e.refusal(), Refusal::TokenRejected);
        assert!(e.describe().contains("https://mail.google.com/"));
        let b64 = STANDARD.encode(br#"{"status":"400","schemes":"Bearer"}"#);
        let e = ServerError::parse(b64.as_bytes()).unwrap();
        assert_eq!(e.refusal(), Refusal::Setting);
        let rfc = ServerError::parse(br#"{"status":"invalid_token","scope":"mail"}"#).unwrap();
        assert_eq!(rfc.refusal(), Refusal::TokenRejected);
        assert_eq!(
            ServerError::parse(b"{}").unwrap().refusal(),
            Refusal::Unknown
        );
        assert!(ServerError::parse(b"not json").is_none());
        assert!(ServerError::parse(b"").is_none());
    }
}
