//! Mailbox synchronisation over IMAP: everything the daemon does to the
//! folders, the way chatmail/core keeps fetch-and-move in its `imap.rs`.
//!
//! - fetch by UID in bounded batches, handed to [`crate::intake`];
//! - the UID cursor per folder and the UIDVALIDITY reset rule;
//! - filing the originals after their commit (MOVE, with COPY + EXPUNGE as the
//!   fallback inside [`crate::imap`]);
//! - the Sent-folder scan (the team's own mail, [`crate::team::correspondence`])
//!   and the Sent-folder append of the mail we sent.
//!
//! `daemon` keeps only the loops, the backoff and shutdown; the protocol
//! itself (sessions, IDLE, commands) is [`crate::imap`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::ConfigError;
use crate::imap::{Imap, ImapError, SelectInfo};
use crate::intake::{self, Fetched};
use crate::mailroom::Mailroom;
use crate::outbox::smtp::SmtpError;
use crate::store::{self, StoreError};

mod spool;
pub use spool::SPOOL_ABOVE;

/// How many messages one intake transaction takes.
pub const BATCH: usize = 200;

/// How many outbox rows one Sent-folder round reads at a time.
const APPEND_BATCH: i64 = 100;

/// Errors of one mailbox cycle; the daemon logs them and reconnects.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Imap(#[from] ImapError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Casework(#[from] crate::casework::CaseworkError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Smtp(#[from] SmtpError),
    /// A large message could not be written to the blob store as it was
    /// fetched (`spool`); the message stays in the inbox for the next cycle.
    #[error(transparent)]
    Spool(#[from] crate::attachments::AttachmentError),
}

