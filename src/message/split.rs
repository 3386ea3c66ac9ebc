//! Streaming split of a raw message into a small skeleton plus the decoded
//! contents of its large non-text leaf parts.
//!
//! A 54 MB message must not be held in memory whole: intake fetches it from
//! IMAP in chunks of about 1 MiB and feeds them to a [`Splitter`]. The
//! splitter copies the message byte for byte into the skeleton, except the
//! body of every large non-text leaf part: that body is transfer-decoded as it
//! streams and written to a [`PartOut`] (which hashes it and writes it to a
//! file), and the skeleton gets a short marker body `{marker}{index}` in its
//! place. mail-parser then parses the skeleton; a part whose decoded body is a
//! marker ([`marker_index`]) stands for the spooled file.
//!
//! The MIME reading follows what mail-parser does with the whole message, so
//! the skeleton parses into the same part tree and a spooled file holds the
//! bytes mail-parser would have decoded for that part: the same rule for the
//! end of a header block, the last `Content-Type` and
//! `Content-Transfer-Encoding` header winning, the line ending in front of a
//! boundary delimiter belonging to the delimiter, and the same base64 and
//! quoted-printable decoders on well-formed input. Where mail-parser would
//! give up on a damaged encoding and keep the raw text, the decoders here are
//! lenient instead (characters outside the base64 alphabet are skipped, a
//! broken quoted-printable escape is kept as text).
//!
//! Spooled: leaf parts whose type is not `multipart/*`, `message/*` or
//! `text/*` (a part without a Content-Type is text/plain, or message/rfc822
//! in a digest: neither), with an encoded body over `min_part` bytes. Text
//! stays in the skeleton for the parser, and an attached message is copied
//! as it is without looking into it, however large either is.
//!
//! The marker body is `{marker}{index}` and a line ending (in base64 for a
//! base64 part). A part inside a multipart that ends with the input (a
//! truncated message: no closing delimiter) gets its marker plain, because
//! mail-parser reads such a part as raw text; its spooled content is the
//! complete base64 quanta (or quoted-printable, or raw bytes) that arrived.
//! Where the nesting is broken (an inner multipart ended by an outer
//! boundary), mail-parser does not see the marker at all: a caller must
//! expect spooled parts no marker stands for.
//!
//! Memory stays bounded whatever the message size, apart from the skeleton
//! itself: a line is held back only while it may still be a boundary
//! delimiter (at most [`MAX_PENDING`] bytes), a candidate body is held only up
//! to `min_part` bytes, and decoders keep a few bytes of state plus an output
//! block.

use std::io;

use base64::Engine as _;

/// Receives the decoded bytes of spooled parts.
pub(crate) trait PartOut {
    /// A spooled part starts; `index` counts 0, 1, 2… in order of appearance.
    fn begin(&mut self, index: usize) -> std::io::Result<()>;
    fn write(&mut self, decoded: &[u8]) -> std::io::Result<()>;
    /// The part is complete (its closing boundary, or the end of the message, was reached).
    fn end(&mut self) -> std::io::Result<()>;
}

/// Longest start of a line held back while it may still be a boundary
/// delimiter line. A delimiter is `--`, a boundary of at most 70 characters
/// (RFC 2046), maybe `--` and some padding, so a longer line is body content;
/// the cap keeps a 40 MB single-line base64 body from being buffered.
const MAX_PENDING: usize = 64 * 1024;

/// Longest boundary that is tracked. Longer ones could never match within
/// [`MAX_PENDING`]; such a multipart is copied as it is (nothing in it is
/// spooled), which is safe.
const MAX_BOUNDARY: usize = MAX_PENDING / 2;

/// Deepest nesting of multiparts that is tracked: which enclosing boundaries a
/// held-back line may still be is a bit set in a `u64`. A multipart nested
/// deeper is copied as it is, which is safe.
const MAX_DEPTH: usize = 64;

/// Decoded bytes collected before they are handed to the sink, so the sink
/// gets few large writes rather than many tiny ones.
const OUT_BLOCK: usize = 64 * 1024;

/// Longest run of trailing whitespace a quoted-printable decoder holds back
/// (it is dropped if the line ends there). A longer run is written out: only
/// absurd input gets a different result from mail-parser.
const MAX_QP_WS: usize = 64 * 1024;

/// The line ending that ended a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eol {
    None,
    Lf,
    CrLf,
}

impl Eol {
    fn bytes(self) -> &'static [u8] {
        match self {
            Eol::None => b"",
            Eol::Lf => b"\n",
            Eol::CrLf => b"\r\n",
        }
    }
}

/// A part's `Content-Transfer-Encoding`, as far as decoding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Base64,
    QuotedPrintable,
    /// 7bit, 8bit, binary, missing or unknown: the body is the content.
    Identity,
}

/// What is being read.
enum Mode {
    /// A header block (of the message or of a part), copied to the skeleton.
    Headers(HeaderBlock),
    /// A stretch copied as it is: preamble, epilogue, text and message parts,
    /// multiparts that cannot be split, and headers without a body.
    Verbatim,
    /// A leaf body that is spooled once it is over `min_part` bytes.
    Candidate(Candidate),
    /// A leaf body being spooled.
    Spool(Spool),
}

/// Where the header block being read started, and where its current line starts.
struct HeaderBlock {
    /// Offset of the block in the skeleton.
    start: usize,
    /// Offset of the current line's content in the skeleton.
    line_start: usize,
    /// The previous line was a header field (or its continuation), so a line
    /// starting with whitespace continues it rather than ending the block.
    in_field: bool,
}

struct Candidate {
    encoding: Encoding,
    /// The header block ended with CRLF: the marker line does too.
    crlf: bool,
    /// The body so far, at most `min_part + 1` bytes.
    held: Vec<u8>,
}

struct Spool {
    decoder: Decoder,
    crlf: bool,
    index: usize,
}

/// Splits a raw message, fed in chunks, into a skeleton and spooled parts.
/// See the module documentation.
///
/// After an error from the [`PartOut`] the splitter must be dropped: the
/// state of the part being written is unknown.
pub(crate) struct Splitter {
    marker: String,
    min_part: usize,
    skeleton: Vec<u8>,
    /// Boundaries of the enclosing multiparts, outermost first.
    frames: Vec<Vec<u8>>,
    mode: Mode,
    /// The current line's bytes are held in `pending` because it may still be
    /// a delimiter line of one of the `alive` frames.
    at_line_start: bool,
    pending: Vec<u8>,
    /// Bit `i`: the held line may still be a delimiter of `frames[i]`.
    alive: u64,
    /// The line ending before the current line, held back while the line may
    /// be a delimiter: then it belongs to the delimiter, not to the body.
    held_eol: Eol,
    /// The last byte seen was a CR; whether it starts a CRLF is not known yet.
    held_cr: bool,
    spooled: usize,
}

impl Splitter {
    /// `marker`: an ASCII alphanumeric string chosen by the caller (it includes a random nonce).
    /// `min_part`: a leaf body whose encoded size is over this many bytes is spooled.
    pub(crate) fn new(marker: &str, min_part: usize) -> Splitter {
        Splitter {
            marker: marker.to_owned(),
            min_part,
            skeleton: Vec::new(),
            frames: Vec::new(),
            mode: Mode::Headers(HeaderBlock {
                start: 0,
                line_start: 0,
                in_field: false,
            }),
            // Outside any multipart no line can be a delimiter.
            at_line_start: false,
            pending: Vec::new(),
            alive: 0,
            held_eol: Eol::None,
            held_cr: false,
            spooled: 0,
        }
    }

