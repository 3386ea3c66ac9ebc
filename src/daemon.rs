//! Wires the parts together: the mailbox loop (IDLE or polling, reconnect with
//! jittered backoff), the outbox sender task, the scheduler, and shutdown.
//! What one turn does to the mailbox is [`crate::sync`]; delivering the
//! outbox is [`crate::delivery`].

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::delivery;
use crate::imap::{IdleOutcome, ImapError};
use crate::mailroom::Mailroom;
use crate::outbox::smtp::SmtpSender;
use crate::store;
use crate::sync::{self, CycleError, connect_imap, copy_to_sent, drain, logout, scan_sent};
use crate::systemd;

/// How often the sender looks for mail queued by another process (`cases act`
/// writes to the outbox while the daemon runs).
const OUTBOX_POLL: Duration = Duration::from_secs(5);

/// Why `run` ended other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Cycle(#[from] CycleError),
    #[error(
        "the outbox sender stopped while the daemon was running ({0}); exiting so that the service manager restarts the daemon"
    )]
    SenderStopped(String),
}

/// The SMTP sender the outbox task uses, with its password resolved.
pub(crate) fn smtp_sender(room: &Mailroom) -> Result<SmtpSender, CycleError> {
    if room.config.smtp.auth == crate::config::AuthMethod::Oauth2
        && let Some(provider) = &room.oauth
    {
        return Ok(SmtpSender::with_oauth(
            &room.config.smtp,
            provider.clone(),
            room.config.smtp_login(),
        )?);
    }
    let password = room.config.smtp.secret.resolve("smtp")?;
    Ok(SmtpSender::new(&room.config.smtp, password.as_deref())?)
}

/// `run --once`: drain the mailbox, run due scheduled work, deliver the outbox,
/// copy it to Sent, exit.
pub async fn run_once(room: &Mailroom, sender: SmtpSender) -> Result<(), CycleError> {
    let shutdown = CancellationToken::new();
    let (mut imap, info) = connect_imap(room).await?;
    // `run --once` retries a withheld body on each run and never gives up:
    // the cursor stays below it, so it is never passed over.
    drain(
        room,
        &mut imap,
        info,
        &shutdown,
        &mut sync::MissingBodies::default(),
    )
    .await?;
    let mut sent_scan = SentScan::default();
    sent_scan.run(room, &mut imap).await;
    if let Err(e) = crate::scheduler::run_due(room, Utc::now()).await {
        warn!(error = %crate::logging::Personal(&e), "Scheduled work failed.");
    }
    let mut state = delivery::SenderState::default();
    let delivered = delivery::deliver_due(room, &sender, Utc::now(), &shutdown, &mut state).await?;
    sender.close().await;
    info!(
        sent = delivered.sent,
        retried = delivered.retried,
        failed = delivered.failed,
        "Outbox delivered."
    );
    // Killed here, the mail is sent but not yet copied: the next run copies
    // it (or, with `sent_copy = "auto"`, finds the server's copy).
    crate::faults::hit("before_sent_copy");
    sync::append_sent(room, &mut imap, &shutdown).await?;
    logout(imap).await;
    Ok(())
}

