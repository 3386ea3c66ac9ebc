//! `scripts/bench`: intake speed, reply rate and memory for a burst of
//! requests, next to the mail servers' own limits measured in the same run.
//!
//! Starts the integration tests' private Dovecot and Postfix and generates a
//! burst of realistic requests (Know, Delete, opt-out, authorized agents with
//! a small PDF). Two modes:
//!
//! - `once` (the default): APPENDs the burst to the privacy mailbox over one
//!   IMAP session, then runs `privacy-mailroom run --once` under
//!   `/usr/bin/time -v` and reports wall time, messages per second, maximum
//!   resident memory, and the intake, delivery and Sent-copy phases from the
//!   daemon's log timestamps.
//! - `daemon`: starts `privacy-mailroom run` (IDLE) on an empty inbox, waits
//!   for `READY=1`, lands the burst in the inbox the way mail arrives (APPEND
//!   over several IMAP sessions at once, the fastest way in; see
//!   docs/benchmark.md), and measures intake (first arrival → inbox drained
//!   and N cases in the database), the replies Postfix accepted per second,
//!   peak RSS (`/proc` every 50 ms), and arrival → acknowledgement latency
//!   (median of single requests sent one at a time after the burst).
//!
//! Both modes also measure the physical limits on the same servers: raw
//! `UID FETCH` and `UID MOVE` of the same messages in the daemon's batch size
//! (on another mailbox, before the daemon runs), and raw SMTP (plain clients
//! pushing as many messages of the replies' average size through the same
//! Postfix over `smtp.connections` connections, after it). Each figure is
//! printed next to its limit with the ratio. Replies are compared twice: by
//! the rate Postfix accepted them, and by the rate they got through it, until
//! the last was in its mailbox (see `last_delivered`). `once` mode also prints
//! intake's CPU per request, and the rate at which that cost would keep every
//! core busy.
//!
//! Finally it checks the result: one case per message, the inbox empty, every
//! original in Processed, the outbox delivered and copied to Sent.
//!
//! Settings (environment):
//! - `BENCH_MODE`: `once` (default) or `daemon`
//! - `BENCH_MESSAGES`: how many requests (default 5000)
//! - `BENCH_BIN`: the binary to measure (default `target/release/privacy-mailroom`)
//! - `BENCH_OUT`: where the log, `time -v` output, RSS samples and summary go
//!   (default `target/bench`)
//! - `BENCH_PROFILE`: `time` (default), `perf` (`perf record -g` around the
//!   run; `perf.data` in `BENCH_OUT`) or `massif` (valgrind's heap profiler;
//!   slow, use a few hundred messages) or `callgrind` (valgrind's instruction
//!   counts, `callgrind.out` in `BENCH_OUT`: the same for the same binary and
//!   input however busy the machine is, so two builds compare on a noisy
//!   host; slow, use a few hundred messages); `once` mode only
//! - `BENCH_AGENT_DESKS`: how many sender addresses the agent service uses
//!   (default 5)
//! - `BENCH_SEED_CASES`: closed cases (with their messages, events and sent
//!   mail) written into the database before the run (default 0)
//! - `BENCH_BIG_ATTACHMENT_MB`: one request in the burst carries an
//!   attachment of this many MiB (default 0: none)
//! - `BENCH_SMTP_CONNECTIONS`: `smtp.connections` in the config, and the raw
//!   SMTP clients' connections (default: the key is not written and the
//!   daemon's default, 4, applies; the raw clients use 4)
//! - `BENCH_LANDING` (daemon mode): `move` (default: the burst is APPENDed
//!   to a staging folder before the daemon starts, then lands in the inbox
//!   with one `UID MOVE`, all at once) or `append` (APPENDed to the inbox
//!   while the daemon runs, over `BENCH_LAND_CONNECTIONS` sessions)
//! - `BENCH_LAND_CONNECTIONS`: IMAP sessions APPENDing the burst (default 4)
//! - `BENCH_SENT_COPY`: `smtp.sent_copy` (default `append`: the test Dovecot
//!   keeps no copy of sent mail)
//! - `BENCH_LATENCY_SAMPLES`: single requests for the latency (default 20; daemon mode)
//! - `BENCH_TIMEOUT_SECS`: give up on the run after this long (default 1800)
//! - `BENCH_KEEP_DB=1`: copy the database to `BENCH_OUT` for a closer look
//!
//! Exits 1 when the run fails or the result is wrong — never because of speed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use support::MailServers;
use support::daemon::{self, DaemonConfig};

/// The daemon's allocator (src/main.rs), so that intake without servers,
/// run in this process, is the daemon's own ceiling.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AGENT_DOMAIN: &str = "rights-agent.example.com";

/// The authserv-id of the bench's pretend MX: the agents' mail carries its
/// `Authentication-Results` with an aligned `dkim=pass`, and the config
/// trusts it (`team.trusted_authserv_ids`), so known-agent privileges apply.
const BENCH_AUTHSERV_ID: &str = "mx.bench.privacy-mailroom.test";

/// The daemon's intake batch (`sync::BATCH`): the raw FETCH and MOVE use it.
const INTAKE_BATCH: usize = privacy_mailroom::sync::BATCH;

/// The benchmark's settings, from the environment.
struct Settings {
    mode: Mode,
    messages: usize,
    bin: PathBuf,
    out: PathBuf,
    profile: Profile,
    agent_desks: usize,
    seed_cases: usize,
    big_attachment_mb: usize,
    smtp_connections: usize,
    land_connections: usize,
    landing: Landing,
    latency_samples: usize,
    timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Once,
    Daemon,
}

/// How the daemon-mode burst reaches the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landing {
    /// One `UID MOVE` from a staging folder: the whole burst at once.
    Move,
    /// APPENDs over several sessions while the daemon runs.
    Append,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    Time,
    Perf,
    Massif,
    Callgrind,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let number = |name: &str, default: usize| -> Result<usize, String> {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse()
                    .map_err(|_| format!("{name}={v:?} is not a number")),
                _ => Ok(default),
            }
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = |name: &str, default: PathBuf| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map_or(default, PathBuf::from)
        };
        let profile = match std::env::var("BENCH_PROFILE").as_deref() {
            Err(_) | Ok("") | Ok("time") => Profile::Time,
            Ok("perf") => Profile::Perf,
            Ok("massif") => Profile::Massif,
            Ok("callgrind") => Profile::Callgrind,
            Ok(other) => {
                return Err(format!(
                    "BENCH_PROFILE={other:?}: use time, perf, massif or callgrind"
                ));
            }
        };
        let mode = match std::env::var("BENCH_MODE").as_deref() {
            Err(_) | Ok("") | Ok("once") => Mode::Once,
            Ok("daemon") => Mode::Daemon,
            Ok(other) => return Err(format!("BENCH_MODE={other:?}: use once or daemon")),
        };
        let landing = match std::env::var("BENCH_LANDING").as_deref() {
            Err(_) | Ok("") | Ok("move") => Landing::Move,
            Ok("append") => Landing::Append,
            Ok(other) => return Err(format!("BENCH_LANDING={other:?}: use move or append")),
        };
        if mode == Mode::Daemon && profile != Profile::Time {
            return Err("BENCH_PROFILE applies to BENCH_MODE=once only".into());
        }
        let messages = number("BENCH_MESSAGES", 5000)?;
        if messages == 0 {
            return Err("BENCH_MESSAGES must be at least 1".into());
        }
        Ok(Settings {
            mode,
            messages,
            bin: path("BENCH_BIN", root.join("target/release/privacy-mailroom")),
            out: path("BENCH_OUT", root.join("target/bench")),
            profile,
            agent_desks: number("BENCH_AGENT_DESKS", 5)?.max(1),
            seed_cases: number("BENCH_SEED_CASES", 0)?,
            big_attachment_mb: number("BENCH_BIG_ATTACHMENT_MB", 0)?,
            smtp_connections: number("BENCH_SMTP_CONNECTIONS", 4)?.max(1),
            land_connections: number("BENCH_LAND_CONNECTIONS", 4)?.max(1),
            landing,
            latency_samples: number("BENCH_LATENCY_SAMPLES", 20)?,
            timeout: Duration::from_secs(number("BENCH_TIMEOUT_SECS", 1800)? as u64),
        })
    }
}

/// Everything a mode needs.
struct Bench<'a> {
    settings: &'a Settings,
    servers: &'static MailServers,
    mailbox: String,
    config: DaemonConfig,
    config_path: PathBuf,
    /// The generated requests.
    burst: Vec<Vec<u8>>,
    bytes: usize,
    /// The highest case, outbox and message ids before the run (the seed).
    base: Base,
}

#[tokio::main]
async fn main() {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => fail(&e),
    };
    if !settings.bin.is_file() {
        fail(&format!(
            "{} does not exist; build it with `cargo build --release --locked` (or set BENCH_BIN)",
            settings.bin.display()
        ));
    }
    if let Err(e) = std::fs::create_dir_all(&settings.out) {
        fail(&format!("cannot create {}: {e}", settings.out.display()));
    }
    support::install_crypto_provider();
    eprintln!("Starting private Dovecot and Postfix...");
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let team = servers.unique_user("team");
    let member = servers.unique_user("alice");

    // The burst.
    let started = Instant::now();
    let big_at = (settings.big_attachment_mb > 0).then_some(settings.messages / 2);
    let burst: Vec<(Mix, Vec<u8>)> = (0..settings.messages)
        .map(|i| match big_at {
            Some(b) if b == i => big_request(i, &mailbox, settings.big_attachment_mb),
            _ => request(i, &mailbox, settings.agent_desks),
        })
        .collect();
    let bytes: usize = burst.iter().map(|(_, raw)| raw.len()).sum();
    let mut counts = [0usize; 5];
    for (mix, _) in &burst {
        counts[*mix as usize] += 1;
    }
    eprintln!(
        "Generated {} requests ({}) in {:.1} s: know {}, delete {}, opt-out {}, agent {} (+{} with PDF){}.",
        burst.len(),
        mib(bytes as u64),
        started.elapsed().as_secs_f64(),
        counts[Mix::Know as usize],
        counts[Mix::Delete as usize],
        counts[Mix::OptOut as usize],
        counts[Mix::Agent as usize],
        counts[Mix::AgentPdf as usize],
        big_at.map_or(String::new(), |_| format!(
            "; one with a {} MiB attachment",
            settings.big_attachment_mb
        )),
    );
    let burst: Vec<Vec<u8>> = burst.into_iter().map(|(_, raw)| raw).collect();

    let mut config = DaemonConfig::new(servers, &mailbox)
        .team_members(&[&member])
        .team_notify(&[&team])
        .set(
            "agents",
            "known_domains",
            daemon::toml_str_array(&[AGENT_DOMAIN]),
        )
        .set(
            "team",
            "trusted_authserv_ids",
            daemon::toml_str_array(&[BENCH_AUTHSERV_ID]),
        );
    // Dovecot keeps no copy of sent mail: `"auto"` would only wait
    // `AUTO_COPY_SETTLE` before appending (BENCH_SENT_COPY=auto measures that).
    config = config.set_str(
        "smtp",
        "sent_copy",
        &std::env::var("BENCH_SENT_COPY").unwrap_or_else(|_| "append".into()),
    );
    // Left to the daemon's default (4) unless asked for, so that a binary
    // from before the key existed can be measured too.
    if std::env::var_os("BENCH_SMTP_CONNECTIONS").is_some() {
        config = config.set("smtp", "connections", settings.smtp_connections.to_string());
    }
    if settings.big_attachment_mb > 0 {
        // Room for the big request: base64 adds a third, plus the text.
        let attachment = settings.big_attachment_mb as u64 * 1024 * 1024;
        config = config
            .set(
                "imap",
                "max_message_bytes",
                (attachment * 14 / 10 + 4 * 1024 * 1024)
                    .max(52_428_800)
                    .to_string(),
            )
            .set(
                "agents",
                "max_attachment_bytes",
                (attachment + 1024 * 1024).max(26_214_400).to_string(),
            );
    }
    let config_path = config.write();

    let base = if settings.seed_cases > 0 {
        eprintln!("Seeding {} closed cases...", settings.seed_cases);
        let started = Instant::now();
        let base = seed_cases(
            &settings.bin,
            &config_path,
            &config.database_path(),
            settings.seed_cases,
        )
        .await
        .unwrap_or_else(|e| fail(&e));
        eprintln!(
            "Seeded {} closed cases in {:.1} s.",
            settings.seed_cases,
            started.elapsed().as_secs_f64()
        );
        base
    } else {
        Base::default()
    };

    let bench = Bench {
        settings: &settings,
        servers,
        mailbox,
        config,
        config_path,
        burst,
        bytes,
        base,
    };
    eprintln!(
        "Raw limits: APPEND, UID FETCH and UID MOVE (batches of {INTAKE_BATCH}) of the same {} messages on another mailbox...",
        settings.messages
    );
    let raw_imap = raw_imap(servers, &bench.burst, settings.land_connections).await;
    eprintln!(
        "  APPEND over {} sessions {:.0}/s, FETCH {:.0}/s, MOVE {:.0}/s, FETCH+MOVE {:.0}/s.",
        settings.land_connections,
        raw_imap.rate(raw_imap.append),
        raw_imap.rate(raw_imap.fetch),
        raw_imap.rate(raw_imap.moved),
        raw_imap.rate(raw_imap.fetch + raw_imap.moved),
    );
    match settings.mode {
        Mode::Once => once(bench, &raw_imap).await,
        Mode::Daemon => daemon_burst(bench, &raw_imap).await,
    }
}

