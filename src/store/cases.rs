//! The `cases` table.

use chrono::{DateTime, Datelike, Utc};
use sqlx::{Row as _, SqliteConnection};

use super::{Op, Result, parse_col};
use crate::cases::{Case, Kind, Manner, Resolution, State};
use crate::ids::CaseId;

/// The `cases` row as stored.
#[derive(Debug, sqlx::FromRow)]
struct CaseRow {
    id: CaseId,
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
    reminder_held_until: Option<DateTime<Utc>>,
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
            reminder_held_until: self.reminder_held_until,
            authorization_ok: self.authorization_ok,
            resolution: self
                .resolution
                .as_deref()
                .map(|r| parse_col::<Resolution>("cases", r))
                .transpose()?,
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
    due_soon_notified, overdue_notified, ack_held_until, reminder_held_until";

/// Threading facts kept beside the case.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct CaseThread {
    pub subject: String,
    pub thread_root: Option<String>,
    pub notice_root: Option<String>,
    #[sqlx(try_from = "String")]
    pub manner: Manner,
}

/// Where the numbers of the cases opened in one transaction come from.
///
/// Numbers are reserved in `case_seq` a block at a time, in one round trip,
/// handed out in order, and what was not used is given back before the
/// transaction commits ([`CaseNumbers::give_back`]). Intake numbers a
/// batch's cases from one block instead of one round trip per case
/// (issue 13); whatever opens a case in the same transaction (a team
/// `#open`) is handed the same `CaseNumbers` (in `casework::Carry`), so
/// the numbers stay consecutive. Numbers are given back only while nobody
/// numbered a case after the block, so a number is never handed out twice.
#[derive(Debug, Clone)]
pub(crate) struct CaseNumbers {
    /// How many numbers a block holds.
    block: u64,
    /// The current block of each (prefix, year).
    blocks: Vec<Block>,
}

/// Case numbers reserved for one prefix and year.
#[derive(Debug, Clone)]
struct Block {
    prefix: String,
    year: i32,
    /// The next number to hand out; past `last` when the block is used up.
    next: u64,
    /// The block's last number, as `case_seq` holds it.
    last: u64,
}

impl CaseNumbers {
    /// Numbers reserved `block` at a time (at least one); one at a time
    /// costs a round trip per case, as a single new case does anyway.
    pub(crate) fn reserving(block: usize) -> Self {
        CaseNumbers {
            block: (block as u64).max(1),
            blocks: Vec::new(),
        }
    }

    /// Whether the current block for `prefix` in `year` has a number left,
    /// so that [`CaseNumbers::next`] needs no statement.
    pub(crate) fn has_free(&self, prefix: &str, year: i32) -> bool {
        self.blocks
            .iter()
            .any(|b| b.prefix == prefix && b.year == year && b.next <= b.last)
    }

    /// The next case number for `prefix` in `year`.
    pub(crate) async fn next(
        &mut self,
        conn: &mut SqliteConnection,
        prefix: &str,
        year: i32,
    ) -> Result<u64> {
        let found = self
            .blocks
            .iter_mut()
            .find(|b| b.prefix == prefix && b.year == year && b.next <= b.last);
        if let Some(block) = found {
            let seq = block.next;
            block.next += 1;
            return Ok(seq);
        }
        let last = reserve(conn, prefix, year, self.block).await?;
        let first = last + 1 - self.block;
        self.blocks
            .retain(|b| !(b.prefix == prefix && b.year == year));
        self.blocks.push(Block {
            prefix: prefix.to_string(),
            year,
            next: first + 1,
            last,
        });
        Ok(first)
    }

