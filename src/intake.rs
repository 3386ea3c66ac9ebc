//! From fetched bytes to committed decisions (SPEC §2, §3, §5, §8).
//!
//! A batch of messages is handled in one `BEGIN IMMEDIATE` transaction. It is
//! written first without savepoints; if a message fails, the batch is rolled
//! back and written again with a savepoint per message, so that the one that
//! fails is rolled back to its savepoint, stored raw and sent to review, and
//! the batch goes on ([`write_batch`]). The caller moves the originals only
//! after the commit (`sync::file_pending`).
//!
//! Everything slow happens before the write transaction opens, on the parse
//! thread ([`parse_batch`]): parsing (with the caps of `imap.max_mime_parts`,
//! `imap.max_mime_depth` and `agents.max_attachments`), hashing, looking the
//! message over for what its route needs from the keys and the config
//! ([`look`]), and writing attachment files to disk, so the SQLite write
//! lock is held only for the rows. The watchdog is fed per message.

use chrono::{DateTime, Utc};
use sqlx::{Connection, SqliteConnection};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::cases::Case;
use crate::cases::engine::Notice;
use crate::cases::{Input, Kind};
use crate::casework::{self, CaseworkError};
use crate::classify;
use crate::ids::{CaseId, Purpose};
use crate::mailroom::Mailroom;
use crate::message::{self, Inbound};
use crate::store::messages::Disposition;
use crate::store::{self, NewMessage};

pub mod route;

pub use route::{Facts, Mail, Party, Refusal, Route, route};

/// One message fetched from the mailbox.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub uid: u32,
    /// The message; its header block when `headers_only`; its skeleton
    /// when `spooled`.
    pub raw: Vec<u8>,
    pub size: u64,
    pub headers_only: bool,
    /// The server listed the message but did not return its body, on
    /// several cycles (`sync::BODY_ATTEMPTS`): `raw` is its header block, and
    /// it goes to review with a notice instead of being skipped.
    pub body_missing: bool,
    /// When the mailbox received it (IMAP INTERNALDATE): the legal clocks run
    /// from here, not from when the daemon got round to it.
    pub internal_date: Option<DateTime<Utc>>,
    /// The server's BODYSTRUCTURE showed an attachment over
    /// `agents.max_attachment_bytes`: only the headers were fetched (`raw` is
    /// the header block), so a large message never sits in memory whole
    /// just to be refused.
    pub refused_part: Option<RefusedPart>,
    /// A large message fetched part by part (`sync::spool`): `raw` is then
    /// its skeleton, and the whole message and its big attachments are
    /// files in the blob store.
    pub spooled: Option<Spooled>,
}

impl Fetched {
    /// SHA-256 of the message as received (the de-duplication key, and
    /// the name of a spooled message's file).
    pub fn sha256(&self) -> String {
        match &self.spooled {
            Some(s) => s.sha256.clone(),
            None => crate::hash::sha256_hex(&self.raw),
        }
    }

    /// Where the message row keeps the bytes: a spooled message's original
    /// is the blob store's file named by [`Fetched::sha256`], any other's
    /// is in the row.
    fn original(&self) -> store::messages::Original<'_> {
        match self.spooled {
            Some(_) => store::messages::Original::File,
            None => store::messages::Original::Row(&self.raw),
        }
    }
}

/// What a large message fetched part by part left in the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    /// SHA-256 of the whole message: its file in the blob store.
    pub sha256: String,
    /// Stands for part `i` in the skeleton as `{marker}{i}`; it carries a
    /// random nonce, so a sender cannot forge it.
    pub marker: String,
    /// The contents of the parts taken out of the skeleton, in order.
    pub parts: Vec<message::StoredContent>,
}

/// An attachment known from the message's structure to be over
/// `agents.max_attachment_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedPart {
    pub filename: Option<String>,
    /// Its decoded size is at least this.
    pub at_least: u64,
}

/// Where the original goes once the transaction committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Processed,
    Review,
}

/// What intake decided for one message (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Opened { case_id: CaseId, kind: Kind },
    Reply { case_id: CaseId },
    TeamMail { case_id: Option<CaseId> },
    DeliveryReport,
    Automatic,
    Duplicate,
    Review { reason: &'static str },
    Failed,
}

/// Processes a batch; returns each UID with its outcome. Commits.
pub async fn process_batch(
    room: &Mailroom,
    mailbox: &str,
    uid_validity: u32,
    batch: &[Fetched],
    now: DateTime<Utc>,
) -> Result<Vec<(u32, Outcome)>, CaseworkError> {
    let parsed = parse_batch(room, batch);
    write_batch(room, mailbox, uid_validity, batch, &parsed, now).await
}

/// A message of a batch after the CPU half of intake ([`parse_batch`]):
/// parsed, hashed, and looked over for everything its route needs that is
/// not in the store ([`look`]).
#[derive(Debug)]
pub struct Parsed {
    inbound: Inbound,
    /// SHA-256 of the fetched bytes ([`Fetched::sha256`]).
    sha256: String,
    looked: Looked,
}

/// What [`look`] finds without the store.
#[derive(Debug)]
struct Looked {
    /// The message's [`Facts`] but for the store's part: `seen_before`,
    /// `cases` and `reported` are left empty for [`gather`] to fill.
    facts: Facts,
    /// The cases the message names: its thread, the notice it answers, a
    /// returned notice's, and what automatic mail refers to.
    named: Vec<CaseId>,
    /// The Message-ID a delivery report is about.
    reported_id: Option<String>,
    /// What opening a case would ask of the text, when the subject names a
    /// kind (the route's only way to [`Mail::Request`]).
    request: Option<Asked>,
}

