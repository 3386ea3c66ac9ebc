//! The append-only `events` table (a trigger refuses updates).

use crate::cases::Action;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::SqliteConnection;

use super::{Op, Result};
use crate::ids::CaseId;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EventRow {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

pub async fn append(
    conn: &mut SqliteConnection,
    case_id: Option<&str>,
    at: DateTime<Utc>,
    actor: &str,
    action: Action,
    detail: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO events (case_id, at, actor, action, detail) VALUES (?, ?, ?, ?, ?)")
        .bind(case_id)
        .bind(at)
        .bind(actor)
        .bind(action.as_str())
        .bind(detail)
        .execute(conn)
        .await
        .op("events.append")?;
    Ok(())
}

/// One event of [`append_many`].
#[derive(Debug, Clone)]
pub(crate) struct NewEvent<'a> {
    pub actor: String,
    pub action: Action,
    pub detail: &'a str,
}

/// Appends events to one case in one statement, in the given order (their
/// ids follow it, and the case's log is read in id order).
pub(crate) async fn append_many(
    conn: &mut SqliteConnection,
    case_id: &str,
    at: DateTime<Utc>,
    events: &[NewEvent<'_>],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let query = bind_many(
        sqlx::query(sqlx::AssertSqlSafe(many_sql(events.len()))),
        case_id,
        at,
        events,
    );
    query.execute(conn).await.op("events.append_many")?;
    Ok(())
}

/// The statement of [`append_many`] for `n` events (`n` ≥ 1), so other
/// inserts can run it in their statement batch (`cases::insert_with_message`).
pub(super) fn many_sql(n: usize) -> String {
    let mut sql = String::from("INSERT INTO events (case_id, at, actor, action, detail) VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?)");
    }
    sql
}

/// Binds the parameters of [`many_sql`] for `events`, in order.
pub(super) fn bind_many<'q>(
    mut query: super::Query<'q>,
    case_id: &str,
    at: DateTime<Utc>,
    events: &[NewEvent<'_>],
) -> super::Query<'q> {
    for e in events {
        query = query
            .bind(case_id)
            .bind(at)
            .bind(e.actor.as_str())
            .bind(e.action.as_str())
            .bind(e.detail);
    }
    query
}

/// How many events of `action` a case (or, with `None`, the caseless log)
/// has had since `since`: the notices held back since the last one went out.
pub(crate) async fn count_since(
    conn: &mut SqliteConnection,
    case_id: Option<&str>,
    action: &str,
    since: DateTime<Utc>,
) -> Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE case_id IS ? AND action = ? AND at > ?")
        .bind(case_id)
        .bind(action)
        .bind(since)
        .fetch_one(conn)
        .await
        .op("events.count_since")
}

pub async fn for_case(conn: &mut SqliteConnection, case_id: &CaseId) -> Result<Vec<EventRow>> {
    sqlx::query_as("SELECT at, actor, action, detail FROM events WHERE case_id = ? ORDER BY id")
        .bind(case_id)
        .fetch_all(conn)
        .await
        .op("events.for_case")
}
