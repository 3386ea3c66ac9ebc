//! systemd `Type=notify` support: READY, STATUS, WATCHDOG, STOPPING. Without
//! `NOTIFY_SOCKET` (not run by systemd) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

fn send(state: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(state) {
        debug!(error = %e, "sd_notify failed.");
    }
}

/// The mailbox is selected and the outbox sender runs.
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// A status line a person can read (`systemctl status`).
pub fn status(line: &str) {
    if !line.is_empty() {
        send(&[NotifyState::Status(line)]);
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

pub(crate) fn reloading() {
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        send(&[NotifyState::Reloading, now]);
    }
}

/// The watchdog: pinged from the main loop at half of `WatchdogSec`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watchdog {
    interval: Option<Duration>,
}

impl Watchdog {
    pub fn from_env() -> Watchdog {
        Watchdog {
            interval: sd_notify::watchdog_enabled().map(|d| d / 2),
        }
    }

    /// How long the main loop may wait before the next ping.
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(Duration::from_secs(3600))
    }

    pub(crate) fn ping(&self) {
        if self.interval.is_some() {
            send(&[NotifyState::Watchdog]);
        }
    }
}
