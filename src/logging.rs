//! Logging setup: the journal (with structured fields) when run by systemd,
//! text on stderr otherwise, JSON for log shippers. `RUST_LOG` refines the
//! level (default `info`).
//!
//! Personal data (addresses, names, bodies) is only ever logged at `debug` and
//! below, unless `logging.log_personal_data` is set. Anything that may hold it
//! (an address, a server's answer, an error that quotes one) goes into a log
//! line wrapped in [`Personal`], whose `Display` redacts it unless the flag
//! (set once by [`init`]) allows it.

use std::borrow::Cow;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use regex::Regex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

static PERSONAL: AtomicBool = AtomicBool::new(false);

/// Installs the global subscriber. Safe to call once; later calls do nothing.
pub(crate) fn init(format: LogFormat, log_personal_data: bool) {
    PERSONAL.store(log_personal_data, Ordering::Relaxed);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // lettre and async-imap log every protocol line at debug and trace,
    // AUTH (the password) and whole messages included: never below info,
    // whatever RUST_LOG says (SPEC §10: secrets never logged).
    // The OAuth HTTP stack stays at info too: a token request carries the
    // client secret or an assertion, its answer the token.
    let filter = [
        "lettre=info",
        "async_imap=info",
        "imap_proto=info",
        "oauth2=info",
        "reqwest=info",
        "hyper=info",
        "hyper_util=info",
    ]
    .into_iter()
    .filter_map(|d| d.parse().ok())
    .fold(filter, |f, d| f.add_directive(d));
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

/// A value that may hold personal data, on its way to a log line:
/// `info!(error = %Personal(&e), "…")`. Displays as is when
/// `logging.log_personal_data = true`; otherwise with every e-mail address
/// replaced by `[address]` (see [`redact`]).
#[derive(Debug, Clone, Copy)]
pub struct Personal<T>(pub T);

impl<T: std::fmt::Display> std::fmt::Display for Personal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if PERSONAL.load(Ordering::Relaxed) {
            write!(f, "{}", self.0)
        } else {
            f.write_str(&redact(&self.0.to_string()))
        }
    }
}

/// Text from outside (a server's reply, an error) with e-mail addresses
/// replaced by `[address]`, unless the admin allowed personal data in logs.
/// SMTP servers echo recipients ("<jane@example.com>: Recipient address
/// rejected"), so their answers pass through here before reaching a log line.
pub(crate) fn redact(text: &str) -> Cow<'_, str> {
    if PERSONAL.load(Ordering::Relaxed) {
        return Cow::Borrowed(text);
    }
    static ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"[A-Za-z0-9._%+=\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*").unwrap_or_else(
            |_| {
                // The pattern is a constant; this arm is never taken.
                Regex::new("$^").unwrap_or_else(|_| unreachable!())
            },
        )
    });
    ADDRESS.replace_all(text, "[address]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_redacted() {
        assert_eq!(
            redact("550 5.1.1 <jane.doe+x@mail.example.com>: Recipient address rejected"),
            "550 5.1.1 <[address]>: Recipient address rejected"
        );
        assert_eq!(redact("connection refused"), "connection refused");
        assert_eq!(
            Personal("jane@example.com rejected").to_string(),
            "[address] rejected"
        );
    }
}
