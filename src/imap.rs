//! The IMAP edge: one logged-in session to the privacy mailbox.
//!
//! Everything here works by UID: the cursor kept in the store is
//! UIDVALIDITY + last UID, so listing, fetching and moving all take UIDs.
//! Bodies are fetched with `BODY.PEEK[]` so the daemon never marks mail as
//! read behind the team's back.
//!
//! Any error leaves the session in an unknown state: the caller drops the
//! [`Imap`] and reconnects (with backoff). Parts:
//! - `stream`: TCP/TLS with read and write timeouts,
//! - `connect`: TLS / STARTTLS / loopback-only plain text, login, capabilities,
//! - `session`: mailboxes, listing, fetching, moving, appending,
//! - `idle`: IDLE with cancellation, and the polling fallback.

mod connect;
mod header;
mod idle;
mod session;
mod stream;
mod structure;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::tls::TlsError;

pub use connect::Login;
pub use idle::IdleOutcome;
pub use structure::LargestPart;

/// IDLE is re-issued at least this often (RFC 2177 says servers may drop an
/// IDLE after 30 minutes); longer waits passed to [`Imap::idle_wait`] are clamped.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(25 * 60);

/// How long a read or write may stall outside IDLE before the connection is
/// considered dead.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// Timeout for TCP connect and the TLS handshake.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// UIDs per FETCH command: keeps memory and command lines bounded.
pub(crate) const FETCH_BATCH: usize = 50;

/// A logged-in IMAP session (see the module docs).
pub struct Imap {
    session: Option<connect::Session>,
    host: String,
    port: u16,
    caps: Caps,
    /// Tests turn MOVE off to exercise the COPY fallback.
    use_move: bool,
    /// An EXISTS arrived while doing something else: the next
    /// [`Imap::idle_wait`] returns at once.
    new_data_pending: bool,
    /// Logged in with an OAuth token: when the session must be renewed
    /// (servers end it when the token expires).
    renew_at: Option<DateTime<Utc>>,
    /// The Sent folder found by [`Imap::resolve_sent`].
    sent_folder: Option<String>,
}

impl std::fmt::Debug for Imap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("caps", &self.caps)
            .field("connected", &self.session.is_some())
            .finish()
    }
}

/// The capabilities this client cares about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Caps {
    pub(crate) mv: bool,
    pub(crate) idle: bool,
    pub(crate) uidplus: bool,
}

/// What SELECT tells the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectInfo {
    /// A change means every stored UID of this mailbox is meaningless.
    pub uid_validity: u32,
    pub uid_next: Option<u32>,
    pub exists: u32,
}

/// A message found by [`Imap::list_new`], before its body is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub uid: u32,
    /// RFC822.SIZE: check it against the size limit before fetching.
    pub size: Option<u32>,
    /// When the server received the message (INTERNALDATE).
    pub internal_date: Option<DateTime<Utc>>,
}

/// Errors of the IMAP edge. Each names the server and says what to check.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error(
        "imap.security = \"none\" sends the password in clear and is only allowed for loopback hosts, not {host}; use \"tls\" or \"starttls\""
    )]
    PlainRefused { host: String },
    #[error(transparent)]
    TlsConfig(#[from] TlsError),
    #[error(
        "cannot connect to IMAP server {host}:{port} using {security}: {source}; check imap.host, imap.port and imap.security"
    )]
    Connect {
        host: String,
        port: u16,
        security: &'static str,
        source: std::io::Error,
    },
    #[error(
        "TLS handshake with IMAP server {host}:{port} failed: {source}; if the server uses a private CA, set imap.ca_file to its certificate"
    )]
    Handshake {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error(
        "IMAP server {host}:{port} did not greet properly ({detail}); check imap.port and imap.security (993 is usually \"tls\", 143 \"starttls\")"
    )]
    Greeting {
        host: String,
        port: u16,
        detail: String,
    },
    #[error(
        "IMAP server {host}:{port} refused STARTTLS: {source}; use imap.security = \"tls\" (usually port 993) if the server offers implicit TLS"
    )]
    StartTls {
        host: String,
        port: u16,
        source: async_imap::error::Error,
    },
    #[error(
        "IMAP login failed for the configured username at {host}:{port}: {source}; check imap.username and imap.password (or password_file / password_env)"
    )]
    Login {
        host: String,
        port: u16,
        source: async_imap::error::Error,
    },
    /// No token could be had (endpoint down, client refused, re-authorization needed).
    #[error("IMAP login with OAuth: {0}")]
    Token(#[from] crate::oauth::OAuthError),
    #[error(
        "IMAP server {host}:{port} refused AUTHENTICATE {mechanism} for the configured username ({server}){advice}"
    )]
    TokenRefused {
        host: String,
        port: u16,
        mechanism: &'static str,
        /// The tagged answer and the decoded JSON challenge; never the token.
        server: String,
        /// `; fix: …`, from the provider and the token's claims.
        advice: String,
    },
    #[error("IMAP server {host}:{port}: {what} failed: {source}")]
    Command {
        host: String,
        port: u16,
        what: String,
        source: async_imap::error::Error,
    },
    #[error(
        "IMAP server {host}:{port} did not answer {what} in time; the connection will be re-established"
    )]
    Timeout {
        host: String,
        port: u16,
        what: String,
    },
    #[error(
        "IMAP server {host}:{port} returned no UIDVALIDITY for mailbox {mailbox:?}; the daemon cannot track messages there"
    )]
    NoUidValidity {
        host: String,
        port: u16,
        mailbox: String,
    },
    #[error(
        "IMAP server {host}:{port} supports neither MOVE nor UIDPLUS, so messages cannot be filed without risking others' mail; use a server with one of them"
    )]
    CannotMove { host: String, port: u16 },
    /// The caller falls back to polling with [`Imap::noop`].
    #[error("IMAP server {host}:{port} does not support IDLE; polling instead")]
    NoIdle { host: String, port: u16 },
    #[error("the connection to IMAP server {host}:{port} was lost; reconnecting")]
    Disconnected { host: String, port: u16 },
}

