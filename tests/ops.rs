//! Running it as a service an admin trusts (issue 6): the systemd unit, the
//! notify protocol, `check`, the §7101/§7102 reports and the retention purge,
//! all against the real binary and the private Dovecot + Postfix.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use support::MailServers;
use support::daemon::{self, DaemonConfig};

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/systemd/privacy-mailroom.service"
);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A copy of the unit whose ExecStart names the binary under test, so
/// `systemd-analyze verify` finds an executable.
fn unit_copy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(UNIT).expect("read the unit file");
    let text = text.replace("/usr/bin/privacy-mailroom", daemon::BIN);
    let path = dir.join("privacy-mailroom.service");
    std::fs::write(&path, text).expect("write the unit copy");
    path
}

#[test]
fn unit_file_verifies_and_scores_at_most_1_5() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze is installed (apt-get install systemd)");
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {}",
        describe(&verify)
    );
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        !stderr.contains("privacy-mailroom.service:"),
        "verify complained: {stderr}"
    );

    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze security");
    let text = format!(
        "{}{}",
        stdout(&security),
        String::from_utf8_lossy(&security.stderr)
    );
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for privacy-mailroom.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 1.5, "exposure {score} > 1.5:\n{text}");
}

#[test]
fn the_unit_config_example_loads() {
    for file in ["config/systemd/config.toml", "config/example.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        if let Err(e) = privacy_mailroom::config::Config::load(&path) {
            panic!("{file}: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_sends_ready_watchdog_and_stopping_on_a_notify_socket() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    let socket_path = config.dir().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut cmd = daemon::command(&path, &["run"]);
    cmd.env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID");
    let mut d = daemon::spawn_with(cmd, &path);

    let mut seen: Vec<String> = Vec::new();
    let mut watchdogs = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !(seen.iter().any(|s| s == "READY=1") && watchdogs >= 3) {
        if let Ok(n) = socket.recv(&mut buf) {
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                if line == "WATCHDOG=1" {
                    watchdogs += 1;
                }
                seen.push(line.to_string());
            }
        }
    }
    assert!(
        seen.iter().any(|s| s == "READY=1"),
        "no READY=1 in {seen:?}\n{}",
        d.log()
    );
    assert!(
        watchdogs >= 3,
        "WATCHDOG=1 seen {watchdogs} times in 60 s (expected one a second): {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.starts_with("STATUS=") && s.contains("open cases")),
        "a readable STATUS= line: {seen:?}"
    );
    let status = d.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit {status:?}\n{}", d.log());
    let mut stopping = false;
    while let Ok(n) = socket.recv(&mut buf) {
        stopping |= String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "STOPPING=1");
    }
    assert!(stopping, "STOPPING=1 after SIGTERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn log_format_json_prints_json_lines() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    let out = daemon::cli(&path, &["--log-format", "json", "run", "--once"]);
    support::assert_ok(&out, "run --once with JSON logs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines at all");
    for line in lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{v}");
    }
}

/// `check --json`: (exit status, lines).
fn check_json(path: &Path) -> (Option<i32>, Vec<Value>) {
    let out = daemon::cli(path, &["check", "--json"]);
    let lines: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check --json prints a JSON array ({e}): {}", describe(&out)));
    (out.status.code(), lines)
}

fn line<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no check line {name:?} in {lines:#?}"))
}

