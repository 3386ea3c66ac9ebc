//! SQLite persistence through sqlx (runtime queries, no build-time database).
//!
//! Every function that changes state takes a `&mut SqliteConnection` so the
//! caller decides the transaction: intake writes a message, its case change,
//! events and outbox rows in one `BEGIN IMMEDIATE` transaction (SPEC §2).

pub mod attachments;
pub mod burst;
pub mod cases;
pub mod events;
pub mod messages;
pub mod outbox;
pub mod reports;
pub mod retention;
pub(crate) mod spin;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

pub use cases::CaseFilter;
pub use events::EventRow;
pub use messages::{MessageRow, NewMessage};
pub use outbox::{NewOutbox, OutboxRow};

/// Errors of the storage layer. Messages say which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot open the database {path}: {source} (check storage.database and that the directory is writable)"
    )]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot apply database migrations to {path}: {source}")]
    Migrate {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error("cannot set permissions on {path}: {source}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// A query failed; `op` names the store function (`cases.list_open`), so
    /// a log line says which rule's statement broke.
    #[error("database error in {op}: {source}")]
    Query {
        op: &'static str,
        source: sqlx::Error,
    },
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Names the store operation a failed query belongs to.
/// A query being bound: functions that bind one table's columns take and
/// return it, so a statement of several inserts binds each in turn.
pub(crate) type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// A list as the JSON text a statement reads with `json_each(?)` (one
/// parameter for any number of values). Serialising strings, numbers and
/// plain structs cannot fail; `[]` is the empty list all the same.
pub(crate) fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

pub(crate) trait Op<T> {
    fn op(self, op: &'static str) -> Result<T>;
}

impl<T> Op<T> for std::result::Result<T, sqlx::Error> {
    fn op(self, op: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Query { op, source })
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How the database's schema compares with this binary's migrations:
/// (applied and known, pending, applied but unknown to this binary).
/// Opens the file read-only and changes nothing (`check`).
pub(crate) async fn migration_status(path: &Path) -> Result<(usize, usize, usize)> {
    use sqlx::ConnectOptions;
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .op("store.migration_status.open")?;
    let has_table: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(&mut conn)
    .await
    .op("store.migration_status.table")?;
    let applied: Vec<i64> = if has_table > 0 {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
            .fetch_all(&mut conn)
            .await
            .op("store.migration_status.applied")?
    } else {
        Vec::new()
    };
    let known: Vec<i64> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();
    let applied_known = applied.iter().filter(|v| known.contains(v)).count();
    let unknown = applied.len() - applied_known;
    let pending = known.iter().filter(|v| !applied.contains(v)).count();
    Ok((applied_known, pending, unknown))
}

/// A read-only connection to the database file, for `check`: changes
/// nothing, not even the journal mode.
pub(crate) async fn read_only(path: &Path) -> Result<SqliteConnection> {
    use sqlx::ConnectOptions;
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .op("store.read_only.open")
}

/// The database handle: a small pool; SQLite serialises the writers.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database, with directory 0700 and file
    /// 0600, WAL journal and foreign keys, and applies pending migrations.
    ///
    /// `synchronous = FULL`: every commit syncs the WAL. With `NORMAL` a
    /// commit survives a crash of the process but not a power loss, and
    /// intake moves the originals to Processed right after its commit: a
    /// power loss then could leave a request in Processed with no row. The
    /// cost is one fsync per commit (intake commits per batch of up to 200
    /// messages); docs/benchmark.md has the figure.
    pub async fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        precreate_private_file(path)?;
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .pragma("cache_size", format!("-{CACHE_KIB}"));
        // No ping before handing out a pooled connection: a SQLite
        // connection is a file, not a socket that can drop, and the ping was
        // a round trip to its worker thread on every `conn()` and `begin()`
        // (issue 13: a fifth of the sender's recording time).
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        for file in [
            path.to_owned(),
            sidecar(path, "-wal"),
            sidecar(path, "-shm"),
        ] {
            if file.exists() {
                set_mode(&file, 0o600)?;
            }
        }
        let store = Store {
            pool,
            path: path.to_owned(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies pending migrations (idempotent). Two processes opening a new
    /// database at once (the daemon starting, `cases list` beside it) would
    /// both apply the same migration and one would fail ("table … already
    /// exists"): an exclusive `flock` on `<database>.migrate.lock` makes the
    /// second wait and then find nothing left to do.
    pub(crate) async fn migrate(&self) -> Result<()> {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".migrate.lock");
        let lock_path = PathBuf::from(name);
        let lock_err = |source| StoreError::Permissions {
            path: lock_path.clone(),
            source,
        };
        let file = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&lock_path)
                .map_err(lock_err)?
        };
        let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| lock_err(std::io::Error::other(e)))?
            .map_err(lock_err)?;
        let result = MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: self.path.clone(),
                source,
            });
        drop(file);
        result
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write transaction. `BEGIN IMMEDIATE` takes the write lock up front, so
    /// a read-then-write transaction waits for the lock instead of failing with
    /// SQLITE_BUSY half way.
    pub async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool.begin_with(BEGIN_WRITE).await.op("store.begin")
    }

    /// A pooled connection for an intake batch: its page cache holds the
    /// batch's pages until its transaction ([`Batch::begin`]) commits. Give
    /// the room back with [`Batch::done`] once the transaction is over.
    pub(crate) async fn batch(&self) -> Result<Batch> {
        let mut conn = self.pool.acquire().await.op("store.batch")?;
        set_cache(&mut conn, BATCH_CACHE_KIB).await?;
        Ok(Batch { conn, done: false })
    }

    /// A pooled connection for reads.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Sqlite>> {
        self.pool.acquire().await.op("store.conn")
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The Message-ID HMAC key: created once, kept in the database.
    pub(crate) async fn hmac_key(&self) -> Result<Vec<u8>> {
        let mut tx = self.begin().await?;
        let key: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'hmac_key'")
                .fetch_optional(&mut *tx)
                .await
                .op("store.hmac_key")?;
        let key = match key {
            Some(k) => k,
            None => {
                let k = rand::random::<[u8; 32]>().to_vec();
                sqlx::query("INSERT INTO meta (key, value) VALUES ('hmac_key', ?)")
                    .bind(&k)
                    .execute(&mut *tx)
                    .await
                    .op("store.hmac_key")?;
                k
            }
        };
        tx.commit().await.op("store.hmac_key")?;
        Ok(key)
    }
}

