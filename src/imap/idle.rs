//! Waiting for new mail with IDLE (RFC 2177), raced against cancellation.
//!
//! async-imap's IDLE consumes the session and hands it back from `done()`;
//! the `StopSource` returned with the wait future must stay alive, because
//! dropping it interrupts the wait at once. Its own timeout restarts on every
//! server response (Dovecot's "still here" keepalives), so the overall limit
//! is enforced here with a deadline.

use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use tokio_util::sync::CancellationToken;

use super::{IO_TIMEOUT, Imap, ImapError, MAX_IDLE};

/// Without any response for this long, IDLE is ended early with DONE: if the
/// connection died silently, DONE times out and the caller reconnects, so a
/// dead peer is noticed within minutes rather than at the 25-minute mark.
const SILENCE: Duration = Duration::from_secs(5 * 60);

/// How long DONE may take: it should be answered at once.
const DONE_TIMEOUT: Duration = Duration::from_secs(15);

/// Why [`Imap::idle_wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleOutcome {
    /// The server announced something (usually EXISTS): list new messages.
    NewData,
    /// The wait ran out; the session is fine, IDLE again.
    Timeout,
    /// The token was cancelled; the session is fine for LOGOUT if it could
    /// be recovered, otherwise the next call reports `Disconnected`.
    Cancelled,
}

impl Imap {
    /// Waits until the selected mailbox changes, `timeout` passes (clamped to
    /// [`MAX_IDLE`]), or `cancel` fires. Returns at once with `NewData` when an
    /// EXISTS arrived during earlier commands. Servers without IDLE give
    /// [`ImapError::NoIdle`]: poll with [`Imap::noop`] instead.
    pub async fn idle_wait(
        &mut self,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<IdleOutcome, ImapError> {
        if !self.caps.idle {
            return Err(ImapError::NoIdle {
                host: self.host.clone(),
                port: self.port,
            });
        }
        self.drain_unsolicited();
        if std::mem::take(&mut self.new_data_pending) {
            return Ok(IdleOutcome::NewData);
        }
        if cancel.is_cancelled() {
            return Ok(IdleOutcome::Cancelled);
        }
        let total = timeout.min(MAX_IDLE);
        let silence = total.min(SILENCE);
        let Some(mut session) = self.session.take() else {
            return Err(self.err_disconnected());
        };
        // The server is silent by design during IDLE: lift the read timeout
        // above the silence window so only a truly dead connection trips it.
        session.as_mut().set_read_timeout(silence + IO_TIMEOUT);

        let mut handle = session.idle();
        if let Err(e) = handle.init().await {
            return Err(self.err_command("IDLE", e));
        }
        tracing::trace!(secs = total.as_secs(), "IDLE started.");

        let deadline = tokio::time::Instant::now() + total;
        let outcome = {
            let (wait, _stop) = handle.wait_with_timeout(silence);
            tokio::pin!(wait);
            tokio::select! {
                biased;
                () = cancel.cancelled() => Ok(IdleOutcome::Cancelled),
                () = tokio::time::sleep_until(deadline) => Ok(IdleOutcome::Timeout),
                result = &mut wait => match result {
                    Ok(IdleResponse::NewData(_)) => Ok(IdleOutcome::NewData),
                    Ok(IdleResponse::Timeout) => Ok(IdleOutcome::Timeout),
                    // Only dropping the StopSource interrupts, and it lives here.
                    Ok(IdleResponse::ManualInterrupt) => Ok(IdleOutcome::Timeout),
                    Err(e) => Err(e),
                },
            }
            // `_stop` drops here, after the wait future is done with.
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => return Err(self.err_command("IDLE", e)),
        };

        let done = tokio::time::timeout(DONE_TIMEOUT, handle.done()).await;
        match done {
            Ok(Ok(mut session)) => {
                session.as_mut().set_read_timeout(IO_TIMEOUT);
                self.session = Some(session);
                self.drain_unsolicited();
                if outcome == IdleOutcome::NewData {
                    self.new_data_pending = false;
                }
                Ok(outcome)
            }
            // Shutting down: the connection is dropped anyway.
            _ if outcome == IdleOutcome::Cancelled => Ok(outcome),
            Ok(Err(e)) => Err(self.err_command("IDLE DONE", e)),
            Err(_) => Err(ImapError::Timeout {
                host: self.host.clone(),
                port: self.port,
                what: "IDLE DONE".into(),
            }),
        }
    }
}
