//! Opening a session: TCP, then implicit TLS, STARTTLS, or plain text on
//! loopback only; the greeting; LOGIN; CAPABILITY.

use std::time::Duration;

use async_imap::imap_proto::{Response, Status};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::stream::{TimeoutStream, Transport};
use super::{CONNECT_TIMEOUT, Caps, IO_TIMEOUT, Imap, ImapError};
use crate::config::{ImapConfig, Security};
use crate::tls;

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

        let mut session = match client.login(&cfg.username, password).await {
            Ok(session) => session,
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
        };
        let caps = match session.capabilities().await {
            Ok(caps) => Caps {
                mv: caps.has_str("MOVE"),
                idle: caps.has_str("IDLE"),
                uidplus: caps.has_str("UIDPLUS"),
            },
            Err(source) => {
                return Err(ImapError::Command {
                    host,
                    port,
                    what: "CAPABILITY".into(),
                    source,
                });
            }
        };
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
