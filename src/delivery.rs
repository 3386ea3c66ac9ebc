//! The outbox sender: delivers the mail committed with the change that caused
//! it over SMTP, with retries (SPEC §8). A mail given up for good is an event
//! on its case, and a consumer's one tells the team. Team mail goes to each
//! recipient in a transaction of its own, with each verdict recorded, so one
//! refused address never blocks the others; an SMTP outage is logged once.
//!
//! A round delivers over up to `smtp.connections` SMTP connections at once:
//! the due rows are grouped by recipients, each group goes out in order
//! (one person's mails arrive in the order they were queued), and the groups
//! run side by side. The database is reached by one of them at a time, so a
//! delivery round never holds more than one of the store's pooled
//! connections: intake keeps the others.
//!
//! The rows live in the `outbox` table ([`crate::store::outbox`]); composing is
//! [`crate::outbox::compose`], the SMTP client [`crate::outbox::smtp`]; the
//! Sent-folder copy is `sync::append_sent`, on the IMAP side.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt as _;

use chrono::{DateTime, Duration, Utc};
use tracing::{Instrument, info, info_span, warn};

use crate::mailroom::Mailroom;
use crate::outbox::smtp::{SendError, SmtpSender};
use crate::store::{self, StoreError};

/// 4xx answers are retried this long before the mail is given up (SPEC §8).
pub(crate) const RETRY_FOR: Duration = Duration::days(3);

/// How many rows one delivery round reads at a time. Each round ends with
/// its slowest group while the other connections idle, so larger rounds
/// keep them busier: 500 gave replies 70 % of raw SMTP against 65 % for 200
/// on tmpfs, but a 3,000-request burst peaked at 48 MiB instead of 41 MiB,
/// with the memory goal at 64 MiB (issue 13, docs/benchmark.md).
const BATCH: i64 = 200;

/// What one delivery round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub sent: usize,
    pub retried: usize,
    pub failed: usize,
    /// The round stopped because no SMTP session could be set up: the rest
    /// waits, and the caller should pause before the next round.
    pub unreachable: bool,
}

/// What the sender remembers from one round to the next.
#[derive(Debug, Default)]
pub(crate) struct SenderState {
    /// Since when the SMTP server has been unreachable: one log line when
    /// an outage starts and one when it ends, not one per mail and attempt.
    outage: Option<DateTime<Utc>>,
    /// Rounds in the current outage, for the pause before the next one.
    outage_rounds: u32,
    /// How long the server asked us to stay away (`432 4.3.2`, `421 4.7.x`).
    server_hint: Option<std::time::Duration>,
    /// Deliveries the server accepted but the database could not record yet
    /// (outbox id, and the recipient when delivered one by one). The next
    /// round records them instead of sending the same mail again.
    unrecorded: HashSet<(i64, Option<String>)>,
}

impl SenderState {
    /// Whether the SMTP server is currently unreachable.
    pub(crate) fn in_outage(&self) -> bool {
        self.outage.is_some()
    }

    /// The pause before the next round during an outage: 1 s, doubling, at
    /// most a minute (mail queued meanwhile waits for the same server).
    /// A server's own backoff hint, when longer, wins (see [`crate::throttle`]).
    pub(crate) fn outage_pause(&self) -> std::time::Duration {
        let base =
            std::time::Duration::from_secs(2u64.saturating_pow(self.outage_rounds.min(6)).min(60));
        crate::throttle::at_least(base, self.server_hint)
    }

    fn outage_starts(&mut self, error: &str, now: DateTime<Utc>) {
        self.outage_rounds = self.outage_rounds.saturating_add(1);
        self.server_hint = crate::throttle::smtp_hint(error);
        if self.outage.is_none() {
            self.outage = Some(now);
            warn!(error = %crate::logging::Personal(error), "SMTP server unreachable; mail waits in the outbox until it answers again.");
        }
    }

    fn outage_ends(&mut self, now: DateTime<Utc>) {
        self.outage_rounds = 0;
        if let Some(since) = self.outage.take() {
            info!(
                down_secs = (now - since).num_seconds(),
                "SMTP server reachable again; delivering the waiting mail."
            );
        }
    }
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

/// The verdict on one outbox mail after this round's attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Delivered; with recipients one by one, at least one got it and the
    /// rest were refused for good.
    Sent,
    /// A 4xx (for the mail or some recipient): try again later.
    Retry(String),
    /// Refused for good; nobody got it.
    Failed(String),
    /// No SMTP session: the server is down.
    Unreachable(String),
}

