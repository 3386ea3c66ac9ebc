//! The new text of a reply: what the sender wrote, without the message they
//! quote. The case engine looks for "CONFIRM" and "cancel" only there (SPEC §4),
//! so our own instruction "reply CONFIRM to this message", quoted back by every
//! mail client, must never count as the consumer's word.
//!
//! Two quoting families are handled:
//! - `>`-quoting under an attribution line ("On … wrote:", "Am … schrieb …:",
//!   "Le … a écrit :", "El … escribió:", "Op … schreef …:"), used by Gmail,
//!   Apple Mail, Thunderbird. Text after the quote block is new
//!   (bottom-posting, inline answers); only the `>` lines and the attribution
//!   go.
//! - Outlook's unmarked original under a "From:/Sent:/To:/Subject:" block (in
//!   several languages), an "-----Original Message-----" line or a line of
//!   underscores. Everything from there on is dropped.
//!
//! A signature after a "-- " line is dropped too.

use std::sync::LazyLock;

use regex::Regex;

/// "-----Original Message-----" and friends.
static ORIGINAL_MESSAGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^-{2,}\s*(original message|ursprüngliche nachricht|message d'origine|mensaje original|oorspronkelijk bericht|messaggio originale|mensagem original|originalmeddelande|forwarded message|weitergeleitete nachricht|message transféré|mensaje reenviado|doorgestuurd bericht)\s*-*$",
    )
    .expect("original-message pattern is valid")
});

/// Outlook's separator line.
static UNDERSCORES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^_{10,}$").expect("underscore pattern is valid"));

/// First line of an Outlook header block.
static HEADER_FROM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^\*?(from|von|de|van|da|fra|från|od|от)\s*\*?\s*:")
        .expect("from pattern is valid")
});

/// The other lines of an Outlook header block.
static HEADER_OTHER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^\*?(sent|date|to|cc|subject|gesendet|datum|an|betreff|envoyé|à|objet|enviado|fecha|para|asunto|verzonden|aan|onderwerp|inviato|oggetto|a)\s*\*?\s*:",
    )
    .expect("header pattern is valid")
});

/// Start of an attribution line, in the languages we know.
static ATTRIBUTION_START: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(on|am|le|el|op|il|em|den|på)\s").expect("pattern is valid")
});

/// End of an attribution line.
static ATTRIBUTION_END: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(wrote|schrieb|a écrit|escribió|schreef|ha scritto|escreveu|skrev)\b[^:]{0,120}:$",
    )
    .expect("pattern is valid")
});

/// Whether `line` (trimmed) is an attribution line.
fn is_attribution(line: &str) -> bool {
    line.len() <= 400 && ATTRIBUTION_START.is_match(line) && ATTRIBUTION_END.is_match(line)
}

fn is_quote(line: &str) -> bool {
    line.trim_start().starts_with('>')
}

/// The text the sender wrote, without quoted parts and signature. Lines keep
/// their order; trailing spaces (format=flowed) are dropped; runs of blank
/// lines become one; the result has no leading or trailing blank lines.
pub fn new_text(text: &str) -> String {
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = normalized.split('\n').map(str::trim_end).collect();

    let end = outlook_cut(&lines);
    let lines = &lines[..end];

    let mut kept: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        if trimmed == "--" {
            // Signature: the rest is the sender's signature (and, when
            // top-posting, quotes under it).
            break;
        }
        if is_quote(line) {
            i += 1;
            continue;
        }
        // An attribution on one line, or wrapped over two.
        let span = if is_attribution(trimmed) {
            Some(1)
        } else if i + 1 < lines.len()
            && ATTRIBUTION_START.is_match(trimmed)
            && !trimmed.ends_with(':')
            && !lines[i + 1].trim().is_empty()
            && !is_quote(lines[i + 1])
            && is_attribution(&format!("{} {}", trimmed, lines[i + 1].trim()))
        {
            Some(2)
        } else {
            None
        };
        if let Some(span) = span {
            if quote_follows(lines, i + span) {
                i += span;
                continue;
            }
            // An attribution without `>` lines under it: the client quoted
            // without marks, so everything below is the original.
            break;
        }
        kept.push(line);
        i += 1;
    }
    tidy(&kept)
}

/// Whether the next non-blank line from `from` is a `>` quote.
fn quote_follows(lines: &[&str], from: usize) -> bool {
    lines[from.min(lines.len())..]
        .iter()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| is_quote(l))
}

