//! privacy-mailroom: runs a company's privacy mailbox.
//!
//! Data flow (SPEC §2): `imap` fetches by UID → `message` parses into an owned
//! [`message::Inbound`] → `classify` sorts it → `cases` (pure engine) decides the
//! new state and effects → `store` commits message, case, events and outbox rows
//! in one transaction → `imap` files the original → `outbox` delivers over SMTP.
//! `scheduler` drives the clocks; `cli` and `config` sit at the edge; `daemon`
//! wires the tasks together.

pub mod address;
pub mod attachments;
pub mod cases;
pub mod casework;
pub mod check;
pub mod classify;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod faults;
pub mod hash;
pub mod ids;
pub mod imap;
pub mod intake;
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
pub mod systemd;
pub mod team;
pub mod templates;
pub mod tls;
