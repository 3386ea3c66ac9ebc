//! The declaration register: the `attachments` table's side of the
//! documents (its rows are `store/attachments.rs`). One row per document
//! received on an agent case, with its sanitised name, declared and sniffed
//! type, size, SHA-256, message and review status with reviewer and time.
//!
//! Files are written before the transaction that registers them commits: a
//! row never names a missing file. Intake writes them (fsynced) before it
//! even opens its write transaction ([`store_before_commit`]), so the
//! SQLite write lock is never held across disk syncs; inside the
//! transaction [`record`] only finds them. A rolled-back transaction can
//! leave a file no row names; it is harmless (the next copy of the same
//! document reuses it, and the purge sweeps files no row names).

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use tracing::{debug, info};

use super::blobs::{Blobs, normalize_hash};
use super::rules::{Status, could_be_declaration, type_family};
use super::{AttachmentError, Result, over_limit};
use crate::cases::{Action, Case};
use crate::classify;
use crate::ids::CaseId;
use crate::mailroom::Mailroom;
use crate::message::Attachment;
use crate::message::attachment::sanitize_filename_nth;
use crate::message::sniff_type;
use crate::store;

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
        let stored = match &a.stored {
            // Written to the store as the message was fetched.
            Some(content) => blobs.find(&content.sha256, content.size)?,
            None => match blobs.find_stored(&a.bytes) {
                Some(stored) => stored,
                None => blobs.put(&a.bytes)?,
            },
        };
        // Sanitised at parse time already; again here, as the register is
        // what the team's tools read (idempotent on a clean name).
        let filename = sanitize_filename_nth(Some(&a.filename), &a.declared_type, n + 1);
        let sniffed = sniff_type(a.head());
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
    let agent = classify::agent_of(sender, inbound, &room.config.agents.known_domains);
    if !agent.is_agent && !threaded {
        return Ok(0);
    }
    let blobs = Blobs::new(&room.config.storage.attachments_dir);
    // Those already stored were written as the message was fetched.
    for a in inbound.attachments.iter().filter(|a| a.stored.is_none()) {
        blobs.put(&a.bytes)?;
    }
    Ok(inbound.attachments.len())
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
