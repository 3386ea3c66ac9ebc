//! Real-world messages through `message::parse`.
//!
//! Always walks the repo-local fixtures in `tests/data/eml` (MIT-licensed
//! copies, see `ATTRIBUTION.md`). When `PRIVACY_MAILROOM_CORPUS` names the
//! shared real-world corpus (Zammad, RT, Webklex, mail-parser; copyleft parts
//! are never copied into the repo) it walks that too, and a missing folder is
//! a failure, not a skip.
//!
//! For every message, as stored and converted to CRLF (what IMAP delivers):
//! `parse` must not panic (not even inside, where it would be caught); what
//! `INDEX.tsv` marks as automatic (Auto-Submitted, Precedence, list headers,
//! empty Return-Path, DSN or bounce) must be detected as automatic; every
//! attachment name must be safe.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use privacy_mailroom::attachments::Blobs;
use privacy_mailroom::message::attachment::sanitize_filename_nth;
use privacy_mailroom::message::{self, Attachment, AutoKind, Inbound};
use support::corpus::{message_files, to_crlf};

mod support;

/// Panics seen anywhere in this test binary, including ones `parse` catches.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Rows whose INDEX marks we checked and found wrong. Empty: every mark in the
/// current corpus was confirmed by reading the message.
const INDEX_EXCEPTIONS: &[&str] = &[];

/// Structured DSNs that really carry no original Message-ID (checked by hand).
const DSN_WITHOUT_ORIGINAL_ID: &[(&str, &str)] =
    &[("zammad/mail092.box", "its message/rfc822 part is empty")];

#[test]
fn corpus_messages_parse_safely_and_automatic_mail_is_detected() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let roots = support::corpus::roots();

    let mut report = Report::default();
    for root in &roots {
        walk_root(root, &mut report);
    }

    eprintln!(
        "parsed {} messages ({} automatic, {} DSNs, {} attachments) from {}",
        report.parsed,
        report.automatic,
        report.dsns,
        report.attachments,
        roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    assert!(report.parsed > 0, "no messages found under {roots:?}");
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "parse panicked inside");
    assert!(
        report.failures.is_empty(),
        "{} failures:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
}

#[derive(Default)]
struct Report {
    parsed: usize,
    automatic: usize,
    dsns: usize,
    attachments: usize,
    failures: Vec<String>,
    notes: Vec<String>,
}

/// Walks one root: every row of its `INDEX.tsv`, then any `.eml`/`.box` file
/// the index does not list.
fn walk_root(root: &Path, report: &mut Report) {
    let rows = read_index(root);
    let mut seen = BTreeSet::new();
    for row in &rows {
        let Some(rel) = row.get("path") else { continue };
        let path = root.join(rel);
        if !path.is_file() {
            report.failures.push(format!(
                "{}: listed in INDEX.tsv but missing",
                path.display()
            ));
            continue;
        }
        seen.insert(path.clone());
        check_message(&path, Some(row), report);
    }
    for path in message_files(root) {
        if !seen.contains(&path) {
            check_message(&path, None, report);
        }
    }
}