/// The daemon: runs until `shutdown` fires, then finishes the message in hand and returns.
///
/// The outbox sender is supervised: if it ends while the daemon runs (a
/// panic), the mailbox loop is stopped after the message in hand and `run`
/// returns an error, so the process exits non-zero and systemd restarts it
/// rather than taking in requests nobody answers.
pub async fn run(
    room: Mailroom,
    sender: SmtpSender,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    if let Some((at, true)) = room.oauth.as_ref().and_then(|p| p.certificate_expiry()) {
        warn!(expires = %at.format("%Y-%m-%d"), "The OAuth client certificate expires within 30 days; upload a new one to the app registration (see `privacy-mailroom check`).");
    }
    if let Some((day, true)) = room.oauth.as_ref().and_then(|p| p.client_secret_expiry()) {
        warn!(expires = %day, "The OAuth client secret expires within 30 days; create a new one in the app registration and update oauth2.client_secret_expires (see `privacy-mailroom check`).");
    }
    // Sent-folder copies on a task of their own: a burst's copies (the
    // server's APPEND pace) never hold up its replies (the MTA's pace).
    let copy_wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let copier_task = tokio::spawn(sent_copy_loop(
        room.clone(),
        copy_wake.clone(),
        shutdown.clone(),
    ));
    let mut sender_task = tokio::spawn(sender_loop(
        room.clone(),
        sender,
        copy_wake,
        shutdown.clone(),
    ));
    // The clocks run on their own: reminders and deadline notices go on
    // while the mailbox is unreachable.
    let scheduler_task = tokio::spawn(scheduler_loop(room.clone(), shutdown.clone()));
    let mailbox = mailbox_loop(&room, &shutdown);
    tokio::pin!(mailbox);
    let sender_ended = tokio::select! {
        () = &mut mailbox => None,
        joined = &mut sender_task => Some(joined),
    };
    if let Some(joined) = sender_ended {
        if shutdown.is_cancelled() {
            mailbox.await;
            systemd::stopping();
            return Ok(());
        }
        let why = match joined {
            Ok(()) => "it returned".to_string(),
            Err(e) if e.is_panic() => "it panicked".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(reason = %why, "Outbox sender stopped; shutting the daemon down.");
        shutdown.cancel();
        mailbox.await;
        systemd::stopping();
        return Err(RunError::SenderStopped(why));
    }
    systemd::stopping();
    if tokio::time::timeout(Duration::from_secs(3), scheduler_task)
        .await
        .is_err()
    {
        warn!("Scheduler did not stop within 3 s.");
    }
    // The copier stops between messages; what is left is copied after the restart.
    let abort_copier = copier_task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(3), copier_task)
        .await
        .is_err()
    {
        warn!("Sent-folder copies did not stop within 3 s.");
        abort_copier.abort();
    }
    // The sender stops between messages; one stuck in a slow SMTP exchange
    // is abandoned (it stays pending and goes out after the restart).
    let abort = sender_task.abort_handle();
    match tokio::time::timeout(Duration::from_secs(5), sender_task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "Outbox task ended abnormally."),
        Err(_) => {
            warn!("Outbox task did not stop within 5 s; abandoning the message in flight.");
            abort.abort();
        }
    }
    Ok(())
}

/// Mailbox sessions until `shutdown`, reconnecting with backoff after failures.
async fn mailbox_loop(room: &Mailroom, shutdown: &CancellationToken) {
    let watchdog = systemd::Watchdog::from_env();
    let mut failures: u32 = 0;
    let mut ready = false;
    let mut sent_scan = SentScan::default();
    let mut missing = sync::MissingBodies::default();
    // The error last logged at warn: the same one again is an outage going
    // on, logged at debug (one line per outage, not one per attempt).
    let mut last_logged: Option<String> = None;
    while !shutdown.is_cancelled() {
        match mailbox_session(room, shutdown, &mut ready, &mut sent_scan, &mut missing).await {
            Ok(()) => {
                failures = 0;
                if last_logged.take().is_some() {
                    info!("Mailbox session re-established.");
                }
                room.health.set_receiving(None);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                // A server that says how long to stay away (`[THROTTLED]`,
                // `Suggested Backoff Time`) is taken at its word.
                let wait = crate::throttle::at_least(
                    reconnect_delay(failures),
                    crate::throttle::imap_hint(&e.to_string()),
                );
                let error = crate::logging::Personal(&e).to_string();
                // No token: the token provider has logged the outage (once).
                let token_outage = matches!(&e, CycleError::Imap(ImapError::Token(_)));
                if token_outage || last_logged.as_deref() == Some(error.as_str()) {
                    debug!(error = %error, retry_in_secs = wait.as_secs(), "Mailbox session failed again; reconnecting.");
                } else {
                    warn!(error = %error, retry_in_secs = wait.as_secs(), "Mailbox session failed; reconnecting.");
                    last_logged = Some(error.clone());
                }
                room.health.set_receiving(Some(error.clone()));
                systemd::status(&format!(
                    "reconnecting: {error}; sending {}",
                    if room.health.sending().is_some() {
                        "FAILING"
                    } else {
                        "ok"
                    }
                ));
                // Waiting out an outage is not a hang: keep the watchdog fed.
                let until = tokio::time::Instant::now() + wait;
                loop {
                    watchdog.ping();
                    let left = until.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(left.min(watchdog.interval())) => {}
                    }
                }
            }
        }
    }
}

