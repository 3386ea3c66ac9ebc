//! The `cases` table.

use chrono::{DateTime, Datelike, Utc};
use sqlx::SqliteConnection;

use super::{Result, parse_col};
use crate::cases::{Case, Kind, State};

/// The `cases` row as stored.
#[derive(Debug, sqlx::FromRow)]
struct CaseRow {
    id: String,
    kind: String,
    state: String,
    requester: String,
    agent: Option<String>,
    consumer: Option<String>,
    consumer_name: Option<String>,
    received_at: DateTime<Utc>,
    acknowledged_at: Option<DateTime<Utc>>,
    ack_held_until: Option<DateTime<Utc>>,
    ack_due_at: DateTime<Utc>,
    due_at: DateTime<Utc>,
    extended: bool,
    verified_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    verification_code: String,
    reminder_sent_at: Option<DateTime<Utc>>,
    authorization_ok: bool,
    resolution: Option<String>,
    denial_reason: Option<String>,
    closed_reply_sent: bool,
    due_soon_notified: bool,
    overdue_notified: bool,
}

impl CaseRow {
    fn into_case(self) -> Result<Case> {
        Ok(Case {
            kind: parse_col::<Kind>("cases", &self.kind)?,
            state: parse_col::<State>("cases", &self.state)?,
            id: self.id,
            requester: self.requester,
            agent: self.agent,
            consumer: self.consumer,
            consumer_name: self.consumer_name,
            received_at: self.received_at,
            acknowledged_at: self.acknowledged_at,
            ack_held_until: self.ack_held_until,
            ack_due_at: self.ack_due_at,
            due_at: self.due_at,
            extended: self.extended,
            verified_at: self.verified_at,
            closed_at: self.closed_at,
            verification_code: self.verification_code,
            reminder_sent_at: self.reminder_sent_at,
            authorization_ok: self.authorization_ok,
            resolution: self.resolution,
            denial_reason: self.denial_reason,
            closed_reply_sent: self.closed_reply_sent,
            due_soon_notified: self.due_soon_notified,
            overdue_notified: self.overdue_notified,
        })
    }
}

const COLUMNS: &str = "id, kind, state, requester, agent, consumer, consumer_name, received_at, \
    acknowledged_at, ack_due_at, due_at, extended, verified_at, closed_at, verification_code, \
    reminder_sent_at, authorization_ok, resolution, denial_reason, closed_reply_sent, \
    due_soon_notified, overdue_notified, ack_held_until";

/// Threading facts kept beside the case.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct CaseThread {
    pub subject: String,
    pub thread_root: Option<String>,
    pub notice_root: Option<String>,
    pub manner: String,
}

/// Reserves the next case sequence number for `prefix` in `year`.
pub async fn next_seq(conn: &mut SqliteConnection, prefix: &str, year: i32) -> Result<u64> {
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO case_seq (prefix, year, last) VALUES (?, ?, 1)
         ON CONFLICT (prefix, year) DO UPDATE SET last = last + 1
         RETURNING last",
    )
    .bind(prefix)
    .bind(year)
    .fetch_one(conn)
    .await?;
    Ok(seq as u64)
}

/// The year a case number carries: the local year of receipt.
pub fn id_year(received: DateTime<Utc>, tz: chrono_tz::Tz) -> i32 {
    received.with_timezone(&tz).year()
}

