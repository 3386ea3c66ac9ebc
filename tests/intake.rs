//! The walking skeleton on real servers (issue 2): requests land in the
//! privacy mailbox, the daemon opens cases, acknowledges them over SMTP and
//! files the originals; automatic mail gets nothing; nothing is done twice.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::MailServers;
use support::daemon::{self, DaemonConfig};

fn mail(from: &str, to: &str, subject: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    support::mail::message(from, to, subject, extra_headers, body)
}

fn message_id_of(raw: &[u8]) -> String {
    support::header(raw, "Message-ID").expect("message has a Message-ID")
}

fn cases_json(config: &std::path::Path) -> Vec<Value> {
    support::cases_json(config)
}

fn assert_ok(out: &std::process::Output, what: &str) {
    support::assert_ok(out, what)
}

#[tokio::test(flavor = "multi_thread")]
async fn mailbox_of_requests_becomes_cases_and_acknowledgements() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let know = servers.unique_user("know");
    let delete = servers.unique_user("delete");
    let shouty = servers.unique_user("shouty");
    let opt = servers.unique_user("optout");
    let asker = servers.unique_user("asker");
    let vacation = servers.unique_user("vacation");
    let bounce_from = format!("MAILER-DAEMON@{}", "bounce.example.test");

    let know_raw = mail(
        &know,
        &mailbox,
        "=?UTF-8?B?Q2FsaWZvcm5pYSBSZXF1ZXN0IHRvIEtub3c=?=",
        "",
        "Please tell me what you hold about me.\n",
    );
    let delete_raw = mail(
        &delete,
        &mailbox,
        "Fwd: [web] california request to delete",
        "",
        "Delete my data.\n",
    );
    let shouty_raw = mail(
        &shouty,
        &mailbox,
        "AW: CALIFORNIA\r\n REQUEST TO KNOW",
        "",
        "Hello.\n",
    );
    let opt_raw = mail(
        &opt,
        &mailbox,
        "Do Not Sell my information",
        "",
        "Opt me out.\n",
    );
    let question_raw = mail(
        &asker,
        &mailbox,
        "Question about my order",
        "",
        "Where is my parcel?\n",
    );
    let auto_raw = mail(
        &vacation,
        &mailbox,
        "Re: California Request to Know",
        "Auto-Submitted: auto-replied",
        "I am out of office.\n",
    );
    let bounce_raw = mail(
        &bounce_from,
        &mailbox,
        "Undelivered Mail Returned to Sender",
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"",
        "--b1\nContent-Type: text/plain\n\nThe mail could not be delivered.\n--b1\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.test\n\nFinal-Recipient: rfc822; gone@example.test\nAction: failed\nStatus: 5.1.1\n--b1--\n",
    );

    // Through Postfix like real mail, and by APPEND.
    servers.send_smtp(&know, &[&mailbox], &know_raw).await;
    servers.send_smtp(&delete, &[&mailbox], &delete_raw).await;
    servers.append(&mailbox, "INBOX", &shouty_raw).await;
    servers.append(&mailbox, "INBOX", &opt_raw).await;
    servers.append(&mailbox, "INBOX", &question_raw).await;
    servers.append(&mailbox, "INBOX", &auto_raw).await;
    servers.append(&mailbox, "INBOX", &bounce_raw).await;
    servers
        .wait_for(&mailbox, "INBOX", 7, Duration::from_secs(20))
        .await;

    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    assert_ok(&daemon::run_once(&path), "run --once");

    let cases = cases_json(&path);
    assert_eq!(cases.len(), 4, "one case per request: {cases:#?}");
    let kind_of = |who: &str| -> Vec<String> {
        cases
            .iter()
            .filter(|c| c["requester"] == who)
            .map(|c| c["kind"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(kind_of(&know), ["know"]);
    assert_eq!(kind_of(&delete), ["delete"]);
    assert_eq!(kind_of(&shouty), ["know"]);
    assert_eq!(kind_of(&opt), ["opt_out"]);
    for c in &cases {
        let id = c["id"].as_str().unwrap();
        assert!(
            id.starts_with("CCPA-") && id.len() == "CCPA-2026-00001".len(),
            "case id {id}"
        );
        assert!(c["received_at"].is_string() && c["due_at"].is_string());
        if c["kind"] == "opt_out" {
            // No verification (CCPA regs §7026(d)): open for the team to carry out.
            assert_eq!(c["state"], "verified");
            assert!(c["closed_at"].is_null());
        } else {
            assert_eq!(c["state"], "awaiting_verification");
            assert!(c["acknowledged_at"].is_string());
        }
    }

    // Exactly one acknowledgement per requester, threaded to the request.
    for (who, request) in [
        (&know, &know_raw),
        (&delete, &delete_raw),
        (&shouty, &shouty_raw),
        (&opt, &opt_raw),
    ] {
        let got = servers
            .wait_for(who, "INBOX", 1, Duration::from_secs(30))
            .await;
        assert_eq!(got.len(), 1, "{who} got {} mails", got.len());
        let reply = &got[0];
        let case = cases
            .iter()
            .find(|c| c["requester"] == who.as_str())
            .unwrap();
        let tag = format!("[{}]", case["id"].as_str().unwrap());
        let subject = support::header(reply, "Subject").unwrap_or_default();
        assert!(subject.contains(&tag), "subject {subject:?} carries {tag}");
        let request_id = message_id_of(request);
        assert_eq!(
            support::header(reply, "In-Reply-To").as_deref(),
            Some(request_id.as_str())
        );
        assert!(
            support::header(reply, "References")
                .unwrap_or_default()
                .contains(&request_id)
        );
        assert_eq!(
            support::header(reply, "Auto-Submitted").as_deref(),
            Some("auto-replied")
        );
        assert!(support::header(reply, "Message-ID").is_some());
    }
    // No reply to the question, the auto-reply or the bounce.
    for who in [&asker, &vacation] {
        assert_eq!(
            servers.count(who, "INBOX").await,
            0,
            "{who} must get nothing"
        );
    }

    // Filed: inbox empty, the question and the automatic mail in review.
    assert_eq!(servers.count(&mailbox, "INBOX").await, 0);
    let review = servers.fetch_all(&mailbox, "Review").await;
    let review_subjects: Vec<String> = review
        .iter()
        .map(|m| support::header(m, "Subject").unwrap_or_default())
        .collect();
    assert!(
        review_subjects
            .iter()
            .any(|s| s == "Question about my order"),
        "{review_subjects:?}"
    );
    assert_eq!(servers.count(&mailbox, "Processed").await + review.len(), 7);
    // Copies of what was sent are in Sent.
    assert_eq!(servers.count(&mailbox, "Sent").await, 4);

    // A second run changes nothing.
    assert_ok(&daemon::run_once(&path), "second run --once");
    assert_eq!(cases_json(&path).len(), 4);
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    for who in [&know, &delete, &shouty, &opt] {
        assert_eq!(
            servers.count(who, "INBOX").await,
            1,
            "{who} got a second mail"
        );
    }
    assert_eq!(servers.count(&mailbox, "Sent").await, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_arriving_while_idle_is_acknowledged_within_seconds() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    // Once it is ready, the daemon has taken in the (empty) inbox and waits in IDLE.
    let mut d = daemon::spawn_ready(&path, Duration::from_secs(30));
    let started = std::time::Instant::now();
    servers
        .send_smtp(
            &consumer,
            &[&mailbox],
            &mail(
                &consumer,
                &mailbox,
                "California Request to Delete",
                "",
                "Please delete.\n",
            ),
        )
        .await;
    let got = servers
        .wait_for(&consumer, "INBOX", 1, Duration::from_secs(20))
        .await;
    let elapsed = started.elapsed();
    assert!(
        support::header(&got[0], "Subject")
            .unwrap_or_default()
            .contains("[CCPA-")
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "acknowledged after {elapsed:?}\n{}",
        d.log()
    );
    let status = d.terminate(Duration::from_secs(10));
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status:?}\n{}",
        d.log()
    );
    assert_eq!(servers.count(&mailbox, "INBOX").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_starttls_work_with_the_ca_and_fail_closed_without_it() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    servers
        .append_request(&mailbox, &consumer, "California Request to Know")
        .await;

    // STARTTLS on the plain IMAP port, with the CA: works.
    let starttls = DaemonConfig::new(servers, &mailbox)
        .imap_security("starttls")
        .imap_port(servers.imap_port());
    let starttls_path = starttls.write();
    assert_ok(
        &daemon::run_once(&starttls_path),
        "run --once over STARTTLS",
    );
    servers.inbox_exactly(&consumer, 1).await;

    // Without the CA, IMAPS and STARTTLS refuse the server's certificate.
    for (security, port) in [
        ("tls", servers.imaps_port()),
        ("starttls", servers.imap_port()),
    ] {
        let no_ca = DaemonConfig::new(servers, &mailbox)
            .imap_security(security)
            .imap_port(port)
            .unset("imap", "ca_file");
        let no_ca_path = no_ca.write();
        let out = daemon::run_once(&no_ca_path);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{security} without the CA must fail"
        );
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            err.contains("certificate") || err.contains("tls"),
            "{security}: {err}"
        );
    }
    // SMTP without the CA: the acknowledgement is not sent in clear; it stays queued.
    let other = servers.unique_user("consumer");
    servers
        .append_request(&mailbox, &other, "California Request to Know")
        .await;
    let smtp_no_ca = DaemonConfig::new(servers, &mailbox).unset("smtp", "ca_file");
    let smtp_no_ca_path = smtp_no_ca.write();
    let out = daemon::run_once(&smtp_no_ca_path);
    assert_ok(&out, "run --once with an untrusted SMTP certificate");
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    assert_eq!(
        servers.count(&other, "INBOX").await,
        0,
        "nothing may be sent over an untrusted connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_between_commit_and_move_does_nothing_twice() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    servers
        .append_request(&mailbox, &consumer, "California Request to Know")
        .await;
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();

    daemon::run_once_until_fault(&path, "before_move", Duration::from_secs(120));
    // Committed, not moved.
    assert_eq!(servers.count(&mailbox, "INBOX").await, 1);
    assert_eq!(cases_json(&path).len(), 1);

    assert_ok(&daemon::run_once(&path), "restart");
    assert_eq!(cases_json(&path).len(), 1, "no second case");
    assert_eq!(
        servers.count(&mailbox, "INBOX").await,
        0,
        "the original was filed on restart"
    );
    let got = servers
        .wait_for(&consumer, "INBOX", 1, Duration::from_secs(30))
        .await;
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    assert_eq!(
        servers.count(&consumer, "INBOX").await,
        1,
        "no second acknowledgement"
    );
    assert!(
        support::header(&got[0], "Subject")
            .unwrap_or_default()
            .contains("[CCPA-")
    );

    // The same message arriving again (a new UID) is recognised as a duplicate.
    let raw = servers.fetch_all(&mailbox, "Processed").await.remove(0);
    servers.append(&mailbox, "INBOX", &raw).await;
    assert_ok(&daemon::run_once(&path), "duplicate run");
    assert_eq!(cases_json(&path).len(), 1);
    assert_eq!(servers.count(&consumer, "INBOX").await, 1);
}

/// More than two intake batches (`sync::BATCH`, 200): the IMAP session moves
/// one batch's originals and fetches the next chunk while the store writes
/// the batch between. A crash as the first batch is about to move leaves
/// whole batches committed and the rest in the inbox; the restart takes in
/// the rest and files everything, with one case and one acknowledgement per
/// request.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_several_batches_is_taken_in_and_filed_once_even_after_a_crash() {
    const N: usize = 450;
    const STRAY: usize = 300;
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let mut session = servers.imap_session(&mailbox).await;
    for i in 0..N {
        let raw = if i == STRAY {
            // Not a request: it goes to review, a second target folder.
            mail(
                &servers.unique_user("stray"),
                &mailbox,
                "Lunch on Friday?",
                "",
                "Are you free?\n",
            )
        } else {
            mail(
                &servers.unique_user("burst"),
                &mailbox,
                "California Request to Know",
                "",
                &format!("Request number {i}.\n"),
            )
        };
        session
            .append("INBOX", None, None, &raw)
            .await
            .unwrap_or_else(|e| panic!("APPEND {i}: {e}"));
    }
    let _ = session.logout().await;
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();

    daemon::run_once_until_fault(&path, "before_move", Duration::from_secs(180));
    let committed = cases_json(&path).len();
    assert!(
        committed == 200 || committed == 400,
        "whole batches are committed, nothing else: {committed} cases"
    );
    assert_eq!(
        servers.count(&mailbox, "INBOX").await,
        N,
        "nothing moved before the crash"
    );

    assert_ok(&daemon::run_once(&path), "restart");
    let cases = cases_json(&path);
    assert_eq!(cases.len(), N - 1, "one case per request");
    let requesters: std::collections::BTreeSet<&str> = cases
        .iter()
        .filter_map(|c| c["requester"].as_str())
        .collect();
    assert_eq!(requesters.len(), N - 1, "no request taken in twice");
    assert_eq!(servers.count(&mailbox, "INBOX").await, 0, "all filed");
    assert_eq!(servers.count(&mailbox, "Processed").await, N - 1);
    assert_eq!(servers.count(&mailbox, "Review").await, 1);

    let database = config.database_path();
    let unfiled = support::db_count(
        &database,
        "SELECT COUNT(*) FROM messages WHERE direction = 'in' AND filed_at IS NULL",
    )
    .await;
    assert_eq!(unfiled, 0, "every original is marked filed");
    let acks = support::db_count(
        &database,
        "SELECT COUNT(*) FROM outbox WHERE template = 'acknowledgement'",
    )
    .await;
    let acked_cases = support::db_count(
        &database,
        "SELECT COUNT(DISTINCT case_id) FROM outbox WHERE template = 'acknowledgement'",
    )
    .await;
    assert_eq!(
        (acks, acked_cases),
        (N as i64 - 1, N as i64 - 1),
        "one acknowledgement per case"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn first_start_leaves_mail_older_than_the_backlog_window_alone() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let old = servers.unique_user("old");
    let fresh = servers.unique_user("fresh");
    let long_ago = chrono::Utc::now() - chrono::Duration::days(60);
    servers
        .append_dated(
            &mailbox,
            "INBOX",
            &mail(&old, &mailbox, "California Request to Know", "", "Old\n"),
            long_ago,
        )
        .await;
    servers
        .append(
            &mailbox,
            "INBOX",
            &mail(&fresh, &mailbox, "California Request to Know", "", "New\n"),
        )
        .await;
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    assert_ok(&daemon::run_once(&path), "run --once");
    let cases = cases_json(&path);
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0]["requester"], fresh.as_str());
    assert_eq!(
        servers.count(&mailbox, "INBOX").await,
        1,
        "the old message stays in the inbox"
    );
    assert_ok(&daemon::run_once(&path), "second run");
    assert_eq!(cases_json(&path).len(), 1, "and stays alone on later runs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_uidvalidity_rescans_without_doing_anything_twice() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let early = servers.unique_user("early");
    let late = servers.unique_user("late");
    let first = mail(&early, &mailbox, "California Request to Know", "", "Hi\n");
    servers.append(&mailbox, "Requests", &first).await;
    let config = DaemonConfig::new(servers, &mailbox).set_str("imap", "mailbox", "Requests");
    let path = config.write();
    // Committed, then the daemon dies before moving the original.
    daemon::run_once_until_fault(&path, "before_move", Duration::from_secs(120));

    // The folder is rebuilt (a server migration): new UIDVALIDITY, the same
    // message again, and a new one.
    let mut session = servers.imap_session(&mailbox).await;
    session.delete("Requests").await.expect("delete the folder");
    session.create("Requests").await.expect("create the folder");
    let _ = session.logout().await;
    servers.append(&mailbox, "Requests", &first).await;
    servers
        .append(
            &mailbox,
            "Requests",
            &mail(&late, &mailbox, "California Request to Delete", "", "Hi\n"),
        )
        .await;

    assert_ok(&daemon::run_once(&path), "run after the UIDVALIDITY change");
    let cases = cases_json(&path);
    assert_eq!(
        cases.len(),
        2,
        "the re-appended request is not a second case: {cases:#?}"
    );
    assert_eq!(servers.count(&mailbox, "Requests").await, 0, "both filed");
    servers.inbox_exactly(&early, 1).await;
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    assert_eq!(
        servers.count(&early, "INBOX").await,
        1,
        "no second acknowledgement"
    );
    servers.inbox_exactly(&late, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_messages_go_to_review_and_do_not_block_the_rest() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let garbage: &[u8] = b"\x00\x01\xff\xfe not a message\r\n\r\n\xc3\x28\r\n";
    let broken_mime = b"From: x@broken.example\r\nSubject: =?utf-8?B?!!!?=\r\nContent-Type: multipart/mixed; boundary=\"never\"\r\n\r\n--never\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\nunterminated";
    servers.append(&mailbox, "INBOX", garbage).await;
    servers.append(&mailbox, "INBOX", broken_mime).await;
    servers
        .append_request(&mailbox, &consumer, "California Request to Know")
        .await;
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    assert_ok(&daemon::run_once(&path), "run --once");
    assert_eq!(cases_json(&path).len(), 1);
    assert_eq!(servers.count(&mailbox, "INBOX").await, 0);
    assert_eq!(
        servers.count(&mailbox, "Review").await,
        2,
        "both broken messages kept in review"
    );
    servers.inbox_exactly(&consumer, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn automatic_replies_per_sender_are_limited() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("eager");
    for subject in [
        "California Request to Know",
        "California Request to Delete",
        "California Request to Know (again)",
    ] {
        servers
            .append(
                &mailbox,
                "INBOX",
                &mail(&consumer, &mailbox, subject, "", "Hi\n"),
            )
            .await;
    }
    let config =
        DaemonConfig::new(servers, &mailbox).set("policy", "max_auto_replies_per_day", "2");
    let path = config.write();
    assert_ok(&daemon::run_once(&path), "run --once");
    let cases = cases_json(&path);
    assert_eq!(cases.len(), 3, "every request is a case");
    servers
        .wait_for(&consumer, "INBOX", 2, Duration::from_secs(30))
        .await;
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    assert_eq!(
        servers.count(&consumer, "INBOX").await,
        2,
        "at most two automatic replies a day"
    );
    let suppressed: Vec<Value> = cases
        .iter()
        .map(|c| support::case_json(&path, c["id"].as_str().unwrap()))
        .filter(|c| {
            c["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "reply_suppressed")
        })
        .collect();
    assert_eq!(suppressed.len(), 1, "the suppressed reply is on record");
    let held = &suppressed[0];
    assert!(
        held["acknowledged_at"].is_null(),
        "no acknowledgement is claimed that never went out: {held:#}"
    );
    // A team decision is not an automatic reply: the limit does not hold it back.
    let id = held["id"].as_str().unwrap();
    assert_ok(
        &daemon::cli(
            &path,
            &[
                "cases",
                "act",
                id,
                "deny",
                "--reason",
                "Duplicate of the first request.",
            ],
        ),
        "deny",
    );
    assert_ok(&daemon::run_once(&path), "deliver the denial");
    let got = servers
        .wait_for(&consumer, "INBOX", 3, Duration::from_secs(30))
        .await;
    assert!(support::mail::text_of(&got[2]).contains("Duplicate of the first request."));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bounce_marks_the_reported_mail_failed_and_tells_the_team() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let notify = servers.unique_user("team");
    servers
        .append_request(&mailbox, &consumer, "California Request to Know")
        .await;
    let config = DaemonConfig::new(servers, &mailbox).team_notify(&[&notify]);
    let path = config.write();
    assert_ok(&daemon::run_once(&path), "run --once");
    let ack = servers
        .wait_for(&consumer, "INBOX", 1, Duration::from_secs(30))
        .await
        .remove(0);
    let id = cases_json(&path)[0]["id"].as_str().unwrap().to_string();

    let dsn = bounce_of(&mailbox, &consumer, &ack, 1);
    servers.append(&mailbox, "INBOX", dsn.as_bytes()).await;
    assert_ok(&daemon::run_once(&path), "run --once with the bounce");
    let case = support::case_json(&path, &id);
    let events = case["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["action"] == "delivery_failed"),
        "{events:#?}"
    );
    let notices = servers
        .wait_for(&notify, "INBOX", 2, Duration::from_secs(30))
        .await;
    assert!(
        notices.iter().any(|m| support::header(m, "Subject")
            .unwrap_or_default()
            .starts_with("Delivery failure")),
        "the team is told"
    );
    assert_eq!(servers.count(&mailbox, "INBOX").await, 0);
    assert_eq!(
        servers.count(&mailbox, "Review").await,
        0,
        "a matched bounce is filed with its case"
    );
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    assert_eq!(
        servers.count(&consumer, "INBOX").await,
        1,
        "no reply to a bounce"
    );

    // The failure notice itself bounces (a dead team address): recorded, and
    // no notice about the notice, which would bounce for ever.
    let failure_notice = notices
        .iter()
        .find(|m| {
            support::header(m, "Subject")
                .unwrap_or_default()
                .starts_with("Delivery failure")
        })
        .unwrap()
        .clone();
    let before = servers.count(&notify, "INBOX").await;
    let dsn = bounce_of(&mailbox, &notify, &failure_notice, 2);
    servers.append(&mailbox, "INBOX", dsn.as_bytes()).await;
    assert_ok(
        &daemon::run_once(&path),
        "run --once with the notice's bounce",
    );
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    assert_eq!(
        servers.count(&notify, "INBOX").await,
        before,
        "no mail loop"
    );
    assert_eq!(servers.count(&mailbox, "INBOX").await, 0);
}

/// A delivery status notification reporting that `original` to `rcpt` failed.
fn bounce_of(mailbox: &str, rcpt: &str, original: &[u8], n: u32) -> String {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.test>\r\nTo: {mailbox}\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-{pid}-{n}@mx.example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.test\r\n\r\nFinal-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Privacy Team <{mailbox}>\r\nTo: {rcpt}\r\nMessage-ID: {id}\r\nSubject: {subject}\r\n\r\n--B--\r\n",
        pid = std::process::id(),
        id = message_id_of(original),
        subject = support::header(original, "Subject").unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_refuses_to_start_with_a_template_that_would_fail() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    servers
        .append_request(&mailbox, &consumer, "California Request to Know")
        .await;
    let templates = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(daemon::TEMPLATES_DIR).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), templates.path().join(entry.file_name())).unwrap();
    }
    let denial = templates.path().join("denial.text.hbs");
    let text = std::fs::read_to_string(&denial).unwrap();
    std::fs::write(&denial, format!("{text}\n{{{{case.no_such_field}}}}\n")).unwrap();
    let config = DaemonConfig::new(servers, &mailbox).set_str(
        "templates",
        "dir",
        &templates.path().display().to_string(),
    );
    let path = config.write();
    let out = daemon::run_once(&path);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a broken template is a configuration error"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("denial") && err.contains("templates check"),
        "{err}"
    );
    assert_eq!(
        servers.count(&mailbox, "INBOX").await,
        1,
        "nothing was taken in"
    );
    assert_eq!(servers.count(&consumer, "INBOX").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_sent_as_the_mailbox_by_a_web_form_is_answered_at_reply_to_or_reviewed() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    // A contact form that sends as the mailbox (for SPF/DMARC) with the consumer in Reply-To.
    let form = mail(
        &mailbox,
        &mailbox,
        "California Request to Delete",
        &format!("Reply-To: {consumer}"),
        "Name: Jane\n",
    );
    // The same without Reply-To: nobody to answer, a person must look.
    let bare = mail(
        &mailbox,
        &mailbox,
        "California Request to Know",
        "",
        "Name: Joe\n",
    );
    servers.append(&mailbox, "INBOX", &form).await;
    servers.append(&mailbox, "INBOX", &bare).await;
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    assert_ok(&daemon::run_once(&path), "run --once");
    let cases = cases_json(&path);
    assert_eq!(cases.len(), 1, "{cases:#?}");
    assert_eq!(cases[0]["requester"], consumer.as_str());
    servers.inbox_exactly(&consumer, 1).await;
    assert_eq!(servers.count(&mailbox, "Review").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_message_id_on_a_different_request_is_not_a_duplicate() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let a = servers.unique_user("first");
    let b = servers.unique_user("second");
    let id = "<same-id@form.example.test>";
    let first = mail(
        &a,
        &mailbox,
        "California Request to Know",
        &format!("Message-ID: {id}"),
        "A\n",
    );
    let second = mail(
        &b,
        &mailbox,
        "California Request to Delete",
        &format!("Message-ID: {id}"),
        "B\n",
    );
    for raw in [&first, &second] {
        // The helper writes its own Message-ID first; drop it so only ours counts.
        let text = String::from_utf8_lossy(raw).into_owned();
        let mut lines: Vec<&str> = text.split("\r\n").collect();
        if let Some(pos) = lines.iter().position(|l| l.starts_with("Message-ID: <t")) {
            lines.remove(pos);
        }
        servers
            .append(&mailbox, "INBOX", lines.join("\r\n").as_bytes())
            .await;
    }
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    assert_ok(&daemon::run_once(&path), "run --once");
    assert_eq!(cases_json(&path).len(), 2, "two requests, two cases");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_secret_is_a_configuration_error_at_start() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    for section in ["imap", "smtp"] {
        let config = DaemonConfig::new(servers, &mailbox)
            .unset(section, "password")
            .set_str(section, "password_file", "/nonexistent/secret");
        let config = if section == "smtp" {
            config.set_str("smtp", "username", &mailbox)
        } else {
            config
        };
        let path = config.write();
        let out = daemon::run_once(&path);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{section}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{section}.password_file")), "{err}");
    }
}
