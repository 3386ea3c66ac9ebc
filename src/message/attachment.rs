//! Attachments: which MIME parts count, safe file names, and content sniffing.
//!
//! The names a sender chooses are hostile input: they end up in notifications,
//! in the CLI's export and in the team's download folder. [`sanitize_filename`]
//! makes them inert; the store never uses them as paths anyway (SPEC §7).

use mail_parser::{Encoding, MessagePart, MimeHeaders, PartType};

use super::Attachment;

/// Longest file name kept, in bytes (UTF-8). Most file systems allow 255;
/// the margin leaves room for a suffix the team's tools may add.
const MAX_FILENAME_BYTES: usize = 150;

/// Longest extension (with its dot) that is kept when a long name is cut.
const MAX_EXTENSION_BYTES: usize = 16;

/// Name given to an attached message that carries no name of its own.
const FORWARDED_MESSAGE_NAME: &str = "forwarded-message.eml";

/// Collects the attachments of a parsed message (top level only: an attached
/// message is one attachment, its own attachments stay inside it).
///
/// A part counts when it is an attached message, a non-inline binary part, an
/// inline binary part that has a file name or no Content-ID (a picture that is
/// the whole body), or a text part that is marked `attachment` or has a name.
/// Inline pictures referenced from the HTML by Content-ID (logos, signatures)
/// are left out. `raw` is the buffer the message was parsed from; it gives the
/// original bytes of attached messages and text attachments (mail-parser hands
/// text parts over converted to UTF-8, but a declaration must be kept as sent).
pub(crate) fn extract(msg: &mail_parser::Message<'_>, raw: &[u8]) -> Vec<Attachment> {
    let mut out = Vec::new();
    for &id in &msg.attachments {
        let Some(part) = msg.parts.get(id as usize) else {
            continue;
        };
        let name = part.attachment_name().filter(|n| !n.trim().is_empty());
        let marked_attachment = part
            .content_disposition()
            .is_some_and(|cd| cd.is_attachment());
        let keep = match &part.body {
            PartType::Message(_) | PartType::Binary(_) => true,
            PartType::InlineBinary(_) => {
                name.is_some() || marked_attachment || part.content_id().is_none()
            }
            PartType::Text(_) | PartType::Html(_) => name.is_some() || marked_attachment,
            PartType::Multipart(_) => false,
        };
        if !keep {
            continue;
        }
        let declared_type = declared_type(part);
        let bytes = part_bytes(part, raw);
        let is_message = matches!(declared_type.as_str(), "message/rfc822" | "message/global")
            || matches!(part.body, PartType::Message(_));
        let fallback_name = if name.is_none() && is_message {
            Some(FORWARDED_MESSAGE_NAME)
        } else {
            name
        };
        let filename = sanitize_filename_nth(fallback_name, &declared_type, out.len() + 1);
        out.push(Attachment {
            filename,
            declared_type,
            bytes,
            stored: None,
        });
    }
    out
}

/// The declared content type as lower-case `type/subtype`, with the MIME
/// defaults when the header is missing or has no subtype.
fn declared_type(part: &MessagePart<'_>) -> String {
    if let Some(ct) = part.content_type() {
        let ctype = ct.ctype().trim().to_ascii_lowercase();
        if let Some(sub) = ct.subtype() {
            let sub = sub.trim().to_ascii_lowercase();
            if !ctype.is_empty() && !sub.is_empty() {
                return format!("{ctype}/{sub}");
            }
        }
    }
    match &part.body {
        PartType::Message(_) => "message/rfc822",
        PartType::Text(_) => "text/plain",
        PartType::Html(_) => "text/html",
        _ => "application/octet-stream",
    }
    .to_string()
}

/// The bytes of a part as sent (transfer encoding removed, charset untouched).
fn part_bytes(part: &MessagePart<'_>, raw: &[u8]) -> Vec<u8> {
    let start = part.offset_body as usize;
    let end = part.offset_end as usize;
    let body = raw.get(start..end).filter(|b| !b.is_empty());
    match &part.body {
        PartType::Message(nested) => match (part.encoding, body) {
            // Unencoded: the attached message is a slice of the outer one.
            (Encoding::None, Some(body)) => body.to_vec(),
            // Encoded: mail-parser decoded it into a buffer of its own.
            _ => nested.raw_message.to_vec(),
        },
        PartType::Text(_) | PartType::Html(_) => body
            .and_then(|body| match part.encoding {
                Encoding::Base64 => mail_parser::decoders::base64::base64_decode(body),
                Encoding::QuotedPrintable => {
                    mail_parser::decoders::quoted_printable::quoted_printable_decode(body)
                }
                Encoding::None => Some(body.to_vec()),
            })
            .unwrap_or_else(|| part.contents().to_vec()),
        _ => part.contents().to_vec(),
    }
}

