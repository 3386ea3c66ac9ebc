//! The daily digest (SPEC §6): open cases by state, due within 7 days,
//! overdue, waiting on the consumer. Sent once a day at `team.digest_time` in
//! the policy zone (and by `run --once` when that time has passed); nothing is
//! sent when there is nothing open.

use chrono::{DateTime, Utc};
use tracing::info;

use crate::cases::State;
use crate::casework::{self, CaseworkError, Queued};
use crate::ids::Purpose;
use crate::mailroom::Mailroom;
use crate::outbox::compose::AutoSubmitted;
use crate::store::{self, CaseFilter};
use crate::templates::{
    CaseContext, DigestContext, StateCount, TemplateContext, format_date, state_title,
};

const JOB: &str = "digest";

/// Sends today's digest if it is due and not yet sent. Returns whether it went out.
pub async fn run_if_due(room: &Mailroom, now: DateTime<Utc>) -> Result<bool, CaseworkError> {
    let notify = room.team().notify.clone();
    if notify.is_empty() {
        return Ok(false);
    }
    let tz = room.policy.timezone;
    let local = now.with_timezone(&tz);
    let Ok(at) = chrono::NaiveTime::parse_from_str(&room.team().digest_time, "%H:%M") else {
        return Ok(false);
    };
    if local.time() < at {
        return Ok(false);
    }
    let mut tx = room.store.begin().await?;
    let last = store::last_run(&mut tx, JOB).await?;
    if last.is_some_and(|l| l.with_timezone(&tz).date_naive() == local.date_naive()) {
        return Ok(false);
    }
    store::set_last_run(&mut tx, JOB, now).await?;
    let open = store::cases::list(
        &mut tx,
        &CaseFilter {
            open_only: true,
            ..CaseFilter::default()
        },
        now,
    )
    .await?;
    if open.is_empty() {
        tx.commit().await?;
        return Ok(false);
    }
    let ctx_of = |c: &crate::cases::Case| CaseContext::from_case(c, tz, now);
    let by_state = State::ALL
        .iter()
        .filter_map(|s| {
            let count = open.iter().filter(|c| c.state == *s).count();
            (count > 0).then(|| StateCount {
                state: s.as_str().into(),
                title: state_title(*s).into(),
                count,
            })
        })
        .collect();
    let soon = now + chrono::Duration::days(crate::cases::engine::DUE_SOON_DAYS);
    let mut ctx = TemplateContext::from_config(&room.config);
    ctx.digest = Some(DigestContext {
        date: format_date(now, tz),
        open_total: open.len(),
        by_state,
        due_soon: open
            .iter()
            .filter(|c| c.due_at >= now && c.due_at <= soon)
            .map(ctx_of)
            .collect(),
        overdue: open.iter().filter(|c| c.due_at < now).map(ctx_of).collect(),
        waiting_on_consumer: open
            .iter()
            .filter(|c| {
                matches!(
                    c.state,
                    State::AwaitingVerification | State::AwaitingConfirmation
                )
            })
            .map(ctx_of)
            .collect(),
    });
    let rendered = room
        .templates()
        .render("team_digest", &ctx)
        .map_err(|source| CaseworkError::Template {
            template: "team_digest".into(),
            source,
        })?;
    let day = local.format("%Y-%m-%d").to_string();
    let message_id = room
        .keys
        .generate(Purpose::Digest, &day, &room.config.message_id_domain());
    let rate_key = notify.join(",").to_lowercase();
    casework::queue(
        &mut tx,
        room,
        Queued {
            case_id: None,
            audience: "team",
            template: "team_digest",
            recipients: notify,
            rate_key: &rate_key,
            rendered,
            message_id,
            in_reply_to: None,
            references: Vec::new(),
            auto_submitted: AutoSubmitted::Generated,
        },
        now,
    )
    .await?;
    tx.commit().await?;
    room.outbox_wake.notify_one();
    info!(open = open.len(), "Daily digest queued.");
    Ok(true)
}
