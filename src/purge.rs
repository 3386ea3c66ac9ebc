//! Retention (SPEC §9 `purge`, CCPA regs §7101 and §7060(d)).
//!
//! Two passes, both run daily by the scheduler and by `privacy-mailroom purge`:
//!
//! 1. **Verification data** of a closed case is deleted [`VERIFICATION_GRACE_DAYS`]
//!    after it closed: the verification code, and the stored text and raw
//!    bytes of every inbound message received before the case was verified
//!    (or before it closed, if it never was). Those messages are what the
//!    consumer sent to prove who they are. The grace period leaves the team
//!    time for a follow-up or a dispute; §7060(d) asks for deletion "as soon as
//!    practical after processing the request".
//! 2. **Personal data** of a case closed more than `policy.retention_months`
//!    ago is removed: names and addresses (replaced by [`MARKER`]), subjects,
//!    bodies and raw bytes of every message and outbox mail, attachment files
//!    (and their original names), and the actor and free-text detail of events
//!    that could hold personal data. What stays is the §7101 record: case id,
//!    kind, manner, dates, state, nature of the response and the basis for a
//!    denial. `purged_at` is set and a `purged` event appended.
//!
//! Open cases are never touched. Originals in the IMAP processed folder are
//! outside the daemon's reach by design (it never deletes mail): the mail
//! server's own retention must cover that folder (see docs/operations.md).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Months, Utc};
use serde::Serialize;
use sqlx::SqliteConnection;
use tracing::{info, warn};

use crate::config::Config;
use crate::store::{Store, StoreError, events};

/// What replaces a removed name, address or free text.
pub const MARKER: &str = "[purged]";

/// Days after closing before verification data is deleted.
pub const VERIFICATION_GRACE_DAYS: i64 = 30;

/// Event actions whose detail never holds personal data; the detail of any
/// other action is redacted at purge (an allow-list, so a new action is
/// redacted until someone decides otherwise). `deny` is kept: its detail is
/// the basis for the denial, which §7101 requires in the record.
const SAFE_DETAIL_ACTIONS: &[&str] = &[
    "opened",
    "state",
    "verify",
    "deny",
    "complete",
    "due_date",
    "reminder",
    "opt_out_answered",
    "declaration_received",
    "declaration_accept",
    "poa",
    "verification_submitted",
    "withdrawn",
    "consumer_wrote",
    "withdrawal_unclear",
    "opened_together",
    "reply_suppressed",
    "foreign_message",
    "refused",
    "purged",
    "verification_data_deleted",
];

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "cannot remove attachment file {path}: {source}; check storage.attachments_dir permissions"
    )]
    RemoveFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for PurgeError {
    fn from(e: sqlx::Error) -> Self {
        PurgeError::Store(StoreError::Sql(e))
    }
}

