//! Declaration documents of authorized agents (SPEC §7, CCPA regs §7063).
//!
//! Two halves:
//! - [`Blobs`], the file store: content-addressed under
//!   `storage.attachments_dir` as `sha256/ab/cd/<full hex>`. A sender-chosen
//!   name never becomes a path, so `../../etc/passwd` is just a label. Files are
//!   0600 and folders 0700, written to a temporary file in the target folder and
//!   renamed into place, so a crash leaves either the whole file or none.
//!   Identical documents are stored once.
//! - The register, the `attachments` table: one row per document received on
//!   an agent case, with its sanitised name, declared and sniffed type, size,
//!   SHA-256, message and status (`pending_review`, `accepted`, `rejected`)
//!   with reviewer and time.
//!
//! Files are written before the transaction that registers them commits: a
//! row never names a missing file. Intake writes them (fsynced) before it
//! even opens its write transaction ([`store_before_commit`]), so the
//! SQLite write lock is never held across disk syncs; inside the transaction
//! [`record`] only finds them. A rolled-back transaction can leave a file no
//! row names; it is harmless (the next copy of the same document reuses it,
//! and the purge sweeps files no row names).
//!
//! Attachments of consumers' own cases are not registered: they stay in the
//! stored raw message and the processed folder, and are no declarations.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::SqliteConnection;
use tracing::{debug, info};

use crate::cases::{Action, Case};
use crate::classify;
use crate::ids::CaseId;
use crate::mailroom::Mailroom;
use crate::message::attachment::sanitize_filename_nth;
use crate::message::{Attachment, sniff_type};
use crate::store::{self, StoreError};

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

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AttachmentError {
    let path = path.to_owned();
    move |source| AttachmentError::Io {
        action,
        path,
        source,
    }
}

/// A file in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha256: String,
    pub size: u64,
    pub path: PathBuf,
    /// False when an identical document was already stored.
    pub fresh: bool,
}