/// The Sent-folder scan as the mailbox loop runs it: its failures never end
/// the session or hold up intake. The first failure is logged as a warning,
/// repeats only at debug level, and the recovery once.
#[derive(Debug, Default)]
struct SentScan {
    failing: bool,
}

impl SentScan {
    async fn run(&mut self, room: &Mailroom, imap: &mut crate::imap::Imap) {
        match scan_sent(room, imap).await {
            Ok(_) => {
                if std::mem::take(&mut self.failing) {
                    info!("Sent-folder scan works again.");
                }
            }
            Err(e) if self.failing => {
                tracing::debug!(error = %crate::logging::Personal(&e), "Sent-folder scan still failing.");
            }
            Err(e) => {
                self.failing = true;
                warn!(error = %crate::logging::Personal(&e), "Sent-folder scan failed; intake goes on, the scan is retried every turn.");
            }
        }
    }
}

/// Exponential backoff with jitter, 1 s up to 5 minutes.
fn reconnect_delay(failures: u32) -> Duration {
    let base = 2u64.saturating_pow(failures.min(9)).min(300);
    let jitter = rand::random_range(0..=base.div_ceil(2) * 1000);
    Duration::from_millis(base * 1000 / 2 + jitter)
}

/// One connected session: drain, run the scheduler, wait (IDLE or poll), repeat.
async fn mailbox_session(
    room: &Mailroom,
    shutdown: &CancellationToken,
    ready: &mut bool,
    sent_scan: &mut SentScan,
    missing: &mut sync::MissingBodies,
) -> Result<(), CycleError> {
    let (mut imap, _) = connect_imap(room).await?;
    let poll = Duration::from_secs(room.config.imap.poll_interval_secs);
    let use_idle = room.config.imap.idle && imap.has_idle();
    if !use_idle {
        info!(
            poll_secs = poll.as_secs(),
            "Polling the mailbox (IDLE is off or not offered)."
        );
    }
    let watchdog = systemd::Watchdog::from_env();
    loop {
        // The Sent folder first, the inbox last: whatever the inbox's SELECT
        // reports is taken in by the drain right after it, and anything
        // arriving later is announced (EXISTS) before or during IDLE. The
        // other order left mail that arrived during the Sent scan waiting for
        // the next wake-up.
        sent_scan.run(room, &mut imap).await;
        let info = imap.select(&room.config.imap.mailbox).await?;
        drain(room, &mut imap, info, shutdown, missing).await?;
        if !*ready {
            systemd::ready();
            *ready = true;
        }
        room.health.set_receiving(None);
        publish_status(room).await;
        watchdog.ping();
        if shutdown.is_cancelled() {
            logout(imap).await;
            return Ok(());
        }
        // An OAuth session is renewed before its token expires: servers end
        // it then (Exchange: `BYE … AccessTokenExpired`), possibly in the
        // middle of a MOVE. Logging out here and in again through the normal
        // path keeps the cursor and the commit-before-move order.
        if imap.renew_at().is_some_and(|at| Utc::now() >= at) {
            info!("OAuth token near expiry: renewing the mailbox session.");
            logout(imap).await;
            return Ok(());
        }
        // Wake at least once a minute for the scheduler and the watchdog, and
        // in time to renew the session's token.
        let mut wait = watchdog.interval().min(Duration::from_secs(60));
        if let Some(at) = imap.renew_at() {
            wait = wait.min((at - Utc::now()).to_std().unwrap_or(Duration::ZERO));
        }
        if use_idle {
            match imap.idle_wait(wait, shutdown).await? {
                IdleOutcome::Cancelled => {
                    logout(imap).await;
                    return Ok(());
                }
                IdleOutcome::NewData | IdleOutcome::Timeout => {}
            }
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    logout(imap).await;
                    return Ok(());
                }
                _ = tokio::time::sleep(wait.min(poll)) => {}
            }
            imap.noop().await?;
        }
    }
}

/// How often the Sent-folder copier looks again without being woken (a copy
/// that failed is retried then).
const SENT_COPY_RETRY: Duration = Duration::from_secs(60);