/// `run --once` on the APPENDed burst.
async fn once(b: Bench<'_>, raw_imap: &RawImap) {
    let settings = b.settings;
    let servers = b.servers;
    let append_time = bulk_append(servers, &b.mailbox, b.burst.iter()).await;
    eprintln!(
        "APPENDed them to INBOX over one IMAP session in {:.1} s ({:.0}/s).",
        append_time.as_secs_f64(),
        settings.messages as f64 / append_time.as_secs_f64()
    );
    let reply_size = average_size(&b.burst);
    eprintln!("Limit: the same intake without servers, in this process...");
    let unserved = intake_without_servers(&b.config_path, &b.burst)
        .await
        .unwrap_or_else(|e| fail(&format!("intake without servers: {e}")));
    eprintln!(
        "  {} messages in {:.2} s ({:.0}/s).",
        unserved.0,
        unserved.1.as_secs_f64(),
        unserved.0 as f64 / unserved.1.as_secs_f64()
    );
    drop(b.burst);

    // The measured run.
    eprintln!(
        "Running {} run --once ({:?})...",
        settings.bin.display(),
        settings.profile
    );
    let run = run_daemon(settings, &b.config_path);
    let log = std::fs::read_to_string(b.config.dir().join("daemon.log")).unwrap_or_default();
    let _ = std::fs::write(settings.out.join("daemon.log"), &log);
    write_rss_csv(&settings.out.join("rss.csv"), &run.samples);
    let time = std::fs::read_to_string(settings.out.join("time.txt"))
        .map(|t| TimeV::parse(&t))
        .unwrap_or_default();
    let phases = LogSummary::parse(&log);

    let mut problems = Vec::new();
    if !run.success {
        problems.push(format!(
            "run --once failed ({}); last log lines:\n{}",
            run.status,
            tail(&log, 15)
        ));
    }
    let list_started = Instant::now();
    let listed = cases_list(&settings.bin, &b.config_path);
    let list_time = list_started.elapsed();
    if let Err(e) = &listed {
        problems.push(e.clone());
    }
    let db = match Db::read(&b.config.database_path(), &b.base).await {
        Ok(db) => db,
        Err(e) => {
            problems.push(e);
            Db::default()
        }
    };
    // When the daemon's last reply reached its mailbox, before the raw
    // clients deliver any of theirs.
    let replies_in = last_delivered(servers, &b.mailbox).await;
    let raw_smtp = raw_smtp_limit(
        servers,
        &b.mailbox,
        db.sent,
        &RawContent::Filler(db.average_size.unwrap_or(reply_size)),
        settings.smtp_connections,
    )
    .await;
    let raw_replies = raw_smtp_replies(
        servers,
        &b.mailbox,
        &b.config.database_path(),
        &b.base,
        db.sent,
        settings.smtp_connections,
        &mut problems,
    )
    .await;
    let checked = check_result(
        servers,
        &b.mailbox,
        &db,
        settings.messages,
        settings.messages,
    )
    .await;
    problems.extend(checked.problems);

    let mut report = report(&Report {
        settings,
        bytes: b.bytes,
        append_time,
        run: &run,
        time: &time,
        phases: &phases,
        db: &db,
        list_time,
        sent_folder: checked.sent_folder,
    });
    let intake = phases
        .took_in
        .as_ref()
        .map(|(t, _)| secs(run.started_at, *t));
    let delivery = phases
        .took_in
        .as_ref()
        .zip(phases.delivered.as_ref())
        .map(|((a, _), (b, _))| secs(*a, *b));
    let intake_rate = intake.map(|s| settings.messages as f64 / s.max(1e-6));
    // Delivery starts when intake ends.
    let through = phases
        .took_in
        .as_ref()
        .zip(phases.delivered.as_ref())
        .map(|((from, _), (accepted, _))| secs_through(*from, *accepted, replies_in));
    report.push_str(&limits_report(
        settings,
        raw_imap,
        &raw_smtp,
        raw_replies.as_ref(),
        intake_rate,
        delivery.map(|s| db.sent as f64 / s.max(1e-6)),
        through,
    ));
    ratio_line(
        &mut report,
        "intake vs the same without servers",
        intake_rate,
        unserved.0 as f64 / unserved.1.as_secs_f64().max(1e-6),
    );
    let _ = writeln!(
        report,
        "  in this process, its own store in $TMPDIR, parse beside write as in the daemon: the daemon's own ceiling"
    );
    if let Some((end, _)) = &phases.took_in {
        intake_cpu_report(
            &mut report,
            &run.cpu,
            (run.started_at, *end),
            settings.messages,
            intake_rate,
        );
    }
    finish(settings, &b.config, report, &problems, checked.processed);
}

