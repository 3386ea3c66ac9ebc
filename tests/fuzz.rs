//! A fixed-seed mutation fuzzer for everything a hostile message meets
//! before it touches the database: parse → automatic-mail and DSN detection →
//! classification (subject rules, case tag, body wording, agent detection) →
//! reply-text extraction → team command parsing → the command authentication
//! rules → Message-ID verification → attachment name and type handling.
//!
//! Inputs are byte-level mutations (flips, splices, inserted MIME and header
//! tokens, truncations) of the seeds in `tests/data/fuzz/seeds`, the
//! repo-local corpus `tests/data/eml` and, when `PRIVACY_MAILROOM_CORPUS` is
//! set, the shared real-world corpus. The seed and the budget are fixed, so a
//! CI run is repeatable: at most [`BUDGET`] of wall time and [`MAX_RUNS`]
//! inputs. Every file in `tests/data/fuzz/crashes` (inputs that once
//! panicked) is replayed first. A panic anywhere — even one `parse` catches
//! inside — fails the test and writes the input to `tests/data/fuzz/crashes`
//! so it can be committed with its fix.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use privacy_mailroom::classify;
use privacy_mailroom::config::TeamConfig;
use privacy_mailroom::ids::Keys;
use privacy_mailroom::message::{self, reply_text};
use privacy_mailroom::team::{auth, commands};
use support::corpus::{message_files, roots, to_crlf};

mod support;

/// The fixed seed of the mutation sequence.
const SEED: u64 = 0x5EED_0012_F022_2026;
/// Wall-time budget (the debug build parses a few thousand inputs a second).
const BUDGET: Duration = Duration::from_secs(15);
/// Upper bound on inputs, so a fast machine does not run longer than needed.
const MAX_RUNS: usize = 200_000;
/// Inputs are cut to this size: big enough for nested MIME, small enough
/// for many runs.
const MAX_INPUT: usize = 64 * 1024;

/// Panics seen anywhere in this binary, including ones `parse` catches.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Tokens that steer mutations into the parsers' interesting corners.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b"\r\n ",
    b":",
    b";",
    b"=",
    b"\"",
    b"<",
    b">",
    b"@",
    b"(",
    b")",
    b"\0",
    b"\xff\xfe",
    b"\xe2\x80\xae",
    b"--",
    b"--a--\r\n",
    b"Content-Type: multipart/mixed; boundary=\"a\"\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/html; charset=utf-7\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment; filename*0*=utf-8''%E2%80; filename*1=\"../x\"\r\n",
    b"=?utf-8?b?",
    b"=?iso-8859-1?q?=E9?=",
    b"?=",
    b"=\r\n",
    b"Authentication-Results: mx.example.com; dkim=pass header.d=example.com\r\n",
    b"Authentication-Results: mx.example.com; auth=pass smtp.auth=alice\r\n",
    b"Auto-Submitted: auto-replied\r\n",
    b"Precedence: bulk\r\n",
    b"Return-Path: <>\r\n",
    b"In-Reply-To: <pmr.n.CCPA-2026-00042.00.00@example.com>\r\n",
    b"[CCPA-2026-00042]",
    b"#close duplicate\r\n",
    b"#open delete\r\n",
    b"#verify CCPA-2026-00042\r\n",
    b"> ",
    b"On Mon, 1 Jan 2026, A <a@b.c> wrote:\r\n",
    b"California Request to Delete",
    b"on behalf of ",
    b"Consumer name: ",
    b"<blockquote>",
    b"&#x",
    b"<!--",
    b"\xc3\xa9",
    b"\xe5\x9b\x9e\xe5\xa4\x8d\xef\xbc\x9a",
];

/// A small xorshift generator: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One random change to `input`; `other` is a second seed for splices.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    let len = input.len();
    match rng.below(9) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = rng.next() as u8;
        }
        2 | 3 => {
            let token = TOKENS[rng.below(TOKENS.len())];
            let at = rng.below(len + 1);
            input.splice(at..at, token.iter().copied());
        }
        4 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(64)).min(len);
            input.drain(start..end);
        }
        5 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(256)).min(len);
            let copy = input[start..end].to_vec();
            let at = rng.below(len + 1);
            input.splice(at..at, copy);
        }
        6 if !other.is_empty() => {
            let start = rng.below(other.len());
            let end = (start + 1 + rng.below(1024)).min(other.len());
            let at = rng.below(len + 1);
            input.splice(at..at, other[start..end].iter().copied());
        }
        7 if len > 0 => input.truncate(rng.below(len)),
        _ => {
            // Repeat a token many times: nesting and long-line corners.
            let token = TOKENS[rng.below(TOKENS.len())];
            let at = rng.below(len + 1);
            let times = 1 + rng.below(200);
            let many: Vec<u8> = token.repeat(times);
            input.splice(at..at, many);
        }
    }
    input.truncate(MAX_INPUT);
}

/// Everything the daemon does with a message before it touches the database.
struct Pipeline {
    rules: Vec<classify::Rule>,
    team: TeamConfig,
    keys: Keys,
}

impl Pipeline {
    fn new() -> Pipeline {
        Pipeline {
            rules: classify::default_rules(),
            team: TeamConfig {
                members: vec!["alice@example.com".into()],
                notify: vec![],
                digest_time: "09:00".into(),
                require_dkim: true,
                trusted_authserv_ids: vec!["mx.example.com".into()],
                burst_threshold: 20,
            },
            keys: Keys::new(&[7u8; 32]),
        }
    }

