//! Smoke tests of the integration-test harness itself: real Postfix and
//! Dovecot, TLS with the test CA, mailbox isolation.

mod support;

use std::time::Duration;

use support::MailServers;
use support::daemon::DaemonConfig;

const WAIT: Duration = Duration::from_secs(30);

fn message(from: &str, to: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@harness.example.test>\r\n\
         Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn smtp_through_postfix_arrives_over_imaps() {
    let servers = MailServers::start();
    let user = servers.unique_user("inbox");
    let raw = message(
        "consumer@example.org",
        &user,
        "smoke-delivery",
        "Please delete my data.",
    );
    servers
        .send_smtp("consumer@example.org", &[&user], &raw)
        .await;

    let got = servers.wait_for(&user, "INBOX", 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains("Please delete my data."), "{text}");
    // Delivered like real mail: through Postfix, then LMTP.
    assert!(text.contains("with LMTP"), "{text}");
    assert_eq!(
        support::header(&got[0], "Return-Path").as_deref(),
        Some("<consumer@example.org>")
    );
    // Postfix must not add headers the test did not write.
    assert_eq!(
        support::header(&got[0], "Message-ID").as_deref(),
        Some("<smoke-delivery@harness.example.test>")
    );
}

#[tokio::test]
async fn raw_bytes_and_null_sender_survive() {
    let servers = MailServers::start();
    let user = servers.unique_user("raw");
    // No Message-ID, no Date, 8-bit body, a folded header, null sender.
    let raw = "From: MAILER-DAEMON@example.org\r\nTo: x\r\nSubject: =?UTF-8?Q?Caf=C3=A9?=\r\nX-Odd:\r\n folded\r\n\r\nCaf\u{e9} \u{2014} 8bit\r\n"
        .as_bytes()
        .to_vec();
    servers.send_smtp("", &[&user], &raw).await;
    let got = servers.wait_for(&user, "INBOX", 1, WAIT).await;
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.ends_with("Caf\u{e9} \u{2014} 8bit\r\n"), "{text}");
    assert_eq!(support::header(&got[0], "Message-ID"), None, "{text}");
    assert_eq!(support::header(&got[0], "Date"), None, "{text}");
    assert_eq!(
        support::header(&got[0], "Return-Path").as_deref(),
        Some("<>")
    );
    assert_eq!(support::header(&got[0], "X-Odd").as_deref(), Some("folded"));
}

#[tokio::test]
async fn starttls_on_the_plain_port_works_with_the_ca() {
    let servers = MailServers::start();
    let user = servers.unique_user("starttls");
    let mut session = servers.starttls_session(&user).await;
    let caps = session.capabilities().await.expect("CAPABILITY");
    for cap in ["IDLE", "MOVE", "UIDPLUS"] {
        assert!(caps.has_str(cap), "Dovecot lacks {cap}");
    }
    let inbox = session.select("INBOX").await.expect("SELECT INBOX");
    assert_eq!(inbox.exists, 0);
    session.logout().await.expect("LOGOUT");
}

#[tokio::test]
async fn a_client_without_the_ca_fails_the_handshake() {
    let servers = MailServers::start();
    let untrusting = support::client_config_without_ca().expect("client config");
    let Err(err) = servers.try_imaps_client(untrusting.clone()).await else {
        panic!("IMAPS must fail without the test CA");
    };
    assert!(format!("{err:#}").contains("TLS handshake"), "{err:#}");
    let Err(err) = servers.try_starttls_client(untrusting).await else {
        panic!("STARTTLS must fail without the test CA");
    };
    assert!(format!("{err:#}").contains("TLS handshake"), "{err:#}");
    // While the trusting configuration connects.
    servers
        .try_imaps_client(servers.tls_config())
        .await
        .expect("IMAPS with the test CA");
}

