//! The privacy team works every case from its mail client (SPEC §6):
//! notices, commands by reply, burst summaries, the daily digest, and the
//! team's own correspondence with consumers.

pub mod auth;
pub mod commands;
pub mod correspondence;
pub mod digest;
pub mod mail;
pub mod notices;

pub use notices::{delivery_failed, notify_delivery_failure, notify_review};
