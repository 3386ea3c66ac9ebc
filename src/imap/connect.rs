//! Opening a session: TCP, then implicit TLS, STARTTLS, or plain text on
//! loopback only; the greeting; LOGIN; CAPABILITY.

use std::time::Duration;

use async_imap::imap_proto::{Response, Status};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::stream::{TimeoutStream, Transport};
use super::{CONNECT_TIMEOUT, Caps, IO_TIMEOUT, Imap, ImapError};
use crate::config::{ImapConfig, Security};
use crate::oauth::sasl::{self, Refusal, ServerError};
use crate::oauth::{AccessToken, TokenProvider};
use crate::tls;

/// How the session logs in.
#[derive(Debug, Clone, Copy)]
pub enum Login<'a> {
    /// LOGIN with `imap.username` and this password.
    Password(&'a str),
    /// AUTHENTICATE XOAUTH2 / OAUTHBEARER with a token from the provider.
    OAuth(&'a TokenProvider),
}

pub(crate) type Stream = TimeoutStream<Transport>;
pub(crate) type Session = async_imap::Session<Stream>;
type Client = async_imap::Client<Stream>;

/// How the security setting is named in messages.
fn security_label(security: Security) -> &'static str {
    match security {
        Security::Tls => "TLS",
        Security::Starttls => "STARTTLS",
        Security::None => "plain text",
    }
}

impl Imap {
    /// Connects, secures the connection as configured, logs in and reads the
    /// capabilities. `security = "none"` is refused unless the host is a
    /// loopback address, so the password never crosses a network in clear.
    pub async fn connect(cfg: &ImapConfig, password: &str) -> Result<Imap, ImapError> {
        Imap::connect_as(cfg, Login::Password(password)).await
    }

    /// [`Imap::connect`] with a password or an OAuth token (`imap.auth`).
    pub(crate) async fn connect_as(cfg: &ImapConfig, login: Login<'_>) -> Result<Imap, ImapError> {
        let host = cfg.host.clone();
        let port = cfg.port;
        if cfg.security == Security::None && !tls::is_loopback_host(&host) {
            return Err(ImapError::PlainRefused { host });
        }
        let tls = match cfg.security {
            Security::None => None,
            Security::Tls | Security::Starttls => Some((
                TlsConnector::from(tls::client_config(cfg.ca_file.as_deref())?),
                tls::server_name(&host)?,
            )),
        };
        let connect_err = |source| ImapError::Connect {
            host: host.clone(),
            port,
            security: security_label(cfg.security),
            source,
        };
        let handshake_err = |source| ImapError::Handshake {
            host: host.clone(),
            port,
            source,
        };

        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = with_timeout(TcpStream::connect((bare_host, port)))
            .await
            .map_err(connect_err)?;
        // Commands are small; Nagle would only add latency.
        let _ = tcp.set_nodelay(true);

        let client = match (cfg.security, tls) {
            (Security::Tls, Some((connector, name))) => {
                let tls = with_timeout(connector.connect(name, tcp))
                    .await
                    .map_err(handshake_err)?;
                let mut client = new_client(Transport::Tls(Box::new(tls)));
                read_greeting(&mut client, &host, port).await?;
                client
            }
            (Security::Starttls, Some((connector, name))) => {
                let mut client = new_client(Transport::Plain(tcp));
                read_greeting(&mut client, &host, port).await?;
                client
                    .run_command_and_check_ok("STARTTLS", None)
                    .await
                    .map_err(|source| ImapError::StartTls {
                        host: host.clone(),
                        port,
                        source,
                    })?;
                let Transport::Plain(tcp) = client.into_inner().into_inner() else {
                    return Err(ImapError::Greeting {
                        host: host.clone(),
                        port,
                        detail: "connection already encrypted before STARTTLS".into(),
                    });
                };
                let tls = with_timeout(connector.connect(name, tcp))
                    .await
                    .map_err(handshake_err)?;
                // No second greeting after STARTTLS (RFC 3501 §6.2.1).
                new_client(Transport::Tls(Box::new(tls)))
            }
            _ => {
                let mut client = new_client(Transport::Plain(tcp));
                read_greeting(&mut client, &host, port).await?;
                client
            }
        };

        let (mut session, token) = match login {
            Login::Password(password) => match client.login(&cfg.username, password).await {
                Ok(session) => (session, None::<(AccessToken, &TokenProvider)>),
                Err((source, _)) => {
                    return Err(match source {
                        async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_) => {
                            ImapError::Login { host, port, source }
                        }
                        other => ImapError::Command {
                            host,
                            port,
                            what: "LOGIN".into(),
                            source: other,
                        },
                    });
                }
            },
            Login::OAuth(provider) => {
                let (session, token) =
                    authenticate(client, provider, &cfg.username, &host, port).await?;
                (session, Some((token, provider)))
            }
        };
        let caps = match session.capabilities().await {
            Ok(caps) => Caps {
                mv: caps.has_str("MOVE"),
                idle: caps.has_str("IDLE"),
                uidplus: caps.has_str("UIDPLUS"),
            },
            // Exchange accepts a token it cannot use and says so at the
            // first command: `BAD User is authenticated but not connected.`
            Err(source @ (async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_)))
                if token.is_some() =>
            {
                let advice = token
                    .as_ref()
                    .map(|(t, p)| p.refusal_advice(t, &cfg.username, "IMAP"))
                    .unwrap_or_default();
                return Err(ImapError::TokenRefused {
                    host,
                    port,
                    mechanism: "(accepted, then CAPABILITY)",
                    server: source.to_string(),
                    advice,
                });
            }
            Err(source) => {
                return Err(ImapError::Command {
                    host,
                    port,
                    what: "CAPABILITY".into(),
                    source,
                });
            }
        };
        let renew_at = token.as_ref().map(|(t, _)| t.renew_at());
        tracing::debug!(
            %host, port, security = security_label(cfg.security),
            r#move = caps.mv, idle = caps.idle, uidplus = caps.uidplus,
            "Logged in to IMAP server."
        );
        Ok(Imap {
            session: Some(session),
            host,
            port,
            caps,
            use_move: true,
            new_data_pending: false,
            renew_at,
            sent_folder: None,
        })
    }
}