fn check_message(path: &Path, row: Option<&HashMap<String, String>>, report: &mut Report) {
    let name = path.display().to_string();
    let raw = match std::fs::read(path) {
        Ok(raw) => raw,
        Err(e) => {
            report.failures.push(format!("{name}: cannot read: {e}"));
            return;
        }
    };
    let stripped = message::parse::strip_mbox_from_line(&raw);
    let crlf = to_crlf(stripped);
    let as_stored = message::parse(stripped);
    let as_fetched = message::parse(&crlf);
    report.parsed += 1;
    report.attachments += as_fetched.attachments.len();
    report.automatic += usize::from(as_fetched.auto.is_some());
    report.dsns += usize::from(as_fetched.dsn.is_some());

    for (form, got) in [("stored", &as_stored), ("crlf", &as_fetched)] {
        check_attachments(&name, form, got, report);
        if let Some(row) = row {
            check_marks(&name, form, row, got, report);
        }
    }
    if as_stored.auto != as_fetched.auto || as_stored.subject != as_fetched.subject {
        report.notes.push(format!(
            "{name}: line ends change the result: {:?}/{:?} vs {:?}/{:?}",
            as_stored.auto, as_stored.subject, as_fetched.auto, as_fetched.subject
        ));
    }
    if let Some(row) = row {
        let col = |c: &str| row.get(c).and_then(|v| v.trim().parse::<usize>().ok());
        if let (Some(all), Some(cid)) = (col("attachments"), col("inline_parts_with_cid")) {
            let got = as_fetched.attachments.len();
            if got < all.saturating_sub(cid) || got > all {
                report.notes.push(format!(
                    "{name}: {got} attachments, INDEX counts {all} ({cid} inline with Content-ID): {:?}",
                    as_fetched
                        .attachments
                        .iter()
                        .map(|a| (&a.filename, &a.declared_type))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    if let Some(row) = row
        && !is_marked_automatic(row)
        && let Some(kind) = as_fetched.auto
    {
        report
            .notes
            .push(format!("{name}: not marked automatic, detected {kind:?}"));
    }
}

fn check_attachments(name: &str, form: &str, got: &Inbound, report: &mut Report) {
    for a in &got.attachments {
        let f = &a.filename;
        let safe = !f.is_empty()
            && f != "."
            && f != ".."
            && !f.contains(['/', '\\'])
            && !f.chars().any(char::is_control)
            && !f.starts_with('.')
            && f.len() <= 150;
        if !safe {
            report
                .failures
                .push(format!("{name} ({form}): unsafe attachment name {f:?}"));
        }
        if message::sanitize_filename(Some(f), &a.declared_type) != *f {
            report.failures.push(format!(
                "{name} ({form}): attachment name {f:?} changes when sanitised again"
            ));
        }
    }
}

/// What INDEX.tsv says makes this message automatic, if anything.
fn automatic_marks(row: &HashMap<String, String>) -> Vec<String> {
    let col = |c: &str| row.get(c).map(|v| v.trim()).unwrap_or_default();
    let mut marks = Vec::new();
    let auto_submitted = col("auto_submitted");
    if !auto_submitted.is_empty() && !auto_submitted.eq_ignore_ascii_case("no") {
        marks.push(format!("auto_submitted={auto_submitted}"));
    }
    let precedence = col("precedence").to_ascii_lowercase();
    if ["bulk", "junk", "list", "auto_reply"].contains(&precedence.as_str()) {
        marks.push(format!("precedence={precedence}"));
    }
    let others = col("other_auto_or_list_headers");
    if others
        .split(',')
        .any(|h| h == "List-Id" || h == "List-Unsubscribe")
    {
        marks.push(format!("list headers ({others})"));
    }
    if col("return_path_empty") == "yes" {
        marks.push("empty return path".into());
    }
    let dsn = col("dsn_bounce");
    if !dsn.is_empty() {
        marks.push(format!("dsn_bounce={dsn}"));
    }
    marks
}

fn is_marked_automatic(row: &HashMap<String, String>) -> bool {
    !automatic_marks(row).is_empty()
}

fn check_marks(
    name: &str,
    form: &str,
    row: &HashMap<String, String>,
    got: &Inbound,
    report: &mut Report,
) {
    let marks = automatic_marks(row);
    if marks.is_empty() {
        return;
    }
    let path = row.get("path").map(String::as_str).unwrap_or_default();
    if INDEX_EXCEPTIONS.contains(&path) {
        return;
    }
    if got.auto.is_none() {
        report.failures.push(format!(
            "{name} ({form}): marked automatic ({}) but not detected",
            marks.join("; ")
        ));
        return;
    }
    let dsn = row
        .get("dsn_bounce")
        .map(String::as_str)
        .unwrap_or_default();
    if dsn.starts_with("dsn(") {
        if got.auto != Some(AutoKind::DeliveryReport) {
            report.failures.push(format!(
                "{name} ({form}): {dsn} detected as {:?}, not DeliveryReport",
                got.auto
            ));
        }
        match &got.dsn {
            None => report
                .failures
                .push(format!("{name} ({form}): {dsn} without a Dsn")),
            Some(d)
                if d.original_message_id.is_none()
                    && !DSN_WITHOUT_ORIGINAL_ID.iter().any(|(p, _)| *p == path) =>
            {
                report.failures.push(format!(
                    "{name} ({form}): {dsn} without the original Message-ID"
                ))
            }
            Some(_) => {}
        }
    }
}

/// Rows of `root/INDEX.tsv` keyed by the header line; empty when absent.
fn read_index(root: &Path) -> Vec<HashMap<String, String>> {
    let Ok(text) = std::fs::read_to_string(root.join("INDEX.tsv")) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            header
                .iter()
                .zip(line.split('\t'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Every attachment of the real-world corpus (and the repo's fixtures)
/// stores safely: inside the store, 0600 in 0700 folders, byte for byte,
/// under a sanitised name that is no path.
#[test]
fn corpus_attachments_store_safely() {
    let roots = support::corpus::roots();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("attachments");
    let blobs = Blobs::new(&root);
    let (mut messages, mut stored) = (0, 0);
    let mut failures = Vec::new();
    for file in roots.iter().flat_map(|r| message_files(r)) {
        let Ok(stored_raw) = std::fs::read(&file) else {
            continue;
        };
        messages += 1;
        // As stored, and with CRLF line ends (what IMAP delivers).
        let attachments: Vec<Attachment> = [stored_raw.clone(), to_crlf(&stored_raw)]
            .iter()
            .flat_map(|raw| message::parse(raw).attachments)
            .collect();
        for (n, a) in attachments.iter().enumerate() {
            let name = sanitize_filename_nth(Some(&a.filename), &a.declared_type, n + 1);
            let bad_name = name.is_empty()
                || name.contains(['/', '\\'])
                || name.chars().any(char::is_control)
                || name.starts_with('.')
                || name != a.filename;
            if bad_name {
                failures.push(format!("{}: unsafe name {:?}", file.display(), a.filename));
            }
            let s = match blobs.put(&a.bytes) {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{}: {e}", file.display()));
                    continue;
                }
            };
            stored += 1;
            if !s.path.starts_with(root.join("sha256"))
                || mode(&s.path) != 0o600
                || mode(s.path.parent().unwrap()) != 0o700
                || std::fs::read(&s.path).unwrap() != a.bytes
            {
                failures.push(format!("{}: {} stored wrongly", file.display(), a.filename));
            }
        }
    }
    eprintln!("stored {stored} attachments of {messages} messages");
    assert!(messages > 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0)
}
