//! SIGTERM/SIGINT stop the daemon (after the message in hand); SIGHUP reloads
//! the templates and the `[team]` lists from the config file without dropping
//! the IMAP session (`Mailroom::reload`; other config changes need a restart).

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::mailroom::Mailroom;

/// Listens for signals in the background.
pub fn spawn(room: Mailroom, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            warn!("Cannot install signal handlers.");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    crate::systemd::reloading();
                    match room.reload() {
                        Ok(()) => info!("Templates and team lists reloaded."),
                        Err(e) => warn!(error = %crate::logging::Personal(&e), "Reload failed; keeping the running templates and team lists."),
                    }
                    crate::systemd::ready();
                }
            }
        }
        info!("Stopping: finishing the message in hand.");
        crate::systemd::stopping();
        shutdown.cancel();
    });
}
