//! Case lifecycle by e-mail on real servers (issue 3): verification, deletion
//! confirmation, denial, extension and completion, threaded and hijack-proof.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::MailServers;
use support::daemon::{self, DaemonConfig};
use support::mail::{self, Reply};

/// Requester sends a request; the daemon acknowledges it. Returns the case id
/// and the acknowledgement.
async fn open_case(
    servers: &MailServers,
    path: &Path,
    mailbox: &str,
    consumer: &str,
    subject: &str,
) -> (String, Vec<u8>) {
    let request = mail::request(consumer, mailbox, subject, "Please handle my request.\n");
    servers.send_smtp(consumer, &[mailbox], &request).await;
    servers
        .wait_for(mailbox, "INBOX", 1, Duration::from_secs(20))
        .await;
    support::assert_ok(&daemon::run_once(path), "run --once");
    let ack = servers
        .wait_for(consumer, "INBOX", 1, Duration::from_secs(30))
        .await
        .pop()
        .expect("acknowledgement");
    let case = support::cases_json(path)
        .into_iter()
        .find(|c| c["requester"] == consumer)
        .expect("case opened");
    (case["id"].as_str().unwrap_or_default().to_string(), ack)
}

/// The newest mail in the consumer's inbox once there are `n`.
async fn nth_mail(servers: &MailServers, who: &str, n: usize) -> Vec<u8> {
    let mut all = servers
        .wait_for(who, "INBOX", n, Duration::from_secs(30))
        .await;
    assert_eq!(all.len(), n, "{who} has {} mails, expected {n}", all.len());
    all.pop().unwrap_or_default()
}

fn state(path: &Path, id: &str) -> Value {
    support::case_json(path, id)
}

async fn deliver(servers: &MailServers, path: &Path, from: &str, mailbox: &str, raw: &[u8]) {
    servers.send_smtp(from, &[mailbox], raw).await;
    servers
        .wait_for(mailbox, "INBOX", 1, Duration::from_secs(20))
        .await;
    support::assert_ok(&daemon::run_once(path), "run --once");
}

