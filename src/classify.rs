//! Sorting inbound mail by subject (SPEC §3), finding the case tag of a
//! reply (SPEC §5), and spotting authorized agents (SPEC §7). Pure.
//!
//! Subjects reach us decoded (RFC 2047) by the parser, but still carry the
//! reply and forward prefixes of many mail clients and languages, list tags,
//! odd spacing and any letter case. Everything is matched on a normalised
//! form so that a rule phrase written once in the config matches them all.

use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

use crate::cases::Kind;
use crate::ids::{CaseId, Purpose, Verified};

/// One `[[rules]]` entry: a subject phrase list for a kind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub kind: Kind,
    /// Phrases matched case-insensitively anywhere in the normalised subject.
    pub subjects: Vec<String>,
}

/// The SPEC §3 rules, in order. Used when the config has no `[[rules]]`.
pub fn default_rules() -> Vec<Rule> {
    let rule = |kind, subjects: &[&str]| Rule {
        kind,
        subjects: subjects.iter().map(|s| (*s).to_string()).collect(),
    };
    vec![
        rule(Kind::Know, &["California Request to Know"]),
        rule(Kind::Delete, &["California Request to Delete"]),
        rule(
            Kind::OptOut,
            &[
                "California Request to Opt-Out",
                "Do Not Sell",
                // The CPRA link title (Civ. Code §1798.135(a)(1)) is "Do Not
                // Sell or Share"; a "Do Not Share" alone is the same request.
                "Do Not Share",
                "Opt-Out",
                "Opt Out",
            ],
        ),
        rule(Kind::Correct, &["California Request to Correct"]),
        rule(
            Kind::Limit,
            &[
                "California Request to Limit",
                // The statutory link title, §1798.135(a)(2).
                "Limit the Use of My Sensitive Personal Information",
            ],
        ),
    ]
}

/// One leading reply/forward prefix (`Re:`, `RE :`, `Re[2]:`, `AW:`, `回复：`,
/// ...) or one leading `[tag]`.
static PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)^\s*(?:
            (?:re|fwd?|fw|aw|wg|sv|vs|antw|antwort|tr|rv|réf|ref|ré|res|enc|odp|pd|ynt|vá|vl|r|
               回复|回覆|答复|转发|轉寄|轉發)
            \s*(?:\[\d+\]|\(\d+\))?\s*[:：]
          | \[[^\]]*\]
        )\s*",
    )
    .expect("prefix pattern is valid")
});

/// Normalises a decoded subject for matching: unfolds and collapses
/// whitespace, strips any number of leading reply/forward prefixes (in several
/// languages) and `[tags]`, and lower-cases.
pub fn normalize_subject(subject: &str) -> String {
    let mut s: &str = subject.trim();
    loop {
        match PREFIX.find(s) {
            Some(m) if m.end() > 0 => s = &s[m.end()..],
            _ => break,
        }
    }
    collapse_whitespace(s).to_lowercase()
}

/// Splits on any Unicode whitespace (folding CRLF, tabs, no-break spaces) and
/// joins with single spaces.
fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The form phrases and subjects are compared in: normalised, with dashes
/// and underscores read as spaces (so "Opt-Out", "opt out" and "opt–out" are
/// one phrase), padded with spaces so a match can require word edges.
fn match_key(s: &str) -> String {
    let unified: String = normalize_subject(s)
        .chars()
        .map(|c| match c {
            '-' | '_' | '\u{2010}'..='\u{2015}' | '\u{2212}' => ' ',
            c => c,
        })
        .collect();
    format!(" {} ", collapse_whitespace(&unified))
}

