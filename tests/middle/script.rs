//! The case files under `tests/data/middle/`: what goes in, and what the
//! mailroom is expected to have done after each step.
//!
//! ```text
//! # What the case shows (comment lines, before the first step).
//! config team.burst_threshold = 2        # optional overrides, TOML values
//! >>> mail                               # one message: raw RFC 5322, LF line ends
//! From: Ann <ann@example.com>
//! Subject: California Request to Know
//!
//! Please tell me what you hold.
//! <<<                                    # what the step did, one line per fact
//! outcome 1: opened CCPA-2026-00001 (know)
//! ...
//! ```
//!
//! Steps: `>>> mail [oversize]` (one message), `>>> batch` (messages split by
//! `~~~` lines, one IMAP batch), `>>> again` (the previous message's bytes
//! once more under a new UID), `>>> tick +8d` (move the clock and give open
//! cases their tick), `>>> due +1d` (move the clock and run everything the
//! scheduler runs: ticks, digest, purge), `>>> sent` (a message the Sent-folder
//! scan finds: a team member's own mail), `>>> clock +2h` (move the clock), `>>> act CASE #command ...`
//! (`cases act` from the command line), `>>> records` (the `report records`
//! rows, one `record …` fact each). Every step also moves the clock one
//! minute, so separate steps are never one burst.
//!
//! In a message, `{{code CASE}}` is the case's verification code,
//! `{{msgid TEMPLATE [CASE]}}` the Message-ID of the newest outbox mail of
//! that template, and `{{forged TEMPLATE [CASE]}}` the same with its HMAC
//! tag altered.
//!
//! The expected facts: `outcome UID: …` (intake's decision), `in ROW: DISPOSITION
//! -> FOLDER [CASE]` (the stored message and where the original is filed),
//! `case …` (a case that is new or changed), `out …` (an outbox row: audience,
//! template, recipients, Auto-Submitted, subject) and `event …` (the case log).
//! Run with `MIDDLE_BLESS=1` to rewrite the expectations from what the code
//! does; review the diff before committing it.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Duration;
use privacy_mailroom::cases::Case;
use privacy_mailroom::intake::Outcome;

use crate::room::{Mail, TestRoom};

/// One step of a case file.
#[derive(Debug, Clone)]
pub struct Step {
    /// The `>>> …` line without the marker.
    pub header: String,
    /// Lines between the header and `<<<`.
    pub input: Vec<String>,
    /// Lines after `<<<`.
    pub expected: Vec<String>,
}

/// A parsed case file.
#[derive(Debug, Clone)]
pub struct Script {
    pub preamble: Vec<String>,
    pub steps: Vec<Step>,
}

impl Script {
    pub fn parse(text: &str) -> Script {
        let mut preamble = Vec::new();
        let mut steps: Vec<Step> = Vec::new();
        let mut in_expected = false;
        for line in text.lines() {
            if let Some(header) = line.strip_prefix(">>>") {
                steps.push(Step {
                    header: header.trim().to_string(),
                    input: Vec::new(),
                    expected: Vec::new(),
                });
                in_expected = false;
                continue;
            }
            match steps.last_mut() {
                None => preamble.push(line.to_string()),
                Some(_) if line == "<<<" && !in_expected => in_expected = true,
                Some(step) if in_expected => step.expected.push(line.trim_end().to_string()),
                Some(step) => step.input.push(line.to_string()),
            }
        }
        for step in &mut steps {
            while step.expected.last().is_some_and(|l| l.trim().is_empty()) {
                step.expected.pop();
            }
        }
        Script { preamble, steps }
    }

    /// `config section.key = value` lines of the preamble.
    pub fn overrides(&self) -> Vec<(String, String, String)> {
        self.preamble
            .iter()
            .filter_map(|l| l.strip_prefix("config "))
            .map(|l| {
                let (path, value) = l.split_once('=').expect("config section.key = value");
                let (section, key) = path.trim().split_once('.').expect("section.key");
                (
                    section.to_string(),
                    key.to_string(),
                    value.trim().to_string(),
                )
            })
            .collect()
    }