    /// Gives back the numbers reserved and not handed out, unless someone
    /// numbered a case after the block (then they stay unused). Call it
    /// before the transaction commits.
    pub(crate) async fn give_back(&mut self, conn: &mut SqliteConnection) -> Result<()> {
        for block in std::mem::take(&mut self.blocks) {
            if block.next > block.last {
                continue;
            }
            sqlx::query("UPDATE case_seq SET last = ? WHERE prefix = ? AND year = ? AND last = ?")
                .bind((block.next - 1) as i64)
                .bind(&block.prefix)
                .bind(block.year)
                .bind(block.last as i64)
                .execute(&mut *conn)
                .await
                .op("cases.give_back")?;
        }
        Ok(())
    }
}

/// Reserves `count` case numbers for `prefix` in `year` (the first year's
/// row is created); returns the last.
async fn reserve(conn: &mut SqliteConnection, prefix: &str, year: i32, count: u64) -> Result<u64> {
    let last: i64 = sqlx::query_scalar(
        "INSERT INTO case_seq (prefix, year, last) VALUES (?, ?, ?)
         ON CONFLICT (prefix, year) DO UPDATE SET last = last + excluded.last
         RETURNING last",
    )
    .bind(prefix)
    .bind(year)
    .bind(count as i64)
    .fetch_one(conn)
    .await
    .op("cases.reserve")?;
    Ok(last as u64)
}

/// The year a case number carries: the local year of receipt.
pub(crate) fn id_year(received: DateTime<Utc>, tz: chrono_tz::Tz) -> i32 {
    received.with_timezone(&tz).year()
}

pub async fn insert(
    conn: &mut SqliteConnection,
    case: &Case,
    thread: &CaseThread,
    now: DateTime<Utc>,
) -> Result<()> {
    bind_insert(
        sqlx::query(sqlx::AssertSqlSafe(insert_sql())),
        case,
        thread,
        now,
    )
    .execute(conn)
    .await
    .op("cases.insert")?;
    Ok(())
}

/// A new case's rows besides its own, written in its statement batch by
/// [`insert_with_message`].
#[derive(Debug, Default)]
pub(crate) struct Opening<'a> {
    /// The events its transition opens with (at `now`).
    pub events: &'a [super::events::NewEvent<'a>],
    /// Its new-case notice held back for the end of the batch
    /// (`burst::queue_notice`).
    pub notice_queued: bool,
    /// Counts the automatic mails to this rate key since this time
    /// ([`super::outbox::recent_to`]) after the rows are in, for the
    /// per-sender limit of the case's first reply.
    pub recent_to: Option<(&'a str, DateTime<Utc>)>,
    /// A mail of an earlier case, written ahead of this case's rows in the
    /// same batch: its outbox row and its record (`casework::Carry`).
    pub before: Option<(&'a super::NewOutbox<'a>, &'a super::NewMessage<'a>)>,
    /// Events of that earlier case that followed its mail, written right
    /// after it (an opt-out's `opt_out_answered`).
    pub before_events: Option<CaseEvents<'a>>,
}

/// Events of one case, at one time, for a statement batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CaseEvents<'a> {
    pub case_id: &'a str,
    pub at: DateTime<Utc>,
    pub events: &'a [super::events::NewEvent<'a>],
}

/// What [`insert_with_message`] read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opened {
    /// The message's row.
    pub message_row: i64,
    /// The count [`Opening::recent_to`] asked for.
    pub recent_to: Option<i64>,
}

