//! Retention (SPEC §9 `purge`): which closed cases are due, and the statements
//! that clear their verification data and personal data. The rules of what
//! stays (the §7101 record, the event allow-list) are the `purge` module's; this
//! file only reads and writes rows, so the final-state list and the "file
//! still used" rule exist once.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::cases::final_states_sql;
use super::{Op, Result};
use crate::cases::Template;
use crate::ids::CaseId;

/// Closed cases whose verification data is still stored and that closed on or
/// before `cutoff` (the grace period after closing), by ID.
pub(crate) async fn verification_due(
    conn: &mut SqliteConnection,
    cutoff: DateTime<Utc>,
) -> Result<Vec<CaseId>> {
    let sql = format!(
        "SELECT id FROM cases WHERE closed_at IS NOT NULL AND closed_at <= ?
           AND verification_purged_at IS NULL AND purged_at IS NULL
           AND state IN ({}) ORDER BY id",
        final_states_sql()
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(cutoff)
        .fetch_all(conn)
        .await
        .op("retention.verification_due")
}

/// Closed cases not purged yet that closed before `cutoff` (now minus
/// `policy.retention_months`), by ID.
pub(crate) async fn purge_due(
    conn: &mut SqliteConnection,
    cutoff: DateTime<Utc>,
) -> Result<Vec<CaseId>> {
    let sql = format!(
        "SELECT id FROM cases WHERE closed_at IS NOT NULL AND closed_at < ?
           AND purged_at IS NULL AND state IN ({}) ORDER BY id",
        final_states_sql()
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(cutoff)
        .fetch_all(conn)
        .await
        .op("retention.purge_due")
}

/// How many messages and attachments a case has (what a dry run reports).
pub(crate) async fn case_row_counts(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
) -> Result<(u64, u64)> {
    let (m, a): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM messages WHERE case_id = ?1),
                (SELECT COUNT(*) FROM attachments WHERE case_id = ?1)",
    )
    .bind(case_id)
    .fetch_one(conn)
    .await
    .op("retention.case_row_counts")?;
    Ok((m.max(0) as u64, a.max(0) as u64))
}

/// Clears the personal data of mail that never belonged to a case and is
/// older than `cutoff`: messages, outbox rows (not pending ones) and events.
/// Rows already cleared are not counted again. Returns the rows changed.
pub(crate) async fn clear_caseless(
    conn: &mut SqliteConnection,
    cutoff: DateTime<Utc>,
    marker: &str,
) -> Result<u64> {
    let messages = sqlx::query(
        "UPDATE messages SET raw = NULL, raw_file = 0, body_text = NULL, subject = ?1,
                from_addr = ?1, message_id = NULL
         WHERE case_id IS NULL AND at < ?2 AND from_addr IS NOT ?1",
    )
    .bind(marker)
    .bind(cutoff)
    .execute(&mut *conn)
    .await
    .op("retention.clear_caseless.messages")?
    .rows_affected();
    let outbox = sqlx::query(
        "UPDATE outbox SET raw = X'', recipients = '[]', rate_key = ?1, subject = ?1,
                last_error = NULL, append_error = NULL
         WHERE case_id IS NULL AND created_at < ?2 AND status != 'pending' AND rate_key != ?1",
    )
    .bind(marker)
    .bind(cutoff)
    .execute(&mut *conn)
    .await
    .op("retention.clear_caseless.outbox")?
    .rows_affected();
    let events = sqlx::query(
        "UPDATE events SET actor = CASE WHEN actor = 'daemon' THEN actor ELSE ?1 END, detail = ?1
         WHERE case_id IS NULL AND at < ?2 AND detail != ?1",
    )
    .bind(marker)
    .bind(cutoff)
    .execute(conn)
    .await
    .op("retention.clear_caseless.events")?
    .rows_affected();
    Ok(messages + outbox + events)
}

