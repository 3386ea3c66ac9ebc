//! A burst's replies and their Sent copies, against the real Dovecot and
//! Postfix (issue 13): the outbox goes out over several SMTP connections at
//! once, each within `max_messages_per_connection`, and nobody gets a mail
//! twice; `smtp.sent_copy = "auto"` asks the Sent folder about a whole batch
//! at once and appends only the copies the server does not hold.
//!
//! A test binary of its own, so that Postfix's log holds only these sessions.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::Utc;
use privacy_mailroom::config::Config;
use privacy_mailroom::mailroom::Mailroom;
use privacy_mailroom::outbox::compose::{AutoSubmitted, Outgoing, compose};
use privacy_mailroom::store::{self, outbox::Audience};
use support::MailServers;
use support::daemon::{self, DaemonConfig};

/// How many SMTP sessions Postfix had open at most at the same time, and
/// how many messages each session carried (`data=N` when it ended), from
/// its log: `smtpd[PID]: connect from …` opens one, `disconnect from …`
/// closes it.
fn postfix_sessions(log: &str) -> (usize, Vec<usize>) {
    let mut open: HashMap<String, ()> = HashMap::new();
    let mut most = 0;
    let mut carried = Vec::new();
    for line in log.lines().filter(|l| l.contains("/smtpd[")) {
        let Some(pid) = line
            .split("/smtpd[")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
        else {
            continue;
        };
        if line.contains(": connect from ") {
            open.insert(pid.to_string(), ());
            most = most.max(open.len());
        } else if line.contains(": disconnect from ") {
            open.remove(pid);
            let data = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("data="))
                .and_then(|v| v.split('/').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            carried.push(data);
        }
    }
    (most, carried)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_replies_goes_out_over_several_connections_and_nobody_gets_one_twice() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumers: Vec<String> = (0..40)
        .map(|n| servers.unique_user(&format!("consumer{n}")))
        .collect();
    for consumer in &consumers {
        servers
            .append_request(&mailbox, consumer, "California Request to Know")
            .await;
    }
    let config = DaemonConfig::new(servers, &mailbox)
        .set("smtp", "connections", "4")
        .set("smtp", "max_messages_per_connection", "3");
    let path = config.write();
    support::assert_ok(&daemon::run_once(&path), "run --once");

    // Every consumer got exactly one acknowledgement.
    for consumer in &consumers {
        let got = servers.inbox_exactly(consumer, 1).await;
        assert!(
            support::mail::text_of(&got[0]).contains("CCPA-"),
            "{consumer} got something other than the acknowledgement"
        );
    }
    let (pending, sent, failed) = support::outbox_counts(&config.database_path()).await;
    assert_eq!((pending, sent, failed), (0, 40, 0));

    // Over several connections at once, none carrying more than allowed, and
    // Postfix took exactly one message per outbox row.
    let log_path = servers.dir().join("postfix.log");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let (most, carried) = support::wait_until(
        Duration::from_secs(10),
        || format!("Postfix logs the end of every session:\n{}", read_log()),
        || {
            let (most, carried) = postfix_sessions(&read_log());
            std::future::ready((carried.iter().sum::<usize>() >= 40).then_some((most, carried)))
        },
    )
    .await;
    // The daemon holds at most 4 connections (its semaphore is held until
    // a connection is closed). Postfix logs each session's end from its own
    // smtpd process, after the client has gone: a session closed after its
    // third mail can be logged as ending after the next one is logged as
    // starting, so the log may show one more than were open.
    assert!(
        (2..=5).contains(&most),
        "{most} SMTP sessions open at once in Postfix's log, expected 2 to 4 (5 when a closing session is logged late):\n{}",
        read_log()
    );
    assert!(
        carried.iter().all(|n| *n <= 3),
        "a session carried more than max_messages_per_connection: {carried:?}"
    );
    assert_eq!(carried.iter().sum::<usize>(), 40, "{carried:?}");

    // And every reply has its copy in Sent, once.
    assert_eq!(servers.count(&mailbox, "Sent").await, 40);
}