/// The daemon's own intake ceiling: the same messages through the same
/// parse and write as `sync::drain` (the next batch parsed on a blocking
/// thread while the last one is written), in this process, on a store of
/// its own in `$TMPDIR`, with no IMAP around them. Messages the daemon
/// would read piece by piece (over `sync::SPOOL_ABOVE`) are left out.
async fn intake_without_servers(
    config_path: &Path,
    burst: &[Vec<u8>],
) -> Result<(usize, Duration), String> {
    use privacy_mailroom::intake::{self, Fetched};
    let dir = tempfile::Builder::new()
        .prefix("pmr-bench-store-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut config =
        privacy_mailroom::config::Config::load(config_path).map_err(|e| e.to_string())?;
    config.storage.database = dir.path().join("mailroom.db");
    config.storage.attachments_dir = dir.path().join("attachments");
    let room = privacy_mailroom::mailroom::Mailroom::open(config)
        .await
        .map_err(|e| e.to_string())?;
    let now = Utc::now();
    let small: Vec<&Vec<u8>> = burst
        .iter()
        .filter(|m| m.len() as u64 <= privacy_mailroom::sync::SPOOL_ABOVE)
        .collect();
    let batches: Vec<Arc<Vec<Fetched>>> = small
        .chunks(INTAKE_BATCH)
        .enumerate()
        .map(|(i, chunk)| {
            let batch = chunk
                .iter()
                .enumerate()
                .map(|(j, raw)| Fetched {
                    uid: (i * INTAKE_BATCH + j + 1) as u32,
                    raw: raw.to_vec(),
                    size: raw.len() as u64,
                    headers_only: false,
                    body_missing: false,
                    internal_date: Some(now),
                    refused_part: None,
                    spooled: None,
                })
                .collect();
            Arc::new(batch)
        })
        .collect();
    let started = Instant::now();
    let mut pending = None;
    for batch in batches {
        let parse = {
            let room = room.clone();
            let batch = Arc::clone(&batch);
            tokio::task::spawn_blocking(move || intake::parse_batch(&room, &batch))
        };
        if let Some((previous, parse)) = pending.take() {
            write_unserved(&room, previous, parse, now).await?;
        }
        pending = Some((batch, parse));
    }
    if let Some((previous, parse)) = pending {
        write_unserved(&room, previous, parse, now).await?;
    }
    let took = started.elapsed();
    room.store.close().await;
    Ok((small.len(), took))
}

async fn write_unserved(
    room: &privacy_mailroom::mailroom::Mailroom,
    batch: Arc<Vec<privacy_mailroom::intake::Fetched>>,
    parse: tokio::task::JoinHandle<Vec<privacy_mailroom::intake::Parsed>>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let parsed = parse.await.map_err(|e| e.to_string())?;
    privacy_mailroom::intake::write_batch(room, "INBOX", 1, &batch, &parsed, now)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Prints the report, keeps the database if asked, exits 1 on problems.
fn finish(
    settings: &Settings,
    config: &DaemonConfig,
    report: String,
    problems: &[String],
    processed: usize,
) {
    let _ = std::fs::write(settings.out.join("summary.txt"), &report);
    if std::env::var("BENCH_KEEP_DB").is_ok_and(|v| v == "1") {
        for suffix in ["", "-wal"] {
            let from = PathBuf::from(format!("{}{suffix}", config.database_path().display()));
            if from.exists() {
                let _ = std::fs::copy(&from, settings.out.join(format!("mailroom.db{suffix}")));
            }
        }
    }
    println!("{report}");
    if problems.is_empty() {
        println!(
            "OK: {} cases, INBOX empty, {processed} originals in Processed, outbox delivered and copied to Sent.",
            settings.messages,
        );
        println!("Details: {}", settings.out.display());
    } else {
        for p in problems {
            eprintln!("FAILED: {p}");
        }
        eprintln!("Log: {}", settings.out.join("daemon.log").display());
        std::process::exit(1);
    }
}

/// What the end-of-run checks found.
struct Checked {
    problems: Vec<String>,
    processed: usize,
    sent_folder: usize,
}

/// One case per request, the inbox empty, every original in Processed,
/// nothing in Review, the outbox delivered and copied to Sent.
async fn check_result(
    servers: &MailServers,
    mailbox: &str,
    db: &Db,
    cases: usize,
    originals: usize,
) -> Checked {
    let mut problems = Vec::new();
    if db.cases != cases {
        problems.push(format!(
            "the database holds {} new cases, expected {cases}",
            db.cases
        ));
    }
    let inbox = servers.count(mailbox, "INBOX").await;
    if inbox != 0 {
        problems.push(format!("{inbox} message(s) still in INBOX"));
    }
    let processed = servers.count(mailbox, "Processed").await;
    if processed != originals {
        problems.push(format!(
            "{processed} message(s) in Processed, expected {originals}"
        ));
    }
    let review = servers.count(mailbox, "Review").await;
    if review != 0 {
        problems.push(format!("{review} message(s) in Review, expected none"));
    }
    let sent_folder = servers.count(mailbox, "Sent").await;
    if db.pending + db.failed > 0 {
        problems.push(format!(
            "outbox not delivered: {} pending, {} failed",
            db.pending, db.failed
        ));
    }
    if sent_folder != db.sent {
        problems.push(format!(
            "Sent folder holds {sent_folder} message(s), the outbox sent {}",
            db.sent
        ));
    }
    Checked {
        problems,
        processed,
        sent_folder,
    }
}

fn average_size(messages: &[Vec<u8>]) -> usize {
    messages.iter().map(Vec::len).sum::<usize>() / messages.len().max(1)
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

// ---------------------------------------------------------------- the burst

/// What a generated request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    Know = 0,
    Delete = 1,
    OptOut = 2,
    /// An authorized agent's request without a declaration.
    Agent = 3,
    /// An authorized agent's request with a signed authorization (PDF).
    AgentPdf = 4,
}

const FIRST: [&str; 16] = [
    "Jane", "Raj", "Li", "Sam", "Maria", "Chen", "Aisha", "Tom", "Lucia", "Omar", "Grace", "Ivan",
    "Nora", "Diego", "Priya", "Ken",
];
const LAST: [&str; 16] = [
    "Doe", "Patel", "Wang", "Miller", "Garcia", "Nguyen", "Khan", "Baker", "Rossi", "Haddad",
    "Kim", "Petrov", "Jensen", "Lopez", "Shah", "Sato",
];
const CITIES: [&str; 8] = [
    "Sacramento",
    "Fresno",
    "Oakland",
    "San Diego",
    "Los Angeles",
    "San Jose",
    "Irvine",
    "Eureka",
];

/// A small deterministic generator, so every run sends the same burst.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Request `i` of the burst: 45 % Know, 25 % Delete, 15 % opt-out, 15 %
/// authorized agents (two in three with a PDF authorization).
fn request(i: usize, mailbox: &str, agent_desks: usize) -> (Mix, Vec<u8>) {
    let r = mix64(i as u64);
    let first = FIRST[(r % 16) as usize];
    let last = LAST[((r >> 8) % 16) as usize];
    let city = CITIES[((r >> 16) % 8) as usize];
    let name = format!("{first} {last}");
    let consumer = format!(
        "{}.{}.{i}@consumer.example",
        first.to_lowercase(),
        last.to_lowercase()
    );
    let mix = match i % 20 {
        0..=8 => Mix::Know,
        9..=13 => Mix::Delete,
        14..=16 => Mix::OptOut,
        _ if (i / 20).is_multiple_of(3) => Mix::Agent,
        _ => Mix::AgentPdf,
    };
    let details = format!(
        "Full name: {name}\nEmail: {consumer}\nPostal address: {} Oak Street, {city}, CA 9{:04}\nPhone: (916) 555-{:04}\nCustomer number: C-{:08}\nReference: bench-{i}\n",
        100 + r % 9000,
        (r >> 20) % 10000,
        (r >> 32) % 10000,
        (r >> 24) % 100_000_000,
    );
    let (from, subject, text) = match mix {
        Mix::Know | Mix::Delete | Mix::OptOut => {
            let (subject, ask) = match (mix, r >> 40 & 1) {
                (Mix::Know, 0) => (
                    "California Request to Know",
                    "tell me which personal information you have collected about me, the categories of sources, the purposes, and the third parties you disclosed it to",
                ),
                (Mix::Know, _) => (
                    "Re: [web form] California Request to Know",
                    "send me a copy of the specific pieces of personal information you hold about me",
                ),
                (Mix::Delete, 0) => (
                    "California Request to Delete",
                    "delete all personal information you have collected about me, and tell your service providers to do the same",
                ),
                (Mix::Delete, _) => (
                    "Re: [web] CALIFORNIA REQUEST TO DELETE",
                    "close my account and delete every record about me",
                ),
                (_, 0) => (
                    "Do Not Sell My Personal Information",
                    "stop selling or sharing my personal information",
                ),
                (_, _) => (
                    "Opt-Out of sale and sharing",
                    "opt me out of any sale or sharing of my personal information",
                ),
            };
            let text = format!(
                "Hello,\n\nUnder the California Consumer Privacy Act I ask you to {ask}.\n\n{details}\n\
                 I have had an account with you for several years and have used the mobile app, the web shop and the \
                 loyalty programme, so please search all of them. I also signed up for the newsletter at one point and \
                 may have contacted customer support by phone and chat.\n\n\
                 Please reply to this address. If you need anything else to verify my identity, let me know what.\n\n\
                 Thank you,\n{name}\n\n-- \n{name}\n{city}, California\n\n{FOOTER}"
            );
            (format!("{name} <{consumer}>"), subject, text)
        }
        Mix::Agent | Mix::AgentPdf => {
            let desk = i % agent_desks;
            let (subject, ask) = if r >> 40 & 1 == 0 {
                (
                    "California Request to Delete",
                    "delete the consumer's personal information",
                )
            } else {
                (
                    "California Request to Know",
                    "disclose the personal information you hold about the consumer",
                )
            };
            let attached = if mix == Mix::AgentPdf {
                "The consumer's signed authorization is attached."
            } else {
                "The consumer's signed authorization will follow separately."
            };
            let text = format!(
                "Hello,\n\nWe are an authorized agent acting on behalf of our client {name}, a California resident. \
                 Under the CCPA and its regulations (§7063), please {ask}.\n\n\
                 Consumer name: {name}\nConsumer email: {consumer}\nConsumer city: {city}, CA\nAgent reference: RA-{i:07}\n\n\
                 {attached} Please send all correspondence about this request to this address and copy the consumer.\n\n\
                 Kind regards,\nRequests Desk\nRights Agent Inc.\n\n{FOOTER}"
            );
            (
                format!("Rights Agent Requests <requests-{desk}@{AGENT_DOMAIN}>"),
                subject,
                text,
            )
        }
    };
    // Our MX vouches for the agent's mail (issue 12: known-agent privileges
    // need it), as it would after checking the agent's DKIM signature.
    let authenticated = match mix {
        Mix::Agent | Mix::AgentPdf => agent_authentication_results(),
        _ => String::new(),
    };
    let head = format!(
        "{authenticated}From: {from}\r\nTo: {mailbox}\r\nSubject: {subject}\r\nMessage-ID: <bench-{i}-{}@client.example.test>\r\nDate: {}\r\nMIME-Version: 1.0\r\n",
        std::process::id(),
        Utc::now().to_rfc2822()
    );
    let text = crlf(&text);
    let body = match mix {
        Mix::AgentPdf => {
            let pdf = authorization_pdf(&name, &consumer, i);
            let boundary = format!("=_mixed_{i:x}");
            format!(
                "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
                 --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
                 --{boundary}\r\nContent-Type: application/pdf; name=\"authorization-{i}.pdf\"\r\n\
                 Content-Disposition: attachment; filename=\"authorization-{i}.pdf\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--{boundary}--\r\n",
                base64_lines(&pdf)
            )
        }
        // A third of the consumers write from a client that adds HTML.
        _ if r >> 44 & 3 == 0 => {
            let boundary = format!("=_alt_{i:x}");
            let html: String = text
                .split("\r\n\r\n")
                .map(|p| format!("<p>{}</p>\r\n", p.replace("\r\n", "<br>\r\n")))
                .collect();
            format!(
                "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n\
                 --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
                 --{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
                 <html><body>\r\n{html}</body></html>\r\n--{boundary}--\r\n"
            )
        }
        _ => format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{text}"),
    };
    (mix, format!("{head}{body}").into_bytes())
}

/// The header the bench's pretend MX puts on the agent's mail:
/// `dkim=pass` for the agent's own domain, from a trusted authserv-id.
fn agent_authentication_results() -> String {
    format!(
        "Authentication-Results: {BENCH_AUTHSERV_ID};\r\n\tdkim=pass header.d={AGENT_DOMAIN} header.s=bench header.b=AbCdEf12;\r\n\tspf=pass smtp.mailfrom={AGENT_DOMAIN}\r\n"
    )
}

/// Request `i` as an authorized agent's, with a signed authorization of
/// `mb` MiB (a PDF padded with an embedded scan): the memory test's big
/// message.
fn big_request(i: usize, mailbox: &str, mb: usize) -> (Mix, Vec<u8>) {
    let mut pdf = b"%PDF-1.4\n1 0 obj\n<< /Type /XObject /Subtype /Image /Length ".to_vec();
    let size = mb * 1024 * 1024;
    pdf.extend_from_slice(format!("{size} >>\nstream\n").as_bytes());
    let mut x = i as u64;
    while pdf.len() < size {
        x = mix64(x);
        pdf.extend_from_slice(&x.to_le_bytes());
    }
    pdf.extend_from_slice(b"\nendstream\nendobj\n%%EOF\n");
    let boundary = format!("=_big_{i:x}");
    let text = crlf(&format!(
        "Hello,\n\nWe are an authorized agent acting on behalf of our client Big Scan, a California \
         resident. Under the CCPA, please delete the consumer's personal information.\n\n\
         Consumer name: Big Scan\nConsumer email: big.scan.{i}@consumer.example\nAgent reference: RA-{i:07}\n\n\
         The consumer's signed authorization is attached (a scan).\n\nKind regards,\nRequests Desk\n"
    ));
    let raw = format!(
        "{}From: Rights Agent Requests <requests-big@{AGENT_DOMAIN}>\r\nTo: {mailbox}\r\n\
         Subject: California Request to Delete\r\nMessage-ID: <bench-big-{i}-{}@client.example.test>\r\n\
         Date: {}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n\
         --{boundary}\r\nContent-Type: application/pdf; name=\"authorization-scan.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"authorization-scan.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--{boundary}--\r\n",
        agent_authentication_results(),
        std::process::id(),
        Utc::now().to_rfc2822(),
        base64_lines(&pdf)
    );
    (Mix::AgentPdf, raw.into_bytes())
}

const FOOTER: &str = "This e-mail and any attachments are confidential and may be privileged. If you are not the \
intended recipient, please notify the sender immediately and delete this message; do not copy, forward or \
disclose its contents. E-mail transmission cannot be guaranteed to be secure or error-free, as information \
could be intercepted, corrupted, lost, destroyed, arrive late or incomplete, or contain viruses. The sender \
therefore does not accept liability for any errors or omissions in the contents of this message which arise \
as a result of e-mail transmission. Please consider the environment before printing this e-mail.";

fn crlf(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// A small, valid one-page PDF (about 1.5 KB), different for every request.
fn authorization_pdf(name: &str, consumer: &str, i: usize) -> Vec<u8> {
    let lines = [
        "AUTHORIZATION OF AUTHORIZED AGENT".to_string(),
        format!("I, {name}, authorize Rights Agent Inc. to submit"),
        "requests to know and to delete under the California".to_string(),
        "Consumer Privacy Act on my behalf, and to receive".to_string(),
        "responses to those requests.".to_string(),
        format!("Consumer e-mail: {consumer}"),
        format!("Agent reference: RA-{i:07}"),
        "Signature: /s/ (electronically signed)".to_string(),
    ];
    let mut content = String::from("BT /F1 12 Tf 72 720 Td 16 TL\n");
    for line in &lines {
        content.push_str(&format!(
            "({}) Tj T*\n",
            line.replace('(', "[").replace(')', "]")
        ));
    }
    content.push_str("ET\n");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut pdf = String::from("%PDF-1.4\n");
    let mut offsets = Vec::new();
    for (n, object) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.push_str(&format!("{} 0 obj\n{object}\nendobj\n", n + 1));
    }
    let xref = pdf.len();
    pdf.push_str(&format!(
        "xref\n0 {}\n0000000000 65535 f \n",
        objects.len() + 1
    ));
    for o in offsets {
        pdf.push_str(&format!("{o:010} 00000 n \n"));
    }
    pdf.push_str(&format!(
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    ));
    pdf.into_bytes()
}

/// Base64 in 76-character lines (CRLF), as mail clients write attachments.
fn base64_lines(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::with_capacity(data.len() * 4 / 3 + 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                encoded.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                encoded.push('=');
            }
        }
    }
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    lines.join("\r\n")
}

/// APPENDs every message to `user`'s INBOX over one session; returns how long it took.
async fn bulk_append<'a>(
    servers: &MailServers,
    user: &str,
    messages: impl Iterator<Item = &'a Vec<u8>>,
) -> Duration {
    let started = Instant::now();
    let mut session = servers.imap_session(user).await;
    for (n, raw) in messages.enumerate() {
        session
            .append("INBOX", None, None, raw)
            .await
            .unwrap_or_else(|e| panic!("APPEND of message {} to {user}/INBOX: {e}", n + 1));
    }
    let _ = session.logout().await;
    started.elapsed()
}

// ------------------------------------------------------------ daemon mode