#[tokio::test(flavor = "multi_thread")]
async fn know_request_verified_by_gmail_reply_then_denied_with_reason() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    let (id, ack) = open_case(
        servers,
        &path,
        &mailbox,
        &consumer,
        "California Request to Know",
    )
    .await;
    let code = mail::verification_code(&ack).expect("the acknowledgement carries a code");

    // Gmail-style: new text on top, our mail quoted below "On … wrote:".
    let reply = mail::reply(
        &consumer,
        &ack,
        Reply::Gmail,
        "Jane Doe, 1 Main St, Sacramento CA. I live in California.",
    );
    deliver(servers, &path, &consumer, &mailbox, &reply).await;
    let c = state(&path, &id);
    assert_eq!(c["state"], "verification_submitted", "{c:#}");
    assert!(
        c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["direction"] == "in")
            .count()
            >= 2,
        "the consumer's answer is stored on the case"
    );
    assert!(!code.is_empty());

    let out = daemon::cli(
        &path,
        &[
            "cases",
            "act",
            &id,
            "deny",
            "--reason",
            "We could not confirm California residency.",
            "--by",
            "alice@example.com",
        ],
    );
    support::assert_ok(&out, "cases act deny");
    support::assert_ok(&daemon::run_once(&path), "deliver");
    let denial = nth_mail(servers, &consumer, 2).await;
    let body = mail::text_of(&denial);
    assert!(
        body.contains("We could not confirm California residency."),
        "{body}"
    );
    assert!(
        support::header(&denial, "Subject")
            .unwrap_or_default()
            .contains(&format!("[{id}]"))
    );
    let c = state(&path, &id);
    assert_eq!(c["state"], "denied");
    assert!(c["closed_at"].is_string());
    let events = c["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "deny" && e["actor"] == "alice@example.com"),
        "{events:#?}"
    );
    let templates: Vec<&str> = c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["template"].as_str())
        .collect();
    assert!(
        templates.contains(&"acknowledgement") && templates.contains(&"denial"),
        "{templates:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_request_confirmed_and_completed_through_outlook_and_gmail_replies() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let stranger = servers.unique_user("stranger");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    let (id, ack) = open_case(
        servers,
        &path,
        &mailbox,
        &consumer,
        "California Request to Delete",
    )
    .await;
    let code = mail::verification_code(&ack).expect("code");

    // Outlook-style, threaded by the subject tag only: the code quoted in the original counts.
    let reply = mail::reply(
        &consumer,
        &ack,
        Reply::OutlookTagOnly,
        "Here are my details: Jane Doe, Fresno, California resident.",
    );
    assert!(String::from_utf8_lossy(&reply).contains(&code));
    deliver(servers, &path, &consumer, &mailbox, &reply).await;
    assert_eq!(state(&path, &id)["state"], "verification_submitted");

    support::assert_ok(
        &daemon::cli(&path, &["cases", "act", &id, "verify"]),
        "verify",
    );
    support::assert_ok(&daemon::run_once(&path), "deliver");
    let confirm_request = nth_mail(servers, &consumer, 2).await;
    assert!(mail::text_of(&confirm_request).contains("CONFIRM"));
    assert_eq!(state(&path, &id)["state"], "awaiting_confirmation");

    // A stranger with the case tag and CONFIRM changes nothing.
    let subject = support::header(&confirm_request, "Subject").unwrap_or_default();
    let hijack = mail::request(&stranger, &mailbox, &format!("Re: {subject}"), "CONFIRM\n");
    deliver(servers, &path, &stranger, &mailbox, &hijack).await;
    assert_eq!(
        state(&path, &id)["state"],
        "awaiting_confirmation",
        "a stranger cannot confirm"
    );
    assert!(
        servers
            .fetch_all(&mailbox, "Review")
            .await
            .iter()
            .any(|m| mail::text_of(m).contains("CONFIRM"))
    );
    assert_eq!(
        servers.count(&stranger, "INBOX").await,
        0,
        "no answer to the stranger"
    );

    // Outlook-style reply quoting our instruction ("reply … CONFIRM") without confirming.
    let noncommittal = mail::reply(
        &consumer,
        &confirm_request,
        Reply::Outlook,
        "Thanks, I will think about it.",
    );
    deliver(servers, &path, &consumer, &mailbox, &noncommittal).await;
    assert_eq!(
        state(&path, &id)["state"],
        "awaiting_confirmation",
        "quoted instruction is no confirmation"
    );

    // Gmail-style CONFIRM.
    let yes = mail::reply(&consumer, &confirm_request, Reply::Gmail, "CONFIRM");
    deliver(servers, &path, &consumer, &mailbox, &yes).await;
    assert_eq!(state(&path, &id)["state"], "confirmed");

    support::assert_ok(
        &daemon::cli(&path, &["cases", "act", &id, "complete"]),
        "complete",
    );
    support::assert_ok(&daemon::run_once(&path), "deliver");
    let done = nth_mail(servers, &consumer, 3).await;
    let body = mail::text_of(&done).to_lowercase();
    assert!(
        body.contains("deleted") && body.contains("record"),
        "{body}"
    );
    let c = state(&path, &id);
    assert_eq!(c["state"], "completed");
    assert!(c["verified_at"].is_string() && c["closed_at"].is_string());

    // A later message in the closed thread: recorded, the team told, at most one automatic answer.
    for n in 0..2 {
        let late = mail::reply(
            &consumer,
            &done,
            Reply::Gmail,
            &format!("One more question {n}."),
        );
        deliver(servers, &path, &consumer, &mailbox, &late).await;
    }
    assert_eq!(state(&path, &id)["state"], "completed");
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    assert_eq!(
        servers.count(&consumer, "INBOX").await,
        4,
        "exactly one answer to mail in a closed case"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn extension_moves_due_date_once_and_reminder_goes_out_once() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    let (id, _ack) = open_case(
        servers,
        &path,
        &mailbox,
        &consumer,
        "California Request to Know",
    )
    .await;
    let before = state(&path, &id);
    let due_before =
        chrono::DateTime::parse_from_rfc3339(before["due_at"].as_str().unwrap()).unwrap();

    let out = daemon::cli(
        &path,
        &[
            "cases",
            "act",
            &id,
            "extend",
            "--reason",
            "We need to search archived systems.",
        ],
    );
    support::assert_ok(&out, "extend");
    support::assert_ok(&daemon::run_once(&path), "deliver");
    let notice = nth_mail(servers, &consumer, 2).await;
    let body = mail::text_of(&notice);
    assert!(
        body.contains("We need to search archived systems."),
        "{body}"
    );
    let after = state(&path, &id);
    let due_after =
        chrono::DateTime::parse_from_rfc3339(after["due_at"].as_str().unwrap()).unwrap();
    assert_eq!((due_after - due_before).num_days(), 45);
    assert_eq!(after["extended"], true);

    let again = daemon::cli(
        &path,
        &["cases", "act", &id, "extend", "--reason", "More time."],
    );
    assert_eq!(
        again.status.code(),
        Some(2),
        "a second extension is refused"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already extended"));
    assert!(
        state(&path, &id)["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "refused")
    );

    // Eight days pass without an answer: one reminder, not two.
    support::shift_case_times(&config.database_path(), &id, chrono::Duration::days(-8)).await;
    support::assert_ok(&daemon::run_once(&path), "scheduler run 1");
    support::assert_ok(&daemon::run_once(&path), "scheduler run 2");
    let reminder = nth_mail(servers, &consumer, 3).await;
    assert!(
        support::header(&reminder, "Subject")
            .unwrap_or_default()
            .contains(&id)
    );
    assert_eq!(
        support::header(&reminder, "Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    assert_eq!(
        servers.count(&consumer, "INBOX").await,
        3,
        "the reminder goes out once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cli_decision_is_mailed_by_the_running_daemon() {
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
            &mail::request(&consumer, &mailbox, "California Request to Delete", "Hi\n"),
        )
        .await;
    let consumer_ref = &consumer;
    support::wait_until(
        Duration::from_secs(30),
        || format!("an acknowledgement arrives; daemon log:\n{}", d.log()),
        || async move { (servers.count(consumer_ref, "INBOX").await >= 1).then_some(()) },
    )
    .await;
    let id = support::cases_json(&path)[0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Another process (the CLI) writes to the outbox; the daemon sends it.
    support::assert_ok(
        &daemon::cli(&path, &["cases", "act", &id, "verify"]),
        "verify",
    );
    let got = servers
        .wait_for(&consumer, "INBOX", 2, Duration::from_secs(20))
        .await;
    assert!(mail::text_of(&got[1]).contains("CONFIRM"), "{}", d.log());
    assert!(d.terminate(Duration::from_secs(10)).success());
}