/// How a recipient's verdict is keyed: the bare address, lower-cased
/// (`team.notify` may list `"Alice <Alice@Example.com>"`).
fn recipient_key(recipient: &str) -> String {
    crate::address::parse_mailbox(recipient)
        .map_or_else(|| recipient.trim().to_string(), |a| a.addr)
        .to_lowercase()
}

/// Team mail (notices, digests, command results) and any mail to several
/// recipients is delivered one recipient at a time: one refused address (a
/// colleague who left) must not fail the mail for the others.
fn per_recipient(row: &store::OutboxRow) -> bool {
    row.audience == store::outbox::Audience::Team.as_str() || row.recipient_list().len() > 1
}

/// One delivery round, shared by the groups of rows running side by side.
struct Round<'a> {
    room: &'a Mailroom,
    sender: &'a SmtpSender,
    now: DateTime<Utc>,
    stop: &'a tokio_util::sync::CancellationToken,
    state: Mutex<&'a mut SenderState>,
    done: Mutex<Delivered>,
    /// The SMTP server is unreachable or the store failed: start no more mail.
    halted: AtomicBool,
    /// The round's turn at the database (see the module docs).
    db: tokio::sync::Mutex<()>,
    /// Deliveries the server accepted, waiting for the next commit
    /// (see [`record_sent`]).
    accepted: Mutex<Vec<(i64, Option<String>)>>,
    /// Wakes the [`recorder`]: a delivery is waiting for its record.
    to_record: tokio::sync::Notify,
    /// The groups are done: the [`recorder`] writes what is left and ends.
    groups_done: AtomicBool,
}

impl Round<'_> {
    /// Runs `f` on the sender's state; never held across an `.await`.
    fn state<R>(&self, f: impl FnOnce(&mut SenderState) -> R) -> R {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    fn count(&self, f: impl FnOnce(&mut Delivered)) {
        f(&mut self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// Waits for the round's turn at the database: hold it while using a
    /// pooled connection or a transaction, and never across an SMTP exchange.
    /// The database turn, with every delivery still waiting for its record
    /// written first: whatever the holder reads (due rows, settled
    /// recipients) sees them.
    async fn db_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        let turn = self.db.lock().await;
        write_sent(self).await;
        turn
    }

    /// Writes every delivery still waiting for its record (the turn does).
    async fn write_waiting(&self) {
        drop(self.db_turn().await);
    }

    fn lock_accepted(&self) -> std::sync::MutexGuard<'_, Vec<(i64, Option<String>)>> {
        self.accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn go_on(&self) -> bool {
        !self.stop.is_cancelled() && !self.halted.load(Ordering::Relaxed)
    }
}

/// Sends every pending mail that is due. A transient failure (4xx, network)
/// schedules a retry; a permanent one (5xx), or retries past three days, marks
/// the mail failed and tells the team. Team mail goes to each recipient in
/// its own SMTP transaction and each outcome is recorded.
///
/// Up to [`SmtpSender::connections`] mails are in flight at once; mails to the
/// same recipients go out one after the other, in the order they were queued.
///
/// When no SMTP session can be set up the round stops at once (every mail
/// would fail the same way) and the outage is logged once, in `state`.
///
/// Stops between messages once `stop` is cancelled (SIGTERM): what is left
/// stays pending and goes out after the restart.
pub(crate) async fn deliver_due(
    room: &Mailroom,
    sender: &SmtpSender,
    now: DateTime<Utc>,
    stop: &tokio_util::sync::CancellationToken,
    state: &mut SenderState,
) -> Result<Delivered, StoreError> {
    let round = Round {
        room,
        sender,
        now,
        stop,
        state: Mutex::new(state),
        done: Mutex::new(Delivered::default()),
        halted: AtomicBool::new(false),
        db: tokio::sync::Mutex::new(()),
        accepted: Mutex::new(Vec::new()),
        to_record: tokio::sync::Notify::new(),
        groups_done: AtomicBool::new(false),
    };
    let rounds = async {
        let result = deliver_rounds(&round).await;
        round.groups_done.store(true, Ordering::Release);
        round.to_record.notify_one();
        result
    };
    // Whatever the round ended with, the recorder's last turn comes after
    // it: every delivery is recorded when both are done.
    let (result, ()) = futures::future::join(rounds, recorder(&round)).await;
    let done = *round
        .done
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    result.map(|()| done)
}

async fn deliver_rounds(round: &Round<'_>) -> Result<(), StoreError> {
    let mut seen = HashSet::new();
    while round.go_on() {
        let rows = {
            let _turn = round.db_turn().await;
            let mut conn = round.room.store.conn().await?;
            store::outbox::due(&mut conn, round.now, BATCH).await?
        };
        let rows: Vec<_> = rows.into_iter().filter(|r| seen.insert(r.id)).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let results: Vec<Result<(), StoreError>> = futures::stream::iter(by_recipients(rows))
            .map(|group| deliver_group(round, group))
            .buffer_unordered(round.sender.connections().max(1))
            .collect()
            .await;
        // The next read of due rows goes through `db_turn`, which records
        // this round's deliveries first: they are not read as due again.
        results.into_iter().collect::<Result<(), StoreError>>()?;
    }
    Ok(())
}

/// The rows grouped by their recipients (bare, lower-cased), each group in
/// queue order; the longest groups first (see [`longest_first`]).
fn by_recipients(rows: Vec<store::OutboxRow>) -> Vec<Vec<store::OutboxRow>> {
    let mut groups: Vec<(String, Vec<store::OutboxRow>)> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for row in rows {
        let mut keys: Vec<String> = row
            .recipient_list()
            .iter()
            .map(|r| recipient_key(r))
            .collect();
        keys.sort();
        let key = keys.join(",");
        match index.get(&key) {
            Some(&i) => groups[i].1.push(row),
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, vec![row]));
            }
        }
    }
    let mut groups: Vec<Vec<store::OutboxRow>> = groups.into_iter().map(|(_, rows)| rows).collect();
    longest_first(&mut groups);
    groups
}

