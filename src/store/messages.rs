//! The `messages` table: every message in and out, and which originals still
//! wait to be filed (moved) after their transaction committed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Row as _, SqliteConnection};

use super::{Op, Result};
use crate::ids::CaseId;

crate::cases::vocabulary! {
    /// What became of a message (`messages.disposition`). Inbound: intake's
    /// decision; outbound: who it went to.
    pub enum Disposition {
        /// Filed on a case (a request, a reply).
        Case = "case",
        /// Moved to review for a person to read.
        Review = "review",
        /// Automatic mail (an auto-reply, a list), never answered.
        Auto = "auto",
        /// A delivery report.
        Dsn = "dsn",
        /// The same message again.
        Duplicate = "duplicate",
        /// A team member's reply to a notice (commands).
        Team = "team",
        /// Our own mail come back.
        Own = "own",
        /// Processing failed; the raw bytes are kept.
        Failed = "failed",
        /// A team member's mail to a party, found in the Sent folder.
        TeamReply = "team_reply",
        /// A team member's mail to a party, with the mailbox in Bcc.
        TeamBcc = "team_bcc",
        /// The original of a Bcc'd team mail, filed only: its `team_bcc`
        /// row is the case's record.
        TeamReplyOriginal = "team_reply_original",
        /// A copy of our own team notice come back as new mail.
        TeamLoop = "team_loop",
        /// Outbound: mail to a consumer (outbound team mail is `team`).
        Consumer = "consumer",
    }
}

impl Default for Disposition {
    /// The column's default.
    fn default() -> Self {
        Disposition::Case
    }
}

/// Where a message row keeps the message's bytes: the `raw` and `raw_file`
/// columns, one or neither, never both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Original<'a> {
    /// Not kept in the row: mail we sent (the outbox row holds it).
    #[default]
    None,
    /// In the row's `raw` column (only the header, when the message was
    /// recorded from its headers).
    Row(&'a [u8]),
    /// The blob store's file named by the row's `sha256`: a large message
    /// taken in part by part.
    File,
}

impl<'a> Original<'a> {
    /// The `raw` column.
    fn raw(self) -> Option<&'a [u8]> {
        match self {
            Original::Row(raw) => Some(raw),
            Original::None | Original::File => None,
        }
    }

    /// The `raw_file` column.
    fn in_file(self) -> bool {
        self == Original::File
    }
}

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
    /// Where its bytes are kept.
    pub original: Original<'a>,
    pub body_text: Option<&'a str>,
    pub disposition: Disposition,
    pub uid_validity: Option<u32>,
    pub uid: Option<u32>,
    pub target_mailbox: Option<&'a str>,
}

pub async fn insert(conn: &mut SqliteConnection, m: &NewMessage<'_>) -> Result<i64> {
    let sql = format!("{INSERT} RETURNING id");
    let row = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), m)
        .fetch_one(conn)
        .await
        .op("messages.insert")?;
    row.try_get(0).op("messages.insert")
}

/// The statement [`insert`] runs, without its `RETURNING`: other tables'
/// inserts put it after their own in one round trip to the SQLite worker
/// (`cases::insert_with_message`, `outbox::insert_with_record`; issue 13).
pub(super) const INSERT: &str =
    "INSERT INTO messages (case_id, direction, message_id, subject, from_addr, at, template,
            sha256, size, raw, raw_file, body_text, disposition, uid_validity, uid,
            target_mailbox)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Binds the 16 parameters of [`INSERT`], in order.
pub(super) fn bind<'q>(q: super::Query<'q>, m: &NewMessage<'_>) -> super::Query<'q> {
    q.bind(m.case_id)
        .bind(m.direction)
        .bind(m.message_id)
        .bind(m.subject)
        .bind(m.from_addr)
        .bind(m.at)
        .bind(m.template)
        .bind(m.sha256)
        .bind(m.size)
        .bind(m.original.raw())
        .bind(m.original.in_file())
        .bind(m.body_text)
        .bind(m.disposition.as_str())
        .bind(m.uid_validity.map(i64::from))
        .bind(m.uid.map(i64::from))
        .bind(m.target_mailbox)
}

