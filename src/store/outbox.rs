//! The `outbox` table: mail written with the change that caused it, delivered
//! later by the sender task (SPEC §8).

use chrono::{DateTime, Utc};
use sqlx::{Row as _, SqliteConnection};

use super::{Op, Result};
use crate::ids::CaseId;

crate::cases::vocabulary! {
    /// Who an outbox row is for (`outbox.audience`, guarded by migration
    /// 0007). Only consumer mail counts toward the per-sender reply limit.
    pub enum Audience {
        Consumer = "consumer",
        Team = "team",
    }
}

#[derive(Debug, Clone)]
pub struct NewOutbox<'a> {
    pub case_id: Option<&'a str>,
    pub message_id: &'a str,
    pub audience: Audience,
    pub template: &'a str,
    pub envelope_from: &'a str,
    pub recipients: &'a [String],
    pub rate_key: &'a str,
    pub subject: &'a str,
    pub raw: &'a [u8],
    pub now: DateTime<Utc>,
}

pub async fn insert(conn: &mut SqliteConnection, m: &NewOutbox<'_>) -> Result<i64> {
    let sql = format!("{INSERT} RETURNING id");
    let row = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), m)
        .fetch_one(conn)
        .await
        .op("outbox.insert")?;
    row.try_get(0).op("outbox.insert")
}

/// Writes an outbox row and its record in `messages` in one statement batch:
/// one round trip to the SQLite worker instead of two per mail queued
/// (issue 13). Both or neither: the caller's transaction holds them.
pub(crate) async fn insert_with_record(
    conn: &mut SqliteConnection,
    m: &NewOutbox<'_>,
    record: &super::NewMessage<'_>,
) -> Result<()> {
    let sql = format!("{INSERT};\n{};", super::messages::INSERT);
    let q = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), m);
    super::messages::bind(q, record)
        .execute(conn)
        .await
        .op("outbox.insert_with_record")?;
    Ok(())
}

pub(super) const INSERT: &str =
    "INSERT INTO outbox (case_id, message_id, audience, template, envelope_from, recipients,
            rate_key, subject, raw, next_attempt_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Binds the 11 parameters of [`INSERT`], in order.
pub(super) fn bind<'q>(q: super::Query<'q>, m: &NewOutbox<'_>) -> super::Query<'q> {
    let recipients = super::json_list(m.recipients);
    q.bind(m.case_id)
        .bind(m.message_id)
        .bind(m.audience.as_str())
        .bind(m.template)
        .bind(m.envelope_from)
        .bind(recipients)
        .bind(m.rate_key)
        .bind(m.subject)
        .bind(m.raw)
        .bind(m.now)
        .bind(m.now)
}

/// Counts the automatic consumer-facing mails to a rate key (`?`) since a
/// time (`?`): the per-sender limit. Shared with the new case's statement
/// batch (`cases::insert_with_message`).
pub(super) const RECENT_TO: &str =
    "SELECT COUNT(*) FROM outbox WHERE rate_key = ? AND audience = 'consumer' AND created_at > ?";

/// Automatic consumer-facing mails to `rate_key` since `since`.
pub(crate) async fn recent_to(
    conn: &mut SqliteConnection,
    rate_key: &str,
    since: DateTime<Utc>,
) -> Result<i64> {
    sqlx::query_scalar(RECENT_TO)
        .bind(rate_key)
        .bind(since)
        .fetch_one(conn)
        .await
        .op("outbox.recent_to")
}

/// How many team notices (`team_notice`, not command results) about a case
/// were queued since `since` (the notice throttle), and when the newest was.
pub(crate) async fn team_mail_for_case_since(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
    since: DateTime<Utc>,
) -> Result<(i64, Option<DateTime<Utc>>)> {
    sqlx::query_as(
        "SELECT COUNT(*), MAX(created_at) FROM outbox WHERE case_id = ? AND audience = 'team' AND template = 'team_notice' AND created_at > ?",
    )
    .bind(case_id)
    .bind(since)
    .fetch_one(conn)
    .await
    .op("outbox.team_mail_for_case_since")
}

