//! The real-world corpus through the whole daemon, on the real servers: every
//! message ends up as a case or in review (never lost, never a crash), and
//! automatic mail and bounces get no reply. A fifth of the messages are also
//! sent again with a request's subject line (and a new Message-ID), so odd
//! MIME, charsets and Outlook quirks must open cases too.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use privacy_mailroom::message;
use support::MailServers;
use support::corpus::{message_files, roots, to_crlf, with_subject};
use support::daemon::{self, DaemonConfig};

#[tokio::test(flavor = "multi_thread")]
async fn every_corpus_message_becomes_a_case_or_goes_to_review() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");

    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for root in roots() {
        for (i, path) in message_files(&root).iter().enumerate() {
            let raw =
                std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let raw = to_crlf(message::parse::strip_mbox_from_line(&raw));
            if i % 5 == 0 {
                let id = format!(
                    "<corpus-variant-{i}-{}@test.example>",
                    root.display().to_string().len()
                );
                inputs.push(with_subject(&raw, "California Request to Know", &id));
            }
            inputs.push(raw);
        }
    }
    assert!(
        inputs.len() > 50,
        "too few corpus messages: {}",
        inputs.len()
    );

    let mut session = servers.imap_session(&mailbox).await;
    let mut appended = Vec::new();
    let mut refused = 0;
    for raw in inputs {
        // A server may refuse truly broken bytes on APPEND; those never reach a mailbox.
        match session.append("INBOX", None, None, &raw).await {
            Ok(()) => appended.push(raw),
            Err(_) => refused += 1,
        }
    }
    let _ = session.logout().await;
    assert!(
        refused * 20 < appended.len(),
        "the server refused {refused} messages"
    );

    let config =
        DaemonConfig::new(servers, &mailbox).set("policy", "max_auto_replies_per_day", "1000");
    let path = config.write();
    let out = daemon::run_with_timeout(
        daemon::command(&path, &["run", "--once"]),
        Duration::from_secs(300),
    );
    support::assert_ok(&out, "run --once over the corpus");

    // Nothing left behind, nothing lost.
    assert_eq!(
        servers.count(&mailbox, "INBOX").await,
        0,
        "the inbox is drained"
    );
    let processed = servers.count(&mailbox, "Processed").await;
    let review = servers.count(&mailbox, "Review").await;
    assert_eq!(processed + review, appended.len(), "every message is filed");

    // Expected cases: request subject, a sender, not automatic.
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let mut automatic_senders = Vec::new();
    for raw in &appended {
        let parsed = message::parse(raw);
        let Some(from) = parsed.from.as_ref().map(|a| a.addr.clone()) else {
            continue;
        };
        if parsed.auto.is_some() {
            automatic_senders.push(from);
            continue;
        }
        // Requests from addresses that cannot be answered go to review instead.
        if parsed.subject == "California Request to Know"
            && privacy_mailroom::address::parse_mailbox(&from).is_some()
        {
            *expected.entry(from).or_default() += 1;
        }
    }
    let cases = support::cases_json(&path);
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for c in &cases {
        *got.entry(c["requester"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    for (from, n) in &expected {
        assert!(
            got.get(from).copied().unwrap_or(0) >= *n,
            "{from}: expected {n} cases, got {got:?}"
        );
    }
    assert!(!expected.is_empty());

    // No automatic reply to automatic mail.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", config.database_path().display()))
        .await
        .expect("open the database");
    let recipients: Vec<String> =
        sqlx::query_scalar("SELECT rate_key FROM outbox WHERE audience = 'consumer'")
            .fetch_all(&db)
            .await
            .expect("read the outbox");
    for sender in &automatic_senders {
        if got.contains_key(sender) {
            continue; // the same address also sent a real request
        }
        assert!(
            !recipients.contains(sender),
            "automatic mail from {sender} was answered"
        );
    }
    eprintln!(
        "corpus through the daemon: {} messages, {} cases, {processed} processed, {review} review, {refused} refused by the server",
        appended.len(),
        cases.len()
    );
}
