//! Delivering composed messages over SMTP with lettre.
//!
//! Up to `smtp.connections` connections deliver at once (a burst's replies
//! at the MTA's pace rather than one round trip at a time). Each is kept open
//! and reused for up to `max_messages_per_connection` messages, then closed
//! with QUIT and a new one opened: real servers refuse more per connection
//! (OpenSMTPD answers `452 Too many messages sent` after 100), and lettre's
//! pool has no such cap. A connection is opened only when every open one is
//! busy, so mail sent one at a time keeps using a single connection. The
//! connection is driven through lettre's `AsyncSmtpConnection`, so that every
//! problem before MAIL FROM (connect, TLS, STARTTLS, AUTH) counts as transient
//! — a wrong password must not fail every queued reply for good — and only the
//! server's 5xx verdict on a message makes it permanent.
//!
//! STARTTLS is always required when configured (never "opportunistic", which
//! would silently fall back to plain text), and plain text is only allowed to
//! a loopback relay.

use std::time::Duration;

use lettre::address::{Address, Envelope};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::config::{SaslMechanism, Security, SmtpConfig};
use crate::oauth::sasl::{self, Refusal, ServerError};
use crate::oauth::{AccessToken, OAuthError, TokenProvider};
use crate::tls::{self, TlsError};

/// Timeout for connect, TLS, EHLO, AUTH, NOOP and QUIT.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout for one whole MAIL/RCPT/DATA transaction.
const SEND_TIMEOUT: Duration = Duration::from_secs(300);
/// A connection idle for longer is checked with NOOP before reuse (servers
/// drop idle clients after a few minutes).
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(30);

/// Problems setting up or reaching the SMTP server. In [`SmtpSender::send_raw`]
/// all of these become [`SendError::Unreachable`].
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error(
        "smtp.security = \"none\" sends mail and password in clear and is only allowed for loopback hosts, not {host}; use \"tls\" or \"starttls\""
    )]
    PlainRefused { host: String },
    #[error(transparent)]
    Ca(#[from] TlsError),
    #[error("cannot set up TLS for SMTP server {host}: {source}")]
    TlsSetup {
        host: String,
        source: lettre::transport::smtp::Error,
    },
    #[error(
        "smtp.username is set but no password is configured; set smtp.password, password_file or password_env"
    )]
    MissingPassword,
    #[error(
        "cannot connect to SMTP server {host}:{port} using {security}: {source}; check smtp.host, smtp.port and smtp.security (and smtp.ca_file if the server uses a private CA)"
    )]
    Connect {
        host: String,
        port: u16,
        security: &'static str,
        source: lettre::transport::smtp::Error,
    },
    #[error(
        "cannot connect to SMTP server {host}:{port} using {security}: {source}; check smtp.host, smtp.port and smtp.security (and smtp.ca_file if the server uses a private CA)"
    )]
    Socket {
        host: String,
        port: u16,
        security: &'static str,
        source: std::io::Error,
    },
    #[error(
        "SMTP server {host}:{port} does not offer STARTTLS; use smtp.security = \"tls\" (usually port 465) or a server that supports STARTTLS"
    )]
    NoStartTls { host: String, port: u16 },
    #[error(
        "SMTP login failed for the configured username at {host}:{port}: {source}; check smtp.username and smtp.password (or password_file / password_env)"
    )]
    Auth {
        host: String,
        port: u16,
        source: lettre::transport::smtp::Error,
    },
    /// No token could be had for `smtp.auth = "oauth2"`.
    #[error("SMTP login with OAuth: {0}")]
    Token(#[from] OAuthError),
    /// `smtp.auth = "oauth2"` never falls back to a password mechanism.
    #[error(
        "SMTP server {host}:{port} does not offer AUTH {mechanism}; fix: enable OAuth for SMTP AUTH on the server (Microsoft 365: SMTP AUTH for the mailbox), or set oauth2.mechanism to one it offers"
    )]
    MechanismNotOffered {
        host: String,
        port: u16,
        mechanism: &'static str,
    },
    #[error(
        "SMTP server {host}:{port} refused AUTH {mechanism} for the configured username ({server}){advice}"
    )]
    TokenRefused {
        host: String,
        port: u16,
        mechanism: &'static str,
        /// The server's answer and the decoded JSON challenge; never the token.
        server: String,
        advice: String,
    },
    #[error("SMTP server {host}:{port} did not answer {what} within {secs} s")]
    Timeout {
        host: String,
        port: u16,
        what: &'static str,
        secs: u64,
    },
}