/// When fewer than `limit` consumer mails to `rate_key` will have been
/// queued in the 24 hours before: the moment the `limit`-th newest one since
/// `since` leaves the window. `None` when fewer than `limit` are in it.
pub(crate) async fn window_opens(
    conn: &mut SqliteConnection,
    rate_key: &str,
    since: DateTime<Utc>,
    limit: u32,
) -> Result<Option<DateTime<Utc>>> {
    let offset = i64::from(limit.max(1)) - 1;
    let at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT created_at FROM outbox WHERE rate_key = ? AND audience = 'consumer' AND created_at > ?
         ORDER BY created_at DESC LIMIT 1 OFFSET ?",
    )
    .bind(rate_key)
    .bind(since)
    .bind(offset)
    .fetch_optional(conn)
    .await
    .op("outbox.window_opens")?;
    Ok(at.map(|t| t + chrono::Duration::hours(24) + chrono::Duration::minutes(1)))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub case_id: Option<CaseId>,
    pub message_id: String,
    pub audience: String,
    pub template: String,
    pub envelope_from: String,
    pub recipients: String,
    pub raw: Vec<u8>,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
}

impl OutboxRow {
    pub(crate) fn recipient_list(&self) -> Vec<String> {
        serde_json::from_str(&self.recipients).unwrap_or_default()
    }
}

/// Pending mail whose next attempt is due.
pub async fn due(
    conn: &mut SqliteConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<OutboxRow>> {
    sqlx::query_as(
        "SELECT id, case_id, message_id, audience, template, envelope_from, recipients, raw,
                attempts, created_at
         FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
    .op("outbox.due")
}

/// When the next pending mail is due, if any.
pub(crate) async fn next_due(conn: &mut SqliteConnection) -> Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")
        .fetch_one(conn)
        .await
        .op("outbox.next_due")
}

pub(crate) async fn pending_count(conn: &mut SqliteConnection) -> Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")
        .fetch_one(conn)
        .await
        .op("outbox.pending_count")
}

pub async fn mark_sent(conn: &mut SqliteConnection, id: i64, now: DateTime<Utc>) -> Result<()> {
    sqlx::query("UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .op("outbox.mark_sent")?;
    Ok(())
}

pub(crate) async fn mark_retry(
    conn: &mut SqliteConnection,
    id: i64,
    next: DateTime<Utc>,
    error: &str,
) -> Result<()> {
    sqlx::query("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?")
        .bind(next)
        .bind(error)
        .bind(id)
        .execute(conn)
        .await
        .op("outbox.mark_retry")?;
    Ok(())
}

pub(crate) async fn mark_failed(conn: &mut SqliteConnection, id: i64, error: &str) -> Result<()> {
    sqlx::query(
        "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ? WHERE id = ?",
    )
    .bind(error)
    .bind(id)
    .execute(conn)
    .await
    .op("outbox.mark_failed")?;
    Ok(())
}

/// An outbox row as a delivery report finds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Reported {
    pub id: i64,
    pub case_id: Option<CaseId>,
    /// 'consumer' or 'team'.
    pub audience: String,
}

/// Finds an outbox row by the Message-ID a delivery report quotes.
pub(crate) async fn by_message_id(
    conn: &mut SqliteConnection,
    message_id: &str,
) -> Result<Option<Reported>> {
    sqlx::query_as("SELECT id, case_id, audience FROM outbox WHERE message_id = ?")
        .bind(message_id)
        .fetch_optional(conn)
        .await
        .op("outbox.by_message_id")
}

/// Sent mail not yet copied to the Sent folder.
/// Copies to the Sent folder are given up after this many refusals.
pub(crate) const MAX_APPEND_ATTEMPTS: i64 = 5;