/// Inserts a new case, the rows of its `opening` (after a mail of an earlier
/// case, when given) and the message that opened it in one statement batch,
/// with the per-sender count its first reply needs: one round trip to the
/// SQLite worker instead of up to five (issue 13).
pub(crate) async fn insert_with_message(
    conn: &mut SqliteConnection,
    case: &Case,
    thread: &CaseThread,
    opening: &Opening<'_>,
    message: &super::NewMessage<'_>,
    now: DateTime<Utc>,
) -> Result<Opened> {
    let events = opening.events;
    let mut sql = String::new();
    if opening.before.is_some() {
        sql.push_str(super::outbox::INSERT);
        sql.push_str(";\n");
        sql.push_str(super::messages::INSERT);
        sql.push_str(";\n");
    }
    if let Some(before) = opening.before_events.filter(|b| !b.events.is_empty()) {
        sql.push_str(&super::events::many_sql(before.events.len()));
        sql.push_str(";\n");
    }
    sql.push_str(&insert_sql());
    sql.push_str(";\n");
    if !events.is_empty() {
        sql.push_str(&super::events::many_sql(events.len()));
        sql.push_str(";\n");
    }
    if opening.notice_queued {
        sql.push_str(super::burst::QUEUE_NOTICE);
        sql.push_str(";\n");
    }
    sql.push_str(super::messages::INSERT);
    sql.push_str(" RETURNING id;");
    if opening.recent_to.is_some() {
        sql.push_str(super::outbox::RECENT_TO);
        sql.push(';');
    }
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some((outbox, record)) = opening.before {
        q = super::messages::bind(super::outbox::bind(q, outbox), record);
    }
    if let Some(before) = opening.before_events.filter(|b| !b.events.is_empty()) {
        q = super::events::bind_many(q, before.case_id, before.at, before.events);
    }
    q = bind_insert(q, case, thread, now);
    q = super::events::bind_many(q, case.id.as_str(), now, events);
    if opening.notice_queued {
        q = q.bind(&case.id).bind(now);
    }
    q = super::messages::bind(q, message);
    if let Some((rate_key, since)) = opening.recent_to {
        q = q.bind(rate_key).bind(since);
    }
    // One row from the message's RETURNING, then the count's.
    let rows = q.fetch_all(conn).await.op("cases.insert_with_message")?;
    let value = |i: usize| -> Result<Option<i64>> {
        rows.get(i)
            .map(|row| row.try_get(0))
            .transpose()
            .op("cases.insert_with_message")
    };
    let message_row = match value(0)? {
        Some(id) => id,
        None => return Err(sqlx::Error::RowNotFound).op("cases.insert_with_message"),
    };
    Ok(Opened {
        message_row,
        recent_to: match opening.recent_to {
            Some(_) => value(1)?,
            None => None,
        },
    })
}

fn insert_sql() -> String {
    format!(
        "INSERT INTO cases ({COLUMNS}, subject, thread_root, notice_root, manner, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
}

fn bind_insert<'q>(
    q: super::Query<'q>,
    case: &Case,
    thread: &CaseThread,
    now: DateTime<Utc>,
) -> super::Query<'q> {
    bind_case(q, case)
        .bind(&thread.subject)
        .bind(&thread.thread_root)
        .bind(&thread.notice_root)
        .bind(thread.manner.as_str())
        .bind(now)
        .bind(now)
}

/// Writes every engine-owned field of the case back. The ID is the key, never
/// written: setting `id`, even to itself, makes SQLite check every table that
/// references cases for rows of the old key (issue 13: with 100,000 cases an
/// update read the whole outbox).
pub async fn update(conn: &mut SqliteConnection, case: &Case, now: DateTime<Utc>) -> Result<()> {
    let sql = "UPDATE cases SET kind = ?2, state = ?3, requester = ?4, agent = ?5, consumer = ?6,
        consumer_name = ?7, received_at = ?8, acknowledged_at = ?9, ack_due_at = ?10, due_at = ?11,
        extended = ?12, verified_at = ?13, closed_at = ?14, verification_code = ?15,
        reminder_sent_at = ?16, authorization_ok = ?17, resolution = ?18, denial_reason = ?19,
        closed_reply_sent = ?20, due_soon_notified = ?21, overdue_notified = ?22,
        ack_held_until = ?23, reminder_held_until = ?24, updated_at = ?25
        WHERE id = ?1";
    bind_case(sqlx::query(sql), case)
        .bind(now)
        .execute(conn)
        .await
        .op("cases.update")?;
    Ok(())
}

