//! Crash points for the recovery tests. When `PRIVACY_MAILROOM_FAULT` names a
//! point, the process exits there at once, as if killed: nothing is flushed,
//! no cleanup runs. Unset (always, in production) it costs one env lookup.

/// Exits the process with status 86 if the fault point `name` is armed.
pub fn hit(name: &str) {
    if std::env::var("PRIVACY_MAILROOM_FAULT").is_ok_and(|v| v == name) {
        eprintln!("fault point {name} reached: exiting as if killed");
        std::process::exit(86);
    }
}

/// Panics if the fault point `name` is armed: for the tests that prove a
/// task dying in the middle of the daemon brings the whole daemon down.
pub fn panic_at(name: &str) {
    if std::env::var("PRIVACY_MAILROOM_FAULT").is_ok_and(|v| v == name) {
        panic!("fault point {name} reached: panicking");
    }
}