    /// The next bytes of the raw message, any chunking (a chunk may end mid-line, mid-CRLF, mid-base64 quantum, mid-boundary).
    pub(crate) fn feed(&mut self, chunk: &[u8], out: &mut dyn PartOut) -> std::io::Result<()> {
        let mut rest = chunk;
        while let Some((&byte, tail)) = rest.split_first() {
            if self.held_cr {
                self.held_cr = false;
                if byte == b'\n' {
                    rest = tail;
                    self.end_line(Eol::CrLf, out)?;
                } else {
                    // A CR not followed by LF is ordinary content; `byte` is
                    // looked at again in the next round.
                    self.line_byte(b'\r', out)?;
                }
                continue;
            }
            if self.at_line_start {
                rest = tail;
                match byte {
                    b'\n' => self.end_line(Eol::Lf, out)?,
                    b'\r' => self.held_cr = true,
                    _ => self.pending_byte(byte, out)?,
                }
                continue;
            }
            // Inside a line that is not a delimiter: copy up to its end at once.
            let run = rest
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
                .unwrap_or(rest.len());
            if run > 0 {
                let (content, tail) = rest.split_at(run);
                self.emit(content, out)?;
                rest = tail;
            } else {
                rest = tail;
                if byte == b'\n' {
                    self.end_line(Eol::Lf, out)?;
                } else {
                    self.held_cr = true;
                }
            }
        }
        Ok(())
    }

    /// End of input: ends an open spooled part, returns the skeleton.
    pub(crate) fn finish(mut self, out: &mut dyn PartOut) -> std::io::Result<Vec<u8>> {
        if self.held_cr {
            self.held_cr = false;
            self.line_byte(b'\r', out)?;
        }
        // A delimiter on the last line needs no line ending after it.
        if self.at_line_start
            && let Some((frame, close)) = self.delimiter()
        {
            self.on_delimiter(frame, close, Eol::None, out)?;
        }
        // Whatever is still held back was not followed by a delimiter: it is
        // content of the current body.
        if self.at_line_start {
            self.flush_pending(out)?;
        }
        self.end_body(false, out)?;
        Ok(self.skeleton)
    }

    /// How many parts were spooled so far.
    pub(crate) fn spooled(&self) -> usize {
        self.spooled
    }

    /// Bytes held in internal buffers other than the skeleton, for the tests
    /// that check memory stays bounded.
    #[cfg(test)]
    fn buffered(&self) -> usize {
        let mode = match &self.mode {
            Mode::Candidate(c) => c.held.capacity(),
            Mode::Spool(s) => s.decoder.buffered(),
            Mode::Headers(_) | Mode::Verbatim => 0,
        };
        self.pending.capacity() + mode
    }

    /// One byte of content of the current line (`\r` not ending a line).
    fn line_byte(&mut self, byte: u8, out: &mut dyn PartOut) -> io::Result<()> {
        if self.at_line_start {
            self.pending_byte(byte, out)
        } else {
            self.emit(&[byte], out)
        }
    }

    /// A byte of a line that may be a delimiter: held back until it is known
    /// not to be one.
    fn pending_byte(&mut self, byte: u8, out: &mut dyn PartOut) -> io::Result<()> {
        let pos = self.pending.len();
        let mut alive = self.alive;
        let mut bits = alive;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let fits = self
                .frames
                .get(i)
                .is_some_and(|b| delimiter_byte_fits(b, &self.pending, pos, byte));
            if !fits {
                alive &= !(1u64 << i);
            }
        }
        self.alive = alive;
        self.pending.push(byte);
        if self.alive == 0 || self.pending.len() > MAX_PENDING {
            self.flush_pending(out)?;
        }
        Ok(())
    }

    /// The held line is not a delimiter: the held line ending and the held
    /// bytes are content.
    fn flush_pending(&mut self, out: &mut dyn PartOut) -> io::Result<()> {
        self.at_line_start = false;
        let eol = std::mem::replace(&mut self.held_eol, Eol::None);
        self.emit(eol.bytes(), out)?;
        let pending = std::mem::take(&mut self.pending);
        let result = self.emit(&pending, out);
        self.pending = pending;
        self.pending.clear();
        result
    }

    /// The held line, complete, as a delimiter: the innermost frame it
    /// delimits and whether it is a close delimiter.
    fn delimiter(&self) -> Option<(usize, bool)> {
        let line = &self.pending;
        let mut bits = self.alive;
        while bits != 0 {
            let i = 63 - bits.leading_zeros() as usize;
            bits &= !(1u64 << i);
            let Some(boundary) = self.frames.get(i) else {
                continue;
            };
            let full = boundary.len() + 2;
            let Some(after) = line.get(full..) else {
                continue;
            };
            // `alive` says the line fits `--boundary(--)?[ \t]*` so far; only
            // a lone `-` after the boundary is incomplete.
            if after != b"-" {
                return Some((i, after.starts_with(b"--")));
            }
        }
        None
    }

    /// A line ended with `eol` (its content already emitted or held).
    fn end_line(&mut self, eol: Eol, out: &mut dyn PartOut) -> io::Result<()> {
        if self.at_line_start {
            if let Some((frame, close)) = self.delimiter() {
                return self.on_delimiter(frame, close, eol, out);
            }
            self.flush_pending(out)?;
        }
        if let Mode::Headers(block) = &mut self.mode {
            let line = self.skeleton.get(block.line_start..).unwrap_or_default();
            let continues = block.in_field && matches!(line.first(), Some(b' ' | b'\t'));
            // mail-parser ends a header block at a blank (or whitespace-only)
            // line where a new field would start.
            let ends = !continues && line.iter().all(u8::is_ascii_whitespace);
            if !continues {
                block.in_field = field_colon(line).is_some();
            }
            let start = block.start;
            self.skeleton.extend_from_slice(eol.bytes());
            if ends {
                self.mode = self.body_mode(start, eol == Eol::CrLf);
            }
        } else {
            self.held_eol = eol;
        }
        self.start_line(out)
    }

    /// A new line starts: hold it back while it may be a delimiter.
    fn start_line(&mut self, out: &mut dyn PartOut) -> io::Result<()> {
        self.at_line_start = true;
        self.alive = match self.frames.len() {
            0 => 0,
            n if n >= 64 => u64::MAX,
            n => (1u64 << n) - 1,
        };
        if let Mode::Headers(block) = &mut self.mode {
            block.line_start = self.skeleton.len();
        }
        if self.alive == 0 {
            // Outside any multipart: nothing to wait for.
            self.flush_pending(out)?;
        }
        Ok(())
    }

    /// The held line is a delimiter of `frames[frame]`: the current body ends,
    /// the delimiter (with the line ending before it) is copied, and a part's
    /// headers (or, after a close delimiter, the epilogue) follow. A
    /// delimiter of an outer multipart also ends the inner ones.
    fn on_delimiter(
        &mut self,
        frame: usize,
        close: bool,
        eol: Eol,
        out: &mut dyn PartOut,
    ) -> io::Result<()> {
        self.end_body(true, out)?;
        let held = std::mem::replace(&mut self.held_eol, Eol::None);
        self.skeleton.extend_from_slice(held.bytes());
        self.skeleton.extend_from_slice(&self.pending);
        self.skeleton.extend_from_slice(eol.bytes());
        self.pending.clear();
        self.frames.truncate(frame + 1);
        if close {
            self.frames.pop();
            self.mode = Mode::Verbatim;
        } else {
            let start = self.skeleton.len();
            self.mode = Mode::Headers(HeaderBlock {
                start,
                line_start: start,
                in_field: false,
            });
        }
        self.start_line(out)
    }

    /// The current body ends (at a delimiter, or at the end of the input):
    /// a candidate too small to spool is copied, a spooled part is closed and
    /// its marker written.
    fn end_body(&mut self, at_delimiter: bool, out: &mut dyn PartOut) -> io::Result<()> {
        match std::mem::replace(&mut self.mode, Mode::Verbatim) {
            Mode::Candidate(candidate) => self.skeleton.extend_from_slice(&candidate.held),
            Mode::Spool(mut spool) => {
                spool.decoder.finish(at_delimiter, out)?;
                out.end()?;
                let text = format!("{}{}", self.marker, spool.index);
                // A part inside a multipart that ends with the input (no
                // closing delimiter) is read by mail-parser as raw text, so
                // its marker is written plain; otherwise mail-parser decodes
                // the body and a base64 part needs its marker encoded.
                let decoded_by_parser = at_delimiter || self.frames.is_empty();
                if spool.decoder.encoding() == Encoding::Base64 && decoded_by_parser {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                    self.skeleton.extend_from_slice(encoded.as_bytes());
                } else {
                    self.skeleton.extend_from_slice(text.as_bytes());
                }
                let eol = if spool.crlf { Eol::CrLf } else { Eol::Lf };
                self.skeleton.extend_from_slice(eol.bytes());
            }
            Mode::Headers(_) | Mode::Verbatim => {}
        }
        Ok(())
    }

    /// How the body after the header block at `start` is read.
    fn body_mode(&mut self, start: usize, crlf: bool) -> Mode {
        let block = self.skeleton.get(start..).unwrap_or_default();
        let (content_type, transfer_encoding) = read_headers(block);
        // No Content-Type: text/plain, or message/rfc822 inside a
        // multipart/digest. Neither is spooled nor looked into.
        let Some(content_type) = content_type.and_then(|v| parse_content_type(&v)) else {
            return Mode::Verbatim;
        };
        match content_type.main.as_slice() {
            b"multipart" => {
                if let Some(boundary) = content_type.boundary
                    && !boundary.is_empty()
                    && boundary.len() <= MAX_BOUNDARY
                    && self.frames.len() < MAX_DEPTH
                {
                    self.frames.push(boundary);
                }
                // The preamble is copied; without a usable boundary the
                // whole body is.
                Mode::Verbatim
            }
            // Text stays in the skeleton for the parser; an attached
            // message is copied as it is, never looked into.
            b"text" | b"message" => Mode::Verbatim,
            _ => Mode::Candidate(Candidate {
                encoding: transfer_encoding
                    .as_deref()
                    .map_or(Encoding::Identity, encoding_of),
                crlf,
                held: Vec::new(),
            }),
        }
    }

    /// Body content (or copied bytes) of the current mode.
    fn emit(&mut self, bytes: &[u8], out: &mut dyn PartOut) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let rest = match &mut self.mode {
            Mode::Headers(_) | Mode::Verbatim => {
                self.skeleton.extend_from_slice(bytes);
                return Ok(());
            }
            Mode::Spool(spool) => return spool.decoder.feed(bytes, out),
            Mode::Candidate(candidate) => {
                // Hold no more than `min_part + 1` bytes: one over is enough
                // to know the part is spooled.
                let room = self
                    .min_part
                    .saturating_add(1)
                    .saturating_sub(candidate.held.len());
                if bytes.len() < room {
                    candidate.held.extend_from_slice(bytes);
                    return Ok(());
                }
                let (now, rest) = bytes.split_at(room);
                candidate.held.extend_from_slice(now);
                rest
            }
        };
        self.start_spool(out)?;
        self.emit(rest, out)
    }

    /// The candidate body is over `min_part`: it is spooled from here on.
    fn start_spool(&mut self, out: &mut dyn PartOut) -> io::Result<()> {
        let Mode::Candidate(candidate) = std::mem::replace(&mut self.mode, Mode::Verbatim) else {
            return Ok(());
        };
        let index = self.spooled;
        self.spooled += 1;
        self.mode = Mode::Spool(Spool {
            decoder: Decoder::new(candidate.encoding),
            crlf: candidate.crlf,
            index,
        });
        out.begin(index)?;
        match &mut self.mode {
            Mode::Spool(spool) => spool.decoder.feed(&candidate.held, out),
            _ => Ok(()),
        }
    }
}

