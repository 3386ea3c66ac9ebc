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

use crate::cases::{Action, Template};
use crate::config::{Config, TeamConfig};
use crate::ids::CaseId;
use crate::store::{Store, StoreError, events, retention};

/// What replaces a removed name, address or free text.
pub(crate) const MARKER: &str = "[purged]";

/// Days after closing before verification data is deleted.
pub(crate) const VERIFICATION_GRACE_DAYS: i64 = 30;

/// The templates whose mail carries the verification code
/// ([`Template::carries_verification_code`]): their stored bodies go with
/// the code.
pub(crate) fn code_templates() -> Vec<Template> {
    Template::ALL
        .into_iter()
        .filter(|t| t.carries_verification_code())
        .collect()
}

/// Whether an event's detail survives purge: an allow-list
/// ([`Action::purge_keeps_detail`], the team commands' from their table), so
/// an unknown action is redacted. `deny` is kept: its detail is the basis for
/// the denial, which §7101 requires in the record.
fn keeps_detail(action: &str) -> bool {
    action
        .parse::<Action>()
        .is_ok_and(Action::purge_keeps_detail)
}

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
) -> Result<std::process::ExitCode, crate::errors::Failure> {
    let store = Store::open(&config.storage.database).await?;
    let report = run(&store, config, &config.team, Utc::now(), dry_run).await;
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
    let removed = if dry_run { "would remove" } else { "removed" };
    for id in &report.purged_cases {
        println!(
            "  {id}: {removed} the requester's, agent's and consumer's addresses and names, the \
             subjects, bodies and raw bytes of its mail, its declaration files and free-text \
             notes; keeps the §7101 record (dates, kind, response, basis for denial)"
        );
    }
    println!(
        "{} closed cases {verb} cleared of verification data ({} days after closing):",
        report.verification_deleted.len(),
        VERIFICATION_GRACE_DAYS
    );
    for id in &report.verification_deleted {
        println!(
            "  {id}: {removed} the verification code, the text and raw bytes of what the \
             requester sent before verification, and the stored text and raw bytes of our mail \
             that carried the code (acknowledgement, verification reminder, agent mail); keeps \
             the §7101 record (dates, kind, manner, response, basis for denial) and the rows of \
             that mail (date, template, status)"
        );
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
    pub purged_cases: Vec<CaseId>,
    /// Cases whose verification data was deleted.
    pub verification_deleted: Vec<CaseId>,
    pub messages: u64,
    pub attachments: u64,
    pub files_removed: u64,
    /// Messages, outbox rows and events that belonged to no case (review
    /// mail, notices about it) cleared after `retention_months`.
    pub caseless_rows: u64,
}

/// Cases closed before `now - retention_months` and not purged yet.
pub(crate) fn retention_cutoff(now: DateTime<Utc>, retention_months: u32) -> DateTime<Utc> {
    now.checked_sub_months(Months::new(retention_months))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Runs both passes. With `dry_run`, only reports what would be done.
/// `team` is the current `[team]` (the daemon's, reloaded on SIGHUP): its
/// members' addresses are not personal data of a consumer and stay in events.
pub async fn run(
    store: &Store,
    config: &Config,
    team: &TeamConfig,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<PurgeReport, PurgeError> {
    let mut report = PurgeReport {
        dry_run,
        ..PurgeReport::default()
    };
    let grace_cutoff = now - chrono::Duration::days(VERIFICATION_GRACE_DAYS);
    let due: Vec<CaseId> = {
        let mut conn = store.conn().await?;
        retention::verification_due(&mut conn, grace_cutoff).await?
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
    let old: Vec<CaseId> = {
        let mut conn = store.conn().await?;
        retention::purge_due(&mut conn, cutoff).await?
    };
    for id in old {
        if dry_run {
            let mut conn = store.conn().await?;
            let (m, a) = retention::case_row_counts(&mut conn, &id).await?;
            report.messages += m;
            report.attachments += a;
        } else {
            let mut tx = store.begin().await?;
            let done = purge_case(&mut tx, config, team, &id, now).await?;
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
    Ok(retention::clear_caseless(conn, cutoff, MARKER).await?)
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
                if !retention::file_in_use(&mut conn, sha).await? {
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
    id: &CaseId,
    now: DateTime<Utc>,
) -> Result<u64, PurgeError> {
    let (cleared, outgoing) =
        retention::clear_verification_data(conn, id, &code_templates(), now).await?;
    events::append(
        conn,
        Some(id),
        now,
        "daemon",
        crate::cases::Action::VerificationDataDeleted,
        &format!(
            "verification code, {cleared} verification message bodies and {outgoing} stored \
             copies of outgoing mail that carried the code deleted (CCPA regs §7060(d))"
        ),
    )
    .await?;
    Ok(cleared + outgoing)
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
    team: &TeamConfig,
    id: &CaseId,
    now: DateTime<Utc>,
) -> Result<CasePurge, PurgeError> {
    // The parties' addresses, to recognise them as event actors.
    let Some(addresses) = retention::case_addresses(conn, id).await? else {
        return Ok(CasePurge {
            messages: 0,
            attachments: 0,
            orphaned_files: Vec::new(),
        });
    };
    let mut personal: Vec<String> = addresses
        .into_iter()
        .map(|a| a.to_lowercase())
        .filter(|a| !a.is_empty() && !team.is_member(a))
        .collect();
    personal.sort();
    personal.dedup();

    let cleared = retention::clear_case(conn, id, MARKER, now).await?;
    let (messages, attachments) = (cleared.messages, cleared.attachments);
    let mut orphaned_files = Vec::new();
    for sha in cleared.hashes {
        if !retention::file_in_use(conn, &sha).await? {
            orphaned_files.push(sha);
        }
    }

    // Events: the trigger of migration 0002 allows exactly this, and only
    // now that purged_at is set.
    let mut redacted = 0u64;
    for (event_id, actor, action, detail) in retention::case_events(conn, id).await? {
        let new_actor = if personal.contains(&actor.to_lowercase()) {
            MARKER
        } else {
            actor.as_str()
        };
        let new_detail = if detail.is_empty() || keeps_detail(&action) {
            detail.as_str()
        } else {
            MARKER
        };
        if new_actor != actor || new_detail != detail {
            retention::redact_event(conn, event_id, new_actor, new_detail).await?;
            redacted += 1;
        }
    }
    events::append(
        conn,
        Some(id),
        now,
        "daemon",
        crate::cases::Action::Purged,
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
    fn the_allow_list_is_the_actions_without_personal_data() {
        let kept: Vec<&str> = Action::ALL
            .iter()
            .filter(|a| a.purge_keeps_detail())
            .map(|a| a.as_str())
            .collect();
        let mut want = vec![
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
        let mut kept = kept;
        kept.sort_unstable();
        want.sort_unstable();
        assert_eq!(kept, want);
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
            assert!(!keeps_detail(action), "{action}");
        }
        assert!(keeps_detail("deny"));
    }
}
