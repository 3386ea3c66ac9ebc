//! The case engine: pure, no I/O. An [`Input`] applied to a [`Case`] yields the
//! new case and a list of [`Effect`]s (mail to send, team notifications, events)
//! that the caller commits in one transaction. Time comes in through the
//! [`Policy`] and the `now` argument, never from the system clock, so every
//! transition is unit-testable.

pub mod clock;
pub mod engine;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use clock::Policy;
pub use engine::{Command, Effect, Input, Refusal, Template, Transition, apply, open};

/// What the consumer asked for (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Know,
    Delete,
    OptOut,
    Correct,
    Limit,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Know,
        Kind::Delete,
        Kind::OptOut,
        Kind::Correct,
        Kind::Limit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Know => "know",
            Kind::Delete => "delete",
            Kind::OptOut => "opt_out",
            Kind::Correct => "correct",
            Kind::Limit => "limit",
        }
    }

    /// Whether the business must verify the requester's identity before
    /// acting. Opt-out (§7026(d)) and limit (§7027(e)) requests are not
    /// verifiable consumer requests: the case opens ready for the team.
    pub fn needs_verification(self) -> bool {
        matches!(self, Kind::Know | Kind::Delete | Kind::Correct)
    }

    /// Whether the 45-day response clock (§7021(b)) with its one extension
    /// applies. Opt-out and limit requests are due within 15 business days
    /// (§7026(f), §7027(g)) and cannot be extended.
    pub fn has_45_day_clock(self) -> bool {
        self.needs_verification()
    }

    /// Human wording used in mail ("Request to Know").
    pub fn title(self) -> &'static str {
        match self {
            Kind::Know => "Request to Know",
            Kind::Delete => "Request to Delete",
            Kind::OptOut => "Request to Opt-Out of Sale/Sharing",
            Kind::Correct => "Request to Correct",
            Kind::Limit => "Request to Limit",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct ParseEnumError(pub String);

impl FromStr for Kind {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ParseEnumError(s.to_string()))
    }
}

/// Case states (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    AwaitingVerification,
    VerificationSubmitted,
    Verified,
    AwaitingConfirmation,
    Confirmed,
    Completed,
    Denied,
    Closed,
    Withdrawn,
}

impl State {
    pub const ALL: [State; 9] = [
        State::AwaitingVerification,
        State::VerificationSubmitted,
        State::Verified,
        State::AwaitingConfirmation,
        State::Confirmed,
        State::Completed,
        State::Denied,
        State::Closed,
        State::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::AwaitingVerification => "awaiting_verification",
            State::VerificationSubmitted => "verification_submitted",
            State::Verified => "verified",
            State::AwaitingConfirmation => "awaiting_confirmation",
            State::Confirmed => "confirmed",
            State::Completed => "completed",
            State::Denied => "denied",
            State::Closed => "closed",
            State::Withdrawn => "withdrawn",
        }
    }

    /// A final state: the case takes no more decisions.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Completed | State::Denied | State::Closed | State::Withdrawn
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ParseEnumError(s.to_string()))
    }
}

/// Everything the engine knows about a case. Mirrors the `cases` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Case {
    /// `{prefix}-{year}-{seq:05}`, e.g. `CCPA-2026-00042`.
    pub id: String,
    pub kind: Kind,
    pub state: State,
    /// Address the request came from (the consumer, or the agent).
    pub requester: String,
    /// The agent's address for agent requests.
    pub agent: Option<String>,
    /// The consumer's address when known.
    pub consumer: Option<String>,
    pub consumer_name: Option<String>,
    pub received_at: DateTime<Utc>,
    /// When the first reply (acknowledgement, or the opt-out reply) went
    /// out; `None` while it is held.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// The first reply was held back by the per-sender loop guard; the
    /// scheduler sends it at this time, before the acknowledgement deadline.
    pub ack_held_until: Option<DateTime<Utc>>,
    /// Acknowledgement deadline (10 business days).
    pub ack_due_at: DateTime<Utc>,
    /// Response deadline (45 days, +45 once extended).
    pub due_at: DateTime<Utc>,
    pub extended: bool,
    pub verified_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Code the consumer sends back to prove control of the mailbox.
    pub verification_code: String,
    pub reminder_sent_at: Option<DateTime<Utc>>,
    /// For agent cases: a declaration was accepted or a power of attorney recorded.
    pub authorization_ok: bool,
    /// How the final state was reached, for records: `complied`,
    /// `partially_complied`, `denied`, `withdrawn`, `closed`.
    pub resolution: Option<String>,
    /// Why the request was denied, or (resolution `partially_complied`) what
    /// was not done and why: the §7101 "basis for denial".
    pub denial_reason: Option<String>,
    /// The one automatic answer to mail in a closed case went out.
    pub closed_reply_sent: bool,
    /// The team was told the due date is near / passed (once each).
    pub due_soon_notified: bool,
    pub overdue_notified: bool,
}

impl Case {
    pub fn is_agent(&self) -> bool {
        self.agent.is_some()
    }

    /// The requester, the agent or the consumer: whoever may write in the
    /// case's thread by its subject tag alone.
    pub fn is_party(&self, addr: &str) -> bool {
        [
            Some(&self.requester),
            self.agent.as_ref(),
            self.consumer.as_ref(),
        ]
        .into_iter()
        .flatten()
        .any(|a| crate::address::same(a, addr))
    }
}