/// Whether a row still names the file `sha256`: an attachment row that is
/// not purged (of no case, or of a case not purged yet), or a message whose
/// raw bytes are that file (a large message taken in part by part).
pub(crate) async fn file_in_use(conn: &mut SqliteConnection, sha256: &str) -> Result<bool> {
    let used: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM attachments a LEFT JOIN cases c ON c.id = a.case_id
                 WHERE a.sha256 = ?1 AND (a.case_id IS NULL OR c.purged_at IS NULL))
              + (SELECT COUNT(*) FROM messages WHERE sha256 = ?1 AND raw_file = 1)",
    )
    .bind(sha256)
    .fetch_one(conn)
    .await
    .op("retention.file_in_use")?;
    Ok(used > 0)
}

/// §7060(d): clears the verification code, the bodies of the inbound
/// messages received before the case was verified (or closed), and the
/// bodies of the outgoing mail that carried the code (rendered from one of
/// `code_templates`, or whose stored text contains the code: a team reply
/// quoting it), and marks the case. The rows themselves stay (dates,
/// template, status), as does the case's §7101 record. Outbox rows still
/// pending are left alone so they can be sent. Returns how many inbound
/// messages and how many outgoing rows (messages and outbox) were cleared.
pub(crate) async fn clear_verification_data(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
    code_templates: &[Template],
    now: DateTime<Utc>,
) -> Result<(u64, u64)> {
    let names: Vec<&str> = code_templates.iter().map(|t| t.as_str()).collect();
    let templates = super::json_list(&names);
    // The outbox first: it finds mail quoting the code through the stored
    // text of the outgoing message, which the next statement clears.
    let outbox = sqlx::query(
        "UPDATE outbox SET raw = X''
         WHERE case_id = ?1 AND status != 'pending' AND length(raw) > 0
           AND (template IN (SELECT value FROM json_each(?2))
                OR message_id IN (
                    SELECT m.message_id FROM messages m JOIN cases c ON c.id = m.case_id
                    WHERE m.case_id = ?1 AND m.direction = 'out' AND m.message_id IS NOT NULL
                      AND c.verification_code != ''
                      AND instr(m.body_text, c.verification_code) > 0))",
    )
    .bind(case_id)
    .bind(&templates)
    .execute(&mut *conn)
    .await
    .op("retention.clear_verification_data.outbox")?
    .rows_affected();
    let outgoing = sqlx::query(
        "UPDATE messages SET raw = NULL, body_text = NULL
         WHERE case_id = ?1 AND direction = 'out'
           AND (raw IS NOT NULL OR body_text IS NOT NULL)
           AND (template IN (SELECT value FROM json_each(?2))
                OR instr(body_text, (SELECT NULLIF(verification_code, '') FROM cases WHERE id = ?1)) > 0)",
    )
    .bind(case_id)
    .bind(&templates)
    .execute(&mut *conn)
    .await
    .op("retention.clear_verification_data.outgoing")?
    .rows_affected();
    let cleared = sqlx::query(
        "UPDATE messages SET raw = NULL, raw_file = 0, body_text = NULL
         WHERE case_id = ?1 AND direction = 'in'
           AND at <= (SELECT COALESCE(verified_at, closed_at) FROM cases WHERE id = ?1)
           AND (raw IS NOT NULL OR raw_file = 1 OR body_text IS NOT NULL)",
    )
    .bind(case_id)
    .execute(&mut *conn)
    .await
    .op("retention.clear_verification_data.messages")?
    .rows_affected();
    sqlx::query("UPDATE cases SET verification_code = '', verification_purged_at = ? WHERE id = ?")
        .bind(now)
        .bind(case_id)
        .execute(conn)
        .await
        .op("retention.clear_verification_data.case")?;
    Ok((cleared, outbox + outgoing))
}

/// The addresses a case's personal data may appear under: requester, agent,
/// consumer and every inbound sender. `None` when there is no such case.
pub(crate) async fn case_addresses(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
) -> Result<Option<Vec<String>>> {
    let parties: Option<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT requester, agent, consumer FROM cases WHERE id = ?")
            .bind(case_id)
            .fetch_optional(&mut *conn)
            .await
            .op("retention.case_addresses.parties")?;
    let Some((requester, agent, consumer)) = parties else {
        return Ok(None);
    };
    let senders: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT DISTINCT from_addr FROM messages WHERE case_id = ? AND direction = 'in'",
    )
    .bind(case_id)
    .fetch_all(conn)
    .await
    .op("retention.case_addresses.senders")?;
    Ok(Some(
        [Some(requester), agent, consumer]
            .into_iter()
            .chain(senders)
            .flatten()
            .collect(),
    ))
}