/// The verdict on one message, for the outbox's retry logic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// 4xx, a connection lost during the transfer, timeouts: retry later.
    #[error("temporary SMTP failure: {0}")]
    Transient(String),
    /// No session could be set up (connect, TLS, EHLO, AUTH): the server is
    /// down or misconfigured, so every other mail would fail the same way.
    /// Retried later, like [`SendError::Transient`], but the outbox treats it
    /// as one outage rather than one failure per mail.
    #[error("SMTP server unreachable: {0}")]
    Unreachable(String),
    /// 5xx or an unusable address: retrying cannot help.
    #[error("permanent SMTP failure: {0}")]
    Permanent(String),
}

impl SendError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Permanent(_))
    }
}

/// `smtp.auth = "oauth2"`: who logs in, with tokens from where.
struct OAuthLogin {
    provider: TokenProvider,
    user: String,
}

/// An open connection and how much it has been used.
struct Open {
    conn: AsyncSmtpConnection,
    sent: u32,
    last_used: Instant,
}

/// Sends raw messages over up to `smtp.connections` reused SMTP connections
/// (see the module docs). Shareable: each send borrows one connection.
pub struct SmtpSender {
    host: String,
    port: u16,
    security: Security,
    tls: Option<TlsParameters>,
    /// Implicit TLS (port 465) is set up here, on our own socket.
    implicit_tls: Option<tokio_rustls::TlsConnector>,
    credentials: Option<Credentials>,
    oauth: Option<OAuthLogin>,
    /// Why the last connection attempt failed; cleared by the next success.
    problem: std::sync::Mutex<Option<String>>,
    max_per_connection: u32,
    hello: ClientId,
    /// One permit per connection that may be in use at once.
    slots: Semaphore,
    connections: usize,
    /// Open connections not in use, the most recently used last.
    idle: std::sync::Mutex<Vec<Open>>,
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSender")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("auth", &self.credentials.is_some())
            .field("oauth", &self.oauth.is_some())
            .field("max_per_connection", &self.max_per_connection)
            .field("connections", &self.connections)
            .finish()
    }
}

fn security_label(security: Security) -> &'static str {
    match security {
        Security::Tls => "TLS",
        Security::Starttls => "STARTTLS",
        Security::None => "plain text",
    }
}

