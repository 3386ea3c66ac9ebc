//! Turns a TOML or serde error into a message an admin can act on: the key,
//! the line, what is wrong and the fix (`config key KEY: …; fix: …`).
//!
//! The known keys and their example values come from `config/example.toml`
//! (compiled in), so a key added there is suggested without a second list
//! to keep in step. serde stays the judge of what is unknown; this module
//! only explains.

use std::collections::BTreeMap;
use std::ops::Range;

/// The documented example config, the source of known keys and example values.
const EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"));

/// What an admin reads for one problem in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Explained {
    /// `imap.port`, or a section name (`imap`) when no key is involved.
    pub key: String,
    /// 1-based line number, when known.
    pub line: Option<usize>,
    pub problem: String,
    pub fix: String,
}

/// Explains a deserialisation error of `text`.
pub fn explain(text: &str, err: &toml::de::Error) -> Explained {
    let message = err.message().trim().to_string();
    let span = err.span();
    let at = span.as_ref().map(|s| Place::of(text, s.clone()));

    if let Some(field) = between(&message, "unknown field `", "`") {
        return unknown_field(text, field, &message, at.as_ref());
    }
    if let Some(field) = between(&message, "missing field `", "`") {
        return missing_field(text, field, at.as_ref());
    }
    let Some(at) = at else {
        return Explained {
            key: "(file)".into(),
            line: None,
            problem: redacted_message(&message, false),
            fix: SYNTAX_FIX.into(),
        };
    };
    let key = at.dotted_key();
    let secret = at.key.as_deref().is_some_and(is_secret_key);
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let found = rest.split_whitespace().next().unwrap_or("value");
        let expected = rest.rsplit_once("expected ").map_or("", |(_, e)| e).trim();
        let example = example_value(at.section.as_deref(), at.key.as_deref());
        let bare = at.key.clone().unwrap_or_else(|| key.clone());
        let (what, fix) = match (describe(expected), &example) {
            (what, Some(ex)) => (
                format!("{key} must be {what}, e.g. {ex}"),
                format!("write `{bare} = {ex}`"),
            ),
            (what, None) => (
                format!("{key} must be {what}"),
                format!("write {bare} as {what} (see config/example.toml)"),
            ),
        };
        return Explained {
            key,
            line: Some(at.line),
            problem: format!("found a {found}; {what}"),
            fix,
        };
    }
    if let Some(variant) = between(&message, "unknown variant `", "`") {
        let choices = message
            .rsplit_once("expected ")
            .map(|(_, e)| e.replace('`', "\""))
            .unwrap_or_default();
        let example = example_value(at.section.as_deref(), at.key.as_deref());
        let bare = at.key.clone().unwrap_or_else(|| key.clone());
        return Explained {
            key,
            line: Some(at.line),
            problem: format!(
                "{:?} is not a valid choice; expected {choices}",
                if secret { "[redacted]" } else { variant }
            ),
            fix: match example {
                Some(ex) => format!("e.g. `{bare} = {ex}`"),
                None => format!("use one of {choices}"),
            },
        };
    }
    if message.starts_with("invalid value") || message.starts_with("invalid length") {
        let example = example_value(at.section.as_deref(), at.key.as_deref());
        let bare = at.key.clone().unwrap_or_else(|| key.clone());
        return Explained {
            key,
            line: Some(at.line),
            problem: redacted_message(&message, secret),
            fix: match example {
                Some(ex) => format!("e.g. `{bare} = {ex}`"),
                None => "see config/example.toml for the allowed values".into(),
            },
        };
    }
    // A TOML syntax error: show the line unless it may hold a secret (and
    // then not the parser's words either: they may quote the value).
    let problem = if secret {
        format!(
            "column {}: not valid TOML (the line reads: {} = [redacted])",
            at.column,
            at.key.as_deref().unwrap_or("?")
        )
    } else {
        format!(
            "column {}: {} (the line reads: {})",
            at.column,
            message,
            at.text.trim()
        )
    };
    Explained {
        key,
        line: Some(at.line),
        problem,
        fix: SYNTAX_FIX.into(),
    }
}

