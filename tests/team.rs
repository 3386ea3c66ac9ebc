//! The privacy team works every case from its mail client (issue 4), on the
//! real servers: notices, authenticated reply commands, #open from review,
//! burst summaries, the digest, correspondence and Sent copies.

mod support;

use std::path::Path;
use std::time::Duration;

use support::MailServers;
use support::daemon::{self, DaemonConfig};
use support::mail::{self, Reply};

struct Team {
    mailbox: String,
    alice: String,
    notify: String,
    config: DaemonConfig,
    path: std::path::PathBuf,
}

fn team(servers: &MailServers, tweak: impl FnOnce(DaemonConfig) -> DaemonConfig) -> Team {
    let mailbox = servers.unique_user("privacy");
    let alice = servers.unique_user("alice");
    let notify = servers.unique_user("team");
    let config = tweak(
        DaemonConfig::new(servers, &mailbox)
            .team_members(&[&alice])
            .team_notify(&[&notify]),
    );
    let path = config.write();
    Team {
        mailbox,
        alice,
        notify,
        config,
        path,
    }
}

async fn run(path: &Path) {
    support::assert_ok(&daemon::run_once(path), "run --once");
}

/// Delivers through Postfix and waits until it is in the privacy inbox.
async fn deliver(servers: &MailServers, t: &Team, from: &str, raw: &[u8]) {
    servers.send_smtp(from, &[&t.mailbox], raw).await;
    servers
        .wait_for(&t.mailbox, "INBOX", 1, Duration::from_secs(20))
        .await;
}

/// A consumer's request, delivered through Postfix.
async fn request(servers: &MailServers, t: &Team, from: &str, subject: &str) {
    deliver(
        servers,
        t,
        from,
        &mail::request(from, &t.mailbox, subject, "Hi\n"),
    )
    .await;
}

fn subject(raw: &[u8]) -> String {
    support::header(raw, "Subject").unwrap_or_default()
}

