//! The test's own XOAUTH2 / OAUTHBEARER clients, written line by line
//! against the OAuth-mode servers: they prove the harness (Dovecot and
//! Postfix really verify tokens from [`super::idp`]) independently of the
//! daemon's SASL code, and show exactly what a refusal looks like on the wire.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufStream};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{MailServers, b64};

/// The SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    XOAuth2,
    OAuthBearer,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// How the SMTP client sends its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpAuthStyle {
    /// `AUTH XOAUTH2 <response>` on one line (RFC 4954 initial response).
    Inline,
    /// `AUTH XOAUTH2`, wait for `334`, then the response on its own line.
    TwoStep,
}

/// The base64 initial client response for `user` and `token`.
pub fn initial_response(mechanism: Mechanism, user: &str, token: &str) -> String {
    let raw = match mechanism {
        Mechanism::XOAuth2 => format!("user={user}\x01auth=Bearer {token}\x01\x01"),
        Mechanism::OAuthBearer => format!("n,a={user},\x01auth=Bearer {token}\x01\x01"),
    };
    b64::encode(raw.as_bytes())
}

/// A server's refusal: its final reply, and the decoded JSON error challenge
/// (`{"status":"401","schemes":"bearer",...}`) when it sent one.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reply: String,
    pub challenge: Option<Value>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reply)?;
        if let Some(c) = &self.challenge {
            write!(f, " (challenge {c})")?;
        }
        Ok(())
    }
}

type Lines<S> = BufStream<S>;