/// Index of the first line of an unmarked (Outlook-style) original, or the
/// number of lines when there is none.
fn outlook_cut(lines: &[&str]) -> usize {
    for (i, line) in lines.iter().enumerate() {
        if is_quote(line) {
            continue;
        }
        let trimmed = line.trim();
        if ORIGINAL_MESSAGE.is_match(trimmed) || UNDERSCORES.is_match(trimmed) {
            return i;
        }
        if HEADER_FROM.is_match(trimmed) {
            let headers = lines[i + 1..]
                .iter()
                .take(6)
                .filter(|l| HEADER_OTHER.is_match(l.trim()))
                .count();
            if headers >= 2 {
                return i;
            }
        }
    }
    lines.len()
}

/// Drops leading/trailing blank lines and collapses blank runs.
fn tidy(lines: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for line in lines {
        if line.trim().is_empty() {
            if out.last().is_some_and(|l| !l.is_empty()) {
                out.push("");
            }
        } else {
            out.push(line);
        }
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out.join("\n")
}

/// Elements whose content is never text.
const SKIPPED: [&str; 6] = ["script", "style", "head", "title", "template", "noscript"];

/// Elements that start and end a line.
const BLOCKS: [&str; 31] = [
    "p", "div", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "hr",
    "section", "article", "header", "footer", "address", "dd", "dt", "dl", "center", "form",
    "fieldset", "main", "nav", "aside", "figure", "tbody",
];

/// Converts HTML to plain text: drops scripts and styles, turns block
/// elements and `<br>` into line breaks, prefixes the content of
/// `<blockquote>` with "> " per level (so [`new_text`] drops it), and decodes
/// entities. Forgiving: broken markup yields what could be read.
pub(crate) fn html_to_text(html: &str) -> String {
    let mut out = HtmlText::default();
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.text(&rest[..lt]);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        let Some(tag) = parse_tag(rest) else {
            // A lone "<": text.
            out.text("<");
            rest = &rest[1..];
            continue;
        };
        rest = &rest[tag.len..];
        let name = tag.name.as_str();
        if !tag.closing && SKIPPED.contains(&name) && !tag.self_closing {
            rest = skip_until_close(rest, name);
            continue;
        }
        match name {
            "br" => out.line_break(),
            "blockquote" => {
                out.block_edge();
                if tag.closing {
                    out.depth = out.depth.saturating_sub(1);
                } else {
                    out.depth += 1;
                }
            }
            "pre" => {
                out.block_edge();
                out.pre = !tag.closing;
            }
            "p" => {
                out.block_edge();
                out.blank_line();
            }
            "li" if !tag.closing => {
                out.block_edge();
                out.text("- ");
            }
            "td" | "th" if !tag.closing => out.space(),
            n if BLOCKS.contains(&n) => out.block_edge(),
            _ => {}
        }
    }
    out.text(rest);
    out.finish()
}

/// A parsed tag: lower-case name, and how many bytes it spans.
struct Tag {
    name: String,
    closing: bool,
    self_closing: bool,
    len: usize,
}

/// Parses the tag at the start of `s` (which starts with '<'). `None` when
/// it is not a tag (e.g. "a < b").
fn parse_tag(s: &str) -> Option<Tag> {
    let body = &s[1..];
    let (closing, body) = match body.strip_prefix('/') {
        Some(b) => (true, b),
        None => (false, body),
    };
    let first = body.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '!' || first == '?') {
        return None;
    }
    let name: String = body
        .chars()
        .take_while(|c| {
            c.is_ascii_alphanumeric() || *c == '!' || *c == '?' || *c == '-' || *c == ':'
        })
        .collect::<String>()
        .to_ascii_lowercase();
    // Find the closing '>' outside quoted attribute values.
    let mut quote: Option<char> = None;
    let offset = s.len() - body.len();
    for (i, c) in body.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => {
                let self_closing = body[..i].trim_end().ends_with('/');
                return Some(Tag {
                    name,
                    closing,
                    self_closing,
                    len: offset + i + 1,
                });
            }
            _ => {}
        }
    }
    // Unterminated tag: swallow the rest.
    Some(Tag {
        name,
        closing,
        self_closing: false,
        len: s.len(),
    })
}

/// The rest of the input after `</name>` (case-insensitive), or "" if absent.
/// Scans forward without copying, so a message full of `<style>` tags costs
/// linear time, not quadratic.
fn skip_until_close<'a>(s: &'a str, name: &str) -> &'a str {
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(rel) = s[from..].find("</") {
        let start = from + rel;
        let tag = start + 2;
        let end = tag + name.len();
        if end <= bytes.len() && bytes[tag..end].eq_ignore_ascii_case(name.as_bytes()) {
            let after = &s[start..];
            return after.find('>').map_or("", |e| &after[e + 1..]);
        }
        // "</" is ASCII: start + 2 is a character boundary.
        from = tag;
    }
    ""
}