/// The intake cursor of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub uid_validity: u32,
    pub last_uid: u32,
}

pub async fn cursor(conn: &mut SqliteConnection, mailbox: &str) -> Result<Option<Cursor>> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT uid_validity, last_uid FROM mailbox_cursor WHERE mailbox = ?")
            .bind(mailbox)
            .fetch_optional(conn)
            .await
            .op("store.cursor")?;
    Ok(row.map(|(v, u)| Cursor {
        uid_validity: v as u32,
        last_uid: u as u32,
    }))
}

pub(crate) async fn set_cursor(
    conn: &mut SqliteConnection,
    mailbox: &str,
    cursor: Cursor,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO mailbox_cursor (mailbox, uid_validity, last_uid, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (mailbox) DO UPDATE SET uid_validity = excluded.uid_validity,
             last_uid = excluded.last_uid, updated_at = excluded.updated_at",
    )
    .bind(mailbox)
    .bind(i64::from(cursor.uid_validity))
    .bind(i64::from(cursor.last_uid))
    .bind(now)
    .execute(conn)
    .await
        .op("store.set_cursor")?;
    Ok(())
}

/// When a scheduled job last ran.
pub(crate) async fn last_run(
    conn: &mut SqliteConnection,
    job: &str,
) -> Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar("SELECT last_run FROM schedule WHERE job = ?")
        .bind(job)
        .fetch_optional(conn)
        .await
        .op("store.last_run")
}

pub(crate) async fn set_last_run(
    conn: &mut SqliteConnection,
    job: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO schedule (job, last_run) VALUES (?, ?)
         ON CONFLICT (job) DO UPDATE SET last_run = excluded.last_run",
    )
    .bind(job)
    .bind(at)
    .execute(conn)
    .await
    .op("store.set_last_run")?;
    Ok(())
}

/// Creates a directory (and parents) with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
    }
    Ok(())
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        StoreError::Permissions {
            path: path.to_owned(),
            source,
        }
    })
}

