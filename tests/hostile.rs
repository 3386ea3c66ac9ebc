//! Hostile and faulty mail, second round (issue 12: items 3, 4, 6, 7, 10 and
//! the low ones), against the real Dovecot and Postfix: an attachment bomb
//! while mail is pending and `cases act` runs, large messages in the Sent
//! folder at start-up, forged known-agent senders and `+tag` senders, a
//! team member's forwarding loop.

mod support;

use std::path::Path;
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
    let mailbox = servers.unique_user("privacy");
    let alice = servers.unique_user("alice");
    let first = servers.unique_user("consumer");
    let config = DaemonConfig::new(servers, &mailbox)
        .team_members(&[&alice])
        .team_notify(&[&alice]);
    let path = config.write();

    // A case to act on while the bomb is taken in.
    servers
        .append_request(&mailbox, &first, "California Request to Know")
        .await;
    support::assert_ok(&daemon::run_once(&path), "run --once");
    let id = cases_json(&path)[0]["id"].as_str().unwrap().to_string();

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
        events(&path, &id)
            .iter()
            .any(|e| e["detail"].as_str().unwrap_or("").contains("checked by phone")),
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
    // Nothing of it was stored as a document, and no case was opened for it.
    let stored = walk_files(&config.attachments_dir());
    assert_eq!(stored, 0, "no attachment file stored");
    assert!(
        d.try_status().is_none(),
        "the daemon is still running:\n{}",
        d.log()
    );
    assert!(d.log().contains("Message over a MIME cap"), "{}", d.log());
    d.terminate(Duration::from_secs(15));
}

fn walk_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { walk_files(&p) } else { 1 }
        })
        .sum()
}
