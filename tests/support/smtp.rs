//! Submitting test mail through the private Postfix, so it reaches Dovecot
//! over LMTP like real mail (with Return-Path, Received, Delivered-To).

use std::time::Duration;

use lettre::address::{Address, Envelope};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};

use super::MailServers;

impl MailServers {
    /// Sends `raw` (bytes as-is, a complete RFC 5322 message) from envelope
    /// sender `from` (`""` for the null sender `<>`, as in bounces) to `to`,
    /// over STARTTLS. Panics when Postfix refuses it.
    pub async fn send_smtp<S: AsRef<str>>(&self, from: &str, to: &[S], raw: &[u8]) {
        self.send_smtp_many(from, to, &[raw]).await;
    }

    /// Sends several messages over one SMTP connection (bursts).
    pub async fn send_smtp_many<S: AsRef<str>>(&self, from: &str, to: &[S], raws: &[&[u8]]) {
        let envelope = envelope(from, to);
        let transport = self.smtp_transport();
        for (i, raw) in raws.iter().enumerate() {
            if let Err(e) = transport.send_raw(&envelope, as_data(raw)).await {
                panic!(
                    "SMTP submission of message {} of {} failed: {e}\n{}",
                    i + 1,
                    raws.len(),
                    self.log_tail(10)
                );
            }
        }
        transport.shutdown().await;
    }

    /// Like [`send_smtp`](Self::send_smtp), returning the error instead.
    pub async fn try_send_smtp<S: AsRef<str>>(
        &self,
        from: &str,
        to: &[S],
        raw: &[u8],
    ) -> Result<(), lettre::transport::smtp::Error> {
        let transport = self.smtp_transport();
        let result = transport
            .send_raw(&envelope(from, to), raw)
            .await
            .map(|_| ());
        transport.shutdown().await;
        result
    }

    fn smtp_transport(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        let ca = std::fs::read(self.ca_pem_path()).expect("read the test CA");
        let tls = TlsParameters::builder("localhost".to_string())
            .add_root_certificate(Certificate::from_pem(&ca).expect("parse the test CA"))
            .build_rustls()
            .expect("lettre TLS parameters");
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(self.smtp_port())
            .tls(Tls::Required(tls))
            .timeout(Some(Duration::from_secs(30)))
            .build()
    }
}

/// lettre always ends DATA with `\r\n.\r\n`, adding a line break of its
/// own: drop the message's final one so the stored bytes equal `raw`.
fn as_data(raw: &[u8]) -> &[u8] {
    raw.strip_suffix(b"\r\n")
        .or_else(|| raw.strip_suffix(b"\n"))
        .unwrap_or(raw)
}

fn envelope<S: AsRef<str>>(from: &str, to: &[S]) -> Envelope {
    let from: Option<Address> = if from.is_empty() {
        None
    } else {
        Some(
            from.parse()
                .unwrap_or_else(|e| panic!("envelope sender {from:?}: {e}")),
        )
    };
    let to: Vec<Address> = to
        .iter()
        .map(|t| {
            t.as_ref()
                .parse()
                .unwrap_or_else(|e| panic!("envelope recipient {:?}: {e}", t.as_ref()))
        })
        .collect();
    Envelope::new(from, to).expect("a valid envelope (at least one recipient)")
}