/// Whether `phrase` (already a match key) occurs in `hay` (a match key) at
/// word edges: "know" must not match inside "knowledge".
fn contains_phrase(hay: &str, phrase: &str) -> bool {
    let needle = phrase.trim();
    if needle.is_empty() {
        return false;
    }
    let mut start = 0;
    while let Some(pos) = hay[start..].find(needle) {
        let begin = start + pos;
        let end = begin + needle.len();
        let before = hay[..begin].chars().next_back();
        let after = hay[end..].chars().next();
        let edge = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
        if edge(before) && edge(after) {
            return true;
        }
        // Advance past the first character of this hit.
        start = begin + needle.chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// The kind of the first rule (in order) with a phrase anywhere in the
/// normalised subject.
pub fn match_subject(rules: &[Rule], subject: &str) -> Option<Kind> {
    let hay = match_key(subject);
    rules
        .iter()
        .find(|rule| {
            rule.subjects
                .iter()
                .any(|phrase| contains_phrase(&hay, &match_key(phrase)))
        })
        .map(|rule| rule.kind)
}

/// Finds a case tag such as `[CCPA-2026-00042]` in a subject. The prefix is
/// matched case-insensitively; the id is returned in its canonical form (the
/// prefix as configured, upper-cased; four-digit year; the sequence as given,
/// at least five digits).
pub fn find_case_tag(subject: &str, prefix: &str) -> Option<CaseId> {
    let prefix = prefix.trim();
    if prefix.is_empty() {
        return None;
    }
    CASE_TAG
        .captures_iter(subject)
        .find_map(|c| CaseId::parse(&format!("{}-{}-{}", c[1].trim(), &c[2], &c[3]), prefix))
}

/// Which case a message threads to: the case our own reply Message-ID names
/// (in its In-Reply-To or References, HMAC-verified into `referenced`), else
/// the case tag of its subject. The one rule for inbound mail (intake) and
/// the team's mail found in the Sent folder; whether the case exists and
/// whether the sender may touch it is for the caller to decide.
pub(crate) fn thread_case_id(
    referenced: &[Verified],
    subject: &str,
    prefix: &str,
) -> Option<CaseId> {
    referenced
        .iter()
        .find(|v| v.purpose == Purpose::Reply)
        // We signed this ID ourselves, so it has the syntax we made.
        .map(|v| CaseId::from_stored(v.subject_id.clone()))
        .or_else(|| find_case_tag(subject, prefix))
}

/// `[PREFIX-YYYY-NNNNN]`, the prefix checked by the caller.
static CASE_TAG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[([^\[\]]*?)-(\d{4})-(\d{5,})\s*\]").expect("case tag pattern is valid")
});

/// Body patterns that read like a request, in the order they are tried.
static REQUEST_PATTERNS: LazyLock<Vec<(Kind, Regex)>> = LazyLock::new(|| {
    let p = |kind, re: &str| (kind, Regex::new(re).expect("request pattern is valid"));
    vec![
        p(
            Kind::Delete,
            r"(?i)\b(delete|erase|remove|destroy|wipe|purge)\b[^.!?\n]{0,40}\b(my|all|our)\b[^.!?\n]{0,30}\b(data|information|info|account|details|records?|profile)\b",
        ),
        p(Kind::Delete, r"(?i)\berase\b|\berasure\b"),
        p(
            Kind::Delete,
            r"(?i)\b(request to delete|deletion request|right to (be forgotten|delete|deletion)|forget me)\b",
        ),
        p(
            Kind::Correct,
            r"(?i)\b(request to correct|right to correct|correct (my|the) (personal )?(data|information|details)|(incorrect|inaccurate) (personal )?(data|information))\b",
        ),
        p(
            Kind::Limit,
            r"(?i)\b(request to limit|right to limit|limit the use)\b",
        ),
        p(
            Kind::Know,
            r"(?i)\bwh(at|ich) (kind of |categories of )?(personal )?(data|information|info)\b[^.!?\n]{0,40}\b(have|hold|store|keep|collect|process)",
        ),
        p(
            Kind::Know,
            r"(?i)\b(request to know|right to know|right of access|subject access request|copy of (my|all|the) (personal )?(data|information))\b",
        ),
        p(
            Kind::Know,
            r"(?i)\baccess (to )?(my|all) (personal )?(data|information)\b",
        ),
        p(
            Kind::OptOut,
            r"(?i)\b(do not|don'?t|don’t) (sell|share)\b|\bopt[- ]?out\b|\bstop (selling|sharing)\b",
        ),
    ]
});

/// For a message no rule or thread claimed: whether its text reads like a
/// request, and of which kind. Only a hint for the team's review notice
/// (SPEC §3), never a reason to open a case on its own.
pub fn looks_like_request(text: &str) -> Option<Kind> {
    let text = collapse_whitespace(text);
    REQUEST_PATTERNS
        .iter()
        .find(|(_, re)| re.is_match(&text))
        .map(|(kind, _)| *kind)
}

