//! Wires the parts together: the mailbox loop (IDLE or polling, reconnect with
//! jittered backoff), the outbox sender task, the scheduler, and shutdown.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::ConfigError;
use crate::imap::{IdleOutcome, Imap, ImapError, SelectInfo};
use crate::intake::{self, Fetched};
use crate::mailroom::Mailroom;
use crate::outbox::{
    self,
    smtp::{SmtpError, SmtpSender},
};
use crate::store::{self, StoreError};
use crate::systemd;

/// How often the sender looks for mail queued by another process (`cases act`
/// writes to the outbox while the daemon runs).
const OUTBOX_POLL: Duration = Duration::from_secs(5);

/// How many messages one intake transaction takes.
pub const BATCH: usize = 200;

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

/// Logs in, creates the folders the daemon files into, selects the mailbox.
pub async fn connect_imap(room: &Mailroom) -> Result<(Imap, SelectInfo), CycleError> {
    let cfg = &room.config.imap;
    let mut imap = login_imap(room).await?;
    let sent = imap.resolve_sent(&cfg.sent_mailbox).await?;
    imap.ensure_mailboxes(&[&cfg.processed_mailbox, &cfg.review_mailbox, &sent])
        .await?;
    let info = imap.select(&cfg.mailbox).await?;
    Ok((imap, info))
}

pub fn smtp_sender(room: &Mailroom) -> Result<SmtpSender, CycleError> {
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

/// `run --once`: drain the mailbox, run due scheduled work, deliver the outbox,
/// copy it to Sent, exit.
pub async fn run_once(room: &Mailroom, sender: SmtpSender) -> Result<(), CycleError> {
    let shutdown = CancellationToken::new();
    let (mut imap, info) = connect_imap(room).await?;
    drain(room, &mut imap, info, &shutdown).await?;
    scan_sent(room, &mut imap).await?;
    if let Err(e) = crate::scheduler::run_due(room, Utc::now()).await {
        warn!(error = %crate::logging::redact(&e.to_string()), "Scheduled work failed.");
    }
    let delivered = outbox::deliver_due(room, &sender, Utc::now(), &shutdown).await?;
    sender.close().await;
    info!(
        sent = delivered.sent,
        retried = delivered.retried,
        failed = delivered.failed,
        "Outbox delivered."
    );
    outbox::append_sent(room, &mut imap).await?;
    logout(imap).await;
    Ok(())
}

/// LOGOUT, but never for long: a server that stops answering must not hold
/// up shutdown (SPEC §10: exit within 10 s).
async fn logout(imap: Imap) {
    match tokio::time::timeout(Duration::from_secs(3), imap.logout()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "Logout failed."),
        Err(_) => debug!("Logout timed out."),
    }
}

/// The daemon: runs until `shutdown` fires, then finishes the message in hand and returns.
pub async fn run(
    room: Mailroom,
    sender: SmtpSender,
    shutdown: CancellationToken,
) -> Result<(), CycleError> {
    if let Some((at, true)) = room.oauth.as_ref().and_then(|p| p.certificate_expiry()) {
        warn!(expires = %at.format("%Y-%m-%d"), "The OAuth client certificate expires within 30 days; upload a new one to the app registration (see `privacy-mailroom check`).");
    }
    let sender_task = tokio::spawn(sender_loop(room.clone(), sender, shutdown.clone()));
    let watchdog = systemd::Watchdog::from_env();
    let mut failures: u32 = 0;
    let mut ready = false;
    // The error last logged at warn: the same one again is an outage going
    // on, logged at debug (one line per outage, not one per attempt).
    let mut last_logged: Option<String> = None;
    while !shutdown.is_cancelled() {
        match mailbox_session(&room, &shutdown, &mut ready).await {
            Ok(()) => {
                failures = 0;
                if last_logged.take().is_some() {
                    info!("Mailbox session re-established.");
                }
                room.health.set_receiving(None);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = reconnect_delay(failures);
                let error = crate::logging::redact(&e.to_string()).into_owned();
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
    systemd::stopping();
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
        scan_sent(room, &mut imap).await?;
        let info = imap.select(&room.config.imap.mailbox).await?;
        drain(room, &mut imap, info, shutdown).await?;
        // The clocks must never stop intake: a failure is logged and retried next turn.
        if let Err(e) = crate::scheduler::run_due(room, Utc::now()).await {
            warn!(error = %crate::logging::redact(&e.to_string()), "Scheduled work failed; retrying next turn.");
        }
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
/// schedule; copies sent mail to the Sent folder over its own IMAP connection.
async fn sender_loop(room: Mailroom, sender: SmtpSender, shutdown: CancellationToken) {
    loop {
        let round = outbox::deliver_due(&room, &sender, Utc::now(), &shutdown).await;
        let problem = sender.last_problem();
        if problem.is_some() != room.health.sending().is_some() {
            match &problem {
                // A token outage is logged once by the token provider.
                Some(p) if sender.last_problem_is_token() => {
                    debug!(error = %crate::logging::redact(p), "Sending waits for an OAuth token.")
                }
                Some(p) => {
                    warn!(error = %crate::logging::redact(p), "Sending is failing; replies stay queued and intake goes on.")
                }
                None => info!("Sending works again."),
            }
        }
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
                if let Err(e) = copy_to_sent(&room).await {
                    warn!(error = %crate::logging::redact(&e.to_string()), "Cannot copy sent mail to the Sent folder; will retry.");
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %crate::logging::redact(&e.to_string()), "Outbox delivery round failed.")
            }
        }
        if shutdown.is_cancelled() {
            sender.close().await;
            return;
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

async fn copy_to_sent(room: &Mailroom) -> Result<(), CycleError> {
    let cfg = &room.config.imap;
    let mut imap = login_imap(room).await?;
    let sent = imap.resolve_sent(&cfg.sent_mailbox).await?;
    imap.ensure_mailboxes(&[&sent]).await?;
    outbox::append_sent(room, &mut imap).await?;
    logout(imap).await;
    Ok(())
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

    #[test]
    fn reconnect_delay_grows_and_is_capped() {
        assert!(reconnect_delay(1) <= Duration::from_secs(3));
        assert!(reconnect_delay(30) <= Duration::from_secs(450));
        assert!(reconnect_delay(30) >= Duration::from_secs(150));
    }
}