/// Builds text line by line, remembering each line's quote depth.
#[derive(Default)]
struct HtmlText {
    lines: Vec<(usize, String)>,
    current: String,
    /// Quote depth of the current line, fixed when its first text arrives.
    current_depth: usize,
    depth: usize,
    pre: bool,
    pending_space: bool,
}

impl HtmlText {
    fn text(&mut self, raw: &str) {
        if raw.is_empty() {
            return;
        }
        let decoded = decode_entities(raw);
        if self.pre {
            let mut parts = decoded.split('\n');
            if let Some(first) = parts.next() {
                self.push_str(first);
            }
            for part in parts {
                self.newline_hard();
                self.push_str(part);
            }
            return;
        }
        for c in decoded.chars() {
            if c.is_whitespace() && c != '\u{a0}' {
                self.pending_space = true;
            } else {
                if self.pending_space && !self.current.is_empty() {
                    self.current.push(' ');
                }
                self.pending_space = false;
                self.push_char(if c == '\u{a0}' { ' ' } else { c });
            }
        }
    }

    fn push_str(&mut self, s: &str) {
        for c in s.chars() {
            self.push_char(if c == '\u{a0}' { ' ' } else { c });
        }
    }

    fn push_char(&mut self, c: char) {
        if self.current.is_empty() {
            self.current_depth = self.depth;
        }
        self.current.push(c);
    }

    fn space(&mut self) {
        self.pending_space = true;
    }

    /// A `<br>`: ends the line, even an empty one (a blank line).
    fn line_break(&mut self) {
        self.newline_hard();
    }

    /// The edge of a block element: ends the line if it has text.
    fn block_edge(&mut self) {
        if !self.current.is_empty() {
            self.newline_hard();
        }
    }

    /// Paragraph spacing (runs of blank lines are collapsed later).
    fn blank_line(&mut self) {
        self.lines.push((self.depth, String::new()));
    }

    fn newline_hard(&mut self) {
        let line = std::mem::take(&mut self.current);
        let depth = if line.is_empty() {
            self.depth
        } else {
            self.current_depth
        };
        self.lines.push((depth, line));
        self.pending_space = false;
    }

    fn finish(mut self) -> String {
        if !self.current.is_empty() {
            self.newline_hard();
        }
        let rendered: Vec<String> = self
            .lines
            .into_iter()
            .map(|(depth, line)| {
                let line = line.trim_end();
                if depth == 0 {
                    line.to_string()
                } else if line.is_empty() {
                    ">".repeat(depth)
                } else {
                    format!("{} {}", ">".repeat(depth), line)
                }
            })
            .collect();
        // Blank lines: collapse runs, drop at the edges.
        let mut out: Vec<&str> = Vec::new();
        for line in &rendered {
            let blank = line.is_empty();
            if blank && out.last().is_none_or(|l| l.is_empty()) {
                continue;
            }
            out.push(line);
        }
        while out.last().is_some_and(|l| l.is_empty()) {
            out.pop();
        }
        out.join("\n")
    }
}

