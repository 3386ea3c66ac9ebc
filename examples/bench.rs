//! `scripts/bench`: intake speed and memory for a burst of requests.
//!
//! Starts the integration tests' private Dovecot and Postfix, APPENDs a burst
//! of realistic requests (Know, Delete, opt-out, authorized agents with a
//! small PDF) to the privacy mailbox over one IMAP session, then runs the
//! release binary `privacy-mailroom run --once` under `/usr/bin/time -v` and
//! reports wall time, messages per second, maximum resident memory, and the
//! intake, delivery and Sent-copy phases from the daemon's log timestamps.
//! Finally it checks the result: one case per message, the inbox empty, every
//! original in Processed, the outbox delivered and copied to Sent.
//!
//! Settings (environment):
//! - `BENCH_MESSAGES`: how many requests (default 5000)
//! - `BENCH_BIN`: the binary to measure (default `target/release/privacy-mailroom`)
//! - `BENCH_OUT`: where the log, `time -v` output, RSS samples and summary go
//!   (default `target/bench`)
//! - `BENCH_PROFILE`: `time` (default), `perf` (`perf record -g` around the
//!   run; `perf.data` in `BENCH_OUT`) or `massif` (valgrind's heap profiler;
//!   slow, use a few hundred messages)
//! - `BENCH_AGENT_DESKS`: how many sender addresses the agent service uses
//!   (default 5; each gets at most `policy.max_auto_replies_per_day` replies)
//! - `BENCH_TIMEOUT_SECS`: give up on the run after this long (default 1800)
//! - `BENCH_KEEP_DB=1`: copy the database to `BENCH_OUT` for a closer look
//!
//! Exits 1 when the run fails or the result is wrong — never because of speed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use support::MailServers;
use support::daemon::{self, DaemonConfig};

const AGENT_DOMAIN: &str = "rights-agent.example.com";