/// The content-addressed file store under `storage.attachments_dir`.
#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    pub fn new(root: impl Into<PathBuf>) -> Blobs {
        Blobs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/sha256/ab/cd/<hex>` for a full lower- or upper-case hex SHA-256.
    pub fn path_of(&self, sha256: &str) -> Result<PathBuf> {
        let hex = normalize_hash(sha256)?;
        if hex.len() != 64 {
            return Err(AttachmentError::InvalidHash(sha256.to_string()));
        }
        Ok(self
            .root
            .join("sha256")
            .join(&hex[..2])
            .join(&hex[2..4])
            .join(&hex))
    }

    /// Stores `bytes` (once per content) and says where.
    pub fn put(&self, bytes: &[u8]) -> Result<Stored> {
        let sha256 = crate::hash::sha256_hex(bytes);
        let path = self.path_of(&sha256)?;
        let size = bytes.len() as u64;
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        create_private_dirs(&self.root, &dir)?;
        // Same name, same content: a file whose bytes hash to its name is the
        // document. Anything else (damaged on disk) is replaced.
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && meta.is_file()
            && meta.len() == size
            && std::fs::read(&path).is_ok_and(|on_disk| crate::hash::sha256_hex(&on_disk) == sha256)
        {
            if meta.permissions().mode() & 0o777 != 0o600 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io("set permissions on", &path))?;
            }
            return Ok(Stored {
                sha256,
                size,
                path,
                fresh: false,
            });
        }
        write_atomically(&dir, &path, bytes)?;
        Ok(Stored {
            sha256,
            size,
            path,
            fresh: true,
        })
    }

    /// The file of `bytes` when it is already in the store with the right
    /// size (written moments ago by [`store_before_commit`]); no write, no
    /// sync, no re-read. `None` means [`Blobs::put`] must write it.
    pub fn find_stored(&self, bytes: &[u8]) -> Option<Stored> {
        let sha256 = crate::hash::sha256_hex(bytes);
        let path = self.path_of(&sha256).ok()?;
        let meta = std::fs::symlink_metadata(&path).ok()?;
        (meta.is_file() && meta.len() == bytes.len() as u64).then_some(Stored {
            sha256,
            size: meta.len(),
            path,
            fresh: false,
        })
    }

    /// The stored bytes, checked against their hash.
    pub fn get(&self, sha256: &str) -> Result<Vec<u8>> {
        let path = self.path_of(sha256)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AttachmentError::NotFound(sha256.to_string()));
            }
            Err(e) => return Err(io("read", &path)(e)),
        };
        if crate::hash::sha256_hex(&bytes) != normalize_hash(sha256)? {
            return Err(AttachmentError::Corrupt {
                sha256: sha256.to_string(),
                path,
            });
        }
        Ok(bytes)
    }

    /// Writes the stored document to `out` (mode 0600: it is personal data),
    /// replacing the file atomically. Returns the size.
    pub fn export(&self, sha256: &str, out: &Path) -> Result<u64> {
        let bytes = self.get(sha256)?;
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        write_atomically(&dir, out, &bytes)?;
        Ok(bytes.len() as u64)
    }
}

/// Lower-case hex, or an error for anything else.
fn normalize_hash(s: &str) -> Result<String> {
    let hex = s.trim().to_ascii_lowercase();
    if hex.is_empty() || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AttachmentError::InvalidHash(s.to_string()));
    }
    Ok(hex)
}

/// Creates `dir` and the folders between `root` and it with mode 0700.
fn create_private_dirs(root: &Path, dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create the folder", dir))?;
    // The umask can only take bits away; make sure of 0700 on what is ours.
    let mut at = dir;
    while at.starts_with(root) {
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o700))
            .map_err(io("set permissions on", at))?;
        match at.parent() {
            Some(p) if at != root => at = p,
            _ => break,
        }
    }
    Ok(())
}

/// A temporary file in `dir` (0600, created exclusively), synced, renamed to
/// `path`, then the folder synced so the rename survives a crash.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        file.write_all(bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        if let Ok(d) = File::open(dir) {
            // Not every file system can sync a folder; the data is synced.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

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

pub use crate::store::attachments::Document;

/// What [`record`] did with a message's attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recorded {
    /// Rows added to the register.
    pub documents: usize,
    /// Of those, the ones that can be a declaration or power of attorney
    /// (a declaration-like name, or a PDF, image or word-processor file): the
    /// count the engine uses to decide whether to ask for one.
    pub declarations: usize,
}

/// Whether a document on an agent case can be the written authorisation.
/// A forwarded message or a text snippet is not; a scan or a PDF may be,
/// whatever the agent called it.
pub fn could_be_declaration(a: &Attachment) -> bool {
    if classify::is_declaration_name(&a.filename) {
        return true;
    }
    let sniffed = sniff_type(&a.bytes);
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
/// the case exists (see [`Recorded::declarations`]).
pub fn declaration_count(is_agent: bool, attachments: &[Attachment]) -> usize {
    if !is_agent {
        return 0;
    }
    attachments
        .iter()
        .filter(|a| could_be_declaration(a))
        .count()
}

/// Stores the attachments of a message on an agent case and registers each
/// as a declaration document (`pending_review`). Non-agent cases: nothing is
/// stored (the raw message keeps them). Runs in the caller's transaction.
pub async fn record(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    case: &Case,
    message_row: i64,
    attachments: &[Attachment],
    now: DateTime<Utc>,
) -> Result<Recorded> {
    if !case.is_agent() || attachments.is_empty() {
        return Ok(Recorded::default());
    }
    let blobs = Blobs::new(&room.config.storage.attachments_dir);
    let mut recorded = Recorded::default();
    for (n, a) in attachments.iter().enumerate() {
        let stored = match blobs.find_stored(&a.bytes) {
            Some(stored) => stored,
            None => blobs.put(&a.bytes)?,
        };
        // Sanitised at parse time already; again here, as the register is
        // what the team's tools read (idempotent on a clean name).
        let filename = sanitize_filename_nth(Some(&a.filename), &a.declared_type, n + 1);
        let sniffed = sniff_type(&a.bytes);
        store::attachments::insert(
            conn,
            &store::attachments::NewDocument {
                case_id: &case.id,
                message_row,
                filename: &filename,
                declared_type: &a.declared_type,
                sniffed_type: sniffed,
                size: stored.size as i64,
                sha256: &stored.sha256,
                received_at: now,
            },
        )
        .await?;
        let mismatch = if type_family(&a.declared_type) != type_family(sniffed) {
            format!(
                ", declared {} but the content is {sniffed}",
                a.declared_type
            )
        } else {
            String::new()
        };
        store::events::append(
            conn,
            Some(&case.id),
            now,
            "daemon",
            crate::cases::Action::DocumentStored,
            &format!(
                "{} ({} bytes, {sniffed}{mismatch}) sha256 {}",
                filename, stored.size, stored.sha256
            ),
        )
        .await?;
        debug!(case = %case.id, sha256 = %stored.sha256, size = stored.size, fresh = stored.fresh, "Declaration document stored.");
        recorded.documents += 1;
        if could_be_declaration(a) {
            recorded.declarations += 1;
        }
    }
    info!(case = %case.id, documents = recorded.documents, "Declaration documents registered.");
    Ok(recorded)
}

/// Writes (and fsyncs) the attachments of an inbound message that may be
/// registered on an agent case, before intake opens its write transaction,
/// so that [`record`] inside it only finds them. Which messages: one that
/// reads as an agent's (known domain, wording, a declaration's name) or that
/// may belong to a case (a case tag or one of our Message-IDs referenced).
/// A file written for a message that then registers nothing is an orphan the
/// purge sweeps. Returns how many files were written or found.
pub fn store_before_commit(
    room: &Mailroom,
    inbound: &crate::message::Inbound,
    sender: &str,
    threaded: bool,
) -> Result<usize> {
    if inbound.attachments.is_empty()
        || inbound.over_limit.is_some()
        || over_limit(
            &inbound.attachments,
            room.config.agents.max_attachment_bytes,
        )
        .is_some()
    {
        return Ok(0);
    }
    let names: Vec<&str> = inbound
        .attachments
        .iter()
        .map(|a| a.filename.as_str())
        .collect();
    let agent = classify::detect_agent(
        sender,
        inbound.head(),
        &names,
        &room.config.agents.known_domains,
    );
    if !agent.is_agent && !threaded {
        return Ok(0);
    }
    let blobs = Blobs::new(&room.config.storage.attachments_dir);
    for a in &inbound.attachments {
        blobs.put(&a.bytes)?;
    }
    Ok(inbound.attachments.len())
}

/// `application/pdf` vs `application/x-pdf` are one family; `image/jpg` and
/// `image/jpeg` too. Only a different top-level type or a different
/// document format counts as a mismatch worth telling the team.
fn type_family(t: &str) -> String {
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

/// The case's documents, oldest first.
pub async fn for_case(conn: &mut SqliteConnection, case_id: &CaseId) -> Result<Vec<Document>> {
    Ok(store::attachments::for_case(conn, case_id).await?)
}

/// The register row of a document by full SHA-256 or a unique prefix of at
/// least 8 hex digits (the newest row when it arrived more than once).
pub async fn find(conn: &mut SqliteConnection, sha256: &str) -> Result<Document> {
    let hex = normalize_hash(sha256)?;
    if hex.len() < 8 {
        return Err(AttachmentError::InvalidHash(sha256.to_string()));
    }
    let shas = store::attachments::hashes_with_prefix(conn, &hex).await?;
    let sha = match shas.as_slice() {
        [] => return Err(AttachmentError::NotFound(hex)),
        [one] => one.clone(),
        _ => return Err(AttachmentError::Ambiguous(hex)),
    };
    Ok(store::attachments::newest(conn, &sha).await?)
}

/// Sets every `pending_review` document of the case to `status`, with the
/// reviewer and time. Returns how many rows changed.
pub async fn review_pending(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
    status: Status,
    reviewer: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    Ok(store::attachments::review_pending(conn, case_id, status.as_str(), reviewer, now).await?)
}

/// Called by casework after a team command was applied: `#declaration
/// accept` / `reject` settle the case's pending documents in the same
/// transaction. Other commands change nothing here.
pub async fn after_command(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
    command: Action,
    reviewer: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let status = match command {
        Action::DeclarationAccept => Status::Accepted,
        Action::DeclarationReject => Status::Rejected,
        _ => return Ok(()),
    };
    let n = review_pending(conn, case_id, status, reviewer, now).await?;
    if n > 0 {
        store::events::append(
            conn,
            Some(case_id),
            now,
            reviewer,
            crate::cases::Action::DocumentsReviewed,
            &format!("{n} document(s) {}", status.as_str()),
        )
        .await?;
    }
    Ok(())
}