impl ImapError {
    /// The server answered this one command NO or BAD (a quota, a size
    /// limit): the session is still usable, only the command failed.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            ImapError::Command {
                source: async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_),
                ..
            }
        )
    }
}

impl Imap {
    /// Whether the server offers MOVE (RFC 6851).
    pub fn has_move(&self) -> bool {
        self.caps.mv
    }

    /// Whether the server offers IDLE (RFC 2177).
    pub fn has_idle(&self) -> bool {
        self.caps.idle
    }

    /// Whether the server offers UIDPLUS (RFC 4315), needed for UID EXPUNGE.
    pub fn has_uidplus(&self) -> bool {
        self.caps.uidplus
    }

    /// Turns the use of MOVE on or off. Tests turn it off to exercise the
    /// COPY + `\Deleted` + UID EXPUNGE path; it is also a workaround for a
    /// server whose MOVE misbehaves.
    pub fn set_use_move(&mut self, enabled: bool) {
        self.use_move = enabled;
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// When this session's OAuth token nears its expiry: the daemon logs out
    /// and in again with a fresh token before then. `None` for passwords.
    pub(crate) fn renew_at(&self) -> Option<DateTime<Utc>> {
        self.renew_at
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn err_command(&self, what: impl Into<String>, source: async_imap::error::Error) -> ImapError {
        let what = what.into();
        if let async_imap::error::Error::Io(io) = &source
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return ImapError::Timeout {
                host: self.host.clone(),
                port: self.port,
                what,
            };
        }
        ImapError::Command {
            host: self.host.clone(),
            port: self.port,
            what,
            source,
        }
    }

    fn err_disconnected(&self) -> ImapError {
        ImapError::Disconnected {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// A compact UID set for a command line: sorted, de-duplicated, with runs
/// written as ranges (`1:5,7,9:12`). Empty input gives an empty string.
pub(crate) fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter
            .peek()
            .is_some_and(|&next| Some(next) == end.checked_add(1))
        {
            end = iter.next().unwrap_or(end);
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
    }
    out
}

/// Encodes a mailbox name in IMAP's modified UTF-7 (RFC 3501 §5.1.3), so a
/// folder configured as "Erledigt/Geprüft" reaches the server as it expects.
pub(crate) fn encode_mailbox_name(name: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
    fn flush(out: &mut String, units: &mut Vec<u16>) {
        if units.is_empty() {
            return;
        }
        let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let sextets = chunk.len() + 1;
            for i in 0..sextets {
                let idx = (n >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[idx as usize]));
            }
        }
        out.push('-');
        units.clear();
    }
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut out, &mut pending);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut out, &mut pending);
    out
}

/// Decodes a mailbox name as the server lists it (modified UTF-7), the
/// inverse of [`encode_mailbox_name`]. A malformed run is kept as it is.
pub(crate) fn decode_mailbox_name(name: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('-') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let run = &after[..end];
        if run.is_empty() {
            out.push('&');
        } else {
            let mut bits = 0u32;
            let mut nbits = 0;
            let mut bytes = Vec::new();
            let mut ok = true;
            for b in run.bytes() {
                let Some(v) = ALPHABET.iter().position(|&a| a == b) else {
                    ok = false;
                    break;
                };
                bits = (bits << 6) | v as u32;
                nbits += 6;
                if nbits >= 8 {
                    nbits -= 8;
                    bytes.push((bits >> nbits) as u8);
                    bits &= (1 << nbits) - 1;
                }
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            match String::from_utf16(&units) {
                Ok(text) if ok => out.push_str(&text),
                _ => {
                    out.push('&');
                    out.push_str(run);
                    out.push('-');
                }
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_names_decode() {
        for name in [
            "INBOX",
            "Tom & Jerry",
            "Geprüft",
            "~peter/mail/台北/日本語",
            "[Gmail]/Sent Mail",
            "Gesendete Elemente",
        ] {
            assert_eq!(decode_mailbox_name(&encode_mailbox_name(name)), name);
        }
        assert_eq!(decode_mailbox_name("broken&"), "broken&");
    }

    #[test]
    fn uid_sets() {
        let cases: &[(&[u32], &str)] = &[
            (&[], ""),
            (&[7], "7"),
            (&[1, 2, 3, 4, 5], "1:5"),
            (&[1, 2, 3, 4, 5, 7, 9, 10, 11, 12], "1:5,7,9:12"),
            (&[12, 9, 3, 1, 2, 11, 10, 5, 4, 7, 3], "1:5,7,9:12"),
            (&[u32::MAX - 1, u32::MAX], "4294967294:4294967295"),
            (&[2, 4, 6], "2,4,6"),
        ];
        for (uids, want) in cases {
            assert_eq!(uid_set(uids), *want, "{uids:?}");
        }
    }

    #[test]
    fn mailbox_names() {
        let cases = [
            ("INBOX", "INBOX"),
            ("Processed", "Processed"),
            ("Tom & Jerry", "Tom &- Jerry"),
            ("Geprüft", "Gepr&APw-ft"),
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("Entwürfe", "Entw&APw-rfe"),
        ];
        for (name, want) in cases {
            assert_eq!(encode_mailbox_name(name), want, "{name}");
        }
    }
}