/// What opening a `kind` case asks of the message beyond its route.
#[derive(Debug, Clone)]
struct Asked {
    kind: Kind,
    /// Whether an authorized agent sent it, for whom ([`classify::agent_of`]).
    agent: classify::AgentInfo,
    /// The requests needing verification that the text also makes
    /// ([`classify::also_requested`]; only read for a kind that needs none).
    also: Vec<Kind>,
}

impl Asked {
    fn of(room: &Mailroom, inbound: &Inbound, sender: &str, kind: Kind) -> Asked {
        Asked {
            kind,
            agent: classify::agent_of(sender, inbound, &room.config.agents.known_domains),
            also: if kind.needs_verification() {
                Vec::new()
            } else {
                classify::also_requested(inbound.head(), kind)
            },
        }
    }
}

/// The CPU half of a batch: parses every message (mail-parser, MIME caps),
/// hashes it, works out what its route needs from the keys and the config
/// ([`look`]) and writes the attachment files it may register. Touches no
/// database, so the IMAP loop runs it on a blocking thread while the
/// previous batch is written (`sync::drain`): intake's own thread, which
/// takes turns with the SQLite worker, then does only what needs the store
/// (issue 13, docs/benchmark.md).
pub fn parse_batch(room: &Mailroom, batch: &[Fetched]) -> Vec<Parsed> {
    let watchdog = crate::systemd::Watchdog::from_env();
    let started = std::time::Instant::now();
    let limits = room.config.mime_limits();
    let mut parsed = Vec::with_capacity(batch.len());
    for fetched in batch {
        let mut inbound = message::parse_with(&fetched.raw, &limits);
        if let Some(spooled) = &fetched.spooled {
            unspool(&mut inbound, spooled);
        }
        let looked = look(room, fetched, &inbound);
        prestore_files(room, fetched.uid, &inbound, &looked.facts.sender);
        parsed.push(Parsed {
            sha256: fetched.sha256(),
            inbound,
            looked,
        });
        watchdog.ping();
    }
    debug!(
        count = batch.len(),
        parse_ms = started.elapsed().as_millis() as u64,
        "Intake parse timing."
    );
    parsed
}

/// The database half of a batch: writes the rows of every message of
/// `batch` (parsed by [`parse_batch`], in the same order), advances the
/// cursor over it and commits. Returns each UID with its outcome.
pub async fn write_batch(
    room: &Mailroom,
    mailbox: &str,
    uid_validity: u32,
    batch: &[Fetched],
    parsed: &[Parsed],
    now: DateTime<Utc>,
) -> Result<Vec<(u32, Outcome)>, CaseworkError> {
    // Every statement's result wakes the waiting thread: spinning briefly
    // first spares most of those wake-ups (see `store::spin`).
    store::spin::spin_first(async {
        let started = std::time::Instant::now();
        let max_uid = batch.iter().map(|f| f.uid).max().unwrap_or(0);
        // Optimistic first: no savepoint per message (two round trips to the
        // SQLite worker each). If any message fails, the whole batch is rolled
        // back and written again with a savepoint per message, so the failure
        // is isolated exactly as before: that message stored raw and sent to
        // review, the others committed.
        let mut conn = room.store.batch().await?;
        let mut tx = conn.begin().await?;
        let mut isolated = false;
        let results = loop {
            match write_messages(
                &mut tx,
                room,
                mailbox,
                uid_validity,
                batch,
                parsed,
                now,
                isolated,
            )
            .await
            {
                Ok(results) => break results,
                Err(e) if !isolated => {
                    debug!(error = %crate::logging::Personal(&e), "A message of the batch failed; writing the batch again message by message.");
                    tx.rollback().await?;
                    tx = conn.begin().await?;
                    isolated = true;
                }
                Err(e) => return Err(e),
            }
        };
        let messages_done = started.elapsed();
        casework::burst::flush(&mut tx, room, now).await?;
        let notices_done = started.elapsed();
        let cursor = store::cursor(&mut tx, mailbox).await?;
        let last = cursor
            .filter(|c| c.uid_validity == uid_validity)
            .map_or(0, |c| c.last_uid);
        store::set_cursor(
            &mut tx,
            mailbox,
            store::Cursor {
                uid_validity,
                last_uid: last.max(max_uid),
            },
            now,
        )
        .await?;
        // The originals are moved right after this commit; the store runs with
        // `synchronous = FULL`, so it survives a power loss (no request sits in
        // Processed without its row).
        let commit_started = started.elapsed();
        tx.commit().await?;
        conn.done().await;
        // Where a batch's time goes (docs/benchmark.md reads these): its
        // messages, the new-case notices (one summary in a burst), the commit.
        debug!(
            count = batch.len(),
            before_commit_ms = commit_started.as_millis() as u64,
            messages_ms = messages_done.as_millis() as u64,
            notices_ms = (notices_done - messages_done).as_millis() as u64,
            commit_ms = (started.elapsed() - commit_started).as_millis() as u64,
            "Intake transaction timing."
        );
        room.outbox_wake.notify_one();
        Ok::<_, CaseworkError>(results)
    })
    .await
}

