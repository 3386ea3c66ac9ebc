//! The burst tables (SPEC §6): new-case notices held back until the end of an
//! intake batch (`pending_new_case_notices`), and which cases a burst summary
//! lists (`summary_cases`), so a reply to the summary may command exactly those.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::{Op, Result};
use crate::ids::CaseId;

/// Holds a new-case notice back (once per case).
pub(crate) async fn queue_notice(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(QUEUE_NOTICE)
        .bind(case_id)
        .bind(now)
        .execute(conn)
        .await
        .op("burst.queue_notice")?;
    Ok(())
}

/// The statement of [`queue_notice`] (case ID, time), also run in a new
/// case's statement batch (`cases::insert_with_message`).
pub(super) const QUEUE_NOTICE: &str =
    "INSERT OR IGNORE INTO pending_new_case_notices (case_id, queued_at) VALUES (?, ?)";

/// Takes every held-back notice off the queue, by case ID.
pub(crate) async fn take_queued(conn: &mut SqliteConnection) -> Result<Vec<CaseId>> {
    let pending: Vec<CaseId> =
        sqlx::query_scalar("SELECT case_id FROM pending_new_case_notices ORDER BY case_id")
            .fetch_all(&mut *conn)
            .await
            .op("burst.take_queued.read")?;
    if !pending.is_empty() {
        sqlx::query("DELETE FROM pending_new_case_notices")
            .execute(conn)
            .await
            .op("burst.take_queued.delete")?;
    }
    Ok(pending)
}

/// How many summaries already carry the ID `base` (alone or with a `-N`
/// suffix): two summaries flushed in the same millisecond get distinct IDs.
pub(crate) async fn summaries_with_base(conn: &mut SqliteConnection, base: &str) -> Result<i64> {
    sqlx::query_scalar(
        // A range on the primary key ('.' sorts right after '-'), not a
        // function of the column: a search, never a scan of every summary.
        "SELECT COUNT(DISTINCT summary_id) FROM summary_cases
         WHERE summary_id = ?1 OR (summary_id >= ?1 || '-' AND summary_id < ?1 || '.')",
    )
    .bind(base)
    .fetch_one(conn)
    .await
    .op("burst.summaries_with_base")
}

/// Records that summary `summary_id` lists every case of `case_ids`, in one
/// statement.
pub(crate) async fn add_all_to_summary(
    conn: &mut SqliteConnection,
    summary_id: &str,
    case_ids: &[&CaseId],
) -> Result<()> {
    if case_ids.is_empty() {
        return Ok(());
    }
    let ids = super::json_list(case_ids);
    sqlx::query(
        "INSERT OR IGNORE INTO summary_cases (summary_id, case_id)
         SELECT ?, value FROM json_each(?)",
    )
    .bind(summary_id)
    .bind(ids)
    .execute(conn)
    .await
    .op("burst.add_all_to_summary")?;
    Ok(())
}

/// Does the summary list the case?
pub(crate) async fn summary_lists(
    conn: &mut SqliteConnection,
    summary_id: &str,
    case_id: &CaseId,
) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM summary_cases WHERE summary_id = ? AND case_id = ?",
    )
    .bind(summary_id)
    .bind(case_id)
    .fetch_one(conn)
    .await
    .op("burst.summary_lists")?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{at, open_case, store};

    #[tokio::test]
    async fn queued_notices_are_taken_once() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        open_case(&mut conn, "C-2", at(1)).await;
        open_case(&mut conn, "C-1", at(1)).await;
        queue_notice(&mut conn, &"C-2".into(), at(1)).await.unwrap();
        queue_notice(&mut conn, &"C-1".into(), at(1)).await.unwrap();
        queue_notice(&mut conn, &"C-1".into(), at(1)).await.unwrap();
        assert_eq!(take_queued(&mut conn).await.unwrap(), ["C-1", "C-2"]);
        assert!(take_queued(&mut conn).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_summary_lists_exactly_its_cases() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        open_case(&mut conn, "C-1", at(1)).await;
        open_case(&mut conn, "C-2", at(1)).await;
        add_all_to_summary(&mut conn, "S1", &[&"C-1".into()])
            .await
            .unwrap();
        add_all_to_summary(&mut conn, "S1", &[&"C-1".into()])
            .await
            .unwrap();
        assert!(summary_lists(&mut conn, "S1", &"C-1".into()).await.unwrap());
        assert!(!summary_lists(&mut conn, "S1", &"C-2".into()).await.unwrap());
        assert!(!summary_lists(&mut conn, "S2", &"C-1".into()).await.unwrap());
    }

    #[tokio::test]
    async fn summaries_of_one_millisecond_are_counted_apart() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        open_case(&mut conn, "C-1", at(1)).await;
        open_case(&mut conn, "C-2", at(1)).await;
        assert_eq!(summaries_with_base(&mut conn, "S100").await.unwrap(), 0);
        add_all_to_summary(&mut conn, "S100", &[&"C-1".into()])
            .await
            .unwrap();
        add_all_to_summary(&mut conn, "S100", &[&"C-2".into()])
            .await
            .unwrap();
        add_all_to_summary(&mut conn, "S1000", &[&"C-1".into()])
            .await
            .unwrap();
        assert_eq!(summaries_with_base(&mut conn, "S100").await.unwrap(), 1);
        add_all_to_summary(&mut conn, "S100-2", &[&"C-2".into()])
            .await
            .unwrap();
        assert_eq!(summaries_with_base(&mut conn, "S100").await.unwrap(), 2);
    }
}