/// At most this many bytes of messages in memory per intake batch.
pub(crate) const BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// Splits listed messages into intake batches of at most [`BATCH`] messages
/// and [`BATCH_BYTES`] bytes (a message over `max_bytes` is fetched as headers
/// only and counts nothing), so a burst of large mail keeps memory bounded.
fn batches(listed: &[crate::imap::Listed], max_bytes: u64) -> Vec<&[crate::imap::Listed]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, l) in listed.iter().enumerate() {
        let size = u64::from(l.size.unwrap_or(0));
        // Headers only, or fetched piece by piece: next to nothing in memory.
        let size = if size > max_bytes || size > spool::SPOOL_ABOVE {
            0
        } else {
            size
        };
        if i > start && (i - start >= BATCH || bytes + size > BATCH_BYTES) {
            out.push(&listed[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < listed.len() {
        out.push(&listed[start..]);
    }
    out
}

/// A listed message whose body the server does not return (a damaged or
/// unreadable mail file, a server bug) is tried alone on this many mailbox
/// cycles; then its header is asked for once, and failing that it is recorded
/// without one. Either way it goes to review with a notice.
pub(crate) const BODY_ATTEMPTS: u32 = 3;

/// Messages whose body the server withheld, with the attempts so far.
///
/// Dovecot answers a FETCH that hits an unreadable file by closing the
/// connection, so a suspect message is never fetched together with others:
/// the others go through intake first, then each suspect alone, its attempt
/// counted before the fetch that may end the session. While one is being
/// retried the intake cursor stays below it, so neither a later batch nor a
/// restart passes over it silently (a restart only starts its count again).
#[derive(Debug, Default)]
pub struct MissingBodies {
    uid_validity: u32,
    attempts: BTreeMap<u32, u32>,
}

/// What to do next with a suspect message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suspect {
    /// Fetch its body alone.
    TryBody,
    /// Give up on the body: ask for its header once.
    TryHeader,
    /// Record it without a header.
    RecordBare,
}

impl MissingBodies {
    fn reset_if(&mut self, uid_validity: u32) {
        if self.uid_validity != uid_validity {
            self.attempts.clear();
            self.uid_validity = uid_validity;
        }
    }

    fn is_suspect(&self, uid_validity: u32, uid: u32) -> bool {
        self.uid_validity == uid_validity && self.attempts.contains_key(&uid)
    }

    /// Counts one more attempt at `uid` (before the fetch that may end the
    /// session) and says what the attempt is.
    fn attempt(&mut self, uid_validity: u32, uid: u32) -> Suspect {
        self.reset_if(uid_validity);
        let n = self.attempts.entry(uid).or_insert(0);
        *n += 1;
        match *n {
            n if n <= BODY_ATTEMPTS => Suspect::TryBody,
            n if n == BODY_ATTEMPTS + 1 => Suspect::TryHeader,
            _ => Suspect::RecordBare,
        }
    }

    /// Marks `uid` as a message whose body did not come with its batch.
    fn missed(&mut self, uid_validity: u32, uid: u32) {
        self.reset_if(uid_validity);
        self.attempts.entry(uid).or_insert(1);
    }

    /// The message was taken in (or is gone): nothing more to do.
    fn forget(&mut self, uid: u32) {
        self.attempts.remove(&uid);
    }

    /// The highest UID the cursor may reach: just below the lowest message
    /// still being retried.
    fn cursor_cap(&self, uid_validity: u32) -> Option<u32> {
        (self.uid_validity == uid_validity)
            .then(|| self.attempts.keys().next().map(|u| u.saturating_sub(1)))
            .flatten()
    }
}

/// Logs in with a password or an OAuth token (`imap.auth`).
pub(crate) async fn login_imap(room: &Mailroom) -> Result<Imap, CycleError> {
    let cfg = &room.config.imap;
    if cfg.auth == crate::config::AuthMethod::Oauth2
        && let Some(provider) = &room.oauth
    {
        return Ok(Imap::connect_as(cfg, crate::imap::Login::OAuth(provider)).await?);
    }
    let password = cfg.secret.resolve("imap")?.unwrap_or_default();
    Ok(Imap::connect(cfg, &password).await?)
}

/// Logs in, creates the folders the daemon files into (the Sent folder
/// found by its special use where needed), selects the mailbox.
pub(crate) async fn connect_imap(room: &Mailroom) -> Result<(Imap, SelectInfo), CycleError> {
    let cfg = &room.config.imap;
    let mut imap = login_imap(room).await?;
    let sent = imap.resolve_sent(&cfg.sent_mailbox).await?;
    imap.ensure_mailboxes(&[&cfg.processed_mailbox, &cfg.review_mailbox, &sent])
        .await?;
    let info = imap.select(&cfg.mailbox).await?;
    Ok((imap, info))
}

/// One pass over the mailbox: file what was committed but not yet moved, then
/// take in every new message in batches, filing each batch after its commit.
/// Returns how many messages were taken in. Stops between batches on shutdown.
pub async fn drain(
    room: &Mailroom,
    imap: &mut Imap,
    info: SelectInfo,
    shutdown: &CancellationToken,
    missing: &mut MissingBodies,
) -> Result<usize, CycleError> {
    let mailbox = room.config.imap.mailbox.clone();
    let uid_validity = info.uid_validity;
    let cursor = {
        let mut conn = room.store.conn().await?;
        store::cursor(&mut conn, &mailbox).await?
    };
    let backlog_start = (Utc::now()
        - chrono::Duration::days(i64::from(room.config.imap.initial_backlog_days)))
    .date_naive();
    let (mut after, since, first_pass) = match cursor {
        Some(c) if c.uid_validity == uid_validity => (c.last_uid, None, false),
        Some(_) => {
            warn!(
                uid_validity,
                "UIDVALIDITY changed: rescanning the mailbox; Message-ID and content hashes prevent doubles."
            );
            let mut conn = room.store.conn().await?;
            store::messages::close_stale_unfiled(&mut conn, uid_validity, Utc::now()).await?;
            (0, Some(backlog_start), true)
        }
        None => {
            info!(
                days = room.config.imap.initial_backlog_days,
                "First start: taking in the backlog window only."
            );
            (0, Some(backlog_start), true)
        }
    };
    file_pending(room, imap, uid_validity).await?;

    let max_bytes = room.config.imap.max_message_bytes;
    let mut taken = 0;
    // Delivery and the Sent copier wait while this runs.
    let _draining = room.intake.start();
    loop {
        let listed = imap.list_new(after, since).await?;
        if listed.is_empty() {
            break;
        }
        // Two lanes run side by side: the IMAP session moves the batch
        // committed last round and fetches the next chunk, while the store
        // lane writes the chunk fetched last round once its parse, started
        // at the end of that round (`Parsing::start`), is done. Batches are
        // still written, committed and moved one after the other, in UID
        // order, and no original moves before its batch is committed.
        let mut pending: Option<Parsing> = None;
        for chunk in batches(&listed, max_bytes) {
            let seen_missing: &MissingBodies = missing;
            let imap_lane = async {
                let moved = move_committed(room, imap, uid_validity).await?;
                let fetched = fetch_chunk(room, imap, uid_validity, seen_missing, chunk).await?;
                Ok::<_, CycleError>((moved, fetched))
            };
            let store_lane = async {
                match pending.take() {
                    Some(parsing) => {
                        write_parsed(room, &mailbox, uid_validity, seen_missing, parsing)
                            .await
                            .map(Some)
                    }
                    None => Ok(None),
                }
            };
            let (imap_done, store_done) = tokio::join!(imap_lane, store_lane);
            // Marked only now, whatever the store lane did: its transaction
            // held the write lock.
            if let Ok((moved, _)) = &imap_done {
                mark_moved(room, moved).await?;
            }
            let written = store_done?;
            let (_, fetched) = imap_done?;
            for uid in &fetched.missed {
                missing.missed(uid_validity, *uid);
            }
            if let Some(written) = written {
                taken += after_write(room, imap, &mailbox, uid_validity, missing, written).await?;
            }
            pending = Some(Parsing::start(room, fetched));
            // A long burst must not look like a hang to systemd.
            crate::systemd::Watchdog::from_env().ping();
            after = after.max(chunk.iter().map(|l| l.uid).max().unwrap_or(after));
            if shutdown.is_cancelled() {
                break;
            }
        }
        // Everything listed is written and filed before the next listing (or
        // the first-pass cursor) looks past it.
        if let Some(last) = pending.take() {
            let written = write_parsed(room, &mailbox, uid_validity, missing, last).await?;
            taken += after_write(room, imap, &mailbox, uid_validity, missing, written).await?;
        }
        file_pending(room, imap, uid_validity).await?;
        if shutdown.is_cancelled() {
            return Ok(taken);
        }
    }
    if first_pass {
        // Older messages left alone stay below the cursor for good.
        let last = info
            .uid_next
            .map_or(after, |n| n.saturating_sub(1))
            .max(after);
        let last = missing
            .cursor_cap(uid_validity)
            .map_or(last, |cap| last.min(cap));
        let mut conn = room.store.conn().await?;
        store::set_cursor(
            &mut conn,
            &mailbox,
            store::Cursor {
                uid_validity,
                last_uid: last,
            },
            Utc::now(),
        )
        .await?;
    }
    if taken > 0 {
        info!(count = taken, "Took in new mail.");
    }
    Ok(taken)
}

/// A chunk of the listing, fetched: what the IMAP lane hands over.
struct FetchedChunk {
    batch: Vec<Fetched>,
    /// The chunk's suspects (a body withheld before), each tried alone once
    /// the batch is written.
    suspects: Vec<crate::imap::Listed>,
    /// Listed, but no body came: recorded in [`MissingBodies`] after the lane.
    missed: Vec<u32>,
    started: std::time::Instant,
    fetched_at: std::time::Duration,
}

/// Fetches one chunk of the listing. Reads `missing` only: the lane runs
/// beside the store's write, and what it finds missing is recorded after.
async fn fetch_chunk(
    room: &Mailroom,
    imap: &mut Imap,
    uid_validity: u32,
    missing: &MissingBodies,
    chunk: &[crate::imap::Listed],
) -> Result<FetchedChunk, CycleError> {
    let max_bytes = room.config.imap.max_message_bytes;
    let (small, large): (Vec<&crate::imap::Listed>, Vec<&crate::imap::Listed>) = chunk
        .iter()
        .partition(|l| u64::from(l.size.unwrap_or(0)) <= max_bytes);
    // Only a message larger than the attachment limit can carry an
    // attachment over it: its structure says whether to read the body.
    let refused = refused_parts(room, imap, &small).await?;
    let small: Vec<&crate::imap::Listed> = small
        .into_iter()
        .filter(|l| !refused.contains_key(&l.uid))
        .collect();
    // Suspects (a body withheld before) are not fetched with the
    // others: one unreadable message must not take the batch down.
    let (suspects, fresh): (Vec<&crate::imap::Listed>, Vec<&crate::imap::Listed>) = small
        .into_iter()
        .partition(|l| missing.is_suspect(uid_validity, l.uid));
    // A large message is read piece by piece, never whole (`spool`).
    let (spooled, fresh): (Vec<&crate::imap::Listed>, Vec<&crate::imap::Listed>) = fresh
        .into_iter()
        .partition(|l| u64::from(l.size.unwrap_or(0)) > spool::SPOOL_ABOVE);
    let spooled_uids: Vec<u32> = spooled.iter().map(|l| l.uid).collect();
    let fresh_uids: Vec<u32> = fresh.iter().map(|l| l.uid).collect();
    let started = std::time::Instant::now();
    let mut bodies = fetch_bodies_tolerant(imap, &fresh_uids).await?;
    let fetched_at = started.elapsed();
    let mut batch = Vec::with_capacity(chunk.len());
    let mut missed = Vec::new();
    for l in chunk {
        if large.iter().any(|x| x.uid == l.uid) || refused.contains_key(&l.uid) {
            let raw = fetch_header_tolerant(imap, l.uid)
                .await?
                .unwrap_or_default();
            batch.push(Fetched {
                uid: l.uid,
                raw,
                size: u64::from(l.size.unwrap_or(0)),
                headers_only: true,
                body_missing: false,
                internal_date: l.internal_date,
                refused_part: refused.get(&l.uid).cloned(),
                spooled: None,
            });
        } else if let Some(raw) = bodies.remove(&l.uid) {
            let size = raw.len() as u64;
            batch.push(Fetched {
                uid: l.uid,
                raw,
                size,
                headers_only: false,
                body_missing: false,
                internal_date: l.internal_date,
                refused_part: None,
                spooled: None,
            });
        } else if spooled_uids.contains(&l.uid) {
            match spool::spool(room, imap, l).await? {
                Some(fetched) => batch.push(fetched),
                None => missed.push(l.uid),
            }
        } else if fresh_uids.contains(&l.uid) {
            // Listed, but no body came: tried alone next cycle.
            missed.push(l.uid);
        }
    }
    if !missed.is_empty() {
        info!(
            count = missed.len(),
            "Message bodies not returned by the server; retrying them one by one."
        );
    }
    Ok(FetchedChunk {
        batch,
        suspects: suspects.into_iter().copied().collect(),
        missed,
        started,
        fetched_at,
    })
}

/// A fetched batch whose parse runs on a blocking thread.
struct Parsing {
    batch: Arc<Vec<Fetched>>,
    parse: tokio::task::JoinHandle<Vec<intake::Parsed>>,
    /// The batch's suspects, each tried alone once the batch is written.
    suspects: Vec<crate::imap::Listed>,
    started: std::time::Instant,
    fetched_at: std::time::Duration,
}

impl Parsing {
    /// Starts parsing a fetched chunk on a blocking thread, at the end of
    /// the round that fetched it: the parse runs beside the next round's
    /// IMAP lane, whose store lane waits for it and then writes the batch.
    /// Starting it as soon as the chunk is fetched, beside the previous
    /// batch's write, gained nothing on two cores and held a second parsed
    /// chunk in memory (docs/benchmark.md, "where a batch's time goes").
    fn start(room: &Mailroom, fetched: FetchedChunk) -> Parsing {
        let batch = Arc::new(fetched.batch);
        let parse = {
            let room = room.clone();
            let batch = Arc::clone(&batch);
            tokio::task::spawn_blocking(move || intake::parse_batch(&room, &batch))
        };
        Parsing {
            batch,
            parse,
            suspects: fetched.suspects,
            started: fetched.started,
            fetched_at: fetched.fetched_at,
        }
    }
}

/// A batch written and committed, its originals not moved yet.
struct Written {
    count: usize,
    suspects: Vec<crate::imap::Listed>,
}

/// The store lane: waits for the batch's parse, then writes and commits it
/// and holds the cursor below any message still missing, at once, so that
/// an error in the IMAP lane cannot leave the cursor past one. Touches no
/// IMAP session, so it runs beside the IMAP lane.
async fn write_parsed(
    room: &Mailroom,
    mailbox: &str,
    uid_validity: u32,
    missing: &MissingBodies,
    parsing: Parsing,
) -> Result<Written, CycleError> {
    let Parsing {
        batch,
        parse,
        suspects,
        started,
        fetched_at,
    } = parsing;
    let parse_started = std::time::Instant::now();
    let parsed = match parse.await {
        Ok(parsed) => parsed,
        Err(e) => {
            // Only a panic outside the parser (which catches its own) gets
            // here; parse again on this thread rather than lose the batch.
            warn!(error = %e, "Intake parse task failed; parsing the batch again.");
            intake::parse_batch(room, &batch)
        }
    };
    let parse_wait = parse_started.elapsed();
    let results =
        intake::write_batch(room, mailbox, uid_validity, &batch, &parsed, Utc::now()).await?;
    hold_cursor(room, mailbox, uid_validity, missing).await?;
    for (uid, outcome) in &results {
        debug!(uid, ?outcome, "Message processed.");
    }
    debug!(
        count = batch.len(),
        fetch_ms = fetched_at.as_millis() as u64,
        parse_wait_ms = parse_wait.as_millis() as u64,
        write_ms = (parse_started.elapsed().saturating_sub(parse_wait)).as_millis() as u64,
        since_fetch_ms = started.elapsed().as_millis() as u64,
        "Intake batch timing."
    );
    Ok(Written {
        count: results.len(),
        suspects,
    })
}

/// After a batch's commit, with both lanes done: tries the batch's suspects
/// one by one. Returns how many messages were taken in.
async fn after_write(
    room: &Mailroom,
    imap: &mut Imap,
    mailbox: &str,
    uid_validity: u32,
    missing: &mut MissingBodies,
    written: Written,
) -> Result<usize, CycleError> {
    let Written {
        count: mut taken,
        suspects,
    } = written;
    for l in &suspects {
        let fetched = fetch_suspect(room, imap, missing, uid_validity, l).await?;
        let withheld_again = fetched.is_none();
        if let Some(fetched) = fetched {
            intake::process_batch(room, mailbox, uid_validity, &[fetched], Utc::now()).await?;
            missing.forget(l.uid);
            taken += 1;
        }
        hold_cursor(room, mailbox, uid_validity, missing).await?;
        file_pending(room, imap, uid_validity).await?;
        if withheld_again {
            // Dovecot may end the session a moment after it failed
            // to read a message: the next suspect's fetch would die
            // with it and count against an innocent message. One
            // failed suspect per turn; the rest wait for the next.
            break;
        }
    }
    Ok(taken)
}

/// How many Sent-folder messages one scan round handles (headers fetched,
/// judged, bodies fetched, recorded, cursor advanced).
pub(crate) const SENT_BATCH: usize = 50;

/// The largest Sent-folder message whose body the scan reads. Correspondence
/// recording needs the headers and the text a member typed; a 40 MB data
/// export sent from the shared mailbox is recorded from its headers alone.
pub(crate) const SENT_BODY_LIMIT: u64 = 1024 * 1024;

/// One attempt at a suspect message, counted before the fetch (which may end
/// the session). Returns what to take in, or `None` to try again next cycle
/// (or when it is gone).
async fn fetch_suspect(
    room: &Mailroom,
    imap: &mut Imap,
    missing: &mut MissingBodies,
    uid_validity: u32,
    l: &crate::imap::Listed,
) -> Result<Option<Fetched>, CycleError> {
    let withheld = |raw: Vec<u8>| Fetched {
        uid: l.uid,
        raw,
        size: u64::from(l.size.unwrap_or(0)),
        headers_only: true,
        body_missing: true,
        internal_date: l.internal_date,
        refused_part: None,
        spooled: None,
    };
    match missing.attempt(uid_validity, l.uid) {
        Suspect::TryBody if u64::from(l.size.unwrap_or(0)) > spool::SPOOL_ABOVE => {
            spool::spool(room, imap, l).await
        }
        Suspect::TryBody => {
            let mut bodies = fetch_bodies_tolerant(imap, &[l.uid]).await?;
            Ok(bodies.remove(&l.uid).map(|raw| Fetched {
                uid: l.uid,
                size: raw.len() as u64,
                raw,
                headers_only: false,
                body_missing: false,
                internal_date: l.internal_date,
                refused_part: None,
                spooled: None,
            }))
        }
        Suspect::TryHeader => {
            warn!(
                uid = l.uid,
                "The server did not return this message's body; recording it from its headers."
            );
            // No header either (Dovecot answers nothing, then closes the
            // connection): recorded bare. A message expunged meanwhile gives
            // a bare row too, and its MOVE then moves nothing.
            let header = fetch_header_tolerant(imap, l.uid).await?;
            Ok(Some(withheld(header.unwrap_or_default())))
        }
        Suspect::RecordBare => {
            warn!(
                uid = l.uid,
                "The server returns neither body nor header of this message; recording it bare."
            );
            Ok(Some(withheld(Vec::new())))
        }
    }
}

/// The messages of `listed` that carry an attachment over
/// `agents.max_attachment_bytes`, by the server's BODYSTRUCTURE: they are
/// refused by size anyway (SPEC §7), so only their headers are fetched. Asked
/// only for messages larger than that limit; a server that refuses the
/// question gets the bodies fetched as before.
async fn refused_parts(
    room: &Mailroom,
    imap: &mut Imap,
    listed: &[&crate::imap::Listed],
) -> Result<BTreeMap<u32, intake::RefusedPart>, CycleError> {
    let limit = room.config.agents.max_attachment_bytes;
    let candidates: Vec<u32> = listed
        .iter()
        .filter(|l| u64::from(l.size.unwrap_or(0)) > limit)
        .map(|l| l.uid)
        .collect();
    if candidates.is_empty() {
        return Ok(BTreeMap::new());
    }
    let parts = match imap.largest_parts(&candidates).await {
        Ok(parts) => parts,
        Err(e) if e.is_refusal() => {
            warn!(error = %crate::logging::Personal(&e), "The server refused to describe large messages; fetching them whole.");
            return Ok(BTreeMap::new());
        }
        Err(e) => return Err(e.into()),
    };
    Ok(parts
        .into_iter()
        .filter(|(_, p)| p.min_decoded > limit)
        .map(|(uid, p)| {
            let part = intake::RefusedPart {
                filename: p.filename,
                at_least: p.min_decoded,
            };
            (uid, part)
        })
        .collect())
}

/// The bodies of `uids`. When the server refuses the batch (NO or BAD: one
/// damaged or unreadable message makes Dovecot answer `NO [SERVERBUG]` for
/// the whole FETCH), each message is fetched alone, and those refused are
/// left out: the caller retries them and finally sends them to review, so
/// one message can never block intake for good.
async fn fetch_bodies_tolerant(
    imap: &mut Imap,
    uids: &[u32],
) -> Result<BTreeMap<u32, Vec<u8>>, CycleError> {
    if uids.is_empty() {
        return Ok(BTreeMap::new());
    }
    match imap.fetch_bodies(uids).await {
        Ok(bodies) => return Ok(bodies.into_iter().collect()),
        Err(e) if e.is_refusal() => {
            warn!(error = %crate::logging::Personal(&e), count = uids.len(), "The server refused a batch fetch; fetching the messages one by one.");
        }
        Err(e) => return Err(e.into()),
    }
    let mut out = BTreeMap::new();
    for &uid in uids {
        match imap.fetch_bodies(&[uid]).await {
            Ok(bodies) => out.extend(bodies),
            Err(e) if e.is_refusal() => {
                warn!(uid, error = %crate::logging::Personal(&e), "The server refused this message's body.");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The header block of `uid`; an empty one when the server refuses even
/// that (the message is still recorded and filed), `None` when it is gone.
async fn fetch_header_tolerant(imap: &mut Imap, uid: u32) -> Result<Option<Vec<u8>>, CycleError> {
    match imap.fetch_header(uid).await {
        Ok(header) => Ok(header),
        Err(e) if e.is_refusal() => {
            warn!(uid, error = %crate::logging::Personal(&e), "The server refused this message's header too.");
            Ok(Some(Vec::new()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Keeps the intake cursor below the lowest message whose body is still
/// being retried, so the next cycle lists it again.
async fn hold_cursor(
    room: &Mailroom,
    mailbox: &str,
    uid_validity: u32,
    missing: &MissingBodies,
) -> Result<(), CycleError> {
    let Some(cap) = missing.cursor_cap(uid_validity) else {
        return Ok(());
    };
    let mut conn = room.store.conn().await?;
    let current = store::cursor(&mut conn, mailbox).await?;
    if current.is_some_and(|c| c.uid_validity == uid_validity && c.last_uid > cap) {
        store::set_cursor(
            &mut conn,
            mailbox,
            store::Cursor {
                uid_validity,
                last_uid: cap,
            },
            Utc::now(),
        )
        .await?;
    }
    Ok(())
}

/// Reads new messages in the Sent folder: a team member's own mail to a
/// consumer, sent from a mail client on the shared mailbox, is attached to its
/// case as correspondence. Our own copies (HMAC Message-IDs) are skipped.
/// Leaves the Sent folder selected: the caller selects the inbox again.
///
/// Bounded: headers first, in rounds of [`SENT_BATCH`]; a body is fetched
/// only for a message that belongs to a case and is at most
/// [`SENT_BODY_LIMIT`]; each round commits and advances the cursor. A message
/// that fails to record is logged and passed over, never retried for ever.
pub(crate) async fn scan_sent(room: &Mailroom, imap: &mut Imap) -> Result<usize, CycleError> {
    let sent = imap.sent_folder(&room.config.imap.sent_mailbox).to_string();
    let key = format!("sent:{sent}");
    let info = imap.select(&sent).await?;
    let cursor = {
        let mut conn = room.store.conn().await?;
        store::cursor(&mut conn, &key).await?
    };
    let after = match cursor {
        Some(c) if c.uid_validity == info.uid_validity => c.last_uid,
        _ => {
            // First look (or a reset folder): history before the daemon is not imported.
            let last = info.uid_next.map_or(0, |n| n.saturating_sub(1));
            let mut conn = room.store.conn().await?;
            store::set_cursor(
                &mut conn,
                &key,
                store::Cursor {
                    uid_validity: info.uid_validity,
                    last_uid: last,
                },
                Utc::now(),
            )
            .await?;
            return Ok(0);
        }
    };
    let listed = imap.list_new(after, None).await?;
    let mut recorded = 0;
    for round in listed.chunks(SENT_BATCH) {
        recorded += scan_sent_round(room, imap, &key, info.uid_validity, round).await?;
        crate::systemd::Watchdog::from_env().ping();
    }
    if recorded > 0 {
        info!(
            count = recorded,
            "Team correspondence found in the Sent folder."
        );
    }
    Ok(recorded)
}

/// One round of [`scan_sent`]: headers, then the bodies worth reading, then
/// one short transaction that records them and moves the cursor.
async fn scan_sent_round(
    room: &Mailroom,
    imap: &mut Imap,
    key: &str,
    uid_validity: u32,
    round: &[crate::imap::Listed],
) -> Result<usize, CycleError> {
    let uids: Vec<u32> = round.iter().map(|l| l.uid).collect();
    let headers = imap.fetch_headers(&uids).await?;
    let mut wanted = Vec::new();
    {
        let mut conn = room.store.conn().await?;
        for (uid, header) in headers {
            if crate::team::correspondence::wanted_from_sent(&mut conn, room, &header).await? {
                let size = round
                    .iter()
                    .find(|l| l.uid == uid)
                    .and_then(|l| l.size)
                    .map_or(header.len() as u64, u64::from);
                wanted.push((uid, size, header));
            }
        }
    }
    let small: Vec<u32> = wanted
        .iter()
        .filter(|(_, size, _)| *size <= SENT_BODY_LIMIT)
        .map(|(uid, _, _)| *uid)
        .collect();
    let mut bodies: BTreeMap<u32, Vec<u8>> = if small.is_empty() {
        BTreeMap::new()
    } else {
        imap.fetch_bodies(&small).await?.into_iter().collect()
    };
    let now = Utc::now();
    let mut recorded = 0;
    let mut tx = room.store.begin().await?;
    for (uid, size, header) in &wanted {
        // Over the cap (or the body not returned): the headers stand for it.
        let raw = bodies.remove(uid).unwrap_or_else(|| header.clone());
        let mut sp = tx.begin().await.map_err(StoreError::from)?;
        match crate::team::correspondence::from_sent_folder(&mut sp, room, &raw, *size, now).await {
            Ok(true) => {
                sp.commit().await.map_err(StoreError::from)?;
                recorded += 1;
            }
            Ok(false) => sp.commit().await.map_err(StoreError::from)?,
            Err(e) => {
                sp.rollback().await.map_err(StoreError::from)?;
                warn!(uid, error = %crate::logging::Personal(&e), "Sent-folder message could not be recorded; passed over.");
            }
        }
    }
    let last = uids.iter().copied().max().unwrap_or(0);
    let current = store::cursor(&mut tx, key).await?.map_or(0, |c| c.last_uid);
    store::set_cursor(
        &mut tx,
        key,
        store::Cursor {
            uid_validity,
            last_uid: last.max(current),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(recorded)
}

/// Moves originals whose effects are committed to their folder, then marks
/// them filed. Run before every intake too, so a crash between commit and
/// move is finished on restart without doing anything twice.
pub(crate) async fn file_pending(
    room: &Mailroom,
    imap: &mut Imap,
    uid_validity: u32,
) -> Result<(), CycleError> {
    let moved = move_committed(room, imap, uid_validity).await?;
    mark_moved(room, &moved).await
}

/// The IMAP half of [`file_pending`]: moves every committed, unfiled
/// original to its folder and returns their rows, not yet marked (none when
/// nothing was committed since the last move: one indexed read). It reads
/// the store but never writes it, so it can run while intake's write holds
/// the write lock. A crash before [`mark_moved`] moves nothing twice: the
/// next MOVE of those UIDs finds them gone.
async fn move_committed(
    room: &Mailroom,
    imap: &mut Imap,
    uid_validity: u32,
) -> Result<Vec<i64>, CycleError> {
    let rows = {
        let mut conn = room.store.conn().await?;
        store::messages::unfiled(&mut conn, uid_validity).await?
    };
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut by_target: BTreeMap<String, (Vec<u32>, Vec<i64>)> = BTreeMap::new();
    for (id, uid, target) in rows {
        let entry = by_target.entry(target).or_default();
        entry.0.push(uid);
        entry.1.push(id);
    }
    crate::faults::hit("before_move");
    let mut moved = Vec::new();
    for (target, (uids, ids)) in by_target {
        imap.move_uids(&uids, &target).await?;
        moved.extend(ids);
    }
    Ok(moved)
}

/// Marks the rows [`move_committed`] moved as filed.
async fn mark_moved(room: &Mailroom, moved: &[i64]) -> Result<(), CycleError> {
    if moved.is_empty() {
        return Ok(());
    }
    let mut conn = room.store.conn().await?;
    store::messages::mark_filed(&mut conn, moved, Utc::now()).await?;
    Ok(())
}

/// `smtp.sent_copy`: which of `rows` the server already keeps a copy of in
/// the Sent folder (Gmail and Exchange Online save mail sent through their
/// SMTP), so that the team does not see every reply twice. `"server"`: all;
/// `"append"`: none; `"auto"`: those whose Message-ID is found there, asked
/// for the whole batch at once ([`crate::imap::Imap::message_ids_present`]).
async fn server_kept_copies(
    room: &Mailroom,
    imap: &mut Imap,
    rows: &[(i64, Vec<u8>)],
) -> Result<std::collections::HashSet<i64>, CycleError> {
    match room.config.smtp.sent_copy {
        crate::config::SentCopy::Server => Ok(rows.iter().map(|(id, _)| *id).collect()),
        crate::config::SentCopy::Append => Ok(std::collections::HashSet::new()),
        crate::config::SentCopy::Auto => {
            let ids: Vec<(i64, String)> = rows
                .iter()
                .filter_map(|(id, raw)| {
                    mail_parser::MessageParser::default()
                        .parse_headers(raw)
                        .and_then(|m| m.message_id().map(str::to_string))
                        .map(|message_id| (*id, message_id))
                })
                .collect();
            let wanted: Vec<String> = ids.iter().map(|(_, m)| m.clone()).collect();
            let sent = imap.sent_folder(&room.config.imap.sent_mailbox).to_string();
            let present = imap.message_ids_present(&sent, &wanted).await?;
            Ok(ids
                .into_iter()
                .filter(|(_, m)| present.contains(m))
                .map(|(id, _)| id)
                .collect())
        }
    }
}

/// Copies sent mail to the Sent folder, so the shared mailbox shows the whole
/// conversation. A copy that fails is tried again next time. Stops between
/// messages once `stop` is cancelled.
///
/// Copies are recorded every `MARK_EVERY` (25) APPENDs (and before an error is
/// returned) rather than one sync per copy: a crash in between can append up
/// to that many copies a second time with `sent_copy = "append"`; with
/// `"auto"` the next run finds them in the folder.
pub(crate) async fn append_sent(
    room: &Mailroom,
    imap: &mut Imap,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<usize, CycleError> {
    let mut count = 0;
    let mut tried = std::collections::HashSet::new();
    loop {
        // A burst is taken in first (see `Draining`).
        room.intake.wait().await;
        let rows = {
            let mut conn = room.store.conn().await?;
            store::outbox::unappended(&mut conn, copy_sent_before(room, Utc::now()), APPEND_BATCH)
                .await?
        };
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|(id, _)| tried.insert(*id))
            .collect();
        if rows.is_empty() {
            break;
        }
        let kept = server_kept_copies(room, imap, &rows).await?;
        if !kept.is_empty() {
            let ids: Vec<i64> = kept.iter().copied().collect();
            let mut conn = room.store.conn().await?;
            store::outbox::mark_appended_all(&mut conn, &ids, Utc::now()).await?;
        }
        let sent = imap.sent_folder(&room.config.imap.sent_mailbox).to_string();
        let mut appended: Vec<i64> = Vec::new();
        for (id, raw) in rows {
            if kept.contains(&id) {
                continue;
            }
            if stop.is_cancelled() {
                break;
            }
            let result = imap.append(&sent, &raw, &["\\Seen"]).await;
            match result {
                Ok(()) => {
                    appended.push(id);
                    count += 1;
                    if appended.len() >= MARK_EVERY {
                        mark_copied(room, &mut appended).await?;
                    }
                }
                // The server refused this one (quota, size): note it, go on.
                Err(e) if e.is_refusal() => {
                    let error = e.to_string();
                    warn!(outbox = id, error = %crate::logging::Personal(&error), "Sent-folder copy refused.");
                    let mut conn = room.store.conn().await?;
                    store::outbox::append_failed(&mut conn, id, &error).await?;
                }
                // The connection is gone: the rest waits for the next session.
                Err(e) => {
                    mark_copied(room, &mut appended).await?;
                    return Err(e.into());
                }
            }
        }
        mark_copied(room, &mut appended).await?;
        if stop.is_cancelled() {
            break;
        }
    }
    if count > 0 {
        info!(count, "Copied sent mail to the Sent folder.");
    }
    Ok(count)
}

/// With `smtp.sent_copy = "auto"`, how long after SMTP accepted a mail the
/// Sent folder is first asked for the server's own copy: servers that keep
/// one (Exchange with a plain SMTP login, some hosted relays) save it a
/// moment after accepting the mail, and asking at once would find nothing
/// and append a second copy. Mail sent more recently waits for a later turn
/// (the daemon's copier wakes when it is due; `run --once` leaves it to the
/// next run).
pub const AUTO_COPY_SETTLE: chrono::Duration = chrono::Duration::seconds(30);

/// Mail sent at or before this time may be copied to Sent now.
fn copy_sent_before(room: &Mailroom, now: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    match room.config.smtp.sent_copy {
        crate::config::SentCopy::Auto => now - AUTO_COPY_SETTLE,
        crate::config::SentCopy::Append | crate::config::SentCopy::Server => now,
    }
}

/// When the oldest Sent-folder copy that is not due yet becomes due, if any
/// is waiting (see [`AUTO_COPY_SETTLE`]).
pub(crate) async fn next_copy_due(
    room: &Mailroom,
) -> Result<Option<chrono::DateTime<Utc>>, CycleError> {
    let oldest = {
        let mut conn = room.store.conn().await?;
        store::outbox::oldest_unappended(&mut conn).await?
    };
    let now = Utc::now();
    Ok(oldest
        .map(|sent| sent + (now - copy_sent_before(room, now)))
        .filter(|due| *due > now))
}

/// How many Sent-folder copies are recorded in one statement.
const MARK_EVERY: usize = 25;

/// Records `ids` as copied to Sent (one statement) and empties it.
async fn mark_copied(room: &Mailroom, ids: &mut Vec<i64>) -> Result<(), CycleError> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut conn = room.store.conn().await?;
    store::outbox::mark_appended_all(&mut conn, ids, Utc::now()).await?;
    ids.clear();
    Ok(())
}

/// Copies sent mail to the Sent folder over a connection of its own (the
/// Sent-folder copier's, so the inbox session is never interrupted). Does
/// not log in when there is nothing to copy.
pub async fn copy_to_sent(
    room: &Mailroom,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(), CycleError> {
    let waiting = {
        let mut conn = room.store.conn().await?;
        store::outbox::unappended(&mut conn, copy_sent_before(room, Utc::now()), 1).await?
    };
    if waiting.is_empty() {
        return Ok(());
    }
    let cfg = &room.config.imap;
    let mut imap = login_imap(room).await?;
    let sent = imap.resolve_sent(&cfg.sent_mailbox).await?;
    imap.ensure_mailboxes(&[&sent]).await?;
    append_sent(room, &mut imap, stop).await?;
    logout(imap).await;
    Ok(())
}

/// LOGOUT, but never for long: a server that stops answering must not hold
/// up shutdown (SPEC §10: exit within 10 s).
pub async fn logout(imap: Imap) {
    match tokio::time::timeout(Duration::from_secs(3), imap.logout()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "Logout failed."),
        Err(_) => debug!("Logout timed out."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::Listed;

    fn listed(sizes: &[u32]) -> Vec<Listed> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, s)| Listed {
                uid: i as u32 + 1,
                size: Some(*s),
                internal_date: None,
            })
            .collect()
    }

    #[test]
    fn withheld_bodies_are_retried_then_given_up() {
        let mut m = MissingBodies::default();
        assert_eq!(m.cursor_cap(7), None);
        assert!(!m.is_suspect(7, 10));
        m.missed(7, 10);
        m.missed(7, 12);
        assert!(m.is_suspect(7, 10) && m.is_suspect(7, 12));
        assert_eq!(m.cursor_cap(7), Some(9), "the cursor stays below 10");
        m.forget(10);
        assert_eq!(m.cursor_cap(7), Some(11));
        // 12 missed with its batch (attempt 1), then tried alone.
        assert_eq!(m.attempt(7, 12), Suspect::TryBody);
        assert_eq!(m.attempt(7, 12), Suspect::TryBody);
        assert_eq!(m.attempt(7, 12), Suspect::TryHeader);
        assert_eq!(
            m.attempt(7, 12),
            Suspect::RecordBare,
            "the header failed too"
        );
        m.forget(12);
        assert_eq!(m.cursor_cap(7), None, "nothing holds the cursor now");
        // A new UIDVALIDITY starts the count again.
        m.missed(7, 5);
        assert_eq!(m.attempt(8, 5), Suspect::TryBody);
        assert!(!m.is_suspect(7, 5));
        assert_eq!(m.cursor_cap(8), Some(4));
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let many = listed(&vec![1000; 2 * BATCH + 20]);
        let sizes: Vec<usize> = batches(&many, u64::MAX).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [BATCH, BATCH, 20]);
        let mib = 1024 * 1024;
        let spool = spool::SPOOL_ABOVE as u32;
        let largest_whole = listed(&[spool; 20]);
        let sizes: Vec<usize> = batches(&largest_whole, u64::MAX)
            .iter()
            .map(|b| b.len())
            .collect();
        let per_batch = (BATCH_BYTES / spool::SPOOL_ABOVE) as usize;
        assert_eq!(sizes, [per_batch, 20 - per_batch]);
        // Read piece by piece: never in memory whole, so they cost nothing.
        let big = listed(&[20 * mib, 20 * mib, 10 * mib, 30 * mib]);
        let sizes: Vec<usize> = batches(&big, u64::MAX).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [4]);
        // Over the message limit: only headers are fetched, so it costs nothing.
        let huge = listed(&[60 * mib, 60 * mib]);
        assert_eq!(batches(&huge, 50 * u64::from(mib)).len(), 1);
        assert!(batches(&[], 10).is_empty());
    }
}