/// Writes the rows of every message of a batch inside `tx`. With
/// `isolated`, each message runs in its own savepoint and one that fails is
/// rolled back to it, stored raw and sent to review; without, the first
/// failure ends the write (the caller rolls back and tries isolated).
#[allow(clippy::too_many_arguments)]
async fn write_messages(
    tx: &mut SqliteConnection,
    room: &Mailroom,
    mailbox: &str,
    uid_validity: u32,
    batch: &[Fetched],
    parsed: &[Parsed],
    now: DateTime<Utc>,
    isolated: bool,
) -> Result<Vec<(u32, Outcome)>, CaseworkError> {
    let watchdog = crate::systemd::Watchdog::from_env();
    let mut results = Vec::with_capacity(batch.len());
    // Whether each message was seen before the batch, in one statement
    // (one round trip per batch instead of one per message; issue 13).
    let keys: Vec<store::messages::SeenKey<'_>> = parsed
        .iter()
        .map(|p| seen_key(&p.inbound, &p.sha256))
        .collect();
    let seen_before_batch = store::messages::seen_inbound_many(tx, &keys).await?;
    // The batch's cases are numbered from one block (see `CaseNumbers`),
    // and a new case's first reply goes with the next case's rows (see
    // `Carry`).
    let mut carry = casework::Carry::new(store::cases::CaseNumbers::reserving(batch.len()));
    for (i, (fetched, parsed)) in batch.iter().zip(parsed).enumerate() {
        watchdog.ping();
        let (inbound, sha) = (&parsed.inbound, parsed.sha256.as_str());
        // A message whose bytes or Message-ID an earlier one of this batch
        // shares may be a duplicate of a row written in this transaction:
        // the store is asked again. Otherwise the batch's answer holds.
        let seen = match keys.get(..i) {
            Some(earlier)
                if !earlier.iter().any(|k| {
                    k.sha256 == sha
                        || (k.message_id.is_some() && k.message_id == inbound.message_id.as_deref())
                }) =>
            {
                seen_before_batch.get(i).cloned().map(Seen::Known)
            }
            _ => None,
        }
        .unwrap_or(Seen::Ask);
        // One span per message: every line about it names mailbox and UID.
        let span = info_span!("message", mailbox, uid = fetched.uid);
        let arrived = Arrived {
            uid_validity,
            fetched,
            parsed,
            seen,
        };
        let outcome = async {
            if !isolated {
                return process_one(tx, room, arrived, &mut carry, now).await;
            }
            let mut sp = tx.begin().await?;
            // Rolled back, the message's numbers (and a block reserved for
            // it) are handed out again.
            let before = carry.numbers();
            let written = async {
                let outcome = process_one(&mut sp, room, arrived, &mut carry, now).await?;
                // Its reply belongs inside its savepoint.
                carry.flush(&mut sp).await?;
                Ok::<_, CaseworkError>(outcome)
            }
            .await;
            match written {
                Ok(outcome) => {
                    sp.commit().await?;
                    Ok::<_, CaseworkError>(outcome)
                }
                Err(e) => {
                    sp.rollback().await?;
                    carry.roll_back(before);
                    warn!(uid = fetched.uid, error = %crate::logging::Personal(&e), "Message could not be processed; stored raw and sent to review.");
                    record_failed(tx, room, uid_validity, fetched, &e.to_string(), now).await?;
                    Ok(Outcome::Failed)
                }
            }
        }
        .instrument(span)
        .await?;
        results.push((fetched.uid, outcome));
    }
    carry.finish(tx).await?;
    Ok(results)
}

/// Puts the contents a spooled message's skeleton stands for back in its
/// attachments: each part whose decoded body is a marker gets the stored
/// file's hash, size and first bytes instead of bytes in memory.
fn unspool(inbound: &mut Inbound, spooled: &Spooled) {
    for a in &mut inbound.attachments {
        let part = message::split::marker_index(&a.bytes, &spooled.marker)
            .and_then(|i| spooled.parts.get(i));
        if let Some(part) = part {
            a.bytes = Vec::new();
            a.stored = Some(part.clone());
        }
    }
}

/// Writes the attachment files a message may register before the write
/// transaction opens (see [`crate::attachments::store_before_commit`]). A
/// failure is only logged: `record` tries again inside the transaction, and
/// a message that fails there goes to review.
fn prestore_files(room: &Mailroom, uid: u32, inbound: &Inbound, sender: &str) {
    let threaded = !inbound.in_reply_to.is_empty()
        || !inbound.references.is_empty()
        || classify::find_case_tag(&inbound.subject, &room.config.policy.case_prefix).is_some();
    if let Err(e) = crate::attachments::store_before_commit(room, inbound, sender, threaded) {
        warn!(uid, error = %crate::logging::Personal(&e), "Cannot store attachment files before the commit; trying inside it.");
    }
}

fn target_name(room: &Mailroom, target: Target) -> &str {
    match target {
        Target::Processed => &room.config.imap.processed_mailbox,
        Target::Review => &room.config.imap.review_mailbox,
    }
}

/// One message on its way through intake: what was fetched, what it says,
/// and who wrote it.
struct Record<'a> {
    uid_validity: u32,
    fetched: &'a Fetched,
    inbound: &'a Inbound,
    sha: &'a str,
    /// Who wrote it ([`sender_of`]; "" when missing).
    sender: &'a str,
    /// What opening a case of the subject's kind asks, worked out by
    /// [`look`].
    asked: Option<&'a Asked>,
}

impl Record<'_> {
    /// Writes the inbound message row, to be filed to `target` after commit.
    async fn write(
        &self,
        conn: &mut SqliteConnection,
        room: &Mailroom,
        case_id: Option<&str>,
        disposition: Disposition,
        target: Target,
        now: DateTime<Utc>,
    ) -> Result<i64, CaseworkError> {
        let message = self.message(room, case_id, disposition, target, now);
        Ok(store::messages::insert(conn, &message).await?)
    }

    /// The inbound message row [`Record::write`] inserts.
    fn message<'b>(
        &'b self,
        room: &'b Mailroom,
        case_id: Option<&'b str>,
        disposition: Disposition,
        target: Target,
        now: DateTime<Utc>,
    ) -> NewMessage<'b> {
        let from = self.inbound.from.as_ref().map(|a| a.addr.as_str());
        NewMessage {
            case_id,
            direction: "in",
            message_id: self.inbound.message_id.as_deref(),
            subject: &self.inbound.subject,
            from_addr: from,
            // Mailbox receipt, so a case `#open`ed from review later
            // keeps the clock the law starts at receipt (§7021(b)).
            at: self.received_at(now),
            template: None,
            sha256: self.sha,
            size: self.fetched.size as i64,
            original: self.fetched.original(),
            body_text: Some(&self.inbound.text),
            disposition,
            uid_validity: Some(self.uid_validity),
            uid: Some(self.fetched.uid),
            target_mailbox: Some(target_name(room, target)),
        }
    }

    /// When the mailbox received the message (IMAP INTERNALDATE); never in
    /// the future.
    fn received_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.fetched.internal_date.map_or(now, |d| d.min(now))
    }
}