/// Copies sent mail to the Sent folder over its own IMAP connection whenever
/// the sender delivered some, so a burst's replies and their copies go on
/// side by side. A failure is logged and tried again at the next wake-up.
async fn sent_copy_loop(
    room: Mailroom,
    wake: std::sync::Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    let mut wait = SENT_COPY_RETRY;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        match copy_to_sent(&room, &shutdown).await {
            Ok(()) => failing = false,
            Err(e) if failing => {
                debug!(error = %crate::logging::Personal(&e), "Sent-folder copy still failing.");
            }
            Err(e) => {
                failing = true;
                warn!(error = %crate::logging::Personal(&e), "Cannot copy sent mail to the Sent folder; will retry.");
            }
        }
        // Copies held back for the server's own copy (`sent_copy = "auto"`)
        // are taken as soon as they are due.
        wait = match sync::next_copy_due(&room).await {
            Ok(Some(due)) => (due - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .clamp(Duration::from_millis(100), SENT_COPY_RETRY),
            _ => SENT_COPY_RETRY,
        };
    }
}

/// How often the scheduler looks at the clocks.
const SCHEDULER_INTERVAL: Duration = Duration::from_secs(60);

/// The clocks, the digest and the daily purge, once a minute, on a task of
/// their own: neither an IMAP outage nor a long intake holds them up. A
/// failure is logged and tried again next minute; the clocks never stop intake.
async fn scheduler_loop(room: Mailroom, shutdown: CancellationToken) {
    loop {
        if let Err(e) = crate::scheduler::run_due(&room, Utc::now()).await {
            warn!(error = %crate::logging::Personal(&e), "Scheduled work failed; retrying in a minute.");
        }
        room.outbox_wake.notify_one();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SCHEDULER_INTERVAL) => {}
        }
    }
}

/// The systemd STATUS line: the case counts, then receiving and sending
/// health apart.
async fn publish_status(room: &Mailroom) {
    systemd::status(&format!(
        "{}; {}",
        crate::scheduler::status_line(room)
            .await
            .unwrap_or_default(),
        room.health.summary()
    ));
}

/// Delivers the outbox whenever intake or a command queued mail, and retries on
/// schedule; after each round that sent mail it wakes [`sent_copy_loop`].
/// While the SMTP server is unreachable it pauses between rounds (see
/// [`delivery::SenderState::outage_pause`]) instead of trying every mail.
async fn sender_loop(
    room: Mailroom,
    sender: SmtpSender,
    copy_wake: std::sync::Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let mut state = delivery::SenderState::default();
    loop {
        crate::faults::panic_at("sender_panic");
        let round = delivery::deliver_due(&room, &sender, Utc::now(), &shutdown, &mut state).await;
        // Sending health for the status line (the outage itself is logged
        // by `delivery`, once).
        let problem = sender.last_problem();
        let changed = problem.is_some() != room.health.sending().is_some();
        room.health.set_sending(problem);
        if changed {
            // At once, not at the mailbox loop's next turn (up to a minute).
            publish_status(&room).await;
        }
        match round {
            Ok(d) if d.sent > 0 => {
                info!(
                    sent = d.sent,
                    retried = d.retried,
                    failed = d.failed,
                    "Outbox delivered."
                );
                copy_wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %crate::logging::Personal(&e), "Outbox delivery round failed.")
            }
        }
        if shutdown.is_cancelled() {
            sender.close().await;
            return;
        }
        if state.in_outage() {
            // New mail would fail the same way: wait out the pause.
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(state.outage_pause()) => {}
            }
            continue;
        }
        let next = {
            match room.store.conn().await {
                Ok(mut conn) => store::outbox::next_due(&mut conn).await.ok().flatten(),
                Err(_) => None,
            }
        };
        let wait = next
            .map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(OUTBOX_POLL)
            .clamp(Duration::from_millis(50), OUTBOX_POLL);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = room.outbox_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn reconnect_delay_grows_and_is_capped() {
        assert!(reconnect_delay(1) <= Duration::from_secs(3));
        assert!(reconnect_delay(30) <= Duration::from_secs(450));
        assert!(reconnect_delay(30) >= Duration::from_secs(150));
    }
}