/// The benchmark's settings, from the environment.
struct Settings {
    messages: usize,
    bin: PathBuf,
    out: PathBuf,
    profile: Profile,
    agent_desks: usize,
    timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    Time,
    Perf,
    Massif,
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
            Ok(other) => {
                return Err(format!("BENCH_PROFILE={other:?}: use time, perf or massif"));
            }
        };
        let messages = number("BENCH_MESSAGES", 5000)?;
        if messages == 0 {
            return Err("BENCH_MESSAGES must be at least 1".into());
        }
        Ok(Settings {
            messages,
            bin: path("BENCH_BIN", root.join("target/release/privacy-mailroom")),
            out: path("BENCH_OUT", root.join("target/bench")),
            profile,
            agent_desks: number("BENCH_AGENT_DESKS", 5)?.max(1),
            timeout: Duration::from_secs(number("BENCH_TIMEOUT_SECS", 1800)? as u64),
        })
    }
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
    let burst: Vec<(Mix, Vec<u8>)> = (0..settings.messages)
        .map(|i| request(i, &mailbox, settings.agent_desks))
        .collect();
    let bytes: usize = burst.iter().map(|(_, raw)| raw.len()).sum();
    let mut counts = [0usize; 5];
    for (mix, _) in &burst {
        counts[*mix as usize] += 1;
    }
    eprintln!(
        "Generated {} requests ({}) in {:.1} s: know {}, delete {}, opt-out {}, agent {} (+{} with PDF).",
        burst.len(),
        mib(bytes as u64),
        started.elapsed().as_secs_f64(),
        counts[Mix::Know as usize],
        counts[Mix::Delete as usize],
        counts[Mix::OptOut as usize],
        counts[Mix::Agent as usize],
        counts[Mix::AgentPdf as usize],
    );
    let append_time = bulk_append(servers, &mailbox, burst.iter().map(|(_, raw)| raw)).await;
    drop(burst);
    eprintln!(
        "APPENDed them to INBOX over one IMAP session in {:.1} s ({:.0}/s).",
        append_time.as_secs_f64(),
        settings.messages as f64 / append_time.as_secs_f64()
    );

    let config = DaemonConfig::new(servers, &mailbox)
        .team_members(&[&member])
        .team_notify(&[&team])
        .set(
            "agents",
            "known_domains",
            daemon::toml_str_array(&[AGENT_DOMAIN]),
        );
    let config_path = config.write();

    // The measured run.
    eprintln!(
        "Running {} run --once ({:?})...",
        settings.bin.display(),
        settings.profile
    );
    let run = run_daemon(&settings, &config_path);
    let log = std::fs::read_to_string(config.dir().join("daemon.log")).unwrap_or_default();
    let _ = std::fs::write(settings.out.join("daemon.log"), &log);
    write_rss_csv(&settings.out.join("rss.csv"), &run.samples);
    let time = std::fs::read_to_string(settings.out.join("time.txt"))
        .map(|t| TimeV::parse(&t))
        .unwrap_or_default();
    let phases = LogSummary::parse(&log);

    // Correctness.
    let mut problems = Vec::new();
    if !run.success {
        problems.push(format!(
            "run --once failed ({}); last log lines:\n{}",
            run.status,
            tail(&log, 15)
        ));
    }
    let list_started = Instant::now();
    let cases = cases_list(&settings.bin, &config_path);
    let list_time = list_started.elapsed();
    match &cases {
        Ok(n) if *n == settings.messages => {}
        Ok(n) => problems.push(format!(
            "cases list --json shows {n} cases, expected {}",
            settings.messages
        )),
        Err(e) => problems.push(e.clone()),
    }
    let inbox = servers.count(&mailbox, "INBOX").await;
    if inbox != 0 {
        problems.push(format!("{inbox} message(s) still in INBOX"));
    }
    let processed = servers.count(&mailbox, "Processed").await;
    if processed != settings.messages {
        problems.push(format!(
            "{processed} message(s) in Processed, expected {}",
            settings.messages
        ));
    }
    let review = servers.count(&mailbox, "Review").await;
    if review != 0 {
        problems.push(format!("{review} message(s) in Review, expected none"));
    }
    let sent_folder = servers.count(&mailbox, "Sent").await;
    let db = match Db::read(&config.database_path()).await {
        Ok(db) => db,
        Err(e) => {
            problems.push(e);
            Db::default()
        }
    };
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

    let report = report(&Report {
        settings: &settings,
        bytes,
        append_time,
        run: &run,
        time: &time,
        phases: &phases,
        db: &db,
        list_time,
        sent_folder,
    });
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
            "OK: {} cases, INBOX empty, {} originals in Processed, outbox delivered and copied to Sent.",
            settings.messages, processed
        );
        println!("Details: {}", settings.out.display());
    } else {
        for p in &problems {
            eprintln!("FAILED: {p}");
        }
        eprintln!("Log: {}", settings.out.join("daemon.log").display());
        std::process::exit(1);
    }
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
    let head = format!(
        "From: {from}\r\nTo: {mailbox}\r\nSubject: {subject}\r\nMessage-ID: <bench-{i}-{}@client.example.test>\r\nDate: {}\r\nMIME-Version: 1.0\r\n",
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

// ----------------------------------------------------------- the measured run

/// How the measured process ended, and its resident memory over time.
struct Run {
    success: bool,
    status: String,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
    /// (when, VmRSS in KiB) of the `privacy-mailroom` process, every 50 ms.
    samples: Vec<(DateTime<Utc>, u64)>,
}

fn run_daemon(settings: &Settings, config: &Path) -> Run {
    let time_out = settings.out.join("time.txt");
    let _ = std::fs::remove_file(&time_out);
    let mut cmd = match settings.profile {
        Profile::Time => Command::new("/usr/bin/time"),
        Profile::Perf => {
            let mut c = Command::new("perf");
            c.arg("record")
                .args(["-F", "499", "-g", "-o"])
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
    };
    if settings.profile != Profile::Massif {
        cmd.arg("-v").arg("-o").arg(&time_out);
    }
    cmd.arg(&settings.bin)
        .arg("--config")
        .arg(config)
        .args(["run", "--once"])
        .env_remove("PRIVACY_MAILROOM_CONFIG")
        .env("NO_COLOR", "1")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(std::process::Stdio::null());
    let started_at = Utc::now();
    let mut d = daemon::spawn_with(cmd, config);
    let deadline = Instant::now() + settings.timeout;
    let mut samples = Vec::new();
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
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        success: status.success(),
        status: status.to_string(),
        started_at,
        ended_at: Utc::now(),
        samples,
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

/// What the database holds after the run.
#[derive(Debug, Default)]
struct Db {
    sent: usize,
    pending: usize,
    failed: usize,
    not_copied: usize,
    /// (audience, template, count)
    by_template: Vec<(String, String, i64)>,
    suppressed: i64,
    declarations: i64,
    bytes: u64,
}

impl Db {
    async fn read(path: &Path) -> Result<Db, String> {
        let url = format!("sqlite://{}?mode=ro", path.display());
        let pool = sqlx::SqlitePool::connect(&url)
            .await
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let q = |e: sqlx::Error| format!("query {}: {e}", path.display());
        let mut db = Db::default();
        let status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM outbox GROUP BY status")
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
        db.not_copied = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM outbox WHERE status = 'sent' AND appended_at IS NULL",
        )
        .fetch_one(&pool)
        .await
        .map_err(q)? as usize;
        db.by_template = sqlx::query_as(
            "SELECT audience, template, COUNT(*) FROM outbox GROUP BY audience, template ORDER BY 3 DESC",
        )
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
    let templates: Vec<String> = db
        .by_template
        .iter()
        .map(|(a, t, c)| format!("{t} {c}{}", if a == "team" { " (team)" } else { "" }))
        .collect();
    let _ = writeln!(
        out,
        "Outbox: {} sent, {} pending, {} failed, {} not in Sent (Sent folder: {}); {} replies suppressed by the per-sender limit",
        db.sent, db.pending, db.failed, db.not_copied, r.sent_folder, db.suppressed
    );
    let _ = writeln!(out, "  {}", templates.join(", "));
    let _ = writeln!(
        out,
        "Database: {} after the run; {} declaration documents stored",
        mib(db.bytes),
        db.declarations
    );
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