    fn run(&self, raw: &[u8]) {
        let inbound = message::parse(raw);
        let head = inbound.head();
        let from = inbound.from.as_ref().map_or("", |a| a.addr.as_str());
        let _ = classify::match_subject(&self.rules, &inbound.subject);
        let _ = classify::normalize_subject(&inbound.subject);
        let _ = classify::find_case_tag(&inbound.subject, "CCPA");
        let _ = classify::looks_like_request(head);
        let names: Vec<&str> = inbound
            .attachments
            .iter()
            .map(|a| a.filename.as_str())
            .collect();
        let _ = classify::detect_agent(from, head, &names, &["agent.example"]);
        let new_text = reply_text::new_text(head);
        let lines = commands::parse(&new_text, "CCPA");
        assert!(lines.len() <= new_text.lines().count());
        let _ = auth::authorize(&self.team, from, &inbound.authentication_results);
        let _ = self
            .keys
            .verify_any(inbound.in_reply_to.iter().chain(inbound.references.iter()));
        for (n, a) in inbound.attachments.iter().enumerate() {
            let name = message::attachment::sanitize_filename_nth(
                Some(&a.filename),
                &a.declared_type,
                n + 1,
            );
            assert!(
                !name.is_empty()
                    && !name.contains(['/', '\\'])
                    && !name.chars().any(char::is_control)
                    && !name.starts_with('.'),
                "unsafe stored name {name:?}"
            );
            let _ = message::sniff_type(&a.bytes);
            let _ = classify::is_declaration_name(&a.filename);
        }
    }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz")
}

/// A starting input; `shared` when it comes from the shared corpus, whose
/// copyleft messages must not be copied into the repository.
struct Seed {
    raw: Vec<u8>,
    shared: bool,
}

/// The seeds: our own, then every corpus message (as stored and as CRLF).
fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let repo_eml = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/eml");
    let mut dirs = vec![fuzz_dir().join("seeds")];
    dirs.extend(roots());
    for dir in dirs {
        let shared = !dir.starts_with(fuzz_dir()) && dir != repo_eml;
        for path in message_files(&dir) {
            let Ok(raw) = std::fs::read(&path) else {
                continue;
            };
            let mut raw = raw;
            raw.truncate(MAX_INPUT);
            out.push(Seed {
                raw: to_crlf(&raw),
                shared,
            });
            out.push(Seed { raw, shared });
        }
    }
    out
}

/// Runs `raw` through the pipeline; a panic (caught or not) is saved and
/// reported. An input made from the shared corpus is saved with a
/// `shared-corpus-` prefix: reproduce it from a repo-local seed before
/// committing (the shared corpus holds copyleft mail).
fn check(pipeline: &Pipeline, raw: &[u8], shared: bool, what: &str) -> Result<(), String> {
    let before = PANICS.load(Ordering::SeqCst);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pipeline.run(raw)));
    if result.is_ok() && PANICS.load(Ordering::SeqCst) == before {
        return Ok(());
    }
    let digest = privacy_mailroom::hash::sha256_hex(raw);
    let prefix = if shared { "shared-corpus-" } else { "" };
    let path = fuzz_dir()
        .join("crashes")
        .join(format!("{prefix}{}.eml", &digest[..16]));
    let _ = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")));
    let _ = std::fs::write(&path, raw);
    Err(format!(
        "{what} panicked; the input is saved as {}",
        path.display()
    ))
}

#[test]
fn hostile_bytes_never_panic_from_parse_to_commands() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let pipeline = Pipeline::new();

    // Former crashes first: they must stay fixed.
    let crashes = fuzz_dir().join("crashes");
    let mut replayed = 0;
    if let Ok(entries) = std::fs::read_dir(&crashes) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "eml")
                && let Ok(raw) = std::fs::read(&path)
            {
                replayed += 1;
                if let Err(e) = check(&pipeline, &raw, false, &path.display().to_string()) {
                    panic!("{e}");
                }
            }
        }
    }

    let seeds = seeds();
    assert!(
        seeds.len() >= 8,
        "the seeds in tests/data/fuzz/seeds and tests/data/eml are missing"
    );
    for (i, seed) in seeds.iter().enumerate() {
        if let Err(e) = check(&pipeline, &seed.raw, seed.shared, &format!("seed #{i}")) {
            panic!("{e}");
        }
    }

    let mut rng = Rng(SEED);
    let started = Instant::now();
    let mut runs = 0;
    while runs < MAX_RUNS && started.elapsed() < BUDGET {
        let base = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let mut input = base.raw.clone();
        for _ in 0..1 + rng.below(8) {
            mutate(&mut rng, &mut input, &other.raw);
        }
        let shared = base.shared || other.shared;
        let what = format!("mutation #{runs} (seed {SEED:#x})");
        if let Err(e) = check(&pipeline, &input, shared, &what) {
            panic!("{e}");
        }
        runs += 1;
    }
    eprintln!(
        "fuzz: {replayed} former crashes replayed, {} seeds, {runs} mutations in {:.1} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(runs >= 100, "the budget allowed only {runs} mutations");
}