/// Creates the database file 0600 before SQLite does, so it is never readable
/// by others, not even for a moment.
fn precreate_private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|source| StoreError::Permissions {
            path: path.to_owned(),
            source,
        })
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Parses a stored enum column.
pub(crate) fn parse_col<T: FromStr>(table: &'static str, value: &str) -> Result<T> {
    value.parse().map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("unexpected value {value:?}"),
    })
}

/// How a write transaction begins: `IMMEDIATE` takes the write lock up
/// front ([`Store::begin`], [`Batch::begin`]).
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// A connection's page cache, in KiB: SQLite's default, set explicitly so
/// that a [`Batch`] can go back to it.
const CACHE_KIB: u32 = 2000;

/// The page cache of an intake batch's connection, in KiB. A batch of 200
/// requests dirties more pages than the default cache holds, so SQLite
/// wrote some to the WAL before the commit and read them back for the next
/// request: with 8 MiB the SQLite worker spent about 12 % less time on the
/// same batches (docs/benchmark.md, issue 13). Only while the batch's
/// transaction runs: four pooled connections with this much would cost the
/// daemon 32 MiB.
const BATCH_CACHE_KIB: u32 = 8192;

async fn set_cache(conn: &mut SqliteConnection, kib: u32) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA cache_size = -{kib}")))
        .execute(conn)
        .await
        .op("store.cache_size")?;
    Ok(())
}

/// A pooled connection with room in its page cache for an intake batch
/// ([`Store::batch`]).
pub(crate) struct Batch {
    conn: sqlx::pool::PoolConnection<Sqlite>,
    done: bool,
}

impl Batch {
    /// A write transaction on the batch's connection, as [`Store::begin`].
    pub(crate) async fn begin(&mut self) -> Result<Transaction<'_, Sqlite>> {
        sqlx::Connection::begin_with(&mut *self.conn, BEGIN_WRITE)
            .await
            .op("store.begin")
    }

    /// Gives the cache's room back, once the transaction is over. The batch
    /// is committed by then, so a failure here is not the batch's: the
    /// connection is closed instead of going back to the pool.
    pub(crate) async fn done(mut self) {
        match set_cache(&mut self.conn, CACHE_KIB).await {
            Ok(()) => self.done = true,
            Err(e) => tracing::debug!(error = %e, "Closing the batch's connection."),
        }
    }
}

impl Drop for Batch {
    /// A batch dropped before [`Batch::done`] (an error, a cancelled task)
    /// closes its connection, so the pool never keeps the large cache.
    fn drop(&mut self) {
        if !self.done {
            self.conn.close_on_drop();
        }
    }
}

/// Helpers for the store's unit tests: a private database in a temporary
/// directory, and cases opened the way intake opens them.
#[cfg(test)]
pub(crate) mod testing {
    use chrono::{DateTime, TimeZone, Utc};

    use super::Store;
    use crate::cases::engine::NewRequest;
    use crate::cases::{Case, Kind, Policy};

    pub(crate) fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, 12, 0, 0)
            .single()
            .unwrap_or_default()
    }

    /// A fresh, migrated database; the directory lives as long as the guard.
    pub(crate) async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db/mailroom.sqlite3"))
            .await
            .unwrap();
        (dir, store)
    }

    /// Opens and stores a consumer's request received at `received`.
    pub(crate) async fn open_case(
        conn: &mut sqlx::SqliteConnection,
        id: &str,
        received: DateTime<Utc>,
    ) -> Case {
        let req = NewRequest {
            kind: Kind::Know,
            requester: "ann@example.org".into(),
            agent: None,
            consumer: Some("ann@example.org".into()),
            consumer_name: None,
            received_at: received,
            declarations: 0,
        };
        let t = crate::cases::open(
            id.into(),
            "123456".into(),
            req,
            &Policy::default(),
            received,
        );
        let thread = super::cases::CaseThread {
            subject: "Request to know".into(),
            manner: crate::cases::Manner::Email,
            ..Default::default()
        };
        super::cases::insert(conn, &t.case, &thread, received)
            .await
            .unwrap();
        t.case
    }

    /// Stores `case` closed (completed) at `closed`.
    pub(crate) async fn close_case(
        conn: &mut sqlx::SqliteConnection,
        case: &mut Case,
        closed: DateTime<Utc>,
    ) {
        case.state = crate::cases::State::Completed;
        case.resolution = Some(crate::cases::Resolution::Complied);
        case.closed_at = Some(closed);
        super::cases::update(conn, case, closed).await.unwrap();
    }

    /// Records an inbound message of `case` at `when`.
    pub(crate) async fn inbound(
        conn: &mut sqlx::SqliteConnection,
        case: Option<&str>,
        sha256: &str,
        when: DateTime<Utc>,
    ) -> i64 {
        super::messages::insert(
            conn,
            &super::NewMessage {
                case_id: case,
                direction: "in",
                message_id: Some("<m1@example.org>"),
                subject: "Request to know",
                from_addr: Some("ann@example.org"),
                at: when,
                sha256,
                size: 3,
                original: crate::store::messages::Original::Row(b"raw"),
                body_text: Some("body"),
                disposition: crate::store::messages::Disposition::Case,
                ..Default::default()
            },
        )
        .await
        .unwrap()
    }
}