const SYNTAX_FIX: &str = "correct the TOML: one `key = value` per line, text in double quotes, \
                          lists in [brackets] (see config/example.toml)";

/// Does a key name a secret? Its value is never echoed.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "private_key"]
        .iter()
        .any(|w| k.contains(w))
}

/// serde's message may quote the value; for a secret line it is dropped.
fn redacted_message(message: &str, secret: bool) -> String {
    if !secret {
        return message.to_string();
    }
    // Keep the words, drop anything quoted.
    let mut out = String::new();
    let mut quoted = None;
    for c in message.chars() {
        match quoted {
            Some(q) if c == q => {
                out.push_str("[redacted]");
                quoted = None;
            }
            Some(_) => {}
            None if c == '"' || c == '`' || c == '\'' => quoted = Some(c),
            None => out.push(c),
        }
    }
    out
}

fn describe(expected: &str) -> String {
    let e = expected.trim();
    let number = [
        "u8",
        "u16",
        "u32",
        "u64",
        "i32",
        "i64",
        "usize",
        "an integer",
        "integer",
    ];
    if number.contains(&e) || e.contains("integer") {
        "a number".into()
    } else if e.contains("bool") {
        "true or false".into()
    } else if e.contains("string") || e == "path" || e.contains("path string") {
        "text in double quotes".into()
    } else if e.contains("sequence") || e.contains("array") {
        "a list in [brackets]".into()
    } else if e.starts_with("struct") || e.contains("map") || e.contains("table") {
        "a [section] table".into()
    } else {
        e.to_string()
    }
}

fn unknown_field(text: &str, field: &str, message: &str, at: Option<&Place>) -> Explained {
    // An unknown section: serde points at its `[header]`.
    if let Some(a) =
        at.filter(|a| a.key.is_none() && header_name(&a.text).as_deref() == Some(field))
    {
        let known = known_keys(None);
        return Explained {
            key: field.to_string(),
            line: Some(a.line),
            problem: format!("there is no section [{field}]"),
            fix: match closest(field, &known) {
                Some(best) => format!("did you mean [{best}]?"),
                None => format!("remove it; the sections are {}", bracketed(&known)),
            },
        };
    }
    let span_section = at.and_then(|a| a.section.clone());
    let found = Place::find_key(text, field, span_section.as_deref());
    let section = found
        .as_ref()
        .and_then(|p| p.section.clone())
        .or(span_section);
    let key = match &section {
        Some(s) => format!("{s}.{field}"),
        None => field.to_string(),
    };
    let mut known: Vec<String> = known_keys(section.as_deref());
    if let Some((_, list)) = message.split_once("expected one of ") {
        for k in list.split(',') {
            let k = k.trim().trim_matches('`').to_string();
            if !k.is_empty() && !known.contains(&k) {
                known.push(k);
            }
        }
    }
    let where_ = match (&found, &section) {
        (_, Some(s)) => format!("[{s}] has no key `{field}`"),
        (_, None) => format!("there is no section or top-level key `{field}`"),
    };
    let fix = match closest(field, &known) {
        Some(best) => format!("did you mean `{best}`?"),
        None if section.is_none() && !known.is_empty() => {
            format!("remove it; the sections are {}", bracketed(&known))
        }
        None if !known.is_empty() => format!(
            "remove it; the keys of this section are {}",
            known.join(", ")
        ),
        None => "remove it (every key is in config/example.toml)".into(),
    };
    Explained {
        key,
        line: found.map(|p| p.line),
        problem: where_,
        fix,
    }
}