    /// The file with `actual` as each step's expectations.
    pub fn render(&self, actual: &[Vec<String>]) -> String {
        let mut out = String::new();
        for line in &self.preamble {
            out.push_str(line);
            out.push('\n');
        }
        for (step, lines) in self.steps.iter().zip(actual) {
            out.push_str(&format!(">>> {}\n", step.header));
            let mut input = step.input.clone();
            while input.last().is_some_and(|l| l.trim().is_empty()) {
                input.pop();
            }
            for line in &input {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str("<<<\n");
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// Runs a script; returns the facts of each step.
pub async fn run(script: &Script, file: &Path) -> Vec<Vec<String>> {
    let mut t = TestRoom::open(&script.overrides()).await;
    let mut marks = Marks {
        cases: snapshot(&t).await,
        ..Marks::default()
    };
    let mut last_mail: Option<Mail> = None;
    let mut all = Vec::new();
    for (i, step) in script.steps.iter().enumerate() {
        let at = format!("{} step {} (`>>> {}`)", file.display(), i + 1, step.header);
        t.advance(Duration::minutes(1));
        let mut facts = Vec::new();
        let (verb, args) = step
            .header
            .split_once(' ')
            .unwrap_or((step.header.as_str(), ""));
        match verb {
            "mail" | "batch" => {
                let mut mails = Vec::new();
                for text in split_batch(&step.input) {
                    let raw = substitute(&t, &text, &at).await;
                    let oversize = args.split_whitespace().any(|a| a == "oversize");
                    mails.push(Mail {
                        size: oversize.then_some(80 * 1024 * 1024),
                        headers_only: oversize,
                        raw: crlf(&raw),
                    });
                }
                assert!(
                    verb == "batch" || mails.len() == 1,
                    "{at}: `mail` takes one message"
                );
                last_mail = mails.last().cloned();
                for (uid, outcome) in t.deliver(&mails).await {
                    facts.push(format!("outcome {uid}: {}", outcome_line(&outcome)));
                }
            }
            "sent" => {
                for text in split_batch(&step.input) {
                    let raw = crlf(&substitute(&t, &text, &at).await);
                    let recorded = t.sent_folder(&raw).await;
                    facts.push(format!(
                        "sent folder: {}",
                        if recorded { "recorded" } else { "skipped" }
                    ));
                }
            }
            "again" => {
                let mail = last_mail
                    .clone()
                    .unwrap_or_else(|| panic!("{at}: no earlier message"));
                for (uid, outcome) in t.deliver(&[mail]).await {
                    facts.push(format!("outcome {uid}: {}", outcome_line(&outcome)));
                }
            }
            "tick" => {
                t.advance(parse_duration(args, &at));
                facts.push(format!("tick: {} case(s) changed", t.tick().await));
            }
            "due" => {
                t.advance(parse_duration(args, &at));
                t.run_due().await;
            }
            "clock" => t.advance(parse_duration(args, &at)),
            "act" => {
                let (case, line) = args
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("{at}: `act CASE #command`"));
                facts.push(match t.act(case, line).await {
                    Ok(state) => format!("act: ok, now {state}"),
                    Err(why) => format!("act: {why}"),
                });
            }
            "records" => {
                for r in t.records().await {
                    let who = match r.message_row {
                        Some(row) => format!("message row {row}"),
                        None => r.case_id.clone(),
                    };
                    facts.push(format!(
                        "record {who}: received {}, {}, {}, response {} \"{}\"{}",
                        r.request_date,
                        r.kind,
                        r.manner,
                        r.response_date.map(|d| d.to_string()).unwrap_or("-".into()),
                        r.nature_of_response,
                        if r.purged { ", purged" } else { "" }
                    ));
                }
            }
            other => panic!("{at}: unknown step `{other}`"),
        }
        facts.extend(observe(&t, &mut marks).await);
        let cases = t.cases().await;
        all.push(
            facts
                .into_iter()
                .map(|f| scrub(&f, &cases).trim_end().to_string())
                .collect(),
        );
    }
    all
}

/// Intake's decision in words that do not depend on how the types print
/// themselves (the vocabulary work may turn strings into newtypes).
fn outcome_line(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Opened { case_id, kind } => format!("opened {case_id} ({kind})"),
        Outcome::Reply { case_id } => format!("reply in {case_id}"),
        Outcome::TeamMail { case_id: Some(id) } => format!("team mail on {id}"),
        Outcome::TeamMail { case_id: None } => "team mail".into(),
        Outcome::DeliveryReport => "delivery report".into(),
        Outcome::Automatic => "automatic".into(),
        Outcome::Duplicate => "duplicate".into(),
        Outcome::Review { reason } => format!("review: {reason}"),
        Outcome::Failed => "failed".into(),
    }
}

/// What has been reported already.
#[derive(Default)]
struct Marks {
    message: i64,
    outbox: i64,
    event: i64,
    cases: Vec<(String, String)>,
    /// Inbound rows reported so far, with the case they belonged to.
    inbound_case: BTreeMap<i64, Option<String>>,
    /// Outbox rows reported so far, with their status.
    outbox_status: BTreeMap<i64, String>,
}

async fn snapshot(t: &TestRoom) -> Vec<(String, String)> {
    t.cases()
        .await
        .iter()
        .map(|c| (c.id.to_string(), describe(t, c)))
        .collect()
}

/// The new rows and changed cases since the last step.
async fn observe(t: &TestRoom, marks: &mut Marks) -> Vec<String> {
    let mut facts = Vec::new();
    // Rows written earlier and changed since: a message linked to a case
    // later (`#open`), an outbox row marked failed (a bounce).
    for m in t.inbound_since(0).await {
        if let Some(before) = marks.inbound_case.get(&m.id)
            && *before != m.case_id
        {
            facts.push(format!(
                "in {}: now [{}]",
                m.id,
                m.case_id.as_deref().unwrap_or("-")
            ));
        }
        marks.inbound_case.insert(m.id, m.case_id.clone());
    }
    for o in t.outbox_since(0).await {
        if let Some(before) = marks.outbox_status.get(&o.id)
            && *before != o.status
        {
            facts.push(format!("outbox {}: {before} -> {}", o.id, o.status));
        }
        marks.outbox_status.insert(o.id, o.status.clone());
    }
    for m in t.inbound_since(marks.message).await {
        marks.message = m.id;
        facts.push(format!(
            "in {}: {} -> {}{}",
            m.id,
            m.disposition,
            m.target_mailbox.as_deref().unwrap_or("(not filed)"),
            m.case_id.map(|c| format!(" [{c}]")).unwrap_or_default()
        ));
    }
    let cases = t.cases().await;
    let lines: Vec<(String, String)> = cases
        .iter()
        .map(|c| (c.id.to_string(), describe(t, c)))
        .collect();
    for (id, line) in &lines {
        if !marks.cases.iter().any(|(i, l)| i == id && l == line) {
            facts.push(format!("case {id}: {line}"));
        }
    }
    marks.cases = lines;
    for o in t.outbox_since(marks.outbox).await {
        marks.outbox = o.id;
        let to: Vec<String> = serde_json::from_str(&o.recipients).unwrap_or_default();
        let auto = header(&o.raw, "Auto-Submitted").unwrap_or_else(|| "-".into());
        let reply_to = header(&o.raw, "In-Reply-To").unwrap_or_else(|| "-".into());
        // Does the rendered mail carry a verification code (its own case's or another's)?
        let text = String::from_utf8_lossy(&o.raw);
        let codes: Vec<String> = cases
            .iter()
            .filter(|c| text.contains(&c.verification_code))
            .map(|c| format!(" code:{}", c.id))
            .collect();
        facts.push(format!(
            "out {}: {} {} -> {}{} ({auto}, {}) {:?} re {reply_to}{}",
            o.id,
            o.audience,
            o.template,
            to.join(", "),
            o.case_id.map(|c| format!(" [{c}]")).unwrap_or_default(),
            o.status,
            o.subject,
            codes.concat()
        ));
    }
    for e in t.events_since(marks.event).await {
        marks.event = e.id;
        facts.push(format!(
            "event {} {} {}: {}",
            e.case_id.as_deref().unwrap_or("-"),
            e.actor,
            e.action,
            e.detail
        ));
    }
    facts
}

/// A case in one line: what the record and the clocks say.
fn describe(t: &TestRoom, c: &Case) -> String {
    let tz = t.room.policy.timezone;
    let day =
        |d: chrono::DateTime<chrono::Utc>| d.with_timezone(&tz).format("%Y-%m-%d").to_string();
    let mut s = format!(
        "{} {} requester={} due={}",
        c.kind,
        c.state.as_str(),
        c.requester,
        day(c.due_at)
    );
    let mut flag = |on: bool, text: String| {
        if on {
            s.push(' ');
            s.push_str(&text);
        }
    };
    flag(
        c.agent.is_some(),
        format!("agent={}", c.agent.clone().unwrap_or_default()),
    );
    flag(
        c.consumer.as_deref() != Some(c.requester.as_str()),
        format!(
            "consumer={}",
            c.consumer.clone().unwrap_or_else(|| "-".into())
        ),
    );
    flag(c.acknowledged_at.is_none(), "unacknowledged".into());
    flag(c.extended, "extended".into());
    flag(c.verified_at.is_some(), "verified".into());
    flag(c.authorization_ok, "authorized".into());
    flag(c.reminder_sent_at.is_some(), "reminded".into());
    flag(
        c.resolution.is_some(),
        format!(
            "resolution={}",
            c.resolution.map(|r| r.as_str()).unwrap_or_default()
        ),
    );
    flag(c.closed_reply_sent, "closed_reply_sent".into());
    flag(c.due_soon_notified, "due_soon_notified".into());
    flag(c.overdue_notified, "overdue_notified".into());
    s
}

/// Messages of a `batch` step, split at `~~~` lines; surrounding blank lines dropped.
fn split_batch(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    let mut flush = |cur: &mut Vec<&str>| {
        while cur.first().is_some_and(|l| l.trim().is_empty()) {
            cur.remove(0);
        }
        while cur.last().is_some_and(|l| l.trim().is_empty()) {
            cur.pop();
        }
        if !cur.is_empty() {
            out.push(cur.join("\n") + "\n");
        }
        cur.clear();
    };
    for line in lines {
        if line == "~~~" {
            flush(&mut cur);
        } else {
            cur.push(line);
        }
    }
    flush(&mut cur);
    out
}

fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

fn parse_duration(arg: &str, at: &str) -> Duration {
    let arg = arg.trim().trim_start_matches('+');
    let (n, unit) = arg.split_at(arg.len().saturating_sub(1));
    let n: i64 = n
        .parse()
        .unwrap_or_else(|_| panic!("{at}: a duration like +8d or +2h"));
    match unit {
        "d" => Duration::days(n),
        "h" => Duration::hours(n),
        "m" => Duration::minutes(n),
        _ => panic!("{at}: a duration like +8d or +2h"),
    }
}

/// Fills `{{code CASE}}`, `{{msgid TEMPLATE [CASE]}}` and `{{forged TEMPLATE [CASE]}}`.
async fn substitute(t: &TestRoom, text: &str, at: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .unwrap_or_else(|| panic!("{at}: unclosed {{{{"));
        let words: Vec<&str> = after[..end].split_whitespace().collect();
        let value = match words.as_slice() {
            ["code", case] => {
                t.case(case)
                    .await
                    .unwrap_or_else(|| panic!("{at}: no case {case}"))
                    .verification_code
            }
            [what @ ("msgid" | "forged"), template, case @ ..] => {
                let row = t
                    .last_outbox(template, case.first().copied())
                    .await
                    .unwrap_or_else(|| panic!("{at}: no outbox mail {template} {case:?}"));
                let id = row.message_id.trim_matches(|c| c == '<' || c == '>');
                let id = if *what == "forged" {
                    forge(id)
                } else {
                    id.to_string()
                };
                format!("<{id}>")
            }
            _ => panic!("{at}: unknown placeholder {{{{{}}}}}", &after[..end]),
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The Message-ID with the last digit of its HMAC tag changed.
fn forge(id: &str) -> String {
    let (local, domain) = id.split_once('@').expect("a Message-ID with a domain");
    let mut chars: Vec<char> = local.chars().collect();
    if let Some(last) = chars.last_mut() {
        *last = if *last == '0' { '1' } else { '0' };
    }
    format!("{}@{domain}", chars.into_iter().collect::<String>())
}

/// Replaces what changes from run to run (codes, HMAC Message-IDs).
fn scrub(line: &str, cases: &[Case]) -> String {
    let mut s = line.to_string();
    for c in cases {
        s = s.replace(&c.verification_code, &format!("{{{{code {}}}}}", c.id));
    }
    static IDS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"pm\.([A-Za-z])\.[A-Za-z0-9._-]+@[A-Za-z0-9.-]+")
            .expect("a valid pattern")
    });
    IDS.replace_all(&s, "pm.$1.…").into_owned()
}

/// The unfolded value of the first header `name` in a raw message.
fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut found: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(v) = found.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((field, value)) = line.split_once(':')
            && field.trim().eq_ignore_ascii_case(name)
        {
            found = Some(value.trim().to_string());
        }
    }
    found
}
