//! A mailroom without servers: a temporary SQLite, a fixed clock, the
//! repository's templates, and the outbox read back as a record of what the
//! daemon would send. Raw RFC 5322 bytes go in through
//! [`privacy_mailroom::intake::process_batch`], exactly as the IMAP loop hands
//! them over; nothing is delivered, so every queued mail stays in the outbox
//! table for the test to read.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use privacy_mailroom::cases::Case;
use privacy_mailroom::cases::engine::Actor;
use privacy_mailroom::config::Config;
use privacy_mailroom::intake::{self, Fetched};
use privacy_mailroom::mailroom::Mailroom;
use privacy_mailroom::store::{self, CaseFilter};
use privacy_mailroom::team::commands::{self, TeamCommand};

/// The repository's templates.
const TEMPLATES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");
/// The UIDVALIDITY every test mailbox has.
pub const UID_VALIDITY: u32 = 7;
/// A Monday morning in Los Angeles, far from holidays and year ends.
pub fn start_clock() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 17, 0, 0)
        .single()
        .expect("a valid start time")
}

/// The config every case starts from; a case file overrides single keys.
/// Section → key → TOML value.
fn base_config(state: &std::path::Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let s = |v: &str| format!("{v:?}");
    let mut c: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut set = |section: &str, key: &str, value: String| {
        c.entry(section.to_string())
            .or_default()
            .insert(key.to_string(), value);
    };
    // Never contacted: the tier has no servers.
    set("imap", "host", s("imap.invalid"));
    set("imap", "username", s("privacy@example.com"));
    set("imap", "password", s("unused"));
    set("smtp", "host", s("smtp.invalid"));
    set("smtp", "password", s("unused"));
    set("smtp", "from", s("Privacy Team <privacy@example.com>"));
    set("team", "members", r#"["lead@example.com"]"#.into());
    set("team", "notify", r#"["privacy-team@example.com"]"#.into());
    set("team", "digest_time", s("off"));
    set("team", "burst_threshold", "3".into());
    set(
        "agents",
        "known_domains",
        r#"["rights-agent.example"]"#.into(),
    );
    set(
        "storage",
        "database",
        s(&state.join("mailroom.db").display().to_string()),
    );
    set(
        "storage",
        "attachments_dir",
        s(&state.join("attachments").display().to_string()),
    );
    set("policy", "case_prefix", s("CCPA"));
    set("templates", "dir", s(TEMPLATES_DIR));
    set("company", "name", s("Example Inc."));
    set("logging", "format", s("text"));
    c
}

/// One mailroom on a temporary directory, with its own clock and UIDs.
pub struct TestRoom {
    pub room: Mailroom,
    pub now: DateTime<Utc>,
    next_uid: u32,
    _dir: tempfile::TempDir,
}

impl TestRoom {
    /// Opens a mailroom with the base config and `overrides`
    /// (`section.key = TOML value`).
    pub async fn open(overrides: &[(String, String, String)]) -> TestRoom {
        let dir = tempfile::Builder::new()
            .prefix("pmr-middle-")
            .tempdir()
            .expect("create a temporary directory");
        let mut sections = base_config(dir.path());
        for (section, key, value) in overrides {
            sections
                .entry(section.clone())
                .or_default()
                .insert(key.clone(), value.clone());
        }
        let mut toml = String::new();
        for (section, keys) in &sections {
            toml.push_str(&format!("[{section}]\n"));
            for (k, v) in keys {
                toml.push_str(&format!("{k} = {v}\n"));
            }
        }
        let config = Config::parse(&toml).expect("the test config parses");
        let room = Mailroom::open(config).await.expect("open the mailroom");
        TestRoom {
            room,
            now: start_clock(),
            next_uid: 1,
            _dir: dir,
        }
    }

    /// Moves the clock on.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Hands messages to intake as one IMAP batch received now; returns each
    /// UID's outcome.
    pub async fn deliver(&mut self, mails: &[Mail]) -> Vec<(u32, intake::Outcome)> {
        let batch: Vec<Fetched> = mails
            .iter()
            .map(|m| {
                let uid = self.next_uid;
                self.next_uid += 1;
                Fetched {
                    uid,
                    raw: m.raw.clone(),
                    size: m.size.unwrap_or(m.raw.len() as u64),
                    headers_only: m.headers_only,
                    body_missing: false,
                    internal_date: Some(self.now),
                    refused_part: None,
                    spooled: None,
                }
            })
            .collect();
        intake::process_batch(&self.room, "INBOX", UID_VALIDITY, &batch, self.now)
            .await
            .expect("intake commits the batch")
    }

    /// The scheduler's pass over open cases at the current time.
    pub async fn tick(&self) -> usize {
        privacy_mailroom::scheduler::tick_cases(&self.room, self.now)
            .await
            .expect("the scheduler runs")
    }

    /// A message the Sent-folder scan found (a team member's own mail);
    /// returns whether it was recorded on a case.
    pub async fn sent_folder(&self, raw: &[u8]) -> bool {
        let mut tx = self.room.store.begin().await.expect("a transaction");
        let recorded = privacy_mailroom::team::correspondence::from_sent_folder(
            &mut tx,
            &self.room,
            raw,
            raw.len() as u64,
            self.now,
        )
        .await
        .expect("the Sent-folder scan records the message");
        tx.commit().await.expect("commit");
        recorded
    }

    /// Everything the scheduler runs each minute: ticks, the digest, the purge.
    pub async fn run_due(&self) {
        privacy_mailroom::scheduler::run_due(&self.room, self.now)
            .await
            .expect("the scheduler runs");
    }

    /// `cases act CASE ...` from the command line, written as a mail command
    /// line (`#deny REASON`); returns the refusal, if any.
    pub async fn act(&self, case_id: &str, line: &str) -> Result<String, String> {
        let parsed = commands::parse(line, &self.room.config.policy.case_prefix);
        let Some(Ok(TeamCommand::Case(command))) = parsed.into_iter().next().map(|l| l.command)
        else {
            panic!("`{line}` is not a case command");
        };
        let case_id = privacy_mailroom::ids::CaseId::parse_any(case_id)
            .unwrap_or_else(|| panic!("`{case_id}` is not a case ID"));
        privacy_mailroom::casework::act(
            &self.room,
            &case_id,
            Actor::Cli("cli:tester".into()),
            command,
            self.now,
        )
        .await
        .map(|t| t.case.state.as_str().to_string())
        .map_err(|e| e.to_string())
    }

    /// `report records`: the §7101 rows as the CLI prints them.
    pub async fn records(&self) -> Vec<privacy_mailroom::report::Record> {
        let mut conn = self.room.store.conn().await.expect("a connection");
        privacy_mailroom::report::records(&mut conn, self.room.policy.timezone, None, None)
            .await
            .expect("the records")
    }

    pub async fn cases(&self) -> Vec<Case> {
        let mut conn = self.room.store.conn().await.expect("a connection");
        store::cases::list(&mut conn, &CaseFilter::default(), self.now)
            .await
            .expect("list cases")
    }

    pub async fn case(&self, id: &str) -> Option<Case> {
        let mut conn = self.room.store.conn().await.expect("a connection");
        let id = privacy_mailroom::ids::CaseId::parse_any(id)?;
        store::cases::get(&mut conn, &id)
            .await
            .expect("read a case")
    }

    /// Inbound message rows after `after`: (id, disposition, target mailbox, case).
    pub async fn inbound_since(&self, after: i64) -> Vec<InboundRow> {
        let mut conn = self.room.store.conn().await.expect("a connection");
        sqlx::query_as(
            "SELECT id, disposition, target_mailbox, case_id FROM messages
             WHERE direction = 'in' AND id > ? ORDER BY id",
        )
        .bind(after)
        .fetch_all(&mut *conn)
        .await
        .expect("read messages")
    }

    /// Outbox rows after `after`, oldest first.
    pub async fn outbox_since(&self, after: i64) -> Vec<OutboxRow> {
        let mut conn = self.room.store.conn().await.expect("a connection");
        sqlx::query_as(
            "SELECT id, case_id, message_id, audience, template, recipients, subject, raw, status
             FROM outbox WHERE id > ? ORDER BY id",
        )
        .bind(after)
        .fetch_all(&mut *conn)
        .await
        .expect("read the outbox")
    }

    /// Event rows after `after`, oldest first.
    pub async fn events_since(&self, after: i64) -> Vec<EventRow> {
        let mut conn = self.room.store.conn().await.expect("a connection");
        sqlx::query_as(
            "SELECT id, case_id, actor, action, detail FROM events WHERE id > ? ORDER BY id",
        )
        .bind(after)
        .fetch_all(&mut *conn)
        .await
        .expect("read events")
    }

    /// The most recent outbox row of `template` (for `case`, when given).
    pub async fn last_outbox(&self, template: &str, case: Option<&str>) -> Option<OutboxRow> {
        self.outbox_since(0).await.into_iter().rev().find(|r| {
            r.template == template && case.is_none_or(|c| r.case_id.as_deref() == Some(c))
        })
    }
}

/// One message to deliver.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: Vec<u8>,
    /// The size IMAP reports (defaults to the raw length).
    pub size: Option<u64>,
    /// Over `imap.max_message_bytes`: only the headers were fetched.
    pub headers_only: bool,
}

#[derive(Debug, sqlx::FromRow)]
pub struct InboundRow {
    pub id: i64,
    pub disposition: String,
    pub target_mailbox: Option<String>,
    pub case_id: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub case_id: Option<String>,
    pub message_id: String,
    pub audience: String,
    pub template: String,
    pub recipients: String,
    pub subject: String,
    pub raw: Vec<u8>,
    pub status: String,
}

#[derive(Debug, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub case_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub detail: String,
}