/// What [`store::messages::seen_inbound`] compares of a message.
fn seen_key<'a>(inbound: &'a Inbound, sha: &'a str) -> store::messages::SeenKey<'a> {
    store::messages::SeenKey {
        message_id: inbound.message_id.as_deref(),
        from_addr: inbound.from.as_ref().map(|a| a.addr.as_str()),
        subject: &inbound.subject,
        sha256: sha,
    }
}

/// Whether a message was seen before, when the batch already knows.
#[derive(Debug, Clone)]
enum Seen {
    /// The earlier inbound row and where its original was filed.
    Known(Option<(i64, Option<String>)>),
    /// Ask the store.
    Ask,
}

/// A message of the batch as [`process_one`] takes it.
#[derive(Debug)]
struct Arrived<'a> {
    uid_validity: u32,
    fetched: &'a Fetched,
    parsed: &'a Parsed,
    seen: Seen,
}

/// One message: the facts looked up, the [`route()`] decided, the route
/// carried out.
async fn process_one(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    arrived: Arrived<'_>,
    carry: &mut casework::Carry,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let Arrived {
        uid_validity,
        fetched,
        parsed,
        seen,
    } = arrived;
    let facts = gather(conn, room, parsed, seen, carry).await?;
    let decided = route(&parsed.inbound, &facts);
    let rec = Record {
        uid_validity,
        fetched,
        inbound: &parsed.inbound,
        sha: &parsed.sha256,
        sender: &facts.sender,
        asked: parsed.looked.request.as_ref(),
    };
    carry_out(conn, room, &rec, &facts, decided, carry, now).await
}

/// Everything [`route()`] needs that is not in the message itself and not
/// in the store: the keys (our Message-IDs) and the config (team, agents,
/// rules). Run by [`parse_batch`], beside the previous batch's write.
fn look(room: &Mailroom, fetched: &Fetched, inbound: &Inbound) -> Looked {
    let sender = sender_of(room, inbound);
    let prefix = &room.config.policy.case_prefix;
    let team = room.team();
    let referenced = room.keys.verify_any(
        inbound
            .in_reply_to
            .iter()
            .chain(inbound.references.iter())
            .map(String::as_str),
    );
    let in_text = room.keys.find_in_text(&fetched.raw);
    let thread = classify::thread_case_id(&referenced, &inbound.subject, prefix);
    let mut named: Vec<CaseId> = Vec::new();
    named.extend(thread.iter().cloned());
    if let Some(crate::team::mail::Scope::Case(id)) =
        crate::team::mail::Scope::from_references(&referenced)
    {
        named.push(id);
    }
    if let Some(v) = in_text.iter().find(|v| v.purpose != Purpose::Reply)
        && matches!(v.purpose, Purpose::Notice | Purpose::Result)
    {
        // We signed these IDs ourselves.
        named.push(CaseId::from_stored(v.subject_id.clone()));
    }
    if inbound.auto.is_some()
        && let Some(v) = referenced.first()
    {
        named.push(CaseId::from_stored(v.subject_id.clone()));
    }
    named.sort();
    named.dedup();
    let reported_id = inbound
        .dsn
        .as_ref()
        .and_then(|d| d.original_message_id.clone());
    let sender_is_member = team.is_member(&sender);
    // Commands count only from a member (anyone else's are never read).
    let command_lines = if sender_is_member {
        crate::team::commands::parse(&message::reply_text::new_text(inbound.head()), prefix).len()
    } else {
        0
    };
    let subject_kind = classify::match_subject(&room.config.rules, &inbound.subject);
    let request = subject_kind.map(|kind| Asked::of(room, inbound, &sender, kind));
    let facts = Facts {
        seen_before: None,
        headers_only: fetched.headers_only,
        body_missing: fetched.body_missing,
        size: fetched.size,
        max_attachment_bytes: room.config.agents.max_attachment_bytes,
        refused_part: fetched.refused_part.clone(),
        sender_is_own: room.is_own_address(&sender),
        written_by_us: is_ours(room, inbound),
        sender_is_member,
        member_authorized: crate::team::auth::authorize(
            &team,
            &sender,
            &inbound.authentication_results,
        )
        .is_ok(),
        sender_known_agent: crate::address::authres::vouched_known_agent(
            &sender,
            &room.config.agents.known_domains,
            &team.trusted_authserv_ids,
            &inbound.authentication_results,
        ),
        sender_answerable: crate::address::parse_mailbox(&sender).is_some(),
        referenced,
        in_text,
        thread,
        command_lines,
        cases: Vec::new(),
        reported: None,
        subject_kind,
        // Only read when no rule matched (a body scan).
        reads_like: match subject_kind {
            Some(_) => None,
            None => classify::looks_like_request(inbound.head()),
        },
        sender,
    };
    Looked {
        facts,
        named,
        reported_id,
        request,
    }
}

