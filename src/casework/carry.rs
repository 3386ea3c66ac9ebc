//! What one intake transaction carries from one message to the next: the
//! block its cases are numbered from, and the last new case's first reply,
//! composed and not yet written.
//!
//! A new request costs two commands to the SQLite worker: the case's
//! statement batch, then its first reply once the per-sender count is known.
//! The reply is kept here instead and written at the head of the next case's
//! statement batch, so that a burst of requests costs one command each
//! (issue 13, docs/benchmark.md). The statements still run in the same order
//! as before: the reply, then the next case. Whatever else reads or writes
//! the transaction first calls [`Carry::flush`], so nothing in the store ever
//! sees it without the reply.

use sqlx::SqliteConnection;

use super::{Composed, Result};
use crate::store::cases::CaseNumbers;

pub(crate) struct Carry {
    /// The transaction's case numbers (see [`CaseNumbers`]).
    numbers: CaseNumbers,
    /// A first reply the limit let go, waiting for the next command.
    reply: Option<Composed>,
}

impl std::fmt::Debug for Carry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Carry")
            .field("numbers", &self.numbers)
            .field("reply", &self.reply.is_some())
            .finish()
    }
}

impl Carry {
    pub(crate) fn new(numbers: CaseNumbers) -> Self {
        Carry {
            numbers,
            reply: None,
        }
    }

    /// Writes the carried reply, if any. Call it before anything else reads
    /// or writes the transaction.
    pub(crate) async fn flush(&mut self, conn: &mut SqliteConnection) -> Result<()> {
        if let Some(reply) = self.reply.take() {
            reply.write(conn).await?;
        }
        Ok(())
    }

    /// Keeps `reply` for the next command. A reply still carried is written
    /// first, so that at most one waits.
    pub(super) async fn keep(
        &mut self,
        conn: &mut SqliteConnection,
        reply: Composed,
    ) -> Result<()> {
        self.flush(conn).await?;
        self.reply = Some(reply);
        Ok(())
    }

    /// The carried reply, for the caller to write in its own command.
    pub(super) fn take(&mut self) -> Option<Composed> {
        self.reply.take()
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
    }

    /// Before the transaction commits: writes the carried reply and gives
    /// back the numbers not handed out.
    pub(crate) async fn finish(&mut self, conn: &mut SqliteConnection) -> Result<()> {
        self.flush(conn).await?;
        self.numbers.give_back(conn).await?;
        Ok(())
    }
}