pub async fn insert(
    conn: &mut SqliteConnection,
    case: &Case,
    thread: &CaseThread,
    now: DateTime<Utc>,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO cases ({COLUMNS}, subject, thread_root, notice_root, manner, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    bind_case(sqlx::query(sqlx::AssertSqlSafe(sql)), case)
        .bind(&thread.subject)
        .bind(&thread.thread_root)
        .bind(&thread.notice_root)
        .bind(&thread.manner)
        .bind(now)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes every engine-owned field of the case back.
pub async fn update(conn: &mut SqliteConnection, case: &Case, now: DateTime<Utc>) -> Result<()> {
    let sql =
        "UPDATE cases SET id = ?, kind = ?, state = ?, requester = ?, agent = ?, consumer = ?,
        consumer_name = ?, received_at = ?, acknowledged_at = ?, ack_due_at = ?, due_at = ?,
        extended = ?, verified_at = ?, closed_at = ?, verification_code = ?, reminder_sent_at = ?,
        authorization_ok = ?, resolution = ?, denial_reason = ?, closed_reply_sent = ?,
        due_soon_notified = ?, overdue_notified = ?, ack_held_until = ?, updated_at = ?
        WHERE id = ?";
    bind_case(sqlx::query(sql), case)
        .bind(now)
        .bind(&case.id)
        .execute(conn)
        .await?;
    Ok(())
}

fn bind_case<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    c: &'q Case,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    q.bind(&c.id)
        .bind(c.kind.as_str())
        .bind(c.state.as_str())
        .bind(&c.requester)
        .bind(&c.agent)
        .bind(&c.consumer)
        .bind(&c.consumer_name)
        .bind(c.received_at)
        .bind(c.acknowledged_at)
        .bind(c.ack_due_at)
        .bind(c.due_at)
        .bind(c.extended)
        .bind(c.verified_at)
        .bind(c.closed_at)
        .bind(&c.verification_code)
        .bind(c.reminder_sent_at)
        .bind(c.authorization_ok)
        .bind(&c.resolution)
        .bind(&c.denial_reason)
        .bind(c.closed_reply_sent)
        .bind(c.due_soon_notified)
        .bind(c.overdue_notified)
        .bind(c.ack_held_until)
}

pub async fn get(conn: &mut SqliteConnection, id: &str) -> Result<Option<Case>> {
    let sql = format!("SELECT {COLUMNS} FROM cases WHERE id = ?");
    let row: Option<CaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(CaseRow::into_case).transpose()
}

pub async fn thread(conn: &mut SqliteConnection, id: &str) -> Result<CaseThread> {
    Ok(
        sqlx::query_as("SELECT subject, thread_root, notice_root, manner FROM cases WHERE id = ?")
            .bind(id)
            .fetch_optional(conn)
            .await?
            .unwrap_or_default(),
    )
}

pub async fn set_notice_root(conn: &mut SqliteConnection, id: &str, root: &str) -> Result<()> {
    sqlx::query("UPDATE cases SET notice_root = ? WHERE id = ? AND notice_root IS NULL")
        .bind(root)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Filters of `cases list`.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    pub state: Option<State>,
    pub kind: Option<Kind>,
    /// Only open cases whose due date has passed.
    pub overdue: bool,
    /// Only open cases due within this many days.
    pub due_within_days: Option<u32>,
    /// Only cases in a non-final state.
    pub open_only: bool,
}

pub async fn list(
    conn: &mut SqliteConnection,
    filter: &CaseFilter,
    now: DateTime<Utc>,
) -> Result<Vec<Case>> {
    // The open-only lists (the scheduler every minute, the digest, overdue
    // and due-soon views) must not read years of closed cases: SQL narrows
    // them, the exact rules below stay in Rust.
    let open_only = filter.open_only || filter.overdue || filter.due_within_days.is_some();
    let finals = State::ALL
        .iter()
        .filter(|s| s.is_final())
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = if open_only {
        format!(
            "SELECT {COLUMNS} FROM cases WHERE state NOT IN ({finals}) ORDER BY received_at, id"
        )
    } else {
        format!("SELECT {COLUMNS} FROM cases ORDER BY received_at, id")
    };
    let rows: Vec<CaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(conn)
        .await?;
    let mut out = Vec::new();
    for row in rows {
        let case = row.into_case()?;
        if filter.state.is_some_and(|s| s != case.state)
            || filter.kind.is_some_and(|k| k != case.kind)
            || (filter.open_only && case.state.is_final())
            || (filter.overdue && (case.state.is_final() || case.due_at >= now))
        {
            continue;
        }
        if let Some(days) = filter.due_within_days
            && (case.state.is_final()
                || case.due_at > now + chrono::Duration::days(i64::from(days)))
        {
            continue;
        }
        out.push(case);
    }
    Ok(out)
}
