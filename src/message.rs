//! Parsing of one fetched message into an owned [`Inbound`], plus the pieces
//! later stages need: automatic-mail detection, delivery reports, the new text
//! of a reply, and attachments with safe names.

pub mod attachment;
pub mod auto;
pub mod parse;
pub mod reply_text;
pub(crate) mod split;

use chrono::{DateTime, Utc};

pub use attachment::{sanitize_filename, sniff_type};
pub use auto::AutoKind;
pub use parse::{parse, parse_with};

/// A mailbox address, lower-cased, with the display name if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub addr: String,
    pub name: Option<String>,
}

/// One attachment as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// Sanitised original name (no path parts, no control characters, never empty).
    pub filename: String,
    /// The content type the sender declared, lower-case `type/subtype`.
    pub declared_type: String,
    /// The decoded content; empty when it is [`Attachment::stored`].
    pub bytes: Vec<u8>,
    /// The content of a large message's attachment, written to the blob
    /// store as it was fetched instead of held here (`sync::spool`).
    pub stored: Option<StoredContent>,
}

/// An attachment's content already in the blob store: a large message is
/// fetched part by part, and its big attachments never sit in memory whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredContent {
    /// SHA-256 of the decoded content: its file in the blob store.
    pub sha256: String,
    pub size: u64,
    /// Its first bytes, enough to tell the type by content ([`attachment::sniff_type`]).
    pub head: Vec<u8>,
}

impl Attachment {
    /// The decoded size, wherever the content is.
    pub fn size(&self) -> u64 {
        self.stored
            .as_ref()
            .map_or(self.bytes.len() as u64, |s| s.size)
    }

    /// The leading bytes that tell the type by content.
    pub fn head(&self) -> &[u8] {
        self.stored.as_ref().map_or(&self.bytes, |s| &s.head)
    }
}

/// What a delivery status notification reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dsn {
    /// Message-ID (without brackets) of the message that failed, when the report
    /// quotes its headers.
    pub original_message_id: Option<String>,
    pub failed_recipients: Vec<String>,
    /// `Action: failed` (or a 5.x.x status) rather than delayed/relayed.
    pub permanent: bool,
}

/// An owned, parsed inbound message. Everything the rest of the daemon needs;
/// the raw bytes are kept separately by the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inbound {
    /// Message-ID without angle brackets.
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// Decoded subject (RFC 2047), unfolded; empty when absent.
    pub subject: String,
    pub from: Option<Address>,
    pub reply_to: Option<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub date: Option<DateTime<Utc>>,
    /// The readable text: text/plain, or text converted from HTML when the
    /// message has no plain part.
    pub text: String,
    /// Set when the message is automatic mail that must get no reply (SPEC §8).
    pub auto: Option<AutoKind>,
    /// Set for a multipart/report delivery status notification.
    pub dsn: Option<Dsn>,
    pub attachments: Vec<Attachment>,
    /// Raw values of every `Authentication-Results` header.
    pub authentication_results: Vec<String>,
    /// Size of the raw message in bytes.
    pub size: usize,
    /// The MIME shape: how many parts, how deeply nested, how many attachments.
    pub shape: MimeShape,
    /// Set when the shape is over a [`MimeLimits`] cap: then no attachment
    /// was extracted, and intake sends the message to review with the reason.
    pub over_limit: Option<MimeExcess>,
}

/// Counts of a parsed message's MIME structure (attached messages included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MimeShape {
    pub parts: usize,
    pub depth: usize,
    pub attachments: usize,
}

/// Caps on the MIME structure of one message (`imap.max_mime_parts`,
/// `imap.max_mime_depth`, `agents.max_attachments`). A message of 100,000
/// tiny parts is a few megabytes; without a cap each part would become a
/// stored document, written and fsynced while intake holds the write lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MimeLimits {
    pub max_parts: usize,
    pub max_depth: usize,
    pub max_attachments: usize,
}

impl Default for MimeLimits {
    fn default() -> Self {
        MimeLimits {
            max_parts: 1000,
            max_depth: 20,
            max_attachments: 20,
        }
    }
}

/// Which cap a message is over, with the count found and the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MimeExcess {
    Parts { found: usize, max: usize },
    Depth { found: usize, max: usize },
    Attachments { found: usize, max: usize },
}

impl std::fmt::Display for MimeExcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MimeExcess::Parts { found, max } => write!(
                f,
                "the message has {found} MIME parts, over imap.max_mime_parts ({max})"
            ),
            MimeExcess::Depth { found, max } => write!(
                f,
                "the message's MIME parts are nested {found} deep, over imap.max_mime_depth ({max})"
            ),
            MimeExcess::Attachments { found, max } => write!(
                f,
                "the message has {found} attachments, over agents.max_attachments ({max})"
            ),
        }
    }
}

/// How much of a body the classifier, the reply-text extraction and the
/// command parser read. A request, a reply or a command is in the first
/// lines; a 50 MiB body must not hold the intake transaction for minutes.
pub(crate) const ANALYSIS_LIMIT: usize = 256 * 1024;

impl Inbound {
    /// The first [`ANALYSIS_LIMIT`] bytes of the text, cut at a character boundary.
    pub fn head(&self) -> &str {
        if self.text.len() <= ANALYSIS_LIMIT {
            return &self.text;
        }
        let mut end = ANALYSIS_LIMIT;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        &self.text[..end]
    }
}
