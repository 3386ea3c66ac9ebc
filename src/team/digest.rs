//! The daily digest (SPEC §6): open cases by state, due within 7 days,
//! overdue, waiting on the consumer. Sent once a day at `team.digest_time` in
//! the policy zone (and by `run --once` when that time has passed); nothing is
//! sent when there is nothing open.

use chrono::{DateTime, Utc};
use tracing::info;

use crate::cases::State;
use crate::casework::{self, CaseworkError, TeamMail};
use crate::ids::Purpose;
use crate::mailroom::Mailroom;
use crate::store::{self, CaseFilter};
use crate::templates::{
    CaseContext, DIGEST_LIST_LIMIT, DigestContext, RefusedTeamMail, StateCount, format_date,
    state_title,
};

const JOB: &str = "digest";

/// Sends today's digest if it is due and not yet sent. Returns whether it went out.
pub(crate) async fn run_if_due(room: &Mailroom, now: DateTime<Utc>) -> Result<bool, CaseworkError> {
    let team = room.team();
    if team.notify.is_empty() {
        return Ok(false);
    }
    let tz = room.policy.timezone;
    let local = now.with_timezone(&tz);
    let Ok(Some(at)) = team.digest_at() else {
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
    // Refused team mail since the last digest (at most a week back).
    let week = now - chrono::Duration::days(crate::store::outbox::FAILED_TEAM_MAIL_DAYS);
    let since = last.map_or(week, |l| l.max(week));
    let refused = store::outbox::failed_team_mail(&mut tx, since, DIGEST_LIST_LIMIT as i64).await?;
    if open.is_empty() && refused.is_empty() {
        tx.commit().await?;
        return Ok(false);
    }
    let team_mail_refused = refused
        .into_iter()
        .map(|f| RefusedTeamMail {
            recipient: f.recipient,
            template: f.template,
            case_id: f.case_id,
            date: format_date(f.at, tz),
            error: f.error.unwrap_or_default(),
        })
        .collect();
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
    // Each list shows at most DIGEST_LIST_LIMIT cases; contexts are built
    // only for those, so the digest after a burst stays small.
    let list = |keep: &dyn Fn(&crate::cases::Case) -> bool| {
        let matching: Vec<&crate::cases::Case> = open.iter().filter(|c| keep(c)).collect();
        let more = matching.len().saturating_sub(DIGEST_LIST_LIMIT);
        let shown = matching
            .into_iter()
            .take(DIGEST_LIST_LIMIT)
            .map(ctx_of)
            .collect();
        (shown, more)
    };
    let (due_soon, due_soon_more) = list(&|c| c.due_at >= now && c.due_at <= soon);
    let (overdue, overdue_more) = list(&|c| c.due_at < now);
    let (waiting_on_consumer, waiting_more) = list(&|c| {
        matches!(
            c.state,
            State::AwaitingVerification | State::AwaitingConfirmation
        )
    });
    let mut ctx = room.template_context();
    ctx.digest = Some(DigestContext {
        date: format_date(now, tz),
        open_total: open.len(),
        by_state,
        due_soon,
        overdue,
        waiting_on_consumer,
        due_soon_more,
        overdue_more,
        waiting_more,
        team_mail_refused,
    });
    let day = local.format("%Y-%m-%d").to_string();
    casework::queue_for_team(
        &mut tx,
        room,
        TeamMail {
            template: crate::cases::Template::TeamDigest.as_str(),
            ctx: &ctx,
            purpose: Purpose::Digest,
            subject_id: &day,
            case_id: None,
            in_reply_to: None,
            references: Vec::new(),
        },
        now,
    )
    .await?;
    tx.commit().await?;
    room.outbox_wake.notify_one();
    info!(open = open.len(), "Daily digest queued.");
    Ok(true)
}