/// Waits for the team's newest mail whose subject names `id`.
async fn notice_for(servers: &MailServers, t: &Team, id: &str) -> Vec<u8> {
    support::wait_until(
        Duration::from_secs(30),
        || format!("a notice for {id} arrives"),
        || async move {
            let all = servers.fetch_all(&t.notify, "INBOX").await;
            all.into_iter().rev().find(|m| subject(m).contains(id))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn member_reply_verifies_one_case_and_extends_another() {
    let servers = MailServers::start();
    let t = team(servers, |c| c);
    let c1 = servers.unique_user("consumer");
    let c2 = servers.unique_user("consumer");
    request(servers, &t, &c1, "California Request to Know").await;
    request(servers, &t, &c2, "California Request to Know").await;
    run(&t.path).await;
    let cases = support::cases_json(&t.path);
    let id_of = |who: &str| {
        cases.iter().find(|c| c["requester"] == who).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (id1, id2) = (id_of(&c1), id_of(&c2));
    let n1 = notice_for(servers, &t, &id1).await;
    assert!(
        mail::text_of(&n1).contains("#verify"),
        "the notice lists the commands"
    );

    // Verify case 1 by replying to its notice.
    let reply = mail::reply(
        &t.alice,
        &n1,
        Reply::Gmail,
        "#verify\n#note ID checked against the order history",
    );
    deliver(servers, &t, &t.alice, &reply).await;
    run(&t.path).await;
    assert_eq!(support::case_json(&t.path, &id1)["state"], "verified");
    let result = servers
        .wait_for(&t.alice, "INBOX", 1, Duration::from_secs(30))
        .await;
    assert!(
        mail::text_of(&result[0]).contains("DONE"),
        "{}",
        mail::text_of(&result[0])
    );

    // Extend case 2 with a reason: the consumer gets the notice.
    let n2 = notice_for(servers, &t, &id2).await;
    let reply = mail::reply(
        &t.alice,
        &n2,
        Reply::Outlook,
        "#extend We must search our archive.",
    );
    deliver(servers, &t, &t.alice, &reply).await;
    run(&t.path).await;
    let c = support::case_json(&t.path, &id2);
    assert_eq!(c["extended"], true);
    let got = servers
        .wait_for(&c2, "INBOX", 2, Duration::from_secs(30))
        .await;
    assert!(mail::text_of(&got[1]).contains("We must search our archive."));
    // The notice stays in the consumer's thread: it answers their request
    // (as the acknowledgement did), never the team member's command mail.
    let team_id = support::header(&reply, "Message-ID").unwrap();
    assert_eq!(
        support::header(&got[1], "In-Reply-To"),
        support::header(&got[0], "In-Reply-To"),
    );
    let refs = support::header(&got[1], "References").unwrap_or_default();
    assert!(!refs.contains(team_id.trim()), "{refs}");
    let events = c["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "extend" && e["actor"] == t.alice.as_str()),
        "{events:#?}"
    );

    // A command naming another case on a case notice is refused.
    let reply = mail::reply(
        &t.alice,
        &n2,
        Reply::Gmail,
        &format!("#deny {id1} wrong case"),
    );
    deliver(servers, &t, &t.alice, &reply).await;
    run(&t.path).await;
    assert_eq!(support::case_json(&t.path, &id1)["state"], "verified");

    // Every message the daemon sent has a copy in Sent.
    let out_rows: usize = [&id1, &id2]
        .iter()
        .map(|id| {
            support::case_json(&t.path, id)["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["direction"] == "out")
                .count()
        })
        .sum();
    let mailbox = &t.mailbox;
    let sent = support::wait_until(
        Duration::from_secs(30),
        || format!("Sent holds a copy of each of the {out_rows} outgoing messages"),
        || async move {
            let sent = servers.count(mailbox, "Sent").await;
            (sent >= out_rows && sent >= 8).then_some(sent)
        },
    )
    .await;
    assert!(
        sent >= out_rows && sent >= 8,
        "Sent holds {sent}, cases list {out_rows} outgoing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_commands_are_recorded_not_executed() {
    let servers = MailServers::start();
    let t = team(servers, |c| c);
    let mallory = servers.unique_user("mallory");
    let consumer = servers.unique_user("consumer");
    deliver(
        servers,
        &t,
        &consumer,
        &mail::request(
            &consumer,
            &t.mailbox,
            "California Request to Delete",
            "Hi\n",
        ),
    )
    .await;
    run(&t.path).await;
    let id = support::cases_json(&t.path)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let notice = notice_for(servers, &t, &id).await;

    // 1. A member, but no reference to a notification (a new mail with the tag).
    let no_ref = mail::request(
        &t.alice,
        &t.mailbox,
        &format!("Re: [{id}]"),
        "#deny no reference\n",
    );
    deliver(servers, &t, &t.alice, &no_ref).await;
    run(&t.path).await;
    // 2. A non-member replying to the real notification.
    let outsider = mail::reply(&mallory, &notice, Reply::Gmail, "#deny by an outsider");
    deliver(servers, &t, &mallory, &outsider).await;
    run(&t.path).await;
    // 3. A member, with the notification's HMAC altered.
    let notice_id = support::header(&notice, "Message-ID").unwrap();
    let forged_id = forge(&notice_id);
    let forged = mail::message(
        &t.alice,
        &t.mailbox,
        &format!("Re: {}", subject(&notice)),
        &format!("In-Reply-To: {forged_id}\nReferences: {forged_id}"),
        "#deny forged reference\n",
    );
    deliver(servers, &t, &t.alice, &forged).await;
    run(&t.path).await;

    let c = support::case_json(&t.path, &id);
    assert_eq!(c["state"], "awaiting_verification", "nothing was executed");
    let events = c["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "command_refused" && e["actor"] == mallory.as_str()),
        "{events:#?}"
    );
    let refused_member = events
        .iter()
        .filter(|e| e["action"] == "command_refused" && e["actor"] == t.alice.as_str())
        .count();
    assert_eq!(
        refused_member, 2,
        "no reference and a forged reference: {events:#?}"
    );
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    assert_eq!(
        servers.count(&mallory, "INBOX").await,
        0,
        "no mail to the non-member"
    );
    assert_eq!(
        servers.count(&t.alice, "INBOX").await,
        0,
        "no command result: nothing was accepted"
    );
    assert!(servers.count(&t.mailbox, "Review").await >= 3);
}

/// Flips a hex digit of the HMAC part of one of our Message-IDs.
fn forge(id: &str) -> String {
    let bare = id.trim_matches(|c| c == '<' || c == '>');
    let (local, domain) = bare.rsplit_once('@').unwrap();
    let mut chars: Vec<char> = local.chars().collect();
    let last = chars.len() - 1;
    chars[last] = if chars[last] == '0' { '1' } else { '0' };
    format!("<{}@{domain}>", chars.into_iter().collect::<String>())
}

#[tokio::test(flavor = "multi_thread")]
async fn open_delete_on_a_review_notice_opens_and_acknowledges() {
    let servers = MailServers::start();
    let t = team(servers, |c| c);
    let consumer = servers.unique_user("consumer");
    deliver(
        servers,
        &t,
        &consumer,
        &mail::request(
            &consumer,
            &t.mailbox,
            "My account",
            "Please delete my data, I do not want to be your customer anymore.\n",
        ),
    )
    .await;
    run(&t.path).await;
    assert!(support::cases_json(&t.path).is_empty());
    let review_notice = &notice_for(servers, &t, "Review: My account").await;
    let text = mail::text_of(review_notice);
    assert!(
        text.contains("#open delete"),
        "the notice offers #open: {text}"
    );
    let reply = mail::reply(&t.alice, review_notice, Reply::Gmail, "#open delete");
    deliver(servers, &t, &t.alice, &reply).await;
    run(&t.path).await;
    let cases = support::cases_json(&t.path);
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0]["kind"], "delete");
    assert_eq!(cases[0]["requester"], consumer.as_str());
    let ack = servers
        .wait_for(&consumer, "INBOX", 1, Duration::from_secs(30))
        .await;
    assert!(subject(&ack[0]).contains(cases[0]["id"].as_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_lists_an_overdue_case() {
    let servers = MailServers::start();
    let t = team(servers, |c| c.set_str("team", "digest_time", "00:00"));
    let consumer = servers.unique_user("consumer");
    request(servers, &t, &consumer, "California Request to Know").await;
    run(&t.path).await;
    let id = support::cases_json(&t.path)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The first run sent today's digest already; let time pass: 50 days and a new day.
    support::shift_case_times(&t.config.database_path(), &id, chrono::Duration::days(-50)).await;
    support::reset_schedule(&t.config.database_path(), "digest").await;
    run(&t.path).await;
    // Today's digest (the second one, after the reset) lists the case as overdue.
    let overdue_listed = |m: &Vec<u8>| {
        let text = mail::text_of(m);
        text.split("Overdue:")
            .nth(1)
            .and_then(|rest| rest.split("Due within").next())
            .is_some_and(|section| section.contains(&id))
    };
    let overdue_listed = &overdue_listed;
    let notify = &t.notify;
    support::wait_until(
        Duration::from_secs(30),
        || format!("a digest lists {id} as overdue"),
        || async move {
            servers
                .fetch_all(notify, "INBOX")
                .await
                .iter()
                .any(overdue_listed)
                .then_some(())
        },
    )
    .await;
    // Once a day: another run sends no second digest.
    let before = servers.count(&t.notify, "INBOX").await;
    run(&t.path).await;
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    let after_all = servers.fetch_all(&t.notify, "INBOX").await;
    let new_digests = after_all[before..]
        .iter()
        .filter(|m| mail::text_of(m).contains("Overdue:"))
        .count();
    assert_eq!(new_digests, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn team_reply_in_sent_folder_appears_on_the_case() {
    let servers = MailServers::start();
    let t = team(servers, |c| c);
    let consumer = servers.unique_user("consumer");
    request(servers, &t, &consumer, "California Request to Know").await;
    run(&t.path).await;
    let id = support::cases_json(&t.path)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    support::assert_ok(
        &daemon::cli(&t.path, &["cases", "act", &id, "verify"]),
        "verify",
    );
    let ack = servers
        .wait_for(&consumer, "INBOX", 1, Duration::from_secs(30))
        .await;
    // Alice answers the consumer from her mail client on the shared mailbox.
    let mut answer = mail::reply(
        &t.alice,
        &ack[0],
        Reply::Gmail,
        "Here is the information we hold about you: ...",
    );
    // Her client writes To: the consumer.
    let text = String::from_utf8_lossy(&answer).replacen(
        &format!("To: {}", t.mailbox),
        &format!("To: {consumer}"),
        1,
    );
    answer = text.into_bytes();
    servers.append(&t.mailbox, "Sent", &answer).await;
    run(&t.path).await;
    let c = support::case_json(&t.path, &id);
    let events = c["events"].as_array().unwrap();
    // Correspondence only: the mail does not complete the case on its own.
    assert!(
        events.iter().any(|e| e["action"] == "team_correspondence"),
        "{events:#?}"
    );
    assert!(
        !events.iter().any(|e| e["action"] == "substantive_response"),
        "{events:#?}"
    );
    assert_eq!(c["state"], "verified");
    assert!(
        c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["direction"] == "out" && m["template"].is_null())
    );
    // #complete then records that the team sent the response itself: no know_completed mail.
    support::assert_ok(
        &daemon::cli(
            &t.path,
            &["cases", "act", &id, "complete", "--sent-by-team"],
        ),
        "complete",
    );
    run(&t.path).await;
    assert_eq!(support::case_json(&t.path, &id)["state"], "completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_requests_collapses_into_one_summary() {
    let servers = MailServers::start();
    let t = team(servers, |c| c.set("team", "burst_threshold", "5"));
    let mut consumers = Vec::new();
    for _ in 0..8 {
        let c = servers.unique_user("burst");
        servers
            .append(
                &t.mailbox,
                "INBOX",
                &mail::request(&c, &t.mailbox, "California Request to Know", "Hi\n"),
            )
            .await;
        consumers.push(c);
    }
    run(&t.path).await;
    let cases = support::cases_json(&t.path);
    assert_eq!(cases.len(), 8);
    servers
        .wait_for(&t.notify, "INBOX", 1, Duration::from_secs(30))
        .await;
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    // The daily digest may go out too, depending on the hour; it is not a notice.
    let team_mail: Vec<Vec<u8>> = servers
        .fetch_all(&t.notify, "INBOX")
        .await
        .into_iter()
        .filter(|m| !subject(m).starts_with("Privacy requests digest"))
        .collect();
    let subjects: Vec<String> = team_mail.iter().map(|m| subject(m)).collect();
    assert_eq!(
        team_mail.len(),
        1,
        "one summary, not eight notices: {subjects:?}"
    );
    let summary = &team_mail[0];
    let text = mail::text_of(summary);
    for c in &cases {
        assert!(text.contains(c["id"].as_str().unwrap()));
    }
    let listed = cases[3]["id"].as_str().unwrap().to_string();
    let reply = mail::reply(
        &t.alice,
        summary,
        Reply::Gmail,
        &format!("#verify {listed}\n#verify CCPA-2020-99999"),
    );
    deliver(servers, &t, &t.alice, &reply).await;
    run(&t.path).await;
    assert_eq!(support::case_json(&t.path, &listed)["state"], "verified");
    let result = servers
        .wait_for(&t.alice, "INBOX", 1, Duration::from_secs(30))
        .await;
    let text = mail::text_of(&result[0]);
    assert!(
        text.contains("NOT DONE") && text.contains("does not list"),
        "{text}"
    );
}

/// Waits (30 s at most) until `check` holds.
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    support::wait_until(
        Duration::from_secs(30),
        || what.to_string(),
        || std::future::ready(check().then_some(())),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_team_lists_without_a_restart() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let alice = servers.unique_user("alice");
    let bob = servers.unique_user("bob");
    let notify = servers.unique_user("team");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::new(servers, &mailbox)
        .team_members(&[&alice])
        .team_notify(&[&notify]);
    let path = config.write();
    // Ready means migrated: the `cases` calls below must not race the
    // daemon's first migration of a fresh database.
    let d = daemon::spawn_ready(&path, Duration::from_secs(30));
    servers
        .send_smtp(
            &consumer,
            &[&mailbox],
            &mail::request(&consumer, &mailbox, "California Request to Know", "Hi\n"),
        )
        .await;
    wait_until("the case opens", || !support::cases_json(&path).is_empty()).await;
    let id = support::cases_json(&path)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let t = Team {
        mailbox: mailbox.clone(),
        alice: alice.clone(),
        notify: notify.clone(),
        config,
        path: path.clone(),
    };
    let notice = notice_for(servers, &t, &id).await;
    let has_event = |action: &str, actor: &str| {
        support::case_json(&path, &id)["events"]
            .as_array()
            .is_some_and(|e| {
                e.iter()
                    .any(|e| e["action"] == action && e["actor"] == actor)
            })
    };

    // Bob is not a member yet.
    servers
        .send_smtp(
            &bob,
            &[&mailbox],
            &mail::reply(&bob, &notice, Reply::Gmail, "#note before"),
        )
        .await;
    wait_until("bob's command is refused", || {
        has_event("command_refused", &bob)
    })
    .await;

    // Add Bob to the file and send SIGHUP: the running daemon picks him up.
    let config = t.config.team_members(&[&alice, &bob]);
    config.write();
    d.signal(libc::SIGHUP);
    wait_until("the reload is logged", || d.log().contains("reloaded")).await;
    servers
        .send_smtp(
            &bob,
            &[&mailbox],
            &mail::reply(&bob, &notice, Reply::Gmail, "#note after"),
        )
        .await;
    wait_until("bob's note is applied", || has_event("note", &bob)).await;
    assert!(d.log().contains("Templates and team lists reloaded."));
}

#[tokio::test(flavor = "multi_thread")]
async fn with_require_dkim_only_a_trusted_dkim_pass_lets_commands_run() {
    let servers = MailServers::start();
    let t = team(servers, |c| {
        c.set("team", "require_dkim", "true").set(
            "team",
            "trusted_authserv_ids",
            "[\"mx.example.test\"]",
        )
    });
    let consumer = servers.unique_user("consumer");
    request(servers, &t, &consumer, "California Request to Know").await;
    run(&t.path).await;
    let id = support::cases_json(&t.path)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let notice = notice_for(servers, &t, &id).await;
    let with_header = |header: &str, text: &str| {
        let raw = mail::reply(&t.alice, &notice, Reply::Gmail, text);
        let mut out = format!("Authentication-Results: {header}\r\n").into_bytes();
        out.extend_from_slice(&raw);
        out
    };
    // No trusted dkim=pass: refused (the member learns why).
    let untrusted = with_header(
        "mx.elsewhere.test; dkim=pass header.d=example.test",
        "#note untrusted",
    );
    deliver(servers, &t, &t.alice, &untrusted).await;
    run(&t.path).await;
    let c = support::case_json(&t.path, &id);
    let events = c["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["action"] == "command_refused"),
        "{events:#?}"
    );
    assert!(!events.iter().any(|e| e["action"] == "note"));
    // dkim=pass for the sender's domain from the trusted server: executed.
    let trusted = with_header(
        "mx.example.test; dkim=pass header.d=example.test header.s=s1",
        "#note trusted",
    );
    deliver(servers, &t, &t.alice, &trusted).await;
    run(&t.path).await;
    let c = support::case_json(&t.path, &id);
    assert!(
        c["events"].as_array().unwrap().iter().any(
            |e| e["action"] == "note" && e["detail"].as_str().unwrap_or("").contains("trusted")
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_from_a_no_reply_web_form_reaches_the_team_and_opens_with_reply_to() {
    let servers = MailServers::start();
    let t = team(servers, |c| c);
    let consumer = servers.unique_user("consumer");
    let form = "no-reply@forms.example.test";
    let raw = mail::message(
        form,
        &t.mailbox,
        "California Request to Delete",
        &format!("Reply-To: {consumer}"),
        "Name: Jane Doe\n",
    );
    deliver(servers, &t, form, &raw).await;
    run(&t.path).await;
    assert!(
        support::cases_json(&t.path).is_empty(),
        "automatic mail never opens a case by itself"
    );
    let notice = notice_for(servers, &t, "Review: California Request to Delete").await;
    let text = mail::text_of(&notice);
    assert!(text.contains("#open delete"), "{text}");
    // Both addresses shown; the team chooses the Reply-To explicitly.
    assert!(text.contains(form) && text.contains(&consumer), "{text}");
    assert!(text.contains("reply-to"), "{text}");
    let reply = mail::reply(&t.alice, &notice, Reply::Gmail, "#open delete reply-to");
    deliver(servers, &t, &t.alice, &reply).await;
    run(&t.path).await;
    let cases = support::cases_json(&t.path);
    assert_eq!(cases.len(), 1);
    assert_eq!(
        cases[0]["requester"],
        consumer.as_str(),
        "the web form's Reply-To is the requester"
    );
    servers.inbox_exactly(&consumer, 1).await;
}