fn missing_field(text: &str, field: &str, at: Option<&Place>) -> Explained {
    let section = at.and_then(|a| a.section.clone());
    match section {
        Some(s) => {
            // A required key that is "missing" is often there, mistyped.
            let known = known_keys(Some(&s));
            let typo = keys_in_section(text, &s).into_iter().find(|p| {
                p.key.as_ref().is_some_and(|k| {
                    !known.contains(k) && closest(k, &[field.to_string()]).is_some()
                })
            });
            if let Some(p) = typo {
                let typed = p.key.clone().unwrap_or_default();
                return Explained {
                    key: format!("{s}.{typed}"),
                    line: Some(p.line),
                    problem: format!(
                        "[{s}] has no key `{typed}`, and the required `{field}` is missing"
                    ),
                    fix: format!("did you mean `{field}`?"),
                };
            }
            let fix = match example_value(Some(&s), Some(field)) {
                Some(ex) => format!("add `{field} = {ex}` to [{s}]"),
                None => format!("add {field} to [{s}] (see config/example.toml)"),
            };
            Explained {
                key: format!("{s}.{field}"),
                line: at.map(|a| a.line),
                problem: "is required and missing".into(),
                fix,
            }
        }
        None => Explained {
            key: field.to_string(),
            line: None,
            problem: format!("the [{field}] section is missing"),
            fix: format!("add [{field}] with its required keys (see config/example.toml)"),
        },
    }
}

/// `[a], [b]`.
fn bracketed(names: &[String]) -> String {
    names
        .iter()
        .map(|k| format!("[{k}]"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lines that set a key in `[section]`.
fn keys_in_section(text: &str, section: &str) -> Vec<Place> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| key_of_line(l).is_some())
        .map(|(i, _)| Place::at_line(text, i, 1))
        .filter(|p| p.section.as_deref() == Some(section))
        .collect()
}

/// Where in the file an error points.
#[derive(Debug, Clone)]
struct Place {
    line: usize,
    column: usize,
    text: String,
    /// The table the line belongs to (`imap`, `rules`), if any.
    section: Option<String>,
    /// The key written on that line, if any.
    key: Option<String>,
}

impl Place {
    fn of(text: &str, span: Range<usize>) -> Place {
        let start = span.start.min(text.len());
        let before = text.get(..start).unwrap_or("");
        let line_idx = before.matches('\n').count();
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.len() - line_start + 1;
        Place::at_line(text, line_idx, column)
    }

    fn at_line(text: &str, line_idx: usize, column: usize) -> Place {
        let lines: Vec<&str> = text.lines().collect();
        let line_text = lines.get(line_idx).copied().unwrap_or("");
        let header = header_name(line_text);
        let section = header.clone().or_else(|| {
            lines
                .get(..line_idx)
                .unwrap_or(&[])
                .iter()
                .rev()
                .find_map(|l| header_name(l))
        });
        Place {
            line: line_idx + 1,
            column,
            text: line_text.to_string(),
            section,
            key: if header.is_some() {
                None
            } else {
                key_of_line(line_text).map(str::to_string)
            },
        }
    }

    /// The first line that sets `key`, preferring one in `section`.
    fn find_key(text: &str, key: &str, section: Option<&str>) -> Option<Place> {
        let hits: Vec<Place> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| key_of_line(l) == Some(key))
            .map(|(i, _)| Place::at_line(text, i, 1))
            .collect();
        hits.iter()
            .find(|p| section.is_some() && p.section.as_deref() == section)
            .or(hits.first())
            .cloned()
    }

    fn dotted_key(&self) -> String {
        match (&self.section, &self.key) {
            (Some(s), Some(k)) => format!("{s}.{k}"),
            (None, Some(k)) => k.clone(),
            (Some(s), None) => s.clone(),
            (None, None) => "(top level)".into(),
        }
    }
}

