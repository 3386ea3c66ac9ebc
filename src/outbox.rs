//! The outbox: mail committed with the change that caused it, delivered by a
//! sender over SMTP with retries (SPEC §8), then copied to the Sent folder.

pub mod compose;
pub mod smtp;

use chrono::{DateTime, Duration, Utc};
use tracing::{info, warn};

use crate::config::SentCopy;
use crate::imap::{Imap, ImapError};
use crate::mailroom::Mailroom;
use crate::store::{self, StoreError};
use smtp::{SendError, SmtpSender};

/// 4xx answers are retried this long before the mail is given up (SPEC §8).
pub const RETRY_FOR: Duration = Duration::days(3);

/// How many rows one delivery round reads at a time.
const BATCH: i64 = 100;

/// What one delivery round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub sent: usize,
    pub retried: usize,
    pub failed: usize,
}

/// Wait before attempt `attempts + 1`: 1, 5, 15, 30 minutes, then hourly.
pub fn backoff(attempts: i64) -> Duration {
    match attempts {
        0 => Duration::minutes(1),
        1 => Duration::minutes(5),
        2 => Duration::minutes(15),
        3 => Duration::minutes(30),
        _ => Duration::hours(1),
    }
}

/// Sends every pending mail that is due. A transient failure (4xx, network)
/// schedules a retry; a permanent one (5xx), or retries past three days, marks
/// the mail failed and tells the team.
///
/// Stops between messages once `stop` is cancelled (SIGTERM): what is left
/// stays pending and goes out after the restart.
pub async fn deliver_due(
    room: &Mailroom,
    sender: &SmtpSender,
    now: DateTime<Utc>,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Delivered, StoreError> {
    let mut done = Delivered::default();
    let mut seen = std::collections::HashSet::new();
    loop {
        if stop.is_cancelled() {
            return Ok(done);
        }
        let rows = {
            let mut conn = room.store.conn().await?;
            store::outbox::due(&mut conn, now, BATCH).await?
        };
        let rows: Vec<_> = rows.into_iter().filter(|r| seen.insert(r.id)).collect();
        if rows.is_empty() {
            return Ok(done);
        }
        for row in rows {
            if stop.is_cancelled() {
                return Ok(done);
            }
            let recipients = row.recipient_list();
            let to: Vec<&str> = recipients.iter().map(String::as_str).collect();
            let result = sender.send_raw(&row.envelope_from, &to, &row.raw).await;
            let mut tx = room.store.begin().await?;
            match result {
                Ok(()) => {
                    store::outbox::mark_sent(&mut tx, row.id, Utc::now()).await?;
                    done.sent += 1;
                }
                Err(SendError::Transient(e)) if now - row.created_at < RETRY_FOR => {
                    let next = now + backoff(row.attempts);
                    warn!(outbox = row.id, attempts = row.attempts + 1, error = %crate::logging::redact(&e.to_string()), "Delivery deferred; will retry.");
                    store::outbox::mark_retry(&mut tx, row.id, next, &e).await?;
                    done.retried += 1;
                }
                Err(e) => {
                    let error = e.to_string();
                    warn!(outbox = row.id, error = %crate::logging::redact(&error), "Delivery failed for good.");
                    store::outbox::mark_failed(&mut tx, row.id, &error).await?;
                    if let Some(case_id) = &row.case_id {
                        store::events::append(
                            &mut tx,
                            Some(case_id),
                            now,
                            "daemon",
                            "delivery_failed",
                            &format!("{}: {error}", row.template),
                        )
                        .await?;
                        if row.audience == "consumer"
                            && let Some(case) = store::cases::get(&mut tx, case_id).await?
                            && let Err(e) =
                                crate::team::notify_delivery_failure(&mut tx, room, &case, now)
                                    .await
                        {
                            warn!(error = %crate::logging::redact(&e.to_string()), "Cannot queue the delivery-failure notice.");
                        }
                    }
                    done.failed += 1;
                }
            }
            tx.commit().await?;
        }
    }
}

/// `smtp.sent_copy`: whether the server already keeps a copy of this message
/// in the Sent folder (Gmail and Exchange Online save mail sent through their
/// SMTP), so that the team does not see every reply twice. `"server"`: always;
/// `"append"`: never; `"auto"`: when its Message-ID is found there.
async fn server_kept_copy(
    room: &Mailroom,
    imap: &mut Imap,
    raw: &[u8],
) -> Result<bool, crate::daemon::CycleError> {
    match room.config.smtp.sent_copy {
        SentCopy::Server => Ok(true),
        SentCopy::Append => Ok(false),
        SentCopy::Auto => {
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
pub async fn append_sent(
    room: &Mailroom,
    imap: &mut Imap,
) -> Result<usize, crate::daemon::CycleError> {
    let mut count = 0;
    let mut tried = std::collections::HashSet::new();
    loop {
        let rows = {
            let mut conn = room.store.conn().await?;
            store::outbox::unappended(&mut conn, BATCH).await?
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
                Err(ImapError::Command {
                    source: async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_),
                    ..
                }) => {
                    let error = result.err().map(|e| e.to_string()).unwrap_or_default();
                    warn!(outbox = id, error = %crate::logging::redact(&error), "Sent-folder copy refused.");
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
