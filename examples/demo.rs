//! `scripts/demo`: the daemon on local mail servers with sample requests.
//!
//! Starts a private Dovecot and Postfix (the integration tests' harness),
//! runs `privacy-mailroom run` on them, sends a Request to Know, a Request to
//! Delete, an opt-out and an ordinary question from consumer mailboxes, then
//! prints the cases and the replies the consumers got. Keeps running until
//! Ctrl-C, so you can look around with the CLI or a mail client.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::MailServers;
use support::daemon::{self, DaemonConfig};

const MAILBOX: &str = "privacy@example.com";
const TEAM: &str = "privacy-team@example.com";
const ALICE: &str = "alice@example.com";

#[tokio::main]
async fn main() {
    support::install_crypto_provider();
    println!("Starting private Dovecot (IMAP) and Postfix (SMTP) on loopback ports...");
    let servers = MailServers::start();
    let config = DaemonConfig::new(servers, MAILBOX)
        .team_members(&[ALICE])
        .team_notify(&[TEAM]);
    let path = config.write();
    // The demo config holds the test password inline: 0600, so `check` passes.
    if let Err(e) =
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
    {
        eprintln!("cannot make {} private: {e}", path.display());
        std::process::exit(1);
    }
    println!("Config: {}", path.display());

    let mut d = daemon::spawn(&path);
    while !servers
        .list_mailboxes(MAILBOX)
        .await
        .iter()
        .any(|m| m == "Processed")
    {
        if let Some(status) = d.try_status() {
            eprintln!("the daemon exited ({status}):\n{}", d.log());
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "Daemon running (log: {}).\n",
        path.with_file_name("daemon.log").display()
    );

    let requests = [
        (
            "jane@consumer.example",
            "California Request to Know",
            "Please tell me what personal information you hold about me.\nJane Doe, Sacramento, CA",
        ),
        (
            "raj@consumer.example",
            "Re: [web] CALIFORNIA REQUEST TO DELETE",
            "Please delete my account and all data.\nRaj Patel",
        ),
        (
            "li@consumer.example",
            "Do Not Sell My Personal Information",
            "Opt me out of any sale or sharing.",
        ),
        (
            "sam@consumer.example",
            "Where is my order?",
            "I ordered last week and nothing arrived.",
        ),
    ];
    for (from, subject, body) in requests {
        println!("  {from:<24} → {MAILBOX}: {subject}");
        servers
            .send_smtp(
                from,
                &[MAILBOX],
                &support::mail::request(from, MAILBOX, subject, body),
            )
            .await;
    }

    println!("\nWaiting for the daemon's answers...\n");
    for (from, _, _) in &requests[..3] {
        let got = servers
            .wait_for(from, "INBOX", 1, Duration::from_secs(60))
            .await;
        let reply = &got[0];
        println!(
            "── {from} received: {}",
            support::header(reply, "Subject").unwrap_or_default()
        );
        for line in support::mail::text_of(reply).lines().take(14) {
            println!("   │ {line}");
        }
        println!("   │ ...\n");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let out = daemon::cli(&path, &["cases", "list"]);
    println!("$ privacy-mailroom --config {} cases list", path.display());
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!(
        "\nThe question went to the Review folder ({} message(s)); the team got {} notice(s) at {TEAM}.",
        servers.count(MAILBOX, "Review").await,
        servers.count(TEAM, "INBOX").await
    );
    println!(
        "\nLook around while it runs:\n  cargo run -q -- --config {p} cases show <ID>\n  cargo run -q -- --config {p} cases act <ID> verify\n  IMAP: 127.0.0.1:{imaps} (TLS, CA {ca}), any address, password \"{pw}\"\n  SMTP: 127.0.0.1:{smtp} (STARTTLS), send mail to {MAILBOX}\n\nCtrl-C stops the daemon and the mail servers.",
        p = path.display(),
        imaps = servers.imaps_port(),
        ca = servers.ca_pem_path().display(),
        pw = servers.password(),
        smtp = servers.smtp_port(),
    );
    let _ = tokio::signal::ctrl_c().await;
    println!("\nStopping...");
    let status = d.terminate(Duration::from_secs(10));
    println!("Daemon exited: {status}");
}
