//! The clocks (SPEC §4): reminders to consumers, deadline notices to the team.
//! Called from the mailbox loop about once a minute and by `run --once`.

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::cases::{Case, Input};
use crate::casework::{self, CaseworkError};
use crate::mailroom::Mailroom;
use crate::store;

/// Runs every scheduled job that is due at `now`.
pub async fn run_due(room: &Mailroom, now: DateTime<Utc>) -> Result<(), CaseworkError> {
    tick_cases(room, now).await?;
    crate::team::digest::run_if_due(room, now).await?;
    daily_purge(room, now).await;
    Ok(())
}

/// Gives every open case its `Tick`: reminders, due-soon and overdue notices.
/// Each case in its own transaction, so one bad case cannot stop the others.
pub async fn tick_cases(room: &Mailroom, now: DateTime<Utc>) -> Result<usize, CaseworkError> {
    let mut changed = 0;
    let mut after: Option<crate::ids::CaseId> = None;
    loop {
        let page = {
            let mut conn = room.store.conn().await?;
            store::cases::open_page(&mut conn, after.as_ref(), TICK_PAGE).await?
        };
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.id.clone());
        for case in page {
            changed += usize::from(tick_one(room, &case, now).await?);
        }
    }
    if changed > 0 {
        info!(cases = changed, "Scheduled work done.");
        room.outbox_wake.notify_one();
    }
    Ok(changed)
}

/// Open cases read at a time: a burst leaves tens of thousands open, and
/// the scheduler runs every minute.
const TICK_PAGE: u32 = 500;

/// The tick for one case: whether it changed.
async fn tick_one(room: &Mailroom, case: &Case, now: DateTime<Utc>) -> Result<bool, CaseworkError> {
    // A cheap look at the snapshot first; most cases have nothing due.
    let due = match crate::cases::apply(case, Input::Tick, &room.policy, now) {
        Ok(t) => t.case != *case || !t.effects.is_empty(),
        Err(_) => false,
    };
    if !due {
        return Ok(false);
    }
    // Then for real, on the case as it is now inside the write
    // transaction: a team decision committed meanwhile (e.g. `cases act
    // deny` from the CLI) must not be overwritten by a stale copy.
    let mut tx = room.store.begin().await?;
    match casework::apply_input(&mut tx, room, &case.id, Input::Tick, now).await {
        Ok(_) => {
            tx.commit().await?;
            Ok(true)
        }
        Err(e) => {
            warn!(case = %case.id, error = %crate::logging::Personal(&e), "Scheduled work on a case failed.");
            Ok(false)
        }
    }
}

/// `idle, 3 open cases, outbox empty`.
pub(crate) async fn status_line(room: &Mailroom) -> Result<String, CaseworkError> {
    let mut conn = room.store.conn().await?;
    let open = store::cases::count_open(&mut conn).await?;
    let pending = store::outbox::pending_count(&mut conn).await?;
    let (waiting, _) = store::outbox::waiting(&mut conn).await?;
    let since = Utc::now() - chrono::Duration::days(store::outbox::FAILED_TEAM_MAIL_DAYS);
    let refused = store::outbox::failed_team_count(&mut conn, since).await?;
    Ok(status_text(open, pending, waiting, refused))
}

/// The status line: open cases, the outbox, mail waiting for the SMTP
/// server, and team mail refused for good (a colleague's dead address must
/// not hide behind "outbox empty").
fn status_text(open: i64, pending: i64, waiting: i64, refused_team: i64) -> String {
    let mut line = format!("idle, {open} open cases, ");
    if pending == 0 {
        line.push_str("outbox empty");
    } else {
        line.push_str(&format!("{pending} mails in the outbox"));
    }
    if waiting > 0 {
        line.push_str(&format!(" ({waiting} waiting for the SMTP server)"));
    }
    if refused_team > 0 {
        line.push_str(&format!(
            ", {refused_team} team mail recipients refused in {} days (see `check`)",
            store::outbox::FAILED_TEAM_MAIL_DAYS
        ));
    }
    line
}

/// The retention purge ([`crate::purge`]), once a day. A failure is logged
/// and retried on the next tick; it never stops intake.
pub(crate) async fn daily_purge(room: &Mailroom, now: DateTime<Utc>) {
    const JOB: &str = "purge";
    let last = match room.store.conn().await {
        Ok(mut conn) => store::last_run(&mut conn, JOB).await,
        Err(e) => Err(e),
    };
    match last {
        Ok(Some(at)) if now - at < chrono::Duration::hours(24) => return,
        Ok(_) => {}
        Err(e) => {
            warn!(error = %crate::logging::Personal(&e), "Cannot read when the purge last ran.");
            return;
        }
    }
    match crate::purge::run(&room.store, &room.config, &room.team(), now, false).await {
        Ok(_) => {
            if let Ok(mut conn) = room.store.conn().await
                && let Err(e) = store::set_last_run(&mut conn, JOB, now).await
            {
                warn!(error = %crate::logging::Personal(&e), "Cannot record the purge run.");
            }
        }
        Err(e) => {
            warn!(error = %crate::logging::Personal(&e), "Retention purge failed; retrying on the next tick.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_names_waiting_and_refused_mail() {
        assert_eq!(status_text(3, 0, 0, 0), "idle, 3 open cases, outbox empty");
        assert_eq!(
            status_text(1, 5, 5, 0),
            "idle, 1 open cases, 5 mails in the outbox (5 waiting for the SMTP server)"
        );
        assert!(status_text(1, 0, 0, 2).contains("2 team mail recipients refused"));
    }
}
