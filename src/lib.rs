//! privacy-mailroom: runs a company's privacy mailbox.
//!
//! Data flow (SPEC §2; the picture and the layer table are in
//! `docs/architecture.md`): `daemon` runs the loops; `sync` fetches new mail by
//! UID and hands each batch to `intake`, which parses it (`message`), sorts it
//! (`classify`) and routes it: a new request or a consumer's reply goes to the
//! pure engine in `cases` through `casework`, a team member's reply to `team`.
//! `casework` commits the case, its events and the mail it causes (outbox
//! rows, rendered from `templates`) to `store` in the message's transaction;
//! then `sync` files the original. `delivery` sends the outbox over SMTP
//! (`outbox`), and `sync` copies what was sent to the Sent folder.
//! `scheduler` drives the clocks, the digest and the daily `purge`; `cli` and
//! `config` sit at the edge.
//!
//! Layout, bottom to top (a module uses only the ones below it):
//! - foundation: `errors`, `faults`, `hash`, `ids`, `systemd`, `throttle`, `tls`, `message`,
//!   then `address`, `cases`, `classify`, `config`;
//! - edges and persistence: `store` (all SQL), `imap`, `outbox`, `templates`, `logging`;
//! - the shared context: `mailroom`;
//! - the middle: `attachments`, `report`, `signals`, `casework`, `team`,
//!   `intake`, `delivery`, `purge`, `sync`, `scheduler`;
//! - the top: `daemon`, `check`, `cli`.

// Lints for the shipped code (library and binary, not the integration tests,
// whose harness needs libc): no unsafe, no unwrap outside `#[cfg(test)]`
// (clippy.toml allows it in tests).
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]
// The docs are for maintainers (`scripts/test` builds them with
// `--document-private-items`), so links from a public item to a
// crate-private one are wanted, not a leak.
#![allow(rustdoc::private_intra_doc_links)]

pub mod address;
pub mod attachments;
pub mod cases;
pub mod casework;
pub mod check;
pub mod classify;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod errors;
pub mod faults;
pub mod hash;
pub mod ids;
pub mod imap;
pub mod intake;
pub mod lease;
pub mod logging;
pub mod mailroom;
pub mod message;
pub mod oauth;
pub mod outbox;
pub mod purge;
pub mod report;
pub mod scheduler;
pub mod signals;
pub mod store;
pub mod sync;
pub mod systemd;
pub mod team;
pub mod templates;
pub mod throttle;
pub mod tls;