/// How many inbound messages from `from_addr` were taken in since `since`
/// (the throttle on review notices per sender).
pub(crate) async fn inbound_from_since(
    conn: &mut SqliteConnection,
    from_addr: &str,
    since: DateTime<Utc>,
) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages WHERE direction = 'in' AND from_addr = ? AND at > ?",
    )
    .bind(from_addr)
    .bind(since)
    .fetch_one(conn)
    .await
    .op("messages.inbound_from_since")
}

/// The inbox's duplicate rule: an inbound message seen before is the same
/// bytes, or the same Message-ID from the same sender with the same subject
/// (a copy delivered twice with other Received lines). The second line of
/// de-duplication after the UID cursor. Only inbound rows count, and the
/// Message-ID alone is not enough: anyone can write any Message-ID, and a
/// reused one (a broken client, or on purpose) must not swallow a new
/// request; our own outgoing mail come back is not a duplicate either (it is
/// `own`). Returns the earlier row and where its original was filed. The
/// Sent-folder scan has its own rule, [`team_mail_on_record`].
pub(crate) async fn seen_inbound(
    conn: &mut SqliteConnection,
    key: &SeenKey<'_>,
) -> Result<Option<(i64, Option<String>)>> {
    Ok(seen_inbound_many(conn, std::slice::from_ref(key))
        .await?
        .pop()
        .flatten())
}

/// What [`seen_inbound`] compares of a message.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct SeenKey<'a> {
    #[serde(rename = "m")]
    pub message_id: Option<&'a str>,
    #[serde(rename = "f")]
    pub from_addr: Option<&'a str>,
    #[serde(rename = "s")]
    pub subject: &'a str,
    #[serde(rename = "h")]
    pub sha256: &'a str,
}

/// [`seen_inbound`] for many messages in one statement (intake reads a
/// whole batch's answers at once; issue 13). The answers are in the order of
/// `keys`.
pub(crate) async fn seen_inbound_many(
    conn: &mut SqliteConnection,
    keys: &[SeenKey<'_>],
) -> Result<Vec<Option<(i64, Option<String>)>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let json = super::json_list(keys);
    // `+e.from_addr`: the Message-ID index, not the sender's. A sender's
    // index holds every message from an agent desk (thousands), a
    // Message-ID's one or two; SQLite picked the sender's.
    let rows: Vec<(i64, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT k.key, m.id, m.target_mailbox
         FROM json_each(?) k
         LEFT JOIN messages m ON m.id = (
           SELECT e.id FROM messages e WHERE e.direction = 'in'
              AND (e.sha256 = k.value ->> 'h'
                   OR (k.value ->> 'm' IS NOT NULL AND e.message_id = k.value ->> 'm'
                       AND +e.from_addr IS k.value ->> 'f' AND e.subject = k.value ->> 's'))
            ORDER BY e.id LIMIT 1)
         ORDER BY k.key",
    )
    .bind(json)
    .fetch_all(conn)
    .await
    .op("messages.seen_inbound")?;
    let mut answers = vec![None; keys.len()];
    for (index, id, target) in rows {
        if let (Some(slot), Some(id)) = (
            usize::try_from(index).ok().and_then(|i| answers.get_mut(i)),
            id,
        ) {
            *slot = Some((id, target));
        }
    }
    Ok(answers)
}

/// Originals committed but not yet moved, in this UIDVALIDITY.
pub(crate) async fn unfiled(
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
    .await
    .op("messages.unfiled")?;
    Ok(rows
        .into_iter()
        .map(|(id, uid, target)| (id, uid as u32, target))
        .collect())
}

