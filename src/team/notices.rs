//! The privacy team's side of the mailbox (SPEC §6): notices that are not a
//! case transition (review, delivery failures).

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use crate::cases::{Case, Kind};
use crate::casework::{self, CaseworkError, Queued};
use crate::ids::Purpose;
use crate::mailroom::Mailroom;
use crate::message::Inbound;
use crate::outbox::compose::AutoSubmitted;
use crate::templates::{CaseContext, ReviewContext, Suggestion, TemplateContext, format_date};

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
    let notify = room.team().notify.clone();
    if notify.is_empty() {
        return Ok(());
    }
    let mut ctx = TemplateContext::from_config(&room.config);
    ctx.review = Some(ReviewContext {
        from: inbound
            .from
            .as_ref()
            .map(|a| a.addr.clone())
            .unwrap_or_else(|| "(no sender)".into()),
        subject: inbound.subject.clone(),
        why: why.to_string(),
        received_date: format_date(now, room.policy.timezone),
        folder: room.config.imap.review_mailbox.clone(),
    });
    ctx.suggestion = suggestion.map(Suggestion::new);
    let rendered = room
        .templates()
        .render("team_review_notice", &ctx)
        .map_err(|source| CaseworkError::Template {
            template: "team_review_notice".into(),
            source,
        })?;
    let message_id = room.keys.generate(
        Purpose::Review,
        &message_row.to_string(),
        &room.config.message_id_domain(),
    );
    let rate_key = notify.join(",").to_lowercase();
    casework::queue(
        conn,
        room,
        Queued {
            case_id: None,
            audience: "team",
            template: "team_review_notice",
            recipients: notify,
            rate_key: &rate_key,
            rendered,
            message_id,
            in_reply_to: inbound.message_id.clone(),
            references: inbound.message_id.iter().cloned().collect(),
            auto_submitted: AutoSubmitted::Generated,
        },
        now,
    )
    .await
}

/// Tells the team a consumer mail of a case could not be delivered.
pub async fn notify_delivery_failure(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    case: &Case,
    now: DateTime<Utc>,
) -> Result<(), CaseworkError> {
    let notify = room.team().notify.clone();
    if notify.is_empty() {
        return Ok(());
    }
    let mut ctx = TemplateContext::from_config(&room.config).with_case(CaseContext::from_case(
        case,
        room.policy.timezone,
        now,
    ));
    ctx.notice_title = Some("Delivery failure".into());
    ctx.notice_text = Some(
        "A message to the requester could not be delivered. Check the address on the case and contact the requester another way if needed.".into(),
    );
    ctx.commands = crate::templates::commands_for(case);
    let rendered = room
        .templates()
        .render("team_notice", &ctx)
        .map_err(|source| CaseworkError::Template {
            template: "team_notice".into(),
            source,
        })?;
    let thread = crate::store::cases::thread(conn, &case.id).await?;
    let message_id =
        room.keys
            .generate(Purpose::Notice, &case.id, &room.config.message_id_domain());
    let rate_key = notify.join(",").to_lowercase();
    casework::queue(
        conn,
        room,
        Queued {
            case_id: Some(&case.id),
            audience: "team",
            template: "team_notice",
            recipients: notify,
            rate_key: &rate_key,
            rendered,
            message_id,
            in_reply_to: thread.notice_root.clone(),
            references: thread.notice_root.into_iter().collect(),
            auto_submitted: AutoSubmitted::Generated,
        },
        now,
    )
    .await
}
