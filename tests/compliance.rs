//! The 2026 law through the real binary and real servers (issue 11): an
//! opt-out that also asks for a deletion, a partial deletion, the withdrawal
//! prompt, the day-of-receipt clock in mail and in `cases`, `#open` from
//! review keeping the receipt time, `#close unverified`, the held
//! acknowledgement, correct and limit requests, team mail that does not
//! answer a Know, and the default templates' wording as received. Each test
//! reads what the consumer receives, the case JSON and the `report` figures.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use serde_json::Value;
use support::daemon::{self, DaemonConfig};
use support::mail::{self, Reply};
use support::{MailServers, subject};

struct Team {
    mailbox: String,
    alice: String,
    notify: String,
    config: DaemonConfig,
    path: PathBuf,
}

fn team(servers: &MailServers) -> Team {
    let mailbox = servers.unique_user("privacy");
    let alice = servers.unique_user("alice");
    let notify = servers.unique_user("team");
    let config = DaemonConfig::new(servers, &mailbox)
        .team_members(&[&alice])
        .team_notify(&[&notify]);
    let path = config.write();
    Team {
        mailbox,
        alice,
        notify,
        config,
        path,
    }
}

fn act(path: &Path, id: &str, args: &[&str]) {
    let mut all = vec!["cases", "act", id];
    all.extend_from_slice(args);
    support::assert_ok(&daemon::cli(path, &all), &all.join(" "));
}

/// Delivers through Postfix, waits for it in the privacy inbox, runs once.
async fn deliver(servers: &MailServers, t: &Team, from: &str, raw: &[u8]) {
    servers.send_smtp(from, &[&t.mailbox], raw).await;
    servers
        .wait_for(&t.mailbox, "INBOX", 1, Duration::from_secs(20))
        .await;
    support::run_once_ok(&t.path);
}

/// The consumer's `n`-th mail (1-based), once it is there.
async fn nth_mail(servers: &MailServers, who: &str, n: usize) -> Vec<u8> {
    let all = servers
        .wait_for(who, "INBOX", n, Duration::from_secs(30))
        .await;
    assert!(
        all.len() >= n,
        "{who} has {} mails, expected {n}",
        all.len()
    );
    all[n - 1].clone()
}

/// Flowed text on one line, for phrase checks across line breaks.
fn flat(raw: &[u8]) -> String {
    mail::text_of(raw)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The team's newest mail whose subject contains `needle`.
async fn notice_for(servers: &MailServers, t: &Team, needle: &str) -> Vec<u8> {
    servers
        .mail_with_subject(&t.notify, needle, Duration::from_secs(30))
        .await
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{v} is no RFC 3339 time: {e}"))
        .with_timezone(&Utc)
}

/// End of the Los Angeles day `days` after the local day of `at`.
fn end_of_la_day(at: DateTime<Utc>, days: u64) -> DateTime<Utc> {
    let tz = chrono_tz::America::Los_Angeles;
    let day = at.with_timezone(&tz).date_naive() + Days::new(days + 1);
    tz.from_local_datetime(&day.and_time(NaiveTime::MIN))
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
        - chrono::Duration::seconds(1)
}

fn la_date(at: DateTime<Utc>) -> String {
    at.with_timezone(&chrono_tz::America::Los_Angeles)
        .format("%B %-d, %Y")
        .to_string()
}

fn metrics(path: &Path, kind: &str) -> Value {
    let year = Utc::now()
        .with_timezone(&chrono_tz::America::Los_Angeles)
        .format("%Y")
        .to_string();
    let out = daemon::cli(path, &["report", "metrics", "--year", &year, "--json"]);
    support::assert_ok(&out, "report metrics");
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    m["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} in {m}"))
}

