//! The bodies of outgoing text parts: CRLF line ends, and quoted-printable
//! where a line is long or a character is not ASCII.
//!
//! lettre's own `Body::new` inserts each CR with a `String::insert` after a
//! backwards scan of the characters, and its quoted-printable encoder spends
//! about 17 instructions a byte: together a sixth of composing a reply, which
//! intake does for every request (issue 13). Here both are one pass over the
//! bytes. The choice of encoding is lettre's own ([`Encoding::choose`] of
//! `email-encoding`, without SMTPUTF8), so the wire form changes only in
//! where quoted-printable breaks its lines; base64 (a body mostly outside
//! printable ASCII) is still lettre's.

use email_encoding::body::Encoding;
use lettre::message::Body;
use lettre::message::header::ContentTransferEncoding;

/// The longest encoded line quoted-printable allows (RFC 2045 §6.7, rule 5),
/// the `=` of a soft line break included.
const QP_LINE: usize = 76;

/// `text` as the body of a `text/*` part, encoded as lettre would choose.
pub(crate) fn text_body(text: &str) -> Body {
    match Encoding::choose(text, false) {
        Encoding::SevenBit => {
            Body::dangerous_pre_encoded(crlf(text), ContentTransferEncoding::SevenBit)
        }
        Encoding::QuotedPrintable => Body::dangerous_pre_encoded(
            quoted_printable(text),
            ContentTransferEncoding::QuotedPrintable,
        ),
        _ => Body::new(text.to_owned()),
    }
}

