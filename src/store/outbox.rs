//! The `outbox` table: mail written with the change that caused it, delivered
//! later by the sender task (SPEC §8).

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::{Op, Result};

#[derive(Debug, Clone)]
pub struct NewOutbox<'a> {
    pub case_id: Option<&'a str>,
    pub message_id: &'a str,
    pub audience: &'static str,
    pub template: &'a str,
    pub envelope_from: &'a str,
    pub recipients: &'a [String],
    pub rate_key: &'a str,
    pub subject: &'a str,
    pub raw: &'a [u8],
    pub now: DateTime<Utc>,
}

pub async fn insert(conn: &mut SqliteConnection, m: &NewOutbox<'_>) -> Result<i64> {
    let recipients = serde_json::to_string(m.recipients).unwrap_or_else(|_| "[]".into());
    sqlx::query_scalar(
        "INSERT INTO outbox (case_id, message_id, audience, template, envelope_from, recipients,
            rate_key, subject, raw, next_attempt_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(m.case_id)
    .bind(m.message_id)
    .bind(m.audience)
    .bind(m.template)
    .bind(m.envelope_from)
    .bind(recipients)
    .bind(m.rate_key)
    .bind(m.subject)
    .bind(m.raw)
    .bind(m.now)
    .bind(m.now)
    .fetch_one(conn)
    .await
    .op("outbox.insert")
}

/// Automatic consumer-facing mails to `rate_key` since `since`.
pub async fn recent_to(
    conn: &mut SqliteConnection,
    rate_key: &str,
    since: DateTime<Utc>,
) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox WHERE rate_key = ? AND audience = 'consumer' AND created_at > ?",
    )
    .bind(rate_key)
    .bind(since)
    .fetch_one(conn)
    .await
        .op("outbox.recent_to")
}

/// When fewer than `limit` consumer mails to `rate_key` will have been
/// queued in the 24 hours before: the moment the `limit`-th newest one since
/// `since` leaves the window. `None` when fewer than `limit` are in it.
pub async fn window_opens(
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
    pub case_id: Option<String>,
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
    pub fn recipient_list(&self) -> Vec<String> {
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
pub async fn next_due(conn: &mut SqliteConnection) -> Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")
        .fetch_one(conn)
        .await
        .op("outbox.next_due")
}

pub async fn pending_count(conn: &mut SqliteConnection) -> Result<i64> {
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

pub async fn mark_retry(
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

pub async fn mark_failed(conn: &mut SqliteConnection, id: i64, error: &str) -> Result<()> {
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

/// Finds an outbox row by the Message-ID a delivery report quotes.
/// An outbox row as a delivery report finds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Reported {
    pub id: i64,
    pub case_id: Option<String>,
    /// 'consumer' or 'team'.
    pub audience: String,
}

pub async fn by_message_id(
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
pub const MAX_APPEND_ATTEMPTS: i64 = 5;

pub async fn unappended(conn: &mut SqliteConnection, limit: i64) -> Result<Vec<(i64, Vec<u8>)>> {
    sqlx::query_as(
        "SELECT id, raw FROM outbox WHERE status = 'sent' AND appended_at IS NULL
           AND append_attempts < ? ORDER BY id LIMIT ?",
    )
    .bind(MAX_APPEND_ATTEMPTS)
    .bind(limit)
    .fetch_all(conn)
    .await
    .op("outbox.unappended")
}

pub async fn mark_appended(conn: &mut SqliteConnection, id: i64, now: DateTime<Utc>) -> Result<()> {
    sqlx::query("UPDATE outbox SET appended_at = ? WHERE id = ?")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await
        .op("outbox.mark_appended")?;
    Ok(())
}

/// Records a refused Sent-folder copy.
pub async fn append_failed(conn: &mut SqliteConnection, id: i64, error: &str) -> Result<()> {
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
