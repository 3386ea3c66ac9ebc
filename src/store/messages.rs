//! The `messages` table: every message in and out, and which originals still
//! wait to be filed (moved) after their transaction committed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::SqliteConnection;

use super::{Op, Result};

/// A message to record.
#[derive(Debug, Clone, Default)]
pub struct NewMessage<'a> {
    pub case_id: Option<&'a str>,
    pub direction: &'static str,
    pub message_id: Option<&'a str>,
    pub subject: &'a str,
    pub from_addr: Option<&'a str>,
    pub at: DateTime<Utc>,
    pub template: Option<&'a str>,
    pub sha256: &'a str,
    pub size: i64,
    pub raw: Option<&'a [u8]>,
    pub body_text: Option<&'a str>,
    pub disposition: &'a str,
    pub uid_validity: Option<u32>,
    pub uid: Option<u32>,
    pub target_mailbox: Option<&'a str>,
}

pub async fn insert(conn: &mut SqliteConnection, m: &NewMessage<'_>) -> Result<i64> {
    let id = sqlx::query_scalar(
        "INSERT INTO messages (case_id, direction, message_id, subject, from_addr, at, template,
            sha256, size, raw, body_text, disposition, uid_validity, uid, target_mailbox)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(m.case_id)
    .bind(m.direction)
    .bind(m.message_id)
    .bind(m.subject)
    .bind(m.from_addr)
    .bind(m.at)
    .bind(m.template)
    .bind(m.sha256)
    .bind(m.size)
    .bind(m.raw)
    .bind(m.body_text)
    .bind(m.disposition)
    .bind(m.uid_validity.map(i64::from))
    .bind(m.uid.map(i64::from))
    .bind(m.target_mailbox)
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// An inbound message seen before: the same bytes, or the same Message-ID
/// from the same sender with the same subject (a copy delivered twice with
/// other Received lines). The second line of de-duplication after the UID
/// cursor. A reused Message-ID on a different message is not a duplicate.
pub async fn seen_inbound(
    conn: &mut SqliteConnection,
    message_id: Option<&str>,
    from_addr: Option<&str>,
    subject: &str,
    sha256: &str,
) -> Result<Option<(i64, Option<String>)>> {
    Ok(sqlx::query_as(
        "SELECT id, target_mailbox FROM messages WHERE direction = 'in'
           AND (sha256 = ?
                OR (? IS NOT NULL AND message_id = ? AND from_addr IS ? AND subject = ?))
         ORDER BY id LIMIT 1",
    )
    .bind(sha256)
    .bind(message_id)
    .bind(message_id)
    .bind(from_addr)
    .bind(subject)
    .fetch_optional(conn)
    .await?)
}

/// Originals committed but not yet moved, in this UIDVALIDITY.
pub async fn unfiled(
    conn: &mut SqliteConnection,
    uid_validity: u32,
) -> Result<Vec<(i64, u32, String)>> {
    let rows: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT id, uid, target_mailbox FROM messages
         WHERE filed_at IS NULL AND target_mailbox IS NOT NULL AND uid IS NOT NULL
           AND uid_validity = ? ORDER BY uid",
    )
    .bind(i64::from(uid_validity))
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, uid, target)| (id, uid as u32, target))
        .collect())
}

/// Marks originals filed once their MOVE succeeded. Rows of an older
/// UIDVALIDITY can never be moved by UID again; they are closed too.
pub async fn mark_filed(
    conn: &mut SqliteConnection,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<()> {
    // One statement for the whole batch (the ids travel as a JSON array).
    let ids = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
    sqlx::query("UPDATE messages SET filed_at = ? WHERE id IN (SELECT value FROM json_each(?))")
        .bind(now)
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn close_stale_unfiled(
    conn: &mut SqliteConnection,
    current_uid_validity: u32,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE messages SET filed_at = ? WHERE filed_at IS NULL AND target_mailbox IS NOT NULL
         AND uid_validity IS NOT NULL AND uid_validity != ?",
    )
    .bind(now)
    .bind(i64::from(current_uid_validity))
    .execute(conn)
    .await?;
    Ok(())
}

/// Links a message row to the case it opened (the row is written first, so
/// the acknowledgement can answer it).
pub async fn set_case(conn: &mut SqliteConnection, message_row: i64, case_id: &str) -> Result<()> {
    sqlx::query("UPDATE messages SET case_id = ? WHERE id = ?")
        .bind(case_id)
        .bind(message_row)
        .execute(conn)
        .await
        .op("messages.set_case")?;
    Ok(())
}

/// A message as `cases show` lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MessageRow {
    pub direction: String,
    pub message_id: Option<String>,
    pub subject: String,
    pub at: DateTime<Utc>,
    pub template: Option<String>,
    #[serde(skip)]
    pub from_addr: Option<String>,
    #[serde(skip)]
    pub body_text: Option<String>,
}

pub async fn for_case(conn: &mut SqliteConnection, case_id: &str) -> Result<Vec<MessageRow>> {
    Ok(sqlx::query_as(
        "SELECT direction, message_id, subject, at, template, from_addr, body_text
         FROM messages WHERE case_id = ? ORDER BY at, id",
    )
    .bind(case_id)
    .fetch_all(conn)
    .await?)
}

/// The newest inbound Message-ID of a case (what our next reply answers).
pub async fn last_inbound_id(conn: &mut SqliteConnection, case_id: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT message_id FROM messages WHERE case_id = ? AND direction = 'in'
         AND message_id IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .bind(case_id)
    .fetch_optional(conn)
    .await?
    .flatten())
}
