//! The team's own mail to consumers (SPEC §6): found in the Sent folder (sent
//! from a mail client on the shared mailbox) or Bcc'd to the mailbox, it is
//! attached to its case as correspondence. It never stands as the
//! substantive response on its own: only `#complete`, `#complete sent` or
//! `cases act … complete --sent-by-team` record that (issue 11 item 7), so
//! a "we are still working on it" mail cannot close the clock.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use crate::casework::CaseworkError;
use crate::classify::thread_case_id;
use crate::mailroom::Mailroom;
use crate::message::Inbound;
use crate::store::messages::Disposition;
use crate::store::{self, NewMessage};

/// Where a team member's mail to a consumer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The shared mailbox's Sent folder: written from our own mailbox.
    SentFolder,
    /// Bcc'd to the mailbox: recorded as correspondence only, since its From
    /// line is the sender's word.
    Bcc,
}

/// Records a team member's message to a consumer on its case, as
/// correspondence.
pub async fn record(
    conn: &mut SqliteConnection,
    case_id: &str,
    inbound: &Inbound,
    sha: &str,
    size: i64,
    origin: Origin,
    now: DateTime<Utc>,
) -> Result<(), CaseworkError> {
    let from = inbound
        .from
        .as_ref()
        .map(|a| a.addr.clone())
        .unwrap_or_default();
    store::messages::insert(
        conn,
        &NewMessage {
            case_id: Some(case_id),
            direction: "out",
            message_id: inbound.message_id.as_deref(),
            subject: &inbound.subject,
            from_addr: Some(&from),
            at: inbound.date.unwrap_or(now).min(now),
            sha256: sha,
            size,
            body_text: Some(&inbound.text),
            disposition: match origin {
                Origin::SentFolder => Disposition::TeamReply,
                Origin::Bcc => Disposition::TeamBcc,
            },
            ..NewMessage::default()
        },
    )
    .await?;
    store::events::append(
        conn,
        Some(case_id),
        now,
        &from,
        crate::cases::Action::TeamCorrespondence,
        "a team member's mail to the requester (correspondence; #complete records the response)",
    )
    .await?;
    Ok(())
}

/// A message found in the Sent folder: attached to its case when a team
/// member wrote it in a case's thread (our Reply Message-ID answered, or the
/// case tag). Our own copies and messages seen before are skipped. `raw` is
/// the whole message, or only its header block when the body was over the
/// scan's cap (then it is recorded without its text); `size` is the size of
/// the whole message. Returns whether it was recorded.
pub async fn from_sent_folder(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    raw: &[u8],
    size: u64,
    now: DateTime<Utc>,
) -> Result<bool, CaseworkError> {
    let inbound = crate::message::parse(raw);
    let sha = crate::hash::sha256_hex(raw);
    let Some(case_id) = sent_case(conn, room, &inbound, &sha).await? else {
        return Ok(false);
    };
    record(
        conn,
        &case_id,
        &inbound,
        &sha,
        size as i64,
        Origin::SentFolder,
        now,
    )
    .await?;
    Ok(true)
}

/// Whether a Sent-folder message, judged from its header block alone, is
/// correspondence to record: the scan fetches the body only of these.
pub(crate) async fn wanted_from_sent(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    header: &[u8],
) -> Result<bool, CaseworkError> {
    let inbound = crate::message::parse(header);
    let sha = crate::hash::sha256_hex(header);
    Ok(sent_case(conn, room, &inbound, &sha).await?.is_some())
}

/// The case a Sent-folder message belongs to, unless it is our own copy or
/// was seen before.
async fn sent_case(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    inbound: &Inbound,
    sha: &str,
) -> Result<Option<String>, CaseworkError> {
    if !room.keys.verify_any(inbound.message_id.iter()).is_empty() {
        return Ok(None);
    }
    if seen(conn, inbound.message_id.as_deref(), sha).await? {
        return Ok(None);
    }
    let referenced = room
        .keys
        .verify_any(inbound.in_reply_to.iter().chain(inbound.references.iter()));
    let Some(case_id) = thread_case_id(
        &referenced,
        &inbound.subject,
        &room.config.policy.case_prefix,
    ) else {
        return Ok(None);
    };
    Ok(store::cases::get(conn, &case_id)
        .await?
        .is_some()
        .then(|| case_id.into()))
}

/// Has this message been seen already (by Message-ID or content)?
pub async fn seen(
    conn: &mut SqliteConnection,
    message_id: Option<&str>,
    sha: &str,
) -> Result<bool, CaseworkError> {
    Ok(store::messages::team_mail_on_record(conn, message_id, sha).await?)
}