#[tokio::test]
async fn wrong_passwords_fail_fast_and_do_not_lock_out() {
    let servers = MailServers::start();
    let user = servers.unique_user("password");
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let client = servers
            .try_imaps_client(servers.tls_config())
            .await
            .expect("IMAPS");
        assert!(client.login(&user, "wrong").await.is_err());
    }
    let mut session = servers.imap_session(&user).await;
    session.logout().await.expect("LOGOUT");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "logins took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn append_and_fetch_roundtrip() {
    let servers = MailServers::start();
    let user = servers.unique_user("append");
    let first = message("a@example.org", &user, "first", "one");
    let second = message("b@example.org", &user, "second", "two");
    servers.append(&user, "Archive/2026", &first).await;
    let old = chrono::Utc::now() - chrono::Duration::days(400);
    servers
        .append_dated(&user, "Archive/2026", &second, old)
        .await;

    assert_eq!(servers.count(&user, "Archive/2026").await, 2);
    assert_eq!(
        servers.fetch_all(&user, "Archive/2026").await,
        vec![first, second]
    );
    let mailboxes = servers.list_mailboxes(&user).await;
    assert!(
        mailboxes.iter().any(|m| m == "Archive/2026"),
        "{mailboxes:?}"
    );
    assert!(mailboxes.iter().any(|m| m == "INBOX"), "{mailboxes:?}");
    assert_eq!(servers.count(&user, "Missing").await, 0);
    assert!(servers.fetch_all(&user, "Missing").await.is_empty());

    // The INTERNALDATE was kept (what initial_backlog_days looks at).
    let mut session = servers.imap_session(&user).await;
    session.examine("Archive/2026").await.expect("EXAMINE");
    let dates: Vec<_> = {
        use futures::TryStreamExt as _;
        session
            .fetch("2", "INTERNALDATE")
            .await
            .expect("FETCH")
            .try_collect::<Vec<_>>()
            .await
            .expect("FETCH")
            .iter()
            .filter_map(|f| f.internal_date())
            .collect()
    };
    assert_eq!(dates.len(), 1);
    assert_eq!(dates[0].timestamp(), old.timestamp());
}

#[tokio::test]
async fn two_users_are_isolated() {
    let servers = MailServers::start();
    let alice = servers.unique_user("alice");
    let bob = servers.unique_user("bob");
    assert_ne!(alice, bob);
    servers
        .send_smtp(
            "x@example.org",
            &[&alice],
            &message("x@example.org", &alice, "for-alice", "a"),
        )
        .await;
    servers
        .append(
            &bob,
            "INBOX",
            &message("y@example.org", &bob, "for-bob", "b"),
        )
        .await;

    let a = servers.wait_for(&alice, "INBOX", 1, WAIT).await;
    let b = servers.wait_for(&bob, "INBOX", 1, WAIT).await;
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 1);
    assert_eq!(
        support::header(&a[0], "Subject").as_deref(),
        Some("for-alice")
    );
    assert_eq!(
        support::header(&b[0], "Subject").as_deref(),
        Some("for-bob")
    );
}

#[tokio::test]
async fn many_recipients_and_messages_in_one_connection() {
    let servers = MailServers::start();
    let users: Vec<String> = (0..3).map(|_| servers.unique_user("burst")).collect();
    let raws: Vec<Vec<u8>> = (0..5)
        .map(|i| message("burst@example.org", "list", &format!("burst-{i}"), "x"))
        .collect();
    let refs: Vec<&[u8]> = raws.iter().map(Vec::as_slice).collect();
    servers
        .send_smtp_many("burst@example.org", &users, &refs)
        .await;
    for user in &users {
        servers.wait_for(user, "INBOX", 5, WAIT).await;
    }
}

#[test]
fn daemon_config_is_a_valid_config() {
    let servers = MailServers::start();
    let user = servers.unique_user("privacy");
    let config = DaemonConfig::new(servers, &user)
        .team_members(&["alice@example.com"])
        .team_notify(&["team@example.com"])
        .set("imap", "idle", "false")
        .extra("policy", "holidays = [\"2026-12-25\"]");
    let path = config.write();
    let text = std::fs::read_to_string(&path).expect("read the config back");
    assert!(
        text.contains(&format!("port = {}", servers.imaps_port())),
        "{text}"
    );
    let parsed: toml::Table = toml::from_str(&text).expect("valid TOML");
    assert_eq!(parsed["imap"]["idle"].as_bool(), Some(false));
    assert_eq!(parsed["smtp"]["security"].as_str(), Some("starttls"));
    assert_eq!(
        parsed["smtp"]["from"].as_str(),
        Some(format!("Privacy Team <{user}>").as_str())
    );
    // The daemon's own parser accepts it (key names match SPEC §9).
    privacy_mailroom::config::Config::parse(&text)
        .unwrap_or_else(|e| panic!("the daemon rejects the harness config: {e}\n{text}"));
}