/// The requests that need verification (know, delete, correct) the text of
/// a `kind` request also makes, in that order: "opt me out and delete my
/// data" is an opt-out and a deletion, and the deletion must not be lost
/// (issue: opt-out is a request, not a canned reply).
pub(crate) fn also_requested(text: &str, kind: Kind) -> Vec<Kind> {
    let text = collapse_whitespace(text);
    [Kind::Know, Kind::Delete, Kind::Correct]
        .into_iter()
        .filter(|k| *k != kind)
        .filter(|k| {
            REQUEST_PATTERNS
                .iter()
                .any(|(pk, re)| pk == k && re.is_match(&text))
        })
        .collect()
}

/// Why a request is treated as coming from an authorized agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentReason {
    /// The sender's domain is in `[agents] known_domains`.
    KnownDomain,
    /// The text says the sender acts for someone else.
    Wording,
    /// An attachment's name looks like a declaration or power of attorney.
    DeclarationAttachment,
}

impl AgentReason {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentReason::KnownDomain => "known_domain",
            AgentReason::Wording => "wording",
            AgentReason::DeclarationAttachment => "declaration_attachment",
        }
    }
}

/// What [`detect_agent`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentInfo {
    pub is_agent: bool,
    /// The first reason that applied; `None` when not an agent.
    pub reason: Option<AgentReason>,
    /// The consumer's address, lower-cased, when the text gives one.
    pub consumer_email: Option<String>,
    /// The consumer's name, when the text gives one.
    pub consumer_name: Option<String>,
}

static AGENT_WORDING: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(authori[sz]ed (agent|representative)|on behalf of|acting (for|on behalf)|as (an |the )?agent for)\b",
    )
    .expect("agent wording pattern is valid")
});

/// "on behalf of me/myself" is a consumer speaking for themselves.
static SELF_BEHALF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(on behalf of|acting for)\s+(me|myself|ourselves|us)\b")
        .expect("self pattern is valid")
});

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
        .expect("address pattern is valid")
});

/// Words after which an address is most likely the consumer's, strongest
/// first: an "Email:" label, then a mention of the consumer.
static CONSUMER_CUES: LazyLock<[Regex; 2]> = LazyLock::new(|| {
    [
        Regex::new(r"(?i)\be-?mail(?: address)?\s*:").expect("cue pattern is valid"),
        Regex::new(r"(?i)\b(consumer|on behalf of)\b").expect("cue pattern is valid"),
    ]
});

static NAME_AFTER_BEHALF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(?i:on behalf of|acting for)\s+(?:(?i:our|my|the)\s+(?i:client|customer|consumer|principal)\s*,?\s*)?(\p{Lu}[\p{L}'’.\-]*(?:[ \t]+\p{Lu}[\p{L}'’.\-]*){0,3})",
    )
    .expect("name pattern is valid")
});

static NAME_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?im)^[ \t]*(?:consumer(?:'s)?(?: full)? name|name of (?:the )?consumer)[ \t]*:[ \t]*(.+)$")
        .expect("name line pattern is valid")
});

/// [`detect_agent`] for a parsed message from `sender`: its readable text
/// and its attachments' names. What intake (storing documents before the
/// commit) and `casework::open_request` (opening the case) both ask.
pub(crate) fn agent_of<D: AsRef<str>>(
    sender: &str,
    inbound: &crate::message::Inbound,
    known_domains: &[D],
) -> AgentInfo {
    let names: Vec<&str> = inbound
        .attachments
        .iter()
        .map(|a| a.filename.as_str())
        .collect();
    detect_agent(sender, inbound.head(), &names, known_domains)
}

