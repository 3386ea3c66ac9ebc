//! The privacy team's side of the mailbox (SPEC §6): notices that are not a
//! case transition (review, delivery failures).

use chrono::{DateTime, Utc};
use sqlx::{Connection, SqliteConnection};

use crate::cases::engine::Notice;
use crate::cases::{Case, Kind};
use crate::casework::{self, CaseworkError, TeamMail};
use crate::ids::{CaseId, Purpose};
use crate::mailroom::Mailroom;
use crate::message::Inbound;
use crate::store;
use crate::templates::{ReviewContext, Suggestion, format_date};

/// Review notices per sender and hour; more messages from the same address
/// within the hour still go to the review folder, without a notice each.
pub(crate) const REVIEW_NOTICES_PER_SENDER_PER_HOUR: i64 = 3;

/// Tells the team a message was moved to review (never dropped: CCPA regs §7020(e)).
/// The notice's Message-ID names the message row, so `#open know|delete` in a
/// reply can open a case from it.
pub async fn notify_review(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    message_row: i64,
    inbound: &Inbound,
    why: &str,
    suggestion: Option<Kind>,
    now: DateTime<Utc>,
) -> Result<(), CaseworkError> {
    // Read like a request: a §7101 record row until a case is opened from it
    // (noted even when the notice itself is held back below).
    if let Some(kind) = suggestion {
        store::messages::set_reads_like(conn, message_row, kind.as_str()).await?;
    }
    // One sender writing again and again (a loop, or a stranger's tagged
    // mail) gets the team a few notices an hour, not one per message.
    if let Some(from) = inbound.from.as_ref() {
        let hour_ago = now - chrono::Duration::hours(1);
        let recent = store::messages::inbound_from_since(conn, &from.addr, hour_ago).await?;
        if recent > REVIEW_NOTICES_PER_SENDER_PER_HOUR {
            tracing::info!(
                message_row,
                "Review notice held back: too many messages from this sender in the last hour."
            );
            let detail = format!(
                "message row {message_row}: review notice held back, {recent} messages from this sender in the last hour (limit {REVIEW_NOTICES_PER_SENDER_PER_HOUR}); it is in the review folder"
            );
            store::events::append(
                conn,
                None,
                now,
                "daemon",
                crate::cases::Action::NoticeThrottled,
                &detail,
            )
            .await?;
            return Ok(());
        }
    }
    let mut ctx = room.template_context();
    ctx.review = Some(ReviewContext {
        from: inbound
            .from
            .as_ref()
            .map(|a| a.addr.clone())
            .unwrap_or_else(|| "(no sender)".into()),
        reply_to: inbound
            .reply_to
            .as_ref()
            .map(|a| a.addr.clone())
            .filter(|r| inbound.from.as_ref().is_none_or(|f| f.addr != *r)),
        subject: inbound.subject.clone(),
        why: why.to_string(),
        received_date: format_date(now, room.policy.timezone),
        folder: room.config.imap.review_mailbox.clone(),
    });
    ctx.suggestion = suggestion.map(Suggestion::new);
    let row = message_row.to_string();
    casework::queue_for_team(
        conn,
        room,
        TeamMail {
            template: crate::cases::Template::TeamReviewNotice.as_str(),
            ctx: &ctx,
            purpose: Purpose::Review,
            subject_id: &row,
            case_id: None,
            in_reply_to: inbound.message_id.clone(),
            references: inbound.message_id.iter().cloned().collect(),
        },
        now,
    )
    .await
}

/// What giving up a mail does, wherever that was learnt (the SMTP server
/// refused it for good in `delivery`, or a delivery report came back in
/// `intake`): the outbox row is marked failed with `error`, its case records
/// `detail`, and a consumer's mail that cannot be delivered is put before the
/// team. Only a consumer's mail is worth a notice: a notice about a bounced
/// notice would bounce too, for ever. A notice that cannot be queued is
/// logged, not returned: the failure itself is recorded either way.
#[allow(clippy::too_many_arguments)]
pub async fn delivery_failed(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    outbox_row: i64,
    case_id: Option<&CaseId>,
    to_consumer: bool,
    error: &str,
    detail: &str,
    now: DateTime<Utc>,
) -> Result<(), store::StoreError> {
    store::outbox::mark_failed(conn, outbox_row, error).await?;
    let Some(case_id) = case_id else {
        return Ok(());
    };
    store::events::append(
        conn,
        Some(case_id.as_str()),
        now,
        "daemon",
        crate::cases::Action::DeliveryFailed,
        detail,
    )
    .await?;
    if !to_consumer {
        return Ok(());
    }
    let Some(case) = store::cases::get(conn, case_id).await? else {
        return Ok(());
    };
    let mut sp = conn.begin().await?;
    match notify_delivery_failure(&mut sp, room, &case, now).await {
        Ok(()) => sp.commit().await?,
        Err(e) => {
            sp.rollback().await?;
            tracing::warn!(error = %crate::logging::Personal(&e), "Cannot queue the delivery-failure notice.");
        }
    }
    Ok(())
}

/// Tells the team a consumer mail of a case could not be delivered.
pub async fn notify_delivery_failure(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    case: &Case,
    now: DateTime<Utc>,
) -> Result<(), CaseworkError> {
    casework::send_notice(conn, room, case, Notice::DeliveryFailed, now).await
}