/// What [`clear_case`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClearedCase {
    pub messages: u64,
    pub attachments: u64,
    /// The distinct attachment hashes the case named (their files may now
    /// be unused: see [`file_in_use`]).
    pub hashes: Vec<String>,
}

/// Replaces the personal data of a case by `marker`: the parties, subject,
/// code and thread roots of the case; subjects, bodies and senders of its
/// messages; its sent outbox mail; its attachments' names and reviewers. Sets
/// `purged_at` (which the events trigger of migration 0002 requires before
/// [`redact_event`]).
pub(crate) async fn clear_case(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
    marker: &str,
    now: DateTime<Utc>,
) -> Result<ClearedCase> {
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
    .bind(marker)
    .bind(now)
    .bind(case_id)
    .execute(&mut *conn)
    .await
    .op("retention.clear_case.case")?;
    let messages = sqlx::query(
        "UPDATE messages SET subject = '', raw = NULL, raw_file = 0, body_text = NULL,
            from_addr = CASE WHEN from_addr IS NULL THEN NULL ELSE ?1 END
         WHERE case_id = ?2",
    )
    .bind(marker)
    .bind(case_id)
    .execute(&mut *conn)
    .await
    .op("retention.clear_case.messages")?
    .rows_affected();
    sqlx::query(
        "UPDATE outbox SET raw = x'', subject = '', recipients = '[]', rate_key = ?1,
            envelope_from = ?1, last_error = NULL
         WHERE case_id = ?2 AND status != 'pending'",
    )
    .bind(marker)
    .bind(case_id)
    .execute(&mut *conn)
    .await
    .op("retention.clear_case.outbox")?;
    let hashes: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT sha256 FROM attachments WHERE case_id = ?")
            .bind(case_id)
            .fetch_all(&mut *conn)
            .await
            .op("retention.clear_case.hashes")?;
    let attachments =
        sqlx::query("UPDATE attachments SET filename = ?1, reviewer = NULL WHERE case_id = ?2")
            .bind(marker)
            .bind(case_id)
            .execute(conn)
            .await
            .op("retention.clear_case.attachments")?
            .rows_affected();
    Ok(ClearedCase {
        messages,
        attachments,
        hashes,
    })
}

/// An event of a case as purge judges it: (id, actor, action, detail).
pub(crate) type EventFacts = (i64, String, String, String);

/// Every event of a case, for purge to decide which to redact.
pub(crate) async fn case_events(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
) -> Result<Vec<EventFacts>> {
    sqlx::query_as("SELECT id, actor, action, detail FROM events WHERE case_id = ?")
        .bind(case_id)
        .fetch_all(conn)
        .await
        .op("retention.case_events")
}