fn record(path: &Path, id: &str) -> Value {
    let out = daemon::cli(path, &["report", "records", "--format", "json"]);
    support::assert_ok(&out, "report records");
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.into_iter()
        .find(|r| r["case_id"] == id)
        .unwrap_or_else(|| panic!("no record of {id}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_opt_out_that_also_asks_for_deletion_opens_both_cases() {
    let servers = MailServers::start();
    let t = team(servers);
    let consumer = servers.unique_user("consumer");
    let request = mail::request(
        &consumer,
        &t.mailbox,
        "Do Not Sell My Personal Information",
        "Please opt me out and delete my data.\n",
    );
    deliver(servers, &t, &consumer, &request).await;

    let cases = support::cases_json(&t.path);
    assert_eq!(cases.len(), 2, "{cases:#?}");
    let of = |kind: &str| cases.iter().find(|c| c["kind"] == kind).cloned().unwrap();
    let opt = of("opt_out");
    let del = of("delete");
    // No verification for the opt-out (§7026(d)); 15 business days (§7026(f)).
    assert_eq!(opt["state"], "verified");
    assert!(opt["verified_at"].is_null() && opt["closed_at"].is_null());
    let received = time(&opt["received_at"]);
    let due = time(&opt["due_at"]);
    let business_days = (due - received).num_days();
    assert!(
        (18..=23).contains(&business_days),
        "15 business days, got {business_days} calendar days"
    );
    // The deletion is not lost: acknowledged and waiting for verification.
    assert_eq!(del["state"], "awaiting_verification");
    assert_eq!(
        time(&del["due_at"]),
        end_of_la_day(time(&del["received_at"]), 44)
    );

    // The consumer: the opt-out reply, stating what [company] says, and the
    // deletion's acknowledgement with a verification code.
    let first = nth_mail(servers, &consumer, 1).await;
    let second = nth_mail(servers, &consumer, 2).await;
    let (reply, ack) = if subject(&first).contains(opt["id"].as_str().unwrap()) {
        (first, second)
    } else {
        (second, first)
    };
    let text = flat(&reply);
    assert!(
        text.contains("does not sell personal information, and does not share it"),
        "{text}"
    );
    assert!(!text.contains("does not sell or share your"), "{text}");
    assert!(mail::verification_code(&ack).is_some());
    assert!(subject(&ack).contains(del["id"].as_str().unwrap()));

    // The team hears of both; each case names the other.
    for c in [&opt, &del] {
        let id = c["id"].as_str().unwrap();
        notice_for(servers, &t, id).await;
        let events = support::case_json(&t.path, id)["events"].clone();
        assert!(
            events
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "opened_together"),
            "{events:#}"
        );
    }

    // Verify and extension do not apply; the team completes within 15 days.
    let opt_id = opt["id"].as_str().unwrap();
    let verify = daemon::cli(&t.path, &["cases", "act", opt_id, "verify"]);
    assert_eq!(verify.status.code(), Some(2));
    let extend = daemon::cli(
        &t.path,
        &["cases", "act", opt_id, "extend", "--reason", "more time"],
    );
    assert_eq!(extend.status.code(), Some(2));
    act(&t.path, opt_id, &["complete"]);
    support::run_once_ok(&t.path);
    assert_eq!(support::case_json(&t.path, opt_id)["state"], "completed");
    let m = metrics(&t.path, "opt_out");
    assert_eq!(
        (m["received"].as_u64(), m["complied"].as_u64()),
        (Some(1), Some(1)),
        "{m}"
    );
    let m = metrics(&t.path, "delete");
    assert_eq!(
        (m["received"].as_u64(), m["open"].as_u64()),
        (Some(1), Some(1)),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partial_deletion_names_what_was_kept_and_counts_as_complied_in_part() {
    let servers = MailServers::start();
    let t = team(servers);
    let consumer = servers.unique_user("consumer");
    let request = mail::request(
        &consumer,
        &t.mailbox,
        "California Request to Delete",
        "Delete everything.\n",
    );
    deliver(servers, &t, &consumer, &request).await;
    let id = support::first_case_id(&t.path);
    let ack = nth_mail(servers, &consumer, 1).await;
    assert_eq!(
        support::header(&ack, "Auto-Submitted").as_deref(),
        Some("auto-replied"),
        "an acknowledgement is automatic mail"
    );
    let answer = mail::reply(&consumer, &ack, Reply::Gmail, "Jane Doe, Fresno, CA.");
    deliver(servers, &t, &consumer, &answer).await;
    act(&t.path, &id, &["verify"]);
    support::run_once_ok(&t.path);
    let confirm = nth_mail(servers, &consumer, 2).await;
    assert_eq!(
        support::header(&confirm, "Auto-Submitted").as_deref(),
        Some("no"),
        "mail that carries out a team decision is not auto-replied"
    );
    let yes = mail::reply(&consumer, &confirm, Reply::Gmail, "CONFIRM");
    deliver(servers, &t, &consumer, &yes).await;
    assert_eq!(support::case_json(&t.path, &id)["state"], "confirmed");

    // Alice completes it in part by mail, the reason over two lines.
    let notice = notice_for(servers, &t, "Deletion confirmed").await;
    assert!(mail::text_of(&notice).contains("#complete partial REASON"));
    let command = mail::reply(
        &t.alice,
        &notice,
        Reply::Gmail,
        "#complete partial Invoices are kept for 7 years\nunder tax law (Civ. Code §1798.105(d)(8)).\n\nAlice",
    );
    deliver(servers, &t, &t.alice, &command).await;
    let c = support::case_json(&t.path, &id);
    assert_eq!(c["state"], "completed", "{c:#}");
    let done = nth_mail(servers, &consumer, 3).await;
    let text = flat(&done);
    assert!(
        text.contains("except the following, which the law allows us to keep: Invoices are kept for 7 years under tax law (Civ. Code §1798.105(d)(8))."),
        "{text}"
    );
    assert!(
        !text.contains("Alice"),
        "the signature is not part of the reason: {text}"
    );
    assert!(
        text.contains("24 months after we closed the request"),
        "{text}"
    );

    let m = metrics(&t.path, "delete");
    assert_eq!(
        (
            m["complied"].as_u64(),
            m["complied_in_part"].as_u64(),
            m["denied"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{m}"
    );
    let r = record(&t.path, &id);
    assert_eq!(r["response"], "partially_complied");
    assert_eq!(r["nature_of_response"], "complied in part");
    assert_eq!(
        r["basis_for_denial"],
        "Invoices are kept for 7 years\nunder tax law (Civ. Code §1798.105(d)(8))."
    );

    // The CLI form of the same, on a know request.
    let asker = servers.unique_user("asker");
    let request = mail::request(&asker, &t.mailbox, "California Request to Know", "Hi\n");
    deliver(servers, &t, &asker, &request).await;
    let know = support::cases_json(&t.path)
        .into_iter()
        .find(|c| c["kind"] == "know")
        .unwrap();
    let know_id = know["id"].as_str().unwrap();
    act(&t.path, know_id, &["verify"]);
    let missing = daemon::cli(&t.path, &["cases", "act", know_id, "complete", "--partial"]);
    assert_eq!(missing.status.code(), Some(2), "--partial needs --reason");
    act(
        &t.path,
        know_id,
        &[
            "complete",
            "--partial",
            "--reason",
            "Security logs withheld (§7024(d)); their categories are listed.",
        ],
    );
    support::run_once_ok(&t.path);
    let done = nth_mail(servers, &asker, 2).await;
    let text = flat(&done);
    assert!(text.contains("Security logs withheld"), "{text}");
    assert!(!text.contains("secure channel"), "{text}");
    assert_eq!(metrics(&t.path, "know")["complied_in_part"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_that_seems_to_cancel_is_asked_for_withdraw() {
    let servers = MailServers::start();
    let t = team(servers);
    let consumer = servers.unique_user("consumer");
    let request = mail::request(
        &consumer,
        &t.mailbox,
        "California Request to Delete",
        "Hello\n",
    );
    deliver(servers, &t, &consumer, &request).await;
    let id = support::first_case_id(&t.path);
    let ack = nth_mail(servers, &consumer, 1).await;
    let cancel = mail::reply(
        &consumer,
        &ack,
        Reply::Gmail,
        "Please cancel my account and delete everything. Jane Doe, Fresno, CA.",
    );
    deliver(servers, &t, &consumer, &cancel).await;
    let c = support::case_json(&t.path, &id);
    // Not withdrawn: the reply carries the code, so it is the verification answer.
    assert_eq!(c["state"], "verification_submitted", "{c:#}");
    assert!(c["closed_at"].is_null());
    let prompt = nth_mail(servers, &consumer, 2).await;
    let text = flat(&prompt);
    assert!(text.contains("WITHDRAW"), "{text}");
    assert!(text.contains("the request stays open"), "{text}");
    let notice = notice_for(servers, &t, "Reply seems to withdraw").await;
    assert!(mail::text_of(&notice).contains("WITHDRAW"));

    // Only the explicit answer withdraws.
    let withdraw = mail::reply(&consumer, &prompt, Reply::Gmail, "WITHDRAW");
    deliver(servers, &t, &consumer, &withdraw).await;
    let c = support::case_json(&t.path, &id);
    assert_eq!(c["state"], "withdrawn", "{c:#}");
    let confirmation = nth_mail(servers, &consumer, 3).await;
    assert!(flat(&confirmation).contains("we have withdrawn"));
    assert_eq!(metrics(&t.path, "delete")["withdrawn"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_due_date_counts_the_day_of_receipt_in_mail_and_in_cases() {
    let servers = MailServers::start();
    let t = team(servers);
    let consumer = servers.unique_user("consumer");
    // Received three days ago (IMAP INTERNALDATE), taken in now.
    let received = Utc::now() - chrono::Duration::days(3);
    let received =
        received - chrono::Duration::nanoseconds(received.timestamp_subsec_nanos().into());
    let request = mail::request(&consumer, &t.mailbox, "California Request to Know", "Hi\n");
    servers
        .append_dated(&t.mailbox, "INBOX", &request, received)
        .await;
    support::run_once_ok(&t.path);
    let c = support::cases_json(&t.path)[0].clone();
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(time(&c["received_at"]), received);
    let due = end_of_la_day(received, 44);
    assert_eq!(time(&c["due_at"]), due, "receipt + 44 days: {c:#}");
    // The same date in the acknowledgement.
    let ack = nth_mail(servers, &consumer, 1).await;
    let text = flat(&ack);
    assert!(
        text.contains(&format!("We will respond by {}.", la_date(due))),
        "{text}"
    );
    // ... and in `cases show`.
    let shown = daemon::cli(&t.path, &["cases", "show", &id]);
    support::assert_ok(&shown, "cases show");
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(
        shown.contains(&format!("due:       end of {}", la_date(due))),
        "{shown}"
    );

    // The one extension: receipt + 89, in the notice and in `cases`.
    act(&t.path, &id, &["extend", "--reason", "Archive search."]);
    support::run_once_ok(&t.path);
    let extended = end_of_la_day(received, 89);
    assert_eq!(time(&support::case_json(&t.path, &id)["due_at"]), extended);
    let notice = nth_mail(servers, &consumer, 2).await;
    assert!(
        flat(&notice).contains(&la_date(extended)),
        "{}",
        flat(&notice)
    );

    // `#open` from review keeps the original's receipt time.
    let writer = servers.unique_user("writer");
    let loose = mail::request(
        &writer,
        &t.mailbox,
        "My account",
        "Please delete my data, all of it.\n",
    );
    let earlier = received - chrono::Duration::days(2);
    servers
        .append_dated(&t.mailbox, "INBOX", &loose, earlier)
        .await;
    support::run_once_ok(&t.path);
    let review = notice_for(servers, &t, "Review: My account").await;
    let open = mail::reply(&t.alice, &review, Reply::Gmail, "#open delete");
    servers.send_smtp(&t.alice, &[&t.mailbox], &open).await;
    servers
        .wait_for(&t.mailbox, "INBOX", 1, Duration::from_secs(20))
        .await;
    support::run_once_ok(&t.path);
    let opened = support::cases_json(&t.path)
        .into_iter()
        .find(|c| c["requester"] == writer.as_str())
        .expect("#open opened the case");
    assert_eq!(time(&opened["received_at"]), earlier, "{opened:#}");
    assert_eq!(time(&opened["due_at"]), end_of_la_day(earlier, 44));
    let _ = &t.config;
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_for_want_of_verification_tells_the_consumer_and_counts_as_denied() {
    let servers = MailServers::start();
    let t = team(servers);
    let consumer = servers.unique_user("consumer");
    let request = mail::request(&consumer, &t.mailbox, "California Request to Know", "Hi\n");
    deliver(servers, &t, &consumer, &request).await;
    let id = support::first_case_id(&t.path);
    act(
        &t.path,
        &id,
        &[
            "close",
            "--reason",
            "unverified: no answer to our verification request",
        ],
    );
    support::run_once_ok(&t.path);
    let mail = nth_mail(servers, &consumer, 2).await;
    let text = flat(&mail);
    assert!(text.contains("We could not verify your identity"), "{text}");
    assert!(
        text.contains("no answer to our verification request"),
        "{text}"
    );
    assert!(
        text.contains("We have not disclosed any personal information"),
        "{text}"
    );
    let c = support::case_json(&t.path, &id);
    assert_eq!(c["state"], "closed");
    let m = metrics(&t.path, "know");
    assert_eq!(
        (m["denied"].as_u64(), m["closed"].as_u64()),
        (Some(1), Some(0)),
        "{m}"
    );
    assert_eq!(
        record(&t.path, &id)["basis_for_denial"],
        "identity could not be verified: no answer to our verification request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_acknowledgement_is_sent_when_the_window_allows() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let alice = servers.unique_user("alice");
    let notify = servers.unique_user("team");
    let config = DaemonConfig::new(servers, &mailbox)
        .team_members(&[&alice])
        .team_notify(&[&notify])
        .set("policy", "max_auto_replies_per_day", "1");
    let path = config.write();
    let t = Team {
        mailbox,
        alice,
        notify,
        config,
        path,
    };
    let consumer = servers.unique_user("consumer");
    for subject in ["California Request to Know", "California Request to Delete"] {
        let request = mail::request(&consumer, &t.mailbox, subject, "Hi\n");
        servers.send_smtp(&consumer, &[&t.mailbox], &request).await;
    }
    servers
        .wait_for(&t.mailbox, "INBOX", 2, Duration::from_secs(20))
        .await;
    support::run_once_ok(&t.path);
    let cases = support::cases_json(&t.path);
    assert_eq!(cases.len(), 2);
    let held: Vec<&Value> = cases
        .iter()
        .filter(|c| c["acknowledged_at"].is_null())
        .collect();
    assert_eq!(held.len(), 1, "{cases:#?}");
    let id = held[0]["id"].as_str().unwrap().to_string();
    let c = support::case_json(&t.path, &id);
    assert!(
        c["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "acknowledgement_held"),
        "{c:#}"
    );
    // The team is told plainly, with the time it goes out.
    let notice = notice_for(servers, &t, &id).await;
    let text = flat(&notice);
    assert!(text.contains("has NOT been sent yet"), "{text}");
    assert!(!text.contains("was received and acknowledged"), "{text}");

    // A day later the window allows it: the scheduler sends it.
    let db = t.config.database_path();
    let url = format!("sqlite://{}", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let day_ago = Utc::now() - chrono::Duration::hours(25);
    sqlx::query("UPDATE outbox SET created_at = ?")
        .bind(day_ago)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE cases SET ack_held_until = ? WHERE id = ?")
        .bind(Utc::now() - chrono::Duration::minutes(1))
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    support::run_once_ok(&t.path);
    let acks = servers
        .wait_for(&consumer, "INBOX", 2, Duration::from_secs(30))
        .await;
    assert!(
        acks.iter().any(|m| subject(m).contains(&id)),
        "the held acknowledgement went out"
    );
    let c = support::case_json(&t.path, &id);
    assert!(c["acknowledged_at"].is_string(), "{c:#}");
    let ack = acks.iter().find(|m| subject(m).contains(&id)).unwrap();
    assert!(mail::verification_code(ack).is_some());
    assert_eq!(
        support::header(ack, "Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_loop_guard_never_costs_the_consumer_the_acknowledgement() {
    // A limit of zero would hold every acknowledgement for ever: the law
    // wins, the acknowledgement goes out, and the record says why.
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let config =
        DaemonConfig::new(servers, &mailbox).set("policy", "max_auto_replies_per_day", "0");
    let path = config.write();
    let consumer = servers.unique_user("consumer");
    let request = mail::request(&consumer, &mailbox, "California Request to Know", "Hi\n");
    servers.send_smtp(&consumer, &[&mailbox], &request).await;
    servers
        .wait_for(&mailbox, "INBOX", 1, Duration::from_secs(20))
        .await;
    support::run_once_ok(&path);
    let ack = nth_mail(servers, &consumer, 1).await;
    assert!(mail::verification_code(&ack).is_some());
    let id = support::first_case_id(&path);
    let c = support::case_json(&path, &id);
    assert!(c["acknowledged_at"].is_string(), "{c:#}");
    assert!(
        c["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "reply_limit_overridden"),
        "{c:#}"
    );
}

/// The newest mail to `who` whose text contains `needle`, once it is there.
async fn mail_saying(servers: &MailServers, who: &str, needle: &str) -> Vec<u8> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let all = servers.fetch_all(who, "INBOX").await;
        if let Some(m) = all.into_iter().rev().find(|m| flat(m).contains(needle)) {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no mail to {who} saying {needle}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// A team member's command, mailed as a reply to the case's team notice.
async fn command(servers: &MailServers, t: &Team, id: &str, text: &str) {
    let notice = notice_for(servers, t, id).await;
    let reply = mail::reply(&t.alice, &notice, Reply::Gmail, text);
    deliver(servers, t, &t.alice, &reply).await;
}

/// End of the 15th California business day (no holidays configured), the
/// day of receipt counted when it is a business day.
fn fifteen_business_days(received: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Datelike;
    let tz = chrono_tz::America::Los_Angeles;
    let first = received.with_timezone(&tz).date_naive();
    let mut day = first;
    let mut counted = 0;
    loop {
        if !matches!(day.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun) {
            counted += 1;
            if counted == 15 {
                break;
            }
        }
        day = day + Days::new(1);
    }
    let offset = (day - first).num_days() as u64;
    end_of_la_day(received, offset)
}

#[tokio::test(flavor = "multi_thread")]
async fn correct_asks_for_documentation_and_says_it_corrected_limit_needs_no_verification() {
    let servers = MailServers::start();
    let t = team(servers);

    // Correct (§1798.106, §7023): verified, documentation asked for.
    let consumer = servers.unique_user("consumer");
    let request = mail::request(
        &consumer,
        &t.mailbox,
        "California Request to Correct",
        "My postal address is wrong.\n",
    );
    deliver(servers, &t, &consumer, &request).await;
    let c = support::cases_json(&t.path)[0].clone();
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(c["kind"], "correct", "{c:#}");
    assert_eq!(c["state"], "awaiting_verification", "{c:#}");
    let ack = nth_mail(servers, &consumer, 1).await;
    assert!(mail::verification_code(&ack).is_some());
    let text = flat(&ack);
    assert!(
        text.contains("send any documentation that supports the correction"),
        "{text}"
    );
    command(servers, &t, &id, "#verify").await;
    assert_eq!(support::case_json(&t.path, &id)["state"], "verified");
    command(servers, &t, &id, "#complete").await;
    let c = support::case_json(&t.path, &id);
    assert_eq!(c["state"], "completed", "{c:#}");
    let done = mail_saying(servers, &consumer, "Request to Correct we received").await;
    let text = flat(&done);
    assert!(
        text.contains("We have corrected the information as you asked"),
        "{text}"
    );
    assert_eq!(metrics(&t.path, "correct")["complied"], 1);

    // Limit (§1798.121, §7027): no verification, 15 business days.
    let limiter = servers.unique_user("limiter");
    let request = mail::request(
        &limiter,
        &t.mailbox,
        "California Request to Limit",
        "Limit the use of my sensitive personal information.\n",
    );
    deliver(servers, &t, &limiter, &request).await;
    let c = support::cases_json(&t.path)
        .into_iter()
        .find(|c| c["requester"] == limiter.as_str())
        .expect("the limit request opened a case");
    let limit_id = c["id"].as_str().unwrap().to_string();
    let shown = support::case_json(&t.path, &limit_id);
    assert_eq!(shown["kind"], "limit", "{shown:#}");
    assert_eq!(shown["state"], "verified", "{shown:#}");
    assert!(shown["verified_at"].is_null(), "{shown:#}");
    assert_eq!(
        time(&shown["due_at"]),
        fifteen_business_days(time(&shown["received_at"])),
        "{shown:#}"
    );
    let ack = nth_mail(servers, &limiter, 1).await;
    assert!(mail::verification_code(&ack).is_none(), "{}", flat(&ack));
    let text = flat(&ack);
    assert!(
        text.contains("You do not need to verify your identity"),
        "{text}"
    );
    assert!(!text.contains("Verification code"), "{text}");
    command(servers, &t, &limit_id, "#complete").await;
    assert_eq!(support::case_json(&t.path, &limit_id)["state"], "completed");
    let done = mail_saying(servers, &limiter, "We have limited the use").await;
    assert!(subject(&done).contains(&limit_id));
    let m = metrics(&t.path, "limit");
    assert_eq!(
        (m["received"].as_u64(), m["complied"].as_u64()),
        (Some(1), Some(1)),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn team_mail_to_the_consumer_does_not_answer_a_know_only_complete_does() {
    let servers = MailServers::start();
    let t = team(servers);
    let consumer = servers.unique_user("consumer");
    let request = mail::request(&consumer, &t.mailbox, "California Request to Know", "Hi\n");
    deliver(servers, &t, &consumer, &request).await;
    let id = support::first_case_id(&t.path);
    let ack = nth_mail(servers, &consumer, 1).await;
    command(servers, &t, &id, "#verify").await;
    assert_eq!(support::case_json(&t.path, &id)["state"], "verified");

    // Alice writes to the consumer from her own client, Bcc'ing the mailbox.
    let answer = mail::reply(
        &t.alice,
        &ack,
        Reply::Gmail,
        "We are still gathering your information and will write again soon.",
    );
    let answer = String::from_utf8_lossy(&answer)
        .replacen(&format!("To: {}", t.mailbox), &format!("To: {consumer}"), 1)
        .into_bytes();
    servers
        .send_smtp(&t.alice, &[&consumer, &t.mailbox], &answer)
        .await;
    mail_saying(servers, &consumer, "still gathering your information").await;
    servers
        .wait_for(&t.mailbox, "INBOX", 1, Duration::from_secs(20))
        .await;
    support::run_once_ok(&t.path);
    let c = support::case_json(&t.path, &id);
    let events = c["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["action"] == "team_correspondence"),
        "{c:#}"
    );
    assert!(
        !events.iter().any(|e| e["action"] == "substantive_response"),
        "{c:#}"
    );
    assert_eq!(c["state"], "verified", "{c:#}");
    assert!(c["closed_at"].is_null(), "{c:#}");
    assert_eq!(metrics(&t.path, "know")["open"], 1);

    // Only #complete answers it; the mail names no channel nobody used.
    command(servers, &t, &id, "#complete").await;
    assert_eq!(support::case_json(&t.path, &id)["state"], "completed");
    let done = mail_saying(servers, &consumer, "We have completed the California").await;
    assert!(subject(&done).contains(&id));
    let text = flat(&done);
    for channel in [
        "secure channel",
        "portal",
        "download",
        "attached",
        "by post",
    ] {
        assert!(!text.contains(channel), "{channel}: {text}");
    }
    assert!(text.contains("If you have not received it"), "{text}");
    assert_eq!(metrics(&t.path, "know")["complied"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn default_mail_states_current_law() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let alice = servers.unique_user("alice");
    let notify = servers.unique_user("team");
    let config = DaemonConfig::new(servers, &mailbox)
        .team_members(&[&alice])
        .team_notify(&[&notify])
        .set("agents", "require_notarized", "true")
        .set("policy", "retention_months", "30")
        .set_str("company", "phone", "+1 415 555 0100");
    let path = config.write();
    let t = Team {
        mailbox,
        alice,
        notify,
        config,
        path,
    };

    // An agent without a declaration: current §7063 and §7060(e).
    let agent = servers.unique_user("agent");
    let request = mail::request(
        &agent,
        &t.mailbox,
        "California Request to Know",
        "I am an authorized agent acting on behalf of John Roe. We will send the authorization later.\n",
    );
    deliver(servers, &t, &agent, &request).await;
    let needed = mail_saying(servers, &agent, "proof that the consumer authorized you").await;
    let text = flat(&needed);
    assert!(!text.contains("Secretary of State"), "{text}");
    assert!(
        text.contains("California Probate Code sections 4121 to 4130"),
        "{text}"
    );
    assert!(
        text.contains("Example Inc. will reimburse the cost of the notarization"),
        "{text}"
    );
    assert!(text.contains("Phone: +1 415 555 0100"), "{text}");

    // A consumer's Know: back to January 1, 2022; automatic mail is marked so.
    let asker = servers.unique_user("asker");
    let request = mail::request(&asker, &t.mailbox, "California Request to Know", "Hi\n");
    deliver(servers, &t, &asker, &request).await;
    let ack = nth_mail(servers, &asker, 1).await;
    let text = flat(&ack);
    assert!(
        text.contains("more than 12 months ago, back to January 1, 2022"),
        "{text}"
    );
    assert!(text.contains("Phone: +1 415 555 0100"), "{text}");
    assert_eq!(
        support::header(&ack, "Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    let know_id = support::cases_json(&t.path)
        .into_iter()
        .find(|c| c["requester"] == asker.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The team's decision is not automatic mail.
    command(servers, &t, &know_id, "#deny We hold no data about you.").await;
    assert_eq!(support::case_json(&t.path, &know_id)["state"], "denied");
    let denial = nth_mail(servers, &asker, 2).await;
    assert!(flat(&denial).contains("We hold no data about you."));
    assert_eq!(
        support::header(&denial, "Auto-Submitted").as_deref(),
        Some("no"),
        "a team decision is not auto-replied"
    );

    // A deletion: the retention paragraph follows retention_months.
    let consumer = servers.unique_user("consumer");
    let request = mail::request(
        &consumer,
        &t.mailbox,
        "California Request to Delete",
        "Delete it all.\n",
    );
    deliver(servers, &t, &consumer, &request).await;
    let del_id = support::cases_json(&t.path)
        .into_iter()
        .find(|c| c["requester"] == consumer.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    act(&t.path, &del_id, &["verify"]);
    support::run_once_ok(&t.path);
    let confirm = nth_mail(servers, &consumer, 2).await;
    let yes = mail::reply(&consumer, &confirm, Reply::Gmail, "CONFIRM");
    deliver(servers, &t, &consumer, &yes).await;
    assert_eq!(support::case_json(&t.path, &del_id)["state"], "confirmed");
    act(&t.path, &del_id, &["complete"]);
    support::run_once_ok(&t.path);
    let done = mail_saying(
        servers,
        &consumer,
        "We have carried out the Request to Delete",
    )
    .await;
    let text = flat(&done);
    assert!(
        text.contains("The personal information covered by the request has been deleted."),
        "{text}"
    );
    assert!(
        text.contains("30 months after we closed the request we remove your contact details"),
        "{text}"
    );
    assert!(!text.contains("24 months"), "{text}");
    assert!(text.contains("Phone: +1 415 555 0100"), "{text}");
    assert_eq!(
        support::header(&done, "Auto-Submitted").as_deref(),
        Some("no")
    );
}
