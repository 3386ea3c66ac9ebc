//! Authorized agents and their declaration documents on real servers
//! (issue 5, SPEC §7): detection, the content-addressed store, the
//! declaration register and the verification gate, the declaration-needed
//! reply, the consumer's direct confirmation, size limits, hostile names,
//! bursts, and `attachments export`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::MailServers;
use support::daemon::{self, DaemonConfig};
use support::mail::{self, Reply};

/// A small PDF that looks real enough to every sniffer.
fn pdf(tag: &str) -> Vec<u8> {
    format!(
        "%PDF-1.4\n%\u{e2}\u{e3}\u{cf}\u{d3}\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n\
         2 0 obj\n<< /Type /Pages /Kids [] /Count 0 /Title ({tag}) >>\nendobj\n\
         trailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )
    .into_bytes()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(A[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One attachment: the raw parameter text after `Content-Disposition:
/// attachment;` (so tests can write RFC 2231 forms), the type, the bytes.
struct Att<'a> {
    disposition_params: String,
    content_type: &'a str,
    bytes: Vec<u8>,
}

fn att<'a>(filename: &str, content_type: &'a str, bytes: Vec<u8>) -> Att<'a> {
    Att {
        disposition_params: format!("filename=\"{filename}\""),
        content_type,
        bytes,
    }
}

/// A multipart/mixed message with a text part and base64 attachments.
fn with_attachments(
    from: &str,
    to: &str,
    subject: &str,
    extra_headers: &str,
    body: &str,
    attachments: &[Att<'_>],
) -> Vec<u8> {
    let boundary = format!(
        "=_b{}",
        sha256_hex(subject.as_bytes()).get(..12).unwrap_or("x")
    );
    let mut s = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {}\r\nDate: {}\r\nMIME-Version: 1.0\r\n",
        mail::new_message_id(),
        chrono::Utc::now().to_rfc2822()
    );
    for line in extra_headers.lines().filter(|l| !l.is_empty()) {
        s.push_str(line);
        s.push_str("\r\n");
    }
    s.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\nThis is a MIME message.\r\n"
    ));
    s.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}\r\n",
        body.replace("\r\n", "\n").replace('\n', "\r\n")
    ));
    for a in attachments {
        s.push_str(&format!(
            "--{boundary}\r\nContent-Type: {}\r\nContent-Disposition: attachment;\r\n {}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            a.content_type,
            a.disposition_params,
            base64(&a.bytes)
        ));
    }
    s.push_str(&format!("--{boundary}--\r\n"));
    s.into_bytes()
}

