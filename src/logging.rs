//! Logging setup: the journal (with structured fields) when run by systemd,
//! text on stderr otherwise, JSON for log shippers. `RUST_LOG` refines the
//! level (default `info`).
//!
//! Personal data (addresses, names, bodies) is only ever logged at `debug` and
//! below, unless `logging.log_personal_data` is set; see [`personal`].

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

static PERSONAL: AtomicBool = AtomicBool::new(false);

/// Installs the global subscriber. Safe to call once; later calls do nothing.
pub fn init(format: LogFormat, log_personal_data: bool) {
    PERSONAL.store(log_personal_data, Ordering::Relaxed);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let use_journal = match format {
        LogFormat::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
        _ => false,
    };
    if use_journal && let Ok(journald) = tracing_journald::layer() {
        let _ = registry
            .with(journald.with_syslog_identifier("privacy-mailroom".into()))
            .try_init();
        return;
    }
    match format {
        LogFormat::Json => {
            let _ = registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(std::io::stderr),
                )
                .try_init();
        }
        _ => {
            let _ = registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(false),
                )
                .try_init();
        }
    }
}

/// Shows an address (or name) in a log line only when the admin allowed it.
pub fn personal(value: &str) -> &str {
    if PERSONAL.load(Ordering::Relaxed) {
        value
    } else {
        "[redacted]"
    }
}
