//! Raw bytes → [`Inbound`]. Never fails: broken MIME yields what could be read.
//!
//! mail-parser does the MIME work (RFC 2047 words, RFC 2231 parameters,
//! charsets, transfer encodings, broken boundaries). This module copies what
//! the daemon needs into owned, normalised fields: ids without brackets,
//! lower-cased addresses, UTC dates, one readable text.

use std::panic::{AssertUnwindSafe, catch_unwind};

use chrono::{DateTime, Utc};
use mail_parser::{HeaderName, HeaderValue, MessageParser, MimeHeaders, PartType};

use super::{Address, Inbound, MimeExcess, MimeLimits, MimeShape, attachment, auto};

/// Parses a raw RFC 5322 message.
///
/// Never panics and never fails: a message mail-parser cannot read at all (no
/// headers, empty input) gives a default [`Inbound`] with only `size` set, and
/// a damaged one gives what could be read. A leading mbox `From ` line is
/// ignored.
pub fn parse(raw: &[u8]) -> Inbound {
    parse_with(raw, &MimeLimits::default())
}

/// [`parse`] with the configured caps on the MIME structure: over a cap, no
/// attachment is extracted and [`Inbound::over_limit`] says why.
pub fn parse_with(raw: &[u8], limits: &MimeLimits) -> Inbound {
    let size = raw.len();
    let body = strip_mbox_from_line(raw);
    // mail-parser is fuzzed and documents that it never panics; this is the
    // second line, so one hostile message cannot stop the mailbox loop.
    let parsed = catch_unwind(AssertUnwindSafe(|| parse_message(body, limits)));
    let mut inbound = match parsed {
        Ok(Some(inbound)) => inbound,
        Ok(None) => Inbound::default(),
        Err(_) => {
            tracing::warn!(
                size,
                "Message parser panicked; keeping the message unparsed."
            );
            Inbound::default()
        }
    };
    inbound.size = size;
    inbound
}

/// Drops an mbox separator line (`From sender date`), which some exports and
/// test fixtures carry in front of the headers. A `From:` header is kept.
pub fn strip_mbox_from_line(raw: &[u8]) -> &[u8] {
    if !raw.starts_with(b"From ") {
        return raw;
    }
    let line_end = raw.iter().position(|&b| b == b'\n');
    let first_line = &raw[..line_end.unwrap_or(raw.len())];
    // Obsolete syntax allows `From : x` (space before the colon).
    let rest = first_line[4..].trim_ascii_start();
    if rest.starts_with(b":") {
        return raw;
    }
    match line_end {
        Some(end) => &raw[end + 1..],
        None => &[],
    }
}

fn parse_message(raw: &[u8], limits: &MimeLimits) -> Option<Inbound> {
    let msg = MessageParser::default().parse(raw)?;
    let shape = shape(&msg);
    let over_limit = excess(shape, limits);
    Some(Inbound {
        message_id: msg.message_id().and_then(clean_id),
        in_reply_to: ids(&msg, HeaderName::InReplyTo),
        references: ids(&msg, HeaderName::References),
        subject: msg.subject().map(one_line).unwrap_or_default(),
        from: msg.from().and_then(|a| addresses(a).into_iter().next()),
        reply_to: msg.reply_to().and_then(|a| addresses(a).into_iter().next()),
        to: msg.all_to().flat_map(addresses).collect(),
        cc: msg.all_cc().flat_map(addresses).collect(),
        date: msg.date().and_then(to_utc),
        text: text(&msg),
        auto: auto::detect(&msg),
        dsn: auto::delivery_report(&msg),
        attachments: match over_limit {
            Some(_) => Vec::new(),
            None => attachment::extract(&msg, raw),
        },
        authentication_results: raw_header_values(&msg, "Authentication-Results"),
        size: raw.len(),
        shape,
        over_limit,
    })
}