/// Marks originals filed once their MOVE succeeded. Rows of an older
/// UIDVALIDITY can never be moved by UID again; they are closed too.
pub(crate) async fn mark_filed(
    conn: &mut SqliteConnection,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<()> {
    // One statement for the whole batch (the ids travel as a JSON array).
    let ids = super::json_list(ids);
    sqlx::query("UPDATE messages SET filed_at = ? WHERE id IN (SELECT value FROM json_each(?))")
        .bind(now)
        .bind(ids)
        .execute(conn)
        .await
        .op("messages.mark_filed")?;
    Ok(())
}

pub(crate) async fn close_stale_unfiled(
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
    .await
    .op("messages.close_stale_unfiled")?;
    Ok(())
}

/// Links a message row to the case it opened (the row is written first, so
/// the acknowledgement can answer it).
pub(crate) async fn set_case(
    conn: &mut SqliteConnection,
    message_row: i64,
    case_id: &CaseId,
) -> Result<()> {
    sqlx::query("UPDATE messages SET case_id = ? WHERE id = ?")
        .bind(case_id)
        .bind(message_row)
        .execute(conn)
        .await
        .op("messages.set_case")?;
    Ok(())
}

/// Notes the kind a message in review reads like (the review notice offered
/// `#open`): a §7101 record row until a case is opened from it.
pub(crate) async fn set_reads_like(
    conn: &mut SqliteConnection,
    message_row: i64,
    kind: &str,
) -> Result<()> {
    sqlx::query("UPDATE messages SET reads_like = ? WHERE id = ? AND direction = 'in'")
        .bind(kind)
        .bind(message_row)
        .execute(conn)
        .await
        .op("messages.set_reads_like")?;
    Ok(())
}

/// The Sent folder's duplicate rule: is a team member's mail already on
/// record, in or out, by its Message-ID or its bytes? The Sent folder holds
/// only mail written from our own mailbox, and the same mail may already be
/// stored under either direction: as correspondence from its Bcc copy (out),
/// as the filed original of that copy (in, without a sender), or as our own
/// outgoing mail. Any row with its Message-ID is the same mail, whatever its
/// sender column says. The inbox uses the stricter [`seen_inbound`].
pub(crate) async fn team_mail_on_record(
    conn: &mut SqliteConnection,
    message_id: Option<&str>,
    sha256: &str,
) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages WHERE (message_id IS NOT NULL AND message_id = ?) OR sha256 = ?",
    )
    .bind(message_id)
    .bind(sha256)
    .fetch_one(conn)
    .await
    .op("messages.team_mail_on_record")?;
    Ok(n > 0)
}

/// A stored inbound message, as `#open` on a review notice reads it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct StoredInbound {
    /// Absent when only the headers were kept, or when `raw_file`.
    pub raw: Option<Vec<u8>>,
    /// The raw bytes are the blob store's file named by `sha256`.
    pub raw_file: bool,
    pub sha256: String,
    pub case_id: Option<String>,
    pub at: DateTime<Utc>,
}