/// [`look`]'s facts completed from the store: seen before, the cases the
/// message names, the outbox row a report is about. Only what the message
/// could use is looked up: a new request with no reference and no tag whose
/// batch already knows it was not seen before reads nothing.
async fn gather(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    parsed: &Parsed,
    seen: Seen,
    carry: &mut casework::Carry,
) -> Result<Facts, CaseworkError> {
    let Looked {
        facts,
        named,
        reported_id,
        ..
    } = &parsed.looked;
    // A message that reads the store sees the reply carried so far.
    if matches!(seen, Seen::Ask) || !named.is_empty() || reported_id.is_some() {
        carry.flush(conn).await?;
    }
    let seen = match seen {
        Seen::Known(answer) => answer,
        Seen::Ask => {
            store::messages::seen_inbound(conn, &seen_key(&parsed.inbound, &parsed.sha256)).await?
        }
    };
    let seen_before = seen.map(|(_, earlier)| {
        if earlier.as_deref() == Some(room.config.imap.review_mailbox.as_str()) {
            Target::Review
        } else {
            Target::Processed
        }
    });
    let mut cases = Vec::with_capacity(named.len());
    for id in named {
        if let Some(case) = store::cases::get(conn, id).await? {
            cases.push(case);
        }
    }
    let reported = match reported_id {
        Some(mid) => store::outbox::by_message_id(conn, mid)
            .await?
            .map(|r| route::Reported {
                outbox: r.id,
                case: r.case_id,
                to_consumer: r.audience == store::outbox::Audience::Consumer.as_str(),
            }),
        None => None,
    };
    Ok(Facts {
        seen_before,
        cases,
        reported,
        ..facts.clone()
    })
}

/// Does what the route says. Every branch writes the message row (so
/// nothing is lost) and files the original to Processed or Review.
async fn carry_out(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    facts: &Facts,
    route: Route,
    carry: &mut casework::Carry,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let known = |id: &CaseId| {
        facts
            .case(id)
            .ok_or_else(|| CaseworkError::NoSuchCase(id.to_string()))
    };
    // Only a new request takes the carried reply into its case's rows;
    // anything else writes it first.
    if !matches!(route.mail, Mail::Request { .. }) {
        carry.flush(conn).await?;
    }
    match route.mail {
        Mail::Duplicate { target } => {
            file_only(conn, room, rec, Disposition::Duplicate, target, now).await?;
            debug!(
                uid = rec.fetched.uid,
                "Duplicate message filed without effects."
            );
            Ok(Outcome::Duplicate)
        }
        Mail::Oversize { case, refusal } => {
            oversize(conn, room, rec, case.as_ref(), &refusal, now).await
        }
        Mail::OverMimeCaps { case, excess } => {
            over_mime_limits(conn, room, rec, case.as_ref(), excess, now).await
        }
        Mail::DeliveryReport {
            reported,
            permanent,
        } => delivery_report(conn, room, rec, reported.as_ref(), permanent, now).await,
        Mail::OwnMail => {
            // Our own mail come back (a Bcc or a loop) gets no answer.
            rec.write(conn, room, None, Disposition::Own, Target::Processed, now)
                .await?;
            Ok(Outcome::Automatic)
        }
        Mail::TeamReply {
            scope,
            case,
            member,
        } => team_reply(conn, room, rec, &scope, case, member, carry, now).await,
        Mail::UnreferencedCommands { case, lines } => {
            unreferenced_commands(conn, room, rec, case.as_ref(), lines, now).await
        }
        Mail::Correspondence { case } => correspondence(conn, room, rec, case, now).await,
        Mail::ReturnedNotice { case, trusted } => {
            returned_notice(conn, room, rec, case, trusted, now).await
        }
        Mail::Automatic {
            kind,
            case,
            request,
        } => automatic(conn, room, rec, kind, case.as_ref(), request, now).await,
        Mail::ForeignTag { case } => foreign_tag(conn, room, rec, known(&case)?, now).await,
        Mail::Reply { case, by_reference } => {
            let vouched = route.party == Party::KnownAgent;
            case_reply(conn, room, rec, known(&case)?, by_reference, vouched, now).await
        }
        Mail::Request { kind } => open_case(conn, room, rec, kind, carry, now).await,
        Mail::Review { why, suggestion } => review(conn, room, rec, why, suggestion, now).await,
    }
}

/// Who wrote the message: the From address, except that mail sent *as* the
/// mailbox by someone else (a contact form passing SPF/DMARC that way) is
/// answered at its Reply-To.
fn sender_of(room: &Mailroom, inbound: &Inbound) -> String {
    let from = inbound
        .from
        .as_ref()
        .map(|a| a.addr.clone())
        .unwrap_or_default();
    if room.is_own_address(&from)
        && !is_ours(room, inbound)
        && let Some(reply_to) = inbound.reply_to.as_ref()
        && !room.is_own_address(&reply_to.addr)
    {
        return reply_to.addr.clone();
    }
    from
}

/// Was the message written by the daemon (its Message-ID verifies)?
fn is_ours(room: &Mailroom, inbound: &Inbound) -> bool {
    inbound
        .message_id
        .as_deref()
        .is_some_and(|id| room.keys.verify(id).is_some())
}

/// Refused by size (SPEC §7): recorded from the headers, review, team told.
async fn oversize(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    case: Option<&CaseId>,
    refusal: &Refusal,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    use crate::attachments::human_size;
    let why = match refusal {
        Refusal::BodyMissing { size } => format!(
            "the mail server listed the message ({}) but did not return its body on several mailbox cycles; recorded from its headers",
            human_size(*size)
        ),
        Refusal::Attachment {
            filename,
            bytes,
            max,
        } => format!(
            "the attachment {filename:?} is {}, over agents.max_attachment_bytes ({})",
            human_size(*bytes),
            human_size(*max)
        ),
        Refusal::AttachmentByStructure {
            filename,
            at_least,
            max,
            size,
        } => format!(
            "the attachment {:?} is at least {}, over agents.max_attachment_bytes ({}); the message ({}) was recorded from its headers without reading its body",
            filename.as_deref().unwrap_or("(no name)"),
            human_size(*at_least),
            human_size(*max),
            human_size(*size)
        ),
        Refusal::Message { size } => format!(
            "the message is {}, over imap.max_message_bytes",
            human_size(*size)
        ),
    };
    let o = Oversize {
        uid_validity: rec.uid_validity,
        uid: rec.fetched.uid,
        raw: &rec.fetched.raw,
        size: rec.fetched.size,
        sha256: rec.sha,
        inbound: rec.inbound,
        case,
        why,
    };
    refuse_oversize(conn, room, &o, now).await?;
    Ok(Outcome::Review { reason: "oversize" })
}