/// Sent mail still to be copied to Sent, sent at or before `sent_before`.
pub async fn unappended(
    conn: &mut SqliteConnection,
    sent_before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(i64, Vec<u8>)>> {
    sqlx::query_as(UNAPPENDED)
        .bind(MAX_APPEND_ATTEMPTS)
        .bind(sent_before)
        .bind(limit)
        .fetch_all(conn)
        .await
        .op("outbox.unappended")
}

/// The statement of [`unappended`] (attempts, sent before, limit). It
/// searches the partial index `outbox_unappended` (migration 0107): the
/// columns it tests come after `raw`, so testing them on every sent row
/// would read every body ever sent.
const UNAPPENDED: &str = "SELECT id, raw FROM outbox WHERE status = 'sent' AND appended_at IS NULL
       AND append_attempts < ? AND sent_at <= ? ORDER BY id LIMIT ?";

/// The statement of [`oldest_unappended`] (attempts), on the same index:
/// `sent_at IS NOT NULL` is the index's own condition, always true of a
/// sent row.
const OLDEST_UNAPPENDED: &str =
    "SELECT MIN(sent_at) FROM outbox WHERE status = 'sent' AND appended_at IS NULL
       AND sent_at IS NOT NULL AND append_attempts < ?";

/// When the oldest sent mail still to be copied to Sent was sent.
pub(crate) async fn oldest_unappended(
    conn: &mut SqliteConnection,
) -> Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(OLDEST_UNAPPENDED)
        .bind(MAX_APPEND_ATTEMPTS)
        .fetch_one(conn)
        .await
        .op("outbox.oldest_unappended")
}

/// Records Sent-folder copies, several rows in one statement (copies made,
/// or kept by the server: `smtp.sent_copy`).
pub(crate) async fn mark_appended_all(
    conn: &mut SqliteConnection,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<()> {
    for chunk in ids.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let sql = format!("UPDATE outbox SET appended_at = ? WHERE id IN ({marks})");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
        for id in chunk {
            query = query.bind(id);
        }
        query
            .execute(&mut *conn)
            .await
            .op("outbox.mark_appended_all")?;
    }
    Ok(())
}

/// Records a refused Sent-folder copy.
pub(crate) async fn append_failed(conn: &mut SqliteConnection, id: i64, error: &str) -> Result<()> {
    sqlx::query(
        "UPDATE outbox SET append_attempts = append_attempts + 1, append_error = ? WHERE id = ?",
    )
    .bind(error)
    .bind(id)
    .execute(conn)
    .await
    .op("outbox.append_failed")?;
    Ok(())
}

/// The recipients of a mail whose delivery is settled, lower-cased:
/// delivered or refused for good. The others are still to be tried.
pub(crate) async fn settled_recipients(
    conn: &mut SqliteConnection,
    outbox_id: i64,
) -> Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT recipient, status FROM outbox_recipients WHERE outbox_id = ? ORDER BY recipient",
    )
    .bind(outbox_id)
    .fetch_all(conn)
    .await
    .op("outbox.settled_recipients")
}

/// Records what became of one recipient of a mail (`sent` or `failed`).
/// Recording it twice keeps the first verdict.
pub(crate) async fn settle_recipient(
    conn: &mut SqliteConnection,
    outbox_id: i64,
    recipient: &str,
    sent: bool,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO outbox_recipients (outbox_id, recipient, status, error, at)
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (outbox_id, recipient) DO NOTHING",
    )
    .bind(outbox_id)
    .bind(recipient.to_lowercase())
    .bind(if sent { "sent" } else { "failed" })
    .bind(error)
    .bind(now)
    .execute(conn)
    .await
    .op("outbox.settle_recipient")?;
    Ok(())
}

/// How far back the status line, `check` and the digest look for team mail
/// a server refused.
pub(crate) const FAILED_TEAM_MAIL_DAYS: i64 = 7;

/// One team recipient the server refused for good.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct FailedTeamMail {
    pub outbox_id: i64,
    pub case_id: Option<String>,
    pub template: String,
    pub recipient: String,
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

