//! Hostile and faulty mail (issue 12), against the real Dovecot and Postfix:
//! a notify address Postfix refuses at RCPT, a command with a forged
//! `Authentication-Results` below the MX's own, two instances on one
//! database, an SMTP outage, a dying sender task, and start-up refusals.

mod support;

use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::daemon::{self, DaemonConfig};
use support::mail::{self, Reply};
use support::{MX_AUTHSERV_ID, MailServers};

/// Collects `STATUS=` lines from a notify socket until one satisfies `want`.
fn wait_for_status(socket: &UnixDatagram, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                if let Some(status) = line.strip_prefix("STATUS=") {
                    if want(status) {
                        return status.to_string();
                    }
                    seen.push(status.to_string());
                }
            }
        }
    }
    panic!("no STATUS line with {what}; saw {seen:?}");
}

fn notify_socket(config: &DaemonConfig) -> (UnixDatagram, std::path::PathBuf) {
    let path = config.dir().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (socket, path)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notify_address_refused_at_rcpt_does_not_stop_team_mail() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let alice = servers.unique_user("alice");
    let bob = servers.unique_user("bob");
    let gone = servers.refused_user();
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::new(servers, &mailbox)
        .team_members(&[&alice])
        .team_notify(&[&alice, &gone, &bob])
        .set_str("team", "digest_time", "00:00");
    let path = config.write();

    servers.smtp_request(&mailbox, &consumer).await;
    let log = support::run_once_ok(&path);
    let cases = support::cases_json(&path);
    assert_eq!(cases.len(), 1, "{log}");
    let id = cases[0]["id"].as_str().unwrap().to_string();

    // The others get the notice, each in a transaction of their own.
    let notice = servers
        .mail_with_subject(&alice, &id, Duration::from_secs(60))
        .await;
    let to_bob = servers
        .mail_with_subject(&bob, &id, Duration::from_secs(60))
        .await;
    assert_eq!(
        support::header(&notice, "Message-ID"),
        support::header(&to_bob, "Message-ID"),
        "one notice, delivered per recipient"
    );
    servers.inbox_exactly(&consumer, 1).await;
    assert!(
        log.contains("Recipient refused for good; the others still get the mail."),
        "{log}"
    );
    assert!(!log.contains(&gone), "no address in the log: {log}");

    // `check` names the refused address while it is still configured.
    let (_, lines, _) = support::check_json(&path);
    let team_mail: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["name"] == "team mail").collect();
    assert!(
        team_mail.iter().any(|l| l["ok"] == false
            && l["detail"].as_str().unwrap_or("").contains(&gone)
            && l["detail"].as_str().unwrap_or("").contains("team.notify")),
        "{lines:#?}"
    );

    // The next digest lists it (the first went out before the refusal).
    support::reset_schedule(&config.database_path(), "digest").await;
    support::run_once_ok(&path);
    let deadline = Instant::now() + Duration::from_secs(60);
    let digest = loop {
        let all = servers.fetch_all(&bob, "INBOX").await;
        if let Some(d) = all
            .iter()
            .find(|m| mail::text_of(m).contains("Team mail refused"))
        {
            break d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no digest naming refused team mail"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = mail::text_of(&digest);
    assert!(text.contains(&gone), "{text}");
    assert!(text.contains("550"), "{text}");

    // The status line shows it too.
    let (socket, socket_path) = notify_socket(&config);
    let mut cmd = daemon::command(&path, &["run"]);
    cmd.env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID");
    let mut d = daemon::spawn_with(cmd, &path);
    let status = wait_for_status(&socket, "refused team mail", |s| {
        s.contains("team mail recipients refused")
    });
    assert!(status.contains("open cases"), "{status}");
    assert!(
        d.terminate(Duration::from_secs(10)).success(),
        "{}",
        d.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_authentication_results_below_the_mxs_own_is_ignored() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    // Both accounts submit through the MX, which writes who logged in.
    let alice = servers.authenticated_user("alice");
    let bob = servers.authenticated_user("bob");
    let notify = servers.unique_user("team");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::new(servers, &mailbox)
        .team_members(&[&alice, &bob])
        .team_notify(&[&notify])
        .set("team", "require_dkim", "true")
        .set(
            "team",
            "trusted_authserv_ids",
            format!("[\"{MX_AUTHSERV_ID}\"]"),
        );
    let path = config.write();
    servers.smtp_request(&mailbox, &consumer).await;
    support::run_once_ok(&path);
    let id = support::first_case_id(&path);
    let notice = servers
        .mail_with_subject(&notify, &id, Duration::from_secs(60))
        .await;

    // Bob, logged in as himself, writes From: Alice and adds a forged
    // "dkim=pass" in our MX's name. The MX puts its own verdict on top.
    let forged = {
        let raw = mail::reply(&alice, &notice, Reply::Gmail, "#note forged by bob");
        let mut out = format!(
            "Authentication-Results: {MX_AUTHSERV_ID}; dkim=pass header.d=example.test header.s=s1\r\n"
        )
        .into_bytes();
        out.extend_from_slice(&raw);
        out
    };
    servers.send_smtp(&bob, &[&mailbox], &forged).await;
    servers
        .wait_for(&mailbox, "INBOX", 1, Duration::from_secs(20))
        .await;
    let stored = servers.fetch_all(&mailbox, "INBOX").await;
    let first_ar = support::header(&stored[0], "Authentication-Results").unwrap_or_default();
    assert!(
        first_ar.contains("auth=pass") && first_ar.contains(&bob),
        "the MX's own header is on top: {first_ar}"
    );
    support::run_once_ok(&path);
    let events = support::case_json(&path, &id)["events"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        events.iter().any(|e| e["action"] == "command_refused"),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| e["action"] == "note"),
        "the forged command ran: {events:#?}"
    );
    // Alice, whose name was used, hears of it at her own address.
    let refused = servers
        .wait_for(&alice, "INBOX", 1, Duration::from_secs(30))
        .await;
    assert!(
        mail::text_of(&refused[0]).contains("Authentication-Results"),
        "{}",
        mail::text_of(&refused[0])
    );

    // Alice herself, through the MX: executed, and the result comes to her.
    let genuine = mail::reply(&alice, &notice, Reply::Gmail, "#note genuine");
    servers.send_smtp(&alice, &[&mailbox], &genuine).await;
    servers
        .wait_for(&mailbox, "INBOX", 1, Duration::from_secs(20))
        .await;
    support::run_once_ok(&path);
    let events = support::case_json(&path, &id)["events"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        events.iter().any(
            |e| e["action"] == "note" && e["detail"].as_str().unwrap_or("").contains("genuine")
        ),
        "{events:#?}"
    );
    servers
        .wait_for(&alice, "INBOX", 2, Duration::from_secs(30))
        .await;
    servers.inbox_exactly(&bob, 0).await;

    // With authentication off, `check` warns (and still passes that line).
    let open = DaemonConfig::new(servers, &mailbox).team_members(&[&alice]);
    let open_path = open.write();
    let (_, lines, _) = support::check_json(&open_path);
    let line = lines
        .iter()
        .find(|l| l["name"] == "team commands")
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(line["ok"], true);
    assert_eq!(line["warning"], true);
    assert!(
        line["detail"]
            .as_str()
            .unwrap_or("")
            .contains("require_dkim"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_on_the_same_database_is_refused_with_the_holders_pid() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    let lock = {
        let mut p = config.database_path().into_os_string();
        p.push(".lock");
        std::path::PathBuf::from(p)
    };
    let mut first = daemon::spawn(&path);
    let pid = first.pid();
    support::wait_for_condition(
        "the daemon holds the lease",
        Duration::from_secs(60),
        || std::fs::read_to_string(&lock).is_ok_and(|t| t.trim() == pid.to_string()),
        String::new,
    )
    .await;

    for args in [&["run", "--once"][..], &["run"][..]] {
        let out = daemon::run_with_timeout(daemon::command(&path, args), Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");
        assert!(
            stderr.contains("already") || stderr.contains("another"),
            "{stderr}"
        );
    }
    assert!(first.try_status().is_none(), "the holder keeps running");

    // A crashed holder leaves nothing stale: the kernel drops the lock.
    first.kill();
    support::run_once_ok(&path);
    let mut second = daemon::spawn(&path);
    let pid2 = second.pid();
    support::wait_for_condition(
        "the new daemon holds the lease",
        Duration::from_secs(60),
        || std::fs::read_to_string(&lock).is_ok_and(|t| t.trim() == pid2.to_string()),
        String::new,
    )
    .await;
    second.kill();
}

/// Forwards every connection on `listener` to `target` (Postfix), so the
/// daemon's SMTP port starts answering in the middle of a run.
fn forward(listener: TcpListener, target: u16) {
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            let (mut c1, mut s1) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
                let _ = s1.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn an_smtp_outage_is_logged_once_and_counted_in_the_status_line() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    // A port nobody listens on, until the test forwards it to Postfix.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = DaemonConfig::new(servers, &mailbox)
        .smtp_security("none")
        .smtp_port(port)
        .unset("smtp", "ca_file");
    let path = config.write();
    let (socket, socket_path) = notify_socket(&config);
    let mut cmd = daemon::command(&path, &["run"]);
    cmd.env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID");
    let mut d = daemon::spawn_with(cmd, &path);

    let consumers: Vec<String> = (0..3).map(|_| servers.unique_user("consumer")).collect();
    for c in &consumers {
        servers
            .send_smtp(
                c,
                &[&mailbox],
                &mail::request(c, &mailbox, "California Request to Delete", "Hi\n"),
            )
            .await;
    }
    let status = wait_for_status(&socket, "three mails waiting", |s| {
        s.contains("(3 waiting for the SMTP server)")
    });
    assert!(status.contains("3 mails in the outbox"), "{status}");

    // The server comes back.
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("take over the closed port");
    forward(listener, servers.smtp_port());
    for c in &consumers {
        servers
            .wait_for(c, "INBOX", 1, Duration::from_secs(90))
            .await;
    }
    wait_for_status(&socket, "an empty outbox", |s| s.contains("outbox empty"));
    assert!(
        d.terminate(Duration::from_secs(10)).success(),
        "{}",
        d.log()
    );
    let log = d.log();
    assert_eq!(
        log.matches("SMTP server unreachable").count(),
        1,
        "one line when the outage starts:\n{log}"
    );
    assert_eq!(
        log.matches("SMTP server reachable again").count(),
        1,
        "one line when it ends:\n{log}"
    );
    assert!(
        !log.contains("Delivery deferred"),
        "no line per mail and attempt:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_exits_non_zero_when_the_sender_task_dies() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    let mut cmd = daemon::command(&path, &["run"]);
    support::daemon::require_fault_points();
    cmd.env("PRIVACY_MAILROOM_FAULT", "sender_panic");
    let mut d = daemon::spawn_with(cmd, &path);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = d.try_status() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(1), "{}", d.log());
    assert!(d.log().contains("outbox sender stopped"), "{}", d.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_key_file_and_dkim_without_trusted_servers_are_refused_at_start() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::new(servers, &mailbox);
    let key = config.dir().join("message-id.key");
    std::fs::write(&key, b"0123456789").unwrap();
    let config = config.set_str("storage", "key_file", &key.display().to_string());
    let path = config.write();
    let out = daemon::run_once(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("storage.key_file") && stderr.contains("10 bytes"),
        "{stderr}"
    );

    let config = DaemonConfig::new(servers, &mailbox).set("team", "require_dkim", "true");
    let path = config.write();
    let out = daemon::run_once(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("team.trusted_authserv_ids"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_is_recorded_after_a_long_database_lock_and_not_sent_twice() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    let mut d = daemon::spawn(&path);
    servers
        .send_smtp(
            &consumer,
            &[&mailbox],
            &mail::request(&consumer, &mailbox, "California Request to Know", "Hi\n"),
        )
        .await;
    servers
        .wait_for(&consumer, "INBOX", 1, Duration::from_secs(60))
        .await;
    let id = support::first_case_id(&path);

    // A decision from the CLI queues mail; then another process holds the
    // database's write lock well past the pool's 5 s busy timeout while the
    // daemon sends it (the fault under test is the lock's duration).
    support::assert_ok(
        &daemon::cli(&path, &["cases", "act", &id, "deny", "--reason", "test"]),
        "cases act deny",
    );
    let url = format!("sqlite://{}", config.database_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut lock = pool.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    servers
        .wait_for(&consumer, "INBOX", 2, Duration::from_secs(60))
        .await;
    let sent_at = Instant::now();
    while sent_at.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sqlx::query("COMMIT").execute(&mut *lock).await.unwrap();
    drop(lock);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status = 'pending'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the delivery was never recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pool.close().await;
    servers.inbox_exactly(&consumer, 2).await;
    assert!(
        d.terminate(Duration::from_secs(10)).success(),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("not yet recorded"), "{}", d.log());
}
