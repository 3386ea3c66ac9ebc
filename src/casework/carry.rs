//! What one intake transaction carries from one message to the next: the
//! block its cases are numbered from, and the last new case's first reply,
//! composed and not yet written, with the events that follow it.
//!
//! A new request costs two commands to the SQLite worker: the case's
//! statement batch, then its first reply once the per-sender count is known.
//! The reply is kept here instead and written at the head of the next case's
//! statement batch, so that a burst of requests costs one command each
//! (issue 13, docs/benchmark.md). The statements still run in the same order
//! as before: the reply, then the next case. Whatever else reads or writes
//! the transaction first calls [`Carry::flush`], so nothing in the store ever
//! sees it without the reply.
//!
//! An opt-out's reply is followed by an event (`opt_out_answered`), which
//! cost two more commands: the reply, then the event. Both are carried, and
//! written in that order at the head of the next case's batch.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::{Composed, Result, event_row};
use crate::cases::Effect;
use crate::store::cases::{CaseEvents, CaseNumbers};
use crate::store::events::NewEvent;

pub(crate) struct Carry {
    /// The transaction's case numbers (see [`CaseNumbers`]).
    numbers: CaseNumbers,
    /// A first reply the limit let go, waiting for the next command.
    reply: Option<Composed>,
    /// Events of the reply's case that follow it, written right after it.
    events: Option<Events>,
}

/// The events [`Carry`] holds after its reply: one case's, at one time.
#[derive(Debug)]
pub(super) struct Events {
    case_id: String,
    at: DateTime<Utc>,
    /// The engine's event effects, in its order.
    list: Vec<Effect>,
}

impl Events {
    /// `None` when there are no events to carry.
    pub(super) fn new(case_id: &str, at: DateTime<Utc>, list: Vec<Effect>) -> Option<Self> {
        (!list.is_empty()).then(|| Events {
            case_id: case_id.to_string(),
            at,
            list,
        })
    }

    /// The rows for `store::events`, borrowing from `self`.
    pub(super) fn rows(&self) -> Vec<NewEvent<'_>> {
        self.list.iter().filter_map(event_row).collect()
    }

    /// For a statement batch, with `rows` from [`Events::rows`].
    pub(super) fn batch<'a>(&'a self, rows: &'a [NewEvent<'a>]) -> CaseEvents<'a> {
        CaseEvents {
            case_id: &self.case_id,
            at: self.at,
            events: rows,
        }
    }
}

impl std::fmt::Debug for Carry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carry")
            .field("numbers", &self.numbers)
            .field("reply", &self.reply.is_some())
            .field("events", &self.events.as_ref().map_or(0, |e| e.list.len()))
            .finish()
    }
}

impl Carry {
    pub(crate) fn new(numbers: CaseNumbers) -> Self {
        Carry {
            numbers,
            reply: None,
            events: None,
        }
    }

    /// Writes the carried reply and its events, if any. Call it before
    /// anything else reads or writes the transaction.
    pub(crate) async fn flush(&mut self, conn: &mut SqliteConnection) -> Result<()> {
        if let Some(reply) = self.reply.take() {
            reply.write(conn).await?;
        }
        if let Some(events) = self.events.take() {
            crate::store::events::append_many(conn, &events.case_id, events.at, &events.rows())
                .await?;
        }
        Ok(())
    }

    /// Keeps `reply`, and the events that follow it, for the next command.
    /// What is still carried is written first, so that at most one reply
    /// waits.
    pub(super) async fn keep(
        &mut self,
        conn: &mut SqliteConnection,
        reply: Composed,
        events: Option<Events>,
    ) -> Result<()> {
        self.flush(conn).await?;
        self.reply = Some(reply);
        self.events = events;
        Ok(())
    }

    /// The carried reply and its events, for the caller to write in its own
    /// command, in that order.
    pub(super) fn take(&mut self) -> Option<(Composed, Option<Events>)> {
        let reply = self.reply.take();
        let events = self.events.take();
        reply.map(|reply| (reply, events))
    }

    /// The next case number for `prefix` in `year`. Reserving a new block
    /// is a statement of its own, so the carried reply is written first.
    pub(crate) async fn next_number(
        &mut self,
        conn: &mut SqliteConnection,
        prefix: &str,
        year: i32,
    ) -> Result<u64> {
        if !self.numbers.has_free(prefix, year) {
            self.flush(conn).await?;
        }
        Ok(self.numbers.next(conn, prefix, year).await?)
    }

    /// The numbers as they are now, to go back to when a message is rolled
    /// back to its savepoint ([`Carry::roll_back`]).
    pub(crate) fn numbers(&self) -> CaseNumbers {
        self.numbers.clone()
    }

    /// After a message was rolled back to its savepoint: its numbers are
    /// handed out again and its reply, never written, is dropped.
    pub(crate) fn roll_back(&mut self, numbers: CaseNumbers) {
        self.numbers = numbers;
        self.reply = None;
        self.events = None;
    }

    /// Before the transaction commits: writes the carried reply and gives
    /// back the numbers not handed out.
    pub(crate) async fn finish(&mut self, conn: &mut SqliteConnection) -> Result<()> {
        self.flush(conn).await?;
        self.numbers.give_back(conn).await?;
        Ok(())
    }
}