/// `run` with IDLE on an empty inbox; the burst lands while it runs.
async fn daemon_burst(mut b: Bench<'_>, raw_imap: &RawImap) {
    let settings = b.settings;
    let servers = b.servers;
    let db_path = b.config.database_path();
    if settings.landing == Landing::Move {
        eprintln!("APPENDing the burst to a staging folder (not watched by the daemon)...");
        let mut session = servers.imap_session(&b.mailbox).await;
        session
            .create(STAGING)
            .await
            .unwrap_or_else(|e| fail(&format!("CREATE {STAGING}: {e}")));
        let _ = session.logout().await;
        land(
            servers,
            &b.mailbox,
            STAGING,
            &b.burst,
            settings.land_connections,
        )
        .await;
    }

    eprintln!(
        "Starting {} run and waiting for READY=1...",
        settings.bin.display()
    );
    let mut running = start_daemon(settings, &b.config_path);
    let pid = running.daemon.pid();
    let sampler = RssSampler::start(pid);
    let ready_at = Instant::now();
    while !running.ready.load(Ordering::Relaxed) {
        if let Some(status) = running.daemon.try_status() {
            fail(&format!(
                "the daemon exited ({status}) before READY=1\n{}",
                tail(&running.daemon.log(), 20)
            ));
        }
        if ready_at.elapsed() > Duration::from_secs(120) {
            fail(&format!(
                "no READY=1 within 120 s\n{}",
                tail(&running.daemon.log(), 20)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A read-only view of the daemon's database, for the progress checks.
    let watch = Watch::open(&db_path, &b.base)
        .await
        .unwrap_or_else(|e| fail(&e));

    eprintln!(
        "Landing {} requests in the inbox ({}) while the daemon runs...",
        settings.messages,
        landing_label(settings)
    );
    let first_arrival = Utc::now();
    let t0 = Instant::now();
    let landing = match settings.landing {
        Landing::Move => tokio::spawn(land_by_move(servers, b.mailbox.clone())),
        Landing::Append => tokio::spawn(land_owned(
            servers,
            b.mailbox.clone(),
            Arc::new(std::mem::take(&mut b.burst)),
            settings.land_connections,
        )),
    };
    let n = settings.messages;
    let deadline = t0 + settings.timeout;
    let mut status_session = servers.imap_session(&b.mailbox).await;
    let mut landed: Option<Duration> = None;
    let mut landing = Some(landing);
    // Inbox drained and N cases in the database.
    let drained = loop {
        if landing
            .as_ref()
            .is_some_and(tokio::task::JoinHandle::is_finished)
            && let Some(handle) = landing.take()
        {
            landed = Some(
                handle
                    .await
                    .unwrap_or_else(|e| fail(&format!("landing: {e}"))),
            );
        }
        let cases = watch.cases().await;
        if cases >= n && landed.is_some() {
            let inbox = status_session
                .status("INBOX", "(MESSAGES)")
                .await
                .map(|s| s.exists as usize)
                .unwrap_or(usize::MAX);
            if inbox == 0 {
                break t0.elapsed();
            }
        }
        if Instant::now() > deadline {
            fail(&format!(
                "intake did not finish within {:?}: {cases} of {n} cases\n{}",
                settings.timeout,
                tail(&running.daemon.log(), 20)
            ));
        }
        if running.daemon.try_status().is_some() {
            fail(&format!(
                "the daemon exited during the burst\n{}",
                tail(&running.daemon.log(), 20)
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let landed = landed.unwrap_or(drained);
    let drained_at = first_arrival + chrono::Duration::from_std(drained).unwrap_or_default();
    eprintln!(
        "Intake: {n} cases and an empty inbox {:.2} s after the first arrival ({:.0}/s); landing took {:.2} s.",
        drained.as_secs_f64(),
        n as f64 / drained.as_secs_f64(),
        landed.as_secs_f64()
    );
    // Every reply of the burst accepted by Postfix, and copied to Sent.
    // Polled through the outbox's (status, next_attempt_at) index only: a
    // full read of the rows walks every reply's body (the status columns
    // come after `raw`), which at 40 polls a second took as much CPU as the
    // daemon and halved its delivery rate. The figures come from the rows'
    // `sent_at` afterwards, so the poll only has to notice the end.
    let copied = loop {
        let (due, not_copied) = watch.remaining().await;
        if due == 0 && not_copied == 0 {
            break t0.elapsed();
        }
        if Instant::now() > deadline {
            fail(&format!(
                "the outbox was not delivered and copied within {:?}: {} due, {} not in Sent\n{}",
                settings.timeout,
                due,
                if not_copied == usize::MAX {
                    "?".to_string()
                } else {
                    not_copied.to_string()
                },
                tail(&running.daemon.log(), 20)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let burst_outbox = watch.outbox().await;
    let peak_burst = sampler.peak();
    // When the burst's last reply reached its mailbox, before the latency
    // requests and the raw clients deliver theirs.
    let replies_in = last_delivered(servers, &b.mailbox).await;

    // Latency: single requests, one at a time.
    let mut latencies = Vec::new();
    for k in 0..settings.latency_samples {
        // A Know request (index ≡ 0 mod 20) from a fresh consumer.
        let i = 1_000_000 + 20 * k;
        let (_, raw) = request(i, &b.mailbox, settings.agent_desks);
        let consumer = support::header(&raw, "From")
            .map(|f| support::mail::addr_of(&f))
            .unwrap_or_default();
        let sent_from = Utc::now();
        servers.append(&b.mailbox, "INBOX", &raw).await;
        let latency = loop {
            if let Some(at) = watch.acknowledged(&consumer).await {
                break (at - sent_from).num_microseconds().unwrap_or(0) as f64 / 1e6;
            }
            if Instant::now() > deadline {
                fail(&format!(
                    "no acknowledgement for latency request {k}\n{}",
                    tail(&running.daemon.log(), 20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        latencies.push(latency);
    }
    // Its Sent copies, before the daemon stops.
    let settle = Instant::now();
    while watch.outbox().await.not_copied > 0 && settle.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = status_session.logout().await;
    watch.close().await;
    let status = running
        .daemon
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(30));
    let (samples, cpu) = sampler.stop();
    let log = std::fs::read_to_string(b.config.dir().join("daemon.log")).unwrap_or_default();
    let _ = std::fs::write(settings.out.join("daemon.log"), &log);
    write_rss_csv(&settings.out.join("rss.csv"), &samples);

    let mut problems = Vec::new();
    if !status.success() {
        problems.push(format!(
            "the daemon exited {status} after SIGTERM; last log lines:\n{}",
            tail(&log, 15)
        ));
    }
    let db = match Db::read(&db_path, &b.base).await {
        Ok(db) => db,
        Err(e) => {
            problems.push(e);
            Db::default()
        }
    };
    eprintln!(
        "Raw SMTP: {} messages of {} bytes over {} connections to the same Postfix...",
        burst_outbox.sent, burst_outbox.average_size, settings.smtp_connections
    );
    let raw_smtp = raw_smtp_limit(
        servers,
        &b.mailbox,
        burst_outbox.sent,
        &RawContent::Filler(burst_outbox.average_size),
        settings.smtp_connections,
    )
    .await;
    let raw_replies = raw_smtp_replies(
        servers,
        &b.mailbox,
        &db_path,
        &b.base,
        burst_outbox.sent,
        settings.smtp_connections,
        &mut problems,
    )
    .await;
    let expected = n + settings.latency_samples;
    let checked = check_result(servers, &b.mailbox, &db, expected, expected).await;
    problems.extend(checked.problems);

    let figures = DaemonFigures {
        drained,
        landed,
        copied,
        first_arrival,
        drained_at,
        outbox: burst_outbox,
        peak_burst,
        peak_all: samples.iter().map(|(_, k)| *k).max(),
        latencies,
    };
    let mut report = daemon_report(&b, &figures, &db, checked.sent_folder);
    let delivery_rate = figures
        .outbox
        .delivery_secs()
        .map(|s| figures.outbox.sent as f64 / s);
    let through = figures
        .outbox
        .first_sent
        .zip(figures.outbox.last_sent)
        .map(|(first, last)| secs_through(first, last, replies_in))
        .filter(|s| *s > 0.0);
    let intake_rate = n as f64 / drained.as_secs_f64();
    report.push_str(&limits_report(
        settings,
        raw_imap,
        &raw_smtp,
        raw_replies.as_ref(),
        Some(intake_rate),
        delivery_rate,
        through,
    ));
    intake_cpu_report(
        &mut report,
        &cpu,
        (first_arrival, drained_at),
        n,
        Some(intake_rate),
    );
    finish(settings, &b.config, report, &problems, checked.processed);
}

/// The daemon under test and whether it said `READY=1`.
struct RunningDaemon {
    daemon: daemon::Daemon,
    ready: Arc<AtomicBool>,
}

/// The environment both modes run the daemon in: the config from
/// `--config` only, plain logs at `RUST_LOG` (info by default), no stdin,
/// and the malloc setting of the packaged systemd unit.
fn daemon_environment(cmd: &mut Command) {
    cmd.env_remove("PRIVACY_MAILROOM_CONFIG")
        .env("NO_COLOR", "1")
        .env("MALLOC_ARENA_MAX", "2")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(std::process::Stdio::null());
}

/// Starts `BIN --config X run` with a notify socket; a thread drains the
/// socket for the whole run (READY, STATUS lines) and sets `ready`.
fn start_daemon(settings: &Settings, config: &Path) -> RunningDaemon {
    let socket_path = config
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path)
        .unwrap_or_else(|e| fail(&format!("bind {}: {e}", socket_path.display())));
    let ready = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ready);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                flag.store(true, Ordering::Relaxed);
            }
        }
    });
    let mut cmd = Command::new(&settings.bin);
    cmd.arg("--config")
        .arg(config)
        .arg("run")
        .env("NOTIFY_SOCKET", &socket_path);
    daemon_environment(&mut cmd);
    RunningDaemon {
        daemon: daemon::spawn_with(cmd, config),
        ready,
    }
}

/// (when, VmRSS in KiB).
type Samples = Vec<(DateTime<Utc>, u64)>;

/// VmRSS of one process every 50 ms, on a thread of its own.
/// The daemon's RSS and CPU time, and the machine's, every 50 ms while it
/// runs (daemon mode; `run_daemon` samples `--once` itself).
struct RssSampler {
    samples: Arc<std::sync::Mutex<(Samples, Vec<CpuSample>)>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let samples = Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new())));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&samples), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    let cpu = CpuSample::read(pid);
                    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                    s.0.push((Utc::now(), kib));
                    s.1.extend(cpu);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler {
            samples,
            stop,
            thread,
        }
    }

    fn peak(&self) -> Option<u64> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.0.iter().map(|(_, k)| *k).max()
    }

    /// The RSS samples and the CPU samples.
    fn stop(self) -> (Samples, Vec<CpuSample>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The folder the burst waits in before it lands (`BENCH_LANDING=move`).
const STAGING: &str = "Bench-Staging";

fn landing_label(settings: &Settings) -> String {
    match settings.landing {
        Landing::Move => format!("one UID MOVE from {STAGING}"),
        Landing::Append => format!("APPEND over {} sessions", settings.land_connections),
    }
}

/// Moves everything in the staging folder to the inbox with one `UID MOVE`.
async fn land_by_move(servers: &'static MailServers, user: String) -> Duration {
    let started = Instant::now();
    let mut session = servers.imap_session(&user).await;
    session
        .select(STAGING)
        .await
        .unwrap_or_else(|e| fail(&format!("SELECT {STAGING}: {e}")));
    session
        .uid_mv("1:*", "INBOX")
        .await
        .unwrap_or_else(|e| fail(&format!("UID MOVE to INBOX: {e}")));
    let took = started.elapsed();
    let _ = session.logout().await;
    took
}

/// APPENDs `messages` to `user`'s `folder` over `connections` sessions at
/// once (message k over session k mod connections); returns how long it took.
async fn land(
    servers: &MailServers,
    user: &str,
    folder: &str,
    messages: &[Vec<u8>],
    connections: usize,
) -> Duration {
    let started = Instant::now();
    let lanes = (0..connections.min(messages.len()).max(1)).map(|lane| async move {
        let mut session = servers.imap_session(user).await;
        for (n, raw) in messages.iter().enumerate().skip(lane).step_by(connections) {
            session
                .append(folder, None, None, raw)
                .await
                .unwrap_or_else(|e| panic!("APPEND of message {} to {user}/{folder}: {e}", n + 1));
        }
        let _ = session.logout().await;
    });
    futures::future::join_all(lanes).await;
    started.elapsed()
}

async fn land_owned(
    servers: &'static MailServers,
    user: String,
    messages: Arc<Vec<Vec<u8>>>,
    connections: usize,
) -> Duration {
    land(servers, &user, "INBOX", &messages, connections).await
}

/// The daemon-mode figures.
struct DaemonFigures {
    drained: Duration,
    landed: Duration,
    copied: Duration,
    first_arrival: DateTime<Utc>,
    drained_at: DateTime<Utc>,
    outbox: OutboxProgress,
    peak_burst: Option<u64>,
    peak_all: Option<u64>,
    latencies: Vec<f64>,
}

fn daemon_report(b: &Bench<'_>, f: &DaemonFigures, db: &Db, sent_folder: usize) -> String {
    let s = b.settings;
    let n = s.messages;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nprivacy-mailroom run (IDLE): a burst of {n} requests ({}) landing while it runs; {}",
        mib(b.bytes as u64),
        s.bin.display()
    );
    let mut extras = Vec::new();
    if s.seed_cases > 0 {
        extras.push(format!(
            "{} closed cases in the database before",
            s.seed_cases
        ));
    }
    if s.big_attachment_mb > 0 {
        extras.push(format!(
            "one request with a {} MiB attachment",
            s.big_attachment_mb
        ));
    }
    extras.push(format!("smtp.connections = {}", s.smtp_connections));
    let _ = writeln!(out, "({})", extras.join("; "));
    let _ = writeln!(out, "{:-<78}", "");
    let secs_rate = |d: Duration, count: usize| {
        format!(
            "{:.2} s, {:.0}/s",
            d.as_secs_f64(),
            count as f64 / d.as_secs_f64().max(1e-6)
        )
    };
    let _ = writeln!(
        out,
        "{:<44} {}",
        "intake (first arrival → drained, N cases)",
        secs_rate(f.drained, n)
    );
    let _ = writeln!(
        out,
        "{:<44} {}{}",
        format!("  landing ({})", landing_label(s)),
        secs_rate(f.landed, n),
        if f.landed.as_secs_f64() > 0.9 * f.drained.as_secs_f64() {
            "  (intake kept pace with the arrivals)"
        } else {
            ""
        }
    );
    let o = &f.outbox;
    let in_window = o.accepted_by(f.drained_at);
    let window = secs(f.first_arrival, f.drained_at);
    let _ = writeln!(
        out,
        "{:<44} {} of {} in the intake window ({:.0}/s)",
        "replies accepted by Postfix",
        in_window,
        o.sent,
        in_window as f64 / window.max(1e-6)
    );
    if let (Some(first), Some(last)) = (o.first_sent, o.last_sent) {
        let _ = writeln!(
            out,
            "{:<44} {:.2} s after the first arrival; first to last {:.2} s, {:.0}/s",
            "  all replies accepted",
            secs(f.first_arrival, last),
            secs(first, last),
            o.sent as f64 / secs(first, last).max(1e-6)
        );
    }
    let _ = writeln!(
        out,
        "{:<44} {:.2} s after the first arrival",
        "  all copied to Sent",
        f.copied.as_secs_f64()
    );
    let rss = |k: Option<u64>| k.map_or("-".to_string(), |k| mib(k * 1024));
    let _ = writeln!(
        out,
        "{:<44} {} (burst), {} (whole run)",
        "peak RSS",
        rss(f.peak_burst),
        rss(f.peak_all)
    );
    let mut sorted = f.latencies.clone();
    sorted.sort_by(f64::total_cmp);
    if !sorted.is_empty() {
        let median = if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
        };
        let _ = writeln!(
            out,
            "{:<44} median {median:.3} s (min {:.3}, max {:.3}; {} requests one at a time)",
            "arrival → acknowledgement accepted",
            sorted[0],
            sorted[sorted.len() - 1],
            sorted.len()
        );
    }
    let _ = writeln!(out, "{:-<78}", "");
    db.summarize(&mut out, sent_folder);
    out
}

// ------------------------------------------------------------ raw limits

/// The mail server's own pace for the burst, on another mailbox.
struct RawImap {
    messages: usize,
    append: Duration,
    fetch: Duration,
    moved: Duration,
}

impl RawImap {
    fn rate(&self, d: Duration) -> f64 {
        self.messages as f64 / d.as_secs_f64().max(1e-6)
    }
}

/// APPENDs the burst to a fresh user's INBOX, then times `UID FETCH` of the
/// whole messages and `UID MOVE` to Processed in batches of the daemon's
/// intake batch, one session, as the daemon's mailbox task does.
async fn raw_imap(servers: &MailServers, burst: &[Vec<u8>], connections: usize) -> RawImap {
    let user = servers.unique_user("raw");
    let append = land(servers, &user, "INBOX", burst, connections).await;
    let mut session = servers.imap_session(&user).await;
    session
        .create("Processed")
        .await
        .unwrap_or_else(|e| fail(&format!("CREATE Processed: {e}")));
    session
        .select("INBOX")
        .await
        .unwrap_or_else(|e| fail(&format!("SELECT INBOX: {e}")));
    let mut uids: Vec<u32> = session
        .uid_search("ALL")
        .await
        .unwrap_or_else(|e| fail(&format!("UID SEARCH: {e}")))
        .into_iter()
        .collect();
    uids.sort_unstable();
    let ranges: Vec<String> = uids
        .chunks(INTAKE_BATCH)
        .map(|c| format!("{}:{}", c[0], c[c.len() - 1]))
        .collect();
    let started = Instant::now();
    let mut fetched = 0usize;
    for range in &ranges {
        let messages: Vec<_> = session
            .uid_fetch(range, "(UID RFC822.SIZE BODY.PEEK[])")
            .await
            .unwrap_or_else(|e| fail(&format!("UID FETCH: {e}")))
            .try_collect()
            .await
            .unwrap_or_else(|e| fail(&format!("UID FETCH: {e}")));
        fetched += messages.iter().filter(|m| m.body().is_some()).count();
    }
    let fetch = started.elapsed();
    if fetched != burst.len() {
        fail(&format!(
            "raw FETCH got {fetched} of {} messages",
            burst.len()
        ));
    }
    let started = Instant::now();
    for range in &ranges {
        session
            .uid_mv(range, "Processed")
            .await
            .unwrap_or_else(|e| fail(&format!("UID MOVE: {e}")));
    }
    let moved = started.elapsed();
    let _ = session.logout().await;
    RawImap {
        messages: burst.len(),
        append,
        fetch,
        moved,
    }
}

/// How fast plain SMTP clients get `count` messages of `size` bytes accepted.
struct RawSmtp {
    count: usize,
    size: usize,
    connections: usize,
    /// Until Postfix accepted the last message.
    took: Duration,
    /// Until the last message was in its mailbox (see [`last_delivered`]).
    through: Duration,
}

/// What the raw SMTP clients send.
#[derive(Clone)]
enum RawContent {
    /// Plain text of the replies' mean size.
    Filler(usize),
    /// The daemon's own replies of the run, byte for byte (from its outbox),
    /// to fresh recipients: what the MTA and Dovecot's LMTP cost for exactly
    /// these messages, as raw FETCH+MOVE uses the burst's own messages.
    Replies(Arc<Vec<Vec<u8>>>),
}

impl RawContent {
    fn message(&self, from: &str, to: &str, k: usize) -> Vec<u8> {
        match self {
            RawContent::Filler(size) => filler_message(from, to, k, *size),
            RawContent::Replies(all) => match all.get(k % all.len().max(1)) {
                Some(raw) => raw.clone(),
                None => filler_message(from, to, k, 4096),
            },
        }
    }

    /// Each content to recipients of its own, so that either run creates
    /// a new mailbox per mail, as the daemon's replies to new consumers do.
    fn recipient_prefix(&self) -> &'static str {
        match self {
            RawContent::Filler(_) => "rawsink",
            RawContent::Replies(_) => "rawreply",
        }
    }

    fn size(&self) -> usize {
        match self {
            RawContent::Filler(size) => *size,
            RawContent::Replies(all) => all.iter().map(Vec::len).sum::<usize>() / all.len().max(1),
        }
    }
}

/// The daemon's database, read-only, beside the running daemon.
async fn open_read_only(path: &Path) -> Result<sqlx::SqlitePool, String> {
    let url = format!("sqlite://{}?mode=ro", path.display());
    sqlx::SqlitePool::connect(&url)
        .await
        .map_err(|e| format!("open {}: {e}", path.display()))
}

/// The first `count` mails the daemon sent after `base`, for
/// [`RawContent::Replies`].
async fn sent_replies(path: &Path, base: &Base, count: usize) -> Result<Vec<Vec<u8>>, String> {
    let pool = open_read_only(path).await?;
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT raw FROM outbox WHERE id > ? AND status = 'sent' ORDER BY id LIMIT ?",
    )
    .bind(base.outbox_id)
    .bind(count as i64)
    .fetch_all(&pool)
    .await
    .map_err(|e| format!("read the sent replies from {}: {e}", path.display()))?;
    pool.close().await;
    Ok(rows)
}

/// Raw SMTP with the daemon's own replies (`None` when there are none, or
/// with the problem that kept them from being read).
async fn raw_smtp_replies(
    servers: &'static MailServers,
    from: &str,
    database: &Path,
    base: &Base,
    count: usize,
    connections: usize,
    problems: &mut Vec<String>,
) -> Option<RawSmtp> {
    match sent_replies(database, base, count).await {
        Ok(replies) if !replies.is_empty() => {
            eprintln!(
                "Raw SMTP again with the daemon's own {} replies, byte for byte...",
                replies.len()
            );
            let content = RawContent::Replies(Arc::new(replies));
            Some(raw_smtp_limit(servers, from, count, &content, connections).await)
        }
        Ok(_) => None,
        Err(e) => {
            problems.push(e);
            None
        }
    }
}

impl RawSmtp {
    fn rate(&self) -> f64 {
        self.count as f64 / self.took.as_secs_f64().max(1e-6)
    }

    fn through_rate(&self) -> f64 {
        self.count as f64 / self.through.as_secs_f64().max(1e-6)
    }
}

/// Pushes `count` messages of `content` through the test Postfix
/// over `connections` connections at once, each reconnecting after 50
/// messages (`max_messages_per_connection`'s default), with `TCP_NODELAY`
/// and STARTTLS like the daemon's sender. Waits for Postfix's queue to be
/// empty before and after, so neither phase pays for the other's delivery.
async fn raw_smtp_limit(
    servers: &'static MailServers,
    from: &str,
    count: usize,
    content: &RawContent,
    connections: usize,
) -> RawSmtp {
    servers.wait_mail_delivered(Duration::from_secs(600)).await;
    let count = count.max(1);
    let started = Instant::now();
    let started_at = Utc::now();
    let lanes = (0..connections.min(count)).map(|lane| {
        let from = from.to_string();
        let content = content.clone();
        tokio::spawn(async move {
            let mine: Vec<usize> = (lane..count).step_by(connections).collect();
            for chunk in mine.chunks(50) {
                let mut conn = smtp_connect(servers).await;
                for &k in chunk {
                    let to = format!(
                        "{}-{}-{k}@consumer.example",
                        content.recipient_prefix(),
                        std::process::id()
                    );
                    let raw = content.message(&from, &to, k);
                    let envelope = lettre::address::Envelope::new(
                        Some(
                            from.parse()
                                .unwrap_or_else(|e| fail(&format!("{from}: {e}"))),
                        ),
                        vec![to.parse().unwrap_or_else(|e| fail(&format!("{to}: {e}")))],
                    )
                    .unwrap_or_else(|e| fail(&format!("envelope: {e}")));
                    conn.send(&envelope, &raw)
                        .await
                        .unwrap_or_else(|e| fail(&format!("raw SMTP send: {e}")));
                }
                let _ = conn.quit().await;
            }
        })
    });
    for lane in futures::future::join_all(lanes).await {
        lane.unwrap_or_else(|e| fail(&format!("raw SMTP lane: {e}")));
    }
    let took = started.elapsed();
    let accepted_at = started_at + chrono::Duration::from_std(took).unwrap_or_default();
    let through = Duration::from_secs_f64(secs_through(
        started_at,
        accepted_at,
        last_delivered(servers, from).await,
    ));
    RawSmtp {
        count,
        size: content.size(),
        connections,
        took,
        through,
    }
}

async fn smtp_connect(
    servers: &MailServers,
) -> lettre::transport::smtp::client::AsyncSmtpConnection {
    use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
    use lettre::transport::smtp::extension::ClientId;
    let ca = std::fs::read(servers.ca_pem_path()).unwrap_or_else(|e| fail(&format!("CA: {e}")));
    let tls = TlsParameters::builder("localhost".to_string())
        .add_root_certificate(
            Certificate::from_pem(&ca).unwrap_or_else(|e| fail(&format!("CA: {e}"))),
        )
        .build_rustls()
        .unwrap_or_else(|e| fail(&format!("TLS: {e}")));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", servers.smtp_port()))
        .await
        .unwrap_or_else(|e| fail(&format!("connect to Postfix: {e}")));
    let _ = tcp.set_nodelay(true);
    let hello = ClientId::default();
    let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
        .await
        .unwrap_or_else(|e| fail(&format!("SMTP greeting: {e}")));
    conn.starttls(tls, &hello)
        .await
        .unwrap_or_else(|e| fail(&format!("STARTTLS: {e}")));
    conn
}

/// A plain-text message of about `size` bytes.
fn filler_message(from: &str, to: &str, k: usize, size: usize) -> Vec<u8> {
    let head = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: raw SMTP limit {k}\r\nMessage-ID: <raw-{k}-{}@bench.example.test>\r\nDate: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        std::process::id(),
        Utc::now().to_rfc2822()
    );
    let mut raw = head.into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while raw.len() + line.len() <= size.max(200) {
        raw.extend_from_slice(line);
    }
    raw
}

/// The daemon's figures beside the limits, with the ratio.
/// One row of the limits table: the daemon's rate, the limit and the ratio.
fn ratio_line(out: &mut String, name: &str, daemon: Option<f64>, limit: f64) {
    let d = daemon.map_or("-".to_string(), |d| format!("{d:.0}"));
    let ratio = daemon.map_or("-".to_string(), |d| format!("{:.0} %", 100.0 * d / limit));
    let _ = writeln!(out, "{name:<44} {d:>10} {limit:>12.0} {ratio:>8}");
}

fn limits_report(
    settings: &Settings,
    imap: &RawImap,
    smtp: &RawSmtp,
    replies: Option<&RawSmtp>,
    intake_rate: Option<f64>,
    delivery_rate: Option<f64>,
    through: Option<f64>,
) -> String {
    // The daemon's replies, timed until the last was in its mailbox.
    let through_rate = through.map(|s| smtp.count as f64 / s.max(1e-6));
    let mut out = String::new();
    let _ = writeln!(out, "Against the servers' own limits (same run):");
    let _ = writeln!(
        out,
        "{:<44} {:>10} {:>12} {:>8}",
        "", "daemon/s", "limit/s", "ratio"
    );
    ratio_line(
        &mut out,
        &format!("intake vs raw FETCH+MOVE (batches of {INTAKE_BATCH})"),
        intake_rate,
        imap.rate(imap.fetch + imap.moved),
    );
    let _ = writeln!(
        out,
        "  raw FETCH {:.0}/s ({:.2} s), raw UID MOVE {:.0}/s ({:.2} s), APPEND over {} sessions {:.0}/s",
        imap.rate(imap.fetch),
        imap.fetch.as_secs_f64(),
        imap.rate(imap.moved),
        imap.moved.as_secs_f64(),
        settings.land_connections,
        imap.rate(imap.append),
    );
    ratio_line(
        &mut out,
        &format!("replies vs raw SMTP ({} connections)", smtp.connections),
        delivery_rate,
        smtp.rate(),
    );
    let _ = writeln!(
        out,
        "  raw SMTP: {} messages of {} bytes in {:.2} s",
        smtp.count,
        smtp.size,
        smtp.took.as_secs_f64()
    );
    if let Some(replies) = replies {
        ratio_line(
            &mut out,
            &format!(
                "replies vs raw SMTP, the same replies ({})",
                replies.connections
            ),
            delivery_rate,
            replies.rate(),
        );
        let _ = writeln!(
            out,
            "  the daemon's {} replies, byte for byte, to fresh recipients, in {:.2} s",
            replies.count,
            replies.took.as_secs_f64()
        );
    }
    // The same, timed until the last mail was in its mailbox (see
    // `last_delivered`): what gets through the MTA on these shared cores.
    ratio_line(
        &mut out,
        "replies vs raw SMTP, into the mailboxes",
        through_rate,
        smtp.through_rate(),
    );
    if let Some(limit) = replies.map(RawSmtp::through_rate) {
        ratio_line(
            &mut out,
            "replies vs the same, into the mailboxes",
            through_rate,
            limit,
        );
    }
    let took =
        |t: Option<Duration>| t.map_or("-".to_string(), |t| format!("{:.2} s", t.as_secs_f64()));
    let _ = writeln!(
        out,
        "  until the last was in its mailbox: the daemon's {} replies {}, raw SMTP {}, the same replies {}",
        smtp.count,
        took(through.map(Duration::from_secs_f64)),
        took(Some(smtp.through)),
        took(replies.map(|r| r.through)),
    );
    out
}

// ------------------------------------------------------------ the database

/// What the database held before the run (the seed): new rows are above.
#[derive(Debug, Default, Clone, Copy)]
struct Base {
    cases: usize,
    outbox_id: i64,
}

/// A read-only view of the daemon's database while it runs.
struct Watch {
    pool: sqlx::SqlitePool,
    base: Base,
}

/// The burst's outbox so far.
#[derive(Debug, Default, Clone)]
struct OutboxProgress {
    sent: usize,
    /// Pending rows due now (held replies wait for later and are not counted).
    due_pending: usize,
    not_copied: usize,
    average_size: usize,
    first_sent: Option<DateTime<Utc>>,
    last_sent: Option<DateTime<Utc>>,
    /// Every row's `sent_at`, sorted.
    sent_at: Vec<DateTime<Utc>>,
}

impl OutboxProgress {
    fn accepted_by(&self, at: DateTime<Utc>) -> usize {
        self.sent_at.partition_point(|t| *t <= at)
    }

    fn delivery_secs(&self) -> Option<f64> {
        Some(secs(self.first_sent?, self.last_sent?)).filter(|s| *s > 0.0)
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl Watch {
    async fn open(path: &Path, base: &Base) -> Result<Watch, String> {
        let url = format!("sqlite://{}?mode=ro", path.display());
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        Ok(Watch { pool, base: *base })
    }

    async fn cases(&self) -> usize {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM cases")
            .fetch_one(&self.pool)
            .await
            .map_or(0, |n| (n as usize).saturating_sub(self.base.cases))
    }

    /// Replies due and not yet sent, and (only once none is due) sent ones
    /// not yet in Sent: cheap enough to poll while the daemon works.
    async fn remaining(&self) -> (usize, usize) {
        let next: Vec<String> = sqlx::query_scalar(
            "SELECT next_attempt_at FROM outbox INDEXED BY outbox_pending WHERE status = 'pending' AND id > ?",
        )
        .bind(self.base.outbox_id)
        .fetch_all(&self.pool)
        .await
        .unwrap_or_else(|e| fail(&format!("reading the outbox's pending rows: {e}")));
        let now = Utc::now();
        let due = next
            .iter()
            .filter(|n| parse_time(n).is_none_or(|t| t <= now))
            .count();
        if due > 0 {
            return (due, usize::MAX);
        }
        let not_copied = sqlx::query_scalar::<_, i64>(NOT_COPIED)
            .bind(self.base.outbox_id)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| fail(&format!("counting the replies not in Sent: {e}")));
        (0, usize::try_from(not_copied).unwrap_or(usize::MAX))
    }

    async fn outbox(&self) -> OutboxProgress {
        type Row = (String, Option<String>, Option<String>, String, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT status, sent_at, appended_at, next_attempt_at, LENGTH(raw) FROM outbox WHERE id > ?",
        )
        .bind(self.base.outbox_id)
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        let now = Utc::now();
        let mut p = OutboxProgress::default();
        let mut bytes = 0i64;
        for (status, sent_at, appended_at, next, size) in rows {
            match status.as_str() {
                "sent" => {
                    p.sent += 1;
                    bytes += size;
                    if appended_at.is_none() {
                        p.not_copied += 1;
                    }
                    if let Some(at) = sent_at.as_deref().and_then(parse_time) {
                        p.sent_at.push(at);
                    }
                }
                "pending" if parse_time(&next).is_none_or(|t| t <= now) => p.due_pending += 1,
                _ => {}
            }
        }
        p.sent_at.sort_unstable();
        p.first_sent = p.sent_at.first().copied();
        p.last_sent = p.sent_at.last().copied();
        p.average_size = (bytes / (p.sent.max(1) as i64)) as usize;
        p
    }

    /// When the reply to `consumer`'s request was accepted by the MTA.
    async fn acknowledged(&self, consumer: &str) -> Option<DateTime<Utc>> {
        let at: Option<String> = sqlx::query_scalar(
            "SELECT sent_at FROM outbox WHERE rate_key = ? AND status = 'sent' AND id > ? LIMIT 1",
        )
        .bind(consumer.to_lowercase())
        .bind(self.base.outbox_id)
        .fetch_optional(&self.pool)
        .await
        .ok()
        .flatten();
        at.as_deref().and_then(parse_time)
    }

    async fn close(self) {
        self.pool.close().await;
    }
}

/// Writes `count` closed cases, each with its request and acknowledgement
/// (messages rows), four events and a sent, copied outbox row, in one
/// transaction of `INSERT … SELECT` over a counter, so 100,000 take seconds.
/// They were received 45 to 645 days ago and closed 20 days later, and their
/// verification data is already purged, so neither purge has work to do.
async fn seed_cases(bin: &Path, config: &Path, db: &Path, count: usize) -> Result<Base, String> {
    // The daemon's own binary creates the database and its schema.
    cases_list(bin, config)?;
    let url = format!("sqlite://{}", db.display());
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .map_err(|e| format!("open {}: {e}", db.display()))?;
    let q = |what: &str| {
        let what = what.to_string();
        move |e: sqlx::Error| format!("seed {what}: {e}")
    };
    let mut tx = pool.begin().await.map_err(q("begin"))?;
    let now = Utc::now();
    let body = "Hello,\r\n\r\nUnder the California Consumer Privacy Act I ask you to tell me which personal \
information you have collected about me, the categories of sources, the purposes, and the third parties \
you disclosed it to.\r\n\r\nFull name: Seed Consumer\r\nPostal address: 100 Oak Street, Fresno, CA 93701\r\n\r\n\
Thank you.\r\n";
    sqlx::query(
        "CREATE TEMP TABLE seed AS
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         SELECT i,
                strftime('%Y-%m-%dT%H:%M:%S+00:00', ?2, '-' || (45 + i % 600) || ' days', '-' || (i % 86400) || ' seconds') AS received,
                strftime('%Y-%m-%dT%H:%M:%S+00:00', ?2, '-' || (25 + i % 600) || ' days', '-' || (i % 86400) || ' seconds') AS closed,
                CASE i % 20 WHEN 0 THEN 'opt_out' WHEN 1 THEN 'opt_out' WHEN 2 THEN 'opt_out'
                     ELSE CASE i % 3 WHEN 0 THEN 'delete' ELSE 'know' END END AS kind,
                'seed.consumer.' || i || '@consumer.example' AS requester
         FROM n",
    )
    .bind(count as i64)
    .bind(now.format("%Y-%m-%dT%H:%M:%S").to_string())
    .execute(&mut *tx)
    .await
    .map_err(q("counter"))?;
    let prefix = "CCPA";
    sqlx::query(
        "INSERT INTO cases (id, kind, state, requester, consumer, consumer_name, subject, received_at,
             acknowledged_at, ack_due_at, due_at, verified_at, closed_at, verification_code,
             resolution, thread_root, manner, verification_purged_at, created_at, updated_at)
         SELECT ?1 || '-' || substr(received, 1, 4) || '-' || printf('%05d', i), kind,
                CASE WHEN i % 10 = 9 THEN 'denied' WHEN i % 10 = 8 THEN 'withdrawn' ELSE 'completed' END,
                requester, requester, 'Seed Consumer ' || i, 'California Request to Know', received,
                received, strftime('%Y-%m-%dT%H:%M:%S+00:00', received, '+10 days'),
                strftime('%Y-%m-%dT%H:%M:%S+00:00', received, '+45 days'), received, closed, '',
                CASE WHEN i % 10 = 9 THEN 'denied' WHEN i % 10 = 8 THEN 'withdrawn' ELSE 'complied' END,
                '<seed-' || i || '@client.example.test>', 'email',
                strftime('%Y-%m-%dT%H:%M:%S+00:00', closed, '+30 days'), received, closed
         FROM seed",
    )
    .bind(prefix)
    .execute(&mut *tx)
    .await
    .map_err(q("cases"))?;
    sqlx::query(
        "INSERT INTO messages (case_id, direction, message_id, subject, from_addr, at, template, sha256,
             size, raw, body_text, disposition, target_mailbox, filed_at)
         SELECT ?1 || '-' || substr(received, 1, 4) || '-' || printf('%05d', i), 'in',
                '<seed-' || i || '@client.example.test>', 'California Request to Know', requester, received,
                NULL, printf('%064x', i), length(?2) + 200,
                CAST('From: ' || requester || char(13, 10) || 'Subject: California Request to Know' || char(13, 10) ||
                     'Message-ID: <seed-' || i || '@client.example.test>' || char(13, 10, 13, 10) || ?2 AS BLOB),
                ?2, 'case', 'Processed', received
         FROM seed
         UNION ALL
         SELECT ?1 || '-' || substr(received, 1, 4) || '-' || printf('%05d', i), 'out',
                '<seed-ack-' || i || '@privacy.example.test>', 'Re: California Request to Know', NULL, received,
                'acknowledgement', printf('%064x', i + 1000000000), 1500, NULL, NULL, 'case', NULL, NULL
         FROM seed",
    )
    .bind(prefix)
    .bind(body)
    .execute(&mut *tx)
    .await
    .map_err(q("messages"))?;
    sqlx::query(
        "INSERT INTO events (case_id, at, actor, action, detail)
         SELECT ?1 || '-' || substr(received, 1, 4) || '-' || printf('%05d', i),
                CASE WHEN e.k = 3 THEN closed ELSE received END, e.actor, e.action, e.detail
         FROM seed CROSS JOIN (
                SELECT 0 AS k, 'daemon' AS actor, 'opened' AS action, 'request by e-mail' AS detail
                UNION ALL SELECT 1, 'daemon', 'acknowledgement_sent', 'acknowledgement'
                UNION ALL SELECT 2, 'alice@example.test', 'verify', 'identity verified'
                UNION ALL SELECT 3, 'alice@example.test', 'complete', 'closed') AS e
         ORDER BY i, e.k",
    )
    .bind(prefix)
    .execute(&mut *tx)
    .await
    .map_err(q("events"))?;
    sqlx::query(
        "INSERT INTO outbox (case_id, message_id, audience, template, envelope_from, recipients, rate_key,
             subject, raw, status, attempts, next_attempt_at, created_at, sent_at, appended_at)
         SELECT ?1 || '-' || substr(received, 1, 4) || '-' || printf('%05d', i),
                '<seed-ack-' || i || '@privacy.example.test>', 'consumer', 'acknowledgement',
                'privacy@example.test', '[\"' || requester || '\"]', requester,
                'Re: California Request to Know', CAST(?2 AS BLOB), 'sent', 1, received, received,
                received, received
         FROM seed",
    )
    .bind(prefix)
    .bind(body)
    .execute(&mut *tx)
    .await
    .map_err(q("outbox"))?;
    // New cases continue the sequences above the seeded numbers.
    sqlx::query(
        "INSERT INTO case_seq (prefix, year, last)
         SELECT ?1, CAST(substr(received, 1, 4) AS INTEGER), MAX(i) FROM seed GROUP BY 2",
    )
    .bind(prefix)
    .execute(&mut *tx)
    .await
    .map_err(q("case_seq"))?;
    sqlx::query("DROP TABLE seed")
        .execute(&mut *tx)
        .await
        .map_err(q("drop"))?;
    tx.commit().await.map_err(q("commit"))?;
    let cases: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cases")
        .fetch_one(&pool)
        .await
        .map_err(q("count"))?;
    let outbox_id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM outbox")
        .fetch_one(&pool)
        .await
        .map_err(q("outbox id"))?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .map_err(q("checkpoint"))?;
    pool.close().await;
    Ok(Base {
        cases: cases as usize,
        outbox_id,
    })
}