/// The index of a spooled part, when `decoded` (a part's body as mail-parser decoded it from the skeleton,
/// leading/trailing ASCII whitespace ignored) is `{marker}{index}`.
pub(crate) fn marker_index(decoded: &[u8], marker: &str) -> Option<usize> {
    let digits = decoded.trim_ascii().strip_prefix(marker.as_bytes())?;
    // Only what `Splitter` writes: decimal digits, no sign, no leading zero.
    let canonical = match digits {
        [] => false,
        [b'0', _, ..] => false,
        _ => digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether `byte`, at position `pos` of a held line whose earlier bytes are
/// `line` (and fitted), still fits a delimiter line of `boundary`:
/// `--boundary`, maybe `--`, then spaces, tabs or stray CRs.
fn delimiter_byte_fits(boundary: &[u8], line: &[u8], pos: usize, byte: u8) -> bool {
    let padding = |b: u8| matches!(b, b' ' | b'\t' | b'\r');
    let full = boundary.len() + 2;
    if pos < 2 {
        return byte == b'-';
    }
    if pos < full {
        return boundary.get(pos - 2) == Some(&byte);
    }
    match pos - full {
        0 => byte == b'-' || padding(byte),
        1 if line.get(full) == Some(&b'-') => byte == b'-',
        _ => padding(byte),
    }
}

/// Where the colon of a header field line is, when it is one: mail-parser
/// takes the first colon after some non-whitespace as the end of the name.
fn field_colon(line: &[u8]) -> Option<usize> {
    let first = line.iter().position(|b| !b.is_ascii_whitespace())?;
    let colon = line.get(first..)?.iter().position(|&b| b == b':')?;
    Some(first + colon)
}

/// The unfolded values of the last `Content-Type` and the last
/// `Content-Transfer-Encoding` field of a header block (mail-parser uses the
/// last one of each).
fn read_headers(block: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    #[derive(PartialEq)]
    enum Field {
        ContentType,
        TransferEncoding,
        Other,
    }
    let mut content_type = None;
    let mut transfer_encoding = None;
    let mut current: Option<(Field, Vec<u8>)> = None;
    let mut store = |field: Option<(Field, Vec<u8>)>| match field {
        Some((Field::ContentType, value)) => content_type = Some(value),
        Some((Field::TransferEncoding, value)) => transfer_encoding = Some(value),
        _ => {}
    };
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if matches!(line.first(), Some(b' ' | b'\t'))
            && let Some((field, value)) = current.as_mut()
        {
            // The fold is kept as a bare LF: in a Content-Type it separates
            // parameters (see `parse_content_type`).
            if *field != Field::Other {
                value.push(b'\n');
                value.extend_from_slice(line);
            }
            continue;
        }
        store(current.take());
        let Some(colon) = field_colon(line) else {
            continue;
        };
        let name: Vec<u8> = line
            .get(..colon)
            .unwrap_or_default()
            .iter()
            .filter(|b| !b.is_ascii_whitespace())
            .map(u8::to_ascii_lowercase)
            .collect();
        let field = match name.as_slice() {
            b"content-type" => Field::ContentType,
            b"content-transfer-encoding" => Field::TransferEncoding,
            _ => Field::Other,
        };
        let value = match field {
            Field::Other => Vec::new(),
            _ => line.get(colon + 1..).unwrap_or_default().to_vec(),
        };
        current = Some((field, value));
    }
    store(current);
    (content_type, transfer_encoding)
}

/// The parts of a Content-Type value the splitter needs.
struct ContentType {
    /// The lower-case main type (`multipart`, `text`, `application`…).
    main: Vec<u8>,
    boundary: Option<Vec<u8>>,
}

/// Parses a Content-Type value (folds marked by LF): comments dropped,
/// parameters split at `;` outside quoted strings, the parameter name
/// case-insensitive, a quoted value unquoted. Like mail-parser, a fold after
/// the type also separates parameters (`multipart/mixed` LF TAB
/// `boundary=x` has a boundary) and a fold inside a quoted value is dropped.
/// `None` when there is no type (mail-parser then defaults to text/plain).
fn parse_content_type(value: &[u8]) -> Option<ContentType> {
    let mut segments: Vec<Vec<u8>> = vec![Vec::new()];
    let mut quoted = false;
    let mut escaped = false;
    let mut comment = 0usize;
    let mut after_type = false;
    for &b in value {
        if b == b'\n' {
            if !quoted && comment == 0 && after_type {
                segments.push(Vec::new());
            }
            continue;
        }
        if quoted {
            segments.last_mut()?.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = false;
            }
        } else if comment > 0 {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'(' {
                comment += 1;
            } else if b == b')' {
                comment -= 1;
            }
        } else {
            match b {
                b'"' => {
                    quoted = true;
                    segments.last_mut()?.push(b);
                }
                b'(' => comment = 1,
                b';' => {
                    after_type = true;
                    segments.push(Vec::new());
                }
                _ => {
                    after_type |= b == b'/';
                    segments.last_mut()?.push(b);
                }
            }
        }
    }
    let mut segments = segments.into_iter();
    let first = segments.next()?;
    let main = first
        .split(|&b| b == b'/')
        .next()
        .unwrap_or_default()
        .trim_ascii()
        .to_ascii_lowercase();
    if main.is_empty() {
        return None;
    }
    let boundary = segments.find_map(|segment| {
        let eq = segment.iter().position(|&b| b == b'=')?;
        let name = segment.get(..eq)?.trim_ascii();
        if !name.eq_ignore_ascii_case(b"boundary") {
            return None;
        }
        Some(unquote(segment.get(eq + 1..)?.trim_ascii()))
    });
    Some(ContentType { main, boundary })
}

