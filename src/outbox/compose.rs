//! Turning an outgoing message into RFC 5322 bytes (SPEC §8 headers).
//!
//! The same bytes go to SMTP and to the Sent folder, so what the team sees
//! is exactly what the consumer got. lettre does the encoding: RFC 2047 for
//! non-ASCII headers, line folding, and it never lets a CR/LF in a value
//! start a new header; the text bodies are encoded in `outbox::body`, with
//! lettre's choice of encoding.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use super::body::text_body;

/// Why the mail is automatic (RFC 3834): replies to a consumer's message are
/// `auto-replied`; reminders, digests and notices are `auto-generated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoSubmitted {
    Replied,
    Generated,
    /// A person's decision (a denial, an extension, a completion): RFC 3834
    /// `no`, so the consumer's mail system treats it as a person's mail.
    No,
}

impl AutoSubmitted {
    pub(crate) fn header_value(self) -> &'static str {
        match self {
            AutoSubmitted::Replied => "auto-replied",
            AutoSubmitted::Generated => "auto-generated",
            AutoSubmitted::No => "no",
        }
    }
}

/// One message to send, fully rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// `Name <address>` (the configured `smtp.from`).
    pub from: String,
    /// The mailbox the answer should go to, usually the privacy mailbox.
    pub reply_to: String,
    pub to: Vec<String>,
    pub subject: String,
    /// Without angle brackets, e.g. `ccpa.00042.abc@privacy.example.com`.
    pub message_id: String,
    /// Without angle brackets; entries that are not valid message IDs
    /// (they may come from a consumer's mail) are left out.
    pub in_reply_to: Option<String>,
    /// Without angle brackets; invalid entries are left out.
    pub references: Vec<String>,
    pub auto_submitted: AutoSubmitted,
    pub text: String,
    pub html: Option<String>,
    pub date: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error(
        "invalid {field} address {value:?}: {source}; use \"Name <user@example.com>\" or \"user@example.com\""
    )]
    Address {
        field: &'static str,
        value: String,
        source: lettre::address::AddressError,
    },
    #[error("outgoing message has no recipient")]
    NoRecipient,
    #[error("invalid Message-ID {0:?}: it must look like left@right, without brackets or spaces")]
    MessageId(String),
    #[error("cannot build the message: {0}")]
    Build(#[from] lettre::error::Error),
}

/// Builds the RFC 5322 bytes of `out`.
pub fn compose(out: &Outgoing) -> Result<Vec<u8>, ComposeError> {
    let from = mailbox("From", &out.from)?;
    // Nearly always the same mailbox: parsed once.
    let reply_to = if out.reply_to == out.from {
        from.clone()
    } else {
        mailbox("Reply-To", &out.reply_to)?
    };
    if out.to.is_empty() {
        return Err(ComposeError::NoRecipient);
    }
    if !is_valid_msg_id(&out.message_id) {
        return Err(ComposeError::MessageId(out.message_id.clone()));
    }

    let mut builder = Message::builder()
        .from(from)
        .reply_to(reply_to)
        .subject(out.subject.as_str())
        .date(SystemTime::from(out.date))
        .message_id(Some(format!("<{}>", out.message_id)));
    for to in &out.to {
        builder = builder.to(mailbox("To", to)?);
    }
    if let Some(id) = out.in_reply_to.as_deref().and_then(clean_msg_id) {
        builder = builder.in_reply_to(format!("<{id}>"));
    }
    let references: Vec<String> = out
        .references
        .iter()
        .filter_map(|r| clean_msg_id(r))
        .map(|r| format!("<{r}>"))
        .collect();
    if !references.is_empty() {
        builder = builder.references(references.join(" "));
    }
    builder = builder
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            out.auto_submitted.header_value().to_owned(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
            "All".to_owned(),
        ));

    let text = text_body(&out.text);
    let message = match &out.html {
        Some(html) => {
            builder.multipart(MultiPart::alternative_plain_html(text, text_body(html)))?
        }
        None => builder.singlepart(SinglePart::plain(text))?,
    };
    Ok(message.formatted())
}