/// Over a cap on the MIME structure (`imap.max_mime_parts`,
/// `imap.max_mime_depth`, `agents.max_attachments`): the message is kept
/// whole (it is under the size limit) but nothing in it is acted on or
/// stored as a document; review, an event on the case it threads to, and the
/// team is told why, with `#open` offered when it reads like a request.
async fn over_mime_limits(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    case: Option<&CaseId>,
    excess: message::MimeExcess,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let case_id = case.map(|c| c.as_str());
    let row = rec
        .write(
            conn,
            room,
            case_id,
            Disposition::Review,
            Target::Review,
            now,
        )
        .await?;
    note_row(
        conn,
        case_id,
        row,
        crate::cases::Action::MimeLimit,
        &format!("{excess}; moved to review, nothing stored from it"),
        now,
    )
    .await?;
    info!(
        uid = rec.fetched.uid,
        parts = rec.inbound.shape.parts,
        depth = rec.inbound.shape.depth,
        attachments = rec.inbound.shape.attachments,
        "Message over a MIME cap; sent to review."
    );
    let suggestion = match case_id {
        Some(_) => None,
        None => classify::match_subject(&room.config.rules, &rec.inbound.subject),
    };
    let why = match case_id {
        Some(id) => format!("{excess} (it belongs to case {id})"),
        None => excess.to_string(),
    };
    crate::team::notify_review(conn, room, row, rec.inbound, &why, suggestion, now).await?;
    Ok(Outcome::Review {
        reason: "over a MIME cap",
    })
}

/// A reply to a team notice: commands, if the sender may give them.
#[allow(clippy::too_many_arguments)]
async fn team_reply(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    scope: &crate::team::mail::Scope,
    case: Option<CaseId>,
    member: bool,
    carry: &mut casework::Carry,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    // A non-member's reply to a notice is kept for a person to look at.
    let target = if member {
        Target::Processed
    } else {
        Target::Review
    };
    let case_id = case;
    rec.write(
        conn,
        room,
        case_id.as_deref(),
        Disposition::Team,
        target,
        now,
    )
    .await?;
    crate::team::mail::handle(conn, room, rec.inbound, scope, carry, now).await?;
    Ok(Outcome::TeamMail { case_id })
}

/// One of our team mails come back as new mail: a member's (or a list's)
/// forwarding rule sends a notice to the mailbox without its headers, or as
/// an attached message. Its body carries our reference (HMAC-verified
/// `Mailroom reference:` line, or the attached copy's Message-ID). Recorded
/// on its case, no new notice: otherwise every notice would cause the next,
/// for ever. From a member (or our own address) it is filed as processed;
/// from anyone else it goes to review, still without a notice.
async fn returned_notice(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    case: Option<CaseId>,
    trusted: bool,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let case_id = case;
    let target = if trusted {
        Target::Processed
    } else {
        Target::Review
    };
    rec.write(
        conn,
        room,
        case_id.as_deref(),
        Disposition::TeamLoop,
        target,
        now,
    )
    .await?;
    store::events::append(
        conn,
        case_id.as_deref(),
        now,
        "daemon",
        crate::cases::Action::NoticeReturned,
        "a copy of a team notice came back to the mailbox as new mail (a forwarding rule?); recorded, no new notice",
    )
    .await?;
    info!(
        uid = rec.fetched.uid,
        case = case_id.as_deref().unwrap_or("-"),
        "A team notice came back as new mail; recorded without a notice."
    );
    Ok(Outcome::TeamMail { case_id })
}

/// A team member's commands in mail that is not a reply to a notice: not
/// run (they need the notice's HMAC reference); review, and the refusal is
/// recorded.
async fn unreferenced_commands(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    case: Option<&CaseId>,
    lines: usize,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let case_id = case.map(|c| c.as_str());
    rec.write(conn, room, case_id, Disposition::Team, Target::Review, now)
        .await?;
    let detail = format!(
        "{lines} command line(s) not executed: the message does not reply to a notification of the daemon"
    );
    store::events::append(
        conn,
        case_id,
        now,
        rec.sender,
        crate::cases::Action::CommandRefused,
        &detail,
    )
    .await?;
    Ok(Outcome::Review {
        reason: "team commands without a notification reference",
    })
}

/// A team member's own mail to a party of the case (the mailbox in Bcc):
/// correspondence on the case.
async fn correspondence(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    case: CaseId,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    crate::team::correspondence::record(
        conn,
        &case,
        rec.inbound,
        rec.sha,
        rec.fetched.size as i64,
        crate::team::correspondence::Origin::Bcc,
        now,
    )
    .await?;
    // The correspondence row is the case's record; this one only files the original.
    file_only(
        conn,
        room,
        rec,
        Disposition::TeamReplyOriginal,
        Target::Processed,
        now,
    )
    .await?;
    Ok(Outcome::TeamMail {
        case_id: Some(case),
    })
}