/// The stored inbound message of row `id`, if there is one.
pub(crate) async fn stored_inbound(
    conn: &mut SqliteConnection,
    id: i64,
) -> Result<Option<StoredInbound>> {
    sqlx::query_as(
        "SELECT raw, raw_file, sha256, case_id, at FROM messages WHERE id = ? AND direction = 'in'",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
    .op("messages.stored_inbound")
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

pub async fn for_case(conn: &mut SqliteConnection, case_id: &CaseId) -> Result<Vec<MessageRow>> {
    sqlx::query_as(
        "SELECT direction, message_id, subject, at, template, from_addr, body_text
         FROM messages WHERE case_id = ? ORDER BY at, id",
    )
    .bind(case_id)
    .fetch_all(conn)
    .await
    .op("messages.for_case")
}

/// The newest inbound message of a party of the case that was applied to
/// the case (disposition `case`, or the request that opened it): what our
/// next consumer-facing mail answers (In-Reply-To). Never team mail, a
/// bounce, automatic mail or a stranger's message kept for review — those
/// would break the consumer's thread or leak an internal Message-ID.
#[cfg(test)]
pub(crate) async fn last_applied_inbound_id(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
) -> Result<Option<String>> {
    Ok(reply_thread(conn, case_id).await?.last_applied)
}

/// What a consumer-facing reply threads to: the case's request Message-ID and
/// the newest inbound message applied to it, read in one statement (one round trip to the
/// SQLite worker per reply instead of two; issue 13).
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct ReplyThread {
    pub thread_root: Option<String>,
    pub last_applied: Option<String>,
}

/// The [`ReplyThread`] of a case (empty when there is no such case).
pub(crate) async fn reply_thread(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
) -> Result<ReplyThread> {
    Ok(sqlx::query_as(
        "SELECT c.thread_root,
           (SELECT m.message_id FROM messages m
             WHERE m.case_id = c.id AND m.direction = 'in' AND m.message_id IS NOT NULL
               AND (m.disposition = ?2 OR m.message_id = c.thread_root)
             ORDER BY m.id DESC LIMIT 1) AS last_applied
         FROM cases c WHERE c.id = ?1",
    )
    .bind(case_id)
    .bind(Disposition::Case.as_str())
    .fetch_optional(conn)
    .await
    .op("messages.reply_thread")?
    .unwrap_or_default())
}

/// Our own newest consumer-facing Message-ID on a case: what a reply
/// answers when the consumer's side has no message to answer.
pub(crate) async fn last_consumer_mail_id(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT message_id FROM messages WHERE case_id = ? AND direction = 'out'
         AND disposition = ? AND message_id IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .bind(case_id)
    .bind(Disposition::Consumer.as_str())
    .fetch_optional(conn)
    .await
    .op("messages.last_consumer_mail_id")?
    .flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{at, inbound, open_case, store};

    /// Each place a row can keep the bytes fills its columns, and only
    /// its own: `raw` for the row, `raw_file` for the blob store's file.
    #[tokio::test]
    async fn the_original_fills_raw_or_raw_file() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        for (original, want) in [
            (Original::Row(b"bytes"), (Some(b"bytes".to_vec()), false)),
            (Original::File, (None, true)),
            (Original::None, (None, false)),
        ] {
            let id = insert(
                &mut conn,
                &NewMessage {
                    direction: "in",
                    at: at(1),
                    sha256: "abc",
                    original,
                    ..NewMessage::default()
                },
            )
            .await
            .unwrap();
            let got: (Option<Vec<u8>>, bool) =
                sqlx::query_as("SELECT raw, raw_file FROM messages WHERE id = ?")
                    .bind(id)
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
            assert_eq!(got, want, "{original:?}");
        }
    }

    /// The inbox's duplicate rule, many messages in one statement: the
    /// earliest inbound row with the same bytes, or the same Message-ID from
    /// the same sender with the same subject; never an outgoing row.
    #[tokio::test]
    async fn seen_inbound_many_answers_each_key_in_order() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        let row = |direction: &'static str,
                   mid: Option<&'static str>,
                   from: Option<&'static str>,
                   subject: &'static str,
                   sha: &'static str,
                   target: &'static str| NewMessage {
            direction,
            message_id: mid,
            from_addr: from,
            subject,
            sha256: sha,
            at: at(1),
            target_mailbox: Some(target),
            ..NewMessage::default()
        };
        let first = insert(
            &mut conn,
            &row("in", Some("a@x"), Some("ann@x"), "Know", "h1", "Processed"),
        )
        .await
        .unwrap();
        let later = insert(
            &mut conn,
            &row("in", Some("a@x"), Some("ann@x"), "Know", "h2", "Review"),
        )
        .await
        .unwrap();
        insert(
            &mut conn,
            &row("out", Some("o@x"), None, "Ack", "h3", "Sent"),
        )
        .await
        .unwrap();
        let nobody = insert(&mut conn, &row("in", None, None, "", "h4", "Review"))
            .await
            .unwrap();
        let key = |mid: Option<&'static str>,
                   from: Option<&'static str>,
                   subject: &'static str,
                   sha: &'static str| SeenKey {
            message_id: mid,
            from_addr: from,
            subject,
            sha256: sha,
        };
        let cases = [
            // (key, expected)
            (key(None, None, "x", "h2"), Some((later, "Review"))),
            (
                key(Some("a@x"), Some("ann@x"), "Know", "new"),
                Some((first, "Processed")),
            ),
            (key(Some("a@x"), Some("bob@x"), "Know", "new"), None),
            (key(Some("a@x"), Some("ann@x"), "Other", "new"), None),
            (key(Some("o@x"), None, "Ack", "new"), None),
            (key(None, None, "Ack", "h3"), None),
            (key(None, None, "", "h4"), Some((nobody, "Review"))),
            (key(None, None, "", "new"), None),
        ];
        let keys: Vec<SeenKey<'_>> = cases.iter().map(|(k, _)| *k).collect();
        let got = seen_inbound_many(&mut conn, &keys).await.unwrap();
        let want: Vec<Option<(i64, Option<String>)>> = cases
            .iter()
            .map(|(_, e)| e.map(|(id, t)| (id, Some(t.to_string()))))
            .collect();
        assert_eq!(got, want);
        for (k, expected) in &cases {
            let one = seen_inbound(&mut conn, k).await.unwrap();
            assert_eq!(one.map(|(id, _)| id), expected.map(|(id, _)| id), "{k:?}");
        }
        assert!(seen_inbound_many(&mut conn, &[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn stored_inbound_messages_and_their_case() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        let row = inbound(&mut conn, None, "a", at(1)).await;
        let got = stored_inbound(&mut conn, row).await.unwrap().unwrap();
        assert_eq!(
            (got.raw.as_deref(), got.raw_file, got.case_id, got.at),
            (Some(&b"raw"[..]), false, None, at(1))
        );
        open_case(&mut conn, "C-1", at(1)).await;
        set_case(&mut conn, row, &"C-1".into()).await.unwrap();
        let got = stored_inbound(&mut conn, row).await.unwrap().unwrap();
        assert_eq!(got.case_id.as_deref(), Some("C-1"));
        assert!(stored_inbound(&mut conn, row + 1).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn team_mail_on_record_matches_message_id_or_bytes() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        inbound(&mut conn, None, "a", at(1)).await;
        assert!(
            team_mail_on_record(&mut conn, Some("<m1@example.org>"), "zz")
                .await
                .unwrap()
        );
        assert!(team_mail_on_record(&mut conn, None, "a").await.unwrap());
        assert!(!team_mail_on_record(&mut conn, None, "zz").await.unwrap());
        assert!(
            !team_mail_on_record(&mut conn, Some("<other@example.org>"), "zz")
                .await
                .unwrap()
        );
    }

    /// Records a message of `case` with this direction, disposition and ID.
    async fn message(
        conn: &mut SqliteConnection,
        direction: &'static str,
        disposition: &str,
        message_id: &str,
    ) {
        insert(
            conn,
            &NewMessage {
                case_id: Some("C-1"),
                direction,
                message_id: Some(message_id),
                subject: "Re: Request to know",
                at: at(2),
                sha256: message_id,
                disposition: disposition.parse().unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_reply_answers_the_consumer_side_never_team_or_automatic_mail() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        open_case(&mut conn, "C-1", at(1)).await;
        assert_eq!(
            last_applied_inbound_id(&mut conn, &"C-1".into())
                .await
                .unwrap(),
            None
        );
        message(&mut conn, "out", "consumer", "<ours-1@x>").await;
        message(&mut conn, "out", "team", "<notice-1@x>").await;
        assert_eq!(
            last_consumer_mail_id(&mut conn, &"C-1".into())
                .await
                .unwrap()
                .as_deref(),
            Some("<ours-1@x>")
        );
        message(&mut conn, "in", "case", "<reply-1@x>").await;
        for (disposition, id) in [
            ("team", "<team-1@x>"),
            ("auto", "<auto-1@x>"),
            ("review", "<stranger-1@x>"),
            ("dsn", "<dsn-1@x>"),
        ] {
            message(&mut conn, "in", disposition, id).await;
        }
        assert_eq!(
            last_applied_inbound_id(&mut conn, &"C-1".into())
                .await
                .unwrap()
                .as_deref(),
            Some("<reply-1@x>")
        );
        let thread = reply_thread(&mut conn, &"C-1".into()).await.unwrap();
        assert_eq!(thread.last_applied.as_deref(), Some("<reply-1@x>"));
        assert_eq!(
            reply_thread(&mut conn, &"C-9".into()).await.unwrap(),
            ReplyThread::default(),
            "no such case"
        );
    }
}
