//! Declaration documents of authorized agents (SPEC §7, CCPA regs §7063),
//! in three parts:
//! - [`blobs`]: the file store, content-addressed under
//!   `storage.attachments_dir`; knows nothing of cases.
//! - [`register`]: the declaration register, what the `attachments` table
//!   holds about each document and the transaction-side steps (store before
//!   the commit, register inside it, settle on `#declaration accept|reject`).
//! - [`rules`]: the declaration rules, pure: which documents can be a
//!   declaration, their review status, type mismatches.
//!
//! This file keeps the shared error and the size limits intake applies to
//! attachments before anything is stored.
//!
//! Attachments of consumers' own cases are not registered: they stay in the
//! stored raw message and the processed folder, and are no declarations.

use std::path::{Path, PathBuf};

use crate::message::Attachment;
use crate::store::StoreError;

pub mod blobs;
pub mod register;
pub mod rules;

pub use blobs::{Blobs, Stored};
pub use register::{
    Document, Recorded, after_command, find, for_case, record, review_pending, store_before_commit,
};
pub use rules::{Status, could_be_declaration, declaration_count};

/// Errors of the attachment store. Messages name the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("cannot {action} {path}: {source} (check storage.attachments_dir and its permissions)")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0:?} is not a SHA-256: give the 64 hex digits `cases show ID` lists, or at least 8 of them"
    )]
    InvalidHash(String),
    #[error(
        "no stored document has SHA-256 {0}; `cases show ID --json` lists the attachments of a case"
    )]
    NotFound(String),
    #[error("SHA-256 prefix {0} names more than one document; give more digits")]
    Ambiguous(String),
    #[error("the stored file {path} does not match its SHA-256 {sha256}; restore it from a backup")]
    Corrupt { sha256: String, path: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AttachmentError {
    fn from(e: sqlx::Error) -> Self {
        AttachmentError::Store(StoreError::Sql(e))
    }
}

pub type Result<T, E = AttachmentError> = std::result::Result<T, E>;

pub(crate) fn io(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> AttachmentError {
    let path = path.to_owned();
    move |source| AttachmentError::Io {
        action,
        path,
        source,
    }
}

/// The first attachment over `limit` bytes.
pub(crate) fn over_limit(attachments: &[Attachment], limit: u64) -> Option<&Attachment> {
    attachments.iter().find(|a| a.size() > limit)
}

/// The header block of a raw message (through the blank line).
pub(crate) fn header_block(raw: &[u8]) -> &[u8] {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(raw.len());
    &raw[..end]
}

/// A size in words for the team ("30.0 MB").
pub(crate) fn human_size(bytes: u64) -> String {
    const MB: f64 = 1024.0 * 1024.0;
    if bytes >= 1024 * 1024 {
        format!("{:.1} MiB", bytes as f64 / MB)
    } else if bytes >= 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_and_limits() {
        assert_eq!(
            header_block(b"A: 1\r\nB: 2\r\n\r\nbody"),
            b"A: 1\r\nB: 2\r\n\r\n"
        );
        assert_eq!(header_block(b"A: 1\n\nbody"), b"A: 1\n\n");
        assert_eq!(header_block(b"A: 1"), b"A: 1");
        let small = Attachment {
            filename: "a".into(),
            declared_type: "text/plain".into(),
            bytes: vec![0; 10],
            stored: None,
        };
        let big = Attachment {
            bytes: vec![0; 11],
            ..small.clone()
        };
        assert!(over_limit(std::slice::from_ref(&small), 10).is_none());
        assert_eq!(over_limit(&[small, big.clone()], 10), Some(&big));
        assert_eq!(human_size(10), "10 bytes");
        assert_eq!(human_size(30 * 1024 * 1024), "30.0 MiB");
    }
}
