//! Test messages: requests and replies written the way real mail clients
//! write them (Gmail quoting, Outlook's unquoted original).

use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh Message-ID (with brackets).
pub fn new_message_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "<t{}.{}.{}@client.example.test>",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    )
}

/// A raw plain-text message with CRLF line ends. `extra_headers` are raw
/// header lines separated by `\n`.
pub fn message(from: &str, to: &str, subject: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    let mut s = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {}\r\nDate: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n",
        new_message_id(),
        chrono::Utc::now().to_rfc2822()
    );
    for line in extra_headers.lines().filter(|l| !l.is_empty()) {
        s.push_str(line);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(&body.replace("\r\n", "\n").replace('\n', "\r\n"));
    s.into_bytes()
}

/// A plain request.
pub fn request(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    message(from, to, subject, "", body)
}

/// How the consumer's mail client writes a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// New text on top, the original quoted with `> ` under "On … wrote:";
    /// In-Reply-To and References set.
    Gmail,
    /// New text on top, the original unquoted under a From:/Sent:/To:/Subject:
    /// block; In-Reply-To and References set.
    Outlook,
    /// Like `Outlook`, but the client dropped In-Reply-To and References: only
    /// the subject tag threads it.
    OutlookTagOnly,
}

/// A reply from `from` to `original` in the given style.
pub fn reply(from: &str, original: &[u8], style: Reply, new_text: &str) -> Vec<u8> {
    let orig_from = super::header(original, "From").unwrap_or_default();
    let orig_subject = super::header(original, "Subject").unwrap_or_default();
    let orig_id = super::header(original, "Message-ID").unwrap_or_default();
    let orig_refs = super::header(original, "References").unwrap_or_default();
    let to = addr_of(&orig_from);
    let orig_text = text_of(original);
    let (prefix, quoted) = match style {
        Reply::Gmail => {
            let quoted: String = orig_text.lines().map(|l| format!("> {l}\n")).collect();
            (
                "Re: ",
                format!("On Sun, Nov 29, 2026 at 10:00 AM {orig_from} wrote:\n{quoted}"),
            )
        }
        Reply::Outlook | Reply::OutlookTagOnly => (
            "RE: ",
            format!(
                "________________________________\nFrom: {orig_from}\nSent: Sunday, November 29, 2026 10:00 AM\nTo: {from}\nSubject: {orig_subject}\n\n{orig_text}"
            ),
        ),
    };
    let headers = match style {
        Reply::OutlookTagOnly => String::new(),
        _ => format!(
            "In-Reply-To: {orig_id}\nReferences: {} {orig_id}",
            orig_refs.trim()
        ),
    };
    message(
        from,
        &to,
        &format!("{prefix}{orig_subject}"),
        &headers,
        &format!("{new_text}\n\n{quoted}"),
    )
}

/// The bare address in `Name <addr>`.
pub fn addr_of(s: &str) -> String {
    match (s.rfind('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => s[a + 1..b].to_string(),
        _ => s.trim().to_string(),
    }
}

/// The decoded plain-text body.
pub fn text_of(raw: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse(raw)
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default()
}

/// The verification code in an acknowledgement ("Verification code: XXXXX-XXXXX").
pub fn verification_code(raw: &[u8]) -> Option<String> {
    let text = text_of(raw);
    let after = text.split("Verification code:").nth(1)?;
    after.split_whitespace().next().map(str::to_string)
}

impl super::MailServers {
    /// Puts a plain request from `from` into `mailbox`'s INBOX (IMAP APPEND).
    pub async fn append_request(&self, mailbox: &str, from: &str, subject: &str) {
        self.append(mailbox, "INBOX", &request(from, mailbox, subject, "Hi\n"))
            .await;
    }

    /// Sends a "California Request to Know" from `from` to `mailbox` through
    /// Postfix (SMTP) and waits until it is in the INBOX (the first message
    /// there).
    pub async fn smtp_request(&self, mailbox: &str, from: &str) {
        let raw = request(from, mailbox, "California Request to Know", "Hi\n");
        self.send_smtp(from, &[mailbox], &raw).await;
        self.wait_for(mailbox, "INBOX", 1, std::time::Duration::from_secs(20))
            .await;
    }

    /// Waits up to `timeout` until `user`'s INBOX holds a mail whose Subject
    /// contains `needle`; returns the newest such mail.
    pub async fn mail_with_subject(
        &self,
        user: &str,
        needle: &str,
        timeout: std::time::Duration,
    ) -> Vec<u8> {
        super::wait_until(
            timeout,
            || format!("a mail with {needle:?} in its subject reaches {user}"),
            || async {
                let all = self.fetch_all(user, "INBOX").await;
                all.into_iter()
                    .rev()
                    .find(|m| super::subject(m).contains(needle))
            },
        )
        .await
    }
}

impl super::MailServers {
    /// Waits until `user`'s INBOX holds `n` messages and checks, once Postfix
    /// has delivered everything it was given, that it holds no more; returns them.
    pub async fn inbox_exactly(&self, user: &str, n: usize) -> Vec<Vec<u8>> {
        self.wait_for(user, "INBOX", n, std::time::Duration::from_secs(30))
            .await;
        self.wait_mail_delivered(std::time::Duration::from_secs(30))
            .await;
        let all = self.fetch_all(user, "INBOX").await;
        assert_eq!(
            all.len(),
            n,
            "{user} has {} messages, expected {n}",
            all.len()
        );
        all
    }
}