impl SmtpSender {
    /// Validates the settings and prepares TLS; does not connect (see
    /// [`SmtpSender::test_connection`]). `password` is the resolved secret.
    pub fn new(cfg: &SmtpConfig, password: Option<&str>) -> Result<Self, SmtpError> {
        let host = cfg.host.clone();
        if cfg.security == Security::None && !tls::is_loopback_host(&host) {
            return Err(SmtpError::PlainRefused { host });
        }
        let tls = match cfg.security {
            Security::None => None,
            Security::Tls | Security::Starttls => {
                let mut builder = TlsParameters::builder(host.clone());
                if let Some(path) = cfg.ca_file.as_deref() {
                    for der in tls::read_ca(path)? {
                        let cert = Certificate::from_der(der.to_vec())
                            .map_err(|source| tls_setup(&host, source))?;
                        builder = builder.add_root_certificate(cert);
                    }
                }
                Some(
                    builder
                        .build_rustls()
                        .map_err(|source| tls_setup(&host, source))?,
                )
            }
        };
        let implicit_tls = match cfg.security {
            Security::Tls => Some(tokio_rustls::TlsConnector::from(tls::client_config(
                cfg.ca_file.as_deref(),
            )?)),
            Security::Starttls | Security::None => None,
        };
        let connections = usize::try_from(cfg.connections.max(1)).unwrap_or(1);
        let credentials = match (&cfg.username, password) {
            (Some(user), Some(pass)) => Some(Credentials::new(user.clone(), pass.to_owned())),
            (Some(_), None) => return Err(SmtpError::MissingPassword),
            (None, _) => None,
        };
        Ok(SmtpSender {
            host,
            port: cfg.port,
            security: cfg.security,
            tls,
            implicit_tls,
            credentials,
            oauth: None,
            problem: std::sync::Mutex::new(None),
            max_per_connection: cfg.max_messages_per_connection.max(1),
            hello: ClientId::default(),
            slots: Semaphore::new(connections),
            connections,
            idle: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// For `smtp.auth = "oauth2"`: logs in as `user` with tokens from
    /// `provider`, over `oauth2.mechanism` only (never PLAIN or LOGIN).
    pub(crate) fn with_oauth(
        cfg: &SmtpConfig,
        provider: TokenProvider,
        user: String,
    ) -> Result<Self, SmtpError> {
        let mut sender = SmtpSender::new(
            &SmtpConfig {
                username: None,
                ..cfg.clone()
            },
            None,
        )?;
        sender.oauth = Some(OAuthLogin { provider, user });
        Ok(sender)
    }

    /// Connects, secures, logs in and quits: for `check`.
    pub async fn test_connection(&self) -> Result<(), SmtpError> {
        let mut conn = self.connect().await?;
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, conn.quit()).await;
        Ok(())
    }

    /// Delivers `raw` (from [`super::compose::compose`]) to `to` with
    /// `envelope_from` as the return path (addresses, or `Name <address>`).
    pub async fn send_raw(
        &self,
        envelope_from: &str,
        to: &[&str],
        raw: &[u8],
    ) -> Result<(), SendError> {
        let envelope = envelope(envelope_from, to)?;
        // The semaphore is never closed; a closed one would only mean no limit.
        let _slot = self.slots.acquire().await.ok();
        let mut idle = self.take_idle();
        if let Some(open) = idle.as_mut()
            && !self.reusable(open).await
            && let Some(mut old) = idle.take()
        {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, old.conn.quit()).await;
        }
        let mut open = match idle {
            Some(open) => open,
            None => {
                let connected = self.connect().await;
                self.set_problem(connected.as_ref().err().map(ToString::to_string));
                let conn = connected.map_err(|e| SendError::Unreachable(e.to_string()))?;
                Open {
                    conn,
                    sent: 0,
                    last_used: Instant::now(),
                }
            }
        };

        let result = tokio::time::timeout(SEND_TIMEOUT, open.conn.send(&envelope, raw)).await;
        open.last_used = Instant::now();
        match result {
            Ok(Ok(_response)) => {
                open.sent += 1;
                if open.sent >= self.max_per_connection {
                    let _ = tokio::time::timeout(COMMAND_TIMEOUT, open.conn.quit()).await;
                } else {
                    self.put_idle(open);
                }
                Ok(())
            }
            // lettre has aborted the connection; it is dropped, and a fresh
            // one is opened next time.
            Ok(Err(e)) => Err(self.classify(&e)),
            Err(_) => Err(SendError::Transient(
                SmtpError::Timeout {
                    host: self.host.clone(),
                    port: self.port,
                    what: "the message transfer",
                    secs: SEND_TIMEOUT.as_secs(),
                }
                .to_string(),
            )),
        }
    }

    /// How many connections may deliver at once (`smtp.connections`).
    pub fn connections(&self) -> usize {
        self.connections
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Open>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently used idle connection (the likeliest to be alive).
    fn take_idle(&self) -> Option<Open> {
        self.idle().pop()
    }

    fn put_idle(&self, open: Open) {
        self.idle().push(open);
    }

    /// Whether the open connection may carry one more message: under the
    /// cap, not broken, and (after a pause) still answering NOOP.
    async fn reusable(&self, open: &mut Open) -> bool {
        if open.sent >= self.max_per_connection || open.conn.has_broken() {
            return false;
        }
        open.last_used.elapsed() <= IDLE_CHECK_AFTER
            || tokio::time::timeout(COMMAND_TIMEOUT, open.conn.test_connected())
                .await
                .unwrap_or(false)
    }

    /// Why the last attempt to connect and log in failed, or `None` when it
    /// worked: sending health, reported apart from receiving.
    pub(crate) fn last_problem(&self) -> Option<String> {
        match self.problem.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_problem(&self, problem: Option<String>) {
        match self.problem.lock() {
            Ok(mut g) => *g = problem,
            Err(poisoned) => *poisoned.into_inner() = problem,
        }
    }

    /// Closes the idle connections politely.
    pub async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle());
        for mut open in idle {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, open.conn.quit()).await;
        }
    }