/// The enums stored as text and the database's guards on those columns.
#[cfg(test)]
mod vocabulary {
    use std::collections::BTreeSet;
    use std::str::FromStr;

    use crate::cases::{Action, Kind, Manner, Resolution, State, Template};

    use super::messages::Disposition;
    use super::outbox::Audience;

    fn round_trips<T>(all: &[T])
    where
        T: Copy + PartialEq + std::fmt::Debug + std::fmt::Display + FromStr,
    {
        let mut seen = BTreeSet::new();
        for v in all {
            let text = v.to_string();
            assert!(seen.insert(text.clone()), "{text} twice");
            assert_eq!(text.parse::<T>().ok(), Some(*v), "{text}");
            assert!(!text.is_empty() && text == text.to_lowercase(), "{text}");
        }
        assert!("no such value".parse::<T>().is_err());
    }

    #[test]
    fn every_stored_enum_round_trips() {
        round_trips(&Kind::ALL);
        round_trips(&State::ALL);
        round_trips(&Template::ALL);
        round_trips(Action::ALL);
        round_trips(Resolution::ALL);
        round_trips(Manner::ALL);
        round_trips(Disposition::ALL);
        round_trips(Audience::ALL);
    }

    /// The values a guard trigger (migration 0106, or a later one that
    /// replaced it) lets into its column: the quoted words of its `WHEN`.
    async fn guarded(conn: &mut sqlx::SqliteConnection, trigger: &str) -> BTreeSet<String> {
        let sql: String =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?")
                .bind(trigger)
                .fetch_one(conn)
                .await
                .unwrap_or_else(|e| panic!("trigger {trigger}: {e}"));
        let when = sql
            .split_once("\nWHEN ")
            .and_then(|(_, rest)| rest.split_once("\nBEGIN "))
            .map(|(when, _)| when)
            .unwrap_or_else(|| panic!("{trigger} has no WHEN: {sql}"));
        assert!(
            !when.contains(" IN ("),
            "{trigger} checks an IN list (a temporary b-tree per row): {sql}"
        );
        when.split('\'')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    fn texts<T: std::fmt::Display>(all: &[T]) -> BTreeSet<String> {
        all.iter().map(ToString::to_string).collect()
    }

    #[tokio::test]
    async fn the_guard_triggers_accept_exactly_the_enums_values() {
        let (_dir, store) = super::testing::store().await;
        let mut conn = store.conn().await.unwrap();
        let columns = [
            ("cases_kind", texts(&Kind::ALL)),
            ("cases_state", texts(&State::ALL)),
            ("cases_manner", texts(Manner::ALL)),
            ("cases_resolution", texts(Resolution::ALL)),
            ("messages_disposition", texts(Disposition::ALL)),
            ("outbox_audience", texts(Audience::ALL)),
        ];
        for (prefix, want) in columns {
            for when in ["insert", "update"] {
                let trigger = format!("{prefix}_{when}");
                assert_eq!(guarded(&mut conn, &trigger).await, want, "{trigger}");
            }
        }
    }

    /// What the guards do, not only what they list: a word outside the
    /// vocabulary is refused with the trigger's message, a word inside it
    /// and a NULL resolution pass.
    #[tokio::test]
    async fn the_guard_triggers_refuse_an_unknown_word() {
        let (_dir, store) = super::testing::store().await;
        let mut conn = store.conn().await.unwrap();
        let case = super::testing::open_case(&mut conn, "C-1", super::testing::at(1)).await;
        let refused = [
            (
                "UPDATE cases SET kind = 'bogus'",
                "cases.kind: unknown request kind",
            ),
            (
                "UPDATE cases SET state = 'bogus'",
                "cases.state: unknown case state",
            ),
            (
                "UPDATE cases SET manner = 'bogus'",
                "cases.manner: unknown manner",
            ),
            (
                "UPDATE cases SET resolution = 'bogus'",
                "cases.resolution: unknown resolution",
            ),
            (
                "INSERT INTO cases (id, kind, state, requester, received_at, ack_due_at, due_at,
                   verification_code, created_at, updated_at)
                 VALUES ('C-2', 'bogus', 'verified', 'a', 'x', 'x', 'x', '1', 'x', 'x')",
                "cases.kind: unknown request kind",
            ),
            (
                "INSERT INTO messages (direction, at, sha256, disposition)
                 VALUES ('in', '2026-03-01', 'x', 'bogus')",
                "messages.disposition: unknown disposition",
            ),
            (
                "INSERT INTO outbox (message_id, audience, template, envelope_from, recipients,
                   rate_key, raw, next_attempt_at, created_at)
                 VALUES ('m', 'bogus', 't', 'e', '[]', 'r', x'00', 'x', 'x')",
                "outbox.audience: unknown audience",
            ),
        ];
        for (sql, message) in refused {
            let e = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await
                .expect_err(sql);
            assert!(e.to_string().contains(message), "{sql}: {e}");
        }
        let passed = [
            "UPDATE cases SET kind = 'delete', state = 'verified', manner = 'agent'",
            "UPDATE cases SET resolution = 'complied'",
            "UPDATE cases SET resolution = NULL",
            // A purge's untouched columns.
            "UPDATE cases SET state = 'withdrawn', requester = '[purged]'",
            "INSERT INTO messages (direction, at, sha256, disposition)
             VALUES ('in', '2026-03-01', 'x', 'review')",
        ];
        for sql in passed {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        assert_eq!(
            super::cases::get(&mut conn, &case.id)
                .await
                .unwrap()
                .map(|c| c.kind),
            Some(Kind::Delete)
        );
    }
}

