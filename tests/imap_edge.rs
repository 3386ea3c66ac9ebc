//! The network edges against real servers: the daemon's IMAP client and SMTP
//! sender talking to the private Dovecot + Postfix of `tests/support`.

mod support;

use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use privacy_mailroom::config::{ImapConfig, Secret, Security, SmtpConfig};
use privacy_mailroom::imap::{IdleOutcome, Imap, ImapError};
use privacy_mailroom::outbox::compose::{AutoSubmitted, Outgoing, compose};
use privacy_mailroom::outbox::smtp::{SendError, SmtpError, SmtpSender};
use support::MailServers;
use tokio_util::sync::CancellationToken;

const HOST: &str = "localhost";

fn imap_cfg(servers: &MailServers, user: &str, security: Security) -> ImapConfig {
    let port = match security {
        Security::Tls => servers.imaps_port(),
        Security::Starttls | Security::None => servers.imap_port(),
    };
    ImapConfig {
        host: HOST.into(),
        port,
        security,
        ca_file: Some(servers.ca_pem_path()),
        username: user.into(),
        secret: Secret::default(),
        mailbox: "INBOX".into(),
        processed_mailbox: "Processed".into(),
        review_mailbox: "Review".into(),
        sent_mailbox: "Sent".into(),
        idle: true,
        poll_interval_secs: 60,
        initial_backlog_days: 45,
        max_message_bytes: 52_428_800,
        max_mime_parts: 1000,
        max_mime_depth: 20,
        auth: Default::default(),
        max_connections: 6,
    }
}

fn smtp_cfg(servers: &MailServers, per_connection: u32) -> SmtpConfig {
    SmtpConfig {
        host: HOST.into(),
        port: servers.smtp_port(),
        security: Security::Starttls,
        ca_file: Some(servers.ca_pem_path()),
        username: None,
        secret: Secret::default(),
        from: "Privacy Team <privacy@example.test>".into(),
        max_messages_per_connection: per_connection,
        connections: 1,
        auth: Default::default(),
        sent_copy: Default::default(),
    }
}

async fn connect(servers: &MailServers, user: &str) -> Imap {
    Imap::connect(&imap_cfg(servers, user, Security::Tls), servers.password())
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
}

fn raw_message(n: usize) -> Vec<u8> {
    format!(
        "From: Consumer {n} <consumer{n}@example.net>\r\n\
         To: privacy@example.test\r\n\
         Subject: Request to know {n}\r\n\
         Message-ID: <req-{n}@example.net>\r\n\
         Date: Mon, 2 Mar 2026 10:00:00 +0000\r\n\
         \r\n\
         Please tell me what you hold about me ({n}).\r\n"
    )
    .into_bytes()
}

fn outgoing(to: &str, n: usize) -> Outgoing {
    Outgoing {
        from: "Privacy Team <privacy@example.test>".into(),
        reply_to: "privacy@example.test".into(),
        to: vec![to.into()],
        subject: format!("Your request CCPA-2026-{n:05}"),
        message_id: format!("ccpa.{n}.test@example.test"),
        in_reply_to: Some(format!("req-{n}@example.net")),
        references: vec![format!("req-{n}@example.net")],
        auto_submitted: AutoSubmitted::Replied,
        text: format!("We received your request {n}.\n"),
        html: Some(format!("<p>We received your request {n}.</p>")),
        date: Utc::now(),
    }
}

/// The flags of every message in `user`'s `mailbox`, seen by an independent
/// client.
async fn flags(servers: &MailServers, user: &str, mailbox: &str) -> Vec<Vec<String>> {
    use futures::TryStreamExt as _;
    let mut session = servers.imap_session(user).await;
    session.examine(mailbox).await.unwrap();
    let fetches: Vec<_> = session
        .uid_fetch("1:*", "(UID FLAGS)")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let _ = session.logout().await;
    fetches
        .iter()
        .map(|f| f.flags().map(|fl| format!("{fl:?}")).collect())
        .collect()
}

#[tokio::test]
async fn connects_with_tls_starttls_and_loopback_plain() {
    let servers = MailServers::start();
    let user = servers.unique_user("connect");
    for security in [Security::Tls, Security::Starttls, Security::None] {
        let cfg = imap_cfg(servers, &user, security);
        let imap = Imap::connect(&cfg, servers.password())
            .await
            .unwrap_or_else(|e| panic!("{security:?}: {e}"));
        assert!(
            imap.has_move() && imap.has_idle() && imap.has_uidplus(),
            "{imap:?}"
        );
        imap.logout().await.unwrap();
    }
}