    fn classify(&self, e: &lettre::transport::smtp::Error) -> SendError {
        let text = format!("SMTP server {}:{}: {e}", self.host, self.port);
        if e.is_permanent() || e.is_client() {
            // 5xx, or lettre refusing the message itself (e.g. a non-ASCII
            // address without SMTPUTF8): the same message will fail again.
            SendError::Permanent(text)
        } else {
            SendError::Transient(text)
        }
    }

    /// The TCP connection, with Nagle's algorithm off, and TLS on it for
    /// implicit TLS. lettre writes the final `.` of a message as a small packet
    /// of its own; with Nagle on it waits for the server's delayed ACK (about
    /// 40 ms) before the reply can come, for every message (docs/benchmark.md).
    async fn socket(&self) -> std::io::Result<Box<dyn AsyncTokioStream>> {
        let bare_host = self.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::net::TcpStream::connect((bare_host, self.port)).await?;
        tcp.set_nodelay(true)?;
        let Some(connector) = &self.implicit_tls else {
            return Ok(Box::new(tcp));
        };
        let name = tls::server_name(bare_host)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let tls = connector.connect(name, tcp).await?;
        Ok(Box::new(ImplicitTls(tls)))
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        let timeout = |what| SmtpError::Timeout {
            host: self.host.clone(),
            port: self.port,
            what,
            secs: COMMAND_TIMEOUT.as_secs(),
        };
        let connect_err = |source| SmtpError::Connect {
            host: self.host.clone(),
            port: self.port,
            security: security_label(self.security),
            source,
        };
        let socket_err = |source| SmtpError::Socket {
            host: self.host.clone(),
            port: self.port,
            security: security_label(self.security),
            source,
        };
        let stream = tokio::time::timeout(COMMAND_TIMEOUT, self.socket())
            .await
            .map_err(|_| timeout("the connection"))?
            .map_err(socket_err)?;
        let mut conn = tokio::time::timeout(
            COMMAND_TIMEOUT,
            AsyncSmtpConnection::connect_with_transport(stream, &self.hello),
        )
        .await
        .map_err(|_| timeout("the greeting and EHLO"))?
        .map_err(connect_err)?;

        if self.security == Security::Starttls {
            let Some(params) = self.tls.clone() else {
                return Err(SmtpError::NoStartTls {
                    host: self.host.clone(),
                    port: self.port,
                });
            };
            if !conn.can_starttls() {
                conn.abort().await;
                return Err(SmtpError::NoStartTls {
                    host: self.host.clone(),
                    port: self.port,
                });
            }
            tokio::time::timeout(COMMAND_TIMEOUT, conn.starttls(params, &self.hello))
                .await
                .map_err(|_| timeout("STARTTLS"))?
                .map_err(connect_err)?;
        }

        if let Some(credentials) = &self.credentials {
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials),
            )
            .await
            .map_err(|_| timeout("AUTH"))?
            .map_err(|source| SmtpError::Auth {
                host: self.host.clone(),
                port: self.port,
                source,
            })?;
        }
        if let Some(login) = &self.oauth
            && let Err(e) = self.authenticate(&mut conn, login).await
        {
            conn.abort().await;
            return Err(e);
        }
        tracing::debug!(host = %self.host, port = self.port, "Connected to SMTP server.");
        Ok(conn)
    }

    /// AUTH with a token; after a refusal once more with a fresh token,
    /// unless the server said a setting is wrong.
    async fn authenticate(
        &self,
        conn: &mut AsyncSmtpConnection,
        login: &OAuthLogin,
    ) -> Result<(), SmtpError> {
        let mechanism = login.provider.mechanism();
        let name = sasl::mechanism_name(mechanism);
        // lettre only parses the mechanisms it knows; OAUTHBEARER is tried
        // and a server without it answers 504.
        if mechanism == SaslMechanism::Xoauth2
            && !conn
                .server_info()
                .supports_auth_mechanism(Mechanism::Xoauth2)
        {
            return Err(SmtpError::MechanismNotOffered {
                host: self.host.clone(),
                port: self.port,
                mechanism: name,
            });
        }
        let mut retried = false;
        loop {
            let token = login.provider.token().await?;
            let outcome = tokio::time::timeout(
                COMMAND_TIMEOUT,
                sasl_exchange(conn, mechanism, &login.user, &token),
            )
            .await
            .map_err(|_| SmtpError::Timeout {
                host: self.host.clone(),
                port: self.port,
                what: "AUTH",
                secs: COMMAND_TIMEOUT.as_secs(),
            })?;
            let (server, error) = match outcome {
                Ok(()) => return Ok(()),
                Err(Exchange::Broken(source)) => {
                    return Err(SmtpError::Auth {
                        host: self.host.clone(),
                        port: self.port,
                        source,
                    });
                }
                Err(Exchange::Refused { server, error }) => (server, error),
            };
            login.provider.invalidate(&token).await;
            let setting = error
                .as_ref()
                .is_some_and(|e| e.refusal() == Refusal::Setting);
            let unsupported = server.starts_with("504") || server.contains(" 504 ");
            if !retried && !setting && !unsupported && !conn.has_broken() {
                retried = true;
                tracing::debug!(
                    mechanism = name,
                    "SMTP AUTH refused; retrying once with a fresh token."
                );
                continue;
            }
            let mut server = server;
            if let Some(e) = &error {
                server.push_str("; ");
                server.push_str(&e.describe());
            }
            return Err(SmtpError::TokenRefused {
                host: self.host.clone(),
                port: self.port,
                mechanism: name,
                server,
                advice: login.provider.refusal_advice(&token, &login.user, "SMTP"),
            });
        }
    }
}