// ----------------------------------------------------------- the measured run

/// How the measured process ended, and its resident memory over time.
struct Run {
    success: bool,
    status: String,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
    /// (when, VmRSS in KiB) of the `privacy-mailroom` process, every 50 ms.
    samples: Vec<(DateTime<Utc>, u64)>,
    /// CPU time so far, every 50 ms.
    cpu: Vec<CpuSample>,
}

/// The run's replies not yet copied to Sent (outbox rows after the given
/// ID). `sent_at IS NOT NULL` lets SQLite search the copier's index
/// (migration 0107) instead of reading every sent reply's body: the bench
/// polls it, and its reads would count against the daemon.
const NOT_COPIED: &str = "SELECT COUNT(*) FROM outbox WHERE id > ? AND status = 'sent'
     AND appended_at IS NULL AND sent_at IS NOT NULL";

/// CPU time used so far, in seconds: the daemon's own, the whole
/// machine's (every process and the kernel, on every core), and what the
/// hypervisor gave to other machines while this one had work (steal).
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at: DateTime<Utc>,
    daemon: f64,
    machine: f64,
    steal: f64,
}

impl CpuSample {
    fn read(pid: u32) -> Option<CpuSample> {
        let tick = ticks_per_second();
        // `pid (comm) state ppid …`: utime and stime are the 12th and 13th
        // fields after the name.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 1..];
        let mut fields = after.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        // `cpu user nice system idle iowait irq softirq steal …`: all but
        // idle, iowait and steal is busy. Steal is time a core was taken
        // away: on a shared host it inflates every figure of the run.
        let all = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = all
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        let steal = *ticks.get(7)?;
        let busy = ticks.iter().sum::<u64>() - ticks.get(3)? - ticks.get(4)? - steal;
        Some(CpuSample {
            at: Utc::now(),
            daemon: (utime + stime) as f64 / tick,
            machine: busy as f64 / tick,
            steal: steal as f64 / tick,
        })
    }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Steal over this share of the cores during intake is printed with the
/// run's figures: a host busy with other machines slows every phase.
const STEAL_NOTED_PERCENT: f64 = 2.0;

/// What intake cost in CPU over `window`, per request, and the rate the
/// machine's cores would allow at that cost if nothing else ran and none
/// idled. It puts the goal in CPU terms: a rate above that needs a cheaper
/// request, not more overlap. `--once`'s window runs from the daemon's
/// start to the last commit and move; daemon mode's from the first arrival
/// to the drained inbox (the bench's own polling and the landing's UID
/// MOVE are then in "everything else").
fn intake_cpu_report(
    out: &mut String,
    cpu: &[CpuSample],
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    n: usize,
    rate: Option<f64>,
) {
    // The last sample at or before the start (the daemon's first in
    // `--once`), and the last at or before the end.
    let first = cpu
        .iter()
        .rev()
        .find(|c| c.at <= start)
        .or_else(|| cpu.first());
    let (Some(first), Some(last)) = (first, cpu.iter().rev().find(|c| c.at <= end)) else {
        return;
    };
    let wall = secs(first.at, last.at);
    let machine = last.machine - first.machine;
    let daemon = last.daemon - first.daemon;
    let steal = last.steal - first.steal;
    if wall <= 0.0 || machine <= 0.0 {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let per = |s: f64| 1e6 * s / n.max(1) as f64;
    let _ = writeln!(
        out,
        "intake's CPU per request: the daemon {:.0} µs, everything else {:.0} µs (Dovecot, the bench, the kernel); {:.0} % of {cores} cores idle",
        per(daemon),
        per((machine - daemon).max(0.0)),
        100.0 * (1.0 - (machine + steal) / (wall * cores)).max(0.0),
    );
    let stolen = 100.0 * steal / (wall * cores);
    if stolen >= STEAL_NOTED_PERCENT {
        let _ = writeln!(
            out,
            "the host took {stolen:.0} % of the cores for other machines (steal) during intake: this run's rates are not comparable with a quiet run's"
        );
    }
    ratio_line(
        out,
        "intake vs all cores busy at that CPU cost",
        rate,
        n as f64 * cores / machine,
    );
}

fn run_daemon(settings: &Settings, config: &Path) -> Run {
    let time_out = settings.out.join("time.txt");
    let _ = std::fs::remove_file(&time_out);
    let mut cmd = match settings.profile {
        Profile::Time => Command::new("/usr/bin/time"),
        Profile::Perf => {
            let mut c = Command::new("perf");
            c.arg("record")
                .args(["-F", "1999", "-g", "-o"])
                .arg(settings.out.join("perf.data"))
                .args(["--", "/usr/bin/time"]);
            c
        }
        Profile::Massif => {
            let mut c = Command::new("valgrind");
            c.arg("--tool=massif").arg(format!(
                "--massif-out-file={}",
                settings.out.join("massif.out").display()
            ));
            c
        }
        Profile::Callgrind => {
            let mut c = Command::new("valgrind");
            c.arg("--tool=callgrind").arg(format!(
                "--callgrind-out-file={}",
                settings.out.join("callgrind.out").display()
            ));
            c
        }
    };
    if !matches!(settings.profile, Profile::Massif | Profile::Callgrind) {
        cmd.arg("-v").arg("-o").arg(&time_out);
    }
    cmd.arg(&settings.bin)
        .arg("--config")
        .arg(config)
        .args(["run", "--once"]);
    daemon_environment(&mut cmd);
    let started_at = Utc::now();
    let mut d = daemon::spawn_with(cmd, config);
    let deadline = Instant::now() + settings.timeout;
    let mut samples = Vec::new();
    let mut cpu = Vec::new();
    let mut target: Option<u32> = None;
    let status = loop {
        if let Some(status) = d.try_status() {
            break status;
        }
        if Instant::now() >= deadline {
            d.kill();
            fail(&format!(
                "run --once did not finish within {:?}\n{}",
                settings.timeout,
                tail(&d.log(), 20)
            ));
        }
        if target.is_none() {
            target = find_descendant(d.pid(), "privacy-mailro");
        }
        if let Some(pid) = target
            && let Some(kib) = rss_kib(pid)
        {
            samples.push((Utc::now(), kib));
            cpu.extend(CpuSample::read(pid));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        success: status.success(),
        status: status.to_string(),
        started_at,
        ended_at: Utc::now(),
        samples,
        cpu,
    }
}

/// The first process below `root` (or `root` itself) whose name starts with `prefix`.
fn find_descendant(root: u32, prefix: &str) -> Option<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: the name may contain spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|p| &stat[p + 1..]) else {
            continue;
        };
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            parents.push((pid, ppid));
        }
    }
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim_end().starts_with(prefix) {
            return Some(pid);
        }
        stack.extend(parents.iter().filter(|(_, p)| *p == pid).map(|(c, _)| *c));
    }
    None
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn write_rss_csv(path: &Path, samples: &[(DateTime<Utc>, u64)]) {
    let mut csv = String::from("time,rss_kib\n");
    for (at, kib) in samples {
        let _ = writeln!(csv, "{},{kib}", at.to_rfc3339());
    }
    let _ = std::fs::write(path, csv);
}