/// Counts parts, nesting depth and attachments, attached messages included,
/// without recursion (a hostile message may nest thousands deep).
fn shape(msg: &mail_parser::Message<'_>) -> MimeShape {
    let mut out = MimeShape {
        attachments: msg.attachments.len(),
        ..MimeShape::default()
    };
    // (message, part id, depth of that part)
    let mut stack: Vec<(&mail_parser::Message<'_>, u32, usize)> = vec![(msg, 0, 1)];
    while let Some((m, id, depth)) = stack.pop() {
        let Some(part) = m.parts.get(id as usize) else {
            continue;
        };
        out.parts += 1;
        out.depth = out.depth.max(depth);
        match &part.body {
            PartType::Multipart(children) => {
                stack.extend(children.iter().map(|&c| (m, c, depth + 1)));
            }
            // Only top-level attachments are extracted, so only they count
            // against `max_attachments`; an attached message's parts count
            // against the part and depth caps.
            PartType::Message(inner) => stack.push((inner, 0, depth + 1)),
            _ => {}
        }
    }
    out
}

/// The first cap the shape is over, if any.
fn excess(shape: MimeShape, limits: &MimeLimits) -> Option<MimeExcess> {
    if shape.parts > limits.max_parts {
        return Some(MimeExcess::Parts {
            found: shape.parts,
            max: limits.max_parts,
        });
    }
    if shape.depth > limits.max_depth {
        return Some(MimeExcess::Depth {
            found: shape.depth,
            max: limits.max_depth,
        });
    }
    if shape.attachments > limits.max_attachments {
        return Some(MimeExcess::Attachments {
            found: shape.attachments,
            max: limits.max_attachments,
        });
    }
    None
}

/// Every message id of a header (all occurrences), without angle brackets,
/// without duplicates, in order.
fn ids(msg: &mail_parser::Message<'_>, name: HeaderName<'static>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for value in msg.header_values(name) {
        let found: Vec<&str> = match value {
            HeaderValue::Text(id) => vec![id.as_ref()],
            HeaderValue::TextList(list) => list.iter().map(|id| id.as_ref()).collect(),
            _ => Vec::new(),
        };
        for id in found.into_iter().filter_map(clean_id) {
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

/// A message id without brackets or whitespace; `None` when nothing is left.
pub(crate) fn clean_id(id: &str) -> Option<String> {
    let id = id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    (!id.is_empty() && !id.chars().any(|c| c.is_whitespace() || c.is_control()))
        .then(|| id.to_string())
}

/// Unfolds and tidies a header text: control characters and runs of
/// whitespace become one space.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn addresses(list: &mail_parser::Address<'_>) -> Vec<Address> {
    list.iter()
        .filter_map(|a| {
            let addr = bare_address(a.address()?);
            if addr.is_empty() {
                return None;
            }
            let name = a.name().map(one_line).filter(|n| !n.is_empty());
            Some(Address { addr, name })
        })
        .collect()
}

/// Lower-case address without spaces. A broken header can leave words in
/// front of the address (`<example.org postmaster@example.org>`): the last
/// word with an `@` is the address then.
fn bare_address(raw: &str) -> String {
    let words: Vec<&str> = raw.split_whitespace().collect();
    let addr = match words.as_slice() {
        [one] => (*one).to_string(),
        _ => words
            .iter()
            .rev()
            .find(|w| w.contains('@'))
            .map_or_else(|| words.concat(), |w| (*w).to_string()),
    };
    addr.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .to_lowercase()
}

fn to_utc(date: &mail_parser::DateTime) -> Option<DateTime<Utc>> {
    if !date.is_valid() {
        return None;
    }
    DateTime::from_timestamp(date.to_timestamp(), 0)
}

/// The readable text: every text/plain body part, joined; HTML body parts are
/// converted where the sender gave no plain alternative. Line ends become `\n`.
fn text(msg: &mail_parser::Message<'_>) -> String {
    let mut pieces: Vec<String> = Vec::new();
    for part in msg.text_bodies() {
        match &part.body {
            PartType::Text(text) => pieces.push(text.to_string()),
            PartType::Html(html) => pieces.push(html_to_text(html)),
            _ => {}
        }
    }
    if pieces.is_empty() {
        for part in msg.html_bodies() {
            match &part.body {
                PartType::Html(html) => pieces.push(html_to_text(html)),
                PartType::Text(text) => pieces.push(text.to_string()),
                _ => {}
            }
        }
    }
    if pieces.is_empty() {
        // Broken MIME (a part without its closing boundary, say): mail-parser
        // keeps the text but files it as an attachment. Recover unnamed text.
        for &id in &msg.attachments {
            let Some(part) = msg.parts.get(id as usize) else {
                continue;
            };
            let unnamed = part.attachment_name().is_none()
                && !part
                    .content_disposition()
                    .is_some_and(|cd| cd.is_attachment());
            let plain_or_html = part.is_encoding_problem
                || part.content_type().is_none()
                || part.is_content_type("text", "plain")
                || part.is_content_type("text", "html");
            if !(unnamed && plain_or_html) {
                continue;
            }
            match &part.body {
                PartType::Text(text) => pieces.push(text.to_string()),
                PartType::Html(html) => pieces.push(html_to_text(html)),
                _ => {}
            }
        }
    }
    let joined = pieces
        .iter()
        .map(|p| p.trim_end())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    joined.replace("\r\n", "\n").replace('\r', "\n")
}

/// HTML → plain text, with the converter the reply-text module owns, so the
/// text of an HTML-only reply reads the same everywhere.
fn html_to_text(html: &str) -> String {
    super::reply_text::html_to_text(html)
}

/// The raw values of every top-level header called `name` (case-insensitive),
/// unfolded and trimmed, in order. Raw, because RFC 2047 decoding or address
/// parsing would change what `Authentication-Results` or `Precedence` say.
pub(crate) fn raw_header_values(msg: &mail_parser::Message<'_>, name: &str) -> Vec<String> {
    msg.headers()
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .filter_map(|h| {
            let bytes = msg
                .raw_message
                .get(h.offset_start as usize..h.offset_end as usize)?;
            Some(one_line(&String::from_utf8_lossy(bytes)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::AutoKind;

    /// `n` tiny parts, `depth` levels of multipart nesting around them.
    fn bomb(n: usize, depth: usize) -> Vec<u8> {
        let mut out = String::from("From: a@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n");
        for d in 0..depth {
            out.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{d}\"\r\n\r\n--b{d}\r\n"
            ));
        }
        out.push_str("Content-Type: multipart/mixed; boundary=\"leaf\"\r\n\r\n");
        for i in 0..n {
            out.push_str(&format!("--leaf\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"p{i}.bin\"\r\n\r\nx\r\n"));
        }
        out.push_str("--leaf--\r\n");
        for d in (0..depth).rev() {
            out.push_str(&format!("--b{d}--\r\n"));
        }
        out.into_bytes()
    }

    #[test]
    fn mime_caps_are_counted_and_enforced() {
        let small = parse(&bomb(3, 2));
        assert_eq!(small.over_limit, None);
        assert_eq!(small.attachments.len(), 3);
        assert_eq!(small.shape.attachments, 3);
        assert_eq!(small.shape.depth, 4);
        let many = parse(&bomb(30, 0));
        assert_eq!(
            many.over_limit,
            Some(MimeExcess::Attachments { found: 30, max: 20 })
        );
        assert!(many.attachments.is_empty(), "nothing extracted over a cap");
        let deep = parse(&bomb(1, 30));
        assert!(matches!(
            deep.over_limit,
            Some(MimeExcess::Depth { max: 20, .. })
        ));
        let huge = parse_with(
            &bomb(5000, 0),
            &MimeLimits {
                max_attachments: 100_000,
                ..MimeLimits::default()
            },
        );
        assert!(matches!(
            huge.over_limit,
            Some(MimeExcess::Parts {
                found: 5001,
                max: 1000
            })
        ));
        assert!(
            huge.over_limit
                .unwrap()
                .to_string()
                .contains("imap.max_mime_parts")
        );
    }

    fn msg(headers: &str, body: &str) -> Vec<u8> {
        format!("{headers}\r\n\r\n{body}").into_bytes()
    }

    #[test]
    fn decodes_subjects() {
        let cases: &[(&str, &str)] = &[
            ("Subject: plain words", "plain words"),
            (
                "Subject: =?UTF-8?B?Q2FsaWZvcm5pYSBSZXF1ZXN0IHRvIEtub3cg4oCT?=",
                "California Request to Know –",
            ),
            (
                "Subject: =?utf-8?q?California_Request_to_Delete_=E2=80=93_J=C3=BCrgen?=",
                "California Request to Delete – Jürgen",
            ),
            (
                "Subject: =?ISO-8859-1?Q?Antwort:_L=F6schung?=",
                "Antwort: Löschung",
            ),
            (
                "Subject: =?iso-8859-1?b?QVc6IEF1c2t1bmZ0IPxiZXIgbWVpbmUgRGF0ZW4=?=",
                "AW: Auskunft über meine Daten",
            ),
            (
                "Subject: California Request\r\n\tto\r\n  Know",
                "California Request to Know",
            ),
            (
                "Subject: =?UTF-8?Q?California_Request?=\r\n =?UTF-8?Q?_to_Know?=",
                "California Request to Know",
            ),
            ("Subject:", ""),
            ("X-Other: no subject at all", ""),
        ];
        for (header, want) in cases {
            let got = parse(&msg(&format!("From: a@example.com\r\n{header}"), "x"));
            assert_eq!(got.subject, *want, "header {header:?}");
        }
    }

    #[test]
    fn reads_headers_of_a_plain_message() {
        let raw = msg(
            "Return-Path: <jane@example.org>\r\n\
             Authentication-Results: mx.example.com;\r\n dkim=pass header.d=example.org\r\n\
             Authentication-Results: other.example; spf=none\r\n\
             From: \"Jane Doe\" <Jane.Doe@Example.ORG>\r\n\
             Reply-To: Jane <jane+replies@example.org>\r\n\
             To: privacy@example.com, \"Team\" <Team@Example.com>\r\n\
             To: second@example.com\r\n\
             Cc: undisclosed-recipients:;\r\n\
             Subject: California Request to Know\r\n\
             Date: Tue, 3 Mar 2026 10:15:00 -0800\r\n\
             Message-ID: <abc.123@mail.example.org>\r\n\
             In-Reply-To: <CCPA-1@example.com>\r\n\
             References: <r1@x> <r2@x>\r\n <r3@x>\r\n\
             \t<CCPA-1@example.com> <r1@x>\r\n\
             Content-Type: text/plain; charset=utf-8",
            "Please tell me what you know.\r\nThanks\r\n",
        );
        let got = parse(&raw);
        assert_eq!(got.message_id.as_deref(), Some("abc.123@mail.example.org"));
        assert_eq!(got.in_reply_to, vec!["CCPA-1@example.com"]);
        assert_eq!(
            got.references,
            vec!["r1@x", "r2@x", "r3@x", "CCPA-1@example.com"]
        );
        assert_eq!(
            got.from,
            Some(Address {
                addr: "jane.doe@example.org".into(),
                name: Some("Jane Doe".into())
            })
        );
        assert_eq!(
            got.reply_to.as_ref().map(|a| a.addr.as_str()),
            Some("jane+replies@example.org")
        );
        let to: Vec<&str> = got.to.iter().map(|a| a.addr.as_str()).collect();
        assert_eq!(
            to,
            vec![
                "privacy@example.com",
                "team@example.com",
                "second@example.com"
            ]
        );
        assert!(got.cc.is_empty());
        assert_eq!(
            got.date.map(|d| d.to_rfc3339()),
            Some("2026-03-03T18:15:00+00:00".into())
        );
        assert_eq!(got.text, "Please tell me what you know.\nThanks");
        assert_eq!(
            got.authentication_results,
            vec![
                "mx.example.com; dkim=pass header.d=example.org",
                "other.example; spf=none"
            ]
        );
        assert_eq!(got.auto, None);
        assert_eq!(got.dsn, None);
        assert!(got.attachments.is_empty());
        assert_eq!(got.size, raw.len());
    }

    #[test]
    fn reads_an_outlook_style_message() {
        let raw = "From: =?iso-8859-1?Q?M=FCller=2C_J=FCrgen?= <J.Mueller@Firma.DE>\r\n\
To: \"privacy@example.com\" <privacy@example.com>\r\n\
Subject: AW: California Request to Delete [CCPA-2026-00042]\r\n\
Thread-Topic: California Request to Delete\r\n\
Thread-Index: AQHZ1234567890abcdef==\r\n\
Date: Wed, 4 Mar 2026 09:01:02 +0000\r\n\
Message-ID: <AM0PR01MB1234ABCD@AM0PR01MB1234.eurprd01.prod.outlook.com>\r\n\
In-Reply-To: <ccpa.abc@example.com>\r\n\
Accept-Language: de-DE, en-US\r\n\
Content-Language: de-DE\r\n\
X-MS-Has-Attach: yes\r\n\
X-MS-TNEF-Correlator:\r\n\
Content-Type: multipart/mixed;\r\n\tboundary=\"_004_AM0PR_\"\r\n\
MIME-Version: 1.0\r\n\
\r\n\
--_004_AM0PR_\r\n\
Content-Type: multipart/alternative;\r\n\tboundary=\"_000_AM0PR_\"\r\n\
\r\n\
--_000_AM0PR_\r\n\
Content-Type: text/plain; charset=\"iso-8859-1\"\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
CONFIRM\r\n\
\r\n\
Mit freundlichen Gr=FC=DFen\r\n\
--_000_AM0PR_\r\n\
Content-Type: text/html; charset=\"iso-8859-1\"\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
<html><body><p>CONFIRM</p><p>Mit freundlichen Gr=FC=DFen</p></body></html>\r\n\
--_000_AM0PR_--\r\n\
\r\n\
--_004_AM0PR_\r\n\
Content-Type: application/pdf; name=\"=?iso-8859-1?Q?Vollmacht_M=FCller.pdf?=\"\r\n\
Content-Description: Vollmacht.pdf\r\n\
Content-Disposition: attachment;\r\n\tfilename=\"=?iso-8859-1?Q?Vollmacht_M=FCller.pdf?=\"; size=12\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
JVBERi0xLjQKJcOk\r\n\
--_004_AM0PR_--\r\n";
        let got = parse(raw.as_bytes());
        assert_eq!(
            got.from,
            Some(Address {
                addr: "j.mueller@firma.de".into(),
                name: Some("Müller, Jürgen".into())
            })
        );
        assert_eq!(
            got.subject,
            "AW: California Request to Delete [CCPA-2026-00042]"
        );
        assert_eq!(got.in_reply_to, vec!["ccpa.abc@example.com"]);
        assert_eq!(got.text, "CONFIRM\n\nMit freundlichen Grüßen");
        assert_eq!(got.attachments.len(), 1);
        let pdf = &got.attachments[0];
        assert_eq!(pdf.filename, "Vollmacht Müller.pdf");
        assert_eq!(pdf.declared_type, "application/pdf");
        assert_eq!(pdf.bytes, b"%PDF-1.4\n%\xC3\xA4");
        assert_eq!(attachment::sniff_type(&pdf.bytes), "application/pdf");
        assert_eq!(got.auto, None);
    }

    #[test]
    fn converts_html_only_messages() {
        let raw = msg(
            "From: a@example.com\r\nSubject: html\r\nContent-Type: text/html; charset=utf-8",
            "<html><head><style>p{color:red}</style></head><body>\
             <p>Please <b>delete</b> my data.</p><p>Grüße</p></body></html>",
        );
        let got = parse(&raw);
        assert!(
            got.text.contains("Please delete my data."),
            "{:?}",
            got.text
        );
        assert!(got.text.contains("Grüße"));
        assert!(!got.text.contains('<'));
        assert!(!got.text.contains("color"));
    }

    #[test]
    fn prefers_plain_parts_and_joins_them() {
        let raw = "From: a@example.com\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\
\r\n\
--b\r\n\
Content-Type: text/plain\r\n\
\r\n\
first\r\n\
--b\r\n\
Content-Type: image/png; name=x.png\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
iVBORw0KGgo=\r\n\
--b\r\n\
Content-Type: text/plain\r\n\
\r\n\
second\r\n\
--b--\r\n";
        let got = parse(raw.as_bytes());
        assert_eq!(got.text, "first\n\nsecond");
        assert_eq!(got.attachments.len(), 1);
        assert_eq!(got.attachments[0].filename, "x.png");
        assert_eq!(got.attachments[0].bytes, b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn survives_broken_input() {
        let inputs: &[&[u8]] = &[
            b"",
            b"\r\n\r\n",
            b"no headers at all, just words",
            b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nunterminated",
            b"From: a@example.com\r\nContent-Type: multipart/mixed\r\n\r\nno boundary parameter",
            b"From: a@example.com\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!",
            b"Subject: =?utf-8?B?invalid===?=\r\n\r\n",
            b"From: <\r\nTo: ,,,@,\r\nDate: 99 Foo 99999 99:99:99 +9999\r\nMessage-ID: <>\r\n\r\nx",
            b"\xff\xfe\x00\x01\x02\x03",
            b"From: a@example.com\r\nContent-Type: message/rfc822\r\n\r\n",
            b"From a@b Mon Jan  1 00:00:00 2024\n",
        ];
        for raw in inputs {
            let got = parse(raw);
            assert_eq!(got.size, raw.len());
        }
        assert_eq!(parse(b""), Inbound::default());

        let got = parse(inputs[3]);
        assert_eq!(got.from.map(|a| a.addr).as_deref(), Some("a@example.com"));
        assert!(got.text.contains("unterminated"));

        let got = parse(inputs[7]);
        assert_eq!(got.message_id, None);
        assert_eq!(got.date, None);
    }

    #[test]
    fn tolerates_missing_headers() {
        let got = parse(b"Subject: only a subject\r\n\r\nbody\r\n");
        assert_eq!(got.subject, "only a subject");
        assert_eq!(got.from, None);
        assert_eq!(got.message_id, None);
        assert_eq!(got.date, None);
        assert!(got.to.is_empty() && got.in_reply_to.is_empty() && got.references.is_empty());
        assert_eq!(got.text, "body");
    }

    #[test]
    fn keeps_many_references_in_order() {
        let ids: Vec<String> = (0..200).map(|i| format!("id{i}@host.example")).collect();
        let folded = ids
            .iter()
            .map(|id| format!("<{id}>"))
            .collect::<Vec<_>>()
            .join("\r\n ");
        let got = parse(&msg(
            &format!("From: a@example.com\r\nReferences: {folded}"),
            "x",
        ));
        assert_eq!(got.references, ids);
    }

    #[test]
    fn strips_mbox_from_lines() {
        let raw = b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\nFrom: a@example.com\nSubject: s\n\nbody\n";
        let got = parse(raw);
        assert_eq!(got.from.map(|a| a.addr).as_deref(), Some("a@example.com"));
        assert_eq!(got.subject, "s");
        assert_eq!(got.size, raw.len());
        assert_eq!(strip_mbox_from_line(b"From : a@b\n\n"), b"From : a@b\n\n");
        assert_eq!(strip_mbox_from_line(b"From: a@b\n\n"), b"From: a@b\n\n");
    }

    #[test]
    fn detects_auto_submitted_variants() {
        let cases: &[(&str, Option<AutoKind>)] = &[
            ("Auto-Submitted: no", None),
            ("Auto-Submitted: No (a human)", None),
            (
                "Auto-Submitted: auto-replied",
                Some(AutoKind::AutoSubmitted),
            ),
            (
                "Auto-Submitted: auto-generated",
                Some(AutoKind::AutoSubmitted),
            ),
            (
                "Auto-Submitted: auto-generated (failure)",
                Some(AutoKind::AutoSubmitted),
            ),
            (
                "auto-submitted: AUTO-NOTIFIED",
                Some(AutoKind::AutoSubmitted),
            ),
            ("Precedence: bulk", Some(AutoKind::Precedence)),
            ("Precedence: Junk", Some(AutoKind::Precedence)),
            ("Precedence: list", Some(AutoKind::Precedence)),
            ("Precedence: auto_reply", Some(AutoKind::Precedence)),
            ("Precedence: first-class", None),
            ("List-Id: <news.example.com>", Some(AutoKind::MailingList)),
            (
                "List-Unsubscribe: <mailto:u@example.com>",
                Some(AutoKind::MailingList),
            ),
            ("X-Autoreply: yes", Some(AutoKind::AutoReplyHeader)),
            ("X-Autorespond: Vacation", Some(AutoKind::AutoReplyHeader)),
            ("X-AutoRespond: 1", Some(AutoKind::AutoReplyHeader)),
            ("X-Auto-Reply: yes", Some(AutoKind::AutoReplyHeader)),
            ("X-Autogenerated: Reply", Some(AutoKind::AutoReplyHeader)),
            ("X-Autogenerated: Mirror", None),
            // A request from a ticket system or agent service: still answered.
            ("X-Auto-Response-Suppress: All", None),
            ("X-Auto-Response-Suppress: None", None),
            ("Return-Path: <>", Some(AutoKind::EmptyReturnPath)),
            ("Return-Path: < >", Some(AutoKind::EmptyReturnPath)),
            ("Return-Path: <a@example.org>", None),
        ];
        for (header, want) in cases {
            let got = parse(&msg(
                &format!("From: Jane <jane@example.org>\r\n{header}\r\nSubject: hi"),
                "body",
            ));
            assert_eq!(got.auto, *want, "header {header:?}");
        }
    }
}
