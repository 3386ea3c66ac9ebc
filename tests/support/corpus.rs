//! The real-world test corpus: the repo-local MIT fixtures in `tests/data/eml`
//! and, when `PRIVACY_MAILROOM_CORPUS` names it, the shared corpus (whose
//! copyleft parts are read in place, never copied into the repository).

use std::path::{Path, PathBuf};

pub const CORPUS_VAR: &str = "PRIVACY_MAILROOM_CORPUS";

/// The folders to read. A variable that names a missing folder is a failure,
/// not a skip.
pub fn roots() -> Vec<PathBuf> {
    let mut roots = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/eml")];
    if let Some(dir) = std::env::var_os(CORPUS_VAR) {
        let dir = PathBuf::from(dir);
        assert!(
            dir.is_dir(),
            "{CORPUS_VAR}={} is not a folder: point it at the real-world corpus or unset it",
            dir.display()
        );
        roots.push(dir);
    }
    roots
}

/// Every `.eml` and `.box` file under `root`, sorted.
pub fn message_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "eml" || e == "box") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// LF (or mixed) line ends → CRLF, as an IMAP server hands messages out.
pub fn to_crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// The message with its Subject and Message-ID replaced (a new request made
/// of an old message's odd MIME); both in memory, never in the files.
pub fn with_subject(raw: &[u8], subject: &str, message_id: &str) -> Vec<u8> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(raw.len());
    let (head, body) = raw.split_at(split);
    let head = String::from_utf8_lossy(head);
    let mut out = format!("Subject: {subject}\r\nMessage-ID: {message_id}\r\n");
    let mut skipping = false;
    for line in head.split_inclusive("\r\n") {
        let continuation = line.starts_with([' ', '\t']);
        if !continuation {
            let name = line.split(':').next().unwrap_or("").trim();
            skipping =
                name.eq_ignore_ascii_case("subject") || name.eq_ignore_ascii_case("message-id");
        }
        if !skipping {
            out.push_str(line);
        }
    }
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}