fn bind_case<'q>(q: super::Query<'q>, c: &Case) -> super::Query<'q> {
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
        .bind(c.resolution.map(Resolution::as_str))
        .bind(&c.denial_reason)
        .bind(c.closed_reply_sent)
        .bind(c.due_soon_notified)
        .bind(c.overdue_notified)
        .bind(c.ack_held_until)
        .bind(c.reminder_held_until)
}

pub async fn get(conn: &mut SqliteConnection, id: &CaseId) -> Result<Option<Case>> {
    let sql = format!("SELECT {COLUMNS} FROM cases WHERE id = ?");
    let row: Option<CaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await
        .op("cases.get")?;
    row.map(CaseRow::into_case).transpose()
}

/// The cases of `ids` that exist, in ID order: one statement for a whole
/// intake batch (the burst check) instead of one per case.
pub(crate) async fn get_many(conn: &mut SqliteConnection, ids: &[CaseId]) -> Result<Vec<Case>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = super::json_list(ids);
    let sql = format!(
        "SELECT {COLUMNS} FROM cases WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id"
    );
    let rows: Vec<CaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(conn)
        .await
        .op("cases.get_many")?;
    rows.into_iter().map(CaseRow::into_case).collect()
}

pub async fn thread(conn: &mut SqliteConnection, id: &CaseId) -> Result<CaseThread> {
    Ok(
        sqlx::query_as("SELECT subject, thread_root, notice_root, manner FROM cases WHERE id = ?")
            .bind(id)
            .fetch_optional(conn)
            .await
            .op("cases.thread")?
            .unwrap_or_default(),
    )
}

pub(crate) async fn set_notice_root(
    conn: &mut SqliteConnection,
    id: &CaseId,
    root: &str,
) -> Result<()> {
    sqlx::query("UPDATE cases SET notice_root = ? WHERE id = ? AND notice_root IS NULL")
        .bind(root)
        .bind(id)
        .execute(conn)
        .await
        .op("cases.set_notice_root")?;
    Ok(())
}