/// `purge [--dry-run]`: prints what was (or would be) removed.
pub async fn cli(
    config: &Config,
    dry_run: bool,
) -> Result<std::process::ExitCode, crate::cli::Failure> {
    let store = Store::open(&config.storage.database).await?;
    let report = run(&store, config, Utc::now(), dry_run).await;
    store.close().await;
    let report = report?;
    let verb = if dry_run { "would be" } else { "were" };
    println!(
        "{} closed cases older than {} months {verb} purged ({} messages, {} attachments, {} files removed):",
        report.purged_cases.len(),
        config.policy.retention_months,
        report.messages,
        report.attachments,
        report.files_removed
    );
    for id in &report.purged_cases {
        println!("  {id}");
    }
    println!(
        "{} closed cases {verb} cleared of verification data ({} days after closing):",
        report.verification_deleted.len(),
        VERIFICATION_GRACE_DAYS
    );
    for id in &report.verification_deleted {
        println!("  {id}");
    }
    if !dry_run {
        println!(
            "{} rows of mail that belonged to no case were cleared of personal data.",
            report.caseless_rows
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// What one purge run did (or, for a dry run, would do).
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct PurgeReport {
    pub dry_run: bool,
    /// Cases whose personal data was removed.
    pub purged_cases: Vec<String>,
    /// Cases whose verification data was deleted.
    pub verification_deleted: Vec<String>,
    pub messages: u64,
    pub attachments: u64,
    pub files_removed: u64,
    /// Messages, outbox rows and events that belonged to no case (review
    /// mail, notices about it) cleared after `retention_months`.
    pub caseless_rows: u64,
}

/// Cases closed before `now - retention_months` and not purged yet.
pub fn retention_cutoff(now: DateTime<Utc>, retention_months: u32) -> DateTime<Utc> {
    now.checked_sub_months(Months::new(retention_months))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Runs both passes. With `dry_run`, only reports what would be done.
pub async fn run(
    store: &Store,
    config: &Config,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<PurgeReport, PurgeError> {
    let mut report = PurgeReport {
        dry_run,
        ..PurgeReport::default()
    };
    let grace_cutoff = now - chrono::Duration::days(VERIFICATION_GRACE_DAYS);
    let due: Vec<String> = {
        let mut conn = store.conn().await?;
        sqlx::query_scalar(
            "SELECT id FROM cases WHERE closed_at IS NOT NULL AND closed_at <= ?
               AND verification_purged_at IS NULL AND purged_at IS NULL
               AND state IN ('completed', 'denied', 'closed', 'withdrawn') ORDER BY id",
        )
        .bind(grace_cutoff)
        .fetch_all(&mut *conn)
        .await?
    };
    for id in due {
        if !dry_run {
            let mut tx = store.begin().await?;
            let n = delete_verification_data(&mut tx, &id, now).await?;
            tx.commit().await?;
            report.messages += n;
        }
        report.verification_deleted.push(id);
    }

    let cutoff = retention_cutoff(now, config.policy.retention_months);
    let old: Vec<String> = {
        let mut conn = store.conn().await?;
        sqlx::query_scalar(
            "SELECT id FROM cases WHERE closed_at IS NOT NULL AND closed_at < ?
               AND purged_at IS NULL
               AND state IN ('completed', 'denied', 'closed', 'withdrawn') ORDER BY id",
        )
        .bind(cutoff)
        .fetch_all(&mut *conn)
        .await?
    };
    for id in old {
        if dry_run {
            let mut conn = store.conn().await?;
            let (m, a): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM messages WHERE case_id = ?1),
                        (SELECT COUNT(*) FROM attachments WHERE case_id = ?1)",
            )
            .bind(&id)
            .fetch_one(&mut *conn)
            .await?;
            report.messages += m as u64;
            report.attachments += a as u64;
        } else {
            let mut tx = store.begin().await?;
            let done = purge_case(&mut tx, config, &id, now).await?;
            tx.commit().await?;
            // Files go after the commit: a crash in between leaves an orphan
            // file (removed by the next run), never a row without its file.
            for sha in &done.orphaned_files {
                report.files_removed +=
                    remove_attachment_files(&config.storage.attachments_dir, sha)?;
            }
            report.messages += done.messages;
            report.attachments += done.attachments;
        }
        report.purged_cases.push(id);
    }
    if !dry_run {
        let mut tx = store.begin().await?;
        report.caseless_rows = purge_caseless(&mut tx, cutoff).await?;
        tx.commit().await?;
        report.files_removed +=
            sweep_orphan_files(store, &config.storage.attachments_dir, now).await?;
    }
    if !dry_run
        && (!report.purged_cases.is_empty()
            || !report.verification_deleted.is_empty()
            || report.caseless_rows > 0)
    {
        info!(
            purged = report.purged_cases.len(),
            verification_deleted = report.verification_deleted.len(),
            messages = report.messages,
            files = report.files_removed,
            "Retention purge done."
        );
    }
    Ok(report)
}

/// Mail that never belonged to a case, older than `cutoff`: review messages,
/// automatic mail, notices and summaries about them. Their personal data goes
/// like a purged case's; the rows stay (they are how the originals were filed).
async fn purge_caseless(
    conn: &mut SqliteConnection,
    cutoff: DateTime<Utc>,
) -> Result<u64, PurgeError> {
    let messages = sqlx::query(
        "UPDATE messages SET raw = NULL, body_text = NULL, subject = ?1, from_addr = ?1,
                message_id = NULL
         WHERE case_id IS NULL AND at < ?2 AND from_addr IS NOT ?1",
    )
    .bind(MARKER)
    .bind(cutoff)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let outbox = sqlx::query(
        "UPDATE outbox SET raw = X'', recipients = '[]', rate_key = ?1, subject = ?1,
                last_error = NULL, append_error = NULL
         WHERE case_id IS NULL AND created_at < ?2 AND status != 'pending' AND rate_key != ?1",
    )
    .bind(MARKER)
    .bind(cutoff)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let events = sqlx::query(
        "UPDATE events SET actor = CASE WHEN actor = 'daemon' THEN actor ELSE ?1 END, detail = ?1
         WHERE case_id IS NULL AND at < ?2 AND detail != ?1",
    )
    .bind(MARKER)
    .bind(cutoff)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(messages + outbox + events)
}

/// Removes stored files no unpurged attachment row refers to: left behind by
/// a purge interrupted between its commit and the file removal, or by a
/// message whose transaction rolled back. Files younger than an hour are left
/// alone (intake writes a file just before its transaction commits).
async fn sweep_orphan_files(
    store: &Store,
    attachments_dir: &Path,
    now: DateTime<Utc>,
) -> Result<u64, PurgeError> {
    let root = attachments_dir.join("sha256");
    let Ok(level1) = std::fs::read_dir(&root) else {
        return Ok(0);
    };
    let young = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map(|t| DateTime::<Utc>::from(t) > now - chrono::Duration::hours(1))
            .unwrap_or(true)
    };
    let mut removed = 0;
    let mut conn = store.conn().await?;
    for a in level1.flatten() {
        for b in std::fs::read_dir(a.path()).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(b.path()).into_iter().flatten().flatten() {
                let path = file.path();
                let Some(sha) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if sha.len() != 64 || young(&path) {
                    continue;
                }
                let used: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM attachments a LEFT JOIN cases c ON c.id = a.case_id
                     WHERE a.sha256 = ? AND (a.case_id IS NULL OR c.purged_at IS NULL)",
                )
                .bind(sha)
                .fetch_one(&mut *conn)
                .await?;
                if used == 0 {
                    removed += remove_attachment_files(attachments_dir, sha)?;
                }
            }
        }
    }
    Ok(removed)
}

