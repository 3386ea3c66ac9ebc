//! Crash points for the recovery tests. When `PRIVACY_MAILROOM_FAULT` names a
//! point, the process exits there at once, as if killed: nothing is flushed,
//! no cleanup runs.
//!
//! Compiled in only with the `fault-injection` cargo feature (`scripts/test`
//! turns it on); without it [`hit`] is an empty function, so a release binary
//! has no test hook an environment variable could trigger.

/// Exits the process with status 86 if the fault point `name` is armed.
#[cfg(feature = "fault-injection")]
pub(crate) fn hit(name: &str) {
    if std::env::var("PRIVACY_MAILROOM_FAULT").is_ok_and(|v| v == name) {
        eprintln!("fault point {name} reached: exiting as if killed");
        std::process::exit(86);
    }
}

/// Without the `fault-injection` feature there are no fault points.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn hit(_name: &str) {}

/// Panics if the fault point `name` is armed: for the test that proves the
/// daemon exits when its sender task dies.
#[cfg(feature = "fault-injection")]
pub(crate) fn panic_at(name: &str) {
    if std::env::var("PRIVACY_MAILROOM_FAULT").is_ok_and(|v| v == name) {
        panic!("fault point {name} reached: panicking");
    }
}

/// Without the `fault-injection` feature there are no fault points.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn panic_at(_name: &str) {}