/// The lines of `text`: split at LF, a CR before it belonging to the line end.
/// The last item is what follows the last line end (empty when `text` ends
/// with one).
fn lines(text: &str) -> impl Iterator<Item = &[u8]> {
    let text = text.as_bytes();
    let mut ends = memchr::memchr_iter(b'\n', text);
    let mut start = Some(0);
    std::iter::from_fn(move || {
        let from = start?;
        let line = match ends.next() {
            Some(end) => {
                start = Some(end + 1);
                &text[from..end]
            }
            None => {
                start = None;
                &text[from..]
            }
        };
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
}

/// `text` line by line: `write` puts each line (without its end) into the
/// output, and a CRLF goes between lines.
fn each_line(text: &str, capacity: usize, mut write: impl FnMut(&[u8], &mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    let mut lines = lines(text).peekable();
    while let Some(line) = lines.next() {
        write(line, &mut out);
        if lines.peek().is_some() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// `text` with every line ending in CRLF (a CRLF already there stays one).
fn crlf(text: &str) -> Vec<u8> {
    each_line(text, text.len() + text.len() / 32 + 2, |line, out| {
        out.extend_from_slice(line)
    })
}

/// `text` in quoted-printable with CRLF line ends (see [`quoted_printable_line`]).
fn quoted_printable(text: &str) -> Vec<u8> {
    each_line(text, text.len() + text.len() / 4 + 8, quoted_printable_line)
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// Whether quoted-printable may write `b` as itself (a space or tab only
/// where it does not end a line).
fn plain(b: u8) -> bool {
    matches!(b, b'!'..=b'<' | b'>'..=b'~') || is_blank(b)
}

/// One line in quoted-printable: printable ASCII but `=` as itself, a space
/// or tab as itself unless it ends the line, every other byte (a lone CR
/// included) as `=XX`, and soft line breaks (`=` CRLF) so that no line is
/// longer than [`QP_LINE`]; an `=XX` is never split.
fn quoted_printable_line(line: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut column = 0;
    let mut i = 0;
    while i < line.len() {
        // A run written as it is, as far as this encoded line has room
        // with a soft break after it.
        let end = line.len().min(i + (QP_LINE - 1).saturating_sub(column));
        let mut run = line[i..end]
            .iter()
            .position(|&b| !plain(b))
            .map_or(end, |p| i + p);
        if run == line.len() && run > i && is_blank(line[run - 1]) {
            run -= 1;
        }
        out.extend_from_slice(&line[i..run]);
        column += run - i;
        i = run;
        let Some(&b) = line.get(i) else {
            break;
        };
        // The byte the run stopped at: one to escape, a space or tab
        // ending the line, or the first with no room left.
        let last = i + 1 == line.len();
        let literal = plain(b) && !(last && is_blank(b));
        let width = if literal { 1 } else { 3 };
        // Room for the `=` of a soft break after it, unless it ends the line.
        let room = if last { QP_LINE } else { QP_LINE - 1 };
        if column + width > room {
            out.extend_from_slice(b"=\r\n");
            column = 0;
        }
        if literal {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        column += width;
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a reader gets back: the text with CRLF line ends.
    fn decoded(body: &Body) -> String {
        let bytes = match body.encoding() {
            ContentTransferEncoding::QuotedPrintable => {
                quoted_printable::decode(body.as_ref(), quoted_printable::ParseMode::Strict)
                    .expect("valid quoted-printable")
            }
            _ => body.as_ref().to_vec(),
        };
        String::from_utf8(bytes).expect("UTF-8")
    }

    fn with_crlf(text: &str) -> String {
        String::from_utf8(crlf(text)).unwrap()
    }

    #[test]
    fn bodies_read_back_as_their_text() {
        let long_word = "x".repeat(200);
        let spaced = format!("{} end", " ".repeat(90));
        let eq_run = "=".repeat(80);
        let accents = "un café, ".repeat(12);
        // The encoding each text must get, when the row says.
        let mut rows: Vec<(String, Option<ContentTransferEncoding>)> = vec![
            ("".into(), Some(ContentTransferEncoding::SevenBit)),
            (
                "Hello,\n\nshort lines.\n".into(),
                Some(ContentTransferEncoding::SevenBit),
            ),
            (
                "already\r\nCRLF\r\n".into(),
                Some(ContentTransferEncoding::SevenBit),
            ),
            (
                "no final line end".into(),
                Some(ContentTransferEncoding::SevenBit),
            ),
            (
                "\n\nleading blank lines".into(),
                Some(ContentTransferEncoding::SevenBit),
            ),
            (
                "Grüße — déjà vu, in a sentence that is otherwise ASCII.\n".into(),
                Some(ContentTransferEncoding::QuotedPrintable),
            ),
            (
                format!("{long_word}\n"),
                Some(ContentTransferEncoding::QuotedPrintable),
            ),
            (
                format!("{spaced}\n"),
                Some(ContentTransferEncoding::QuotedPrintable),
            ),
            (
                format!("a {eq_run} b\n"),
                Some(ContentTransferEncoding::QuotedPrintable),
            ),
            (
                format!("{accents}\n{accents}"),
                Some(ContentTransferEncoding::QuotedPrintable),
            ),
            (
                format!("trailing space \ntrailing tab\t\r\n{long_word} \n"),
                Some(ContentTransferEncoding::QuotedPrintable),
            ),
            (
                format!("lone\rCR and \u{7f} and \u{0} {long_word}\n"),
                Some(ContentTransferEncoding::QuotedPrintable),
            ),
        ];
        // Every length around the line limit, ending in each kind of byte.
        for n in 70..=80 {
            for tail in ["", " ", "\t", "=", "é", " x", "=\n", " \n"] {
                let text = format!("{}{tail}\n{}{tail}", "x".repeat(n), "y".repeat(n));
                rows.push((text, None));
            }
        }
        for (text, want) in rows {
            let body = text_body(&text);
            let encoding = body.encoding();
            if let Some(want) = want {
                assert_eq!(encoding, want, "{text:?}");
            }
            assert_eq!(decoded(&body), with_crlf(&text), "{text:?}");
            let wire = std::str::from_utf8(body.as_ref()).unwrap();
            assert!(wire.is_ascii(), "{wire:?}");
            // Only CRLF line ends on the wire, none longer than allowed.
            for line in wire.split("\r\n") {
                assert!(!line.contains(['\r', '\n']), "{wire:?}");
                assert!(
                    line.len() <= QP_LINE,
                    "{} > {QP_LINE}: {line:?}",
                    line.len()
                );
                if encoding == ContentTransferEncoding::QuotedPrintable {
                    assert!(!line.ends_with([' ', '\t']), "{line:?}");
                }
            }
        }
    }

    #[test]
    fn mostly_binary_text_is_left_to_lettre() {
        let text = "\u{1}\u{2}\u{3}".repeat(40);
        let body = text_body(&text);
        assert_eq!(body.encoding(), ContentTransferEncoding::Base64);
    }

    /// Every shipped template's HTML and text, and the corpus's message
    /// bodies, through this encoder and lettre's: both decode to the same text.
    #[test]
    fn reads_back_as_lettres_does() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["templates", "tests/data"] {
            crate::message::split::tests::files_under(&root.join(dir), &mut files);
        }
        let texts: Vec<String> = files
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .collect();
        assert!(texts.len() > 50, "{}", texts.len());
        let mut quoted = 0;
        for text in &texts {
            let ours = text_body(text);
            let theirs = Body::new(text.clone());
            assert_eq!(ours.encoding(), theirs.encoding());
            match ours.encoding() {
                ContentTransferEncoding::Base64 => continue,
                ContentTransferEncoding::QuotedPrintable => quoted += 1,
                _ => {}
            }
            assert_eq!(decoded(&ours), decoded(&theirs));
        }
        assert!(quoted > 20, "{quoted}");
    }
}