/// §7060(d): the code and the bodies of the messages received before the
/// case was verified (or closed). Returns how many messages were cleared.
async fn delete_verification_data(
    conn: &mut SqliteConnection,
    id: &str,
    now: DateTime<Utc>,
) -> Result<u64, PurgeError> {
    let cleared = sqlx::query(
        "UPDATE messages SET raw = NULL, body_text = NULL
         WHERE case_id = ?1 AND direction = 'in'
           AND at <= (SELECT COALESCE(verified_at, closed_at) FROM cases WHERE id = ?1)
           AND (raw IS NOT NULL OR body_text IS NOT NULL)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query("UPDATE cases SET verification_code = '', verification_purged_at = ? WHERE id = ?")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    events::append(
        conn,
        Some(id),
        now,
        "daemon",
        "verification_data_deleted",
        &format!("verification code and {cleared} verification message bodies deleted (CCPA regs §7060(d))"),
    )
    .await?;
    Ok(cleared)
}

struct CasePurge {
    messages: u64,
    attachments: u64,
    /// Attachment hashes no unpurged case refers to any more.
    orphaned_files: Vec<String>,
}

async fn purge_case(
    conn: &mut SqliteConnection,
    config: &Config,
    id: &str,
    now: DateTime<Utc>,
) -> Result<CasePurge, PurgeError> {
    // The parties' addresses, to recognise them as event actors.
    let parties: Option<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT requester, agent, consumer FROM cases WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some((requester, agent, consumer)) = parties else {
        return Ok(CasePurge {
            messages: 0,
            attachments: 0,
            orphaned_files: Vec::new(),
        });
    };
    let senders: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT DISTINCT from_addr FROM messages WHERE case_id = ? AND direction = 'in'",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let mut personal: Vec<String> = [Some(requester), agent, consumer]
        .into_iter()
        .chain(senders)
        .flatten()
        .map(|a| a.to_lowercase())
        .filter(|a| !a.is_empty() && !config.is_member(a))
        .collect();
    personal.sort();
    personal.dedup();

    sqlx::query(
        "UPDATE cases SET requester = ?1,
            agent = CASE WHEN agent IS NULL THEN NULL ELSE ?1 END,
            consumer = CASE WHEN consumer IS NULL THEN NULL ELSE ?1 END,
            consumer_name = CASE WHEN consumer_name IS NULL THEN NULL ELSE ?1 END,
            subject = '', verification_code = '', thread_root = NULL, notice_root = NULL,
            verification_purged_at = COALESCE(verification_purged_at, ?2),
            purged_at = ?2, updated_at = ?2
         WHERE id = ?3",
    )
    .bind(MARKER)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let messages = sqlx::query(
        "UPDATE messages SET subject = '', raw = NULL, body_text = NULL,
            from_addr = CASE WHEN from_addr IS NULL THEN NULL ELSE ?1 END
         WHERE case_id = ?2",
    )
    .bind(MARKER)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query(
        "UPDATE outbox SET raw = x'', subject = '', recipients = '[]', rate_key = ?1,
            envelope_from = ?1, last_error = NULL
         WHERE case_id = ?2 AND status != 'pending'",
    )
    .bind(MARKER)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let hashes: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT sha256 FROM attachments WHERE case_id = ?")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    let attachments =
        sqlx::query("UPDATE attachments SET filename = ?1, reviewer = NULL WHERE case_id = ?2")
            .bind(MARKER)
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    let mut orphaned_files = Vec::new();
    for sha in hashes {
        let still_used: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM attachments a LEFT JOIN cases c ON c.id = a.case_id
             WHERE a.sha256 = ? AND (a.case_id IS NULL OR c.purged_at IS NULL)",
        )
        .bind(&sha)
        .fetch_one(&mut *conn)
        .await?;
        if still_used == 0 {
            orphaned_files.push(sha);
        }
    }

    // Events: the trigger of migration 0002 allows exactly this, and only
    // now that purged_at is set.
    let rows: Vec<(i64, String, String, String)> =
        sqlx::query_as("SELECT id, actor, action, detail FROM events WHERE case_id = ?")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    let mut redacted = 0u64;
    for (event_id, actor, action, detail) in rows {
        let new_actor = if personal.contains(&actor.to_lowercase()) {
            MARKER
        } else {
            actor.as_str()
        };
        let new_detail = if detail.is_empty() || SAFE_DETAIL_ACTIONS.contains(&action.as_str()) {
            detail.as_str()
        } else {
            MARKER
        };
        if new_actor != actor || new_detail != detail {
            sqlx::query("UPDATE events SET actor = ?, detail = ? WHERE id = ?")
                .bind(new_actor)
                .bind(new_detail)
                .bind(event_id)
                .execute(&mut *conn)
                .await?;
            redacted += 1;
        }
    }
    events::append(
        conn,
        Some(id),
        now,
        "daemon",
        "purged",
        &format!(
            "personal data removed after {} months: {messages} messages, {attachments} attachments, {redacted} events redacted; the §7101 record is kept",
            config.policy.retention_months
        ),
    )
    .await?;
    Ok(CasePurge {
        messages,
        attachments,
        orphaned_files,
    })
}