fn failed(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["ok"] == false)
        .map(|l| {
            format!(
                "{}: {}",
                l["name"].as_str().unwrap_or_default(),
                l["detail"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_passes_on_a_good_setup_and_names_each_problem() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");

    // A good setup: password in a 0600 file. Every line ok, exit 0.
    let good = DaemonConfig::new(servers, &mailbox);
    let secret = good.dir().join("imap.password");
    std::fs::write(&secret, format!("{}\n", servers.password())).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let good = good.unset("imap", "password").set_str(
        "imap",
        "password_file",
        &secret.display().to_string(),
    );
    let path = good.write();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, lines) = check_json(&path);
    assert_eq!(failed(&lines), Vec::<String>::new());
    assert_eq!(code, Some(0));
    for name in [
        "config",
        "config permissions",
        "imap.password_file permissions",
        "database",
        "templates",
        "imap dns",
        "imap tcp",
        "imap tls",
        "imap login",
        "imap capabilities",
        "imap mailbox",
        "smtp dns",
        "smtp tcp",
        "smtp ehlo",
        "smtp starttls",
        "smtp tls",
        "smtp auth",
    ] {
        assert_eq!(line(&lines, name)["ok"], true, "{name}");
    }
    assert!(
        line(&lines, "imap capabilities")["detail"]
            .as_str()
            .unwrap()
            .contains("IDLE, MOVE and UIDPLUS")
    );
    // The text form: one line each, FAIL-free.
    let out = daemon::cli(&path, &["check"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).lines().all(|l| l.starts_with("ok  ")),
        "{}",
        stdout(&out)
    );

    // A world-readable secret file.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, lines) = check_json(&path);
    assert_eq!(code, Some(1));
    let l = line(&lines, "imap.password_file permissions");
    assert_eq!(l["ok"], false);
    assert!(
        l["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("chmod 600 {}", secret.display())),
        "{l}"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();

    // An inline password in a world-readable config.
    let inline = DaemonConfig::new(servers, &mailbox);
    let inline_path = inline.write();
    std::fs::set_permissions(&inline_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, lines) = check_json(&inline_path);
    let l = line(&lines, "config permissions");
    assert_eq!(l["ok"], false, "{l}");
    assert!(l["detail"].as_str().unwrap().contains("chmod 600"), "{l}");

    // A wrong password.
    let wrong =
        DaemonConfig::new(servers, &mailbox).set_str("imap", "password", "not-the-password");
    let wrong_path = wrong.write();
    std::fs::set_permissions(&wrong_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, lines) = check_json(&wrong_path);
    assert_eq!(code, Some(1));
    assert_eq!(
        failed(&lines).len(),
        1,
        "exactly one line: {:#?}",
        failed(&lines)
    );
    let l = line(&lines, "imap login");
    assert!(
        l["detail"].as_str().unwrap().contains("login failed"),
        "{l}"
    );

    // An unknown CA: no ca_file for the private test CA.
    let no_ca = DaemonConfig::new(servers, &mailbox).unset("imap", "ca_file");
    let no_ca_path = no_ca.write();
    std::fs::set_permissions(&no_ca_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, lines) = check_json(&no_ca_path);
    assert_eq!(code, Some(1));
    assert_eq!(
        failed(&lines).len(),
        1,
        "exactly one line: {:#?}",
        failed(&lines)
    );
    let l = line(&lines, "imap tls");
    let detail = l["detail"].as_str().unwrap();
    assert!(
        detail.contains("unknown CA") && detail.contains("imap.ca_file"),
        "{l}"
    );

    // A missing folder.
    let nope = DaemonConfig::new(servers, &mailbox).set_str("imap", "mailbox", "Nope");
    let nope_path = nope.write();
    std::fs::set_permissions(&nope_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, lines) = check_json(&nope_path);
    assert_eq!(code, Some(1));
    assert_eq!(
        failed(&lines).len(),
        1,
        "exactly one line: {:#?}",
        failed(&lines)
    );
    let l = line(&lines, "imap mailbox");
    assert!(l["detail"].as_str().unwrap().contains("\"Nope\""), "{l}");

    // A template with an unknown variable.
    let broken = DaemonConfig::new(servers, &mailbox);
    let templates = broken.dir().join("templates");
    std::fs::create_dir(&templates).unwrap();
    for entry in std::fs::read_dir(daemon::TEMPLATES_DIR).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), templates.join(entry.file_name())).unwrap();
    }
    let ack = templates.join("acknowledgement.text.hbs");
    let mut text = std::fs::read_to_string(&ack).unwrap();
    text.push_str("\n{{no_such_variable}}\n");
    std::fs::write(&ack, text).unwrap();
    let broken = broken.set_str("templates", "dir", &templates.display().to_string());
    let broken_path = broken.write();
    std::fs::set_permissions(&broken_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, lines) = check_json(&broken_path);
    assert_eq!(code, Some(1));
    let fails = failed(&lines);
    assert!(
        !fails.is_empty() && fails.iter().all(|f| f.starts_with("templates:")),
        "{fails:#?}"
    );
    assert!(
        fails
            .iter()
            .any(|f| f.contains("acknowledgement") && f.contains("no_such_variable")),
        "{fails:#?}"
    );
}

/// Sends requests, takes them in, returns the case id per requester.
async fn open_cases(
    servers: &MailServers,
    path: &Path,
    mailbox: &str,
    requests: &[(&str, &str, &str)],
) -> Vec<String> {
    for (from, subject, body) in requests {
        let raw = support::mail::request(from, mailbox, subject, body);
        servers.send_smtp(from, &[mailbox], &raw).await;
    }
    servers
        .wait_for(mailbox, "INBOX", requests.len(), Duration::from_secs(30))
        .await;
    support::assert_ok(&daemon::run_once(path), "run --once");
    let cases = support::cases_json(path);
    requests
        .iter()
        .map(|(from, _, _)| {
            cases
                .iter()
                .find(|c| c["requester"] == *from)
                .and_then(|c| c["id"].as_str())
                .unwrap_or_else(|| panic!("no case for {from}: {cases:#?}"))
                .to_string()
        })
        .collect()
}

fn act(path: &Path, id: &str, args: &[&str]) {
    let mut all = vec!["cases", "act", id];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--by", "alice@example.com"]);
    support::assert_ok(
        &daemon::cli(path, &all),
        &format!("cases act {id} {args:?}"),
    );
}

/// Sets when a case (and its inbound mail) was received and, if closed,
/// when it closed.
async fn set_times(db: &Path, id: &str, received: DateTime<Utc>, closed: Option<DateTime<Utc>>) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE cases SET received_at = ?, closed_at = COALESCE(?, closed_at) WHERE id = ?",
    )
    .bind(received)
    .bind(closed)
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    // The request arrived when the case was received.
    sqlx::query("UPDATE messages SET at = ? WHERE case_id = ? AND direction = 'in'")
        .bind(received)
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn records_and_metrics_match_cases_built_through_the_real_flow() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    let who: Vec<String> = (0..6)
        .map(|i| servers.unique_user(&format!("rec{i}")))
        .collect();
    let ids = open_cases(
        servers,
        &path,
        &mailbox,
        &[
            (
                &who[0],
                "California Request to Know",
                "Please tell me what you hold.\n",
            ),
            (
                &who[1],
                "California Request to Know",
                "Please tell me what you hold.\n",
            ),
            (
                &who[2],
                "California Request to Know",
                "I am an authorized agent acting on behalf of my client.\n",
            ),
            (&who[3], "California Request to Delete", "Delete my data.\n"),
            (&who[4], "California Request to Delete", "Delete my data.\n"),
            (&who[5], "Do Not Sell", "Do not sell my data.\n"),
        ],
    )
    .await;
    act(&path, &ids[0], &["verify"]);
    act(&path, &ids[0], &["complete", "--sent-by-team"]);
    act(&path, &ids[1], &["verify"]);
    act(&path, &ids[1], &["complete"]);
    // An opt-out is carried out and completed by the team (§7026(f)).
    act(&path, &ids[5], &["complete"]);
    act(
        &path,
        &ids[2],
        &[
            "deny",
            "--reason",
            "No signed declaration, no consumer confirmation",
        ],
    );
    act(
        &path,
        &ids[3],
        &["deny", "--reason", "Not a California resident"],
    );
    support::assert_ok(&daemon::run_once(&path), "deliver");

    // Spread the dates over March 2025 (Los Angeles time).
    let base = Utc.with_ymd_and_hms(2025, 3, 3, 17, 0, 0).unwrap();
    let day = chrono::Duration::days(1);
    let db = config.database_path();
    set_times(&db, &ids[0], base, Some(base + day * 10)).await;
    set_times(&db, &ids[1], base, Some(base + day * 20)).await;
    set_times(&db, &ids[2], base, Some(base + day * 31)).await;
    set_times(&db, &ids[3], base + day * 2, Some(base + day * 7)).await;
    set_times(&db, &ids[4], base + day * 2, None).await;
    set_times(&db, &ids[5], base + day, Some(base + day)).await;

    // Metrics, JSON.
    let out = daemon::cli(&path, &["report", "metrics", "--year", "2025", "--json"]);
    support::assert_ok(&out, "report metrics --json");
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kind = |k: &str| {
        m["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["kind"] == k)
            .cloned()
            .unwrap()
    };
    let know = kind("know");
    assert_eq!(
        (
            know["received"].as_u64(),
            know["complied"].as_u64(),
            know["denied"].as_u64(),
            know["open"].as_u64()
        ),
        (Some(3), Some(2), Some(1), Some(0)),
        "{know}"
    );
    assert_eq!(know["median_days"].as_f64(), Some(20.0), "{know}");
    assert_eq!(know["mean_days"].as_f64(), Some(20.3), "{know}");
    let delete = kind("delete");
    assert_eq!(
        (
            delete["received"].as_u64(),
            delete["complied"].as_u64(),
            delete["denied"].as_u64(),
            delete["open"].as_u64()
        ),
        (Some(2), Some(0), Some(1), Some(1)),
        "{delete}"
    );
    assert_eq!(delete["median_days"].as_f64(), Some(5.0), "{delete}");
    let opt_out = kind("opt_out");
    assert_eq!(
        (opt_out["received"].as_u64(), opt_out["complied"].as_u64()),
        (Some(1), Some(1)),
        "{opt_out}"
    );
    assert_eq!(opt_out["median_days"].as_f64(), Some(0.0), "{opt_out}");
    // Another year has nothing.
    let out = daemon::cli(&path, &["report", "metrics", "--year", "2024", "--json"]);
    let m2024: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        m2024["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["received"] == 0),
        "{m2024}"
    );
    // Metrics, text.
    let out = daemon::cli(&path, &["report", "metrics", "--year", "2025"]);
    support::assert_ok(&out, "report metrics");
    let text = stdout(&out);
    let know_line = text
        .lines()
        .find(|l| l.starts_with("know "))
        .unwrap_or_default();
    let cols: Vec<&str> = know_line.split_whitespace().collect();
    assert_eq!(
        cols,
        ["know", "3", "2", "1", "0", "0", "0", "20.0", "20.3"],
        "{text}"
    );

    // Records, JSON.
    let out = daemon::cli(&path, &["report", "records", "--format", "json"]);
    support::assert_ok(&out, "report records --format json");
    let records: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records.len(), 6);
    let rec = |id: &str| {
        records
            .iter()
            .find(|r| r["case_id"] == id)
            .cloned()
            .unwrap()
    };
    let r2 = rec(&ids[2]);
    assert_eq!(r2["request_date"], "2025-03-03");
    assert_eq!(r2["response_date"], "2025-04-03");
    assert_eq!(r2["manner"], "agent");
    assert_eq!(r2["response"], "denied");
    assert_eq!(
        r2["basis_for_denial"],
        "No signed declaration, no consumer confirmation"
    );
    assert_eq!(
        rec(&ids[0])["nature_of_response"],
        "complied in whole or in part"
    );
    assert_eq!(rec(&ids[0])["manner"], "email");
    assert_eq!(rec(&ids[4])["response"], "open");
    assert!(rec(&ids[4])["response_date"].is_null());
    assert_eq!(rec(&ids[5])["kind"], "opt_out");
    assert_eq!(rec(&ids[5])["response_date"], "2025-03-04");

    // Records, CSV, with a date window: only the cases of 2025-03-05.
    let out = daemon::cli(
        &path,
        &[
            "report",
            "records",
            "--since",
            "2025-03-05",
            "--until",
            "2025-03-05",
        ],
    );
    support::assert_ok(&out, "report records csv");
    let csv = stdout(&out);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "case_id,request_date,kind,manner,response_date,nature_of_response,basis_for_denial,state,purged"
    );
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows.contains(&format!("{},2025-03-05,delete,email,2025-03-10,denied,Not a California resident,denied,false", ids[3]).as_str()), "{csv}");
    assert!(
        rows.contains(
            &format!(
                "{},2025-03-05,delete,email,,open,,awaiting_verification,false",
                ids[4]
            )
            .as_str()
        ),
        "{csv}"
    );
    let out = daemon::cli(&path, &["report", "records"]);
    let all = stdout(&out);
    assert!(
        all.contains("\"No signed declaration, no consumer confirmation\""),
        "commas are quoted: {all}"
    );
}

