//! Large messages, fetched part by part so that none is ever in memory whole
//! (issue 13: a 20,000-request burst with a 40 MB attachment among them in
//! 64 MiB).
//!
//! A message over [`SPOOL_ABOVE`] is read in pieces of [`PIECE`] bytes
//! (`BODY.PEEK[]<offset.len>`). Each piece goes to the blob store as the raw
//! message's file, and through [`Splitter`], which writes the decoded content
//! of every big attachment to a file of its own and keeps a small skeleton:
//! the message with those bodies replaced by a marker. Intake parses the
//! skeleton as usual, and the attachments the markers stand for get the
//! stored files (`intake::unspool`). The message row then names its raw
//! bytes by their hash instead of holding them (`messages.raw_file`).

use tracing::{debug, warn};

use crate::attachments::blobs::BlobWriter;
use crate::attachments::{AttachmentError, Blobs};
use crate::imap::{Imap, Listed};
use crate::intake::{Fetched, Spooled};
use crate::mailroom::Mailroom;
use crate::message::StoredContent;
use crate::message::split::{PartOut, Splitter};

use super::CycleError;

/// Messages larger than this are spooled. Below it a message is fetched
/// with its batch and parsed in memory (about three times its size, briefly).
pub const SPOOL_ABOVE: u64 = 2 * 1024 * 1024;

/// Bytes asked for per FETCH: the most of the message in memory at once.
const PIECE: u64 = 1024 * 1024;

/// An attachment whose encoded body is larger than this goes to a file of
/// its own; smaller parts stay in the skeleton.
const MIN_PART: usize = 256 * 1024;

/// Fetches `listed` piece by piece into the blob store. `None` when the
/// server returned no body (the UID is gone, or it withholds the body):
/// the caller treats it like a body missing from a batch fetch.
pub(super) async fn spool(
    room: &Mailroom,
    imap: &mut Imap,
    listed: &Listed,
) -> Result<Option<Fetched>, CycleError> {
    let marker = format!("PRIVACYMAILROOMPART{:032x}N", rand::random::<u128>());
    let blobs = &Blobs::new(&room.config.storage.attachments_dir);
    let mut splitter = Splitter::new(&marker, MIN_PART);
    let mut raw = blobs.writer()?;
    let mut parts = PartFiles::new(blobs);
    let mut offset = 0u64;
    loop {
        let piece = match imap.fetch_range(listed.uid, offset, PIECE).await {
            Ok(Some(piece)) => piece,
            Ok(None) => return Ok(None),
            // One unreadable message must not stop the mailbox: it is
            // tried again alone, then recorded from its headers.
            Err(e) if e.is_refusal() => {
                warn!(uid = listed.uid, error = %crate::logging::Personal(&e), "The server refused a piece of this message's body.");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        if piece.is_empty() {
            if offset == 0 {
                return Ok(None);
            }
            break;
        }
        raw.write(&piece)?;
        if splitter.feed(&piece, &mut parts).is_err() {
            return Err(parts.failure().into());
        }
        offset += piece.len() as u64;
        if (piece.len() as u64) < PIECE {
            break;
        }
    }
    let taken_out = splitter.spooled();
    let skeleton = match splitter.finish(&mut parts) {
        Ok(skeleton) => skeleton,
        Err(_) => return Err(parts.failure().into()),
    };
    let (whole, _) = raw.finish()?;
    debug!(
        uid = listed.uid,
        size = whole.size,
        parts = taken_out,
        skeleton = skeleton.len(),
        "Large message read piece by piece."
    );
    Ok(Some(Fetched {
        uid: listed.uid,
        raw: skeleton,
        size: whole.size,
        headers_only: false,
        body_missing: false,
        internal_date: listed.internal_date,
        refused_part: None,
        spooled: Some(Spooled {
            sha256: whole.sha256,
            marker,
            parts: parts.done,
        }),
    }))
}

/// Where [`Splitter`] puts the decoded parts: one blob each.
struct PartFiles<'a> {
    blobs: &'a Blobs,
    current: Option<BlobWriter>,
    done: Vec<StoredContent>,
    /// Why the last call failed: the splitter sees only an I/O error.
    failed: Option<AttachmentError>,
}

impl<'a> PartFiles<'a> {
    fn new(blobs: &'a Blobs) -> PartFiles<'a> {
        PartFiles {
            blobs,
            current: None,
            done: Vec::new(),
            failed: None,
        }
    }

    /// The error behind the splitter's failure.
    fn failure(&mut self) -> AttachmentError {
        self.failed.take().unwrap_or_else(|| AttachmentError::Io {
            action: "split",
            path: self.blobs.root().to_owned(),
            source: std::io::Error::other("the message could not be split into parts"),
        })
    }

    fn fail(&mut self, e: AttachmentError) -> std::io::Error {
        let io = std::io::Error::other(e.to_string());
        self.failed = Some(e);
        io
    }
}

impl PartOut for PartFiles<'_> {
    fn begin(&mut self, _index: usize) -> std::io::Result<()> {
        match self.blobs.writer() {
            Ok(w) => {
                self.current = Some(w);
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn write(&mut self, decoded: &[u8]) -> std::io::Result<()> {
        let result = match self.current.as_mut() {
            Some(w) => w.write(decoded),
            None => return Ok(()),
        };
        result.map_err(|e| self.fail(e))
    }

    fn end(&mut self) -> std::io::Result<()> {
        let Some(w) = self.current.take() else {
            return Ok(());
        };
        match w.finish() {
            Ok((stored, head)) => {
                self.done.push(StoredContent {
                    sha256: stored.sha256,
                    size: stored.size,
                    head,
                });
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}