/// What `/usr/bin/time -v` reported.
#[derive(Debug, Default)]
struct TimeV {
    max_rss_kib: Option<u64>,
    wall_secs: Option<f64>,
    user_secs: Option<f64>,
    system_secs: Option<f64>,
    cpu_percent: Option<String>,
}

impl TimeV {
    fn parse(text: &str) -> TimeV {
        let mut t = TimeV::default();
        for line in text.lines().map(str::trim) {
            let Some((key, value)) = line.rsplit_once(": ") else {
                continue;
            };
            let value = value.trim();
            match key {
                "Maximum resident set size (kbytes)" => t.max_rss_kib = value.parse().ok(),
                "User time (seconds)" => t.user_secs = value.parse().ok(),
                "System time (seconds)" => t.system_secs = value.parse().ok(),
                "Percent of CPU this job got" => t.cpu_percent = Some(value.to_string()),
                k if k.starts_with("Elapsed (wall clock) time") => {
                    // h:mm:ss or m:ss.ss
                    t.wall_secs = value.split(':').try_fold(0.0, |acc, part| {
                        part.parse::<f64>().ok().map(|v| acc * 60.0 + v)
                    });
                }
                _ => {}
            }
        }
        t
    }
}

/// The phases of `run --once`, from the log's timestamps.
#[derive(Debug, Default)]
struct LogSummary {
    first_line: Option<DateTime<Utc>>,
    first_open: Option<DateTime<Utc>>,
    last_open: Option<DateTime<Utc>>,
    opened: usize,
    /// "Took in new mail.": end of intake.
    took_in: Option<(DateTime<Utc>, String)>,
    /// "Outbox delivered.": end of delivery.
    delivered: Option<(DateTime<Utc>, String)>,
    /// "Copied sent mail to the Sent folder.": end of the Sent copies.
    copied: Option<(DateTime<Utc>, String)>,
    bursts: usize,
    warnings: usize,
    errors: usize,
}