async fn query_one<T>(db: &Path, sql: &'static str, id: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + Send + Unpin,
{
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let v: T = sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_removes_personal_data_of_old_closed_cases_and_keeps_the_record() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    let old = servers.unique_user("old");
    let recent = servers.unique_user("recent");
    let open = servers.unique_user("open");
    let ids = open_cases(
        servers,
        &path,
        &mailbox,
        &[
            (
                &old,
                "California Request to Know",
                "I am Jane Roe, 1 Main St, Fresno.\n",
            ),
            (
                &recent,
                "California Request to Know",
                "I am John Poe, 2 Elm St, Davis.\n",
            ),
            (
                &open,
                "California Request to Delete",
                "I am Jim Doe, 3 Oak St, Napa.\n",
            ),
        ],
    )
    .await;
    act(&path, &ids[0], &["note", &format!("Called {old} back")]);
    act(
        &path,
        &ids[0],
        &["deny", "--reason", "Could not verify identity"],
    );
    act(
        &path,
        &ids[1],
        &["deny", "--reason", "Could not verify identity"],
    );
    support::assert_ok(&daemon::run_once(&path), "deliver");
    let db = config.database_path();
    let now = Utc::now();
    // Old: closed 25 months ago. Recent: closed 31 days ago (verification data only).
    set_times(
        &db,
        &ids[0],
        now - chrono::Duration::days(25 * 31),
        Some(now - chrono::Duration::days(25 * 30 + 20)),
    )
    .await;
    set_times(
        &db,
        &ids[1],
        now - chrono::Duration::days(40),
        Some(now - chrono::Duration::days(31)),
    )
    .await;
    support::shift_case_times(&db, &ids[2], -chrono::Duration::days(800)).await;

    // Dry run: names the case, changes nothing.
    let out = daemon::cli(&path, &["purge", "--dry-run"]);
    support::assert_ok(&out, "purge --dry-run");
    let text = stdout(&out);
    assert!(text.contains(&ids[0]) && !text.contains(&ids[2]), "{text}");
    let requester: String =
        query_one(&db, "SELECT requester FROM cases WHERE id = ?", &ids[0]).await;
    assert_eq!(requester, old);

    let out = daemon::cli(&path, &["purge"]);
    support::assert_ok(&out, "purge");

    // The old case: no personal data left anywhere.
    let c = support::case_json(&path, &ids[0]);
    assert_eq!(c["requester"], "[purged]");
    assert_eq!(c["state"], "denied");
    let dump = c.to_string();
    assert!(!dump.contains(&old) && !dump.contains("Jane Roe"), "{c:#}");
    let bodies: i64 = query_one(&db, "SELECT COUNT(*) FROM messages WHERE case_id = ? AND (raw IS NOT NULL OR body_text IS NOT NULL OR subject != '')", &ids[0]).await;
    assert_eq!(bodies, 0);
    let outbox: i64 = query_one(
        &db,
        "SELECT COUNT(*) FROM outbox WHERE case_id = ? AND length(raw) > 0",
        &ids[0],
    )
    .await;
    assert_eq!(outbox, 0);
    let leaks: i64 = query_one(&db, "SELECT COUNT(*) FROM events WHERE case_id = ?1 AND (actor LIKE '%old-%' OR detail LIKE '%old-%')", &ids[0]).await;
    assert_eq!(leaks, 0);
    let purged: i64 = query_one(
        &db,
        "SELECT COUNT(*) FROM events WHERE case_id = ? AND action = 'purged'",
        &ids[0],
    )
    .await;
    assert_eq!(purged, 1);
    let code: String = query_one(
        &db,
        "SELECT verification_code FROM cases WHERE id = ?",
        &ids[0],
    )
    .await;
    assert_eq!(code, "");
    // The event log is still append-only for anything else.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let tamper = sqlx::query("UPDATE events SET action = 'x' WHERE case_id = ?")
        .bind(&ids[0])
        .execute(&pool)
        .await;
    assert!(
        tamper.is_err(),
        "events of a purged case stay append-only apart from redaction"
    );
    let tamper = sqlx::query("UPDATE events SET detail = '[purged]' WHERE case_id = ?")
        .bind(&ids[2])
        .execute(&pool)
        .await;
    assert!(
        tamper.is_err(),
        "events of an unpurged case cannot be redacted"
    );
    pool.close().await;

    // Its §7101 record is intact.
    let out = daemon::cli(&path, &["report", "records", "--format", "json"]);
    let records: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let r = records
        .iter()
        .find(|r| r["case_id"] == ids[0].as_str())
        .unwrap();
    assert_eq!(r["kind"], "know");
    assert_eq!(r["response"], "denied");
    assert_eq!(r["basis_for_denial"], "Could not verify identity");
    assert_eq!(r["purged"], true);
    assert!(r["response_date"].is_string());

    // Closed 31 days ago: verification data gone, the rest kept.
    let c = support::case_json(&path, &ids[1]);
    assert_eq!(c["requester"], recent.as_str());
    let bodies: i64 = query_one(&db, "SELECT COUNT(*) FROM messages WHERE case_id = ? AND direction = 'in' AND (raw IS NOT NULL OR body_text IS NOT NULL)", &ids[1]).await;
    assert_eq!(bodies, 0);
    assert!(
        c["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "verification_data_deleted")
    );

    // The open case, though received long ago, is untouched.
    let c = support::case_json(&path, &ids[2]);
    assert_eq!(c["requester"], open.as_str());
    let bodies: i64 = query_one(&db, "SELECT COUNT(*) FROM messages WHERE case_id = ? AND direction = 'in' AND body_text IS NOT NULL", &ids[2]).await;
    assert_eq!(bodies, 1);

    // A second run has nothing left to do.
    let out = daemon::cli(&path, &["purge", "--dry-run"]);
    assert!(
        stdout(&out).starts_with("0 closed cases"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_clears_mail_that_belonged_to_no_case_and_orphaned_files() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let notify = servers.unique_user("team");
    let stranger = servers.unique_user("stranger");
    let config = DaemonConfig::new(servers, &mailbox).team_notify(&[&notify]);
    let path = config.write();
    servers
        .append(
            &mailbox,
            "INBOX",
            &support::mail::request(
                &stranger,
                &mailbox,
                "A question",
                "Please delete my data.\n",
            ),
        )
        .await;
    let out = daemon::run_once(&path);
    assert!(out.status.success(), "{}", describe(&out));

    // Twenty-five months pass.
    let db = config.database_path();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let long_ago = Utc::now() - chrono::Duration::days(25 * 31);
    for sql in [
        "UPDATE messages SET at = ? WHERE case_id IS NULL",
        "UPDATE outbox SET created_at = ? WHERE case_id IS NULL",
    ] {
        sqlx::query(sql)
            .bind(long_ago)
            .execute(&pool)
            .await
            .unwrap();
    }
    // Events are append-only: this one is written old from the start.
    sqlx::query("INSERT INTO events (case_id, at, actor, action, detail) VALUES (NULL, ?, ?, 'command_refused', 'x')")
        .bind(long_ago)
        .bind(&stranger)
        .execute(&pool)
        .await
        .unwrap();
    // A stored file nobody refers to (a purge interrupted before removing it).
    let orphan_sha = "ab".repeat(32);
    let orphan = config
        .attachments_dir()
        .join("sha256/ab/ab")
        .join(&orphan_sha);
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"old declaration").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&orphan)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();

    let out = daemon::cli(&path, &["purge"]);
    assert!(out.status.success(), "{}", describe(&out));
    let left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages WHERE case_id IS NULL
           AND (raw IS NOT NULL OR body_text IS NOT NULL OR from_addr != '[purged]')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "review mail keeps no personal data");
    let notices: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox WHERE case_id IS NULL AND (length(raw) > 0 OR recipients != '[]')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(notices, 0, "the review notice keeps no personal data");
    let actors: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE case_id IS NULL AND actor = ?")
            .bind(&stranger)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(actors, 0);
    assert!(!orphan.exists(), "the orphaned file is removed");
    pool.close().await;
}
