//! From fetched bytes to committed decisions (SPEC §2, §3, §5, §8).
//!
//! A batch of messages is handled in one `BEGIN IMMEDIATE` transaction, each
//! message inside its own savepoint: a message that fails is rolled back to
//! its savepoint, stored raw and sent to review, and the batch goes on. The
//! caller moves the originals only after the commit (`sync::file_pending`).
//!
//! Everything slow happens before the write transaction opens: parsing (with
//! the caps of `imap.max_mime_parts`, `imap.max_mime_depth` and
//! `agents.max_attachments`) and writing attachment files to disk, so the
//! SQLite write lock is held only for the rows. The watchdog is fed per
//! message.

use chrono::{DateTime, Utc};
use sqlx::{Connection, SqliteConnection};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::cases::Case;
use crate::cases::engine::Notice;
use crate::cases::{Input, Kind};
use crate::casework::{self, CaseworkError};
use crate::classify;
use crate::ids::{Purpose, Verified};
use crate::mailroom::Mailroom;
use crate::message::{self, Inbound};
use crate::store::messages::Disposition;
use crate::store::{self, NewMessage};

/// One message fetched from the mailbox.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub uid: u32,
    /// `None` when the message was over `imap.max_message_bytes` and only its
    /// headers were read.
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
    Opened { case_id: String, kind: Kind },
    Reply { case_id: String },
    TeamMail { case_id: Option<String> },
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
    let watchdog = crate::systemd::Watchdog::from_env();
    let started = std::time::Instant::now();
    let limits = room.config.mime_limits();
    let mut parsed = Vec::with_capacity(batch.len());
    for fetched in batch {
        let inbound = message::parse_with(&fetched.raw, &limits);
        prestore_files(room, fetched.uid, &inbound);
        parsed.push(inbound);
        watchdog.ping();
    }
    let parsed_at = started.elapsed();
    let max_uid = batch.iter().map(|f| f.uid).max().unwrap_or(0);
    // Optimistic first: no savepoint per message (two round trips to the
    // SQLite worker each). If any message fails, the whole batch is rolled
    // back and written again with a savepoint per message, so the failure
    // is isolated exactly as before: that message stored raw and sent to
    // review, the others committed.
    let mut tx = room.store.begin().await?;
    let results = match write_messages(
        &mut tx,
        room,
        mailbox,
        uid_validity,
        batch,
        &parsed,
        now,
        false,
    )
    .await
    {
        Ok(results) => results,
        Err(e) => {
            debug!(error = %crate::logging::Personal(&e), "A message of the batch failed; writing the batch again message by message.");
            tx.rollback().await?;
            tx = room.store.begin().await?;
            write_messages(
                &mut tx,
                room,
                mailbox,
                uid_validity,
                batch,
                &parsed,
                now,
                true,
            )
            .await?
        }
    };
    casework::burst::flush(&mut tx, room, now).await?;
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
    let written_at = started.elapsed();
    tx.commit().await?;
    debug!(
        count = batch.len(),
        parse_ms = parsed_at.as_millis() as u64,
        write_ms = (written_at - parsed_at).as_millis() as u64,
        commit_ms = (started.elapsed() - written_at).as_millis() as u64,
        "Intake transaction timing."
    );
    room.outbox_wake.notify_one();
    Ok(results)
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
    parsed: &[Inbound],
    now: DateTime<Utc>,
    isolated: bool,
) -> Result<Vec<(u32, Outcome)>, CaseworkError> {
    let watchdog = crate::systemd::Watchdog::from_env();
    let mut results = Vec::with_capacity(batch.len());
    for (fetched, inbound) in batch.iter().zip(parsed) {
        watchdog.ping();
        // One span per message: every line about it names mailbox and UID.
        let span = info_span!("message", mailbox, uid = fetched.uid);
        let outcome = async {
            if !isolated {
                return process_one(tx, room, uid_validity, fetched, inbound, now).await;
            }
            let mut sp = tx.begin().await?;
            match process_one(&mut sp, room, uid_validity, fetched, inbound, now).await {
                Ok(outcome) => {
                    sp.commit().await?;
                    Ok::<_, CaseworkError>(outcome)
                }
                Err(e) => {
                    sp.rollback().await?;
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
    Ok(results)
}

/// Writes the attachment files a message may register before the write
/// transaction opens (see [`crate::attachments::store_before_commit`]). A
/// failure is only logged: `record` tries again inside the transaction, and
/// a message that fails there goes to review.
fn prestore_files(room: &Mailroom, uid: u32, inbound: &Inbound) {
    let sender = sender_of(room, inbound);
    let threaded = !inbound.in_reply_to.is_empty()
        || !inbound.references.is_empty()
        || classify::find_case_tag(&inbound.subject, &room.config.policy.case_prefix).is_some();
    if let Err(e) = crate::attachments::store_before_commit(room, inbound, &sender, threaded) {
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
/// and the facts every branch needs.
struct Record<'a> {
    uid_validity: u32,
    fetched: &'a Fetched,
    inbound: &'a Inbound,
    sha: &'a str,
    /// The From address, lower-cased ("" when missing).
    sender: String,
    /// Our Message-IDs (HMAC verified) in In-Reply-To and References.
    referenced: Vec<Verified>,
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
        let from = self.inbound.from.as_ref().map(|a| a.addr.as_str());
        Ok(store::messages::insert(
            conn,
            &NewMessage {
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
                raw: Some(&self.fetched.raw),
                body_text: Some(&self.inbound.text),
                disposition,
                uid_validity: Some(self.uid_validity),
                uid: Some(self.fetched.uid),
                target_mailbox: Some(target_name(room, target)),
            },
        )
        .await?)
    }

    /// When the mailbox received the message (IMAP INTERNALDATE); never in
    /// the future.
    fn received_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.fetched.internal_date.map_or(now, |d| d.min(now))
    }

    /// The case the message belongs to: one whose Message-ID it answers, or
    /// whose tag it carries from a party of the case.
    async fn own_case(
        &self,
        conn: &mut SqliteConnection,
        room: &Mailroom,
    ) -> Result<Option<crate::cases::Case>, CaseworkError> {
        let Some(id) = self.thread_case_id(&room.config.policy.case_prefix) else {
            return Ok(None);
        };
        let Some(case) = store::cases::get(conn, &id).await? else {
            return Ok(None);
        };
        let answers_ours = self.referenced.iter().any(|v| v.subject_id == case.id);
        Ok((answers_ours || case.is_party(&self.sender)).then_some(case))
    }

    /// The case our Reply Message-ID names, else the case of the subject tag.
    fn thread_case_id(&self, case_prefix: &str) -> Option<String> {
        self.referenced
            .iter()
            .find(|v| v.purpose == Purpose::Reply)
            .map(|v| v.subject_id.clone())
            .or_else(|| {
                classify::find_case_tag(&self.inbound.subject, case_prefix).map(String::from)
            })
    }
}

/// Decides what one message is, in order: a duplicate, too big, a delivery
/// report, our own, a reply to a team notice, a team member's own mail,
/// automatic mail, a reply in a case thread, a new request — or, failing all,
/// a message for review. Never drops anything.
async fn process_one(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    uid_validity: u32,
    fetched: &Fetched,
    inbound: &Inbound,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let sha = crate::hash::sha256_hex(&fetched.raw);
    let rec = Record {
        uid_validity,
        fetched,
        inbound,
        sha: &sha,
        sender: sender_of(room, inbound),
        referenced: room.keys.verify_any(
            inbound
                .in_reply_to
                .iter()
                .chain(inbound.references.iter())
                .map(String::as_str),
        ),
    };
    if let Some(outcome) = duplicate(conn, room, &rec, now).await? {
        return Ok(outcome);
    }
    if let Some(outcome) = oversize(conn, room, &rec, now).await? {
        return Ok(outcome);
    }
    if let Some(excess) = inbound.over_limit {
        return over_mime_limits(conn, room, &rec, excess, now).await;
    }
    if let Some(dsn) = &inbound.dsn {
        return delivery_report(conn, room, &rec, dsn, now).await;
    }
    if room.is_own_address(&rec.sender) {
        if is_ours(room, inbound) {
            // Our own mail come back (a Bcc or a loop) gets no answer.
            rec.write(conn, room, None, Disposition::Own, Target::Processed, now)
                .await?;
            return Ok(Outcome::Automatic);
        }
        // From our address but not written by us (a web form that sends as
        // the mailbox, without Reply-To): a person must look at it.
        let why = "it is sent from the mailbox's own address but not by the daemon";
        let suggestion = classify::match_subject(&room.config.rules, &inbound.subject);
        return review(conn, room, &rec, why, suggestion, now).await;
    }
    if let Some(scope) = crate::team::mail::Scope::from_references(&rec.referenced) {
        return team_reply(conn, room, &rec, &scope, now).await;
    }
    if room.is_member(&rec.sender)
        && let Some(outcome) = member_mail(conn, room, &rec, now).await?
    {
        return Ok(outcome);
    }
    if let Some(outcome) = returned_notice(conn, room, &rec, now).await? {
        return Ok(outcome);
    }
    if let Some(kind) = inbound.auto {
        return automatic(conn, room, &rec, kind, now).await;
    }
    let threaded = match rec.thread_case_id(&room.config.policy.case_prefix) {
        Some(case_id) => store::cases::get(conn, &case_id).await?,
        None => None,
    };
    if let Some(case) = threaded {
        return case_reply(conn, room, &rec, case, now).await;
    }
    if let Some(kind) = classify::match_subject(&room.config.rules, &inbound.subject) {
        if crate::address::parse_mailbox(&rec.sender).is_none() {
            let why = "a request whose sender address cannot be answered";
            return review(conn, room, &rec, why, Some(kind), now).await;
        }
        return open_case(conn, room, &rec, kind, now).await;
    }
    let why = "no subject rule matched and it is not a reply in a case thread";
    let suggestion = classify::looks_like_request(inbound.head());
    review(conn, room, &rec, why, suggestion, now).await
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

/// The second line of de-duplication after the UID cursor: the same message
/// (Message-ID or bytes) seen under another UID is filed where the first went.
async fn duplicate(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    now: DateTime<Utc>,
) -> Result<Option<Outcome>, CaseworkError> {
    let Some((_, earlier_target)) = store::messages::seen_inbound(
        conn,
        rec.inbound.message_id.as_deref(),
        rec.inbound.from.as_ref().map(|a| a.addr.as_str()),
        &rec.inbound.subject,
        rec.sha,
    )
    .await?
    else {
        return Ok(None);
    };
    let target = if earlier_target.as_deref() == Some(room.config.imap.review_mailbox.as_str()) {
        Target::Review
    } else {
        Target::Processed
    };
    file_only(conn, room, rec, Disposition::Duplicate, target, now).await?;
    debug!(
        uid = rec.fetched.uid,
        "Duplicate message filed without effects."
    );
    Ok(Some(Outcome::Duplicate))
}

/// Refused by size (SPEC §7): recorded from the headers, review, team told.
async fn oversize(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    now: DateTime<Utc>,
) -> Result<Option<Outcome>, CaseworkError> {
    let max_attachment = room.config.agents.max_attachment_bytes;
    let too_big = crate::attachments::over_limit(&rec.inbound.attachments, max_attachment);
    if !rec.fetched.headers_only && too_big.is_none() {
        return Ok(None);
    }
    let why = match too_big {
        _ if rec.fetched.body_missing => format!(
            "the mail server listed the message ({}) but did not return its body on several mailbox cycles; recorded from its headers",
            crate::attachments::human_size(rec.fetched.size)
        ),
        Some(a) => format!(
            "the attachment {:?} is {}, over agents.max_attachment_bytes ({})",
            a.filename,
            crate::attachments::human_size(a.bytes.len() as u64),
            crate::attachments::human_size(max_attachment)
        ),
        None => match &rec.fetched.refused_part {
            Some(part) => format!(
                "the attachment {:?} is at least {}, over agents.max_attachment_bytes ({}); the message ({}) was recorded from its headers without reading its body",
                part.filename.as_deref().unwrap_or("(no name)"),
                crate::attachments::human_size(part.at_least),
                crate::attachments::human_size(max_attachment),
                crate::attachments::human_size(rec.fetched.size)
            ),
            None => format!(
                "the message is {}, over imap.max_message_bytes",
                crate::attachments::human_size(rec.fetched.size)
            ),
        },
    };
    let o = Oversize {
        uid_validity: rec.uid_validity,
        uid: rec.fetched.uid,
        raw: &rec.fetched.raw,
        size: rec.fetched.size,
        sha256: rec.sha,
        inbound: rec.inbound,
        case: rec.own_case(conn, room).await?,
        why,
    };
    refuse_oversize(conn, room, &o, now).await?;
    Ok(Some(Outcome::Review { reason: "oversize" }))
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
    excess: message::MimeExcess,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let case = rec.own_case(conn, room).await?;
    let case_id = case.as_ref().map(|c| c.id.as_str());
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
    let detail = format!("message row {row}: {excess}; moved to review, nothing stored from it");
    store::events::append(
        conn,
        case_id,
        now,
        "daemon",
        crate::cases::Action::MimeLimit,
        &detail,
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
async fn team_reply(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    scope: &crate::team::mail::Scope,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let case_id = match scope {
        crate::team::mail::Scope::Case(id) => store::cases::get(conn, id).await?.map(|c| c.id),
        _ => None,
    };
    // A non-member's reply to a notice is kept for a person to look at.
    let target = if room.is_member(&rec.sender) {
        Target::Processed
    } else {
        Target::Review
    };
    rec.write(
        conn,
        room,
        case_id.as_deref(),
        Disposition::Team,
        target,
        now,
    )
    .await?;
    crate::team::mail::handle(conn, room, rec.inbound, scope, now).await?;
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
    now: DateTime<Utc>,
) -> Result<Option<Outcome>, CaseworkError> {
    let ours = room.keys.find_in_text(&rec.fetched.raw);
    let Some(first) = ours.iter().find(|v| v.purpose != Purpose::Reply) else {
        return Ok(None);
    };
    let case_id = match first.purpose {
        Purpose::Notice | Purpose::Result => store::cases::get(conn, &first.subject_id)
            .await?
            .map(|c| c.id),
        _ => None,
    };
    let trusted = room.is_member(&rec.sender) || room.is_own_address(&rec.sender);
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
    Ok(Some(Outcome::TeamMail { case_id }))
}

/// A team member's mail that is not a reply to a notice: commands in it are
/// not run (they need the notice's HMAC reference); mail to a consumer in a
/// case thread (Bcc'd to the mailbox) is correspondence. Anything else goes on
/// through the ordinary branches.
async fn member_mail(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    now: DateTime<Utc>,
) -> Result<Option<Outcome>, CaseworkError> {
    let case = match rec.thread_case_id(&room.config.policy.case_prefix) {
        Some(id) => store::cases::get(conn, &id).await?,
        None => None,
    };
    let case_id = case.as_ref().map(|c| c.id.as_str());
    let commands = crate::team::commands::parse(
        &message::reply_text::new_text(rec.inbound.head()),
        &room.config.policy.case_prefix,
    );
    if !commands.is_empty() {
        rec.write(conn, room, case_id, Disposition::Team, Target::Review, now)
            .await?;
        let detail = format!(
            "{} command line(s) not executed: the message does not reply to a notification of the daemon",
            commands.len()
        );
        store::events::append(
            conn,
            case_id,
            now,
            &rec.sender,
            crate::cases::Action::CommandRefused,
            &detail,
        )
        .await?;
        return Ok(Some(Outcome::Review {
            reason: "team commands without a notification reference",
        }));
    }
    // Correspondence: the member's own mail to a party of the case, and only
    // when the sender passes the same checks as a command (DKIM if required).
    let Some(case) = case else {
        return Ok(None);
    };
    let team = room.team();
    let authorized =
        crate::team::auth::authorize(&team, &rec.sender, &rec.inbound.authentication_results);
    let to_party = rec
        .inbound
        .to
        .iter()
        .chain(rec.inbound.cc.iter())
        .any(|a| case.is_party(&a.addr));
    if authorized.is_err() || !to_party {
        return Ok(None);
    }
    crate::team::correspondence::record(
        conn,
        &case.id,
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
    Ok(Some(Outcome::TeamMail {
        case_id: Some(case.id),
    }))
}

/// Automatic mail never opens a case and never gets a reply: recorded on its
/// case when it answers one of our messages, else kept in review.
async fn automatic(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    kind: message::AutoKind,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let case_id = match rec.referenced.first() {
        Some(v) => store::cases::get(conn, &v.subject_id).await?.map(|c| c.id),
        None => None,
    };
    let Some(id) = case_id else {
        let row = rec
            .write(conn, room, None, Disposition::Auto, Target::Review, now)
            .await?;
        // Recorded like any message in review (no case to put it on).
        let detail = format!(
            "message row {row}: automatic mail ({kind:?}) that answers none of our messages"
        );
        store::events::append(
            conn,
            None,
            now,
            "daemon",
            crate::cases::Action::Review,
            &detail,
        )
        .await?;
        // A request sent through a no-reply web form still reaches a person:
        // the team is told, with `#open` offered.
        if let Some(kind) = classify::match_subject(&room.config.rules, &rec.inbound.subject) {
            let why = "automatic mail (no-reply sender or auto-reply headers) with a request's subject line";
            crate::team::notify_review(conn, room, row, rec.inbound, why, Some(kind), now).await?;
        }
        return Ok(Outcome::Automatic);
    };
    rec.write(
        conn,
        room,
        Some(&id),
        Disposition::Auto,
        Target::Processed,
        now,
    )
    .await?;
    let detail = format!("{kind:?} in the case thread; no reply");
    store::events::append(
        conn,
        Some(&id),
        now,
        "daemon",
        crate::cases::Action::AutomaticMail,
        &detail,
    )
    .await?;
    Ok(Outcome::Automatic)
}

/// A message in a case thread. From a party of the case (or answering our
/// Message-ID) it is stored on the case and advances it; the tag alone from
/// anyone else never touches the case: review, and the team is told.
async fn case_reply(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    case: crate::cases::Case,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let proven_by_reference = rec.referenced.iter().any(|v| v.subject_id == case.id);
    if !proven_by_reference && !case.is_party(&rec.sender) {
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
        casework::notify_team(conn, room, &case, Notice::ConsumerWrote, now).await?;
        return Ok(Outcome::Review {
            reason: "foreign sender with case tag",
        });
    }
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
    let proves = proven_by_reference || crate::ids::find_code(&haystack, &case.verification_code);
    // Documents sent later in the thread join the register.
    let declarations =
        crate::attachments::record(conn, room, &case, row, &rec.inbound.attachments, now)
            .await?
            .declarations;
    let input = Input::ConsumerReply {
        from: rec.sender.clone(),
        new_text: message::reply_text::new_text(rec.inbound.head()),
        proves_mailbox: proves,
        declarations,
    };
    // The case's known agent, authenticated by our MX, keeps an agent's
    // exemption from the per-sender limit in the thread too.
    let vouched = case.agent.as_deref().is_some_and(|a| {
        a == rec.sender
            && crate::address::in_domains(a, &room.config.agents.known_domains)
            && crate::address::authres::authenticated(
                &room.team().trusted_authserv_ids,
                a,
                &rec.inbound.authentication_results,
            )
    });
    casework::apply_input_as(conn, room, &case.id, input, vouched, now).await?;
    Ok(Outcome::Reply { case_id: case.id })
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
    let detail = format!(
        "message row {id}: {why}{}",
        suggestion
            .map(|k| format!("; reads like a {k} request"))
            .unwrap_or_default()
    );
    store::events::append(
        conn,
        None,
        now,
        "daemon",
        crate::cases::Action::Review,
        &detail,
    )
    .await?;
    crate::team::notify_review(conn, room, id, rec.inbound, why, suggestion, now).await?;
    Ok(Outcome::Review { reason: why })
}

async fn open_case(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    kind: Kind,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let received_at = rec.received_at(now);
    // The message row first, so our acknowledgement can answer it.
    let row = rec
        .write(conn, room, None, Disposition::Case, Target::Processed, now)
        .await?;
    let case_id = casework::open_request(
        conn,
        room,
        rec.inbound,
        kind,
        &rec.sender,
        received_at,
        Some(row),
        now,
    )
    .await?;
    // An opt-out (or limit) that also asks to know, delete or correct opens
    // those cases too, acknowledged and verified as usual (decisions.md).
    if !kind.needs_verification() {
        for also in classify::also_requested(rec.inbound.head(), kind) {
            let sibling = casework::open_request(
                conn,
                room,
                rec.inbound,
                also,
                &rec.sender,
                received_at,
                None,
                now,
            )
            .await?;
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
    /// The case it belongs to (intake decides, as for any reply).
    case: Option<Case>,
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
    let case = o.case.as_ref();
    let case_id = case.map(|c| c.id.as_str());
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
            raw: Some(headers),
            body_text: None,
            disposition: Disposition::Review,
            uid_validity: Some(o.uid_validity),
            uid: Some(o.uid),
            target_mailbox: Some(review),
        },
    )
    .await?;
    store::events::append(
        conn,
        case_id,
        now,
        "daemon",
        crate::cases::Action::Oversize,
        &format!(
            "message row {row}: {}; recorded from its headers and moved to review",
            o.why
        ),
    )
    .await?;
    info!(
        uid = o.uid,
        size = o.size,
        case = case_id.unwrap_or("-"),
        "Message recorded from its headers (too large, or its body not returned); sent to review."
    );
    // A new request refused by size can still be opened by the team.
    let suggestion = match case {
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

async fn delivery_report(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    rec: &Record<'_>,
    dsn: &message::Dsn,
    now: DateTime<Utc>,
) -> Result<Outcome, CaseworkError> {
    let matched = match &dsn.original_message_id {
        Some(mid) => store::outbox::by_message_id(conn, mid).await?,
        None => None,
    };
    let Some(reported) = matched else {
        // A report about mail we did not send: kept, for a person to look at.
        rec.write(conn, room, None, Disposition::Dsn, Target::Review, now)
            .await?;
        return Ok(Outcome::Automatic);
    };
    let case_id = reported.case_id.as_deref();
    rec.write(
        conn,
        room,
        case_id,
        Disposition::Dsn,
        Target::Processed,
        now,
    )
    .await?;
    if dsn.permanent {
        let row_id = reported.id;
        let why = "the recipient's server reported the delivery failed";
        store::outbox::mark_failed(conn, row_id, why).await?;
        if let Some(id) = case_id {
            let detail = format!(
                "outbox {row_id} ({}): delivery report says failed",
                reported.audience
            );
            store::events::append(
                conn,
                Some(id),
                now,
                "daemon",
                crate::cases::Action::DeliveryFailed,
                &detail,
            )
            .await?;
            // Only a consumer's mail is worth a notice: a notice about a
            // bounced notice would bounce too, for ever.
            if reported.audience == store::outbox::Audience::Consumer.as_str()
                && let Some(case) = store::cases::get(conn, id).await?
            {
                crate::team::notify_delivery_failure(conn, room, &case, now).await?;
            }
        }
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

/// A message whose processing failed: its raw bytes are kept and it goes to review.
async fn record_failed(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    uid_validity: u32,
    fetched: &Fetched,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), CaseworkError> {
    let sha = crate::hash::sha256_hex(&fetched.raw);
    let id = store::messages::insert(
        conn,
        &NewMessage {
            direction: "in",
            at: now,
            sha256: &sha,
            size: fetched.size as i64,
            raw: Some(&fetched.raw),
            disposition: Disposition::Failed,
            uid_validity: Some(uid_validity),
            uid: Some(fetched.uid),
            target_mailbox: Some(target_name(room, Target::Review)),
            ..NewMessage::default()
        },
    )
    .await?;
    store::events::append(
        conn,
        None,
        now,
        "daemon",
        crate::cases::Action::ProcessingFailed,
        &format!("message row {id}: {error}"),
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