/// The final states as an SQL list (`'completed', 'denied', …`), derived
/// from [`State::is_final`]: the one place SQL learns which cases are closed.
pub(crate) fn final_states_sql() -> String {
    State::ALL
        .iter()
        .filter(|s| s.is_final())
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many cases are open (in a non-final state).
pub(crate) async fn count_open(conn: &mut SqliteConnection) -> Result<i64> {
    let sql = format!(
        "SELECT COUNT(*) FROM cases WHERE state NOT IN ({})",
        final_states_sql()
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
        .op("cases.count_open")
}

/// How many cases were opened after `since` (the burst rule counts the
/// last minute).
pub(crate) async fn count_created_since(
    conn: &mut SqliteConnection,
    since: DateTime<Utc>,
) -> Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM cases WHERE created_at > ?")
        .bind(since)
        .fetch_one(conn)
        .await
        .op("cases.count_created_since")
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
    let finals = final_states_sql();
    let sql = if open_only {
        format!(
            "SELECT {COLUMNS} FROM cases WHERE state NOT IN ({finals}) ORDER BY received_at, id"
        )
    } else {
        format!("SELECT {COLUMNS} FROM cases ORDER BY received_at, id")
    };
    let rows: Vec<CaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(conn)
        .await
        .op("cases.list")?;
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

/// Up to `limit` open cases with an ID after `after`, in ID order: the
/// scheduler reads them a page at a time, so that a burst's 20,000 open
/// cases are never all in memory at once (issue 13).
pub async fn open_page(
    conn: &mut SqliteConnection,
    after: Option<&CaseId>,
    limit: u32,
) -> Result<Vec<Case>> {
    let finals = final_states_sql();
    let sql = format!(
        "SELECT {COLUMNS} FROM cases WHERE state NOT IN ({finals}) AND id > ? ORDER BY id LIMIT ?"
    );
    let rows: Vec<CaseRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(after.map_or("", CaseId::as_str))
        .bind(limit)
        .fetch_all(conn)
        .await
        .op("cases.open_page")?;
    rows.into_iter().map(CaseRow::into_case).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{at, close_case, open_case, store};

    #[test]
    fn the_final_state_list_is_the_engines() {
        let sql = final_states_sql();
        for s in State::ALL {
            assert_eq!(
                sql.contains(&format!("'{}'", s.as_str())),
                s.is_final(),
                "{s}"
            );
        }
    }

    /// A reserved block hands out consecutive numbers and gives back the
    /// rest; a case numbered by someone else meanwhile comes after the
    /// block, and then the rest of the block stays unused.
    #[tokio::test]
    async fn case_numbers_come_from_a_block_and_are_never_handed_out_twice() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        let mut block = CaseNumbers::reserving(5);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(block.next(&mut conn, "CA", 2026).await.unwrap());
        }
        // Another year has its own sequence.
        got.push(block.next(&mut conn, "CA", 2027).await.unwrap());
        assert_eq!(got, [1, 2, 3, 1]);
        block.give_back(&mut conn).await.unwrap();
        assert_eq!(reserve(&mut conn, "CA", 2026, 1).await.unwrap(), 4);
        assert_eq!(reserve(&mut conn, "CA", 2027, 1).await.unwrap(), 2);

        // Someone numbers a case while the block is out.
        let mut block = CaseNumbers::reserving(5);
        assert_eq!(block.next(&mut conn, "CA", 2026).await.unwrap(), 5);
        assert_eq!(reserve(&mut conn, "CA", 2026, 1).await.unwrap(), 10);
        assert_eq!(block.next(&mut conn, "CA", 2026).await.unwrap(), 6);
        block.give_back(&mut conn).await.unwrap();
        assert_eq!(reserve(&mut conn, "CA", 2026, 1).await.unwrap(), 11);

        // A block used up is followed by the next one.
        let mut block = CaseNumbers::reserving(1);
        assert_eq!(block.next(&mut conn, "CA", 2026).await.unwrap(), 12);
        assert_eq!(block.next(&mut conn, "CA", 2026).await.unwrap(), 13);
        block.give_back(&mut conn).await.unwrap();
        assert_eq!(reserve(&mut conn, "CA", 2026, 1).await.unwrap(), 14);
    }

    /// The case, its events and its message in one statement batch: every
    /// parameter lands in its own column (a miscount would shift them or
    /// leave some NULL), and the message is linked.
    #[tokio::test]
    async fn a_case_its_events_and_its_message_in_one_batch() {
        use crate::cases::Action;
        use crate::store::{NewMessage, events};
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        let req = crate::cases::engine::NewRequest {
            kind: Kind::Delete,
            requester: "ann@example.org".into(),
            agent: None,
            consumer: Some("ann@example.org".into()),
            consumer_name: Some("Ann".into()),
            received_at: at(1),
            declarations: 0,
        };
        let t = crate::cases::open(
            "C-7".into(),
            "654321".into(),
            req,
            &crate::cases::Policy::default(),
            at(1),
        );
        let thread = CaseThread {
            subject: "Request to delete".into(),
            thread_root: Some("root@example.org".into()),
            notice_root: None,
            manner: Manner::Email,
        };
        let evs = [
            events::NewEvent {
                actor: "daemon".into(),
                action: Action::Opened,
                detail: "first",
            },
            events::NewEvent {
                actor: "ann@example.org".into(),
                action: Action::State,
                detail: "second",
            },
        ];
        let message = NewMessage {
            case_id: Some("C-7"),
            direction: "in",
            message_id: Some("root@example.org"),
            subject: "Request to delete",
            from_addr: Some("ann@example.org"),
            at: at(1),
            sha256: "abc",
            size: 3,
            original: crate::store::messages::Original::Row(b"raw"),
            body_text: Some("text"),
            uid_validity: Some(9),
            uid: Some(4),
            target_mailbox: Some("Processed"),
            ..NewMessage::default()
        };
        // One automatic mail to Ann in the last day: the batch counts it.
        let recipients = vec!["ann@example.org".to_string()];
        let earlier = crate::store::outbox::NewOutbox {
            case_id: None,
            message_id: "earlier@example.com",
            audience: crate::store::outbox::Audience::Consumer,
            template: "acknowledgement",
            envelope_from: "privacy@example.com",
            recipients: &recipients,
            rate_key: "ann@example.org",
            subject: "s",
            raw: b"raw",
            now: at(1),
        };
        crate::store::outbox::insert(&mut conn, &earlier)
            .await
            .unwrap();
        // And an earlier case's reply to Ann, carried into this batch ahead
        // of the case's rows: the count sees it too.
        let carried = crate::store::outbox::NewOutbox {
            message_id: "carried@example.com",
            now: at(2),
            ..earlier.clone()
        };
        let carried_record = NewMessage {
            case_id: None,
            direction: "out",
            message_id: Some("carried@example.com"),
            original: crate::store::messages::Original::None,
            uid_validity: None,
            uid: None,
            target_mailbox: None,
            ..message.clone()
        };
        let opening = Opening {
            events: &evs,
            notice_queued: true,
            recent_to: Some(("ann@example.org", at(0))),
            before: Some((&carried, &carried_record)),
            before_events: None,
        };
        let opened = insert_with_message(&mut conn, &t.case, &thread, &opening, &message, at(2))
            .await
            .unwrap();
        assert_eq!(opened.recent_to, Some(2), "the per-sender count");
        let id = opened.message_row;
        let written: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT id, direction, message_id FROM messages ORDER BY id")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        assert_eq!(
            written
                .iter()
                .map(|(_, d, m)| (d.as_str(), m.as_str()))
                .collect::<Vec<_>>(),
            [("out", "carried@example.com"), ("in", "root@example.org")],
            "the carried reply's record first, then the request"
        );
        assert_eq!(written.last().map(|w| w.0), Some(id));
        let outbox: Vec<String> = sqlx::query_scalar("SELECT message_id FROM outbox ORDER BY id")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(outbox, ["earlier@example.com", "carried@example.com"]);

        let back = get(&mut conn, &"C-7".into()).await.unwrap().unwrap();
        assert_eq!(back, t.case);
        assert_eq!(
            self::thread(&mut conn, &"C-7".into())
                .await
                .unwrap()
                .thread_root,
            thread.thread_root
        );
        let logged: Vec<(String, String, String)> = events::for_case(&mut conn, &"C-7".into())
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.actor, e.action, e.detail))
            .collect();
        assert_eq!(
            logged,
            [
                ("daemon".into(), "opened".into(), "first".into()),
                ("ann@example.org".into(), "state".into(), "second".into()),
            ]
        );
        let row: (String, String, Vec<u8>, i64, String) = sqlx::query_as(
            "SELECT case_id, message_id, raw, uid, target_mailbox FROM messages WHERE id = ?",
        )
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(
            row,
            (
                "C-7".into(),
                "root@example.org".into(),
                b"raw".to_vec(),
                4,
                "Processed".into()
            )
        );

        assert_eq!(
            crate::store::burst::take_queued(&mut conn).await.unwrap(),
            [CaseId::from("C-7")],
            "the new-case notice is held back"
        );

        // Without events or notice the batch is the case and the message.
        let mut other = t.case.clone();
        other.id = "C-8".into();
        let second = insert_with_message(
            &mut conn,
            &other,
            &thread,
            &Opening::default(),
            &NewMessage {
                case_id: Some("C-8"),
                ..message.clone()
            },
            at(2),
        )
        .await
        .unwrap();
        assert_eq!(second.recent_to, None);
        assert!(second.message_row > id);
        assert!(
            crate::store::burst::take_queued(&mut conn)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            events::for_case(&mut conn, &"C-8".into())
                .await
                .unwrap()
                .is_empty()
        );

        // An earlier case's events carried with its mail go in right after
        // it, ahead of the next case's rows.
        let mut third = t.case.clone();
        third.id = "C-9".into();
        let carried_events = [events::NewEvent {
            actor: "daemon".into(),
            action: Action::OptOutAnswered,
            detail: "carried",
        }];
        let opening = Opening {
            events: &evs[..1],
            before_events: Some(CaseEvents {
                case_id: "C-8",
                at: at(3),
                events: &carried_events,
            }),
            ..Opening::default()
        };
        insert_with_message(
            &mut conn,
            &third,
            &thread,
            &opening,
            &NewMessage {
                case_id: Some("C-9"),
                message_id: Some("third@example.org"),
                ..message.clone()
            },
            at(3),
        )
        .await
        .unwrap();
        let order: Vec<(String, String, String)> =
            sqlx::query_as("SELECT case_id, action, detail FROM events WHERE at = ? ORDER BY id")
                .bind(at(3))
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        assert_eq!(
            order,
            [
                ("C-8".into(), "opt_out_answered".into(), "carried".into()),
                ("C-9".into(), "opened".into(), "first".into()),
            ],
            "the carried event first, then the case's own"
        );
    }

    #[tokio::test]
    async fn many_cases_in_one_read() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        open_case(&mut conn, "C-2", at(1)).await;
        open_case(&mut conn, "C-1", at(1)).await;
        let ids: [CaseId; 3] = ["C-2".into(), "C-9".into(), "C-1".into()];
        let got: Vec<String> = get_many(&mut conn, &ids)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id.to_string())
            .collect();
        assert_eq!(got, ["C-1", "C-2"], "existing cases, in ID order");
        assert!(get_many(&mut conn, &[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn open_cases_page_by_page_in_id_order() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        for id in ["C-3", "C-1", "C-4", "C-2"] {
            open_case(&mut conn, id, at(1)).await;
        }
        let mut c3 = get(&mut conn, &"C-3".into()).await.unwrap().unwrap();
        close_case(&mut conn, &mut c3, at(2)).await;
        let mut pages = Vec::new();
        let mut after: Option<CaseId> = None;
        loop {
            let page = open_page(&mut conn, after.as_ref(), 2).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            pages.push(page.iter().map(|c| c.id.to_string()).collect::<Vec<_>>());
        }
        assert_eq!(
            pages,
            [vec!["C-1", "C-2"], vec!["C-4"]],
            "closed C-3 left out"
        );
    }

    #[tokio::test]
    async fn open_counts_and_the_held_back_acknowledgement() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        let mut a = open_case(&mut conn, "C-1", at(1)).await;
        open_case(&mut conn, "C-2", at(1)).await;
        assert_eq!(count_open(&mut conn).await.unwrap(), 2);
        close_case(&mut conn, &mut a, at(2)).await;
        assert_eq!(count_open(&mut conn).await.unwrap(), 1);
        // created_at is the insert time (the received time here).
        assert_eq!(
            count_created_since(&mut conn, at(1) - chrono::Duration::minutes(1))
                .await
                .unwrap(),
            2
        );
        assert_eq!(count_created_since(&mut conn, at(1)).await.unwrap(), 0);

        // A held acknowledgement (the engine's AcknowledgementHeld) round-trips.
        let mut held = get(&mut conn, &"C-2".into()).await.unwrap().unwrap();
        assert!(held.acknowledged_at.is_some() && held.ack_held_until.is_none());
        held.acknowledged_at = None;
        held.ack_held_until = Some(at(3));
        update(&mut conn, &held, at(2)).await.unwrap();
        let back = get(&mut conn, &"C-2".into()).await.unwrap().unwrap();
        assert_eq!(back.acknowledged_at, None);
        assert_eq!(back.ack_held_until, Some(at(3)));
    }
}