async fn read_line<S: AsyncRead + AsyncWrite + Unpin>(s: &mut Lines<S>) -> anyhow::Result<String> {
    let mut line = String::new();
    let n = s
        .read_line(&mut line)
        .await
        .context("read from the server")?;
    if n == 0 {
        bail!("the server closed the connection");
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

async fn send_line<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Lines<S>,
    line: &str,
) -> anyhow::Result<()> {
    s.write_all(line.as_bytes()).await.context("write")?;
    s.write_all(b"\r\n").await.context("write")?;
    s.flush().await.context("flush")
}

/// A whole SMTP reply (all `ddd-` lines and the final `ddd `), joined by `\n`.
async fn smtp_reply<S: AsyncRead + AsyncWrite + Unpin>(s: &mut Lines<S>) -> anyhow::Result<String> {
    let mut all = Vec::new();
    loop {
        let line = read_line(s).await?;
        let last = line.as_bytes().get(3) != Some(&b'-');
        all.push(line);
        if last {
            return Ok(all.join("\n"));
        }
    }
}

fn decode_challenge(text: &str) -> Option<Value> {
    serde_json::from_slice(&b64::decode(text.trim())?).ok()
}

async fn tls<S: AsyncRead + AsyncWrite + Unpin>(
    tls: Arc<rustls::ClientConfig>,
    stream: S,
) -> anyhow::Result<tokio_rustls::client::TlsStream<S>> {
    let name = ServerName::try_from("localhost").context("server name")?;
    TlsConnector::from(tls)
        .connect(name, stream)
        .await
        .context("TLS handshake")
}

/// An SMTP session on the submission port after STARTTLS and EHLO, not yet
/// authenticated.
pub struct SmtpSubmission {
    stream: Lines<tokio_rustls::client::TlsStream<TcpStream>>,
    /// The `AUTH` mechanisms offered after STARTTLS.
    pub auth_offered: Vec<String>,
    /// Whether AUTH was offered before STARTTLS (must not be).
    pub auth_before_tls: bool,
}

impl SmtpSubmission {
    /// `AUTH`; `Ok(())` on `235`. After a `334` JSON challenge the client
    /// answers with an empty line, as RFC 7628 asks, to get the final reply.
    pub async fn authenticate(
        &mut self,
        mechanism: Mechanism,
        user: &str,
        token: &str,
        style: SmtpAuthStyle,
    ) -> anyhow::Result<Result<(), Refusal>> {
        let response = initial_response(mechanism, user, token);
        let s = &mut self.stream;
        let mut reply = match style {
            SmtpAuthStyle::Inline => {
                send_line(s, &format!("AUTH {} {response}", mechanism.name())).await?;
                smtp_reply(s).await?
            }
            SmtpAuthStyle::TwoStep => {
                send_line(s, &format!("AUTH {}", mechanism.name())).await?;
                let ready = smtp_reply(s).await?;
                if !ready.starts_with("334") {
                    return Ok(Err(Refusal {
                        reply: ready,
                        challenge: None,
                    }));
                }
                send_line(s, &response).await?;
                smtp_reply(s).await?
            }
        };
        let mut challenge = None;
        if let Some(text) = reply.strip_prefix("334 ") {
            challenge = decode_challenge(text);
            send_line(s, "").await?;
            reply = smtp_reply(s).await?;
        }
        if reply.starts_with("235") {
            Ok(Ok(()))
        } else {
            Ok(Err(Refusal { reply, challenge }))
        }
    }

    /// MAIL FROM, RCPT TO, DATA with `raw` (CRLF lines, no lone `.`);
    /// returns the first reply that is not a success.
    pub async fn send(
        &mut self,
        from: &str,
        to: &str,
        raw: &[u8],
    ) -> anyhow::Result<Result<(), String>> {
        let s = &mut self.stream;
        for (command, ok) in [
            (format!("MAIL FROM:<{from}>"), "250"),
            (format!("RCPT TO:<{to}>"), "250"),
            ("DATA".to_string(), "354"),
        ] {
            send_line(s, &command).await?;
            let reply = smtp_reply(s).await?;
            if !reply.starts_with(ok) {
                return Ok(Err(reply));
            }
        }
        s.write_all(raw).await.context("write DATA")?;
        if !raw.ends_with(b"\r\n") {
            s.write_all(b"\r\n").await.context("write DATA")?;
        }
        send_line(s, ".").await?;
        let reply = smtp_reply(s).await?;
        Ok(if reply.starts_with("250") {
            Ok(())
        } else {
            Err(reply)
        })
    }

    pub async fn quit(mut self) {
        let _ = send_line(&mut self.stream, "QUIT").await;
        let _ = smtp_reply(&mut self.stream).await;
    }
}

fn auth_mechanisms(ehlo: &str) -> Vec<String> {
    ehlo.lines()
        .filter_map(|l| l.get(4..))
        .filter_map(|l| l.strip_prefix("AUTH "))
        .flat_map(|l| l.split_whitespace().map(str::to_string))
        .collect()
}

impl MailServers {
    /// `AUTHENTICATE` over IMAPS with `token` for `user` (two-step: the
    /// command, `+`, then the response). `Ok(Ok(()))` when logged in.
    pub async fn imap_authenticate(
        &self,
        mechanism: Mechanism,
        user: &str,
        token: &str,
    ) -> anyhow::Result<Result<(), Refusal>> {
        let port = self.imaps_port();
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
        let mut s = BufStream::new(tls(self.tls_config(), tcp).await?);
        let greeting = read_line(&mut s).await?;
        if !greeting.contains(&format!("AUTH={}", mechanism.name())) {
            bail!(
                "Dovecot does not offer AUTH={}: {greeting}",
                mechanism.name()
            );
        }
        send_line(&mut s, &format!("a1 AUTHENTICATE {}", mechanism.name())).await?;
        let go_ahead = read_line(&mut s).await?;
        if !go_ahead.starts_with('+') {
            bail!("no continuation after AUTHENTICATE: {go_ahead}");
        }
        send_line(&mut s, &initial_response(mechanism, user, token)).await?;
        let mut challenge = None;
        let reply = loop {
            let line = read_line(&mut s).await?;
            if let Some(text) = line.strip_prefix("+ ") {
                challenge = decode_challenge(text);
                send_line(&mut s, "").await?;
            } else if line.starts_with("a1 ") {
                break line;
            }
        };
        let result = if reply.starts_with("a1 OK") {
            send_line(&mut s, "a2 LOGOUT").await?;
            Ok(())
        } else {
            Err(Refusal { reply, challenge })
        };
        Ok(result)
    }

    /// Opens the submission port: greeting, EHLO, STARTTLS, EHLO again.
    pub async fn submission(&self) -> anyhow::Result<SmtpSubmission> {
        let port = self.submission_port();
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
        let mut plain = BufStream::new(tcp);
        let greeting = smtp_reply(&mut plain).await?;
        if !greeting.starts_with("220") {
            bail!("submission greeting: {greeting}");
        }
        send_line(&mut plain, "EHLO client.example.test").await?;
        let ehlo = smtp_reply(&mut plain).await?;
        let auth_before_tls = !auth_mechanisms(&ehlo).is_empty();
        send_line(&mut plain, "STARTTLS").await?;
        let ready = smtp_reply(&mut plain).await?;
        if !ready.starts_with("220") {
            bail!("STARTTLS refused: {ready}");
        }
        let mut stream = BufStream::new(tls(self.tls_config(), plain.into_inner()).await?);
        send_line(&mut stream, "EHLO client.example.test").await?;
        let ehlo = smtp_reply(&mut stream).await?;
        Ok(SmtpSubmission {
            stream,
            auth_offered: auth_mechanisms(&ehlo),
            auth_before_tls,
        })
    }

    /// Submission with a token: STARTTLS, AUTH, one message. `Err` with the
    /// refusal or the failing reply.
    pub async fn submit_with_token(
        &self,
        mechanism: Mechanism,
        user: &str,
        token: &str,
        to: &str,
        raw: &[u8],
    ) -> anyhow::Result<Result<(), String>> {
        let mut session = self.submission().await?;
        if let Err(refusal) = session
            .authenticate(mechanism, user, token, SmtpAuthStyle::TwoStep)
            .await?
        {
            session.quit().await;
            return Ok(Err(refusal.to_string()));
        }
        let sent = session.send(user, to, raw).await?;
        session.quit().await;
        Ok(sent)
    }
}
