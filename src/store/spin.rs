//! Waiting on the SQLite worker without parking the thread each time.
//!
//! sqlx runs each SQLite connection on a worker thread and sends every
//! statement's result back over a channel. A caller awaiting a statement
//! batch is woken once per statement: the thread parks, the worker's send
//! wakes it with a `futex` call and a context switch, it takes the one
//! result and parks again. Intake writes about ten statements per request,
//! and those wake-ups were most of its system time (issue 13,
//! docs/benchmark.md). A statement takes the worker tens of microseconds,
//! so polling again for a short while usually finds the next result there
//! and the thread never parks.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How long a poll spins before the runtime may park the thread: a few
/// statements' time. A wait longer than that (the commit's `fsync`, another
/// writer's lock) parks as usual after it. Intake without servers took in
/// 2,200–3,100/s with any spin from 50 µs to 1 ms, against 1,800–2,300/s
/// without; 100 µs keeps a tokio worker's turn short.
const SPIN: Duration = Duration::from_micros(100);

/// Runs `future`, polling it again for up to [`SPIN`] whenever it is pending
/// before letting the runtime park the thread.
pub(crate) fn spin_first<F: Future>(future: F) -> SpinFirst<F> {
    SpinFirst {
        inner: Box::pin(future),
    }
}

/// See [`spin_first`].
pub(crate) struct SpinFirst<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for SpinFirst<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = Instant::now();
        loop {
            if let Poll::Ready(out) = self.inner.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if started.elapsed() >= SPIN {
                return Poll::Pending;
            }
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gives_what_the_future_gives() {
        assert_eq!(spin_first(async { 7 }).await, 7);
        // Pending longer than the spin: parked, woken, and done.
        let slept = spin_first(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            "late"
        });
        assert_eq!(slept.await, "late");
    }

    #[tokio::test]
    async fn store_results_come_back_through_it() {
        let (_dir, store) = crate::store::testing::store().await;
        let mut conn = store.conn().await.unwrap();
        let n: i64 = spin_first(sqlx::query_scalar("SELECT 1 + 1").fetch_one(&mut *conn))
            .await
            .unwrap();
        assert_eq!(n, 2);
    }
}
