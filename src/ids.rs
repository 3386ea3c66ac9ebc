//! Identifiers the daemon hands out: case IDs, verification codes, and
//! self-authenticating Message-IDs (SPEC §5).
//!
//! A daemon Message-ID looks like
//! `pm.n.CCPA-2026-00042.3f9c…(32 hex).a1b2…(20 hex)@example.com`:
//! a purpose letter, the subject (a case ID, or a summary ID), a 128-bit random
//! nonce that makes it unguessable, and an 80-bit HMAC-SHA256 tag over purpose,
//! subject and nonce. A reply that quotes such an ID in `In-Reply-To` or
//! `References` proves the sender saw our mail, and a team command that quotes
//! a notification's ID proves which case (or which summary) it is about,
//! without a database lookup and without anyone being able to forge one for
//! another case. The domain is not covered by the tag, so changing the sending
//! domain does not orphan old threads.

use std::fmt;

use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Domain separation for the tag, so these tags never collide with any other
/// use of the same key.
const MAC_CONTEXT: &[u8] = b"privacy-mailroom/message-id/v1";
/// Every daemon Message-ID starts with this label.
const ID_LABEL: &str = "pm";
const NONCE_BYTES: usize = 16;
/// 10 bytes = 80 bits of tag, shown as 20 hex digits.
const MAC_BYTES: usize = 10;
/// Marks a subject that had to be hex-encoded to fit in a Message-ID.
const HEX_SUBJECT_MARK: char = '~';

/// Why a Message-ID was generated; bound into its tag so an ID made for one
/// purpose cannot be replayed as another (a consumer reply can never pass as
/// a team notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Consumer-facing mail of a case; subject is the case ID.
    Reply,
    /// Team notification of a case; subject is the case ID. Commands in a
    /// reply to it act on that case.
    Notice,
    /// Burst summary listing several new cases; subject is the summary ID.
    /// Commands in a reply to it act on the cases the summary lists.
    Summary,
    /// Result mail answering a team member's commands; subject is a case ID or
    /// a summary ID.
    Result,
    /// Team notification about a message moved to review; subject is the
    /// stored message's ID. Authenticates `#open know|delete` for it.
    Review,
    /// Daily team digest; subject is the digest date.
    Digest,
}

impl Purpose {
    pub const ALL: [Purpose; 6] = [
        Purpose::Reply,
        Purpose::Notice,
        Purpose::Summary,
        Purpose::Result,
        Purpose::Review,
        Purpose::Digest,
    ];

    /// The one-letter code inside the Message-ID.
    fn letter(self) -> char {
        match self {
            Purpose::Reply => 'r',
            Purpose::Notice => 'n',
            Purpose::Summary => 's',
            Purpose::Result => 'c',
            Purpose::Review => 'v',
            Purpose::Digest => 'd',
        }
    }

