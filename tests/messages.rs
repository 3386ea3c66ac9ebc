//! What an admin and the privacy team read (issue 14): every config error
//! names the key, the line and the fix; CLI messages say what is valid; the
//! team sees one truth about dates and people. Each test runs the real binary
//! against the private Dovecot + Postfix and checks the text a person reads.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;
use support::MailServers;
use support::daemon::{self, DaemonConfig};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}

/// Writes `text` as the config (0600: it holds the test password inline).
fn write_config(config: &DaemonConfig, text: &str) -> std::path::PathBuf {
    let path = config.path();
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The line number (1-based) of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"))
}

/// Exit 2 and one stderr line of the `config key KEY: …; fix: …` form.
fn config_error(path: &Path) -> String {
    let out = daemon::cli(path, &["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("error: config key `"))
        .unwrap_or_else(|| panic!("no `config key` line: {}", describe(&out)));
    assert!(line.contains("; fix: "), "{line}");
    line.to_string()
}

#[test]
fn a_mistyped_key_names_its_line_and_suggests_the_known_key() {
    let servers = MailServers::start();
    let config = DaemonConfig::new(servers, &servers.unique_user("privacy"));
    let text = config
        .to_toml()
        .replacen("password = ", "pasword_file = ", 1);
    let path = write_config(&config, &text);
    let line = config_error(&path);
    let n = line_of(&text, "pasword_file");
    assert!(
        line.starts_with(&format!(
            "error: config key `imap.pasword_file` (line {n} of {}): [imap] has no key `pasword_file`; fix: did you mean `password_file`?",
            path.display()
        )),
        "{line}"
    );
}

#[test]
fn a_wrong_type_says_what_to_write() {
    let servers = MailServers::start();
    let config =
        DaemonConfig::new(servers, &servers.unique_user("privacy")).set("imap", "port", "\"993\"");
    let text = config.to_toml();
    let path = write_config(&config, &text);
    let line = config_error(&path);
    assert!(
        line.contains("config key `imap.port`")
            && line.contains(&format!("line {}", line_of(&text, "port = \"993\"")))
            && line.contains("imap.port must be a number, e.g. 993; fix: write `port = 993`"),
        "{line}"
    );
}

#[test]
fn a_syntax_error_never_prints_the_inline_password() {
    let servers = MailServers::start();
    let config = DaemonConfig::new(servers, &servers.unique_user("privacy"));
    let secret = servers.password();
    // An unterminated string on the password line.
    let text = config.to_toml().replace(
        &format!("password = \"{secret}\""),
        &format!("password = \"{secret}"),
    );
    assert!(text.contains(&format!("password = \"{secret}\n")), "{text}");
    let path = write_config(&config, &text);
    let out = daemon::cli(&path, &["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains(secret), "the password leaked:\n{all}");
    let line = config_error(&path);
    assert!(line.contains("config key `imap.password`"), "{line}");
    assert!(line.contains("password = [redacted]"), "{line}");
}

#[test]
fn left_out_sections_mean_their_defaults_and_cases_need_no_templates() {
    let servers = MailServers::start();
    let config = DaemonConfig::new(servers, &servers.unique_user("privacy"));
    // Keep [imap], [smtp], [storage] and [company]; drop the rest, and with
    // [templates] the path to the repository's templates: the default
    // /usr/share/privacy-mailroom/templates may not exist here.
    let mut kept = String::new();
    let mut keep = true;
    for line in config.to_toml().lines() {
        if line.starts_with('[') {
            keep = ["[imap]", "[smtp]", "[storage]", "[company]"].contains(&line);
        }
        if keep {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    assert!(!kept.contains("[agents]") && !kept.contains("[templates]"));
    let missing_templates = config.dir().join("no-templates-here");
    kept = kept.replace(
        "[company]",
        &format!(
            "[templates]\ndir = {:?}\n\n[company]",
            missing_templates.display().to_string()
        ),
    );
    let path = write_config(&config, &kept);

    let out = daemon::cli(&path, &["cases", "list"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).starts_with("ID "), "{}", describe(&out));
    let out = daemon::cli(&path, &["cases", "list", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out).trim(), "[]");

    // `check` names the missing template folder once, with one fix.
    let out = daemon::cli(&path, &["check"]);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("templates"))
        .unwrap_or_else(|| panic!("no templates line: {}", describe(&out)));
    assert!(
        line.contains(&missing_templates.display().to_string()),
        "{line}"
    );
    assert_eq!(line.matches("fix").count(), 1, "{line}");
    assert!(!line.contains("check templates.dir"), "{line}");
}

#[test]
fn templates_render_lists_the_names_and_uses_the_configured_company() {
    let servers = MailServers::start();
    let config = DaemonConfig::new(servers, &servers.unique_user("privacy"))
        .set_str("company", "name", "Acme Widgets LLC")
        .set_str("company", "phone", "1-800-555-0199")
        .set_str(
            "company",
            "postal_address",
            "Acme Widgets LLC, 9 Elm St, Fresno, CA 93701",
        )
        .set_str(
            "company",
            "privacy_policy_url",
            "https://acme.example/privacy",
        );
    let path = config.write();

    let out = daemon::cli(&path, &["templates", "render", "foo"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("there is no template \"foo\"; the templates are: acknowledgement, agent_consumer_confirm,"),
        "{err}"
    );
    assert!(err.contains("team_notice"), "{err}");
    assert!(!err.contains("daemon sends it"), "{err}");

    let out = daemon::cli(&path, &["templates", "render", "acknowledgement"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    for wanted in [
        "Acme Widgets LLC Privacy Team",
        "Phone: 1-800-555-0199",
        "Post: Acme Widgets LLC, 9 Elm St, Fresno, CA 93701",
        "Privacy policy: https://acme.example/privacy",
    ] {
        assert!(text.contains(wanted), "{wanted:?} not in\n{text}");
    }
    assert!(!text.contains("Example Inc."), "{text}");
    assert!(!text.contains("1-800-555-0100"), "{text}");
}

/// A Know request and an opt-out, taken in; returns (know id, opt-out id).
async fn know_and_opt_out(servers: &MailServers, path: &Path, mailbox: &str) -> (String, String) {
    let know = servers.unique_user("consumer");
    let opt = servers.unique_user("consumer");
    for (from, subject) in [(&know, "California Request to Know"), (&opt, "Do Not Sell")] {
        let raw = support::mail::request(from, mailbox, subject, "Please.");
        servers.send_smtp(from, &[mailbox], &raw).await;
    }
    servers
        .wait_for(mailbox, "INBOX", 2, Duration::from_secs(30))
        .await;
    support::assert_ok(&daemon::run_once(path), "run --once");
    let cases = support::cases_json(path);
    let id = |from: &str| {
        cases
            .iter()
            .find(|c| c["requester"] == from)
            .and_then(|c| c["id"].as_str())
            .unwrap_or_else(|| panic!("no case for {from}: {cases:#?}"))
            .to_string()
    };
    (id(&know), id(&opt))
}

#[tokio::test(flavor = "multi_thread")]
async fn cases_show_dates_in_the_policy_zone_and_closed_cases_have_no_due_date() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let team = servers.unique_user("team");
    let config = DaemonConfig::new(servers, &mailbox)
        .set_str("policy", "case_prefix", "ACME")
        .set_str("policy", "timezone", "America/Los_Angeles")
        .team_notify(&[&team]);
    let path = config.write();
    let (know, opt) = know_and_opt_out(servers, &path, &mailbox).await;

    // Human output: the due date in Los Angeles time, as the mail says.
    let json = support::case_json(&path, &know);
    let due: DateTime<Utc> = json["due_at"].as_str().unwrap().parse().unwrap();
    assert!(
        json["due_at"].as_str().unwrap().ends_with('Z'),
        "JSON keeps RFC 3339"
    );
    let la = due.with_timezone(&chrono_tz::America::Los_Angeles);
    let local = format!(
        "due:       end of {} ({})",
        la.format("%B %-d, %Y"),
        la.format("%Y-%m-%d %H:%M %Z")
    );
    let out = daemon::cli(&path, &["cases", "show", &know]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains(&local), "{local} not in\n{text}");
    assert!(!text.contains(json["due_at"].as_str().unwrap()), "{text}");

    // --state open selects every open state: both requests are open (an
    // opt-out must still be carried out).
    let open_ids = || -> Vec<String> {
        let out = daemon::cli(&path, &["cases", "list", "--state", "open", "--json"]);
        assert!(out.status.success(), "{}", describe(&out));
        let open: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let mut ids: Vec<String> = open
            .iter()
            .filter_map(|c| c["id"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        ids
    };
    let mut both = vec![know.clone(), opt.clone()];
    both.sort();
    assert_eq!(open_ids(), both);

    // Once closed, a case shows no due date anywhere a person reads, and
    // leaves the open list.
    let out = daemon::cli(
        &path,
        &[
            "cases",
            "act",
            &opt,
            "close",
            "--reason",
            "Duplicate of an earlier request.",
            "--by",
            "alice",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let out = daemon::cli(&path, &["cases", "show", &opt]);
    let text = stdout(&out);
    assert!(text.contains("closed:    "), "{text}");
    assert!(!text.contains("due:"), "{text}");
    let out = daemon::cli(&path, &["cases", "list"]);
    let list = stdout(&out);
    let row = list.lines().find(|l| l.starts_with(&opt)).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[4], "-", "{row}");
    assert_eq!(open_ids(), std::slice::from_ref(&know));

    // The team notice names the request once.
    let notices = servers.fetch_all(&team, "INBOX").await;
    let subjects: Vec<String> = notices
        .iter()
        .map(|raw| support::header(raw, "Subject").unwrap_or_default())
        .collect();
    assert!(
        subjects
            .iter()
            .any(|s| s == &format!("New request: Request to Know [{know}]")),
        "{subjects:#?}"
    );

    // A wrong case ID says what one looks like, with the configured prefix.
    let year = Utc::now()
        .with_timezone(&chrono_tz::America::Los_Angeles)
        .year();
    let out = daemon::cli(&path, &["cases", "show", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains(&format!(
            "\"1\" is not a case ID; a case ID looks like ACME-{year}-00001"
        )),
        "{}",
        describe(&out)
    );
    let out = daemon::cli(&path, &["cases", "show", &format!("ACME-{year}-99999")]);
    assert!(
        stderr(&out).contains(&format!("no case ACME-{year}-99999; a case ID looks like")),
        "{}",
        describe(&out)
    );

    // Retention: once the closed case is old, the dry run says what goes.
    let db = config.database_path();
    support::shift_case_times(&db, &opt, -chrono::Duration::days(800)).await;
    set_closed_at(&db, &opt, Utc::now() - chrono::Duration::days(800)).await;
    let out = daemon::cli(&path, &["purge", "--dry-run"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains(&opt))
        .unwrap_or_else(|| panic!("{opt} not in\n{text}"));
    assert!(
        line.contains("would remove the requester's, agent's and consumer's addresses and names")
            && line.contains("keeps the §7101 record"),
        "{line}"
    );
}

async fn set_closed_at(db: &Path, id: &str, at: DateTime<Utc>) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE cases SET closed_at = ? WHERE id = ?")
        .bind(at)
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cases_act_names_the_person_or_refuses() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    let (know, _) = know_and_opt_out(servers, &path, &mailbox).await;
    let actors = |id: &str| -> Vec<String> {
        support::case_json(&path, id)["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["actor"].as_str().unwrap_or_default().to_string())
            .collect()
    };

    // sudo: the admin who typed it.
    let mut cmd = daemon::command(
        &path,
        &["cases", "act", &know, "note", "Called the consumer."],
    );
    cmd.env("SUDO_USER", "alice").env("USER", "root");
    let out = daemon::run_with_timeout(cmd, daemon::COMMAND_TIMEOUT);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        actors(&know).contains(&"cli:alice".to_string()),
        "{:?}",
        actors(&know)
    );

    // No SUDO_USER, no USER: the login UID's user, or a refusal.
    let mut cmd = daemon::command(&path, &["cases", "act", &know, "note", "Second note."]);
    cmd.env_remove("SUDO_USER").env_remove("USER");
    let out = daemon::run_with_timeout(cmd, daemon::COMMAND_TIMEOUT);
    let loginuid = std::fs::read_to_string("/proc/self/loginuid")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|uid| *uid != u32::MAX);
    match loginuid {
        None => {
            assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
            assert!(
                stderr(&out).contains("fix: pass --by NAME"),
                "{}",
                describe(&out)
            );
            assert_eq!(
                actors(&know)
                    .iter()
                    .filter(|a| a.starts_with("cli:"))
                    .count(),
                1,
                "a refused act was recorded"
            );
        }
        Some(uid) => {
            assert!(out.status.success(), "{}", describe(&out));
            assert!(
                actors(&know)
                    .iter()
                    .any(|a| a.starts_with("cli:") && a != "cli:alice"),
                "login uid {uid}: {:?}",
                actors(&know)
            );
        }
    }
}

#[test]
fn list_flags_have_help_text() {
    let out = daemon::run_with_timeout(
        {
            let mut c = std::process::Command::new(daemon::BIN);
            c.args(["cases", "list", "--help"]);
            c
        },
        daemon::COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let help = stdout(&out);
    for wanted in [
        "--state <STATE>",
        "`open` (every state that still needs work)",
        "--kind <KIND>",
        "know, delete, opt_out, correct or limit",
        "--json",
        "Print a JSON array",
    ] {
        assert!(help.contains(wanted), "{wanted:?} not in\n{help}");
    }
}