/// Removes the stored file of `sha` (the store's own layout; a malformed
/// hash names no file and removes nothing).
fn remove_attachment_files(dir: &Path, sha: &str) -> Result<u64, PurgeError> {
    let Ok(path) = crate::attachments::Blobs::new(dir).path_of(sha) else {
        return Ok(0);
    };
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(1),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => {
            warn!(path = %path.display(), error = %source, "Cannot remove an attachment file.");
            Err(PurgeError::RemoveFile { path, source })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cutoff_is_calendar_months() {
        let now = Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap();
        let cases = [
            (24, Utc.with_ymd_and_hms(2024, 3, 31, 12, 0, 0).unwrap()),
            (1, Utc.with_ymd_and_hms(2026, 2, 28, 12, 0, 0).unwrap()),
            (36, Utc.with_ymd_and_hms(2023, 3, 31, 12, 0, 0).unwrap()),
        ];
        for (months, want) in cases {
            assert_eq!(retention_cutoff(now, months), want, "{months}");
        }
    }

    #[test]
    fn removing_a_malformed_hash_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("passwd");
        std::fs::write(&victim, "x").unwrap();
        assert_eq!(remove_attachment_files(dir.path(), "../passwd").unwrap(), 0);
        assert_eq!(remove_attachment_files(dir.path(), "abc").unwrap(), 0);
        assert!(victim.exists());
    }

    #[test]
    fn free_text_actions_are_not_safe() {
        for action in [
            "note",
            "close",
            "extend",
            "declaration_reject",
            "team_message",
        ] {
            assert!(!SAFE_DETAIL_ACTIONS.contains(&action), "{action}");
        }
        assert!(SAFE_DETAIL_ACTIONS.contains(&"deny"));
    }
}
