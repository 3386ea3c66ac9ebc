//! The integration-test harness: a private Dovecot (IMAP, IMAPS, LMTP) and
//! Postfix (SMTP) per test binary, helpers to send and inspect mail, and
//! helpers to run the `privacy-mailroom` binary against them.
//!
//! Use it from a `tests/*.rs` file with `mod support;` and, in a
//! `#[tokio::test]`, `let servers = support::MailServers::start();`.
//! Needs root and Debian 12's `dovecot-imapd dovecot-lmtpd postfix`.

// Not every test binary uses every helper.
#![allow(dead_code, unused_imports)]

mod b64;
mod cases;
pub mod corpus;
pub mod daemon;
pub mod idp;
mod imap;
pub mod mail;
mod procs;
pub mod sasl;
mod servers;
mod smtp;
mod tls;

pub use cases::{
    assert_ok, case_json, cases_json, db_count, first_case_id, outbox_counts, outbox_due_now,
    reset_schedule, shift_case_times,
};
pub use idp::{IdentityProvider, Rotation};
pub use imap::{ImapSession, ImapStream};
pub use servers::{MX_AUTHSERV_ID, MailServers, OAUTH_ISSUER, PASSWORD};
pub use tls::{client_config_without_ca, install_crypto_provider};

/// Polls `check` every 100 ms until it yields a value; after `timeout`
/// panics with "timed out … waiting until" and what `describe` says (called
/// only then, so it may read logs). The tests wait on conditions like this,
/// never on fixed sleeps.
pub async fn wait_until<T, F, Fut>(
    timeout: std::time::Duration,
    describe: impl FnOnce() -> String,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if std::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {}", describe());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Polls a plain `condition` every 100 ms until it holds; panics with
/// `what` (and the `context` it returns then) after `timeout`. Like
/// [`wait_until`], for conditions that need no `.await`.
pub async fn wait_for_condition(
    what: &str,
    timeout: std::time::Duration,
    mut condition: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    let deadline = std::time::Instant::now() + timeout;
    while !condition() {
        if std::time::Instant::now() >= deadline {
            panic!("waited {timeout:?} for {what}\n{}", context());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The raw Subject header of a message ("" when absent).
pub fn subject(raw: &[u8]) -> String {
    header(raw, "Subject").unwrap_or_default()
}

/// A command's standard output as text.
pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's standard error as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `run --once`, which must succeed; returns its log (stderr, then stdout).
pub fn run_once_ok(config: &std::path::Path) -> String {
    let out = daemon::run_once(config);
    assert_ok(&out, "run --once");
    stderr(&out) + &stdout(&out)
}

/// `check --json`: its exit status, its lines, and the whole output (it
/// exits 1 when a line fails, so the status is not asserted here).
pub fn check_json(
    config: &std::path::Path,
) -> (Option<i32>, Vec<serde_json::Value>, std::process::Output) {
    let out = daemon::cli(config, &["check", "--json"]);
    let lines = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json printed no JSON array ({e}):\n{}\n{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (out.status.code(), lines, out)
}

/// The unfolded value of the first header called `name` (case-insensitive)
/// in a raw message, without decoding; `None` when absent.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .split("\n\n")
        .next()
        .unwrap_or_default();
    let mut value: Option<String> = None;
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        match value.as_mut() {
            Some(v) if line.starts_with([' ', '\t']) => {
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(line.trim());
                continue;
            }
            Some(_) => break,
            None => {}
        }
        if let Some((field, rest)) = line.split_once(':')
            && field.trim().eq_ignore_ascii_case(name)
        {
            value = Some(rest.trim().to_string());
        }
    }
    value
}
