//! Hostile and faulty mail, second round (issue 12: items 3, 4, 6, 7, 10 and
//! the low ones), against the real Dovecot and Postfix: an attachment bomb
//! while mail is pending and `cases act` runs, large messages in the Sent
//! folder at start-up, forged known-agent senders and `+tag` senders, `#open`
//! from review with a Reply-To, a team member's forwarding loop and a
//! stranger's tagged mail, deadline notices while IMAP is down, and a message
//! Dovecot cannot read.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::daemon::{self, DaemonConfig};
use support::mail;
use support::{MailServers, cases_json};

/// Polls `check` until it holds, failing after `secs` with `what`.
async fn wait_until_for(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where most tests here start: a privacy mailbox whose one team member,
/// alice, also gets the notices, and one consumer's Request to Know taken
/// in by `run --once` (the case `id`).
/// Keep `config` bound while the test runs: it owns the temporary
/// directory that holds the config file and the database.
struct OneCase {
    mailbox: String,
    alice: String,
    config: DaemonConfig,
    path: PathBuf,
    id: String,
}

async fn one_case(servers: &'static MailServers) -> OneCase {
    let mailbox = servers.unique_user("privacy");
    let alice = servers.unique_user("alice");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::new(servers, &mailbox)
        .team_members(&[&alice])
        .team_notify(&[&alice]);
    let path = config.write();
    servers
        .append_request(&mailbox, &consumer, "California Request to Know")
        .await;
    support::run_once_ok(&path);
    let id = support::first_case_id(&path);
    OneCase {
        mailbox,
        alice,
        config,
        path,
        id,
    }
}

fn events(path: &Path, id: &str) -> Vec<serde_json::Value> {
    let case = support::case_json(path, id);
    case["events"].as_array().cloned().unwrap_or_default()
}

/// A message under the size limit with `parts` tiny attachments, whose body
/// says "on behalf of" (so, uncapped, it would become an agent case and every
/// part a stored document).
fn attachment_bomb(from: &str, to: &str, parts: usize) -> Vec<u8> {
    let mut s = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: California Request to Delete\r\nMessage-ID: {}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nI am writing on behalf of my client, consumer@example.net.\r\n",
        mail::new_message_id()
    );
    for i in 0..parts {
        s.push_str(&format!(
            "--b\r\nContent-Type: application/pdf; name=\"d{i}.pdf\"\r\n\r\n%PDF-1\r\n"
        ));
    }
    s.push_str("--b--\r\n");
    s.into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attachment_bomb_goes_to_review_while_other_mail_and_cases_act_go_on() {
    let servers = MailServers::start();
    // A case to act on while the bomb is taken in.
    let OneCase {
        mailbox,
        alice,
        config,
        path,
        id,
        ..
    } = one_case(servers).await;

    let bomb = attachment_bomb("agent@bomb.example.org", &mailbox, 100_000);
    assert!(bomb.len() < 10 * 1024 * 1024, "{} bytes", bomb.len());
    servers.append(&mailbox, "INBOX", &bomb).await;
    let others: Vec<String> = (0..3).map(|_| servers.unique_user("pending")).collect();
    for o in &others {
        servers
            .append_request(&mailbox, o, "California Request to Know")
            .await;
    }

    let mut d = daemon::spawn(&path);
    // `cases act` while the daemon takes in the bomb and the others.
    let act = tokio::task::spawn_blocking({
        let path = path.clone();
        let id = id.clone();
        move || {
            daemon::run_with_timeout(
                daemon::command(&path, &["cases", "act", &id, "note", "checked by phone"]),
                Duration::from_secs(60),
            )
        }
    });
    wait_until_for("the other requests become cases", 180, async || {
        cases_json(&path).len() == 1 + others.len()
    })
    .await;
    let act = act.await.unwrap();
    support::assert_ok(&act, "cases act … note");
    assert!(
        events(&path, &id).iter().any(|e| e["detail"]
            .as_str()
            .unwrap_or("")
            .contains("checked by phone")),
        "the note is on the case"
    );

    wait_until_for("the bomb is in Review", 120, async || {
        servers.count(&mailbox, "Review").await == 1
    })
    .await;
    assert_eq!(servers.count(&mailbox, "INBOX").await, 0);
    // The team is told why.
    wait_until_for("the team hears of the bomb", 120, async || {
        servers
            .fetch_all(&alice, "INBOX")
            .await
            .iter()
            .any(|m| mail::text_of(m).contains("imap.max_mime_parts"))
    })
    .await;
    // Nothing of it was stored as a document, and no case was opened for
    // it. Over 2 MiB, it was read piece by piece: its original is the one
    // file, named by its hash.
    let review = servers.fetch_all(&mailbox, "Review").await;
    let original = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&review[0]))
    };
    let stored = walk_files(&config.attachments_dir());
    assert_eq!(stored, [original], "no attachment file stored");
    assert!(
        d.try_status().is_none(),
        "the daemon is still running:\n{}",
        d.log()
    );
    assert!(d.log().contains("Message over a MIME cap"), "{}", d.log());
    d.terminate(Duration::from_secs(15));
}