/// A parameter value without its quotes and backslash escapes.
fn unquote(value: &[u8]) -> Vec<u8> {
    let Some(inner) = value.strip_prefix(b"\"") else {
        return value.to_vec();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if escaped {
            out.push(b);
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            break;
        } else {
            out.push(b);
        }
    }
    out
}

/// The encoding a `Content-Transfer-Encoding` value names; like mail-parser,
/// only the exact (trimmed, case-insensitive) names count.
fn encoding_of(value: &[u8]) -> Encoding {
    let value = value.trim_ascii();
    if value.eq_ignore_ascii_case(b"base64") {
        Encoding::Base64
    } else if value.eq_ignore_ascii_case(b"quoted-printable") {
        Encoding::QuotedPrintable
    } else {
        Encoding::Identity
    }
}

/// Value of each base64 alphabet character; 0xff for anything else.
static BASE64_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0u8;
    while i < 64 {
        let ch = match i {
            0..=25 => b'A' + i,
            26..=51 => b'a' + (i - 26),
            52..=61 => b'0' + (i - 52),
            62 => b'+',
            _ => b'/',
        };
        table[ch as usize] = i;
        i += 1;
    }
    table
};

/// Value of a hex digit (either case), as mail-parser's quoted-printable decoder reads it.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Where a quoted-printable decoder is within an escape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QpState {
    Text,
    /// After `=`.
    Eq,
    /// After `=` and one hex digit (kept as written).
    Hex(u8),
}

enum DecoderKind {
    Identity,
    /// The values of the characters of an incomplete quantum, and how many.
    Base64 {
        quantum: u32,
        count: u8,
    },
    QuotedPrintable {
        state: QpState,
        /// A CR was seen: lines end with CRLF in the output (as mail-parser does).
        crlf: bool,
        /// Trailing whitespace of the current line, dropped if the line ends.
        whitespace: Vec<u8>,
    },
}

/// A streaming transfer decoder writing to a [`PartOut`].
struct Decoder {
    kind: DecoderKind,
    /// Decoded bytes not yet written, at most about [`OUT_BLOCK`].
    block: Vec<u8>,
}

impl Decoder {
    fn new(encoding: Encoding) -> Decoder {
        let kind = match encoding {
            Encoding::Identity => DecoderKind::Identity,
            Encoding::Base64 => DecoderKind::Base64 {
                quantum: 0,
                count: 0,
            },
            Encoding::QuotedPrintable => DecoderKind::QuotedPrintable {
                state: QpState::Text,
                crlf: false,
                whitespace: Vec::new(),
            },
        };
        Decoder {
            kind,
            block: Vec::new(),
        }
    }

    fn encoding(&self) -> Encoding {
        match self.kind {
            DecoderKind::Identity => Encoding::Identity,
            DecoderKind::Base64 { .. } => Encoding::Base64,
            DecoderKind::QuotedPrintable { .. } => Encoding::QuotedPrintable,
        }
    }

    #[cfg(test)]
    fn buffered(&self) -> usize {
        let whitespace = match &self.kind {
            DecoderKind::QuotedPrintable { whitespace, .. } => whitespace.capacity(),
            _ => 0,
        };
        self.block.capacity() + whitespace
    }

    /// Decodes the next encoded bytes of the body.
    fn feed(&mut self, bytes: &[u8], out: &mut dyn PartOut) -> io::Result<()> {
        match &mut self.kind {
            DecoderKind::Identity => return out.write(bytes),
            DecoderKind::Base64 { quantum, count } => {
                for &b in bytes {
                    decode_base64_byte(b, quantum, count, &mut self.block);
                    if self.block.len() >= OUT_BLOCK {
                        out.write(&self.block)?;
                        self.block.clear();
                    }
                }
            }
            DecoderKind::QuotedPrintable {
                state,
                crlf,
                whitespace,
            } => {
                for &b in bytes {
                    decode_qp_byte(b, state, crlf, whitespace, &mut self.block);
                    if self.block.len() >= OUT_BLOCK {
                        out.write(&self.block)?;
                        self.block.clear();
                    }
                }
            }
        }
        self.flush(out)
    }

    /// The body ended, at a delimiter (its line ending was not part of the
    /// body) or at the end of the input.
    fn finish(&mut self, at_delimiter: bool, out: &mut dyn PartOut) -> io::Result<()> {
        // base64: an incomplete last quantum is dropped, as mail-parser does.
        if let DecoderKind::QuotedPrintable {
            state, whitespace, ..
        } = &mut self.kind
        {
            match *state {
                QpState::Hex(digit) => {
                    self.block.append(whitespace);
                    self.block.extend_from_slice(&[b'=', digit]);
                }
                // Like a soft line break: whitespace before it stays.
                QpState::Eq => self.block.append(whitespace),
                // mail-parser saw the line break before the delimiter and
                // dropped the trailing whitespace; at the end of the input
                // there was no line break.
                QpState::Text if at_delimiter => whitespace.clear(),
                QpState::Text => self.block.append(whitespace),
            }
            *state = QpState::Text;
        }
        self.flush(out)
    }

    fn flush(&mut self, out: &mut dyn PartOut) -> io::Result<()> {
        if !self.block.is_empty() {
            out.write(&self.block)?;
            self.block.clear();
        }
        Ok(())
    }
}

/// One byte of a base64 body, decoded like mail-parser's MIME base64 decoder
/// on valid input: `=` completes the quantum so far (and decoding goes on
/// after it, as with concatenated encodings); characters outside the
/// alphabet are skipped.
fn decode_base64_byte(b: u8, quantum: &mut u32, count: &mut u8, out: &mut Vec<u8>) {
    let value = BASE64_VALUE[usize::from(b)];
    if value < 64 {
        *quantum = (*quantum << 6) | u32::from(value);
        *count += 1;
        if *count == 4 {
            out.extend_from_slice(&[
                (*quantum >> 16) as u8,
                (*quantum >> 8) as u8,
                *quantum as u8,
            ]);
            *quantum = 0;
            *count = 0;
        }
    } else if b == b'=' {
        match *count {
            // mail-parser keeps the partial first byte of a lone character.
            1 => out.push((*quantum << 2) as u8),
            2 => out.push((*quantum >> 4) as u8),
            3 => out.extend_from_slice(&[(*quantum >> 10) as u8, (*quantum >> 2) as u8]),
            _ => {}
        }
        *quantum = 0;
        *count = 0;
    }
}