/// Makes a sender-chosen file name safe to show and to save, falling back to
/// `attachment-1.<ext>` (extension from `declared_type`) when nothing usable is
/// left. See [`sanitize_filename_nth`].
pub fn sanitize_filename(raw: Option<&str>, declared_type: &str) -> String {
    sanitize_filename_nth(raw, declared_type, 1)
}

/// Makes a sender-chosen file name safe: keeps only the last path component
/// (`/` and `\`), drops control and bidirectional-override characters and the
/// characters Windows forbids, collapses `..`, trims leading dots and trailing
/// dots and spaces, defuses reserved Windows device names (`CON`, `NUL`, …)
/// and cuts the name to 150 bytes on a character boundary, keeping the
/// extension. When nothing is left it returns `attachment-N.<ext>`, with the
/// extension taken from `declared_type`.
///
/// RFC 2047 and RFC 2231 encodings are already decoded by mail-parser.
pub fn sanitize_filename_nth(raw: Option<&str>, declared_type: &str, n: usize) -> String {
    let cleaned = raw.map(clean_name).unwrap_or_default();
    if cleaned.is_empty() {
        format!("attachment-{n}.{}", extension_for(declared_type))
    } else {
        cleaned
    }
}

fn clean_name(raw: &str) -> String {
    // Last path component, whichever separator the sender's system used.
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut name: String = base
        .chars()
        .filter(|c| !c.is_control() && !is_invisible_format(*c))
        .map(|c| match c {
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c if c.is_whitespace() => ' ',
            c => c,
        })
        .collect();
    while name.contains("..") {
        name = name.replace("..", ".");
    }
    let mut name = trim_name(&name).to_string();
    if is_reserved_windows_name(&name) {
        name.insert(0, '_');
    }
    truncate_keeping_extension(&name)
}

/// Leading dots (hidden files, `..`) and spaces; trailing dots and spaces
/// (Windows drops them, which changes the extension).
fn trim_name(name: &str) -> &str {
    name.trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' '])
}

/// Zero-width and bidirectional formatting characters: they let a name such
/// as `invoice\u{202E}fdp.exe` display as `invoiceexe.pdf`.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

fn is_reserved_windows_name(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or_default().trim_end();
    let upper = stem.to_ascii_uppercase();
    match upper.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" => true,
        _ => {
            let prefix = upper.get(..3).unwrap_or_default();
            let digit = upper.get(3..).unwrap_or_default();
            (prefix == "COM" || prefix == "LPT")
                && digit.len() == 1
                && digit.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

fn truncate_keeping_extension(name: &str) -> String {
    if name.len() <= MAX_FILENAME_BYTES {
        return name.to_string();
    }
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= MAX_EXTENSION_BYTES => name.split_at(dot),
        _ => (name, ""),
    };
    let stem = cut_at_char_boundary(stem, MAX_FILENAME_BYTES - ext.len());
    let stem = stem.trim_end_matches(['.', ' ']);
    format!("{stem}{ext}")
}

fn cut_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// File extension for a declared content type, for names we have to invent.
pub(crate) fn extension_for(declared_type: &str) -> &'static str {
    match declared_type.trim().to_ascii_lowercase().as_str() {
        "application/pdf" => "pdf",
        "image/png" => "png",
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/gif" => "gif",
        "image/tiff" => "tif",
        "image/heic" => "heic",
        "image/webp" => "webp",
        "image/bmp" => "bmp",
        "text/plain" | "message/delivery-status" | "text/rfc822-headers" => "txt",
        "text/html" => "html",
        "text/csv" => "csv",
        "text/calendar" => "ics",
        "application/zip" | "application/x-zip-compressed" => "zip",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "application/vnd.oasis.opendocument.text" => "odt",
        "application/rtf" | "text/rtf" => "rtf",
        "message/rfc822" | "message/global" => "eml",
        "application/pkcs7-signature" | "application/x-pkcs7-signature" => "p7s",
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => "p7m",
        "application/pgp-signature" | "application/pgp-encrypted" | "application/pgp-keys" => "asc",
        "application/ms-tnef" => "dat",
        _ => "bin",
    }
}

