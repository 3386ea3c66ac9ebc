//! privacy-mailroom: runs a company's privacy mailbox.
//!
//! Data flow (SPEC §2): `imap` fetches by UID → `message` parses into an owned
//! [`message::Inbound`] → `classify` sorts it → `cases` (pure engine) decides the
//! new state and effects → `store` commits message, case, events and outbox rows
//! in one transaction → `imap` files the original → `outbox` delivers over SMTP.
//! `scheduler` drives the clocks; `cli` and `config` sit at the edge; `daemon`
//! wires the tasks together.

pub mod cases;
pub mod classify;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod ids;
pub mod imap;
pub mod intake;
pub mod message;
pub mod outbox;
pub mod scheduler;
pub mod store;
pub mod templates;
pub mod tls;