fn new_client(transport: Transport) -> Client {
    async_imap::Client::new(TimeoutStream::new(transport, IO_TIMEOUT))
}

/// Runs a connect or handshake step under [`CONNECT_TIMEOUT`].
async fn with_timeout<T>(fut: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    with_deadline(CONNECT_TIMEOUT, fut).await
}

async fn with_deadline<T>(
    limit: Duration,
    fut: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} s", limit.as_secs()),
        ))
    })
}

/// The server speaks first: `* OK` (or `* PREAUTH`) means go on; `* BYE`,
/// garbage, or a TLS server answering a plain client means the wrong port or
/// security setting.
async fn read_greeting(client: &mut Client, host: &str, port: u16) -> Result<(), ImapError> {
    let greeting_err = |detail: String| ImapError::Greeting {
        host: host.to_owned(),
        port,
        detail,
    };
    let response = client
        .read_response()
        .await
        .map_err(|e| greeting_err(e.to_string()))?
        .ok_or_else(|| greeting_err("connection closed before the greeting".into()))?;
    match response.parsed() {
        Response::Data {
            status: Status::Ok | Status::PreAuth,
            ..
        } => Ok(()),
        other => Err(greeting_err(format!("unexpected greeting {other:?}"))),
    }
}

/// Answers the server's challenges: the initial response first, then an
/// empty one to the JSON error challenge (remembered for the error message).
struct SaslExchange {
    mechanism: crate::config::SaslMechanism,
    initial: Option<Vec<u8>>,
    error: Option<ServerError>,
}

impl async_imap::Authenticator for &mut SaslExchange {
    type Response = Vec<u8>;

    fn process(&mut self, challenge: &[u8]) -> Vec<u8> {
        match self.initial.take() {
            Some(initial) => initial,
            None => {
                self.error = ServerError::parse(challenge).or(Some(ServerError::default()));
                sasl::error_ack(self.mechanism).to_vec()
            }
        }
    }
}

/// AUTHENTICATE with a token; after a refusal, once more with a fresh token
/// (the first may have been revoked or expired early), unless the server
/// said a setting is wrong.
async fn authenticate(
    mut client: Client,
    provider: &TokenProvider,
    user: &str,
    host: &str,
    port: u16,
) -> Result<(Session, AccessToken), ImapError> {
    let mechanism = provider.mechanism();
    let name = sasl::mechanism_name(mechanism);
    let mut retried = false;
    loop {
        let token = provider.token().await?;
        let mut exchange = SaslExchange {
            mechanism,
            initial: Some(sasl::initial_response(mechanism, user, token.secret())),
            error: None,
        };
        match client.authenticate(name, &mut exchange).await {
            Ok(session) => return Ok((session, token)),
            Err((source, back)) => {
                client = back;
                let refused = matches!(
                    source,
                    async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_)
                );
                if !refused {
                    return Err(ImapError::Command {
                        host: host.to_owned(),
                        port,
                        what: format!("AUTHENTICATE {name}"),
                        source,
                    });
                }
                provider.invalidate(&token).await;
                let setting = exchange
                    .error
                    .as_ref()
                    .is_some_and(|e| e.refusal() == Refusal::Setting);
                if !retried && !setting {
                    retried = true;
                    tracing::debug!(
                        mechanism = name,
                        "AUTHENTICATE refused; retrying once with a fresh token."
                    );
                    continue;
                }
                let mut server = source.to_string();
                if let Some(e) = &exchange.error {
                    server.push_str("; ");
                    server.push_str(&e.describe());
                }
                return Err(ImapError::TokenRefused {
                    host: host.to_owned(),
                    port,
                    mechanism: name,
                    server,
                    advice: provider.refusal_advice(&token, user, "IMAP"),
                });
            }
        }
    }
}