/// `[imap]` → `imap`; `[[rules]]` → `rules`.
fn header_name(line: &str) -> Option<String> {
    let l = line.trim();
    if !l.starts_with('[') {
        return None;
    }
    let inner = l.trim_start_matches('[');
    let end = inner.find(']')?;
    Some(inner[..end].trim().to_string())
}

/// `port = 993` → `port`.
fn key_of_line(line: &str) -> Option<&str> {
    let l = line.trim();
    if l.starts_with('#') || l.starts_with('[') {
        return None;
    }
    let (k, _) = l.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty()).then_some(k)
}

/// `(section, key) → example value` from config/example.toml, including
/// keys shown commented out (`# password_env = "IMAP_PASSWORD"`).
fn examples() -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    let mut section = String::new();
    for line in EXAMPLE.lines() {
        if let Some(h) = header_name(line) {
            section = h;
            continue;
        }
        let l = line.trim().trim_start_matches('#').trim();
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        let v = strip_comment(v.trim());
        if v.is_empty() || v == "\"...\"" {
            out.entry((section.clone(), k.to_string()))
                .or_insert_with(String::new);
            continue;
        }
        out.entry((section.clone(), k.to_string()))
            .or_insert_with(|| v.to_string());
    }
    out
}

/// The value without a trailing `# comment` (outside a string).
fn strip_comment(v: &str) -> &str {
    let mut in_str = false;
    for (i, c) in v.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '#' if !in_str => return v[..i].trim_end(),
            _ => {}
        }
    }
    v
}

fn example_value(section: Option<&str>, key: Option<&str>) -> Option<String> {
    let v = examples().remove(&(section?.to_string(), key?.to_string()))?;
    (!v.is_empty()).then_some(v)
}

/// The keys of `section` (or the section names at the top level).
fn known_keys(section: Option<&str>) -> Vec<String> {
    let ex = examples();
    match section {
        Some(s) => ex
            .keys()
            .filter(|(sec, _)| sec == s)
            .map(|(_, k)| k.clone())
            .collect(),
        None => {
            let mut names: Vec<String> = Vec::new();
            for line in EXAMPLE.lines() {
                if let Some(h) = header_name(line.trim_start_matches('#').trim())
                    && !names.contains(&h)
                {
                    names.push(h);
                }
            }
            names
        }
    }
}

/// The known key nearest to `typed`, when it is near enough to be a typo.
pub(crate) fn closest<'a>(typed: &str, known: &'a [String]) -> Option<&'a str> {
    let limit = (typed.chars().count() / 3).max(2);
    known
        .iter()
        .map(|k| (edit_distance(typed, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Levenshtein distance, counting an adjacent swap as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    if let Some(first) = d.first_mut() {
        for (j, cell) in first.iter_mut().enumerate() {
            *cell = j;
        }
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let (_, rest) = s.split_once(start)?;
    let (inner, _) = rest.split_once(end)?;
    Some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_nearest_key() {
        let known: Vec<String> = ["password", "password_file", "password_env", "host"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(closest("pasword_file", &known), Some("password_file"));
        assert_eq!(closest("hots", &known), Some("host"));
        assert_eq!(closest("completely_else", &known), None);
    }

    #[test]
    fn examples_come_from_the_example_file() {
        assert_eq!(
            example_value(Some("imap"), Some("port")).as_deref(),
            Some("993")
        );
        assert_eq!(
            example_value(Some("imap"), Some("password_env")).as_deref(),
            Some("\"IMAP_PASSWORD\"")
        );
        assert!(known_keys(Some("imap")).contains(&"password_file".to_string()));
        assert!(known_keys(None).contains(&"agents".to_string()));
    }

    #[test]
    fn secrets_are_redacted_from_messages() {
        assert_eq!(
            redacted_message("invalid type: string \"hunter2\", expected u16", true),
            "invalid type: string [redacted], expected u16"
        );
        assert!(is_secret_key("client_secret"));
        assert!(is_secret_key("password"));
        assert!(!is_secret_key("port"));
    }
}