impl LogSummary {
    fn parse(log: &str) -> LogSummary {
        let mut s = LogSummary::default();
        for line in log.lines() {
            let Some(at) = line
                .split_whitespace()
                .next()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
            else {
                continue;
            };
            s.first_line.get_or_insert(at);
            if line.contains(" WARN ") {
                s.warnings += 1;
            }
            if line.contains(" ERROR ") {
                s.errors += 1;
            }
            let fields = |msg: &str| {
                line.split_once(msg)
                    .map(|(_, rest)| rest.trim().to_string())
                    .unwrap_or_default()
            };
            if line.contains("Opened case.") {
                s.opened += 1;
                s.first_open.get_or_insert(at);
                s.last_open = Some(at);
            } else if line.contains("Took in new mail.") {
                s.took_in = Some((at, fields("Took in new mail.")));
            } else if line.contains("Outbox delivered.") {
                s.delivered = Some((at, fields("Outbox delivered.")));
            } else if line.contains("Copied sent mail to the Sent folder.") {
                s.copied = Some((at, fields("Copied sent mail to the Sent folder.")));
            } else if line.contains("Burst:") {
                s.bursts += 1;
            }
        }
        s
    }
}

/// `cases list --json` with the measured binary; the number of cases.
fn cases_list(bin: &Path, config: &Path) -> Result<usize, String> {
    let out = Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(["cases", "list", "--json"])
        .env_remove("PRIVACY_MAILROOM_CONFIG")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "cases list --json exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let cases: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cases list --json printed no JSON array: {e}"))?;
    Ok(cases.len())
}