    fn from_letter(s: &str) -> Option<Purpose> {
        let mut chars = s.chars();
        let c = chars.next()?.to_ascii_lowercase();
        if chars.next().is_some() {
            return None;
        }
        Purpose::ALL.into_iter().find(|p| p.letter() == c)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Reply => "reply",
            Purpose::Notice => "notice",
            Purpose::Summary => "summary",
            Purpose::Result => "result",
            Purpose::Review => "review",
            Purpose::Digest => "digest",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a valid daemon Message-ID says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Verified {
    pub purpose: Purpose,
    /// The case ID (or summary / message / digest ID, per [`Purpose`]).
    pub subject_id: String,
}

/// The HMAC key for Message-IDs. Kept in the database or a key file; losing
/// it only means old threads are matched by subject tag and sender instead.
#[derive(Clone)]
pub struct Keys {
    mac: HmacSha256,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Keys from a secret; 32 random bytes for a new one.
    pub fn new(secret: &[u8]) -> Keys {
        // HMAC accepts keys of any length, so this cannot fail; fall back to
        // hashing the key ourselves if a future version ever rejects one.
        let mac = match HmacSha256::new_from_slice(secret) {
            Ok(mac) => mac,
            Err(_) => {
                // What HMAC itself does with a key longer than a block: hash it, pad with zeros.
                use sha2::Digest;
                let mut block = hmac::digest::Key::<HmacSha256>::default();
                block[..32].copy_from_slice(&Sha256::digest(secret));
                <HmacSha256 as hmac::digest::KeyInit>::new(&block)
            }
        };
        Keys { mac }
    }

    fn tag(&self, purpose: Purpose, subject_id: &str, nonce: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(MAC_CONTEXT);
        mac.update(&[0, purpose.letter() as u8, 0]);
        mac.update(subject_id.as_bytes());
        mac.update(&[0]);
        mac.update(nonce);
        mac
    }

    /// A new Message-ID (without angle brackets) for `subject_id`, e.g.
    /// `pm.n.CCPA-2026-00042.<32 hex>.<20 hex>@example.com`. Every call gives a
    /// different ID. Subjects made of letters, digits, `-` and `_` appear
    /// as-is; anything else is hex-encoded so the result is always a valid
    /// `msg-id`.
    pub fn generate(&self, purpose: Purpose, subject_id: &str, domain: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let tag = self
            .tag(purpose, subject_id, &nonce)
            .finalize()
            .into_bytes();
        let domain = domain.trim().trim_start_matches('@');
        let domain = if domain.is_empty() {
            "localhost"
        } else {
            domain
        };
        format!(
            "{ID_LABEL}.{}.{}.{}.{}@{}",
            purpose.letter(),
            encode_subject(subject_id),
            hex::encode(nonce),
            hex::encode(&tag[..MAC_BYTES]),
            domain
        )
    }

    /// Checks a Message-ID (with or without angle brackets and surrounding
    /// whitespace, any domain). `None` for anything not made by these keys or
    /// altered in any part; the tag comparison is constant-time.
    pub fn verify(&self, message_id: &str) -> Option<Verified> {
        let id = message_id.trim();
        let id = id.strip_prefix('<').unwrap_or(id);
        let id = id.strip_suffix('>').unwrap_or(id).trim();
        let (local, domain) = id.rsplit_once('@')?;
        if domain.is_empty() {
            return None;
        }
        let (rest, mac_hex) = local.rsplit_once('.')?;
        let (rest, nonce_hex) = rest.rsplit_once('.')?;
        let (label, rest) = rest.split_once('.')?;
        let (letter, encoded_subject) = rest.split_once('.')?;
        if !label.eq_ignore_ascii_case(ID_LABEL) {
            return None;
        }
        let purpose = Purpose::from_letter(letter)?;
        let subject_id = decode_subject(encoded_subject)?;
        if nonce_hex.len() != NONCE_BYTES * 2 || mac_hex.len() != MAC_BYTES * 2 {
            return None;
        }
        let nonce = hex::decode(nonce_hex).ok()?;
        let mac = hex::decode(mac_hex).ok()?;
        self.tag(purpose, &subject_id, &nonce)
            .verify_truncated_left(&mac)
            .ok()?;
        Some(Verified {
            purpose,
            subject_id,
        })
    }

    /// Every valid daemon ID among `ids` (e.g. `In-Reply-To` followed by
    /// `References`), in order, without duplicates.
    pub fn verify_any<I>(&self, ids: I) -> Vec<Verified>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut found: Vec<Verified> = Vec::new();
        for id in ids {
            if let Some(v) = self.verify(id.as_ref())
                && !found.contains(&v)
            {
                found.push(v);
            }
        }
        found
    }

    /// Every valid daemon ID written anywhere in `text` (a forwarded copy of
    /// our mail quotes its reference line or carries its headers), in order,
    /// without duplicates. Reads at most the first [`SCAN_LIMIT`] bytes.
    ///
    /// Intake asks this of every message's raw bytes, so it works on bytes:
    /// from each `@` out to the ends of its word, a word taken when it starts
    /// with the label. An ID is ASCII, so any other byte ends a word too.
    pub(crate) fn find_in_text(&self, text: &[u8]) -> Vec<Verified> {
        let text = &text[..text.len().min(SCAN_LIMIT)];
        let label = ID_LABEL.as_bytes();
        let mut candidates: Vec<&str> = Vec::new();
        // The end of the last word looked at: a second `@` in it is skipped,
        // so each byte is looked at a bounded number of times.
        let mut word_end = 0;
        for at in memchr::memchr_iter(b'@', text) {
            if at < word_end {
                continue;
            }
            let start = text[..at]
                .iter()
                .rposition(|&b| ends_word(b))
                .map_or(0, |i| i + 1);
            word_end = text[at..]
                .iter()
                .position(|&b| ends_word(b))
                .map_or(text.len(), |i| at + i);
            let word = &text[start..word_end];
            let labelled = word.len() > label.len() + 1
                && word[..label.len()].eq_ignore_ascii_case(label)
                && word[label.len()] == b'.';
            if labelled && let Ok(word) = std::str::from_utf8(word) {
                candidates.push(word);
            }
        }
        self.verify_any(candidates)
    }
}

/// Whether `b` ends a word that may hold an ID: white space, the marks around
/// addresses, or a byte outside ASCII.
fn ends_word(b: u8) -> bool {
    matches!(
        b,
        b'\t'..=b'\r' | b' ' | b'<' | b'>' | b'"' | b'(' | b')' | b',' | b';'
    ) || !b.is_ascii()
}

/// How much of a message [`Keys::find_in_text`] reads.
pub(crate) const SCAN_LIMIT: usize = 512 * 1024;

fn is_plain_subject(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn encode_subject(s: &str) -> String {
    if is_plain_subject(s) {
        s.to_string()
    } else {
        format!("{HEX_SUBJECT_MARK}{}", hex::encode(s.as_bytes()))
    }
}

fn decode_subject(s: &str) -> Option<String> {
    if let Some(hexed) = s.strip_prefix(HEX_SUBJECT_MARK) {
        let bytes = hex::decode(hexed).ok()?;
        let decoded = String::from_utf8(bytes).ok()?;
        // Only what `encode_subject` would have produced, so one subject has one form.
        (!is_plain_subject(&decoded)).then_some(decoded)
    } else {
        is_plain_subject(s).then(|| s.to_string())
    }
}

/// A new random HMAC key.
#[cfg(test)]
pub(crate) fn generate_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    secret
}

/// Crockford's base32 alphabet: no I, L, O or U, so codes survive being read
/// aloud and retyped.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CODE_LEN: usize = 10;

/// A new verification code, `XXXXX-XXXXX` in Crockford base32 (50 random
/// bits): unguessable, and easy to read and type.
pub fn verification_code() -> String {
    let mut rng = rand::rng();
    let mut code = String::with_capacity(CODE_LEN + 1);
    for i in 0..CODE_LEN {
        if i == CODE_LEN / 2 {
            code.push('-');
        }
        let idx = rng.random_range(0..CROCKFORD.len());
        code.push(char::from(CROCKFORD[idx]));
    }
    code
}

/// Maps a character to its canonical Crockford symbol: upper case, with the
/// look-alikes O→0 and I/L→1. `None` for anything else.
fn crockford_canonical(c: char) -> Option<u8> {
    let c = c.to_ascii_uppercase();
    let b = match c {
        'O' => b'0',
        'I' | 'L' => b'1',
        c if c.is_ascii() && CROCKFORD.contains(&(c as u8)) => c as u8,
        _ => return None,
    };
    Some(b)
}

/// Characters tolerated between the symbols of a code in a reply.
fn is_code_separator(c: char) -> bool {
    c == '-' || c.is_whitespace() || c == '\u{2010}' || c == '\u{2011}' || c == '\u{2013}'
}

/// Whether `text` contains `code`: case-insensitive, with or without the dash,
/// with spaces (or a line break) between symbols, and with O/0 and I/L/1
/// confused. The code must stand on its own: no letter or digit directly before
/// or after it. An empty or malformed `code` is never found.
pub(crate) fn find_code(text: &str, code: &str) -> bool {
    let wanted: Option<Vec<u8>> = code
        .chars()
        .filter(|c| !is_code_separator(*c))
        .map(crockford_canonical)
        .collect();
    let wanted = match wanted {
        Some(w) if w.len() >= 4 => w,
        _ => return false,
    };
    let chars: Vec<char> = text.chars().collect();
    for start in 0..chars.len() {
        if start > 0 && chars[start - 1].is_alphanumeric() {
            continue;
        }
        if matches_at(&chars[start..], &wanted) {
            return true;
        }
    }
    false
}

/// Up to this many separator characters between two symbols (" - " and the like).
const MAX_SEPARATOR_RUN: usize = 3;

fn matches_at(chars: &[char], wanted: &[u8]) -> bool {
    let mut pos = 0;
    for (i, want) in wanted.iter().enumerate() {
        if i > 0 {
            let mut run = 0;
            while pos < chars.len() && is_code_separator(chars[pos]) {
                run += 1;
                pos += 1;
            }
            if run > MAX_SEPARATOR_RUN {
                return false;
            }
        }
        match chars.get(pos).and_then(|c| crockford_canonical(*c)) {
            Some(got) if got == *want => pos += 1,
            _ => return false,
        }
    }
    chars.get(pos).is_none_or(|c| !c.is_alphanumeric())
}

/// The parts of a case ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CaseIdParts {
    pub prefix: String,
    pub year: i32,
    pub seq: u64,
}