#[tokio::test]
async fn unknown_ca_is_refused() {
    let servers = MailServers::start();
    let user = servers.unique_user("noca");
    for security in [Security::Tls, Security::Starttls] {
        let mut cfg = imap_cfg(servers, &user, security);
        cfg.ca_file = None;
        let err = Imap::connect(&cfg, servers.password()).await.unwrap_err();
        assert!(
            matches!(err, ImapError::Handshake { .. }),
            "{security:?}: {err}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("{HOST}:{}", cfg.port)), "{text}");
        assert!(text.contains("imap.ca_file"), "{text}");
    }
}

#[tokio::test]
async fn plain_text_off_loopback_and_bad_password_are_explained() {
    let servers = MailServers::start();
    let user = servers.unique_user("refuse");
    let mut cfg = imap_cfg(servers, &user, Security::None);
    cfg.host = "imap.example.com".into();
    let err = Imap::connect(&cfg, "x").await.unwrap_err();
    assert!(matches!(err, ImapError::PlainRefused { .. }), "{err}");

    let cfg = imap_cfg(servers, &user, Security::Tls);
    let err = Imap::connect(&cfg, "wrong password").await.unwrap_err();
    assert!(matches!(err, ImapError::Login { .. }), "{err}");
    assert!(err.to_string().contains("imap.password"), "{err}");
    assert!(!err.to_string().contains("wrong password"), "{err}");
}

#[tokio::test]
async fn lists_fetches_and_moves_by_uid() {
    let servers = MailServers::start();
    let user = servers.unique_user("move");
    let raws: Vec<Vec<u8>> = (1..=12).map(raw_message).collect();
    for raw in &raws {
        servers.append(&user, "INBOX", raw).await;
    }

    let mut imap = connect(servers, &user).await;
    let names = ["Processed", "Review", "Sent", "Geprüft"];
    imap.ensure_mailboxes(&names).await.unwrap();
    imap.ensure_mailboxes(&names).await.unwrap();
    let listed = servers.list_mailboxes(&user).await;
    for want in ["Processed", "Review", "Sent", "Gepr&APw-ft"] {
        assert!(listed.iter().any(|n| n == want), "{want} in {listed:?}");
    }

    let info = imap.select("INBOX").await.unwrap();
    assert!(info.uid_validity > 0);
    assert_eq!(info.exists, 12);
    assert_eq!(info.uid_next, Some(13));

    let all = imap.list_new(0, None).await.unwrap();
    assert_eq!(
        all.iter().map(|l| l.uid).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    for (l, raw) in all.iter().zip(&raws) {
        assert_eq!(l.size, Some(raw.len() as u32));
        assert!(l.internal_date.is_some());
    }
    // `13:*` would return UID 12 on the wire: it must not come back.
    assert!(imap.list_new(12, None).await.unwrap().is_empty());
    assert_eq!(imap.list_new(9, None).await.unwrap().len(), 3);

    let bodies = imap.fetch_bodies(&[3, 1, 2, 99]).await.unwrap();
    assert_eq!(
        bodies.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for (uid, body) in &bodies {
        assert_eq!(body, &raws[*uid as usize - 1]);
    }
    let uids: Vec<u32> = (1..=12).collect();
    assert_eq!(imap.fetch_bodies(&uids).await.unwrap().len(), 12);
    assert!(
        flags(servers, &user, "INBOX")
            .await
            .iter()
            .all(|f| !f.iter().any(|x| x.contains("Seen"))),
        "BODY.PEEK must not set \\Seen"
    );

    imap.move_uids(&[1, 2, 3, 5, 7, 8], "Processed")
        .await
        .unwrap();
    assert_eq!(servers.count(&user, "INBOX").await, 6);
    assert_eq!(servers.count(&user, "Processed").await, 6);

    imap.set_use_move(false);
    imap.move_uids(&[4, 6], "Review").await.unwrap();
    assert_eq!(servers.count(&user, "Review").await, 2);
    assert_eq!(servers.count(&user, "INBOX").await, 4);
    let left: Vec<u32> = imap
        .list_new(0, None)
        .await
        .unwrap()
        .iter()
        .map(|l| l.uid)
        .collect();
    assert_eq!(left, [9, 10, 11, 12]);
    let review = servers.fetch_all(&user, "Review").await;
    assert_eq!(review, [raws[3].clone(), raws[5].clone()]);

    imap.move_uids(&[], "Review").await.unwrap();
    imap.logout().await.unwrap();
}

#[tokio::test]
async fn backlog_window_uses_internal_date() {
    let servers = MailServers::start();
    let user = servers.unique_user("backlog");
    let now = Utc::now();
    servers
        .append_dated(&user, "INBOX", &raw_message(1), now - Days::new(60))
        .await;
    servers
        .append_dated(&user, "INBOX", &raw_message(2), now - Days::new(10))
        .await;
    servers.append(&user, "INBOX", &raw_message(3)).await;

    let mut imap = connect(servers, &user).await;
    imap.select("INBOX").await.unwrap();
    let since = (now - Days::new(45)).date_naive();
    let recent: Vec<u32> = imap
        .list_new(0, Some(since))
        .await
        .unwrap()
        .iter()
        .map(|l| l.uid)
        .collect();
    assert_eq!(recent, [2, 3]);
    let after: Vec<u32> = imap
        .list_new(2, Some(since))
        .await
        .unwrap()
        .iter()
        .map(|l| l.uid)
        .collect();
    assert_eq!(after, [3]);
    assert!(imap.list_new(3, Some(since)).await.unwrap().is_empty());
}

#[tokio::test]
async fn appends_sent_copies_as_seen() {
    let servers = MailServers::start();
    let user = servers.unique_user("sent");
    let raw = compose(&outgoing("consumer@example.net", 1)).unwrap();
    let mut imap = connect(servers, &user).await;
    imap.ensure_mailboxes(&["Sent"]).await.unwrap();
    imap.append("Sent", &raw, &["\\Seen"]).await.unwrap();
    assert_eq!(servers.fetch_all(&user, "Sent").await, [raw]);
    let flags = flags(servers, &user, "Sent").await;
    assert!(flags[0].iter().any(|f| f.contains("Seen")), "{flags:?}");
}

#[tokio::test]
async fn idle_wakes_on_delivery_and_stops_on_cancel() {
    let servers = MailServers::start();
    let user = servers.unique_user("idle");
    let mut imap = connect(servers, &user).await;
    let info = imap.select("INBOX").await.unwrap();
    assert_eq!(info.exists, 0);
    // An empty mailbox lists nothing, with and without the backlog window.
    assert!(imap.list_new(0, None).await.unwrap().is_empty());
    let today = Utc::now().date_naive();
    assert!(imap.list_new(0, Some(today)).await.unwrap().is_empty());
    let never = CancellationToken::new();

    assert_eq!(
        imap.idle_wait(Duration::from_millis(500), &never)
            .await
            .unwrap(),
        IdleOutcome::Timeout
    );

    let started = Instant::now();
    let deliver = {
        let user = user.clone();
        tokio::spawn(async move {
            let servers = MailServers::start();
            servers.wait_idle(&user, Duration::from_secs(30)).await;
            servers.append(&user, "INBOX", &raw_message(1)).await;
        })
    };
    let outcome = imap
        .idle_wait(Duration::from_secs(60), &never)
        .await
        .unwrap();
    deliver.await.unwrap();
    assert_eq!(outcome, IdleOutcome::NewData);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(imap.list_new(0, None).await.unwrap().len(), 1);

    // An EXISTS seen outside IDLE (our own APPEND to the selected mailbox)
    // makes the next wait return at once.
    imap.append("INBOX", &raw_message(2), &[]).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        imap.idle_wait(Duration::from_secs(60), &never)
            .await
            .unwrap(),
        IdleOutcome::NewData
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let idler = user.clone();
    tokio::spawn(async move {
        MailServers::start()
            .wait_idle(&idler, Duration::from_secs(30))
            .await;
        trigger.cancel();
    });
    let started = Instant::now();
    let outcome = imap
        .idle_wait(Duration::from_secs(60), &cancel)
        .await
        .unwrap();
    assert_eq!(outcome, IdleOutcome::Cancelled);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The session survives a cancelled IDLE.
    assert!(!imap.noop().await.unwrap());
    imap.logout().await.unwrap();
}

#[tokio::test]
async fn smtp_delivers_over_starttls_reconnecting_per_batch() {
    let servers = MailServers::start();
    let user = servers.unique_user("smtp");
    let sender = SmtpSender::new(&smtp_cfg(servers, 2), None).unwrap();
    sender.test_connection().await.unwrap();

    for n in 1..=5 {
        let raw = compose(&outgoing(&user, n)).unwrap();
        sender
            .send_raw("privacy@example.test", &[user.as_str()], &raw)
            .await
            .unwrap_or_else(|e| panic!("message {n}: {e}"));
    }
    sender.close().await;
    let got = servers
        .wait_for(&user, "INBOX", 5, Duration::from_secs(30))
        .await;
    let mut ids: Vec<String> = got
        .iter()
        .map(|raw| {
            let msg = mail_parser::MessageParser::default().parse(raw).unwrap();
            assert_eq!(
                msg.header_raw("Auto-Submitted").map(str::trim),
                Some("auto-replied")
            );
            msg.message_id().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    let want: Vec<String> = (1..=5)
        .map(|n| format!("ccpa.{n}.test@example.test"))
        .collect();
    assert_eq!(ids, want);

    // Postfix logs each session's commands: two sessions carried two
    // messages each, and none carried more (no other test here sends more
    // than one message per connection).
    let log_path = servers.dir().join("postfix.log");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    support::wait_until(
        Duration::from_secs(10),
        || format!("two 2-message sessions are logged:\n{}", read_log()),
        || {
            let log = read_log();
            assert!(
                !log.contains(" data=3"),
                "more than 2 messages on a connection:\n{log}"
            );
            std::future::ready((log.matches(" data=2 quit=1").count() >= 2).then_some(()))
        },
    )
    .await;
}

#[tokio::test]
async fn smtp_delivers_over_implicit_tls_and_refuses_an_unknown_ca() {
    let servers = MailServers::start();
    let user = servers.unique_user("smtps");
    let mut cfg = smtp_cfg(servers, 10);
    cfg.security = Security::Tls;
    cfg.port = servers.smtps_port();
    let sender = SmtpSender::new(&cfg, None).unwrap();
    sender.test_connection().await.unwrap();
    let raw = compose(&outgoing(&user, 1)).unwrap();
    sender
        .send_raw("privacy@example.test", &[user.as_str()], &raw)
        .await
        .unwrap_or_else(|e| panic!("send over SMTPS: {e}"));
    sender.close().await;
    servers.inbox_exactly(&user, 1).await;

    cfg.ca_file = None;
    let untrusting = SmtpSender::new(&cfg, None).unwrap();
    assert!(untrusting.test_connection().await.is_err());
    let err = untrusting
        .send_raw("privacy@example.test", &[user.as_str()], &raw)
        .await
        .unwrap_err();
    assert!(
        !err.is_permanent(),
        "a TLS failure is retried, not final: {err}"
    );
}

#[tokio::test]
async fn smtp_errors_are_classified() {
    let servers = MailServers::start();
    let user = servers.unique_user("smtp5xx");

    // 5xx from Postfix: a recipient domain lettre accepts but Postfix rejects
    // ("501 5.1.3 Bad recipient address syntax").
    let sender = SmtpSender::new(&smtp_cfg(servers, 10), None).unwrap();
    let raw = compose(&outgoing(&user, 1)).unwrap();
    let err = sender
        .send_raw("privacy@example.test", &["someone@300.1.1.1"], &raw)
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Permanent(_)), "{err}");
    assert!(
        err.to_string().contains("501"),
        "Postfix's verdict is kept: {err}"
    );
    // The connection is replaced and the next message goes through.
    sender
        .send_raw("privacy@example.test", &[user.as_str()], &raw)
        .await
        .unwrap();
    servers
        .wait_for(&user, "INBOX", 1, Duration::from_secs(30))
        .await;

    // Unknown CA: a configuration problem, so transient for the outbox.
    let mut cfg = smtp_cfg(servers, 10);
    cfg.ca_file = None;
    let untrusting = SmtpSender::new(&cfg, None).unwrap();
    let err = untrusting.test_connection().await.unwrap_err();
    assert!(matches!(err, SmtpError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("smtp.ca_file"), "{err}");
    let err = untrusting
        .send_raw("privacy@example.test", &[user.as_str()], &raw)
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Unreachable(_)), "{err}");

    // Nothing listening: unreachable too (retried, never final).
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = smtp_cfg(servers, 10);
    cfg.host = "127.0.0.1".into();
    cfg.port = free.local_addr().unwrap().port();
    cfg.security = Security::None;
    drop(free);
    let closed = SmtpSender::new(&cfg, None).unwrap();
    let err = closed
        .send_raw("privacy@example.test", &[user.as_str()], &raw)
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Unreachable(_)), "{err}");
}