fn mailbox(field: &'static str, value: &str) -> Result<Mailbox, ComposeError> {
    value
        .trim()
        .parse::<Mailbox>()
        .map_err(|source| ComposeError::Address {
            field,
            value: value.to_owned(),
            source,
        })
}

/// `left@right` in printable ASCII without brackets or spaces: enough to
/// keep a header well-formed whatever the value came from.
fn is_valid_msg_id(id: &str) -> bool {
    let Some((left, right)) = id.split_once('@') else {
        return false;
    };
    !left.is_empty()
        && !right.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\'))
}

/// A referenced ID, tolerating surrounding brackets; `None` when unusable.
fn clean_msg_id(id: &str) -> Option<&str> {
    let id = id.trim();
    let id = id.strip_prefix('<').unwrap_or(id);
    let id = id.strip_suffix('>').unwrap_or(id);
    is_valid_msg_id(id).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use mail_parser::{HeaderValue as ParsedValue, MessageParser, MimeHeaders};

    fn sample() -> Outgoing {
        Outgoing {
            from: "Example Privacy <privacy@example.com>".into(),
            reply_to: "privacy@example.com".into(),
            to: vec!["Jane Consumer <jane@example.net>".into()],
            subject: "Your request CCPA-2026-00042".into(),
            message_id: "ccpa.00042.abcdef@example.com".into(),
            in_reply_to: Some("orig-1@example.net".into()),
            references: vec!["orig-0@example.net".into(), "<orig-1@example.net>".into()],
            auto_submitted: AutoSubmitted::Replied,
            text: "Hello Jane,\n\nwe received your request.\n".into(),
            html: Some("<p>Hello Jane,</p><p>we received your request.</p>".into()),
            date: Utc.with_ymd_and_hms(2026, 3, 2, 17, 4, 5).unwrap(),
        }
    }

    fn raw_header<'a>(msg: &'a mail_parser::Message<'a>, name: &'a str) -> Option<&'a str> {
        msg.header(name).and_then(|h| match h {
            ParsedValue::Text(t) => Some(t.as_ref()),
            _ => None,
        })
    }

    #[test]
    fn every_header_round_trips() {
        let raw = compose(&sample()).unwrap();
        let msg = MessageParser::default().parse(&raw).unwrap();

        let from = msg.from().unwrap().first().unwrap();
        assert_eq!(from.name(), Some("Example Privacy"));
        assert_eq!(from.address(), Some("privacy@example.com"));
        let reply_to = msg.reply_to().unwrap().first().unwrap();
        assert_eq!(reply_to.address(), Some("privacy@example.com"));
        let to = msg.to().unwrap().first().unwrap();
        assert_eq!(to.address(), Some("jane@example.net"));
        assert_eq!(msg.subject(), Some("Your request CCPA-2026-00042"));
        assert_eq!(msg.message_id(), Some("ccpa.00042.abcdef@example.com"));
        assert_eq!(msg.in_reply_to().as_text(), Some("orig-1@example.net"));
        let refs: Vec<&str> = msg
            .references()
            .as_text_list()
            .unwrap()
            .iter()
            .map(|s| s.as_ref())
            .collect();
        assert_eq!(refs, ["orig-0@example.net", "orig-1@example.net"]);
        assert_eq!(
            msg.date().unwrap().to_timestamp(),
            sample().date.timestamp()
        );
        assert_eq!(raw_header(&msg, "Auto-Submitted"), Some("auto-replied"));
        assert_eq!(raw_header(&msg, "X-Auto-Response-Suppress"), Some("All"));
        assert!(msg.header("Precedence").is_none());

        let ct = msg.content_type().unwrap();
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("alternative"));
        // Line ends are canonical CRLF on the wire.
        assert_eq!(
            msg.body_text(0).unwrap(),
            "Hello Jane,\r\n\r\nwe received your request.\r\n"
        );
        assert!(msg.body_html(0).unwrap().contains("<p>Hello Jane,</p>"));
    }

    #[test]
    fn plain_only_is_single_part_utf8() {
        let mut out = sample();
        out.html = None;
        out.auto_submitted = AutoSubmitted::Generated;
        out.text = "Grüße — déjà vu\n".into();
        let raw = compose(&out).unwrap();
        let msg = MessageParser::default().parse(&raw).unwrap();
        let ct = msg.content_type().unwrap();
        assert_eq!(ct.ctype(), "text");
        assert_eq!(ct.subtype(), Some("plain"));
        assert_eq!(ct.attribute("charset"), Some("utf-8"));
        assert_eq!(msg.body_text(0).unwrap(), "Grüße — déjà vu\r\n");
        assert_eq!(raw_header(&msg, "Auto-Submitted"), Some("auto-generated"));
        // Bytes on the wire stay 7-bit, so no server needs 8BITMIME.
        assert!(raw.is_ascii());
    }

    #[test]
    fn non_ascii_subject_and_name_are_encoded() {
        let mut out = sample();
        out.subject = "Ihre Anfrage — Auskunft über Daten".into();
        out.from = "Datenschutz Müller <privacy@example.com>".into();
        let raw = compose(&out).unwrap();
        assert!(raw.is_ascii());
        let msg = MessageParser::default().parse(&raw).unwrap();
        assert_eq!(msg.subject(), Some("Ihre Anfrage — Auskunft über Daten"));
        let from = msg.from().unwrap().first().unwrap();
        assert_eq!(from.name(), Some("Datenschutz Müller"));
    }

    #[test]
    fn header_injection_stays_in_the_subject() {
        let mut out = sample();
        out.subject = "Hi\r\nBcc: attacker@example.org".into();
        let raw = compose(&out).unwrap();
        let msg = MessageParser::default().parse(&raw).unwrap();
        assert!(msg.bcc().is_none());
        assert!(msg.header("Bcc").is_none());
    }

    #[test]
    fn unusable_references_are_dropped() {
        let mut out = sample();
        out.in_reply_to = Some("no brackets allowed <x@y> here".into());
        out.references = vec!["".into(), "a b@c".into(), "ok@example.net".into()];
        let raw = compose(&out).unwrap();
        let msg = MessageParser::default().parse(&raw).unwrap();
        assert!(msg.header("In-Reply-To").is_none());
        assert_eq!(msg.references().as_text(), Some("ok@example.net"));
    }

    #[test]
    fn invalid_inputs() {
        let cases: Vec<(Outgoing, &str)> = vec![
            (
                Outgoing {
                    from: "not an address".into(),
                    ..sample()
                },
                "From",
            ),
            (
                Outgoing {
                    reply_to: "@@".into(),
                    ..sample()
                },
                "Reply-To",
            ),
            (
                Outgoing {
                    to: vec!["x".into()],
                    ..sample()
                },
                "To",
            ),
            (
                Outgoing {
                    to: vec![],
                    ..sample()
                },
                "no recipient",
            ),
            (
                Outgoing {
                    message_id: "<a@b>".into(),
                    ..sample()
                },
                "Message-ID",
            ),
            (
                Outgoing {
                    message_id: "nobrackets".into(),
                    ..sample()
                },
                "Message-ID",
            ),
        ];
        for (out, want) in cases {
            let err = compose(&out).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn multiple_recipients() {
        let mut out = sample();
        out.to = vec!["a@example.net".into(), "B <b@example.net>".into()];
        let raw = compose(&out).unwrap();
        let msg = MessageParser::default().parse(&raw).unwrap();
        let to: Vec<&str> = msg
            .to()
            .unwrap()
            .iter()
            .filter_map(|a| a.address())
            .collect();
        assert_eq!(to, ["a@example.net", "b@example.net"]);
    }
}
