//! The outbox's edges: [`compose`] builds a message from a rendered template,
//! [`smtp`] sends it. Mail is queued in the `outbox` table with the change
//! that caused it (the store's `outbox` table) and delivered by the
//! `delivery` module above; neither part knows the database or the mailbox.

mod body;
pub mod compose;
pub mod smtp;