/// One byte of a quoted-printable body, decoded like mail-parser's MIME
/// quoted-printable decoder: CRs are dropped (their presence makes line
/// breaks CRLF), trailing whitespace of a line is dropped, `=` before a line
/// break is a soft break, `=XX` a byte. Where mail-parser would give up
/// (`==`, a broken escape before a line break) the escape is kept as text.
fn decode_qp_byte(
    b: u8,
    state: &mut QpState,
    crlf: &mut bool,
    whitespace: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    let line_break: &[u8] = if *crlf { b"\r\n" } else { b"\n" };
    match (b, *state) {
        (b'\r', _) => *crlf = true,
        (b'\n', QpState::Eq) => {
            out.append(whitespace);
            *state = QpState::Text;
        }
        (b'\n', QpState::Hex(digit)) => {
            out.append(whitespace);
            out.extend_from_slice(&[b'=', digit]);
            out.extend_from_slice(line_break);
            *state = QpState::Text;
        }
        (b'\n', QpState::Text) => {
            whitespace.clear();
            out.extend_from_slice(line_break);
        }
        (b'=', QpState::Text) => *state = QpState::Eq,
        (b'=', QpState::Eq) => {
            out.append(whitespace);
            out.push(b'=');
        }
        (b'=', QpState::Hex(digit)) => {
            out.append(whitespace);
            out.extend_from_slice(&[b'=', digit]);
            *state = QpState::Eq;
        }
        (_, QpState::Text) => {
            if b.is_ascii_whitespace() {
                if whitespace.len() >= MAX_QP_WS {
                    out.append(whitespace);
                }
                whitespace.push(b);
            } else {
                out.append(whitespace);
                out.push(b);
            }
        }
        (_, QpState::Eq) => {
            if hex_value(b).is_some() {
                *state = QpState::Hex(b);
            } else if !b.is_ascii_whitespace() {
                out.append(whitespace);
                out.extend_from_slice(&[b'=', b]);
                *state = QpState::Text;
            }
        }
        (_, QpState::Hex(digit)) => {
            out.append(whitespace);
            match (hex_value(digit), hex_value(b)) {
                (Some(high), Some(low)) => out.push((high << 4) | low),
                _ => out.extend_from_slice(&[b'=', digit, b]),
            }
            *state = QpState::Text;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

    use super::*;

    const MARKER: &str = "PRIVACYMAILROOMPART0123456789abcdefN";

    /// Records what the splitter writes, and any call out of order.
    #[derive(Default)]
    struct Sink {
        parts: Vec<Vec<u8>>,
        open: bool,
        misuse: Vec<String>,
    }

    impl PartOut for Sink {
        fn begin(&mut self, index: usize) -> io::Result<()> {
            if self.open || index != self.parts.len() {
                self.misuse.push(format!(
                    "begin({index}) with {} parts, open {}",
                    self.parts.len(),
                    self.open
                ));
            }
            self.parts.push(Vec::new());
            self.open = true;
            Ok(())
        }

        fn write(&mut self, decoded: &[u8]) -> io::Result<()> {
            match self.parts.last_mut() {
                Some(part) if self.open => part.extend_from_slice(decoded),
                _ => self.misuse.push("write outside a part".into()),
            }
            Ok(())
        }

        fn end(&mut self) -> io::Result<()> {
            if !self.open {
                self.misuse.push("end outside a part".into());
            }
            self.open = false;
            Ok(())
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Split {
        skeleton: Vec<u8>,
        parts: Vec<Vec<u8>>,
    }

    /// Splits `raw` fed in pieces of `chunk` bytes (0: all at once).
    fn split(raw: &[u8], min_part: usize, chunk: usize) -> Split {
        let mut splitter = Splitter::new(MARKER, min_part);
        let mut sink = Sink::default();
        let chunk = if chunk == 0 { raw.len().max(1) } else { chunk };
        for piece in raw.chunks(chunk) {
            splitter
                .feed(piece, &mut sink)
                .expect("the sink never fails");
            assert_eq!(splitter.spooled(), sink.parts.len());
        }
        let skeleton = splitter.finish(&mut sink).expect("the sink never fails");
        assert!(sink.misuse.is_empty(), "{:?}", sink.misuse);
        assert!(!sink.open, "a spooled part was not ended");
        Split {
            skeleton,
            parts: sink.parts,
        }
    }

    /// The parts `Splitter` spools with `min_part` 0, in order of appearance:
    /// leaf parts with a Content-Type other than multipart, message or text,
    /// and a non-empty body. Attached messages are not entered (their parts
    /// are not in `message.parts`).
    fn eligible<'a>(message: &'a Message<'a>) -> Vec<&'a MessagePart<'a>> {
        message
            .parts
            .iter()
            .filter(|p| !matches!(p.body, PartType::Multipart(_) | PartType::Message(_)))
            .filter(|p| {
                p.content_type().is_some_and(|ct| {
                    !["multipart", "message", "text"]
                        .iter()
                        .any(|t| ct.ctype().eq_ignore_ascii_case(t))
                })
            })
            .filter(|p| p.offset_end > p.offset_body)
            .collect()
    }

    fn short(bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
        format!("{} bytes {text:?}", bytes.len())
    }

    // ---- the corpora ----

    /// Files that mail-parser reads differently from the MIME rules the
    /// splitter follows, so the spooled content cannot be matched to a part
    /// of the whole message's parse (the split is still checked for chunk
    /// independence, a parsable skeleton and identity without spooling).
    const NO_CORRESPONDENCE: &[(&str, &str)] = &[];

    /// Every file under `dir`, sorted, into `out` (none when `dir` is missing).
    pub(crate) fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                files_under(&path, out);
            } else {
                out.push(path);
            }
        }
    }

    /// `tests/data/eml/**/*.eml`, and every file under `$PRIVACY_MAILROOM_CORPUS`.
    fn corpus_files() -> Vec<PathBuf> {
        let mut repo = Vec::new();
        files_under(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/eml"),
            &mut repo,
        );
        let mut files: Vec<PathBuf> = repo
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        if let Some(dir) = std::env::var_os("PRIVACY_MAILROOM_CORPUS") {
            files_under(Path::new(&dir), &mut files);
        }
        files
    }

    /// Checks one corpus file; hard failures panic, a part that does not
    /// correspond to mail-parser's reading of the whole message is returned.
    fn check_corpus_file(raw: &[u8]) -> Result<Tally, String> {
        let mut tally = Tally::default();
        let whole = split(raw, 0, 0);
        for chunk in [1, 7, 4096] {
            assert!(
                split(raw, 0, chunk) == whole,
                "chunks of {chunk} split differently"
            );
        }
        assert!(
            split(raw, usize::MAX, 7).skeleton == raw,
            "nothing spooled, yet the skeleton differs"
        );

        let parser = MessageParser::default();
        let original = parser.parse(raw);
        let skeleton = parser.parse(&whole.skeleton);
        assert_eq!(
            original.is_some(),
            skeleton.is_some(),
            "the skeleton parses only if the message does"
        );
        let (Some(original), Some(skeleton)) = (original, skeleton) else {
            return Ok(tally);
        };
        let expected = eligible(&original);
        if expected.len() != whole.parts.len() {
            return Err(format!(
                "{} parts spooled, mail-parser has {} eligible",
                whole.parts.len(),
                expected.len()
            ));
        }
        for (i, (part, spooled)) in expected.iter().zip(&whole.parts).enumerate() {
            // mail-parser keeps the raw text of a body it cannot decode; the
            // splitter decodes leniently.
            if part.is_encoding_problem {
                tally.undecodable += 1;
            } else if part.contents() == spooled.as_slice() {
                tally.matched += 1;
            } else {
                return Err(format!(
                    "part {i}: spooled {}, mail-parser {}",
                    short(spooled),
                    short(part.contents())
                ));
            }
        }
        let markers: Vec<Option<usize>> = eligible(&skeleton)
            .iter()
            .map(|p| marker_index(p.contents(), MARKER))
            .collect();
        let wanted: Vec<Option<usize>> = (0..whole.parts.len()).map(Some).collect();
        if markers != wanted {
            return Err(format!("markers in the skeleton's parse: {markers:?}"));
        }
        Ok(tally)
    }

    /// Spooled parts compared with mail-parser's decoding, and parts
    /// mail-parser could not decode (it keeps their raw text).
    #[derive(Default, Debug)]
    struct Tally {
        matched: usize,
        undecodable: usize,
    }

    /// Bare LFs made CRLF, as an IMAP server delivers the message.
    fn to_crlf(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 16);
        let mut last = 0u8;
        for &b in raw {
            if b == b'\n' && last != b'\r' {
                out.push(b'\r');
            }
            out.push(b);
            last = b;
        }
        out
    }

    #[test]
    fn corpus_splits_like_mail_parser_reads_it() {
        let files = corpus_files();
        assert!(files.len() > 50, "the repository corpus is missing");
        let mut failures = Vec::new();
        let mut total = Tally::default();
        let mut checked = 0;
        for path in &files {
            let stored = std::fs::read(path).expect("corpus file readable");
            let name = path.to_string_lossy();
            let known = NO_CORRESPONDENCE.iter().find(|(f, _)| name.ends_with(f));
            for (form, raw) in [("as stored", stored.clone()), ("as CRLF", to_crlf(&stored))] {
                let result = std::panic::catch_unwind(|| check_corpus_file(&raw));
                match (result, known) {
                    (Err(panic), _) => {
                        eprintln!("{name} ({form}) failed");
                        std::panic::resume_unwind(panic)
                    }
                    (Ok(Ok(_)), Some(_)) => failures.push(format!(
                        "{name} ({form}): now corresponds, drop it from NO_CORRESPONDENCE"
                    )),
                    (Ok(Ok(tally)), None) => {
                        checked += 1;
                        total.matched += tally.matched;
                        total.undecodable += tally.undecodable;
                    }
                    (Ok(Err(e)), None) => failures.push(format!("{name} ({form}): {e}")),
                    (Ok(Err(_)), Some(_)) => {}
                }
            }
        }
        eprintln!(
            "{checked} inputs from {} files; spooled parts: {total:?}",
            files.len()
        );
        assert!(
            failures.is_empty(),
            "{checked} inputs correspond; not:\n{}",
            failures.join("\n")
        );
    }

    // ---- generated messages ----

    /// Deterministic pseudo-random bytes (xorshift64*).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    /// `data` in base64, on one line or in lines of `line` characters.
    fn base64_body(data: &[u8], line: Option<usize>, eol: &str) -> String {
        let encoded = STANDARD.encode(data);
        match line {
            None => encoded,
            Some(n) => encoded
                .as_bytes()
                .chunks(n)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(eol),
        }
    }

    /// `data` in quoted-printable: with `hard_breaks` LF in `data` is a line
    /// break (`eol`), other bytes outside `!`..`~` and `=` are escaped, spaces
    /// are kept except at the end of a line, lines are soft-broken before 76
    /// characters.
    fn qp_body(data: &[u8], hard_breaks: bool, eol: &str) -> String {
        let mut out = String::new();
        let mut line_len = 0;
        for (i, &b) in data.iter().enumerate() {
            if b == b'\n' && hard_breaks {
                out.push_str(eol);
                line_len = 0;
                continue;
            }
            let at_line_end = data.get(i + 1).is_none_or(|&n| n == b'\n' && hard_breaks);
            let piece = match b {
                b' ' if !at_line_end => " ".to_string(),
                b'!'..=b'~' if b != b'=' => (b as char).to_string(),
                _ => format!("={b:02X}"),
            };
            if line_len + piece.len() > 75 {
                out.push('=');
                out.push_str(eol);
                line_len = 0;
            }
            line_len += piece.len();
            out.push_str(&piece);
        }
        out
    }

    /// `text` with its LFs written as `eol`.
    fn eol(text: &str, eol: &str) -> String {
        text.replace('\n', eol)
    }

    struct Case {
        name: String,
        raw: Vec<u8>,
        min_part: usize,
        /// What the sink must receive, part by part.
        spooled: Vec<Vec<u8>>,
        /// The skeleton is at most this long.
        skeleton_max: usize,
        /// Bytes the skeleton must contain as they are in the message.
        kept: Vec<Vec<u8>>,
        /// mail-parser finds the markers in the skeleton's parse (not so
        /// with broken nesting, which mail-parser does not follow).
        parser_sees_markers: bool,
    }

    impl Case {
        fn new(name: impl Into<String>, raw: impl Into<Vec<u8>>, min_part: usize) -> Case {
            Case {
                name: name.into(),
                raw: raw.into(),
                min_part,
                spooled: Vec::new(),
                skeleton_max: 4096,
                kept: Vec::new(),
                parser_sees_markers: true,
            }
        }

        fn spools(mut self, parts: Vec<Vec<u8>>) -> Case {
            self.spooled = parts;
            self
        }

        /// The skeleton must contain `bytes` as they are, and may be that much larger.
        fn keeps(mut self, bytes: impl Into<Vec<u8>>) -> Case {
            let bytes = bytes.into();
            self.skeleton_max += bytes.len();
            self.kept.push(bytes);
            self
        }
    }

    const HEAD: &str = "From: Consumer <consumer@example.com>\nTo: privacy@example.com\n\
                        Subject: Please delete my data\nMIME-Version: 1.0\n";

    /// multipart/mixed: a text part, then one attachment with `headers` and `body`.
    fn with_attachment(headers: &str, body: &str, nl: &str) -> Vec<u8> {
        format!(
            "{}{body}{}",
            eol(
                &format!(
                    "{HEAD}Content-Type: multipart/mixed; boundary=\"XYZ\"\n\n\
                     This is a multi-part message in MIME format.\n--XYZ\n\
                     Content-Type: text/plain; charset=utf-8\n\nPlease delete my data.\n\n--XYZ\n\
                     {headers}\n\n"
                ),
                nl
            ),
            eol("\n--XYZ--\n", nl)
        )
        .into_bytes()
    }

    fn cases() -> Vec<Case> {
        let mut cases = Vec::new();
        let big = noise(5_000_000, 1);
        for (line, layout) in [(None, "one line"), (Some(76), "76-char lines")] {
            for (nl, style) in [("\r\n", "CRLF"), ("\n", "LF")] {
                let raw = with_attachment(
                    "Content-Type: application/octet-stream; name=\"big.bin\"\n\
                     Content-Disposition: attachment; filename=\"big.bin\"\n\
                     Content-Transfer-Encoding: base64",
                    &base64_body(&big, line, nl),
                    nl,
                );
                cases.push(
                    Case::new(format!("5 MB base64, {layout}, {style}"), raw, 64 * 1024)
                        .spools(vec![big.clone()]),
                );
            }
        }

        let binary = noise(200_000, 2);
        cases.push(
            Case::new(
                "quoted-printable binary, CRLF",
                with_attachment(
                    "Content-Type: application/octet-stream\nContent-Transfer-Encoding: Quoted-Printable",
                    &qp_body(&binary, false, "\r\n"),
                    "\r\n",
                ),
                1024,
            )
            .spools(vec![binary]),
        );
        let lines: Vec<u8> = (0..5000)
            .flat_map(|i| format!("{{\"row\": {i}, \"note\": \"a=b  ü\"}}  \n").into_bytes())
            .collect();
        // Trailing spaces are encoded, so they survive; the last line break
        // belongs to the delimiter.
        let expected = lines.strip_suffix(b"\n").unwrap_or(&lines).to_vec();
        cases.push(
            Case::new(
                "quoted-printable lines, LF",
                with_attachment(
                    "Content-Type: application/json\nContent-Transfer-Encoding: quoted-printable",
                    &qp_body(&expected, true, "\n"),
                    "\n",
                ),
                1024,
            )
            .spools(vec![expected]),
        );

        let eight_bit: Vec<u8> = noise(300_000, 3)
            .chunks(99)
            .flat_map(|c| {
                let mut line: Vec<u8> = c.iter().map(|b| b'0' + b % 64).collect();
                line.push(b'\n');
                line
            })
            .collect();
        let body = String::from_utf8(eight_bit.clone()).unwrap_or_default();
        cases.push(
            Case::new(
                "8bit attachment, LF",
                with_attachment(
                    "Content-Type: application/x-data\nContent-Transfer-Encoding: 8bit",
                    body.strip_suffix('\n').unwrap_or(&body),
                    "\n",
                ),
                1024,
            )
            .spools(vec![
                eight_bit.strip_suffix(b"\n").unwrap_or(&eight_bit).to_vec(),
            ]),
        );

        let png = noise(300_000, 4);
        let pdf = noise(300_001, 5);
        let nested = format!(
            "{}{}{}{}{}",
            eol(
                &format!(
                    "{HEAD}Content-Type: multipart/mixed; boundary=\"outer\"\n\n--outer\n\
                     Content-Type: multipart/alternative; boundary=\"alt\"\n\n--alt\n\
                     Content-Type: text/plain\n\nDelete my data.\n--alt\n\
                     Content-Type: multipart/related; boundary=\"rel\"\n\npreamble\n--rel\n\
                     Content-Type: text/html\n\n<p>Delete my data.<img src=\"cid:p\"></p>\n--rel\n\
                     Content-Type: image/png\nContent-ID: <p>\nContent-Transfer-Encoding: base64\n\n"
                ),
                "\r\n"
            ),
            base64_body(&png, Some(76), "\r\n"),
            eol(
                "\n--rel--\nepilogue\n--alt--\n\n--outer\n\
                 Content-Type: application/pdf; name=\"id.pdf\"\n\
                 Content-Transfer-Encoding: base64\n\n",
                "\r\n"
            ),
            base64_body(&pdf, Some(76), "\r\n"),
            "\r\n--outer--  \r\nepilogue\r\n",
        );
        cases.push(
            Case::new("mixed > alternative > related + attachment", nested, 1024)
                .spools(vec![png, pdf.clone()]),
        );

        let zip = noise(300_000, 6);
        let attached = format!(
            "{}{}{}",
            eol(
                "From: someone@example.org\nSubject: fwd\nMIME-Version: 1.0\n\
                 Content-Type: multipart/mixed; boundary=inner\n\n--inner\n\
                 Content-Type: text/plain\n\nsee attached\n--inner\n\
                 Content-Type: application/zip\nContent-Transfer-Encoding: base64\n\n",
                "\r\n"
            ),
            base64_body(&zip, Some(76), "\r\n"),
            "\r\n--inner--\r\n",
        );
        let forwarded = format!(
            "{}{attached}{}{}{}",
            eol(
                &format!(
                    "{HEAD}Content-Type: multipart/mixed; boundary=\"XYZ\"\n\n--XYZ\n\
                     Content-Type: text/plain\n\nForwarding.\n--XYZ\n\
                     Content-Type: message/rfc822\n\n"
                ),
                "\r\n"
            ),
            eol(
                "\n--XYZ\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n",
                "\r\n"
            ),
            base64_body(&pdf, Some(76), "\r\n"),
            "\r\n--XYZ--\r\n",
        );
        cases.push(
            Case::new("message/rfc822 copied, not entered", forwarded.clone(), 0)
                .spools(vec![pdf.clone()])
                .keeps(attached.clone()),
        );

        let whole_pdf = format!(
            "{}{}\r\n",
            eol(
                &format!(
                    "{HEAD}Content-Type: application/pdf; name=\"form.pdf\"\n\
                     Content-Transfer-Encoding: base64\n\n"
                ),
                "\r\n"
            ),
            base64_body(&pdf, Some(76), "\r\n"),
        );
        cases.push(
            Case::new("non-multipart application/pdf", whole_pdf, 1024).spools(vec![pdf.clone()]),
        );

        let encoded = base64_body(&pdf, Some(76), "\r\n");
        let cut = &encoded[..123_457];
        let chars: Vec<u8> = cut.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        let complete = STANDARD
            .decode(&chars[..chars.len() / 4 * 4])
            .unwrap_or_default();
        let truncated = with_attachment(
            "Content-Type: application/pdf\nContent-Transfer-Encoding: base64",
            &encoded,
            "\r\n",
        );
        let end = truncated.len() - (encoded.len() - cut.len()) - "\r\n--XYZ--\r\n".len();
        cases.push(
            Case::new("missing closing boundary", truncated[..end].to_vec(), 1024)
                .spools(vec![complete]),
        );

        let folded = format!(
            "{}{}{}",
            eol(
                &format!(
                    "{HEAD}Content-Type: multipart/mixed;\n\tBOUNDARY=\"=_Part 1;\n 2=_\"\n\n\
                     --=_Part 1; 2=_\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
                ),
                "\r\n"
            ),
            base64_body(&pdf, Some(76), "\r\n"),
            "\r\n--=_Part 1; 2=_--\r\n",
        );
        cases.push(
            Case::new("quoted boundary folded across lines", folded, 1024)
                .spools(vec![pdf.clone()]),
        );
        let unquoted = format!(
            "{}{}{}",
            eol(
                &format!(
                    "{HEAD}Content-Type: multipart/mixed\n boundary=plain.boundary\n\n\
                     --plain.boundary\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
                ),
                "\n"
            ),
            base64_body(&pdf, Some(76), "\n"),
            "\n--plain.boundary--",
        );
        cases.push(
            Case::new(
                "unquoted boundary on a folded line, no final newline",
                unquoted,
                1024,
            )
            .spools(vec![pdf.clone()]),
        );

        let small = noise(1000, 7);
        let small_body = base64_body(&small, Some(76), "\r\n");
        let two = format!(
            "{}{small_body}{}{}{}",
            eol(
                &format!(
                    "{HEAD}Content-Type: multipart/mixed; boundary=\"XYZ\"\n\n--XYZ\n\
                     Content-Type: image/gif\nContent-Transfer-Encoding: base64\n\n"
                ),
                "\r\n"
            ),
            eol(
                "\n--XYZ\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n",
                "\r\n"
            ),
            base64_body(&pdf, Some(76), "\r\n"),
            "\r\n--XYZ--\r\n",
        );
        cases.push(
            Case::new("part under min_part copied verbatim", two, 4096)
                .spools(vec![pdf.clone()])
                .keeps(small_body),
        );

        let mut broken = Case::new(
            "inner multipart ended by the outer boundary",
            format!(
                "{}{}{}{}{}",
                eol(
                    &format!(
                        "{HEAD}Content-Type: multipart/mixed; boundary=\"outer\"\n\n--outer\n\
                         Content-Type: multipart/alternative; boundary=\"inner\"\n\n--inner\n\
                         Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
                    ),
                    "\n"
                ),
                base64_body(&pdf, Some(76), "\n"),
                eol("\n--outer\nContent-Type: application/zip\nContent-Transfer-Encoding: base64\n\n", "\n"),
                base64_body(&zip, Some(76), "\n"),
                "\n--outer--\n",
            ),
            1024,
        )
        .spools(vec![pdf.clone(), zip.clone()]);
        broken.parser_sees_markers = false;
        cases.push(broken);
        cases
    }

    #[test]
    fn generated_messages_split_into_skeleton_and_parts() {
        let parser = MessageParser::default();
        for case in cases() {
            let name = &case.name;
            let whole = split(&case.raw, case.min_part, 0);
            for chunk in [1, 7, 4096, 1 << 20] {
                assert!(
                    split(&case.raw, case.min_part, chunk) == whole,
                    "{name}: chunks of {chunk} differ"
                );
            }
            assert_eq!(
                whole.parts.len(),
                case.spooled.len(),
                "{name}: parts spooled"
            );
            for (i, (got, want)) in whole.parts.iter().zip(&case.spooled).enumerate() {
                assert!(
                    got == want,
                    "{name}: part {i} is {}, not {}",
                    short(got),
                    short(want)
                );
            }
            assert!(
                whole.skeleton.len() <= case.skeleton_max,
                "{name}: skeleton of {} bytes",
                whole.skeleton.len()
            );
            for kept in &case.kept {
                assert!(
                    whole
                        .skeleton
                        .windows(kept.len())
                        .any(|w| w == kept.as_slice()),
                    "{name}: the skeleton lost {}",
                    short(kept)
                );
            }
            assert!(
                split(&case.raw, usize::MAX, 4096).skeleton == case.raw,
                "{name}: not spooled, yet changed"
            );

            let skeleton = parser.parse(&whole.skeleton).expect("the skeleton parses");
            if !case.parser_sees_markers {
                continue;
            }
            let original = parser.parse(&case.raw).expect("the message parses");
            let (before, after) = (eligible(&original), eligible(&skeleton));
            assert_eq!(before.len(), after.len(), "{name}: the skeleton's parts");
            let mut next = 0;
            for (old, new) in before.iter().zip(&after) {
                assert_eq!(
                    old.content_type().map(|c| (c.ctype(), c.subtype())),
                    new.content_type().map(|c| (c.ctype(), c.subtype())),
                    "{name}: a part changed its type"
                );
                match marker_index(new.contents(), MARKER) {
                    Some(index) => {
                        assert_eq!(index, next, "{name}: markers out of order");
                        // Where mail-parser can decode the original, it
                        // agrees with the splitter.
                        if !old.is_encoding_problem {
                            assert!(
                                old.contents() == whole.parts[index],
                                "{name}: part {index} differs from mail-parser's"
                            );
                        }
                        next += 1;
                    }
                    None => assert!(
                        old.contents() == new.contents(),
                        "{name}: a kept part changed"
                    ),
                }
            }
            assert_eq!(next, case.spooled.len(), "{name}: markers found");
        }
    }

    /// A sink that only counts (and hashes) what it gets.
    #[derive(Default)]
    struct Counter {
        bytes: usize,
        parts: usize,
        hash: sha2::Sha256,
    }

    impl PartOut for Counter {
        fn begin(&mut self, _index: usize) -> io::Result<()> {
            self.parts += 1;
            Ok(())
        }

        fn write(&mut self, decoded: &[u8]) -> io::Result<()> {
            use sha2::Digest as _;
            self.bytes += decoded.len();
            self.hash.update(decoded);
            Ok(())
        }

        fn end(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn memory_stays_bounded_on_a_50_mb_single_line() {
        use sha2::Digest as _;
        const MIB: usize = 1 << 20;
        // 50 MiB of base64 on one line: 50 pieces of 1 MiB encoding 768 KiB each.
        let data = noise(768 * 1024, 8);
        let piece = STANDARD.encode(&data);
        assert_eq!(piece.len(), MIB);
        let mut expected = sha2::Sha256::new();
        for _ in 0..50 {
            expected.update(&data);
        }

        let head = eol(
            &format!(
                "{HEAD}Content-Type: multipart/mixed; boundary=\"XYZ\"\n\n--XYZ\n\
                 Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"
            ),
            "\r\n",
        );
        let mut splitter = Splitter::new(MARKER, 256 * 1024);
        let mut sink = Counter::default();
        let bound = 256 * 1024 + MAX_PENDING + 2 * OUT_BLOCK + 4096;
        splitter.feed(head.as_bytes(), &mut sink).expect("counts");
        for _ in 0..50 {
            splitter.feed(piece.as_bytes(), &mut sink).expect("counts");
            assert!(
                splitter.buffered() <= bound,
                "{} bytes buffered",
                splitter.buffered()
            );
            assert!(
                splitter.skeleton.len() < 4096,
                "skeleton grew to {}",
                splitter.skeleton.len()
            );
        }
        splitter
            .feed(b"\r\n--XYZ--\r\n", &mut sink)
            .expect("counts");
        let skeleton = splitter.finish(&mut sink).expect("counts");
        assert!(
            skeleton.len() < 4096,
            "skeleton of {} bytes",
            skeleton.len()
        );
        assert_eq!((sink.parts, sink.bytes), (1, 50 * data.len()));
        assert_eq!(sink.hash.finalize(), expected.finalize());
    }

    #[test]
    fn a_held_line_never_outgrows_the_cap() {
        // A delimiter-like line that never ends: "--XYZ" and endless spaces.
        let mut splitter = Splitter::new(MARKER, 0);
        let mut sink = Sink::default();
        let head = "Content-Type: multipart/mixed; boundary=XYZ\n\n--XYZ\n\
                    Content-Type: application/octet-stream\n\nx\n--XYZ";
        splitter.feed(head.as_bytes(), &mut sink).expect("collects");
        let spaces = vec![b' '; 4096];
        for _ in 0..100 {
            splitter.feed(&spaces, &mut sink).expect("collects");
            assert!(splitter.pending.len() <= MAX_PENDING + 1);
        }
        let skeleton = splitter.finish(&mut sink).expect("collects");
        // Too long to be a delimiter: it is the part's content.
        assert_eq!(sink.parts.len(), 1);
        // "x", the line break before the held line, "--XYZ", the spaces.
        assert_eq!(sink.parts[0].len(), 1 + 1 + 5 + 409_600);
        assert!(skeleton.len() < 200);
    }

    /// A sink whose every call fails.
    struct Broken;

    impl PartOut for Broken {
        fn begin(&mut self, _index: usize) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }

        fn write(&mut self, _decoded: &[u8]) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }

        fn end(&mut self) -> io::Result<()> {
            Err(io::Error::other("disk full"))
        }
    }

    #[test]
    fn sink_errors_are_returned() {
        let raw = with_attachment(
            "Content-Type: application/pdf\nContent-Transfer-Encoding: base64",
            &base64_body(&noise(10_000, 9), Some(76), "\n"),
            "\n",
        );
        let mut splitter = Splitter::new(MARKER, 100);
        let result = raw
            .chunks(4096)
            .try_for_each(|c| splitter.feed(c, &mut Broken));
        assert!(result.is_err());
        // Nothing spooled: the sink is never called.
        let mut splitter = Splitter::new(MARKER, usize::MAX);
        raw.chunks(4096)
            .try_for_each(|c| splitter.feed(c, &mut Broken))
            .expect("no call");
        assert_eq!(splitter.finish(&mut Broken).expect("no call"), raw);
    }

    /// `input` decoded one byte at a time (the hardest chunking), ended as
    /// at a delimiter or not.
    fn decode_bytewise(encoding: Encoding, input: &[u8], at_delimiter: bool) -> Vec<u8> {
        let mut decoder = Decoder::new(encoding);
        let mut sink = Sink::default();
        sink.begin(0).expect("collects");
        for b in input {
            decoder.feed(&[*b], &mut sink).expect("collects");
        }
        decoder.finish(at_delimiter, &mut sink).expect("collects");
        sink.parts.swap_remove(0)
    }

    #[test]
    fn decoders_match_mail_parser_on_clean_input() {
        use mail_parser::decoders::base64::base64_decode;
        use mail_parser::decoders::quoted_printable::quoted_printable_decode;
        let base64: &[&[u8]] = &[
            b"",
            b"QQ==",
            b"QUI=",
            b"QUJD",
            b"QUJD\r\nREVG\r\nRw==",
            b"  QU JD\tRE\nVG  ",
            b"QQ==QUI=",
        ];
        for input in base64 {
            let got = decode_bytewise(Encoding::Base64, input, true);
            let want = base64_decode(input).expect("valid");
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        }
        let quoted: &[&[u8]] = &[
            b"plain text",
            b"caf=C3=A9 and =e2=82=ac",
            b"soft=\nbreak and soft=\r\nbreak",
            b"trailing   \nspace\t\r\nkept=20\nend",
            b"space before soft  =\nbreak",
            b"a\r\nb\nc",
        ];
        for input in quoted {
            let got = decode_bytewise(Encoding::QuotedPrintable, input, false);
            let want = quoted_printable_decode(input).unwrap_or_else(|| input.to_vec());
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn marker_index_reads_only_markers() {
        let table: &[(&[u8], Option<usize>)] = &[
            (b"PRIVACYMAILROOMPART0123456789abcdefN0", Some(0)),
            (b"PRIVACYMAILROOMPART0123456789abcdefN17", Some(17)),
            (
                b" \r\nPRIVACYMAILROOMPART0123456789abcdefN3\r\n\r\n",
                Some(3),
            ),
            (b"PRIVACYMAILROOMPART0123456789abcdefN", None),
            (b"PRIVACYMAILROOMPART0123456789abcdefN01", None),
            (b"PRIVACYMAILROOMPART0123456789abcdefN+1", None),
            (b"PRIVACYMAILROOMPART0123456789abcdefN1x", None),
            (
                b"PRIVACYMAILROOMPART0123456789abcdefN99999999999999999999999",
                None,
            ),
            (b"PRIVACYMAILROOMPART0123456789abcdefX1", None),
            (b"xPRIVACYMAILROOMPART0123456789abcdefN1", None),
            (b"", None),
        ];
        for (decoded, want) in table {
            assert_eq!(
                marker_index(decoded, MARKER),
                *want,
                "{:?}",
                String::from_utf8_lossy(decoded)
            );
        }
    }
}