/// One SMTP command line (lettre's `command` writes it as given).
struct Line(String);

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}

/// How a SASL exchange ended, short of success.
enum Exchange {
    /// The server said no (5xx/4xx), possibly after a JSON error challenge.
    Refused {
        server: String,
        error: Option<ServerError>,
    },
    /// The connection failed.
    Broken(lettre::transport::smtp::Error),
}

/// XOAUTH2 / OAUTHBEARER over SMTP AUTH (RFC 4954). A response that does not
/// fit on a 512-octet command line (every real token) goes in two steps:
/// `AUTH XOAUTH2`, wait for `334`, then the response. An error challenge
/// (`334 <base64 JSON>`) is answered with an empty response before the final
/// `535` arrives.
async fn sasl_exchange(
    conn: &mut AsyncSmtpConnection,
    mechanism: SaslMechanism,
    user: &str,
    token: &AccessToken,
) -> Result<(), Exchange> {
    let name = sasl::mechanism_name(mechanism);
    let encoded = sasl::encoded_initial_response(mechanism, user, token.secret());
    let refused = |e: lettre::transport::smtp::Error| {
        if e.is_permanent() || e.is_transient() {
            Exchange::Refused {
                server: e.to_string(),
                error: None,
            }
        } else {
            Exchange::Broken(e)
        }
    };
    let reply = if sasl::fits_inline(mechanism, &encoded) {
        conn.command(Line(format!("AUTH {name} {encoded}")))
            .await
            .map_err(refused)?
    } else {
        let ready = conn
            .command(Line(format!("AUTH {name}")))
            .await
            .map_err(refused)?;
        if !ready.has_code(334) {
            return Err(Exchange::Refused {
                server: format!("AUTH {name} answered {}", ready.code()),
                error: None,
            });
        }
        conn.command(Line(encoded)).await.map_err(refused)?
    };
    if reply.has_code(235) {
        return Ok(());
    }
    if !reply.has_code(334) {
        return Err(Exchange::Refused {
            server: format!("unexpected reply {}", reply.code()),
            error: None,
        });
    }
    // The error challenge: decode it, answer it, read the verdict.
    let challenge: String = reply.message().collect();
    let error = ServerError::parse(challenge.as_bytes()).or(Some(ServerError::default()));
    let ack = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(sasl::error_ack(mechanism))
    };
    let server = match conn.command(Line(ack)).await {
        Ok(r) => format!("unexpected reply {} after the error challenge", r.code()),
        Err(e) if e.is_permanent() || e.is_transient() => e.to_string(),
        Err(e) => return Err(Exchange::Broken(e)),
    };
    Err(Exchange::Refused { server, error })
}