/// The names of the files under `dir`, at any depth.
fn walk_files(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_files(&p)
            } else {
                vec![e.file_name().to_string_lossy().into_owned()]
            }
        })
        .collect()
}

/// The daemon's peak resident memory (VmHWM), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A message of about `bytes` sent from the shared mailbox in a case's
/// thread: a data export, as a member might send it from a mail client.
fn large_sent_mail(from: &str, to: &str, case_id: &str, bytes: usize) -> Vec<u8> {
    let mut s = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Your data [{case_id}]\r\nMessage-ID: {}\r\nDate: {}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nHere is the export.\r\n--x\r\nContent-Type: application/octet-stream; name=\"export.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        mail::new_message_id(),
        chrono::Utc::now().to_rfc2822()
    );
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    while s.len() < bytes {
        s.push_str(line);
    }
    s.push_str("--x--\r\n");
    s.into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn large_messages_in_the_sent_folder_do_not_block_intake_or_memory() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    servers
        .append_request(&mailbox, &consumer, "California Request to Know")
        .await;
    // The first run opens a case and sets the Sent-folder cursor.
    support::run_once_ok(&path);
    let id = support::first_case_id(&path);

    const EXPORTS: usize = 10;
    const SIZE: usize = 40 * 1024 * 1024;
    for _ in 0..EXPORTS {
        let export = large_sent_mail(&mailbox, &consumer, &id, SIZE);
        servers.append(&mailbox, "Sent", &export).await;
    }
    let other = servers.unique_user("next");
    servers
        .append_request(&mailbox, &other, "California Request to Delete")
        .await;

    let started = Instant::now();
    let mut d = daemon::spawn(&path);
    wait_until_for("the new request is a case", 60, async || {
        cases_json(&path).len() == 2
    })
    .await;
    let took = started.elapsed();
    // The exports are recorded on the case from their headers.
    wait_until_for(
        "the exports are recorded as correspondence",
        60,
        async || {
            events(&path, &id)
                .iter()
                .filter(|e| {
                    matches!(
                        e["action"].as_str(),
                        Some("team_correspondence" | "substantive_response")
                    )
                })
                .count()
                == EXPORTS
        },
    )
    .await;
    let peak = peak_memory(d.pid());
    assert!(peak > 0, "VmHWM readable");
    assert!(
        peak < 200 * 1024 * 1024,
        "peak memory {} MiB with {EXPORTS} messages of {} MiB in Sent",
        peak / 1024 / 1024,
        SIZE / 1024 / 1024
    );
    assert!(took < Duration::from_secs(60), "intake took {took:?}");
    assert!(d.try_status().is_none(), "{}", d.log());
    d.terminate(Duration::from_secs(15));
}

fn suppressed(path: &Path, id: &str) -> Vec<String> {
    events(path, id)
        .iter()
        .filter(|e| e["action"] == "reply_suppressed")
        .map(|e| e["detail"].as_str().unwrap_or("").to_string())
        .collect()
}