/// Orders a round's groups longest first, equal ones in queue order. A
/// group is sent in order on one connection and the round ends with its
/// last group: an agent desk's dozen mails started last kept the other
/// connections idle while it finished (issue 13). Longest first shortens
/// that tail; no mail of a recipient overtakes another, since each group
/// keeps its order.
fn longest_first<T>(groups: &mut [Vec<T>]) {
    groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
}

/// Delivers one group's rows in order, until the round halts or stops.
async fn deliver_group(round: &Round<'_>, rows: Vec<store::OutboxRow>) -> Result<(), StoreError> {
    for row in rows {
        // A burst is taken in first (see `Draining`).
        round.room.intake.wait().await;
        if !round.go_on() {
            return Ok(());
        }
        // One span per delivery: every line about it names the row.
        let span = info_span!("delivery", outbox = row.id, template = %row.template);
        match deliver_one(round, &row).instrument(span).await {
            Ok(true) => {}
            Ok(false) => {
                round.halted.store(true, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => {
                round.halted.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Sends one due row and records the verdict. Returns `false` when the SMTP
/// server is unreachable: the round stops there.
async fn deliver_one(round: &Round<'_>, row: &store::OutboxRow) -> Result<bool, StoreError> {
    let room = round.room;
    let now = round.now;
    let verdict = if per_recipient(row) {
        deliver_each(round, row).await?
    } else {
        deliver_whole(round, row).await
    };
    let expired = now - row.created_at >= RETRY_FOR;
    match verdict {
        Verdict::Sent => {
            round.state(|s| s.outage_ends(Utc::now()));
            record_sent(round, row.id, None).await;
            round.count(|d| d.sent += 1);
        }
        Verdict::Unreachable(e) if !expired => {
            // The first group to find the server down speaks for the round.
            if !round.halted.swap(true, Ordering::Relaxed) {
                round.state(|s| s.outage_starts(&e, Utc::now()));
                let _turn = round.db_turn().await;
                let mut conn = room.store.conn().await?;
                store::outbox::mark_waiting(&mut conn, now, &e).await?;
            }
            round.count(|d| d.unreachable = true);
            return Ok(false);
        }
        Verdict::Retry(e) if !expired => {
            round.state(|s| s.outage_ends(Utc::now()));
            let next = now + backoff(row.attempts);
            warn!(outbox = row.id, attempts = row.attempts + 1, error = %crate::logging::Personal(&e), "Delivery deferred; will retry.");
            let _turn = round.db_turn().await;
            let mut tx = room.store.begin().await?;
            store::outbox::mark_retry(&mut tx, row.id, next, &e).await?;
            tx.commit().await?;
            round.count(|d| d.retried += 1);
        }
        Verdict::Retry(e) | Verdict::Unreachable(e) | Verdict::Failed(e) => {
            if per_recipient(row) {
                settle_rest(round, row, &e, now).await?;
                if refused_some_but_not_all(round, row.id).await? {
                    // Retries ran out for some, others got it.
                    record_sent(round, row.id, None).await;
                    round.count(|d| d.sent += 1);
                    return Ok(true);
                }
            }
            fail(round, row, &e, now).await?;
            round.count(|d| d.failed += 1);
        }
    }
    Ok(true)
}

/// One SMTP transaction for all recipients (a consumer's mail).
async fn deliver_whole(round: &Round<'_>, row: &store::OutboxRow) -> Verdict {
    if round.state(|s| s.unrecorded.contains(&(row.id, None))) {
        // Delivered in an earlier round; only the record is missing.
        return Verdict::Sent;
    }
    let recipients = row.recipient_list();
    let to: Vec<&str> = recipients.iter().map(String::as_str).collect();
    match round
        .sender
        .send_raw(&row.envelope_from, &to, &row.raw)
        .await
    {
        Ok(()) => Verdict::Sent,
        Err(SendError::Transient(e)) => Verdict::Retry(e),
        Err(SendError::Unreachable(e)) => Verdict::Unreachable(e),
        Err(SendError::Permanent(e)) => Verdict::Failed(e),
    }
}

/// One SMTP transaction per recipient not yet settled; each delivery or
/// refusal for good is recorded at once, so a retry goes only to those
/// still waiting and nobody gets the mail twice.
async fn deliver_each(round: &Round<'_>, row: &store::OutboxRow) -> Result<Verdict, StoreError> {
    let room = round.room;
    let settled = {
        let _turn = round.db_turn().await;
        let mut conn = room.store.conn().await?;
        store::outbox::settled_recipients(&mut conn, row.id).await?
    };
    let mut sent_any = settled.iter().any(|(_, s)| s == "sent");
    let mut refused: Option<String> = None;
    let mut deferred: Option<String> = None;
    for (i, recipient) in row.recipient_list().iter().enumerate() {
        let key = recipient_key(recipient);
        if settled.iter().any(|(r, _)| *r == key) {
            continue;
        }
        let unrecorded = (row.id, Some(key.clone()));
        let result = if round.state(|s| s.unrecorded.contains(&unrecorded)) {
            Ok(())
        } else {
            round
                .sender
                .send_raw(&row.envelope_from, &[recipient.as_str()], &row.raw)
                .await
        };
        match result {
            Ok(()) => {
                sent_any = true;
                round.state(|s| s.outage_ends(Utc::now()));
                record_sent(round, row.id, Some(key)).await;
            }
            Err(SendError::Permanent(e)) => {
                warn!(outbox = row.id, recipient = i + 1, error = %crate::logging::Personal(&e), "Recipient refused for good; the others still get the mail.");
                let _turn = round.db_turn().await;
                let mut conn = room.store.conn().await?;
                store::outbox::settle_recipient(
                    &mut conn,
                    row.id,
                    &key,
                    false,
                    Some(&e),
                    Utc::now(),
                )
                .await?;
                refused = Some(e);
            }
            Err(SendError::Transient(e)) => deferred = Some(e),
            Err(SendError::Unreachable(e)) => return Ok(Verdict::Unreachable(e)),
        }
    }
    Ok(match (deferred, sent_any, refused) {
        (Some(e), _, _) => Verdict::Retry(e),
        (None, true, _) => Verdict::Sent,
        (None, false, Some(e)) => Verdict::Failed(e),
        (None, false, None) => {
            // Every recipient was refused in an earlier round.
            Verdict::Failed("every recipient was refused".into())
        }
    })
}

/// Records a delivery (the whole mail, or one recipient) right after the
/// server accepted it. The group does not write the record itself: it
/// hands it to the round's [`recorder`] and sends its next mail, and the
/// recorder writes every delivery waiting in one short transaction (group
/// commit). A group that wrote the records itself kept its connection idle
/// meanwhile: 6.3 s of the connections' 34 s in a 3,000 burst, against
/// 1–2.5 s now (issue 13). At most [`UNRECORDED_MAX`] deliveries wait
/// unrecorded (what a crash at that moment could send twice); beyond that
/// the group waits for the turn and writes them. If the database stays
/// locked, they are kept in the sender's state and recorded next round: the
/// mail is not sent again.
async fn record_sent(round: &Round<'_>, id: i64, recipient: Option<String>) {
    let waiting = {
        let mut accepted = round.lock_accepted();
        accepted.push((id, recipient));
        accepted.len()
    };
    if waiting < UNRECORDED_MAX {
        round.to_record.notify_one();
        return;
    }
    round.write_waiting().await;
}

/// Writes the deliveries the groups hand over ([`record_sent`]) while they
/// go on sending, until the groups are done and every record is written.
async fn recorder(round: &Round<'_>) {
    loop {
        round.to_record.notified().await;
        let done = round.groups_done.load(Ordering::Acquire);
        round.write_waiting().await;
        if done {
            return;
        }
    }
}

/// How many accepted deliveries may wait for their record while the groups
/// go on sending (see [`record_sent`]).
const UNRECORDED_MAX: usize = 16;

/// Writes the deliveries waiting for their record; the caller holds the
/// database turn.
async fn write_sent(round: &Round<'_>) {
    let batch = std::mem::take(&mut *round.lock_accepted());
    if batch.is_empty() {
        // Written by the group that had the turn before.
        return;
    }
    let result = async {
        let mut conn = round.room.store.conn().await?;
        store::outbox::record_all_sent(&mut conn, &batch, Utc::now()).await
    }
    .await;
    match result {
        Ok(()) => round.state(|s| {
            for key in &batch {
                s.unrecorded.remove(key);
            }
        }),
        Err(e) => {
            warn!(deliveries = batch.len(), error = %e, "Mail delivered but not yet recorded; recording it next round without sending it again.");
            round.state(|s| s.unrecorded.extend(batch));
        }
    }
}

/// Marks every recipient not yet settled as refused (retries ran out).
async fn settle_rest(
    round: &Round<'_>,
    row: &store::OutboxRow,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let _turn = round.db_turn().await;
    let mut tx = round.room.store.begin().await?;
    for recipient in row.recipient_list() {
        let key = recipient_key(&recipient);
        store::outbox::settle_recipient(&mut tx, row.id, &key, false, Some(error), now).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn refused_some_but_not_all(round: &Round<'_>, id: i64) -> Result<bool, StoreError> {
    let _turn = round.db_turn().await;
    let mut conn = round.room.store.conn().await?;
    let settled = store::outbox::settled_recipients(&mut conn, id).await?;
    Ok(settled.iter().any(|(_, s)| s == "sent") && settled.iter().any(|(_, s)| s == "failed"))
}

/// Gives a mail up for good: recorded on its case, and a consumer's mail
/// that cannot be delivered is put before the team.
async fn fail(
    round: &Round<'_>,
    row: &store::OutboxRow,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let room = round.room;
    warn!(outbox = row.id, error = %crate::logging::Personal(error), "Delivery failed for good.");
    let _turn = round.db_turn().await;
    let mut tx = room.store.begin().await?;
    crate::team::delivery_failed(
        &mut tx,
        room,
        row.id,
        row.case_id.as_ref(),
        row.audience == store::outbox::Audience::Consumer.as_str(),
        error,
        &format!("{}: {error}", row.template),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_go_longest_first_and_equal_ones_in_queue_order() {
        let mut groups = vec![vec![1], vec![2, 3], vec![4], vec![5, 6, 7], vec![8, 9]];
        longest_first(&mut groups);
        assert_eq!(
            groups,
            [vec![5, 6, 7], vec![2, 3], vec![8, 9], vec![1], vec![4]]
        );
    }

    #[test]
    fn recipients_are_keyed_by_bare_address() {
        assert_eq!(
            recipient_key("Alice <Alice@Example.com>"),
            "alice@example.com"
        );
        assert_eq!(recipient_key(" bob@example.com "), "bob@example.com");
    }

    #[test]
    fn outage_rounds_are_paced_up_to_a_minute() {
        let mut state = SenderState::default();
        assert!(!state.in_outage());
        state.outage_starts("connection refused", Utc::now());
        assert!(state.in_outage());
        assert_eq!(state.outage_pause(), std::time::Duration::from_secs(2));
        for _ in 0..20 {
            state.outage_starts("connection refused", Utc::now());
        }
        assert_eq!(state.outage_pause(), std::time::Duration::from_secs(60));
        state.outage_ends(Utc::now());
        assert!(!state.in_outage());
        assert_eq!(state.outage_pause(), std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_throttling_server_sets_the_outage_pause() {
        let mut state = SenderState::default();
        state.outage_starts(
            "SMTP server h:587: transient error (421): 4.7.0 Try again in 300 seconds",
            Utc::now(),
        );
        let pause = state.outage_pause();
        assert!(
            pause >= std::time::Duration::from_secs(300)
                && pause <= std::time::Duration::from_secs(330),
            "{pause:?}"
        );
        // The next refusal says nothing: back to the usual pace.
        state.outage_starts("connection refused", Utc::now());
        assert_eq!(state.outage_pause(), std::time::Duration::from_secs(4));
    }
}