/// What the database holds after the run, beside the seed.
#[derive(Debug, Default)]
struct Db {
    /// New cases (not the seeded ones).
    cases: usize,
    sent: usize,
    pending: usize,
    failed: usize,
    not_copied: usize,
    /// The mean size of the mail sent, for the raw SMTP limit.
    average_size: Option<usize>,
    /// (audience, template, count)
    by_template: Vec<(String, String, i64)>,
    suppressed: i64,
    declarations: i64,
    bytes: u64,
}

impl Db {
    /// The outbox, its templates and the database's size: the same lines
    /// under both modes' reports.
    fn summarize(&self, out: &mut String, sent_folder: usize) {
        let templates: Vec<String> = self
            .by_template
            .iter()
            .map(|(a, t, c)| format!("{t} {c}{}", if a == "team" { " (team)" } else { "" }))
            .collect();
        let _ = writeln!(
            out,
            "Outbox: {} sent, {} pending, {} failed, {} not in Sent (Sent folder: {sent_folder}); {} replies suppressed by the per-sender limit",
            self.sent, self.pending, self.failed, self.not_copied, self.suppressed
        );
        let _ = writeln!(out, "  {}", templates.join(", "));
        let _ = writeln!(
            out,
            "Database: {} after the run; {} declaration documents stored",
            mib(self.bytes),
            self.declarations
        );
    }
}

impl Db {
    async fn read(path: &Path, base: &Base) -> Result<Db, String> {
        let pool = open_read_only(path).await?;
        let q = |e: sqlx::Error| format!("query {}: {e}", path.display());
        let mut db = Db::default();
        let cases: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cases")
            .fetch_one(&pool)
            .await
            .map_err(q)?;
        db.cases = (cases as usize).saturating_sub(base.cases);
        let status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM outbox WHERE id > ? GROUP BY status")
                .bind(base.outbox_id)
                .fetch_all(&pool)
                .await
                .map_err(q)?;
        for (s, n) in status {
            let n = n as usize;
            match s.as_str() {
                "sent" => db.sent = n,
                "pending" => db.pending = n,
                _ => db.failed += n,
            }
        }
        db.not_copied = sqlx::query_scalar::<_, i64>(NOT_COPIED)
            .bind(base.outbox_id)
            .fetch_one(&pool)
            .await
            .map_err(q)? as usize;
        db.average_size = sqlx::query_scalar::<_, Option<f64>>(
            "SELECT AVG(LENGTH(raw)) FROM outbox WHERE id > ? AND status = 'sent'",
        )
        .bind(base.outbox_id)
        .fetch_one(&pool)
        .await
        .map_err(q)?
        .map(|v| v as usize);
        db.by_template = sqlx::query_as(
            "SELECT audience, template, COUNT(*) FROM outbox WHERE id > ? GROUP BY audience, template ORDER BY 3 DESC",
        )
        .bind(base.outbox_id)
        .fetch_all(&pool)
        .await
        .map_err(q)?;
        db.suppressed =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE action = 'reply_suppressed'")
                .fetch_one(&pool)
                .await
                .map_err(q)?;
        db.declarations = sqlx::query_scalar("SELECT COUNT(*) FROM attachments")
            .fetch_one(&pool)
            .await
            .map_err(q)?;
        pool.close().await;
        db.bytes = ["", "-wal"]
            .iter()
            .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
            .map(|m| m.len())
            .sum();
        Ok(db)
    }
}

// ------------------------------------------------------------------- report

struct Report<'a> {
    settings: &'a Settings,
    bytes: usize,
    append_time: Duration,
    run: &'a Run,
    time: &'a TimeV,
    phases: &'a LogSummary,
    db: &'a Db,
    list_time: Duration,
    sent_folder: usize,
}

/// When the last mail handed to Postfix so far reached its mailbox (any but
/// the privacy mailbox `mailbox`'s): waits for Postfix's queue to be empty first.
///
/// On this machine Postfix and Dovecot's LMTP share the two cores with the
/// sender. A short burst of raw SMTP ends with Postfix's queue still full,
/// and LMTP delivers the rest after the clock stopped; the daemon's longer
/// delivery leaves almost none behind. So the bench also times both up to
/// this moment: the rate mail gets through the MTA, which no sender can beat
/// for long, beside the rate Postfix accepts it.
async fn last_delivered(servers: &MailServers, mailbox: &str) -> Option<DateTime<Utc>> {
    servers.wait_mail_delivered(Duration::from_secs(600)).await;
    servers.last_delivered(mailbox).map(DateTime::<Utc>::from)
}

/// Seconds from `from` until the last mail was through the MTA: in its
/// mailbox (`delivered`, from [`last_delivered`]), or accepted by Postfix
/// (`accepted`) if no mailbox says later.
fn secs_through(
    from: DateTime<Utc>,
    accepted: DateTime<Utc>,
    delivered: Option<DateTime<Utc>>,
) -> f64 {
    secs(from, delivered.map_or(accepted, |d| d.max(accepted)))
}

fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(0) as f64 / 1e6
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Peak RSS among the samples taken in `[from, to)`.
fn peak(samples: &[(DateTime<Utc>, u64)], from: DateTime<Utc>, to: DateTime<Utc>) -> Option<u64> {
    samples
        .iter()
        .filter(|(at, _)| *at >= from && *at < to)
        .map(|(_, kib)| *kib)
        .max()
}

fn report(r: &Report<'_>) -> String {
    let n = r.settings.messages;
    let p = r.phases;
    let run = r.run;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nprivacy-mailroom run --once: {n} requests ({}), {}",
        mib(r.bytes as u64),
        r.settings.bin.display()
    );
    let _ = writeln!(out, "{:-<78}", "");
    let _ = writeln!(
        out,
        "{:<34} {:>10} {:>12} {:>16}",
        "phase", "seconds", "msgs/s", "peak RSS"
    );
    let row = |out: &mut String, name: &str, s: Option<f64>, rate: bool, rss: Option<u64>| {
        let secs = s.map_or("-".into(), |s| format!("{s:.2}"));
        let per = match (rate, s) {
            (true, Some(s)) if s > 0.0 => format!("{:.0}", n as f64 / s),
            _ => String::new(),
        };
        let rss = rss.map_or(String::new(), |k| mib(k * 1024));
        let _ = writeln!(out, "{name:<34} {secs:>10} {per:>12} {rss:>16}");
    };
    row(
        &mut out,
        "APPEND burst (1 IMAP session)",
        Some(r.append_time.as_secs_f64()),
        true,
        None,
    );
    let start = run.started_at;
    let intake_end = p.took_in.as_ref().map(|(t, _)| *t);
    let deliver_end = p.delivered.as_ref().map(|(t, _)| *t);
    let copy_end = p.copied.as_ref().map(|(t, _)| *t).or(deliver_end);
    row(
        &mut out,
        "intake (start to last commit+move)",
        intake_end.map(|e| secs(start, e)),
        true,
        intake_end.and_then(|e| peak(&run.samples, start, e)),
    );
    if let (Some(a), Some(b)) = (p.first_open, p.last_open)
        && p.opened > 1
    {
        let s = secs(a, b);
        let _ = writeln!(
            out,
            "{:<34} {:>10.2} {:>12.0}",
            "  steady (first to last case)",
            s,
            (p.opened - 1) as f64 / s.max(1e-6)
        );
    }
    row(
        &mut out,
        "delivery (SMTP, outbox)",
        intake_end.zip(deliver_end).map(|(a, b)| secs(a, b)),
        false,
        intake_end
            .zip(deliver_end)
            .and_then(|(a, b)| peak(&run.samples, a, b)),
    );
    row(
        &mut out,
        "copy to Sent (IMAP APPEND)",
        deliver_end.zip(copy_end).map(|(a, b)| secs(a, b)),
        false,
        deliver_end
            .zip(copy_end)
            .and_then(|(a, b)| peak(&run.samples, a, b)),
    );
    let wall = r.time.wall_secs.unwrap_or(secs(start, run.ended_at));
    row(
        &mut out,
        "whole run (time -v)",
        Some(wall),
        true,
        r.time
            .max_rss_kib
            .or_else(|| run.samples.iter().map(|(_, k)| *k).max()),
    );
    let _ = writeln!(out, "{:-<78}", "");
    let _ = writeln!(
        out,
        "CPU: user {} s, system {} s ({} of one core); cases list --json: {:.2} s",
        r.time.user_secs.map_or("-".into(), |v| format!("{v:.2}")),
        r.time.system_secs.map_or("-".into(), |v| format!("{v:.2}")),
        r.time.cpu_percent.as_deref().unwrap_or("-"),
        r.list_time.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "Log: {} cases opened, {} burst summaries, {} warnings, {} errors; intake [{}], delivery [{}], Sent [{}]",
        p.opened,
        p.bursts,
        p.warnings,
        p.errors,
        p.took_in.as_ref().map_or("-", |(_, f)| f.as_str()),
        p.delivered.as_ref().map_or("-", |(_, f)| f.as_str()),
        p.copied.as_ref().map_or("-", |(_, f)| f.as_str()),
    );
    let db = r.db;
    db.summarize(&mut out, r.sent_folder);
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