/// Team mail refused for good since `since`, newest first: per recipient,
/// so one colleague's dead address is named while the others got the mail.
pub(crate) async fn failed_team_mail(
    conn: &mut SqliteConnection,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<FailedTeamMail>> {
    sqlx::query_as(
        "SELECT r.outbox_id, o.case_id, o.template, r.recipient, r.error, r.at
         FROM outbox_recipients r JOIN outbox o ON o.id = r.outbox_id
         WHERE r.status = 'failed' AND o.audience = 'team' AND r.at > ?
         ORDER BY r.at DESC, r.outbox_id DESC LIMIT ?",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(conn)
    .await
    .op("outbox.failed_team_mail")
}

/// How many team recipients were refused for good since `since`.
pub(crate) async fn failed_team_count(
    conn: &mut SqliteConnection,
    since: DateTime<Utc>,
) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox_recipients r JOIN outbox o ON o.id = r.outbox_id
         WHERE r.status = 'failed' AND o.audience = 'team' AND r.at > ?",
    )
    .bind(since)
    .fetch_one(conn)
    .await
    .op("outbox.failed_team_count")
}

/// Pending mail whose last attempt failed: what waits for the SMTP server,
/// and since when the oldest of it waits.
pub async fn waiting(conn: &mut SqliteConnection) -> Result<(i64, Option<DateTime<Utc>>)> {
    sqlx::query_as(
        "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE status = 'pending' AND last_error IS NOT NULL",
    )
    .fetch_one(conn)
    .await
    .op("outbox.waiting")
}

/// How long recording a delivery waits for another writer. A mail that went
/// out but is not recorded would be sent again, so this waits much longer
/// than the pool's usual 5 s (a long intake transaction can hold the lock).
pub(crate) const RECORD_BUSY_TIMEOUT_MS: u32 = 60_000;

/// The pool's usual busy timeout, restored after a patient write
/// ([`record_all_sent`]).
const USUAL_BUSY_TIMEOUT_MS: u32 = 5_000;

/// Several deliveries accepted by the server, in one transaction, waiting
/// long for the lock: each `(outbox id, None)` is [`mark_sent`], each
/// `(outbox id, Some(recipient))` is [`settle_recipient`] (delivered). The
/// sender records what finished while the previous commit was running in one
/// go (group commit): one sync instead of one per mail.
///
/// Whole mails take two round trips to the SQLite worker in all (the busy
/// timeout, `BEGIN` and one `UPDATE` for all of them; `COMMIT` and the
/// usual timeout), not one per mail: with the worker idle between
/// deliveries each hand-off cost about a millisecond, and the sender's
/// groups waited on them (issue 13).
pub(crate) async fn record_all_sent(
    conn: &mut SqliteConnection,
    deliveries: &[(i64, Option<String>)],
    now: DateTime<Utc>,
) -> Result<()> {
    let whole: Vec<i64> = deliveries
        .iter()
        .filter(|(_, recipient)| recipient.is_none())
        .map(|(id, _)| *id)
        .collect();
    let ids = super::json_list(&whole);
    let written = async {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA busy_timeout = {RECORD_BUSY_TIMEOUT_MS};
             BEGIN IMMEDIATE;
             UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1, last_error = NULL
              WHERE id IN (SELECT value FROM json_each(?));"
        )))
        .bind(now)
        .bind(&ids)
        .execute(&mut *conn)
        .await
        .op("outbox.record_all_sent")?;
        for (id, recipient) in deliveries {
            if let Some(r) = recipient {
                settle_recipient(&mut *conn, *id, r, true, None, now).await?;
            }
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "COMMIT; PRAGMA busy_timeout = {USUAL_BUSY_TIMEOUT_MS};"
        )))
        .execute(&mut *conn)
        .await
        .op("outbox.record_all_sent.commit")?;
        Ok::<(), super::StoreError>(())
    }
    .await;
    if written.is_err() {
        // Whichever statement failed, the transaction (if it began) is
        // rolled back and the usual timeout restored.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA busy_timeout = {USUAL_BUSY_TIMEOUT_MS}"
        )))
        .execute(&mut *conn)
        .await
        .op("outbox.record_all_sent.reset_busy_timeout")?;
    }
    written
}

