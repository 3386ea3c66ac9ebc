//! The declaration rules, pure: which documents on an agent case can be the
//! written authorisation (CCPA regs §7063), how many a message brings, the
//! review status a document has, and when a declared type and the content
//! disagree enough to tell the team. No files, no database.

use std::str::FromStr;

use serde::Serialize;

use crate::classify;
use crate::message::{Attachment, sniff_type};

/// Review status of a declaration document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    PendingReview,
    Accepted,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::PendingReview => "pending_review",
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
        }
    }
}

impl FromStr for Status {
    type Err = crate::cases::ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Status::PendingReview, Status::Accepted, Status::Rejected]
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| crate::cases::ParseEnumError(s.to_string()))
    }
}

/// Whether a document on an agent case can be the written authorisation.
/// A forwarded message or a text snippet is not; a scan or a PDF may be,
/// whatever the agent called it.
pub fn could_be_declaration(a: &Attachment) -> bool {
    if classify::is_declaration_name(&a.filename) {
        return true;
    }
    let sniffed = sniff_type(a.head());
    sniffed == "application/pdf"
        || sniffed.starts_with("image/")
        || sniffed == "application/msword"
        || (sniffed == "application/zip" && is_word_processor_type(&a.declared_type))
}

fn is_word_processor_type(declared: &str) -> bool {
    matches!(
        declared,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            | "application/vnd.oasis.opendocument.text"
    )
}

/// The engine's declaration count for a message that opens a case, before
/// the case exists (see [`super::Recorded::declarations`]).
pub fn declaration_count(is_agent: bool, attachments: &[Attachment]) -> usize {
    if !is_agent {
        return 0;
    }
    attachments
        .iter()
        .filter(|a| could_be_declaration(a))
        .count()
}

/// `application/pdf` vs `application/x-pdf` are one family; `image/jpg` and
/// `image/jpeg` too. Only a different top-level type or a different
/// document format counts as a mismatch worth telling the team.
pub(crate) fn type_family(t: &str) -> String {
    let t = t.trim().to_ascii_lowercase();
    let (top, sub) = t.split_once('/').unwrap_or((t.as_str(), ""));
    let sub = sub.trim_start_matches("x-");
    match (top, sub) {
        ("image", _) => "image".into(),
        ("text", _) => "text".into(),
        ("application", "octet-stream") => "binary".into(),
        _ => format!("{top}/{sub}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declaration_candidates() {
        let att = |name: &str, ty: &str, bytes: &[u8]| Attachment {
            filename: name.into(),
            declared_type: ty.into(),
            bytes: bytes.to_vec(),
            stored: None,
        };
        let cases = [
            (att("Declaration.pdf", "application/pdf", b"%PDF-1.4"), true),
            (att("scan.pdf", "application/pdf", b"%PDF-1.7"), true),
            (att("scan.jpg", "image/jpeg", b"\xFF\xD8\xFF\xE0"), true),
            (att("notes.txt", "text/plain", b"hello"), false),
            (att("authorization.txt", "text/plain", b"I authorize"), true),
            (
                att(
                    "forwarded-message.eml",
                    "message/rfc822",
                    b"From: a\r\n\r\nx",
                ),
                false,
            ),
            (
                att(
                    "signed.docx",
                    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                    b"PK\x03\x04",
                ),
                true,
            ),
            (att("data.zip", "application/zip", b"PK\x03\x04"), false),
        ];
        for (a, want) in &cases {
            assert_eq!(could_be_declaration(a), *want, "{}", a.filename);
        }
        let all: Vec<Attachment> = cases.iter().map(|(a, _)| a.clone()).collect();
        assert_eq!(declaration_count(false, &all), 0);
        assert_eq!(declaration_count(true, &all), 5);
    }

    #[test]
    fn type_families() {
        assert_eq!(
            type_family("application/x-pdf"),
            type_family("application/pdf")
        );
        assert_eq!(type_family("image/jpg"), type_family("image/png"));
        assert_ne!(
            type_family("application/pdf"),
            type_family("application/octet-stream")
        );
    }
}