/// The content type the bytes really are, by magic numbers. Office Open XML
/// and OpenDocument files are zip archives and sniff as `application/zip`;
/// the old binary Office formats sniff as `application/msword` (OLE).
pub fn sniff_type(bytes: &[u8]) -> &'static str {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xFF\xD8\xFF", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"PK\x03\x04", "application/zip"),
        (b"PK\x05\x06", "application/zip"),
        (b"PK\x07\x08", "application/zip"),
        (b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1", "application/msword"),
        (b"II*\x00", "image/tiff"),
        (b"MM\x00*", "image/tiff"),
    ];
    if bytes.is_empty() {
        return "application/octet-stream";
    }
    // Readers accept the PDF header anywhere in the first kilobyte.
    let head = &bytes[..bytes.len().min(1024)];
    if head.windows(5).any(|w| w == b"%PDF-") {
        return "application/pdf";
    }
    if let Some((_, ty)) = MAGIC.iter().find(|(magic, _)| bytes.starts_with(magic)) {
        return ty;
    }
    match std::str::from_utf8(bytes) {
        Ok(text)
            if text
                .chars()
                .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0c' | '\x1b')) =>
        {
            "text/plain"
        }
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitises_names() {
        let long_stem = "a".repeat(400);
        let long_name = format!("{long_stem}.pdf");
        let long_unicode = format!("{}.docx", "ü".repeat(200));
        let cases: &[(Option<&str>, &str, &str)] = &[
            (Some("../../etc/passwd"), "text/plain", "passwd"),
            (Some("C:\\evil\\a.pdf"), "application/pdf", "a.pdf"),
            (
                Some("/abs/path/report.pdf"),
                "application/pdf",
                "report.pdf",
            ),
            (Some(".."), "application/pdf", "attachment-1.pdf"),
            (Some("."), "image/png", "attachment-1.png"),
            (Some("..."), "image/png", "attachment-1.png"),
            (Some(""), "application/pdf", "attachment-1.pdf"),
            (Some("   "), "application/pdf", "attachment-1.pdf"),
            (None, "application/pdf", "attachment-1.pdf"),
            (None, "application/x-unknown", "attachment-1.bin"),
            (Some("dir/"), "image/jpeg", "attachment-1.jpg"),
            (Some("a\u{0}b\r\n\tc.pdf"), "application/pdf", "abc.pdf"),
            (Some("\u{7}\u{1b}"), "text/plain", "attachment-1.txt"),
            (Some(".hidden"), "text/plain", "hidden"),
            (Some("name. . ."), "text/plain", "name"),
            (Some("trailing.pdf.  "), "application/pdf", "trailing.pdf"),
            (Some("CON"), "text/plain", "_CON"),
            (Some("nul.txt"), "text/plain", "_nul.txt"),
            (Some("com1.pdf"), "application/pdf", "_com1.pdf"),
            (Some("console.txt"), "text/plain", "console.txt"),
            (Some("a..b.pdf"), "application/pdf", "a.b.pdf"),
            (Some("inv\u{202E}fdp.exe"), "application/pdf", "invfdp.exe"),
            (
                Some("what?<x>:|*.pdf"),
                "application/pdf",
                "what__x____.pdf",
            ),
            (
                Some("Erklärung Vollmacht – 日本語.pdf"),
                "application/pdf",
                "Erklärung Vollmacht – 日本語.pdf",
            ),
            (
                Some("Заявление.docx"),
                "application/msword",
                "Заявление.docx",
            ),
        ];
        for (raw, ty, want) in cases {
            assert_eq!(sanitize_filename(*raw, ty), *want, "input {raw:?}");
        }

        let cut = sanitize_filename(Some(&long_name), "application/pdf");
        assert_eq!(cut.len(), MAX_FILENAME_BYTES);
        assert!(cut.ends_with(".pdf"));

        let cut = sanitize_filename(Some(&long_unicode), "application/pdf");
        assert!(cut.len() <= MAX_FILENAME_BYTES);
        assert!(cut.ends_with(".docx"));
        assert!(cut.starts_with('ü'));

        let no_ext = "x".repeat(300);
        assert_eq!(
            sanitize_filename(Some(&no_ext), "text/plain").len(),
            MAX_FILENAME_BYTES
        );
        assert_eq!(
            sanitize_filename_nth(None, "application/pdf", 3),
            "attachment-3.pdf"
        );
    }

    #[test]
    fn sanitised_names_are_stable() {
        for raw in [
            "../../etc/passwd",
            "CON",
            "a..b.pdf",
            " .x. ",
            "C:\\a\\..\\b",
        ] {
            let once = sanitize_filename(Some(raw), "text/plain");
            assert_eq!(sanitize_filename(Some(&once), "text/plain"), once);
        }
    }

    #[test]
    fn sniffs_types() {
        let cases: &[(&[u8], &str)] = &[
            (b"%PDF-1.7\n...", "application/pdf"),
            (b"\r\n%PDF-1.4", "application/pdf"),
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "image/png"),
            (b"\xFF\xD8\xFF\xE0\0\x10JFIF", "image/jpeg"),
            (b"GIF89a\x01\0", "image/gif"),
            (b"PK\x03\x04\x14\0\x06\0", "application/zip"),
            (
                b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1\0\0",
                "application/msword",
            ),
            (b"II*\x00\x08\0\0\0", "image/tiff"),
            (b"MM\x00*\0\0\0\x08", "image/tiff"),
            ("Hello, Grüße\r\n".as_bytes(), "text/plain"),
            (b"\x00\x01\x02binary", "application/octet-stream"),
            (b"\xC3\x28 not utf-8", "application/octet-stream"),
            (b"", "application/octet-stream"),
        ];
        for (bytes, want) in cases {
            assert_eq!(sniff_type(bytes), *want, "bytes {bytes:?}");
        }
    }
}
