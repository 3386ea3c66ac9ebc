//! The outbox sender: delivers the mail committed with the change that caused
//! it over SMTP, with retries (SPEC §8). A mail given up for good is an event
//! on its case, and a consumer's one tells the team.
//!
//! The rows live in the `outbox` table ([`crate::store::outbox`]); composing is
//! [`crate::outbox::compose`], the SMTP client [`crate::outbox::smtp`]; the
//! Sent-folder copy is `sync::append_sent`, on the IMAP side.

use chrono::{DateTime, Duration, Utc};
use tracing::{Instrument, info_span, warn};

use crate::mailroom::Mailroom;
use crate::outbox::smtp::{SendError, SmtpSender};
use crate::store::{self, StoreError};

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
            // One span per delivery: every line about it names the row.
            let span = info_span!("delivery", outbox = row.id, template = %row.template);
            deliver_one(room, sender, &row, now, &mut done)
                .instrument(span)
                .await?;
        }
    }
}

/// Sends one due row and records the result in its own transaction.
async fn deliver_one(
    room: &Mailroom,
    sender: &SmtpSender,
    row: &store::OutboxRow,
    now: DateTime<Utc>,
    done: &mut Delivered,
) -> Result<(), StoreError> {
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
            warn!(outbox = row.id, attempts = row.attempts + 1, error = %crate::logging::Personal(&e), "Delivery deferred; will retry.");
            store::outbox::mark_retry(&mut tx, row.id, next, &e).await?;
            done.retried += 1;
        }
        Err(e) => {
            let error = e.to_string();
            warn!(outbox = row.id, error = %crate::logging::Personal(&error), "Delivery failed for good.");
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
                        crate::team::notify_delivery_failure(&mut tx, room, &case, now).await
                {
                    warn!(error = %crate::logging::Personal(&e), "Cannot queue the delivery-failure notice.");
                }
            }
            done.failed += 1;
        }
    }
    tx.commit().await?;
    Ok(())
}