/// The larger page cache stays with the batch that asked for it.
#[cfg(test)]
mod batch_cache {
    use super::*;

    async fn cache_size(conn: &mut SqliteConnection) -> i64 {
        sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    /// Every connection the pool would hand out next, held at once, after
    /// any connection dropped has been given back or closed.
    async fn idle_caches(store: &Store) -> Vec<i64> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.pool.num_idle() != store.pool.size() as usize {
            assert!(
                std::time::Instant::now() < deadline,
                "the pool never settled"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut held = Vec::new();
        for _ in 0..store.pool.num_idle() {
            held.push(store.conn().await.unwrap());
        }
        let mut caches = Vec::new();
        for conn in &mut held {
            caches.push(cache_size(conn).await);
        }
        caches
    }

    #[tokio::test]
    async fn a_batch_has_the_larger_cache_only_while_it_runs() {
        let (_dir, store) = testing::store().await;
        let default = -i64::from(CACHE_KIB);
        let mut batch = store.batch().await.unwrap();
        assert_eq!(
            cache_size(&mut batch.conn).await,
            -i64::from(BATCH_CACHE_KIB)
        );
        let mut tx = batch.begin().await.unwrap();
        testing::open_case(&mut tx, "C-1", testing::at(1)).await;
        tx.commit().await.unwrap();
        batch.done().await;
        let caches = idle_caches(&store).await;
        assert!(!caches.is_empty());
        assert!(caches.iter().all(|c| *c == default), "{caches:?}");

        // A batch that ends early never goes back to the pool.
        let mut batch = store.batch().await.unwrap();
        let tx = batch.begin().await.unwrap();
        drop(tx);
        drop(batch);
        let caches = idle_caches(&store).await;
        assert!(caches.iter().all(|c| *c == default), "{caches:?}");
        let mut conn = store.conn().await.unwrap();
        let cases: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cases")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(cases, 1);
    }
}