/// Decides whether a request comes from an authorized agent (SPEC §7), and
/// picks the consumer's address and name out of the text when given.
pub fn detect_agent<A, D>(
    from_addr: &str,
    text: &str,
    attachment_names: &[A],
    known_domains: &[D],
) -> AgentInfo
where
    A: AsRef<str>,
    D: AsRef<str>,
{
    let from = from_addr.trim().to_lowercase();
    let sender_domain = from.rsplit_once('@').map(|(_, d)| d.to_string());

    let known = crate::address::in_domains(&from, known_domains);
    let wording = AGENT_WORDING
        .find_iter(text)
        .any(|m| !starts_self(&text[m.start()..]));
    let declaration = attachment_names
        .iter()
        .any(|n| is_declaration_name(n.as_ref()));

    let reason = if known {
        Some(AgentReason::KnownDomain)
    } else if wording {
        Some(AgentReason::Wording)
    } else if declaration {
        Some(AgentReason::DeclarationAttachment)
    } else {
        None
    };
    let Some(reason) = reason else {
        return AgentInfo::default();
    };
    AgentInfo {
        is_agent: true,
        reason: Some(reason),
        consumer_email: consumer_email(&from, sender_domain.as_deref(), text),
        consumer_name: consumer_name(text),
    }
}

/// Whether the agent wording at the start of `s` is "on behalf of myself".
fn starts_self(s: &str) -> bool {
    SELF_BEHALF.find(s).is_some_and(|m| m.start() == 0)
}

/// An address in the text other than the sender's: first one shortly after a
/// cue ("email:", then "consumer" or "on behalf of"), else the first one outside the
/// sender's own domain.
fn consumer_email(from: &str, sender_domain: Option<&str>, text: &str) -> Option<String> {
    let candidates: Vec<(usize, String)> = EMAIL
        .find_iter(text)
        .map(|m| (m.start(), m.as_str().trim_end_matches('.').to_lowercase()))
        .filter(|(_, a)| a != from)
        .collect();
    let foreign = |a: &str| a.rsplit_once('@').map(|(_, d)| d) != sender_domain;
    // An "Email:" label may name an address at the agent's own provider; a
    // looser mention of the consumer is more likely the agent's own desk.
    for (cues, same_domain_ok) in CONSUMER_CUES.iter().zip([true, false]) {
        for cue in cues.find_iter(text) {
            // Candidates are in text order: start at the first after the cue.
            let first = candidates.partition_point(|(pos, _)| *pos < cue.end());
            if let Some((_, addr)) = candidates[first..]
                .iter()
                .take_while(|(pos, _)| *pos - cue.end() <= 120)
                .find(|(_, a)| same_domain_ok || foreign(a))
            {
                return Some(addr.clone());
            }
        }
    }
    candidates.into_iter().map(|(_, a)| a).find(|a| foreign(a))
}

/// The consumer's name from a "Consumer name:" line, else the capitalised
/// words after "on behalf of".
fn consumer_name(text: &str) -> Option<String> {
    let from_line = NAME_LINE.captures(text).and_then(|c| {
        let raw = c.get(1)?.as_str();
        // Drop an address or bracketed part that follows the name.
        let name = raw.split(['<', '(', '[', ',', ';']).next().unwrap_or(raw);
        clean_name(name)
    });
    from_line.or_else(|| {
        NAME_AFTER_BEHALF
            .captures_iter(text)
            .filter_map(|c| clean_name(c.get(1)?.as_str()))
            .next()
    })
}

fn clean_name(raw: &str) -> Option<String> {
    // A word ending in a full stop ends the name, unless it is an initial
    // ("Jane Q. Doe" but "María García. Email: ...").
    let mut words = Vec::new();
    for word in raw.split_whitespace() {
        words.push(word);
        if word.ends_with('.') && word.chars().filter(|c| c.is_alphabetic()).count() > 1 {
            break;
        }
    }
    let name = words
        .join(" ")
        .trim_end_matches(['.', ',', ':', ';', ' '])
        .to_string();
    let lower = name.to_lowercase();
    let useless = name.is_empty()
        || name.chars().count() > 100
        || EMAIL.is_match(&name)
        || ["me", "myself", "us", "the", "a", "an"].contains(&lower.as_str());
    (!useless).then_some(name)
}

