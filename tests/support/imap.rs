//! The test's own IMAP client: looks into mailboxes the way a person would,
//! independently of the daemon's IMAP code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::MailServers;

/// A TLS stream to Dovecot.
pub type ImapStream = tokio_rustls::client::TlsStream<TcpStream>;
/// A logged-in IMAP session.
pub type ImapSession = async_imap::Session<ImapStream>;

async fn tls_connect(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    tcp: TcpStream,
) -> anyhow::Result<ImapStream> {
    let name = ServerName::try_from("localhost").context("server name")?;
    TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with 127.0.0.1:{port}"))
}

impl MailServers {
    /// Connects to the IMAPS port with `tls` and reads the greeting.
    pub async fn try_imaps_client(
        &self,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<async_imap::Client<ImapStream>> {
        let port = self.imaps_port();
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
        let stream = tls_connect(port, tls, tcp).await?;
        let mut client = async_imap::Client::new(stream);
        client
            .read_response()
            .await
            .context("read the IMAP greeting")?
            .context("no IMAP greeting")?;
        Ok(client)
    }

    /// Connects to the plain IMAP port, upgrades with STARTTLS using `tls`.
    pub async fn try_starttls_client(
        &self,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<async_imap::Client<ImapStream>> {
        let port = self.imap_port();
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
        let mut plain = async_imap::Client::new(tcp);
        plain
            .read_response()
            .await
            .context("read the IMAP greeting")?
            .context("no IMAP greeting")?;
        plain
            .run_command_and_check_ok("STARTTLS", None)
            .await
            .context("STARTTLS")?;
        let stream = tls_connect(port, tls, plain.into_inner()).await?;
        Ok(async_imap::Client::new(stream))
    }

    /// A logged-in IMAPS session for `user` (trusting the test CA).
    pub async fn imap_session(&self, user: &str) -> ImapSession {
        let client = self
            .try_imaps_client(self.tls_config())
            .await
            .unwrap_or_else(|e| panic!("IMAPS connection for {user}: {e:#}"));
        client
            .login(user, self.password())
            .await
            .unwrap_or_else(|(e, _)| panic!("IMAP login as {user}: {e}"))
    }

    /// A logged-in session over the plain port after STARTTLS.
    pub async fn starttls_session(&self, user: &str) -> ImapSession {
        let client = self
            .try_starttls_client(self.tls_config())
            .await
            .unwrap_or_else(|e| panic!("IMAP STARTTLS connection for {user}: {e:#}"));
        client
            .login(user, self.password())
            .await
            .unwrap_or_else(|(e, _)| panic!("IMAP login as {user}: {e}"))
    }

    /// Every mailbox of `user` (full names, `/` as separator).
    pub async fn list_mailboxes(&self, user: &str) -> Vec<String> {
        let mut session = self.imap_session(user).await;
        let names = list(&mut session).await;
        let _ = session.logout().await;
        names
    }

    /// Creates `mailbox` for `user` unless it exists.
    pub async fn create_mailbox(&self, user: &str, mailbox: &str) {
        let mut session = self.imap_session(user).await;
        ensure_mailbox(&mut session, user, mailbox).await;
        let _ = session.logout().await;
    }

    /// IMAP APPEND of `raw` to `user`'s `mailbox` (created if needed).
    pub async fn append(&self, user: &str, mailbox: &str, raw: &[u8]) {
        self.append_inner(user, mailbox, raw, None).await;
    }

    /// Like [`append`](Self::append), with an INTERNALDATE (e.g. to put a
    /// message outside `initial_backlog_days`).
    pub async fn append_dated(
        &self,
        user: &str,
        mailbox: &str,
        raw: &[u8],
        internal_date: chrono::DateTime<chrono::Utc>,
    ) {
        let date = internal_date
            .format("\"%d-%b-%Y %H:%M:%S +0000\"")
            .to_string();
        self.append_inner(user, mailbox, raw, Some(&date)).await;
    }

    async fn append_inner(&self, user: &str, mailbox: &str, raw: &[u8], date: Option<&str>) {
        let mut session = self.imap_session(user).await;
        ensure_mailbox(&mut session, user, mailbox).await;
        session
            .append(mailbox, None, date, raw)
            .await
            .unwrap_or_else(|e| panic!("APPEND to {user}/{mailbox}: {e}"));
        let _ = session.logout().await;
    }

    /// Every message in `user`'s `mailbox`, raw, in UID order, without
    /// setting `\Seen`. A mailbox that does not exist is empty.
    pub async fn fetch_all(&self, user: &str, mailbox: &str) -> Vec<Vec<u8>> {
        let mut session = self.imap_session(user).await;
        let messages = fetch_all(&mut session, user, mailbox).await;
        let _ = session.logout().await;
        messages
    }

    /// How many messages `user`'s `mailbox` holds (0 when it does not exist).
    pub async fn count(&self, user: &str, mailbox: &str) -> usize {
        let mut session = self.imap_session(user).await;
        let n = if exists(&mut session, mailbox).await {
            let status = session
                .status(mailbox, "(MESSAGES)")
                .await
                .unwrap_or_else(|e| panic!("STATUS {user}/{mailbox}: {e}"));
            status.exists as usize
        } else {
            0
        };
        let _ = session.logout().await;
        n
    }

    /// Polls until `user`'s `mailbox` holds at least `n` messages and returns
    /// them all; panics after `timeout` with what it saw and the server logs.
    pub async fn wait_for(
        &self,
        user: &str,
        mailbox: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.fetch_all(user, mailbox).await;
            if messages.len() >= n {
                return messages;
            }
            if Instant::now() >= deadline {
                let subjects: Vec<String> = messages
                    .iter()
                    .map(|m| super::header(m, "Subject").unwrap_or_else(|| "(no subject)".into()))
                    .collect();
                let mailboxes = self.list_mailboxes(user).await;
                panic!(
                    "waited {timeout:?} for {n} message(s) in {user}/{mailbox}, saw {}: \
                     subjects {subjects:?}; mailboxes {mailboxes:?}\n{}",
                    messages.len(),
                    self.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

async fn list(session: &mut ImapSession) -> Vec<String> {
    let names: Vec<_> = session
        .list(Some(""), Some("*"))
        .await
        .unwrap_or_else(|e| panic!("LIST: {e}"))
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("LIST: {e}"));
    names.iter().map(|n| n.name().to_string()).collect()
}

async fn exists(session: &mut ImapSession, mailbox: &str) -> bool {
    list(session).await.iter().any(|name| {
        name == mailbox
            || (name.eq_ignore_ascii_case("INBOX") && mailbox.eq_ignore_ascii_case("INBOX"))
    })
}

async fn ensure_mailbox(session: &mut ImapSession, user: &str, mailbox: &str) {
    if !exists(session, mailbox).await {
        session
            .create(mailbox)
            .await
            .unwrap_or_else(|e| panic!("CREATE {user}/{mailbox}: {e}"));
    }
}

async fn fetch_all(session: &mut ImapSession, user: &str, mailbox: &str) -> Vec<Vec<u8>> {
    if !exists(session, mailbox).await {
        return Vec::new();
    }
    let selected = session
        .examine(mailbox)
        .await
        .unwrap_or_else(|e| panic!("EXAMINE {user}/{mailbox}: {e}"));
    if selected.exists == 0 {
        return Vec::new();
    }
    let fetches: Vec<_> = session
        .uid_fetch("1:*", "(UID BODY.PEEK[])")
        .await
        .unwrap_or_else(|e| panic!("UID FETCH {user}/{mailbox}: {e}"))
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("UID FETCH {user}/{mailbox}: {e}"));
    let mut messages: Vec<(u32, Vec<u8>)> = fetches
        .iter()
        .map(|f| (f.uid.unwrap_or(0), f.body().unwrap_or_default().to_vec()))
        .collect();
    messages.sort_by_key(|(uid, _)| *uid);
    messages.into_iter().map(|(_, body)| body).collect()
}