#[tokio::test(flavor = "multi_thread")]
async fn sent_copy_auto_appends_only_the_copies_the_sent_folder_lacks() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::new(servers, &mailbox).set_str("smtp", "sent_copy", "auto");
    let parsed = Config::parse(&config.to_toml()).expect("the test config parses");
    let room = Mailroom::open(parsed).await.expect("open the mailroom");

    // 70 mails sent a minute ago (more than one search of 32 Message-IDs);
    // the server already holds a copy of every third, as Gmail or Exchange
    // would. One sent just now waits: its server copy may still come.
    let now = Utc::now() - chrono::Duration::seconds(60);
    let mut raws: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for n in 0..70 {
        let message_id = format!("reply.{n}.{}@example.test", std::process::id());
        let raw = compose(&Outgoing {
            from: format!("Privacy Team <{mailbox}>"),
            reply_to: mailbox.clone(),
            to: vec![consumer.clone()],
            subject: format!("Your request CCPA-2026-{n:05}"),
            message_id: message_id.clone(),
            in_reply_to: None,
            references: Vec::new(),
            auto_submitted: AutoSubmitted::Replied,
            text: format!("We received your request {n}.\n"),
            html: None,
            date: now,
        })
        .expect("compose");
        let mut conn = room.store.conn().await.expect("a connection");
        let id = store::outbox::insert(
            &mut conn,
            &store::outbox::NewOutbox {
                case_id: None,
                message_id: &format!("<{message_id}>"),
                audience: Audience::Consumer,
                template: "acknowledgement",
                envelope_from: &mailbox,
                recipients: std::slice::from_ref(&consumer),
                rate_key: &consumer,
                subject: "Your request",
                raw: &raw,
                now,
            },
        )
        .await
        .expect("queue the mail");
        store::outbox::mark_sent(&mut conn, id, now)
            .await
            .expect("mark it sent");
        if n % 3 == 0 {
            servers.append(&mailbox, "Sent", &raw).await;
        }
        raws.insert(message_id, raw);
    }
    assert_eq!(servers.count(&mailbox, "Sent").await, 24);
    let young = {
        let raw = compose(&Outgoing {
            from: format!("Privacy Team <{mailbox}>"),
            reply_to: mailbox.clone(),
            to: vec![consumer.clone()],
            subject: "Your request CCPA-2026-00070".into(),
            message_id: format!("reply.young.{}@example.test", std::process::id()),
            in_reply_to: None,
            references: Vec::new(),
            auto_submitted: AutoSubmitted::Replied,
            text: "We received your request.\n".into(),
            html: None,
            date: Utc::now(),
        })
        .expect("compose");
        let mut conn = room.store.conn().await.expect("a connection");
        let id = store::outbox::insert(
            &mut conn,
            &store::outbox::NewOutbox {
                case_id: None,
                message_id: &format!("<reply.young.{}@example.test>", std::process::id()),
                audience: Audience::Consumer,
                template: "acknowledgement",
                envelope_from: &mailbox,
                recipients: std::slice::from_ref(&consumer),
                rate_key: &consumer,
                subject: "Your request",
                raw: &raw,
                now: Utc::now(),
            },
        )
        .await
        .expect("queue the mail");
        store::outbox::mark_sent(&mut conn, id, Utc::now())
            .await
            .expect("mark it sent");
        id
    };

    privacy_mailroom::sync::copy_to_sent(&room, &tokio_util::sync::CancellationToken::new())
        .await
        .expect("copy to Sent");

    // Each mail exactly once in Sent, and every row recorded as copied.
    let mut in_sent: BTreeMap<String, usize> = BTreeMap::new();
    for raw in servers.fetch_all(&mailbox, "Sent").await {
        let id = support::header(&raw, "Message-ID").unwrap_or_default();
        *in_sent
            .entry(id.trim_matches(['<', '>']).to_string())
            .or_default() += 1;
    }
    let want: BTreeMap<String, usize> = raws.keys().map(|id| (id.clone(), 1)).collect();
    assert_eq!(in_sent, want);
    let mut conn = room.store.conn().await.expect("a connection");
    let left = store::outbox::unappended(&mut conn, Utc::now(), 100)
        .await
        .expect("unappended rows");
    let left: Vec<i64> = left.into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        left,
        vec![young],
        "every settled row is marked copied; the one sent just now waits for the server's copy"
    );
}
