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
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::ConfigError;
use crate::imap::{Imap, ImapError, SelectInfo};
use crate::intake::{self, Fetched};
use crate::mailroom::Mailroom;
use crate::outbox::smtp::SmtpError;
use crate::store::{self, StoreError};

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
}

/// At most this many bytes of messages in memory per intake batch.
pub const BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// Splits listed messages into intake batches of at most [`BATCH`] messages
/// and [`BATCH_BYTES`] bytes (a message over `max_bytes` is fetched as headers
/// only and counts nothing), so a burst of large mail keeps memory bounded.
fn batches(listed: &[crate::imap::Listed], max_bytes: u64) -> Vec<&[crate::imap::Listed]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, l) in listed.iter().enumerate() {
        let size = u64::from(l.size.unwrap_or(0));
        let size = if size > max_bytes { 0 } else { size };
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

/// Logs in with a password or an OAuth token (`imap.auth`).
pub async fn login_imap(room: &Mailroom) -> Result<Imap, CycleError> {
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
pub async fn connect_imap(room: &Mailroom) -> Result<(Imap, SelectInfo), CycleError> {
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
    loop {
        let listed = imap.list_new(after, since).await?;
        if listed.is_empty() {
            break;
        }
        for chunk in batches(&listed, max_bytes) {
            let (small, large): (Vec<&crate::imap::Listed>, Vec<&crate::imap::Listed>) = chunk
                .iter()
                .partition(|l| u64::from(l.size.unwrap_or(0)) <= max_bytes);
            let small_uids: Vec<u32> = small.iter().map(|l| l.uid).collect();
            let mut bodies: BTreeMap<u32, Vec<u8>> = if small_uids.is_empty() {
                BTreeMap::new()
            } else {
                imap.fetch_bodies(&small_uids).await?.into_iter().collect()
            };
            let mut batch = Vec::with_capacity(chunk.len());
            for l in chunk {
                if large.iter().any(|x| x.uid == l.uid) {
                    let raw = imap.fetch_header(l.uid).await?.unwrap_or_default();
                    batch.push(Fetched {
                        uid: l.uid,
                        raw,
                        size: u64::from(l.size.unwrap_or(0)),
                        headers_only: true,
                        internal_date: l.internal_date,
                    });
                } else if let Some(raw) = bodies.remove(&l.uid) {
                    let size = raw.len() as u64;
                    batch.push(Fetched {
                        uid: l.uid,
                        raw,
                        size,
                        headers_only: false,
                        internal_date: l.internal_date,
                    });
                }
                // A UID listed but gone by the fetch was expunged meanwhile.
            }
            let results =
                intake::process_batch(room, &mailbox, uid_validity, &batch, Utc::now()).await?;
            taken += results.len();
            for (uid, outcome) in &results {
                debug!(uid, ?outcome, "Message processed.");
            }
            file_pending(room, imap, uid_validity).await?;
            // A long burst must not look like a hang to systemd.
            crate::systemd::Watchdog::from_env().ping();
            after = after.max(chunk.iter().map(|l| l.uid).max().unwrap_or(after));
            if shutdown.is_cancelled() {
                return Ok(taken);
            }
        }
    }
    if first_pass {
        // Older messages left alone stay below the cursor for good.
        let last = info
            .uid_next
            .map_or(after, |n| n.saturating_sub(1))
            .max(after);
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

/// Reads new messages in the Sent folder: a team member's own mail to a
/// consumer, sent from a mail client on the shared mailbox, is attached to its
/// case as correspondence. Our own copies (HMAC Message-IDs) are skipped.
/// Leaves the Sent folder selected: the caller selects the inbox again.
pub async fn scan_sent(room: &Mailroom, imap: &mut Imap) -> Result<usize, CycleError> {
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
    if listed.is_empty() {
        return Ok(0);
    }
    let uids: Vec<u32> = listed.iter().map(|l| l.uid).collect();
    let bodies = imap.fetch_bodies(&uids).await?;
    let mut recorded = 0;
    let now = Utc::now();
    let mut tx = room.store.begin().await?;
    for (_, raw) in &bodies {
        if crate::team::correspondence::from_sent_folder(&mut tx, room, raw, now).await? {
            recorded += 1;
        }
    }
    let last = uids.iter().copied().max().unwrap_or(after);
    store::set_cursor(
        &mut tx,
        &key,
        store::Cursor {
            uid_validity: info.uid_validity,
            last_uid: last,
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    if recorded > 0 {
        info!(
            count = recorded,
            "Team correspondence found in the Sent folder."
        );
    }
    Ok(recorded)
}

/// Moves originals whose effects are committed to their folder, then marks
/// them filed. Run before every intake too, so a crash between commit and
/// move is finished on restart without doing anything twice.
pub async fn file_pending(
    room: &Mailroom,
    imap: &mut Imap,
    uid_validity: u32,
) -> Result<(), CycleError> {
    let rows = {
        let mut conn = room.store.conn().await?;
        store::messages::unfiled(&mut conn, uid_validity).await?
    };
    if rows.is_empty() {
        return Ok(());
    }
    let mut by_target: BTreeMap<String, (Vec<u32>, Vec<i64>)> = BTreeMap::new();
    for (id, uid, target) in rows {
        let entry = by_target.entry(target).or_default();
        entry.0.push(uid);
        entry.1.push(id);
    }
    crate::faults::hit("before_move");
    for (target, (uids, ids)) in by_target {
        imap.move_uids(&uids, &target).await?;
        let mut conn = room.store.conn().await?;
        store::messages::mark_filed(&mut conn, &ids, Utc::now()).await?;
    }
    Ok(())
}

/// `smtp.sent_copy`: whether the server already keeps a copy of this message
/// in the Sent folder (Gmail and Exchange Online save mail sent through their
/// SMTP), so that the team does not see every reply twice. `"server"`: always;
/// `"append"`: never; `"auto"`: when its Message-ID is found there.
async fn server_kept_copy(
    room: &Mailroom,
    imap: &mut Imap,
    raw: &[u8],
) -> Result<bool, CycleError> {
    match room.config.smtp.sent_copy {
        crate::config::SentCopy::Server => Ok(true),
        crate::config::SentCopy::Append => Ok(false),
        crate::config::SentCopy::Auto => {
            let Some(id) = mail_parser::MessageParser::default()
                .parse_headers(raw)
                .and_then(|m| m.message_id().map(str::to_string))
            else {
                return Ok(false);
            };
            let sent = imap.sent_folder(&room.config.imap.sent_mailbox).to_string();
            Ok(imap.has_message_id(&sent, &id).await?)
        }
    }
}

/// Copies sent mail to the Sent folder, so the shared mailbox shows the whole
/// conversation. A copy that fails is tried again next time.
pub async fn append_sent(room: &Mailroom, imap: &mut Imap) -> Result<usize, CycleError> {
    let mut count = 0;
    let mut tried = std::collections::HashSet::new();
    loop {
        let rows = {
            let mut conn = room.store.conn().await?;
            store::outbox::unappended(&mut conn, APPEND_BATCH).await?
        };
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|(id, _)| tried.insert(*id))
            .collect();
        if rows.is_empty() {
            break;
        }
        for (id, raw) in rows {
            if server_kept_copy(room, imap, &raw).await? {
                let mut conn = room.store.conn().await?;
                store::outbox::mark_appended(&mut conn, id, Utc::now()).await?;
                continue;
            }
            let sent = imap.sent_folder(&room.config.imap.sent_mailbox).to_string();
            let result = imap.append(&sent, &raw, &["\\Seen"]).await;
            let mut conn = room.store.conn().await?;
            match result {
                Ok(()) => {
                    store::outbox::mark_appended(&mut conn, id, Utc::now()).await?;
                    count += 1;
                }
                // The server refused this one (quota, size): note it, go on.
                Err(e) if e.is_refusal() => {
                    let error = e.to_string();
                    warn!(outbox = id, error = %crate::logging::Personal(&error), "Sent-folder copy refused.");
                    store::outbox::append_failed(&mut conn, id, &error).await?;
                }
                // The connection is gone: the rest waits for the next session.
                Err(e) => return Err(e.into()),
            }
        }
    }
    if count > 0 {
        info!(count, "Copied sent mail to the Sent folder.");
    }
    Ok(count)
}

/// Copies sent mail to the Sent folder over a connection of its own (the
/// outbox sender's, so the inbox session is never interrupted).
pub async fn copy_to_sent(room: &Mailroom) -> Result<(), CycleError> {
    let cfg = &room.config.imap;
    let mut imap = login_imap(room).await?;
    let sent = imap.resolve_sent(&cfg.sent_mailbox).await?;
    imap.ensure_mailboxes(&[&sent]).await?;
    append_sent(room, &mut imap).await?;
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
    fn batches_are_bounded_by_count_and_bytes() {
        let many = listed(&vec![1000; 2 * BATCH + 20]);
        let sizes: Vec<usize> = batches(&many, u64::MAX).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [BATCH, BATCH, 20]);
        let mib = 1024 * 1024;
        let big = listed(&[20 * mib, 20 * mib, 10 * mib, 30 * mib]);
        let sizes: Vec<usize> = batches(&big, u64::MAX).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [1, 2, 1]);
        // Over the message limit: only headers are fetched, so it costs nothing.
        let huge = listed(&[60 * mib, 60 * mib]);
        assert_eq!(batches(&huge, 50 * u64::from(mib)).len(), 1);
        assert!(batches(&[], 10).is_empty());
    }
}
