//! Bursts (SPEC §6): an agent service can drop thousands of requests at once.
//! New-case notices wait in a queue until the end of the intake batch; if more
//! than `team.burst_threshold` cases opened within the last minute, they go out
//! as one summary, whose HMAC Message-ID authenticates commands for exactly
//! the cases it lists. Otherwise each case gets its own notice.

use chrono::{DateTime, Duration, Utc};
use sqlx::SqliteConnection;
use tracing::info;

use super::{self as casework, CaseworkError, TeamMail};
use crate::cases::engine::Notice;
use crate::ids::{CaseId, Purpose};
use crate::mailroom::Mailroom;
use crate::store;
use crate::templates::{CaseContext, SummaryContext};

/// Holds a new-case notice back until [`flush`].
pub async fn queue(
    conn: &mut SqliteConnection,
    case_id: &CaseId,
    now: DateTime<Utc>,
) -> Result<(), CaseworkError> {
    Ok(store::burst::queue_notice(conn, case_id, now).await?)
}

/// Sends the queued new-case notices: one each, or one summary in a burst.
pub async fn flush(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    now: DateTime<Utc>,
) -> Result<(), CaseworkError> {
    let pending = store::burst::take_queued(conn).await?;
    if pending.is_empty() {
        return Ok(());
    }
    let recent = store::cases::count_created_since(conn, now - Duration::minutes(1)).await?;
    let threshold = i64::from(room.team().burst_threshold);
    let cases = store::cases::get_many(conn, &pending).await?;
    if recent <= threshold || cases.len() < 2 {
        for case in &cases {
            casework::send_notice(conn, room, case, Notice::NewCase, now).await?;
        }
        return Ok(());
    }
    // The clock names the summary; a sequence keeps two summaries of the
    // same millisecond apart (each authenticates its own list of cases).
    let base = format!("S{}", now.format("%Y%m%d%H%M%S%3f"));
    let summary_id = match store::burst::summaries_with_base(conn, &base).await? {
        0 => base,
        n => format!("{base}-{}", n + 1),
    };
    let ids: Vec<&CaseId> = cases.iter().map(|c| &c.id).collect();
    store::burst::add_all_to_summary(conn, &summary_id, &ids).await?;
    let mut ctx = room.template_context();
    ctx.summary = Some(SummaryContext {
        id: summary_id.clone(),
        count: cases.len(),
    });
    ctx.cases = cases
        .iter()
        .map(|c| CaseContext::from_case(c, room.policy.timezone, now))
        .collect();
    casework::queue_for_team(
        conn,
        room,
        TeamMail {
            template: crate::cases::Template::TeamBurstSummary.as_str(),
            ctx: &ctx,
            purpose: Purpose::Summary,
            subject_id: &summary_id,
            case_id: None,
            in_reply_to: None,
            references: Vec::new(),
        },
        now,
    )
    .await?;
    info!(
        cases = cases.len(),
        "Burst: new-case notices collapsed into one summary."
    );
    Ok(())
}

/// Does the summary list the case?
pub async fn lists(
    conn: &mut SqliteConnection,
    summary_id: &str,
    case_id: &CaseId,
) -> Result<bool, CaseworkError> {
    Ok(store::burst::summary_lists(conn, summary_id, case_id).await?)
}