/// The SMTP server is unreachable: every due mail waits, with the reason.
/// Attempts are not counted (nothing was tried for them); the sender's
/// outage pause decides when to try again.
pub(crate) async fn mark_waiting(
    conn: &mut SqliteConnection,
    now: DateTime<Utc>,
    error: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE outbox SET last_error = ? WHERE status = 'pending' AND next_attempt_at <= ?",
    )
    .bind(error)
    .bind(now)
    .execute(conn)
    .await
    .op("outbox.mark_waiting")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    async fn row(conn: &mut SqliteConnection, message_id: &str, audience: &str) -> i64 {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let recipients = vec!["a@example.com".to_string(), "b@example.com".to_string()];
        insert(
            conn,
            &NewOutbox {
                case_id: None,
                message_id,
                audience: audience.parse().unwrap(),
                template: "team_notice",
                envelope_from: "privacy@example.com",
                recipients: &recipients,
                rate_key: "a@example.com",
                subject: "s",
                raw: b"raw",
                now,
            },
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn recipient_verdicts_are_kept_once_and_refusals_listed() {
        let (_dir, store) = crate::store::testing::store().await;
        let mut conn = store.conn().await.unwrap();
        let team = row(&mut conn, "<t@x>", "team").await;
        let consumer = row(&mut conn, "<c@x>", "consumer").await;
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap();
        settle_recipient(&mut conn, team, "A@Example.com", true, None, at)
            .await
            .unwrap();
        settle_recipient(&mut conn, team, "b@example.com", false, Some("550"), at)
            .await
            .unwrap();
        // A second verdict for the same recipient keeps the first.
        settle_recipient(&mut conn, team, "b@example.com", true, None, at)
            .await
            .unwrap();
        settle_recipient(&mut conn, consumer, "b@example.com", false, Some("550"), at)
            .await
            .unwrap();
        let settled = settled_recipients(&mut conn, team).await.unwrap();
        assert_eq!(
            settled,
            [
                ("a@example.com".to_string(), "sent".to_string()),
                ("b@example.com".to_string(), "failed".to_string())
            ]
        );
        let since = at - chrono::Duration::days(1);
        let failed = failed_team_mail(&mut conn, since, 10).await.unwrap();
        assert_eq!(failed.len(), 1, "consumer mail is not team mail");
        assert_eq!(failed[0].recipient, "b@example.com");
        assert_eq!(failed[0].error.as_deref(), Some("550"));
        assert_eq!(failed_team_count(&mut conn, since).await.unwrap(), 1);
        assert_eq!(failed_team_count(&mut conn, at).await.unwrap(), 0);

        // The purge blanks recipients: their verdicts go too.
        sqlx::query("UPDATE outbox SET recipients = '[]' WHERE id = ?")
            .bind(team)
            .execute(&mut *conn)
            .await
            .unwrap();
        assert!(
            settled_recipients(&mut conn, team)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn deliveries_are_recorded_together() {
        let (_dir, store) = crate::store::testing::store().await;
        let mut conn = store.conn().await.unwrap();
        let whole = row(&mut conn, "<a@x>", "consumer").await;
        let team = row(&mut conn, "<b@x>", "team").await;
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        record_all_sent(
            &mut conn,
            &[(whole, None), (team, Some("A@Example.com".into()))],
            now,
        )
        .await
        .unwrap();
        // The whole mail is sent; the team mail has one recipient settled.
        assert_eq!(pending_count(&mut conn).await.unwrap(), 1);
        assert_eq!(
            settled_recipients(&mut conn, team).await.unwrap(),
            vec![("a@example.com".to_string(), "sent".to_string())]
        );
    }

    #[tokio::test]
    async fn waiting_mail_is_counted_and_recorded_patiently() {
        let (_dir, store) = crate::store::testing::store().await;
        let mut conn = store.conn().await.unwrap();
        let id = row(&mut conn, "<w@x>", "consumer").await;
        assert_eq!(waiting(&mut conn).await.unwrap().0, 0);
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        mark_waiting(&mut conn, now, "connection refused")
            .await
            .unwrap();
        let (count, since) = waiting(&mut conn).await.unwrap();
        assert_eq!((count, since), (1, Some(now)));
        record_all_sent(&mut conn, &[(id, None)], now)
            .await
            .unwrap();
        assert_eq!(waiting(&mut conn).await.unwrap().0, 0);
        assert_eq!(pending_count(&mut conn).await.unwrap(), 0);
        let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(timeout, 5000, "the usual busy timeout is back");
    }

    #[tokio::test]
    async fn a_failed_record_rolls_back_and_restores_the_timeout() {
        let (_dir, store) = crate::store::testing::store().await;
        let mut conn = store.conn().await.unwrap();
        let id = row(&mut conn, "<f@x>", "consumer").await;
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        // No outbox row 999999: its recipient cannot be settled.
        let failed =
            record_all_sent(&mut conn, &[(id, None), (999_999, Some("a@x".into()))], now).await;
        assert!(failed.is_err());
        assert_eq!(pending_count(&mut conn).await.unwrap(), 1, "rolled back");
        let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(timeout, 5000);
        // No transaction was left open: the next record commits.
        record_all_sent(&mut conn, &[(id, None)], now)
            .await
            .unwrap();
        assert_eq!(pending_count(&mut conn).await.unwrap(), 0);
    }

    /// The copier's queries: the right rows, found through the partial
    /// index, never by reading every sent row's body.
    #[tokio::test]
    async fn sent_mail_to_copy_is_found_through_its_index() {
        let (_dir, store) = crate::store::testing::store().await;
        let mut conn = store.conn().await.unwrap();
        let at = |h| Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0).unwrap();
        let pending = row(&mut conn, "<p@x>", "consumer").await;
        let copied = row(&mut conn, "<c@x>", "consumer").await;
        let late = row(&mut conn, "<l@x>", "consumer").await;
        let early = row(&mut conn, "<e@x>", "consumer").await;
        let refused = row(&mut conn, "<r@x>", "consumer").await;
        for (id, h) in [(copied, 1), (late, 5), (early, 2), (refused, 1)] {
            mark_sent(&mut conn, id, at(h)).await.unwrap();
        }
        mark_appended_all(&mut conn, &[copied], at(6))
            .await
            .unwrap();
        for _ in 0..MAX_APPEND_ATTEMPTS {
            append_failed(&mut conn, refused, "NO").await.unwrap();
        }
        let ids =
            |rows: Vec<(i64, Vec<u8>)>| rows.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        assert_eq!(
            ids(unappended(&mut conn, at(9), 10).await.unwrap()),
            [late, early]
        );
        assert_eq!(
            ids(unappended(&mut conn, at(3), 10).await.unwrap()),
            [early]
        );
        assert_eq!(ids(unappended(&mut conn, at(9), 1).await.unwrap()), [late]);
        assert_eq!(oldest_unappended(&mut conn).await.unwrap(), Some(at(2)));
        assert!(!ids(unappended(&mut conn, at(9), 10).await.unwrap()).contains(&pending));
        for sql in [UNAPPENDED, OLDEST_UNAPPENDED] {
            let plan: Vec<String> =
                sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                    .iter()
                    .map(|r| sqlx::Row::get::<String, _>(r, "detail"))
                    .collect();
            assert!(
                plan.iter()
                    .any(|d| d.contains("USING INDEX outbox_unappended")),
                "{sql}: {plan:?}"
            );
        }
    }
}