/// `{prefix}-{year}-{seq:05}`, e.g. `CCPA-2026-00042`; sequences above 99999
/// simply get more digits.
pub(crate) fn format_case_id(prefix: &str, year: i32, seq: u64) -> String {
    format!("{prefix}-{year:04}-{seq:05}")
}

/// Splits a case ID made by [`format_case_id`]. The prefix may itself contain
/// dashes; the year has four digits and the sequence at least five. Surrounding
/// whitespace and brackets (`[CCPA-2026-00042]`) are accepted. Compare the
/// prefix with the configured one case-insensitively.
pub(crate) fn parse_case_id(s: &str) -> Option<CaseIdParts> {
    let s = s.trim();
    let s = s.strip_prefix('[').unwrap_or(s);
    let s = s.strip_suffix(']').unwrap_or(s).trim();
    let mut parts = s.rsplitn(3, '-');
    let seq = parts.next()?;
    let year = parts.next()?;
    let prefix = parts.next()?;
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if prefix.is_empty()
        || prefix
            .chars()
            .any(|c| c.is_whitespace() || c == '[' || c == ']')
        || year.len() != 4
        || !all_digits(year)
        || seq.len() < 5
        || !all_digits(seq)
    {
        return None;
    }
    Some(CaseIdParts {
        prefix: prefix.to_string(),
        year: year.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// A case ID, `{PREFIX}-{YYYY}-{NNNNN}` (`CCPA-2026-00042`). Made by
/// [`CaseId::new`] or read with [`CaseId::parse`]: the one syntax the
/// subject tag, a command's case argument and `cases act` accept. Prints as
/// the text it holds; derefs to `&str` for the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct CaseId(String);

impl CaseId {
    /// `{prefix}-{year}-{seq:05}`.
    pub fn new(prefix: &str, year: i32, seq: u64) -> CaseId {
        CaseId(format_case_id(prefix, year, seq))
    }

    /// A case ID under `prefix` (compared case-insensitively), in canonical
    /// form: the prefix upper-cased, the year and the sequence as written.
    /// Brackets and surrounding white space are accepted (see
    /// [`parse_case_id`]).
    pub fn parse(s: &str, prefix: &str) -> Option<CaseId> {
        let parts = parse_case_id(s)?;
        if !parts.prefix.eq_ignore_ascii_case(prefix.trim()) {
            return None;
        }
        let s = s
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim();
        let (_, year_seq) = s.split_at(parts.prefix.len());
        Some(CaseId(format!("{}{year_seq}", parts.prefix.to_uppercase())))
    }

    /// An ID as a person typed it (`cases act`, `cases show`): the case-ID
    /// syntax under any prefix (cases opened under an earlier
    /// `policy.case_prefix` stay reachable), kept as written.
    pub fn parse_any(s: &str) -> Option<CaseId> {
        parse_case_id(s)?;
        let s = s.trim();
        let s = s.strip_prefix('[').unwrap_or(s);
        Some(CaseId(s.strip_suffix(']').unwrap_or(s).trim().to_string()))
    }

    /// An ID read back from the database, which only holds IDs this type
    /// made.
    pub(crate) fn from_stored(id: String) -> CaseId {
        CaseId(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for CaseId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for CaseId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Unit tests write IDs as literals; the daemon itself only makes them
/// with [`CaseId::new`] or [`CaseId::parse`].
#[cfg(test)]
impl From<&str> for CaseId {
    fn from(id: &str) -> CaseId {
        CaseId(id.to_string())
    }
}

impl From<CaseId> for String {
    fn from(id: CaseId) -> String {
        id.0
    }
}

impl PartialEq<str> for CaseId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CaseId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn round_trip_every_purpose() {
        let k = keys();
        for purpose in Purpose::ALL {
            for subject in [
                "CCPA-2026-00042",
                "S-20260101-7",
                "msg_17",
                "odd id.with dots/é",
            ] {
                let id = k.generate(purpose, subject, "example.com");
                assert!(id.ends_with("@example.com"), "{id}");
                assert!(!id.contains(['<', '>', ' ']), "{id}");
                assert_eq!(
                    k.verify(&id),
                    Some(Verified {
                        purpose,
                        subject_id: subject.to_string()
                    }),
                    "{id}"
                );
            }
        }
    }

    #[test]
    fn shape_and_uniqueness() {
        let k = keys();
        let a = k.generate(Purpose::Notice, "CCPA-2026-00042", "example.com");
        let b = k.generate(Purpose::Notice, "CCPA-2026-00042", "example.com");
        assert_ne!(a, b);
        assert!(a.starts_with("pm.n.CCPA-2026-00042."), "{a}");
        let local = a.split('@').next().unwrap();
        let parts: Vec<&str> = local.split('.').collect();
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[3].len(), 32);
        assert_eq!(parts[4].len(), 20);
    }

    #[test]
    fn brackets_whitespace_and_domain_case() {
        let k = keys();
        let id = k.generate(Purpose::Reply, "CCPA-2026-00001", "Example.COM");
        let (local, _) = id.split_once('@').unwrap();
        for form in [
            format!("<{id}>"),
            format!("  <{id}>\r\n"),
            format!("\t{id} "),
            format!("{local}@EXAMPLE.com"),
            format!("{local}@other.example"),
            format!("<{}>", id.to_uppercase()),
        ] {
            assert_eq!(
                k.verify(&form).map(|v| v.subject_id),
                Some("CCPA-2026-00001".to_string()),
                "{form:?}"
            );
        }
    }

    #[test]
    fn tampering_with_any_part_fails() {
        let k = keys();
        let id = k.generate(Purpose::Notice, "CCPA-2026-00042", "example.com");
        let (local, domain) = id.split_once('@').unwrap();
        let parts: Vec<&str> = local.split('.').collect();
        let flip = |s: &str| -> String {
            let mut c: Vec<char> = s.chars().collect();
            let last = c.len() - 1;
            c[last] = if c[last] == '0' { '1' } else { '0' };
            c.into_iter().collect()
        };
        let variants = [
            // Purpose swapped: a consumer reply ID can't pose as a notice.
            format!("pm.r.{}.{}.{}@{domain}", parts[2], parts[3], parts[4]),
            format!("pm.s.{}.{}.{}@{domain}", parts[2], parts[3], parts[4]),
            // Another case.
            format!("pm.n.CCPA-2026-00043.{}.{}@{domain}", parts[3], parts[4]),
            // Nonce or tag altered.
            format!("pm.n.{}.{}.{}@{domain}", parts[2], flip(parts[3]), parts[4]),
            format!("pm.n.{}.{}.{}@{domain}", parts[2], parts[3], flip(parts[4])),
            // Tag truncated or extended.
            format!(
                "pm.n.{}.{}.{}@{domain}",
                parts[2],
                parts[3],
                &parts[4][..18]
            ),
            format!("pm.n.{}.{}.{}00@{domain}", parts[2], parts[3], parts[4]),
            // Label changed, parts missing.
            format!("xx.n.{}.{}.{}@{domain}", parts[2], parts[3], parts[4]),
            format!("pm.n.{}.{}@{domain}", parts[3], parts[4]),
            local.to_string(),
            format!("{local}@"),
            String::new(),
            "<>".to_string(),
            "random@example.com".to_string(),
        ];
        for v in variants {
            assert_eq!(k.verify(&v), None, "{v}");
        }
        assert!(k.verify(&id).is_some());
    }

    #[test]
    fn wrong_key_fails() {
        let id = keys().generate(Purpose::Reply, "CCPA-2026-00042", "example.com");
        assert_eq!(Keys::new(b"another key").verify(&id), None);
        let fresh = Keys::new(&generate_secret());
        assert_eq!(fresh.verify(&id), None);
    }

    #[test]
    fn hex_subject_has_one_form() {
        let k = keys();
        // A plain subject forced into hex form must not verify as a second spelling.
        let id = k.generate(Purpose::Reply, "CCPA-2026-00042", "x.test");
        let encoded = format!("~{}", hex::encode("CCPA-2026-00042"));
        let forged = id.replace("CCPA-2026-00042", &encoded);
        assert_eq!(k.verify(&forged), None);
    }

    #[test]
    fn ids_are_found_in_raw_text() {
        let k = keys();
        let a = k.generate(Purpose::Notice, "CCPA-2026-00001", "example.com");
        let b = k.generate(Purpose::Reply, "CCPA-2026-00002", "example.com");
        let c = k.generate(Purpose::Reply, "CCPA-2026-00003", "example.com");
        let found = |text: &[u8]| -> Vec<String> {
            k.find_in_text(text)
                .into_iter()
                .map(|v| v.subject_id)
                .collect()
        };
        let b_upper = b.replacen("pm.", "PM.", 1);
        let rows: Vec<(Vec<u8>, Vec<&str>)> = vec![
            (b"".to_vec(), vec![]),
            (b"no ids @ all, a@b c@@d @".to_vec(), vec![]),
            (
                format!("References: <{b}>\r\n <{a}>\r\n\r\n> {b}").into_bytes(),
                vec!["CCPA-2026-00002", "CCPA-2026-00001"],
            ),
            (
                format!("(\"{a}\"),{b};{c}").into_bytes(),
                vec!["CCPA-2026-00001", "CCPA-2026-00002", "CCPA-2026-00003"],
            ),
            (
                format!("\u{a0}{a}\u{2019}").into_bytes(),
                vec!["CCPA-2026-00001"],
            ),
            (
                [b"\xff\xfe".as_slice(), a.as_bytes(), b"\x0b"].concat(),
                vec!["CCPA-2026-00001"],
            ),
            (b_upper.into_bytes(), vec!["CCPA-2026-00002"]),
            (format!("x{a} {a}x@y @{b}").into_bytes(), vec![]),
            (format!("{a}@{b}").into_bytes(), vec![]),
            (
                format!("pm.@{}{a}", " ".repeat(3)).into_bytes(),
                vec!["CCPA-2026-00001"],
            ),
        ];
        for (text, want) in rows {
            assert_eq!(found(&text), want, "{:?}", String::from_utf8_lossy(&text));
        }
        // Past the limit, an ID is not read.
        let mut long = vec![b'x'; SCAN_LIMIT];
        long.extend_from_slice(format!(" {a}").as_bytes());
        assert!(found(&long).is_empty());
        long.truncate(SCAN_LIMIT - a.len() - 1);
        long.extend_from_slice(format!(" {a}").as_bytes());
        assert_eq!(found(&long), vec!["CCPA-2026-00001"]);
    }

    #[test]
    fn verify_any_keeps_order_and_dedups() {
        let k = keys();
        let a = k.generate(Purpose::Notice, "CCPA-2026-00001", "example.com");
        let a2 = k.generate(Purpose::Notice, "CCPA-2026-00001", "example.com");
        let b = k.generate(Purpose::Reply, "CCPA-2026-00002", "example.com");
        let ids = vec![
            "foreign@mail.example".to_string(),
            format!("<{b}>"),
            a.clone(),
            a2,
            "pm.n.CCPA-2026-00003.00.00@example.com".to_string(),
        ];
        let found = k.verify_any(&ids);
        assert_eq!(
            found,
            vec![
                Verified {
                    purpose: Purpose::Reply,
                    subject_id: "CCPA-2026-00002".into()
                },
                Verified {
                    purpose: Purpose::Notice,
                    subject_id: "CCPA-2026-00001".into()
                },
            ]
        );
        assert!(k.verify_any(Vec::<&str>::new()).is_empty());
    }

    #[test]
    fn keys_debug_hides_secret() {
        assert_eq!(format!("{:?}", Keys::new(b"hunter2")), "Keys(..)");
    }

    #[test]
    fn secrets_differ() {
        assert_ne!(generate_secret(), generate_secret());
    }

    #[test]
    fn verification_code_shape() {
        for _ in 0..200 {
            let code = verification_code();
            assert_eq!(code.len(), 11, "{code}");
            assert_eq!(&code[5..6], "-");
            assert!(
                code.chars()
                    .filter(|c| *c != '-')
                    .all(|c| CROCKFORD.contains(&(c as u8))),
                "{code}"
            );
        }
        assert_ne!(verification_code(), verification_code());
    }

    #[test]
    fn find_code_tolerates_how_people_write() {
        let code = "7KQ2M-XH4PD";
        let found = [
            "my code is 7KQ2M-XH4PD",
            "7kq2m-xh4pd",
            "code: 7KQ2MXH4PD.",
            "7KQ2M XH4PD",
            "7KQ2M - XH4PD",
            "7 K Q 2 M X H 4 P D",
            "> Your code: 7KQ2M-XH4PD\n> Reply keeping it.",
            "(7KQ2M-XH4PD)",
            "7KQ2M\nXH4PD",
            "7KQ2M–XH4PD",
        ];
        for text in found {
            assert!(find_code(text, code), "{text:?}");
        }
        let not_found = [
            "",
            "7KQ2M",
            "7KQ2M-XH4PE",
            "A7KQ2M-XH4PD",
            "7KQ2M-XH4PDZ",
            "7KQ2M-----XH4PD",
            "7KQ2M_XH4PD",
        ];
        for text in not_found {
            assert!(!find_code(text, code), "{text:?}");
        }
    }

    #[test]
    fn find_code_maps_look_alikes() {
        assert!(find_code("ABC0I-LXYZ1", "ABCO1-1XYZ1"));
        assert!(find_code("abcoi-lxyz1", "ABC01-1XYZ1"));
    }

    #[test]
    fn find_code_rejects_bad_codes() {
        assert!(!find_code("anything", ""));
        assert!(!find_code("---", "-"));
        assert!(!find_code("U", "U"));
        assert!(!find_code("AB", "AB"));
    }

    #[test]
    fn generated_codes_are_found() {
        for _ in 0..50 {
            let code = verification_code();
            let text = format!("Hi,\n\n> code {code}\n");
            assert!(find_code(&text, &code));
            assert!(find_code(&text.to_lowercase(), &code));
            assert!(find_code(&text.replace('-', ""), &code));
        }
    }

    #[test]
    fn case_id_parses_under_its_prefix_only() {
        let id = |s: &str, prefix: &str| CaseId::parse(s, prefix).map(String::from);
        assert_eq!(
            id("ccpa-2026-00042", "CCPA").as_deref(),
            Some("CCPA-2026-00042")
        );
        assert_eq!(
            id("[CCPA-2026-00042]", "ccpa").as_deref(),
            Some("CCPA-2026-00042")
        );
        assert_eq!(
            id("priv-ca-2027-123456", "PRIV-CA").as_deref(),
            Some("PRIV-CA-2027-123456")
        );
        assert_eq!(CaseId::new("CCPA", 2026, 7).to_string(), "CCPA-2026-00007");
        for bad in [
            "CCPA-2026-42",
            "CCPA-2026-0042",
            "OTHER-2026-00042",
            "CCPA-26-00042",
            "",
        ] {
            assert_eq!(id(bad, "CCPA"), None, "{bad}");
        }
    }

    #[test]
    fn case_ids() {
        let table = [
            ("CCPA", 2026, 42, "CCPA-2026-00042"),
            ("CCPA", 2026, 1, "CCPA-2026-00001"),
            ("CCPA", 2026, 99_999, "CCPA-2026-99999"),
            ("CCPA", 2026, 123_456, "CCPA-2026-123456"),
            ("PRIV-CA", 2027, 7, "PRIV-CA-2027-00007"),
        ];
        for (prefix, year, seq, text) in table {
            assert_eq!(format_case_id(prefix, year, seq), text);
            assert_eq!(
                parse_case_id(text),
                Some(CaseIdParts {
                    prefix: prefix.into(),
                    year,
                    seq
                })
            );
        }
        assert_eq!(
            parse_case_id(" [CCPA-2026-00042] ").map(|p| p.seq),
            Some(42)
        );
        for bad in [
            "",
            "CCPA",
            "CCPA-2026",
            "CCPA-2026-0042",
            "CCPA-26-00042",
            "-2026-00042",
            "CCPA-2026-00042x",
            "CCPA-20a6-00042",
            "CC PA-2026-00042",
            "CCPA-2026-+0042",
        ] {
            assert_eq!(parse_case_id(bad), None, "{bad:?}");
        }
    }
}