/// Rewrites one event's actor and detail. Only allowed by the trigger of
/// migration 0002 once the case's `purged_at` is set.
pub(crate) async fn redact_event(
    conn: &mut SqliteConnection,
    event_id: i64,
    actor: &str,
    detail: &str,
) -> Result<()> {
    sqlx::query("UPDATE events SET actor = ?, detail = ? WHERE id = ?")
        .bind(actor)
        .bind(detail)
        .bind(event_id)
        .execute(conn)
        .await
        .op("retention.redact_event")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{at, close_case, inbound, open_case, store};

    #[tokio::test]
    async fn due_lists_take_only_closed_cases_past_their_cutoff() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        let mut old = open_case(&mut conn, "C-1", at(1)).await;
        close_case(&mut conn, &mut old, at(2)).await;
        let mut recent = open_case(&mut conn, "C-2", at(1)).await;
        close_case(&mut conn, &mut recent, at(20)).await;
        open_case(&mut conn, "C-3", at(1)).await;

        assert_eq!(verification_due(&mut conn, at(10)).await.unwrap(), ["C-1"]);
        assert_eq!(purge_due(&mut conn, at(10)).await.unwrap(), ["C-1"]);
        assert_eq!(
            purge_due(&mut conn, at(2)).await.unwrap(),
            Vec::<CaseId>::new()
        );
        assert_eq!(verification_due(&mut conn, at(2)).await.unwrap(), ["C-1"]);
        assert_eq!(purge_due(&mut conn, at(25)).await.unwrap(), ["C-1", "C-2"]);

        clear_verification_data(&mut conn, &"C-1".into(), &[], at(10))
            .await
            .unwrap();
        assert!(
            verification_due(&mut conn, at(10))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn verification_data_is_what_came_before_the_case_closed() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        let mut case = open_case(&mut conn, "C-1", at(1)).await;
        inbound(&mut conn, Some("C-1"), "a", at(1)).await;
        close_case(&mut conn, &mut case, at(3)).await;
        inbound(&mut conn, Some("C-1"), "b", at(5)).await;
        assert_eq!(
            clear_verification_data(&mut conn, &"C-1".into(), &[], at(9))
                .await
                .unwrap(),
            (1, 0)
        );
        // Cleared rows are not counted twice.
        assert_eq!(
            clear_verification_data(&mut conn, &"C-1".into(), &[], at(9))
                .await
                .unwrap(),
            (0, 0)
        );
        let stored = crate::store::cases::get(&mut conn, &"C-1".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.verification_code, "");
    }

    #[tokio::test]
    async fn outgoing_mail_that_carried_the_code_loses_its_body_and_keeps_its_row() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        let mut case = open_case(&mut conn, "C-1", at(1)).await;
        // Saved with the case when it closes below.
        case.verification_code = "K7Q2".into();
        // (template, stored text, outbox status)
        let mail = [
            ("acknowledgement", "Verification code: K7Q2", "sent"),
            ("team_reply", "quoting K7Q2 back", "sent"),
            ("know_completed", "here is your data", "sent"),
            (
                "verification_reminder",
                "Verification code: K7Q2",
                "pending",
            ),
        ];
        for (i, (template, text, status)) in mail.iter().enumerate() {
            let mid = format!("<m{i}@x>");
            sqlx::query(
                "INSERT INTO messages (case_id, direction, message_id, at, template, sha256, body_text)
                 VALUES ('C-1', 'out', ?, ?, ?, 'h', ?)",
            )
            .bind(&mid)
            .bind(at(1))
            .bind(template)
            .bind(text)
            .execute(&mut *conn)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO outbox (case_id, message_id, audience, template, envelope_from,
                    recipients, rate_key, raw, status, next_attempt_at, created_at)
                 VALUES ('C-1', ?, 'consumer', ?, 'p@x', '[]', 'r', ?, ?, ?, ?)",
            )
            .bind(&mid)
            .bind(template)
            .bind(text.as_bytes())
            .bind(status)
            .bind(at(1))
            .bind(at(1))
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        close_case(&mut conn, &mut case, at(3)).await;
        let code_templates = [Template::Acknowledgement, Template::VerificationReminder];
        let (_, outgoing) =
            clear_verification_data(&mut conn, &"C-1".into(), &code_templates, at(9))
                .await
                .unwrap();
        // Three messages (acknowledgement, team reply, reminder) and two sent
        // outbox rows; the pending reminder keeps its raw bytes to be sent.
        assert_eq!(outgoing, 5);
        let bodies: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT template, body_text FROM messages WHERE case_id = 'C-1' ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        assert_eq!(
            bodies,
            [
                ("acknowledgement".to_string(), None),
                ("team_reply".to_string(), None),
                (
                    "know_completed".to_string(),
                    Some("here is your data".to_string())
                ),
                ("verification_reminder".to_string(), None),
            ]
        );
        let raws: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT template, raw FROM outbox WHERE case_id = 'C-1' ORDER BY id")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        let empty: Vec<&str> = raws
            .iter()
            .filter(|(_, r)| r.is_empty())
            .map(|(t, _)| t.as_str())
            .collect();
        assert_eq!(empty, ["acknowledgement", "team_reply"]);
    }

    #[tokio::test]
    async fn a_cleared_case_keeps_no_address_and_may_have_its_events_redacted() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        let mut case = open_case(&mut conn, "C-1", at(1)).await;
        inbound(&mut conn, Some("C-1"), "a", at(1)).await;
        crate::store::events::append(
            &mut conn,
            Some("C-1"),
            at(1),
            "ann@example.org",
            crate::cases::Action::Note,
            "hi",
        )
        .await
        .unwrap();
        close_case(&mut conn, &mut case, at(2)).await;
        crate::store::attachments::insert(
            &mut conn,
            &crate::store::attachments::NewDocument {
                case_id: "C-1",
                message_row: 1,
                filename: "id.pdf",
                declared_type: "application/pdf",
                sniffed_type: "application/pdf",
                size: 3,
                sha256: "ab",
                received_at: at(1),
            },
        )
        .await
        .unwrap();

        let addresses = case_addresses(&mut conn, &"C-1".into())
            .await
            .unwrap()
            .unwrap();
        assert!(
            addresses.iter().all(|a| a == "ann@example.org"),
            "{addresses:?}"
        );
        assert!(
            case_addresses(&mut conn, &"C-9".into())
                .await
                .unwrap()
                .is_none()
        );

        // The events trigger refuses a redaction before the case is purged.
        let events = case_events(&mut conn, &"C-1".into()).await.unwrap();
        let (id, ..) = events.iter().find(|e| e.2 == "note").cloned().unwrap();
        assert!(
            redact_event(&mut conn, id, "[purged]", "[purged]")
                .await
                .is_err()
        );

        assert!(file_in_use(&mut conn, "ab").await.unwrap());
        let cleared = clear_case(&mut conn, &"C-1".into(), "[purged]", at(9))
            .await
            .unwrap();
        assert_eq!((cleared.messages, cleared.attachments), (1, 1));
        assert_eq!(cleared.hashes, ["ab"]);
        assert!(!file_in_use(&mut conn, "ab").await.unwrap());
        let addresses = case_addresses(&mut conn, &"C-1".into())
            .await
            .unwrap()
            .unwrap();
        assert!(addresses.iter().all(|a| a == "[purged]"), "{addresses:?}");
        redact_event(&mut conn, id, "[purged]", "[purged]")
            .await
            .unwrap();
        assert!(purge_due(&mut conn, at(25)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn caseless_mail_is_cleared_once() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        inbound(&mut conn, None, "a", at(1)).await;
        inbound(&mut conn, None, "b", at(20)).await;
        assert_eq!(
            clear_caseless(&mut conn, at(10), "[purged]").await.unwrap(),
            1
        );
        assert_eq!(
            clear_caseless(&mut conn, at(10), "[purged]").await.unwrap(),
            0
        );
    }

    /// A spooled message's original is a blob-store file named by its hash:
    /// in use while a row says so, free for the sweep once every path that
    /// clears `raw` has cleared the flag too.
    #[tokio::test]
    async fn a_spooled_original_is_in_use_until_its_raw_is_cleared() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        let set_file = "UPDATE messages SET raw = NULL, raw_file = 1 WHERE id = ?";
        let caseless = inbound(&mut conn, None, "f1", at(1)).await;
        sqlx::query(set_file)
            .bind(caseless)
            .execute(&mut *conn)
            .await
            .unwrap();
        assert!(file_in_use(&mut conn, "f1").await.unwrap());
        clear_caseless(&mut conn, at(10), "[purged]").await.unwrap();
        assert!(!file_in_use(&mut conn, "f1").await.unwrap());

        open_case(&mut conn, "C-1", at(1)).await;
        let of_case = inbound(&mut conn, Some("C-1"), "f2", at(1)).await;
        sqlx::query(set_file)
            .bind(of_case)
            .execute(&mut *conn)
            .await
            .unwrap();
        assert!(file_in_use(&mut conn, "f2").await.unwrap());
        clear_case(&mut conn, &"C-1".into(), "[purged]", at(9))
            .await
            .unwrap();
        assert!(!file_in_use(&mut conn, "f2").await.unwrap());
    }

    #[tokio::test]
    async fn errors_name_the_operation() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        sqlx::query("DROP TABLE summary_cases")
            .execute(&mut *conn)
            .await
            .unwrap();
        let e = crate::store::burst::summary_lists(&mut conn, "S1", &"C-1".into())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("burst.summary_lists"), "{e}");
    }
}
