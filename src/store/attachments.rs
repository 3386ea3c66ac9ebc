//! The `attachments` table: the register of agents' declaration documents
//! (SPEC §7). The files themselves and the rules about them are
//! the `attachments` module's.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::SqliteConnection;

use super::{Op, Result};
use crate::ids::CaseId;

/// One row of the register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Document {
    pub id: i64,
    pub case_id: Option<String>,
    pub message_row: Option<i64>,
    pub filename: String,
    pub declared_type: String,
    pub sniffed_type: String,
    pub size: i64,
    pub sha256: String,
    pub received_at: DateTime<Utc>,
    pub status: String,
    pub reviewer: Option<String>,
    pub reviewed_at: Option<DateTime<Utc>>,
}

/// A document to register; it starts `pending_review`.
#[derive(Debug, Clone)]
pub struct NewDocument<'a> {
    pub case_id: &'a str,
    pub message_row: i64,
    pub filename: &'a str,
    pub declared_type: &'a str,
    pub sniffed_type: &'a str,
    pub size: i64,
    pub sha256: &'a str,
    pub received_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, case_id, message_row, filename, declared_type, sniffed_type, size, \
    sha256, received_at, status, reviewer, reviewed_at";

pub async fn insert(conn: &mut SqliteConnection, d: &NewDocument<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO attachments (case_id, message_row, filename, declared_type, sniffed_type,
            size, sha256, received_at, status)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending_review')",
    )
    .bind(d.case_id)
    .bind(d.message_row)
    .bind(d.filename)
    .bind(d.declared_type)
    .bind(d.sniffed_type)
    .bind(d.size)
    .bind(d.sha256)
    .bind(d.received_at)
    .execute(conn)
    .await
    .op("attachments.insert")?;
    Ok(())
}

/// The case's documents, oldest first.
pub async fn for_case(conn: &mut SqliteConnection, case_id: &CaseId) -> Result<Vec<Document>> {
    let sql = format!("SELECT {COLUMNS} FROM attachments WHERE case_id = ? ORDER BY id");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(case_id)
        .fetch_all(conn)
        .await
        .op("attachments.for_case")
}

/// Up to two distinct hashes starting with `prefix` (lowercase hex): two
/// mean the prefix is ambiguous.
pub(crate) async fn hashes_with_prefix(
    conn: &mut SqliteConnection,
    prefix: &str,
) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT sha256 FROM attachments WHERE substr(sha256, 1, ?) = ? LIMIT 2",
    )
    .bind(prefix.len() as i64)
    .bind(prefix)
    .fetch_all(conn)
    .await
    .op("attachments.hashes_with_prefix")
}

/// The newest row of the document `sha256` (it may have arrived more than once).
pub async fn newest(conn: &mut SqliteConnection, sha256: &str) -> Result<Document> {
    let sql =
        format!("SELECT {COLUMNS} FROM attachments WHERE sha256 = ? ORDER BY id DESC LIMIT 1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(sha256)
        .fetch_one(conn)
        .await
        .op("attachments.newest")
}

/// Sets every `pending_review` document of the case to `status`, with the
/// reviewer and time. Returns how many rows changed.
pub async fn review_pending(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
    status: &str,
    reviewer: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    let done = sqlx::query(
        "UPDATE attachments SET status = ?, reviewer = ?, reviewed_at = ?
         WHERE case_id = ? AND status = 'pending_review'",
    )
    .bind(status)
    .bind(reviewer)
    .bind(now)
    .bind(case_id)
    .execute(conn)
    .await
    .op("attachments.review_pending")?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{at, open_case, store};

    fn doc<'a>(sha256: &'a str, filename: &'a str) -> NewDocument<'a> {
        NewDocument {
            case_id: "C-1",
            message_row: 1,
            filename,
            declared_type: "application/pdf",
            sniffed_type: "application/pdf",
            size: 3,
            sha256,
            received_at: at(1),
        }
    }

    #[tokio::test]
    async fn the_register_by_case_hash_and_review() {
        let (_dir, store) = store().await;
        let mut conn = store.conn().await.unwrap();
        open_case(&mut conn, "C-1", at(1)).await;
        crate::store::testing::inbound(&mut conn, Some("C-1"), "m", at(1)).await;
        insert(&mut conn, &doc("abcd1111", "one.pdf"))
            .await
            .unwrap();
        insert(&mut conn, &doc("abcd2222", "two.pdf"))
            .await
            .unwrap();
        insert(&mut conn, &doc("abcd2222", "again.pdf"))
            .await
            .unwrap();

        let docs = for_case(&mut conn, &"C-1".into()).await.unwrap();
        let names: Vec<&str> = docs.iter().map(|d| d.filename.as_str()).collect();
        assert_eq!(names, ["one.pdf", "two.pdf", "again.pdf"]);
        assert!(docs.iter().all(|d| d.status == "pending_review"));

        assert_eq!(
            hashes_with_prefix(&mut conn, "abcd").await.unwrap().len(),
            2
        );
        assert_eq!(
            hashes_with_prefix(&mut conn, "abcd1").await.unwrap(),
            ["abcd1111"]
        );
        assert_eq!(
            newest(&mut conn, "abcd2222").await.unwrap().filename,
            "again.pdf"
        );
        assert!(newest(&mut conn, "ffff").await.is_err());

        assert_eq!(
            review_pending(
                &mut conn,
                &"C-1".into(),
                "accepted",
                "team@example.com",
                at(2)
            )
            .await
            .unwrap(),
            3
        );
        assert_eq!(
            review_pending(
                &mut conn,
                &"C-1".into(),
                "rejected",
                "team@example.com",
                at(2)
            )
            .await
            .unwrap(),
            0
        );
        // The CHECK constraint of migration 0001 keeps the status vocabulary.
        insert(&mut conn, &doc("abcd3333", "three.pdf"))
            .await
            .unwrap();
        assert!(
            review_pending(&mut conn, &"C-1".into(), "maybe", "t", at(2))
                .await
                .is_err()
        );
    }
}