fn agent_request(agent: &str, mailbox: &str, consumer: &str) -> Vec<u8> {
    mail::request(
        agent,
        mailbox,
        "California Request to Delete",
        &format!(
            "I am an authorized agent acting on behalf of Pat Doe.\n\nConsumer email: {consumer}\n\nVisit https://evil.example/claim to confirm.\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_known_agent_gets_the_ordinary_limit_and_no_mail_to_the_consumer() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let config = DaemonConfig::new(servers, &mailbox)
        .set("agents", "known_domains", "[\"rights-agent.example.test\"]")
        .set(
            "team",
            "trusted_authserv_ids",
            format!("[\"{}\"]", support::MX_AUTHSERV_ID),
        )
        .set("policy", "max_auto_replies_per_day", "2");
    let path = config.write();

    // Forged: the known agent's domain in From, but the MX vouches for nobody.
    let forged = servers
        .unique_user("agent")
        .replace("@example.test", "@rights-agent.example.test");
    let victim = servers.unique_user("victim");
    for _ in 0..4 {
        servers
            .send_smtp(
                &forged,
                &[&mailbox],
                &agent_request(&forged, &mailbox, &victim),
            )
            .await;
    }
    // The real agent service, authenticated by the MX.
    let real = servers
        .authenticated_user("agent")
        .replace("@example.test", "@rights-agent.example.test");
    let consumers: Vec<String> = (0..3).map(|_| servers.unique_user("consumer")).collect();
    for consumer in &consumers {
        servers
            .send_smtp(
                &real,
                &[&mailbox],
                &agent_request(&real, &mailbox, consumer),
            )
            .await;
    }
    servers
        .wait_for(&mailbox, "INBOX", 7, Duration::from_secs(30))
        .await;
    support::run_once_ok(&path);

    let cases = cases_json(&path);
    assert_eq!(cases.len(), 7);
    let by = |who: &str| -> Vec<String> {
        cases
            .iter()
            .filter(|c| c["requester"] == who)
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    // The forger: two acknowledgements (the ordinary limit), never the consumer.
    let forged_ids = by(&forged);
    assert_eq!(forged_ids.len(), 4);
    let mut limited = 0;
    for id in &forged_ids {
        let why = suppressed(&path, id);
        assert!(
            why.iter()
                .any(|w| w.contains("not authenticated by our mail server")),
            "{id}: {why:?}"
        );
        limited += why
            .iter()
            .filter(|w| w.contains("automatic replies"))
            .count();
    }
    // Each case would send two mails to the agent (acknowledgement, and the
    // declaration still needed): 8, of which the limit lets 2 through.
    assert_eq!(limited, 6, "the ordinary limit of 2 applies");
    servers.inbox_exactly(&forged, 2).await;
    // The real agent: every mail goes out (no limit), the consumer asked with
    // fixed text only.
    for id in by(&real) {
        assert!(
            suppressed(&path, &id).is_empty(),
            "{id}: {:?}",
            suppressed(&path, &id)
        );
    }
    servers.inbox_exactly(&real, 6).await;
    for consumer in &consumers {
        let asked = servers.inbox_exactly(consumer, 1).await;
        let m = &asked[0];
        let text = mail::text_of(m);
        assert!(!text.contains("evil.example"), "{text}");
        assert!(!text.contains("Pat Doe"), "{text}");
        assert!(!text.contains(&real), "{text}");
    }
    assert_eq!(servers.count(&victim, "INBOX").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn plus_tags_count_with_the_bare_address_for_the_per_sender_limit() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let config =
        DaemonConfig::new(servers, &mailbox).set("policy", "max_auto_replies_per_day", "2");
    let path = config.write();
    let bare = servers.unique_user("tagger");
    let (local, domain) = bare.split_once('@').unwrap();
    let senders = [
        bare.clone(),
        format!("{local}+one@{domain}"),
        format!("{local}+two@{domain}"),
        format!("{local}+three@{domain}"),
    ];
    for s in &senders {
        servers
            .append_request(&mailbox, s, "California Request to Know")
            .await;
    }
    support::run_once_ok(&path);
    let cases = cases_json(&path);
    assert_eq!(cases.len(), 4);
    let limited: usize = cases
        .iter()
        .map(|c| {
            suppressed(&path, c["id"].as_str().unwrap())
                .iter()
                .filter(|w| w.contains("automatic replies"))
                .count()
        })
        .sum();
    assert_eq!(limited, 2, "four tags of one address share the limit of 2");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_from_review_shows_from_and_reply_to_and_takes_from_by_default() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let alice = servers.unique_user("alice");
    let config = DaemonConfig::new(servers, &mailbox)
        .team_members(&[&alice])
        .team_notify(&[&alice]);
    let path = config.write();
    let consumer = servers.unique_user("consumer");
    let elsewhere = servers.unique_user("elsewhere");
    let raw = mail::message(
        &consumer,
        &mailbox,
        "My account",
        &format!("Reply-To: {elsewhere}"),
        "Please delete my data.\n",
    );
    servers.send_smtp(&consumer, &[&mailbox], &raw).await;
    servers
        .wait_for(&mailbox, "INBOX", 1, Duration::from_secs(20))
        .await;
    support::run_once_ok(&path);
    let notice = servers
        .mail_with_subject(&alice, "Review: My account", Duration::from_secs(60))
        .await;
    let text = mail::text_of(&notice);
    assert!(text.contains(&format!("From:      {consumer}")), "{text}");
    assert!(text.contains(&format!("Reply-To:  {elsewhere}")), "{text}");
    let reply = mail::reply(&alice, &notice, mail::Reply::Gmail, "#open delete");
    servers.send_smtp(&alice, &[&mailbox], &reply).await;
    servers
        .wait_for(&mailbox, "INBOX", 1, Duration::from_secs(20))
        .await;
    support::run_once_ok(&path);
    let cases = cases_json(&path);
    assert_eq!(cases.len(), 1);
    assert_eq!(
        cases[0]["requester"],
        consumer.as_str(),
        "From, not Reply-To"
    );
    servers.inbox_exactly(&consumer, 1).await;
    assert_eq!(servers.count(&elsewhere, "INBOX").await, 0);
}

/// Team mails in `user`'s inbox whose subject names `id`.
async fn team_mail_about(servers: &MailServers, user: &str, id: &str) -> Vec<Vec<u8>> {
    servers
        .fetch_all(user, "INBOX")
        .await
        .into_iter()
        .filter(|m| {
            support::header(m, "Subject")
                .unwrap_or_default()
                .contains(id)
        })
        .collect()
}

/// An inline forward as mail clients write it: a new message, no
/// References, the original's text below a "Forwarded message" line.
fn forward(from: &str, to: &str, original: &[u8]) -> Vec<u8> {
    let subject = support::header(original, "Subject").unwrap_or_default();
    let body = format!(
        "---------- Forwarded message ---------\nFrom: {}\nSubject: {subject}\n\n{}",
        support::header(original, "From").unwrap_or_default(),
        mail::text_of(original)
    );
    mail::message(from, to, &format!("Fwd: {subject}"), "", &body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_members_forwarding_loop_stops_after_the_first_notice() {
    let servers = MailServers::start();
    let OneCase {
        mailbox,
        alice,
        config: _config,
        path,
        id,
    } = one_case(servers).await;
    let stranger = servers.unique_user("stranger");
    wait_until_for("the new-case notice", 30, async || {
        !team_mail_about(servers, &alice, &id).await.is_empty()
    })
    .await;
    // A stranger writes with the tag: one notice to the team.
    let tagged = mail::request(&stranger, &mailbox, &format!("About [{id}]"), "Hello\n");
    servers.send_smtp(&stranger, &[&mailbox], &tagged).await;
    servers
        .wait_for(&mailbox, "INBOX", 1, Duration::from_secs(20))
        .await;
    support::run_once_ok(&path);
    wait_until_for("the notice about the stranger", 30, async || {
        team_mail_about(servers, &alice, &id).await.len() == 2
    })
    .await;

    // Alice's rule forwards every notice back to the mailbox as new mail.
    for round in 0..3 {
        let newest = team_mail_about(servers, &alice, &id).await.pop().unwrap();
        let fwd = forward(&alice, &mailbox, &newest);
        servers.send_smtp(&alice, &[&mailbox], &fwd).await;
        servers
            .wait_for(&mailbox, "INBOX", 1, Duration::from_secs(20))
            .await;
        support::run_once_ok(&path);
        assert_eq!(servers.count(&mailbox, "INBOX").await, 0, "round {round}");
    }
    // Give a wrongly queued notice time to arrive, then count: nothing new.
    support::run_once_ok(&path);
    servers.inbox_exactly(&alice, 2).await;
    let returned = events(&path, &id)
        .iter()
        .filter(|e| e["action"] == "notice_returned")
        .count();
    assert_eq!(returned, 3, "each forwarded copy is recorded on the case");
}

#[tokio::test(flavor = "multi_thread")]
async fn tagged_mail_from_a_stranger_is_throttled_per_case() {
    let servers = MailServers::start();
    let OneCase {
        mailbox,
        alice,
        config: _config,
        path,
        id,
    } = one_case(servers).await;
    let stranger = servers.unique_user("stranger");
    for n in 0..8 {
        let tagged = mail::request(
            &stranger,
            &mailbox,
            &format!("About [{id}] #{n}"),
            "Hello again\n",
        );
        servers.append(&mailbox, "INBOX", &tagged).await;
    }
    support::run_once_ok(&path);
    // The new-case notice and four about the stranger: five in the hour.
    servers.inbox_exactly(&alice, 5).await;
    let held = events(&path, &id)
        .iter()
        .filter(|e| e["action"] == "notice_throttled")
        .count();
    assert_eq!(held, 4, "the other four are recorded");
    assert_eq!(servers.count(&mailbox, "Review").await, 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn deadline_notices_go_out_while_the_mailbox_is_unreachable() {
    let servers = MailServers::start();
    let OneCase {
        alice,
        config,
        path,
        id,
        ..
    } = one_case(servers).await;
    support::shift_case_times(&config.database_path(), &id, chrono::Duration::days(-50)).await;

    // The IMAP server is gone: nothing listens on the configured port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = config.imap_port(dead);
    config.write();
    let mut d = daemon::spawn(&path);
    let overdue = servers
        .mail_with_subject(
            &alice,
            &format!("Overdue: Request to Know [{id}]"),
            Duration::from_secs(60),
        )
        .await;
    assert!(mail::text_of(&overdue).contains("overdue"));
    assert!(
        d.log().contains("Mailbox session failed"),
        "the mailbox really was down:\n{}",
        d.log()
    );
    assert!(d.try_status().is_none(), "{}", d.log());
    d.terminate(Duration::from_secs(15));
}

/// The maildir files of `user`'s INBOX whose bytes contain `needle`.
fn maildir_files_with(servers: &MailServers, user: &str, needle: &str) -> Vec<std::path::PathBuf> {
    let root = servers.dir().join("mail").join(user).join("Maildir");
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(root.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if std::fs::read(&p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)) {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_the_server_will_not_return_is_retried_then_sent_to_review() {
    use std::os::unix::fs::PermissionsExt;
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let alice = servers.unique_user("alice");
    let config = DaemonConfig::new(servers, &mailbox)
        .team_members(&[&alice])
        .team_notify(&[&alice]);
    let path = config.write();
    // A message Dovecot lists but cannot read (its file unreadable to the
    // mail user): FETCH BODY[] answers NO [SERVERBUG].
    let sender = servers.unique_user("unreadable");
    servers
        .append_request(&mailbox, &sender, "California Request to Know")
        .await;
    let files = maildir_files_with(servers, &mailbox, &sender);
    assert_eq!(files.len(), 1, "the message's maildir file");
    std::fs::set_permissions(&files[0], std::fs::Permissions::from_mode(0o000)).unwrap();

    let mut d = daemon::spawn(&path);
    // The database exists once the daemon talks to IMAP (the CLI below must
    // not race its first migrations).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.log().contains("Created IMAP mailbox") {
        assert!(
            Instant::now() < deadline,
            "the daemon never connected:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each new request wakes the daemon for one more mailbox cycle; intake
    // goes on around the unreadable message.
    for n in 1..=3 {
        let other = servers.unique_user("next");
        servers
            .append_request(&mailbox, &other, "California Request to Delete")
            .await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while cases_json(&path).len() != n {
            assert!(
                Instant::now() < deadline,
                "request {n} was not taken in:\n{}\n{}",
                d.log(),
                servers.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while servers.count(&mailbox, "Review").await != 1 {
        assert!(
            Instant::now() < deadline,
            "the unreadable message is not in Review:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_until_for("the team is told", 60, async || {
        servers
            .fetch_all(&alice, "INBOX")
            .await
            .iter()
            .any(|m| mail::text_of(m).contains("did not return its body"))
    })
    .await;
    let log = d.log();
    assert!(log.contains("recording it from its headers"), "{log}");
    assert!(d.try_status().is_none(), "{log}");
    d.terminate(Duration::from_secs(15));
}