/// Decodes character references: the common named ones and all numeric
/// ones. Unknown or malformed references stay as written.
pub(crate) fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..]
            .char_indices()
            .take(12)
            .find(|(_, c)| *c == ';')
            .map(|(i, _)| i + 1);
        let decoded = end.and_then(|end| decode_entity(&rest[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse::<u32>().ok()?,
        };
        return Some(
            char::from_u32(code)
                .filter(|c| *c != '\0')
                .unwrap_or('\u{fffd}'),
        );
    }
    let c = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "euro" => '€',
        "shy" => '\u{ad}',
        "zwnj" => '\u{200c}',
        "zwj" => '\u{200d}',
        "eacute" => 'é',
        "egrave" => 'è',
        "agrave" => 'à',
        "uuml" => 'ü',
        "ouml" => 'ö',
        "auml" => 'ä',
        "szlig" => 'ß',
        "ccedil" => 'ç',
        "ntilde" => 'ñ',
        _ => return None,
    };
    Some(c)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Every `tests/data/reply_text/NAME.txt` (plain) or `NAME.html` (through
    /// `html_to_text` first) against `NAME.expected`.
    #[test]
    fn reply_text_table() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/reply_text");
        let mut checked = 0;
        let mut failures = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext != "txt" && ext != "html" {
                continue;
            }
            let input = std::fs::read_to_string(&path).unwrap();
            let expected = std::fs::read_to_string(path.with_extension("expected"))
                .unwrap_or_else(|_| panic!("{} has no .expected file", path.display()));
            let text = if ext == "html" {
                html_to_text(&input)
            } else {
                input
            };
            let got = new_text(&text);
            if got != expected.trim_end_matches('\n') {
                failures.push(format!(
                    "{}:\n--- got ---\n{got}\n--- want ---\n{expected}",
                    path.display()
                ));
            }
            checked += 1;
        }
        assert!(checked >= 25, "only {checked} cases found");
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    fn quoted_instruction_never_survives() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/reply_text");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let Ok(input) = std::fs::read_to_string(&path) else {
                continue;
            };
            let text = match path.extension().and_then(|e| e.to_str()) {
                Some("txt") => input,
                Some("html") => html_to_text(&input),
                _ => continue,
            };
            assert!(
                !new_text(&text).to_lowercase().contains("reply confirm"),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn html_to_text_basics() {
        let cases = [
            ("plain", "plain"),
            ("a<br>b<br/>c<BR />d", "a\nb\nc\nd"),
            ("<p>one</p><p>two</p>", "one\n\ntwo"),
            ("<div>one</div><div>two</div>", "one\ntwo"),
            ("<div>one</div><div><br></div><div>two</div>", "one\n\ntwo"),
            (
                "x &amp; y &lt;z&gt; &quot;q&quot; &#39;s&#39; a&nbsp;b &#8364; &#x20AC;",
                "x & y <z> \"q\" 's' a b € €",
            ),
            ("&unknown; & &amp", "&unknown; & &amp"),
            (
                "&#0; &#xD800; &#99999999; &#xZZ;",
                "\u{fffd} \u{fffd} \u{fffd} &#xZZ;",
            ),
            ("<script>var a = '<p>'; </script>after", "after"),
            ("<STYLE type=text/css>p{}</STYLE>after", "after"),
            ("<!-- <p>hidden</p> -->shown", "shown"),
            ("<!DOCTYPE html><html><body>hi</body></html>", "hi"),
            ("a  \n  b\t\tc", "a b c"),
            (
                "before<blockquote>quoted<br>two</blockquote>after",
                "before\n> quoted\n> two\nafter",
            ),
            (
                "<blockquote>one<blockquote>two</blockquote></blockquote>",
                "> one\n>> two",
            ),
            ("<ul><li>a</li><li>b</li></ul>", "- a\n- b"),
            ("<table><tr><td>a</td><td>b</td></tr></table>", "a b"),
            ("<pre>  keep\n  lines</pre>", "  keep\n  lines"),
            ("<a href=\"x>y\">link</a>", "link"),
            ("1 < 2 and 3 > 2", "1 < 2 and 3 > 2"),
            ("unterminated <b", "unterminated"),
            ("<script>never closed", ""),
            ("", ""),
        ];
        for (html, want) in cases {
            assert_eq!(html_to_text(html), want, "{html:?}");
        }
    }

    #[test]
    fn new_text_edge_cases() {
        assert_eq!(new_text(""), "");
        assert_eq!(new_text("> only a quote\n> more"), "");
        assert_eq!(new_text("--\nsignature only"), "");
        // "From:" without other headers is ordinary text.
        assert_eq!(
            new_text("From: me\nPlease delete."),
            "From: me\nPlease delete."
        );
        // A line of dashes that is not a separator stays.
        assert_eq!(new_text("a\n---\nb"), "a\n---\nb");
    }

    /// Arbitrary input never panics (a poor man's fuzz run).
    #[test]
    fn arbitrary_input_never_panics() {
        const PIECES: [&str; 24] = [
            "<",
            ">",
            "</",
            "<br>",
            "<blockquote>",
            "</blockquote>",
            "<script>",
            "&",
            "&#",
            "&#x",
            ";",
            "amp",
            "\n",
            "\r\n",
            "> ",
            "On 3 Nov ",
            "wrote:",
            "From: a",
            "Sent: b",
            "To: c",
            "-- ",
            "é",
            "回复",
            "\"",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..3000 {
            let mut input = String::new();
            for _ in 0..(seed % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                input.push_str(PIECES[(seed % PIECES.len() as u64) as usize]);
            }
            let _ = new_text(&html_to_text(&input));
            let _ = new_text(&input);
            let _ = decode_entities(&input);
        }
    }
}