/// A reply in the thread of `original` (In-Reply-To/References set) with attachments.
fn reply_with_attachments(
    from: &str,
    original: &[u8],
    body: &str,
    attachments: &[Att<'_>],
) -> Vec<u8> {
    let to = mail::addr_of(&support::header(original, "From").unwrap_or_default());
    let subject = support::header(original, "Subject").unwrap_or_default();
    let id = support::header(original, "Message-ID").unwrap_or_default();
    let refs = support::header(original, "References").unwrap_or_default();
    let headers = format!("In-Reply-To: {id}\nReferences: {} {id}", refs.trim());
    with_attachments(
        from,
        &to,
        &format!("Re: {subject}"),
        &headers,
        body,
        attachments,
    )
}

fn agent_body(consumer_name: &str, consumer: &str) -> String {
    format!(
        "Hello,\n\nI am an authorized agent acting on behalf of {consumer_name}.\n\n\
         Consumer name: {consumer_name}\nConsumer email: {consumer}\n\n\
         The signed declaration is attached.\n\nRights Agent Services\n"
    )
}

async fn deliver(servers: &MailServers, path: &Path, from: &str, mailbox: &str, raw: &[u8]) {
    let before = servers.count(mailbox, "INBOX").await;
    servers.send_smtp(from, &[mailbox], raw).await;
    servers
        .wait_for(mailbox, "INBOX", before + 1, Duration::from_secs(20))
        .await;
    support::assert_ok(&daemon::run_once(path), "run --once");
}

fn case_by(path: &Path, requester: &str) -> Value {
    let id = support::cases_json(path)
        .into_iter()
        .find(|c| c["requester"] == requester)
        .unwrap_or_else(|| panic!("a case for {requester}"))["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    support::case_json(path, &id)
}

fn templates_sent(case: &Value) -> Vec<String> {
    case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["template"].as_str().map(str::to_string))
        .collect()
}

/// The decoded Subject.
fn subject_of(raw: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse(raw)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The stored file of `sha`, checked for place and modes.
fn assert_stored(attachments_dir: &Path, sha: &str, bytes: &[u8]) -> PathBuf {
    let file = attachments_dir
        .join("sha256")
        .join(&sha[..2])
        .join(&sha[2..4])
        .join(sha);
    assert_eq!(
        std::fs::read(&file).unwrap_or_default(),
        bytes,
        "{}",
        file.display()
    );
    assert_eq!(mode(&file), 0o600, "file mode of {}", file.display());
    let mut dir = file.parent().unwrap();
    while dir.starts_with(attachments_dir) {
        assert_eq!(mode(dir), 0o700, "folder mode of {}", dir.display());
        dir = dir.parent().unwrap();
    }
    file
}

fn cli(path: &Path, args: &[&str]) -> std::process::Output {
    daemon::cli(path, args)
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_delete_with_pdf_declaration_is_registered_and_gates_verification() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    // A known agent service whose mail our MX authenticated: only for those
    // does the daemon write to the consumer the agent names.
    let agent = servers
        .authenticated_user("agent")
        .replace("@example.test", "@rights-agent.example.test");
    let consumer = servers.unique_user("consumer");
    let config = DaemonConfig::new(servers, &mailbox)
        .set("agents", "known_domains", "[\"rights-agent.example.test\"]")
        .set(
            "team",
            "trusted_authserv_ids",
            format!("[\"{}\"]", support::MX_AUTHSERV_ID),
        );
    let path = config.write();

    // RFC 2231 continuation with a percent-encoded UTF-8 name.
    let declaration = pdf("declaration");
    let request = with_attachments(
        &agent,
        &mailbox,
        "California Request to Delete",
        "",
        &agent_body("Jane Doe", &consumer),
        &[Att {
            disposition_params:
                "filename*0*=UTF-8''Declaration%20sign;\r\n filename*1*=%C3%A9e.pdf".into(),
            content_type: "application/pdf",
            bytes: declaration.clone(),
        }],
    );
    deliver(servers, &path, &agent, &mailbox, &request).await;

    let c = case_by(&path, &agent);
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(c["kind"], "delete");
    assert_eq!(c["agent"], agent.as_str(), "{c:#}");
    assert_eq!(c["consumer"], consumer.as_str(), "{c:#}");
    assert_eq!(c["consumer_name"], "Jane Doe");
    let atts = c["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 1, "{c:#}");
    let sha = sha256_hex(&declaration);
    assert_eq!(atts[0]["sha256"], sha.as_str());
    assert_eq!(atts[0]["filename"], "Declaration signée.pdf");
    assert_eq!(atts[0]["size"], declaration.len());
    assert_eq!(atts[0]["content_type"], "application/pdf");
    assert_eq!(atts[0]["status"], "pending_review");
    assert_stored(&config.attachments_dir(), &sha, &declaration);
    let sent = templates_sent(&c);
    assert!(sent.contains(&"acknowledgement".to_string()), "{sent:?}");
    assert!(
        sent.contains(&"agent_consumer_confirm".to_string()),
        "{sent:?}"
    );
    assert!(
        !sent.contains(&"agent_declaration_needed".to_string()),
        "a declaration came: {sent:?}"
    );

    // The consumer is asked directly and answers in the thread.
    let confirm = servers
        .wait_for(&consumer, "INBOX", 1, Duration::from_secs(30))
        .await
        .pop()
        .unwrap();
    assert!(
        support::header(&confirm, "Subject")
            .unwrap_or_default()
            .contains(&id)
    );
    let yes = mail::reply(
        &consumer,
        &confirm,
        Reply::Gmail,
        "Yes, I authorized this agent.",
    );
    deliver(servers, &path, &consumer, &mailbox, &yes).await;
    let c = support::case_json(&path, &id);
    let inbound = c["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["direction"] == "in")
        .count();
    assert_eq!(
        inbound, 2,
        "the consumer's reply is recorded on the case: {c:#}"
    );
    assert!(
        c["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == consumer.as_str()),
        "{c:#}"
    );

    // Not verifiable until the declaration is accepted.
    let refused = cli(&path, &["cases", "act", &id, "verify"]);
    assert_eq!(refused.status.code(), Some(2), "verify is refused");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("declaration"),
        "{refused:?}"
    );
    let ok = cli(
        &path,
        &[
            "cases",
            "act",
            &id,
            "declaration-accept",
            "--by",
            "alice@example.com",
        ],
    );
    support::assert_ok(&ok, "declaration-accept");
    let c = support::case_json(&path, &id);
    assert_eq!(c["attachments"][0]["status"], "accepted", "{c:#}");
    assert!(
        c["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "documents_reviewed" && e["actor"] == "alice@example.com")
    );
    support::assert_ok(
        &cli(&path, &["cases", "act", &id, "verify"]),
        "verify after acceptance",
    );
    assert_eq!(
        support::case_json(&path, &id)["state"],
        "awaiting_confirmation"
    );

    // The team gets the identical bytes out.
    let out = config.dir().join("exported.pdf");
    let export = cli(
        &path,
        &[
            "attachments",
            "export",
            &sha,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    support::assert_ok(&export, "attachments export");
    assert_eq!(std::fs::read(&out).unwrap(), declaration);
    assert_eq!(mode(&out), 0o600);
    let unknown = cli(
        &path,
        &[
            "attachments",
            "export",
            &"0".repeat(64),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "an unknown hash is a usage error"
    );
    let bad = cli(
        &path,
        &[
            "attachments",
            "export",
            "../../etc/passwd",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_know_without_declaration_is_asked_for_one_which_joins_the_register() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let agent = servers.unique_user("agent");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();

    let request = mail::request(
        &agent,
        &mailbox,
        "California Request to Know",
        "I am an authorized agent acting on behalf of John Roe. We will send the authorization later.\n",
    );
    deliver(servers, &path, &agent, &mailbox, &request).await;
    let c = case_by(&path, &agent);
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(c["agent"], agent.as_str());
    assert_eq!(c["consumer_name"], "John Roe");
    assert!(c["attachments"].as_array().unwrap().is_empty());
    assert!(
        templates_sent(&c).contains(&"agent_declaration_needed".to_string()),
        "{c:#}"
    );
    let mails = servers
        .wait_for(&agent, "INBOX", 2, Duration::from_secs(30))
        .await;
    let needed = mails
        .iter()
        .find(|m| subject_of(m).starts_with("Authorization needed"))
        .expect("the declaration-needed reply reaches the agent");

    // The declaration arrives later in the thread.
    let declaration = pdf("later");
    let reply = reply_with_attachments(
        &agent,
        needed,
        "Please find the signed authorization attached.",
        &[att(
            "authorization.pdf",
            "application/pdf",
            declaration.clone(),
        )],
    );
    deliver(servers, &path, &agent, &mailbox, &reply).await;
    let c = support::case_json(&path, &id);
    let atts = c["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 1, "{c:#}");
    assert_eq!(atts[0]["sha256"], sha256_hex(&declaration).as_str());
    assert_eq!(atts[0]["filename"], "authorization.pdf");
    assert_eq!(atts[0]["status"], "pending_review");
    assert_stored(
        &config.attachments_dir(),
        &sha256_hex(&declaration),
        &declaration,
    );

    // Rejected: the agent is told, the case stays unverifiable; then #poa.
    let verify = cli(&path, &["cases", "act", &id, "verify"]);
    assert_eq!(verify.status.code(), Some(2));
    support::assert_ok(
        &cli(
            &path,
            &[
                "cases",
                "act",
                &id,
                "declaration-reject",
                "--reason",
                "The declaration is not signed.",
            ],
        ),
        "declaration-reject",
    );
    let c = support::case_json(&path, &id);
    assert_eq!(c["attachments"][0]["status"], "rejected");
    assert!(templates_sent(&c).contains(&"declaration_rejected".to_string()));
    assert_eq!(
        cli(&path, &["cases", "act", &id, "verify"]).status.code(),
        Some(2)
    );
    support::assert_ok(&daemon::run_once(&path), "deliver");
    let rejected = servers
        .wait_for(&agent, "INBOX", 3, Duration::from_secs(30))
        .await;
    assert!(
        rejected
            .iter()
            .any(|m| mail::text_of(m).contains("The declaration is not signed."))
    );

    support::assert_ok(&cli(&path, &["cases", "act", &id, "poa"]), "poa");
    support::assert_ok(
        &cli(&path, &["cases", "act", &id, "verify"]),
        "verify after poa",
    );
    assert_eq!(support::case_json(&path, &id)["state"], "verified");
}

#[tokio::test(flavor = "multi_thread")]
async fn attachment_over_the_limit_is_refused_by_size_and_kept_in_review() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let agent = servers.unique_user("agent");
    let team = servers.unique_user("team");
    let config = DaemonConfig::new(servers, &mailbox)
        .set("agents", "max_attachment_bytes", "2000")
        .team_notify(&[&team]);
    let path = config.write();

    let mut big = pdf("big");
    big.resize(5000, b' ');
    let request = with_attachments(
        &agent,
        &mailbox,
        "California Request to Delete",
        "",
        &agent_body("Jane Doe", "jane@consumer.example.test"),
        &[att("Declaration.pdf", "application/pdf", big)],
    );
    deliver(servers, &path, &agent, &mailbox, &request).await;
    assert!(
        support::cases_json(&path).is_empty(),
        "no case from a refused message"
    );
    let review = servers
        .wait_for(&mailbox, "Review", 1, Duration::from_secs(20))
        .await;
    assert_eq!(review.len(), 1);
    assert_eq!(
        support::header(&review[0], "Message-ID"),
        support::header(&request, "Message-ID"),
        "the original is kept in review"
    );
    assert_eq!(servers.count(&mailbox, "INBOX").await, 0);
    let notice = servers
        .wait_for(&team, "INBOX", 1, Duration::from_secs(30))
        .await;
    let text = mail::text_of(&notice[0]);
    assert!(text.contains("max_attachment_bytes"), "{text}");
    // Judged by the server's BODYSTRUCTURE: the body was never fetched.
    assert!(
        text.contains("\"Declaration.pdf\" is at least")
            && text.contains("without reading its body"),
        "{text}"
    );
    assert!(
        text.contains("reads like a Request to Delete"),
        "the team can still open it: {text}"
    );
    assert!(
        !config.attachments_dir().join("sha256").exists(),
        "nothing of a refused message is stored"
    );
    assert_eq!(
        servers.count(&agent, "INBOX").await,
        0,
        "no reply to the sender"
    );

    // In a case thread: an event on the case, the message in review.
    let small = mail::request(
        &agent,
        &mailbox,
        "California Request to Know",
        "I am an authorized agent acting on behalf of John Roe.\n",
    );
    deliver(servers, &path, &agent, &mailbox, &small).await;
    let c = case_by(&path, &agent);
    let id = c["id"].as_str().unwrap().to_string();
    let ack = servers
        .wait_for(&agent, "INBOX", 1, Duration::from_secs(30))
        .await
        .remove(0);
    let mut huge = pdf("huge");
    huge.resize(3000, b' ');
    let reply = reply_with_attachments(
        &agent,
        &ack,
        "Declaration attached.",
        &[att("Declaration.pdf", "application/pdf", huge)],
    );
    deliver(servers, &path, &agent, &mailbox, &reply).await;
    let c = support::case_json(&path, &id);
    assert!(c["attachments"].as_array().unwrap().is_empty(), "{c:#}");
    assert!(
        c["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "oversize"
                && e["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("max_attachment_bytes")),
        "{c:#}"
    );
    assert_eq!(c["state"], "awaiting_verification");
    assert_eq!(servers.count(&mailbox, "Review").await, 2);
}

/// A large message is read piece by piece and never held whole (issue 13):
/// its declaration goes to the store as it streams, the message row names
/// the stored original by its hash, and the team gets the identical bytes
/// out. A small attachment beside it stays in the message as usual.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_declaration_is_taken_in_piece_by_piece() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let agent = servers.unique_user("agent");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();

    // 6 MiB, over the 2 MiB above which a message is spooled; bytes that
    // do not repeat, so a part mixed up with another cannot pass.
    let mut big = pdf("large");
    let mut x: u32 = 0x2545_f491;
    while big.len() < 6 * 1024 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        big.extend_from_slice(&x.to_le_bytes());
    }
    let small = pdf("small");
    let request = with_attachments(
        &agent,
        &mailbox,
        "California Request to Delete",
        "",
        &agent_body("Jane Doe", "jane@consumer.example.test"),
        &[
            att("Declaration.pdf", "application/pdf", big.clone()),
            att("Letter.pdf", "application/pdf", small.clone()),
        ],
    );
    deliver(servers, &path, &agent, &mailbox, &request).await;
    let c = case_by(&path, &agent);
    assert_eq!(c["kind"], "delete", "{c:#}");
    let docs: Vec<(String, String, u64, String)> = c["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["filename"].as_str().unwrap().to_string(),
                a["sha256"].as_str().unwrap().to_string(),
                a["size"].as_u64().unwrap(),
                a["content_type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        docs,
        vec![
            (
                "Declaration.pdf".to_string(),
                sha256_hex(&big),
                big.len() as u64,
                "application/pdf".to_string()
            ),
            (
                "Letter.pdf".to_string(),
                sha256_hex(&small),
                small.len() as u64,
                "application/pdf".to_string()
            ),
        ],
        "{c:#}"
    );
    let out = config.dir().join("large.pdf");
    let export = cli(
        &path,
        &[
            "attachments",
            "export",
            &sha256_hex(&big),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    support::assert_ok(&export, "attachments export");
    assert!(std::fs::read(&out).unwrap() == big, "identical bytes out");

    // The original is the store's file of its hash, identical to the copy
    // filed on the server; the row holds no bytes of it.
    let original = servers.fetch_all(&mailbox, "Processed").await.remove(0);
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", config.database_path().display()))
        .await
        .expect("open the database");
    let (sha, raw_file, raw_len): (String, bool, Option<i64>) =
        sqlx::query_as("SELECT sha256, raw_file, length(raw) FROM messages WHERE direction = 'in'")
            .fetch_one(&db)
            .await
            .expect("the message row");
    assert_eq!((raw_file, raw_len), (true, None));
    assert_eq!(sha, sha256_hex(&original));
    let file = config
        .attachments_dir()
        .join("sha256")
        .join(&sha[..2])
        .join(&sha[2..4])
        .join(&sha);
    assert!(std::fs::read(&file).unwrap() == original);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(servers.count(&mailbox, "INBOX").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_file_names_are_stored_safely() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let agent = servers.unique_user("agent");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();

    let passwd = b"root:x:0:0:root:/root:/bin/bash\n".to_vec();
    let evil = pdf("evil");
    let request = with_attachments(
        &agent,
        &mailbox,
        "California Request to Delete",
        "",
        &agent_body("Jane Doe", "jane@consumer.example.test"),
        &[
            att("../../etc/passwd", "text/plain", passwd.clone()),
            Att {
                // RFC 2231 with an encoded path and a control character.
                disposition_params: "filename*=UTF-8''..%2F..%2F..%2Ftmp%2Fevil%0A.pdf".into(),
                content_type: "application/pdf",
                bytes: evil.clone(),
            },
            att("..", "application/pdf", pdf("dots")),
        ],
    );
    deliver(servers, &path, &agent, &mailbox, &request).await;
    let c = case_by(&path, &agent);
    let names: Vec<&str> = c["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["filename"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["passwd", "evil.pdf", "attachment-3.pdf"], "{c:#}");
    assert_stored(&config.attachments_dir(), &sha256_hex(&passwd), &passwd);
    assert_stored(&config.attachments_dir(), &sha256_hex(&evil), &evil);
    // Nothing landed outside the store.
    let state = config.dir();
    assert!(!state.join("etc").exists() && !state.parent().unwrap().join("etc/passwd").exists());
    let mut files = Vec::new();
    let mut dirs = vec![config.attachments_dir()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                files.push(e.path());
            }
        }
    }
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_agent_requests_at_once_all_become_cases() {
    const N: usize = 200;
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let agent = servers.unique_user("agent");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();

    // Every request carries its own declaration and the same agent licence.
    let licence = pdf("agent licence");
    let mut session = servers.imap_session(&mailbox).await;
    for i in 0..N {
        let consumer = format!("consumer{i}@people.example.test");
        let raw = with_attachments(
            &agent,
            &mailbox,
            &format!(
                "California Request to {} #{i}",
                if i % 2 == 0 { "Delete" } else { "Know" }
            ),
            "",
            &agent_body(&format!("Person Number{i}"), &consumer),
            &[
                att(
                    &format!("Declaration-{i}.pdf"),
                    "application/pdf",
                    pdf(&format!("declaration {i}")),
                ),
                att("Agent licence.pdf", "application/pdf", licence.clone()),
            ],
        );
        session
            .append("INBOX", None, None, &raw)
            .await
            .unwrap_or_else(|e| panic!("APPEND {i}: {e}"));
    }
    let _ = session.logout().await;

    support::assert_ok(&daemon::run_once(&path), "run --once");
    let cases = support::cases_json(&path);
    assert_eq!(cases.len(), N, "every request is a case");
    assert!(cases.iter().all(|c| c["agent"] == agent.as_str()));
    let consumers: std::collections::BTreeSet<&str> = cases
        .iter()
        .filter_map(|c| c["consumer"].as_str())
        .collect();
    assert_eq!(consumers.len(), N, "each case knows its consumer");
    let sample = support::case_json(&path, cases[N / 2]["id"].as_str().unwrap());
    assert_eq!(
        sample["attachments"].as_array().unwrap().len(),
        2,
        "{sample:#}"
    );
    assert_eq!(servers.count(&mailbox, "INBOX").await, 0, "all filed");

    // N declarations + one licence: identical files are stored once.
    let mut files = 0;
    let mut dirs = vec![config.attachments_dir().join("sha256")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                files += 1;
            }
        }
    }
    assert_eq!(files, N + 1);
    assert_stored(&config.attachments_dir(), &sha256_hex(&licence), &licence);
}

#[tokio::test(flavor = "multi_thread")]
async fn message_over_the_message_limit_is_recorded_from_headers_and_the_team_told() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let agent = servers.unique_user("agent");
    let team = servers.unique_user("team");
    let config = DaemonConfig::new(servers, &mailbox)
        .set("imap", "max_message_bytes", "4000")
        .team_notify(&[&team]);
    let path = config.write();

    let mut big = pdf("whole message too big");
    big.resize(6000, b' ');
    let request = with_attachments(
        &agent,
        &mailbox,
        "California Request to Know",
        "",
        &agent_body("Jane Doe", "jane@consumer.example.test"),
        &[att("Declaration.pdf", "application/pdf", big)],
    );
    deliver(servers, &path, &agent, &mailbox, &request).await;
    assert!(support::cases_json(&path).is_empty());
    let review = servers
        .wait_for(&mailbox, "Review", 1, Duration::from_secs(20))
        .await;
    assert_eq!(
        support::header(&review[0], "Message-ID"),
        support::header(&request, "Message-ID")
    );
    let notice = servers
        .wait_for(&team, "INBOX", 1, Duration::from_secs(30))
        .await;
    let text = mail::text_of(&notice[0]);
    assert!(text.contains("max_message_bytes"), "{text}");
    assert!(!config.attachments_dir().join("sha256").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_agent_cannot_make_the_daemon_write_to_a_third_party() {
    let servers = MailServers::start();
    let mailbox = servers.unique_user("privacy");
    let agent = servers.unique_user("self-styled-agent");
    let victim = servers.unique_user("victim");
    let config = DaemonConfig::new(servers, &mailbox);
    let path = config.write();
    let request = support::mail::request(
        &agent,
        &mailbox,
        "California Request to Know",
        &agent_body("Victim Person", &victim),
    );
    deliver(servers, &path, &agent, &mailbox, &request).await;
    let c = case_by(&path, &agent);
    assert_eq!(c["consumer"], victim.as_str());
    let events = c["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["action"] == "reply_suppressed"
            && e["detail"].as_str().unwrap_or("").contains("known_domains")),
        "{events:#?}"
    );
    servers.wait_mail_delivered(Duration::from_secs(30)).await;
    assert_eq!(
        servers.count(&victim, "INBOX").await,
        0,
        "nothing to the named consumer"
    );
    assert!(
        servers.count(&agent, "INBOX").await >= 1,
        "the agent is acknowledged"
    );
}