/// Automatic mail never opens a case and never gets a reply: recorded on its
/// case when it answers one of our messages, else kept in review.
async fn automatic(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    kind: message::AutoKind,
    case: Option<&CaseId>,
    request: Option<Kind>,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let Some(id) = case else {
        let row = rec
            .write(conn, room, None, Disposition::Auto, Target::Review, now)
            .await?;
        // Recorded like any message in review (no case to put it on).
        note_row(
            conn,
            None,
            row,
            crate::cases::Action::Review,
            &format!("automatic mail ({kind:?}) that answers none of our messages"),
            now,
        )
        .await?;
        // A request sent through a no-reply web form still reaches a person:
        // the team is told, with `#open` offered.
        if let Some(kind) = request {
            let why = "automatic mail (no-reply sender or auto-reply headers) with a request's subject line";
            crate::team::notify_review(conn, room, row, rec.inbound, why, Some(kind), now).await?;
        }
        return Ok(Outcome::Automatic);
    };
    rec.write(
        conn,
        room,
        Some(id),
        Disposition::Auto,
        Target::Processed,
        now,
    )
    .await?;
    let detail = format!("{kind:?} in the case thread; no reply");
    store::events::append(
        conn,
        Some(id),
        now,
        "daemon",
        crate::cases::Action::AutomaticMail,
        &detail,
    )
    .await?;
    Ok(Outcome::Automatic)
}

/// The case tag alone, from someone who is not a party of the case, never
/// touches the case: review, and the team is told.
async fn foreign_tag(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    case: &Case,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    rec.write(
        conn,
        room,
        Some(&case.id),
        Disposition::Review,
        Target::Review,
        now,
    )
    .await?;
    store::events::append(
        conn,
        Some(&case.id),
        now,
        "daemon",
        crate::cases::Action::ForeignMessage,
        "a message with the case tag from a sender who is not a party of the case; moved to review",
    )
    .await?;
    casework::notify_team(conn, room, case, Notice::ConsumerWrote, now).await?;
    Ok(Outcome::Review {
        reason: "foreign sender with case tag",
    })
}

/// A message in a case thread from a party of the case (or answering our
/// Message-ID): stored on the case and advances it. `vouched`: the case's
/// known agent, authenticated by our MX, keeps an agent's exemption from the
/// per-sender limit in the thread too.
async fn case_reply(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    case: &Case,
    by_reference: bool,
    vouched: bool,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let row = rec
        .write(
            conn,
            room,
            Some(&case.id),
            Disposition::Case,
            Target::Processed,
            now,
        )
        .await?;
    // The code anywhere (people rarely retype it; clients quote our mail), or our Message-ID.
    let haystack = format!("{}\n{}", rec.inbound.subject, rec.inbound.head());
    let proves = by_reference || crate::ids::find_code(&haystack, &case.verification_code);
    // Documents sent later in the thread join the register.
    let declarations =
        crate::attachments::record(conn, room, case, row, &rec.inbound.attachments, now)
            .await?
            .declarations;
    let input = Input::ConsumerReply {
        from: rec.sender.to_string(),
        new_text: message::reply_text::new_text(rec.inbound.head()),
        proves_mailbox: proves,
        declarations,
    };
    casework::apply_input_as(conn, room, &case.id, input, vouched, now).await?;
    Ok(Outcome::Reply {
        case_id: case.id.clone(),
    })
}

/// For a person: never dropped (CCPA regs §7020(e)). Review, and the team
/// is told why, with `#open` offered when it reads like a request.
async fn review(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    why: &'static str,
    suggestion: Option<Kind>,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let id = rec
        .write(conn, room, None, Disposition::Review, Target::Review, now)
        .await?;
    let what = format!(
        "{why}{}",
        suggestion
            .map(|k| format!("; reads like a {k} request"))
            .unwrap_or_default()
    );
    note_row(conn, None, id, crate::cases::Action::Review, &what, now).await?;
    crate::team::notify_review(conn, room, id, rec.inbound, why, suggestion, now).await?;
    Ok(Outcome::Review { reason: why })
}

async fn open_case(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    kind: Kind,
    carry: &mut casework::Carry,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let received_at = rec.received_at(now);
    // Stored with the case, before its effects, so our acknowledgement can
    // answer it.
    let message = rec.message(room, None, Disposition::Case, Target::Processed, now);
    // Worked out beside the previous batch's write when the subject named
    // this kind, as it does for every request the route opens.
    let asked = match rec.asked.filter(|a| a.kind == kind) {
        Some(asked) => std::borrow::Cow::Borrowed(asked),
        None => std::borrow::Cow::Owned(Asked::of(room, rec.inbound, rec.sender, kind)),
    };
    let case_id = casework::open_request(
        conn,
        room,
        rec.inbound,
        kind,
        rec.sender,
        &asked.agent,
        received_at,
        casework::RequestMail::New(&message),
        carry,
        now,
    )
    .await?;
    // An opt-out (or limit) that also asks to know, delete or correct opens
    // those cases too, acknowledged and verified as usual (decisions.md).
    if !kind.needs_verification() {
        for &also in &asked.also {
            let sibling = casework::open_request(
                conn,
                room,
                rec.inbound,
                also,
                rec.sender,
                &asked.agent,
                received_at,
                casework::RequestMail::Sibling,
                carry,
                now,
            )
            .await?;
            carry.flush(conn).await?;
            for (on, other) in [(&case_id, &sibling), (&sibling, &case_id)] {
                store::events::append(
                    conn,
                    Some(on),
                    now,
                    "daemon",
                    crate::cases::Action::OpenedTogether,
                    &format!("{other} was opened from the same message"),
                )
                .await?;
            }
        }
    }
    Ok(Outcome::Opened { case_id, kind })
}

/// A message refused by size (SPEC §7): over `imap.max_message_bytes`
/// (fetched as headers only) or with an attachment over
/// `agents.max_attachment_bytes`.
#[derive(Debug)]
struct Oversize<'a> {
    uid_validity: u32,
    uid: u32,
    /// The fetched bytes; only the header block is kept.
    raw: &'a [u8],
    /// Size of the whole message.
    size: u64,
    /// SHA-256 of the fetched bytes (de-duplication).
    sha256: &'a str,
    inbound: &'a Inbound,
    /// The case it belongs to (the route decides, as for any reply).
    case: Option<&'a CaseId>,
    /// Why, for the team: "an attachment of 30 MB is over …".
    why: String,
}