/// Whether an attachment's name looks like a written declaration, an
/// authorisation or a power of attorney (SPEC §7).
pub fn is_declaration_name(filename: &str) -> bool {
    let lower = filename.to_lowercase();
    const STEMS: [&str; 10] = [
        "declaration",
        "authoriz",
        "authoris",
        "attorney",
        "affidavit",
        "mandate",
        "consent",
        "notari",
        "vollmacht",
        "letter of authority",
    ];
    let spaced: String = lower
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let spaced = collapse_whitespace(&spaced);
    let squashed: String = spaced.chars().filter(|c| !c.is_whitespace()).collect();
    STEMS
        .iter()
        .any(|stem| spaced.contains(stem) || squashed.contains(&stem.replace(' ', "")))
        || spaced.split(' ').any(|w| w == "poa" || w == "loa")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_threads_to_our_reply_reference_before_its_tag() {
        let reply = |id: &str| Verified {
            purpose: Purpose::Reply,
            subject_id: id.into(),
        };
        let notice = Verified {
            purpose: Purpose::Notice,
            subject_id: "CCPA-2026-00009".into(),
        };
        let subject = "Re: [ccpa-2026-00002] your request";
        let thread = |refs: &[Verified]| thread_case_id(refs, subject, "CCPA");
        assert_eq!(
            thread(&[notice.clone(), reply("CCPA-2026-00001")]).as_deref(),
            Some("CCPA-2026-00001")
        );
        // A team notice is not the consumer's thread: the tag decides.
        assert_eq!(thread(&[notice]).as_deref(), Some("CCPA-2026-00002"));
        assert_eq!(thread(&[]).as_deref(), Some("CCPA-2026-00002"));
        assert_eq!(thread_case_id(&[], "hello", "CCPA"), None);
    }

    /// Rows of a tab-separated table, skipping comments; `\t` and `\n`
    /// escapes in the first column are expanded.
    fn table(raw: &str) -> Vec<(String, Option<Kind>)> {
        raw.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty() || l.starts_with('\t'))
            .map(|l| {
                let (input, want) = l.rsplit_once('\t').expect("row has a tab");
                let input = input.replace("\\t", "\t").replace("\\n", "\r\n");
                let want = match want.trim() {
                    "-" => None,
                    k => Some(k.parse::<Kind>().expect("known kind")),
                };
                (input, want)
            })
            .collect()
    }

    #[test]
    fn subject_table() {
        let rules = default_rules();
        let rows = table(include_str!("../tests/data/classify/subjects.tsv"));
        assert!(rows.len() > 40);
        for (subject, want) in rows {
            assert_eq!(match_subject(&rules, &subject), want, "subject {subject:?}");
        }
    }

    #[test]
    fn body_table() {
        let rows = table(include_str!("../tests/data/classify/bodies.tsv"));
        assert!(rows.len() > 15);
        for (body, want) in rows {
            assert_eq!(looks_like_request(&body), want, "body {body:?}");
        }
    }

    #[test]
    fn also_requested_table() {
        let raw = include_str!("../tests/data/classify/also_requested.tsv");
        let mut rows = 0;
        for line in raw
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let mut cols = line.split('\t');
            let (Some(kind), Some(body), Some(want)) = (cols.next(), cols.next(), cols.next())
            else {
                panic!("row needs three columns: {line:?}");
            };
            let kind: Kind = kind.parse().expect("known kind");
            let want: Vec<Kind> = match want.trim() {
                "-" => Vec::new(),
                list => list
                    .split(',')
                    .map(|k| k.trim().parse().expect("known kind"))
                    .collect(),
            };
            assert_eq!(also_requested(body, kind), want, "{kind} {body:?}");
            rows += 1;
        }
        assert!(rows >= 10);
    }

    #[test]
    fn normalisation() {
        let cases = [
            ("Re: Fwd: AW:  Hello\r\n  World", "hello world"),
            ("RE : re[3]: SV: x", "x"),
            (
                "[Tag] [Other tag] Re: Subject [CCPA-2026-00001]",
                "subject [ccpa-2026-00001]",
            ),
            ("回复：转发: 你好", "你好"),
            ("Réf : Ré: TR: Objet", "objet"),
            ("Antw: Antwort: Vraag", "vraag"),
            ("Recall: meeting", "recall: meeting"),
            ("Rewrite", "rewrite"),
            ("   ", ""),
            ("Re:Re:Re:", ""),
            ("Fw:\u{a0}Hello", "hello"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_subject(input), want, "{input:?}");
        }
    }

    #[test]
    fn each_default_rule_matches_its_own_phrases_in_order() {
        let rules = default_rules();
        for rule in &rules {
            for phrase in &rule.subjects {
                assert_eq!(match_subject(&rules, phrase), Some(rule.kind), "{phrase}");
                let shouted = format!("RE: fwd: {}", phrase.to_uppercase());
                assert_eq!(
                    match_subject(&rules, &shouted),
                    Some(rule.kind),
                    "{shouted}"
                );
            }
        }
        let kinds: Vec<Kind> = rules.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Know,
                Kind::Delete,
                Kind::OptOut,
                Kind::Correct,
                Kind::Limit
            ]
        );
    }

    #[test]
    fn first_rule_wins_and_custom_rules_work() {
        let rules = vec![
            Rule {
                kind: Kind::Delete,
                subjects: vec!["delete".into()],
            },
            Rule {
                kind: Kind::Know,
                subjects: vec!["CALIFORNIA request to KNOW".into(), "".into()],
            },
        ];
        assert_eq!(
            match_subject(&rules, "california request to know"),
            Some(Kind::Know)
        );
        assert_eq!(
            match_subject(&rules, "California Request to Know, then delete"),
            Some(Kind::Delete)
        );
        // An empty phrase matches nothing.
        assert_eq!(match_subject(&rules, "anything"), None);
        assert_eq!(match_subject(&[], "California Request to Know"), None);
    }

    #[test]
    fn case_tags() {
        let cases = [
            (
                "Re: Your request [CCPA-2026-00042]",
                "CCPA",
                Some("CCPA-2026-00042"),
            ),
            (
                "Re: [ccpa-2026-00042] hello",
                "CCPA",
                Some("CCPA-2026-00042"),
            ),
            ("[ CCPA-2026-00042 ]", "ccpa", Some("CCPA-2026-00042")),
            ("[CCPA-2026-123456]", "CCPA", Some("CCPA-2026-123456")),
            (
                "Two [CCPA-2026-00001] [CCPA-2026-00002]",
                "CCPA",
                Some("CCPA-2026-00001"),
            ),
            ("CCPA-2026-00042 without brackets", "CCPA", None),
            ("[CCPA-26-00042]", "CCPA", None),
            ("[CCPA-2026-42]", "CCPA", None),
            ("[XCCPA-2026-00042]", "CCPA", None),
            ("[PRIV.X-2027-00001]", "priv.x", Some("PRIV.X-2027-00001")),
            ("[PRIVAX-2027-00001]", "PRIV.X", None),
            (
                "[PRIV-CA-2027-00001]",
                "priv-ca",
                Some("PRIV-CA-2027-00001"),
            ),
            ("[x] [CCPA-2026-00007]", "CCPA", Some("CCPA-2026-00007")),
            ("[CCPA-2026-00042]", "", None),
        ];
        for (subject, prefix, want) in cases {
            assert_eq!(
                find_case_tag(subject, prefix).as_deref(),
                want,
                "{subject:?} / {prefix:?}"
            );
        }
    }

    #[test]
    fn declaration_names() {
        let yes = [
            "Declaration.pdf",
            "signed_declaration_jane.pdf",
            "Authorization Letter.PDF",
            "authorisation.docx",
            "Power of Attorney.pdf",
            "power-of-attorney.pdf",
            "PowerOfAttorney.pdf",
            "POA.pdf",
            "jane_poa_signed.pdf",
            "notarized affidavit.jpg",
            "Mandate.pdf",
            "consent-form.png",
            "Vollmacht.pdf",
        ];
        let no = [
            "invoice.pdf",
            "photo.jpg",
            "poached.png",
            "report.docx",
            "",
            "signature.asc",
        ];
        for name in yes {
            assert!(is_declaration_name(name), "{name}");
        }
        for name in no {
            assert!(!is_declaration_name(name), "{name}");
        }
    }

    #[test]
    fn agent_by_known_domain_exact_or_subdomain() {
        let domains = ["rights-agent.example.com"];
        let none: [&str; 0] = [];
        for from in [
            "ops@rights-agent.example.com",
            "X@Mail.Rights-Agent.Example.com",
        ] {
            let info = detect_agent(from, "Please delete.", &none, &domains);
            assert!(info.is_agent, "{from}");
            assert_eq!(info.reason, Some(AgentReason::KnownDomain));
        }
        for from in [
            "x@evilrights-agent.example.com",
            "x@example.com",
            "no-at-sign",
        ] {
            assert!(
                !detect_agent(from, "Please delete.", &none, &domains).is_agent,
                "{from}"
            );
        }
    }

    #[test]
    fn agent_by_wording_or_attachment() {
        let none: [&str; 0] = [];
        let domains: [&str; 0] = [];
        let cases = [
            (
                "I am the authorized agent of the consumer.",
                Some(AgentReason::Wording),
            ),
            ("We are an authorised agent.", Some(AgentReason::Wording)),
            ("I write on behalf of Jane Doe.", Some(AgentReason::Wording)),
            ("Acting for my client.", Some(AgentReason::Wording)),
            ("I write on behalf of myself.", None),
            ("Please delete my data.", None),
        ];
        for (text, want) in cases {
            let info = detect_agent("a@b.example", text, &none, &domains);
            assert_eq!(info.reason, want, "{text}");
            assert_eq!(info.is_agent, want.is_some(), "{text}");
        }
        let info = detect_agent(
            "a@b.example",
            "Hello",
            &["scan.pdf", "Declaration.pdf"],
            &domains,
        );
        assert_eq!(info.reason, Some(AgentReason::DeclarationAttachment));
    }

    #[test]
    fn consumer_address_and_name() {
        let domains = ["rights-agent.example.com"];
        let none: [&str; 0] = [];
        let text = "Hello,\n\
            We are the authorized agent. Contact us at help@rights-agent.example.com.\n\
            Consumer name: Jane Q. Doe <jane@example.net>\n\
            Consumer email: jane.doe@example.org\n\
            Thanks";
        let info = detect_agent("ops@rights-agent.example.com", text, &none, &domains);
        assert_eq!(info.consumer_email.as_deref(), Some("jane.doe@example.org"));
        assert_eq!(info.consumer_name.as_deref(), Some("Jane Q. Doe"));

        let text = "I am writing on behalf of John Smith (John.Smith@Example.com). \
            Reply to me at agent@lawfirm.example.";
        let info = detect_agent("agent@lawfirm.example", text, &none, &domains);
        assert!(info.is_agent);
        assert_eq!(
            info.consumer_email.as_deref(),
            Some("john.smith@example.com")
        );
        assert_eq!(info.consumer_name.as_deref(), Some("John Smith"));

        let text = "Acting for our client, María José García. Email: mjg@example.es";
        let info = detect_agent("x@firm.example", text, &none, &domains);
        assert_eq!(info.consumer_name.as_deref(), Some("María José García"));
        assert_eq!(info.consumer_email.as_deref(), Some("mjg@example.es"));

        // Only the sender's own addresses: no consumer address.
        let text = "On behalf of the consumer. Write to x@firm.example or desk@firm.example.";
        let info = detect_agent("x@firm.example", text, &none, &domains);
        assert!(info.is_agent);
        assert_eq!(info.consumer_email, None);
        assert_eq!(info.consumer_name, None);

        // No cue: the first address outside the sender's domain.
        let text = "Authorized agent request. Details: desk@firm.example, c@home.example";
        let info = detect_agent("x@firm.example", text, &none, &domains);
        assert_eq!(info.consumer_email.as_deref(), Some("c@home.example"));

        // Not an agent: nothing extracted.
        let info = detect_agent(
            "x@home.example",
            "my other address is y@z.example",
            &none,
            &domains,
        );
        assert_eq!(info, AgentInfo::default());
    }

    /// Arbitrary input never panics (a poor man's fuzz run).
    #[test]
    fn arbitrary_input_never_panics() {
        const PIECES: [&str; 16] = [
            "Re:",
            "[",
            "]",
            " ",
            "回复：",
            "é",
            "-",
            "opt",
            "out",
            "@",
            "x.example",
            "on behalf of ",
            "Consumer name:",
            "\n",
            "[CCPA-2026-00001]",
            "É",
        ];
        let rules = default_rules();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let mut input = String::new();
            for _ in 0..(seed % 30) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                input.push_str(PIECES[(seed % PIECES.len() as u64) as usize]);
            }
            let _ = match_subject(&rules, &input);
            let _ = find_case_tag(&input, "CCPA");
            let _ = looks_like_request(&input);
            let _ = detect_agent(&input, &input, &[input.as_str()], &[input.as_str()]);
        }
    }
}
