//! What the reports read (SPEC §9 `report`): the §7101 facts of every case.
//! The figures themselves are computed in the `report` module.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::{Op, Result};
use crate::cases::Manner;

/// The facts of one case a §7101 record needs; kept after a purge.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct CaseRecordRow {
    pub id: String,
    pub kind: String,
    pub state: String,
    #[sqlx(try_from = "String")]
    pub manner: Manner,
    pub received_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
    pub denial_reason: Option<String>,
    pub purged_at: Option<DateTime<Utc>>,
}

/// Every case, oldest received first.
pub(crate) async fn case_records(conn: &mut SqliteConnection) -> Result<Vec<CaseRecordRow>> {
    sqlx::query_as(
        "SELECT id, kind, state, manner, received_at, closed_at, resolution, denial_reason, purged_at
         FROM cases ORDER BY received_at, id",
    )
    .fetch_all(conn)
    .await
    .op("reports.case_records")
}

/// A message that read like a request but opened no case: (message row,
/// received at, the kind it read like, whether the caseless purge cleared it).
pub(crate) type UnopenedRow = (i64, DateTime<Utc>, String, bool);

/// Inbound messages in review that read like a request and belong to no case
/// (one opened from it by `#open` is covered by the case's record), oldest
/// first.
pub(crate) async fn unopened_requests(conn: &mut SqliteConnection) -> Result<Vec<UnopenedRow>> {
    sqlx::query_as(
        "SELECT id, at, reads_like, from_addr IS '[purged]'
         FROM messages
         WHERE direction = 'in' AND reads_like IS NOT NULL AND case_id IS NULL
         ORDER BY at, id",
    )
    .fetch_all(conn)
    .await
    .op("reports.unopened_requests")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{at, open_case, store};

    #[tokio::test]
    async fn records_are_oldest_first() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        open_case(&mut conn, "C-2", at(2)).await;
        open_case(&mut conn, "C-1", at(1)).await;
        let rows = case_records(&mut conn).await.unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["C-1", "C-2"]);
        assert_eq!(
            (rows[0].kind.as_str(), rows[0].manner.as_str()),
            ("know", "email")
        );
    }

    #[tokio::test]
    async fn a_fresh_database_has_every_migration() {
        let (dir, store) = store().await;
        store.close().await;
        let (applied, pending, unknown) =
            crate::store::migration_status(&dir.path().join("db/mailroom.sqlite3"))
                .await
                .unwrap();
        assert!(applied > 0);
        assert_eq!((pending, unknown), (0, 0));
        let e = crate::store::migration_status(&dir.path().join("none/x.sqlite3"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("store.migration_status"), "{e}");
    }
}