fn tls_setup(host: &str, source: lettre::transport::smtp::Error) -> SmtpError {
    SmtpError::TlsSetup {
        host: host.to_owned(),
        source,
    }
}

/// An address given bare or as `Name <address>`.
fn parse_address(value: &str) -> Option<Address> {
    let value = value.trim();
    value
        .parse::<Address>()
        .ok()
        .or_else(|| value.parse::<Mailbox>().ok().map(|m| m.email))
}

fn envelope(from: &str, to: &[&str]) -> Result<Envelope, SendError> {
    // Addresses stay out of the message: it may be logged at info level.
    let from = parse_address(from)
        .ok_or_else(|| SendError::Permanent("the envelope sender is not a valid address".into()))?;
    let mut rcpts = Vec::with_capacity(to.len());
    for (i, value) in to.iter().enumerate() {
        let addr = parse_address(value).ok_or_else(|| {
            SendError::Permanent(format!("recipient #{} is not a valid address", i + 1))
        })?;
        rcpts.push(addr);
    }
    Envelope::new(Some(from), rcpts)
        .map_err(|e| SendError::Permanent(format!("invalid envelope: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use std::path::PathBuf;

    fn cfg(host: &str, security: Security) -> SmtpConfig {
        SmtpConfig {
            host: host.into(),
            port: 587,
            security,
            ca_file: None,
            username: None,
            secret: Secret::default(),
            from: "Privacy <privacy@example.com>".into(),
            max_messages_per_connection: 0,
            connections: 1,
            auth: crate::config::AuthMethod::Password,
            sent_copy: crate::config::SentCopy::Append,
        }
    }

    #[test]
    fn plain_text_only_on_loopback() {
        tls::install_crypto_provider();
        let err = SmtpSender::new(&cfg("smtp.example.com", Security::None), None).unwrap_err();
        assert!(matches!(err, SmtpError::PlainRefused { .. }), "{err}");
        assert!(SmtpSender::new(&cfg("127.0.0.1", Security::None), None).is_ok());
        assert!(SmtpSender::new(&cfg("smtp.example.com", Security::Starttls), None).is_ok());
        assert!(SmtpSender::new(&cfg("smtp.example.com", Security::Tls), None).is_ok());
    }

    #[test]
    fn username_needs_a_password() {
        tls::install_crypto_provider();
        let mut c = cfg("smtp.example.com", Security::Starttls);
        c.username = Some("privacy".into());
        assert!(matches!(
            SmtpSender::new(&c, None),
            Err(SmtpError::MissingPassword)
        ));
        let sender = SmtpSender::new(&c, Some("secret")).unwrap();
        assert_eq!(sender.max_per_connection, 1, "zero is raised to one");
        assert!(!format!("{sender:?}").contains("secret"));
    }

    #[test]
    fn missing_ca_file_is_named() {
        tls::install_crypto_provider();
        let mut c = cfg("smtp.example.com", Security::Tls);
        c.ca_file = Some(PathBuf::from("/nonexistent/smtp-ca.pem"));
        let err = SmtpSender::new(&c, None).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/smtp-ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn envelopes() {
        assert!(envelope("privacy@example.com", &["a@example.net"]).is_ok());
        assert!(envelope("Privacy <privacy@example.com>", &["B <b@example.net>"]).is_ok());
        let cases: &[(&str, &[&str])] = &[
            ("not an address", &["a@example.net"]),
            ("privacy@example.com", &["nope"]),
            ("privacy@example.com", &[]),
        ];
        for (from, to) in cases {
            let err = envelope(from, to).unwrap_err();
            assert!(err.is_permanent(), "{from} {to:?}: {err}");
            assert!(
                !err.to_string().contains("example"),
                "no addresses in {err}"
            );
        }
    }
}

/// A TLS stream over TCP that lettre can drive (implicit TLS, port 465).
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