/// Records a message refused by size from its headers (no attachment is
/// stored), to be moved to review; puts an event on the case it threads to
/// (our Message-ID referenced, or the tag from a party of the case) and tells
/// the team. Returns the message row.
async fn refuse_oversize(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    o: &Oversize<'_>,
    now: DateTime<Utc>,
) -> Result<i64, CaseworkError> {
    let inbound = o.inbound;
    let case_id = o.case.map(|c| c.as_str());
    let review = room.config.imap.review_mailbox.as_str();
    let headers = crate::attachments::header_block(o.raw);
    let row = store::messages::insert(
        conn,
        &NewMessage {
            case_id,
            direction: "in",
            message_id: inbound.message_id.as_deref(),
            subject: &inbound.subject,
            from_addr: inbound.from.as_ref().map(|a| a.addr.as_str()),
            at: now,
            template: None,
            sha256: o.sha256,
            size: o.size as i64,
            original: store::messages::Original::Row(headers),
            body_text: None,
            disposition: Disposition::Review,
            uid_validity: Some(o.uid_validity),
            uid: Some(o.uid),
            target_mailbox: Some(review),
        },
    )
    .await?;
    note_row(
        conn,
        case_id,
        row,
        crate::cases::Action::Oversize,
        &format!("{}; recorded from its headers and moved to review", o.why),
        now,
    )
    .await?;
    info!(
        uid = o.uid,
        size = o.size,
        case = case_id.unwrap_or("-"),
        "Message recorded from its headers (too large, or its body not returned); sent to review."
    );
    // A new request refused by size can still be opened by the team.
    let suggestion = match case_id {
        Some(_) => None,
        None => classify::match_subject(&room.config.rules, &inbound.subject),
    };
    let why = match case_id {
        Some(id) => format!("{} (it belongs to case {id})", o.why),
        None => o.why.clone(),
    };
    crate::team::notify_review(conn, room, row, inbound, &why, suggestion, now).await?;
    Ok(row)
}

/// A delivery report: about our outbox row `reported`, or about mail we did
/// not send (kept for a person to look at). A permanent failure does what
/// any given-up mail does ([`crate::team::delivery_failed`]).
async fn delivery_report(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    reported: Option<&route::Reported>,
    permanent: bool,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let Some(reported) = reported else {
        rec.write(conn, room, None, Disposition::Dsn, Target::Review, now)
            .await?;
        return Ok(Outcome::Automatic);
    };
    let case_id = reported.case.as_ref();
    rec.write(
        conn,
        room,
        case_id.map(CaseId::as_str),
        Disposition::Dsn,
        Target::Processed,
        now,
    )
    .await?;
    if permanent {
        let row_id = reported.outbox;
        let audience = if reported.to_consumer {
            store::outbox::Audience::Consumer
        } else {
            store::outbox::Audience::Team
        };
        crate::team::delivery_failed(
            conn,
            room,
            row_id,
            case_id,
            reported.to_consumer,
            "the recipient's server reported the delivery failed",
            &format!("outbox {row_id} ({audience}): delivery report says failed"),
            now,
        )
        .await?;
        info!(
            outbox = row_id,
            "Delivery report matched; mail marked failed."
        );
    }
    Ok(Outcome::DeliveryReport)
}

/// A row that only files the original (no body kept): duplicates, and
/// correspondence recorded elsewhere.
async fn file_only(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    disposition: Disposition,
    target: Target,
    now: DateTime<Utc>,
) -> Result<(), CaseworkError> {
    store::messages::insert(
        conn,
        &NewMessage {
            direction: "in",
            message_id: rec.inbound.message_id.as_deref(),
            subject: &rec.inbound.subject,
            at: now,
            sha256: rec.sha,
            size: rec.fetched.size as i64,
            disposition,
            uid_validity: Some(rec.uid_validity),
            uid: Some(rec.fetched.uid),
            target_mailbox: Some(target_name(room, target)),
            ..NewMessage::default()
        },
    )
    .await?;
    Ok(())
}

/// Puts on the log of events, by the daemon, what intake did with the
/// message stored in `row` ("message row N: …"), so that the event leads to
/// the message.
async fn note_row(
    conn: &mut SqliteConnection,
    case_id: Option<&str>,
    row: i64,
    action: crate::cases::Action,
    what: &str,
    now: DateTime<Utc>,
) -> Result<(), CaseworkError> {
    store::events::append(
        conn,
        case_id,
        now,
        "daemon",
        action,
        &format!("message row {row}: {what}"),
    )
    .await?;
    Ok(())
}

/// A message whose processing failed: its raw bytes are kept and it goes to review.
async fn record_failed(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    uid_validity: u32,
    fetched: &Fetched,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), CaseworkError> {
    let sha = fetched.sha256();
    let id = store::messages::insert(
        conn,
        &NewMessage {
            direction: "in",
            at: now,
            sha256: &sha,
            size: fetched.size as i64,
            original: fetched.original(),
            disposition: Disposition::Failed,
            uid_validity: Some(uid_validity),
            uid: Some(fetched.uid),
            target_mailbox: Some(target_name(room, Target::Review)),
            ..NewMessage::default()
        },
    )
    .await?;
    note_row(
        conn,
        None,
        id,
        crate::cases::Action::ProcessingFailed,
        error,
        now,
    )
    .await?;
    // Tell the team, unless telling fails the same way: the message is safe
    // in review either way, and the batch must go on.
    let inbound = message::parse(&fetched.raw);
    let mut sp = conn.begin().await?;
    let why = "the daemon could not process it (see `processing_failed` in the log of events)";
    match crate::team::notify_review(&mut sp, room, id, &inbound, why, None, now).await {
        Ok(()) => sp.commit().await?,
        Err(e) => {
            sp.rollback().await?;
            warn!(error = %crate::logging::Personal(&e), "Cannot tell the team about a failed message.");
        }
    }
    Ok(())
}
