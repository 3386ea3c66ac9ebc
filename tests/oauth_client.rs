//! The OAuth client side (issue 10) through the real binary, against the
//! OAuth test servers: Dovecot validates every token itself, Postfix's
//! submission listener asks Dovecot, and the test identity provider issues
//! the tokens. (The harness's own proofs and further scenarios: tests/oauth.rs.)

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::daemon::{self, DaemonConfig, OAuthFlow};
use support::mail;
use support::{IdentityProvider, MailServers, Rotation, stderr, stdout};

/// `check` line `name` (its status and detail), or a panic with the output.
fn check_line(out: &std::process::Output, name: &str) -> String {
    stdout(out)
        .lines()
        .find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(name)))
        .unwrap_or_else(|| {
            panic!(
                "no `{name}` line in check:\n{}\n{}",
                stdout(out),
                stderr(out)
            )
        })
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_check_then_request_answered_over_xoauth2() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials);
    let path = config.write();

    let out = daemon::cli(&path, &["check"]);
    for name in ["oauth2 endpoint", "oauth2 token", "imap login", "smtp auth"] {
        let line = check_line(&out, name);
        assert!(line.starts_with("ok"), "{line}\n{}", stdout(&out));
    }
    assert!(check_line(&out, "imap login").contains("AUTHENTICATE XOAUTH2"));
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));

    servers.smtp_request(&mailbox, &consumer).await;
    let run = daemon::run_once(&path);
    support::assert_ok(&run, "run --once");
    let ack = servers
        .wait_for(&consumer, "INBOX", 1, Duration::from_secs(30))
        .await;
    assert_eq!(ack.len(), 1);
    assert_eq!(support::cases_json(&path).len(), 1);
    // sent_copy = "append" (the test config's): this server keeps no copy
    // of its own, so the daemon appends exactly one.
    assert_eq!(servers.count(&mailbox, "Sent").await, 1);
    // One process, one token: IMAP, SMTP and the Sent copy share it.
    assert_eq!(
        idp.token_requests_for("client_credentials"),
        2,
        "check + run"
    );
    // No token or secret in the logs, even at trace level.
    let mut traced = daemon::command(&path, &["run", "--once"]);
    traced.env("RUST_LOG", "trace");
    let traced = daemon::run_with_timeout(traced, daemon::COMMAND_TIMEOUT);
    support::assert_ok(&traced, "run --once at trace level");
    assert!(stderr(&traced).contains("TRACE"), "trace logging is on");
    let secret = std::fs::read_to_string(config.dir().join("oauth2-client-secret")).unwrap();
    for text in [stderr(&run), stderr(&traced), stdout(&traced)] {
        for issued in idp.issued() {
            assert!(
                !text.contains(&issued.access_token),
                "token leaked into the log"
            );
        }
        assert!(
            !text.contains(secret.trim()),
            "client secret leaked into the log"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_refresh_tokens_are_saved_0600_and_oauthbearer_logs_in() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    idp.set_rotation(Rotation::SingleUse);
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::RefreshToken).set_str(
        "oauth2",
        "mechanism",
        "oauthbearer",
    );
    let path = config.write();
    let first = config.saved_refresh_token();

    servers.smtp_request(&mailbox, &consumer).await;
    support::run_once_ok(&path);
    servers
        .wait_for(&consumer, "INBOX", 1, Duration::from_secs(30))
        .await;
    let second = config.saved_refresh_token();
    assert_ne!(first, second, "the rotated refresh token is saved");
    assert!(idp.refresh_token_is_valid(&second));
    let mode = std::fs::metadata(config.refresh_token_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A second process starts from the saved token.
    support::assert_ok(&daemon::run_once(&path), "second run --once");
    assert_ne!(config.saved_refresh_token(), second);

    // `auth status` shows the state, never a token.
    let out = daemon::cli(&path, &["auth", "status"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("refresh_token") && stdout(&out).contains("expires"));
    for issued in idp.issued() {
        assert!(!stdout(&out).contains(&issued.access_token));
    }
    assert!(!stdout(&out).contains(&config.saved_refresh_token()));
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_refresh_token_check_names_auth_login_and_login_repairs_it() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::RefreshToken);
    let path = config.write();
    idp.revoke_refresh_tokens_of(&mailbox);

    let out = daemon::cli(&path, &["check"]);
    assert!(!out.status.success());
    let line = check_line(&out, "oauth2 token");
    assert!(
        line.starts_with("FAIL") && line.contains("invalid_grant") && line.contains("auth login"),
        "{line}"
    );
    assert!(
        !stdout(&out).contains("imap login"),
        "one problem, one line:\n{}",
        stdout(&out)
    );

    // `auth login`: the device-code flow prints the URL and the code; the
    // test approves it as the user would in a browser.
    let mut login = daemon::command(&path, &["auth", "login"]);
    login.stdout(std::process::Stdio::piped());
    let child = login.spawn().expect("start auth login");
    support::wait_for_condition(
        "a device authorization",
        Duration::from_secs(20),
        || !idp.device_authorizations().is_empty(),
        String::new,
    )
    .await;
    let code = idp.device_authorizations()[0].user_code.clone();
    idp.approve_device(&code, &mailbox);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains(&code), "{}", stdout(&out));
    let mode = std::fs::metadata(config.refresh_token_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = daemon::cli(&path, &["check"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn smtp_refusing_tokens_keeps_intake_going_and_replies_queued() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials);
    let path = config.write();
    servers.refuse_smtp_tokens(&mailbox, true);

    let out = daemon::cli(&path, &["check"]);
    assert!(
        check_line(&out, "imap login").starts_with("ok"),
        "{}",
        stdout(&out)
    );
    let smtp = check_line(&out, "smtp auth");
    assert!(
        smtp.starts_with("FAIL") && smtp.contains("XOAUTH2"),
        "{smtp}"
    );

    servers.smtp_request(&mailbox, &consumer).await;
    let run = daemon::run_once(&path);
    support::assert_ok(&run, "run --once with SMTP refusing");
    assert_eq!(support::cases_json(&path).len(), 1, "intake went on");
    assert_eq!(
        servers.count(&mailbox, "INBOX").await,
        0,
        "the request was filed"
    );
    assert_eq!(servers.count(&consumer, "INBOX").await, 0);

    let pending = outbox_pending(&config.database_path()).await;
    assert_eq!(pending, 1, "the acknowledgement waits in the outbox");

    servers.refuse_smtp_tokens(&mailbox, false);
    // Its retry is due in a minute: bring it forward instead of waiting.
    make_outbox_due(&config.database_path()).await;
    support::assert_ok(&daemon::run_once(&path), "run --once after SMTP recovered");
    assert_eq!(
        servers
            .wait_for(&consumer, "INBOX", 1, Duration::from_secs(20))
            .await
            .len(),
        1
    );
}

async fn outbox_pending(database: &std::path::Path) -> i64 {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", database.display()))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

async fn make_outbox_due(database: &std::path::Path) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", database.display()))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE outbox SET next_attempt_at = '2000-01-01T00:00:00Z' WHERE status = 'pending'",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// The running daemon with 20-second tokens: it renews its IMAP session
/// before each token expires, survives a kick (BYE) and a token endpoint
/// outage, and takes every request in exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn running_daemon_outlives_short_tokens_kicks_and_an_endpoint_outage() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    idp.set_token_lifetime(Duration::from_secs(20));
    let mailbox = servers.unique_user("privacy");
    let consumers: Vec<String> = (0..3).map(|_| servers.unique_user("consumer")).collect();
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials);
    let path = config.write();
    let mut d = daemon::spawn(&path);

    let answered = |n: usize| {
        let consumer = consumers[n].clone();
        async move {
            servers
                .wait_for(&consumer, "INBOX", 1, Duration::from_secs(40))
                .await
                .len()
        }
    };
    let send = |n: usize| {
        let consumer = consumers[n].clone();
        let mailbox = mailbox.clone();
        async move {
            let request =
                mail::request(&consumer, &mailbox, "California Request to Delete", "Hi\n");
            servers.send_smtp(&consumer, &[&mailbox], &request).await;
        }
    };

    // Idle through more than two token lifetimes, then new mail.
    support::wait_for_condition(
        "three IMAP logins (sessions renewed before their tokens expired)",
        Duration::from_secs(70),
        || servers.imap_login_methods(&mailbox).len() >= 3,
        || d.log(),
    )
    .await;
    send(0).await;
    assert_eq!(answered(0).await, 1, "{}", d.log());

    // The server ends the session (as Exchange does at token expiry).
    assert!(servers.kick(&mailbox) >= 1);
    send(1).await;
    assert_eq!(answered(1).await, 1, "{}", d.log());

    // The token endpoint goes down: once the cached token is due for
    // renewal the daemon cannot log in; mail waits, one warning, then recovery.
    idp.go_down();
    let logins = servers.imap_login_methods(&mailbox).len();
    support::wait_for_condition(
        "the daemon to notice the outage",
        Duration::from_secs(40),
        || d.log().contains("Cannot obtain an OAuth token"),
        || d.log(),
    )
    .await;
    send(2).await;
    servers
        .wait_for(&mailbox, "INBOX", 1, Duration::from_secs(20))
        .await;
    assert_eq!(servers.count(&consumers[2], "INBOX").await, 0);
    idp.come_back();
    assert_eq!(answered(2).await, 1, "{}", d.log());
    assert!(servers.imap_login_methods(&mailbox).len() > logins);

    let log = d.log();
    assert_eq!(
        log.matches("Cannot obtain an OAuth token").count(),
        1,
        "one line per outage:\n{log}"
    );
    assert!(log.contains("works again"), "{log}");
    let cases = support::cases_json(&path);
    assert_eq!(cases.len(), 3, "each request once: {cases:#?}");
    for issued in idp.issued() {
        assert!(!log.contains(&issued.access_token), "token in the log");
    }
    assert!(d.terminate(Duration::from_secs(10)).success(), "{log}");
}

/// Tokens of 6 KB (the most Dovecot 2.3 takes): IMAP AUTHENTICATE carries
/// them, and SMTP sends them in two steps (`AUTH XOAUTH2`, `334`, response),
/// since Postfix cuts an inline command at 2,048 octets.
#[tokio::test(flavor = "multi_thread")]
async fn six_kilobyte_tokens_log_in_to_imap_and_smtp_in_two_steps() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    idp.set_token_size(Some(6000));
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials);
    let path = config.write();

    servers.smtp_request(&mailbox, &consumer).await;
    support::run_once_ok(&path);
    servers
        .wait_for(&consumer, "INBOX", 1, Duration::from_secs(30))
        .await;
    assert!(idp.issued().iter().all(|t| t.access_token.len() >= 5900));
    // (The test's own IMAP sessions log in with the password.)
    assert!(
        servers
            .imap_login_methods(&mailbox)
            .iter()
            .any(|m| m == "XOAUTH2")
    );
    assert_eq!(servers.smtp_login_methods(&mailbox), ["XOAUTH2"]);
}

/// Only SMTP uses OAuth (IMAP keeps its password): a mixed setup is valid.
#[tokio::test(flavor = "multi_thread")]
async fn smtp_alone_can_use_oauth() {
    let servers = MailServers::start_oauth();
    let idp = IdentityProvider::start(servers);
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::oauth(servers, &mailbox, &idp, OAuthFlow::ClientCredentials);
    let password_file = config.dir().join("imap.password");
    std::fs::write(&password_file, servers.password()).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = config.set_str("imap", "auth", "password").set_str(
        "imap",
        "password_file",
        &password_file.display().to_string(),
    );
    let path = config.write();
    let out = daemon::cli(&path, &["check"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));

    servers.smtp_request(&mailbox, &consumer).await;
    support::run_once_ok(&path);
    servers
        .wait_for(&consumer, "INBOX", 1, Duration::from_secs(30))
        .await;
    assert!(
        !servers
            .imap_login_methods(&mailbox)
            .iter()
            .any(|m| m == "XOAUTH2")
    );
    let smtp = servers.smtp_login_methods(&mailbox);
    assert!(
        !smtp.is_empty() && smtp.iter().all(|m| m == "XOAUTH2"),
        "{smtp:?}"
    );
}
