//! Reading and nudging the daemon's cases from a test.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use super::daemon;

/// Panics with everything the command printed unless it exited 0.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} exited {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cases list --json`.
pub fn cases_json(config: &Path) -> Vec<Value> {
    let out = daemon::cli(config, &["cases", "list", "--json"]);
    assert_ok(&out, "cases list --json");
    serde_json::from_slice(&out.stdout).expect("cases list --json prints a JSON array")
}

/// The ID of the first case `cases list --json` prints (the only one, in
/// most tests).
pub fn first_case_id(config: &Path) -> String {
    let cases = cases_json(config);
    cases
        .first()
        .and_then(|c| c["id"].as_str())
        .unwrap_or_else(|| panic!("no case yet: {cases:?}"))
        .to_string()
}

/// `cases show ID --json`.
pub fn case_json(config: &Path, id: &str) -> Value {
    let out = daemon::cli(config, &["cases", "show", id, "--json"]);
    assert_ok(&out, "cases show --json");
    serde_json::from_slice(&out.stdout).expect("cases show --json prints a JSON object")
}

/// Moves every clock of a case by `by` (negative: into the past), as if
/// that much time had passed since it was opened.
pub async fn shift_case_times(database: &Path, id: &str, by: chrono::Duration) {
    use chrono::{DateTime, Utc};
    let url = format!("sqlite://{}", database.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    let row: (
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        DateTime<Utc>,
        DateTime<Utc>,
    ) = sqlx::query_as(
        "SELECT received_at, acknowledged_at, ack_due_at, due_at FROM cases WHERE id = ?",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap_or_else(|e| panic!("read case {id}: {e}"));
    sqlx::query(
        "UPDATE cases SET received_at = ?, acknowledged_at = ?, ack_due_at = ?, due_at = ? WHERE id = ?",
    )
    .bind(row.0 + by)
    .bind(row.1.map(|t| t + by))
    .bind(row.2 + by)
    .bind(row.3 + by)
    .bind(id)
    .execute(&pool)
    .await
    .unwrap_or_else(|e| panic!("shift case {id}: {e}"));
    pool.close().await;
}

/// Forgets when a scheduled job last ran, as if a new day had come.
pub async fn reset_schedule(database: &Path, job: &str) {
    let url = format!("sqlite://{}", database.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    sqlx::query("DELETE FROM schedule WHERE job = ?")
        .bind(job)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("reset {job}: {e}"));
    pool.close().await;
}

/// One `COUNT(*)` (or any single integer) read from the daemon's database.
pub async fn db_count(database: &Path, sql: &str) -> i64 {
    let url = format!("sqlite://{}", database.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pool.close().await;
    n
}

/// The daemon's outbox: how many mails are (pending, sent, failed).
pub async fn outbox_counts(database: &Path) -> (i64, i64, i64) {
    let url = format!("sqlite://{}", database.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    let mut counts = [0i64; 3];
    for (slot, status) in counts.iter_mut().zip(["pending", "sent", "failed"]) {
        *slot = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = ?")
            .bind(status)
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("count {status} outbox mail: {e}"));
    }
    pool.close().await;
    (counts[0], counts[1], counts[2])
}

/// Makes every pending outbox mail due now, as if its retry time had come.
pub async fn outbox_due_now(database: &Path) {
    let url = format!("sqlite://{}", database.display());
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    sqlx::query(
        "UPDATE outbox SET next_attempt_at = '2000-01-01T00:00:00Z' WHERE status = 'pending'",
    )
    .execute(&pool)
    .await
    .unwrap_or_else(|e| panic!("make the outbox due: {e}"));
    pool.close().await;
}