/// The first attachment over `limit` bytes.
pub fn over_limit(attachments: &[Attachment], limit: u64) -> Option<&Attachment> {
    attachments.iter().find(|a| a.bytes.len() as u64 > limit)
}

/// The header block of a raw message (through the blank line).
pub fn header_block(raw: &[u8]) -> &[u8] {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(raw.len());
    &raw[..end]
}

/// A size in words for the team ("30.0 MB").
pub fn human_size(bytes: u64) -> String {
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

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn stores_content_addressed_private_and_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("attachments");
        let blobs = Blobs::new(&root);
        let pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n";
        let a = blobs.put(pdf).unwrap();
        let sha = crate::hash::sha256_hex(pdf);
        assert_eq!(a.sha256, sha);
        assert!(a.fresh);
        assert_eq!(
            a.path,
            root.join("sha256")
                .join(&sha[..2])
                .join(&sha[2..4])
                .join(&sha)
        );
        assert_eq!(std::fs::read(&a.path).unwrap(), pdf);
        assert_eq!(mode(&a.path), 0o600);
        for dir in [
            root.clone(),
            root.join("sha256"),
            root.join("sha256").join(&sha[..2]),
            a.path.parent().unwrap().to_owned(),
        ] {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
        let b = blobs.put(pdf).unwrap();
        assert!(!b.fresh, "identical content is stored once");
        assert_eq!(b.path, a.path);
        let entries: Vec<_> = std::fs::read_dir(a.path.parent().unwrap())
            .unwrap()
            .collect();
        assert_eq!(entries.len(), 1, "no temporary files left behind");
        assert_eq!(blobs.get(&sha.to_uppercase()).unwrap(), pdf);
    }

    #[test]
    fn export_writes_identical_bytes_private() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(tmp.path().join("a"));
        let bytes: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let s = blobs.put(&bytes).unwrap();
        let out = tmp.path().join("out.bin");
        std::fs::write(&out, b"old").unwrap();
        assert_eq!(blobs.export(&s.sha256, &out).unwrap(), 10_000);
        assert_eq!(std::fs::read(&out).unwrap(), bytes);
        assert_eq!(mode(&out), 0o600);
    }

    #[test]
    fn damaged_files_are_replaced_on_put_and_refused_on_get() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(tmp.path());
        let s = blobs.put(b"hello declaration").unwrap();
        std::fs::write(&s.path, b"HELLO declaration").unwrap();
        assert!(matches!(
            blobs.get(&s.sha256),
            Err(AttachmentError::Corrupt { .. })
        ));
        std::fs::write(&s.path, b"short").unwrap();
        assert!(blobs.put(b"hello declaration").unwrap().fresh);
        assert_eq!(blobs.get(&s.sha256).unwrap(), b"hello declaration");
    }

    #[test]
    fn hashes_are_checked() {
        let blobs = Blobs::new("/nonexistent");
        for bad in ["", "../../etc/passwd", "zz", &"a".repeat(65), "abc/def"] {
            assert!(
                matches!(blobs.path_of(bad), Err(AttachmentError::InvalidHash(_))),
                "{bad:?}"
            );
        }
        assert!(blobs.path_of(&"a".repeat(63)).is_err());
        assert!(matches!(
            blobs.get(&"ab".repeat(32)),
            Err(AttachmentError::NotFound(_))
        ));
    }

    #[test]
    fn declaration_candidates() {
        let att = |name: &str, ty: &str, bytes: &[u8]| Attachment {
            filename: name.into(),
            declared_type: ty.into(),
            bytes: bytes.to_vec(),
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
