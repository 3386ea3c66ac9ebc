//! The case engine: pure, no I/O. An [`Input`] applied to a [`Case`] yields the
//! new case and a list of [`Effect`]s (mail to send, team notifications, events)
//! that the caller commits in one transaction. Time comes in through the
//! [`Policy`] and the `now` argument, never from the system clock, so every
//! transition is unit-testable.

/// A closed vocabulary stored as text: the enum, `ALL`, `as_str`, `Display`
/// and `FromStr` from one list of `Variant = "text"` pairs, so the strings
/// are written once.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$( $name::$variant, )+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::cases::ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::cases::ParseEnumError(s.to_string()))
            }
        }
    };
}

pub(crate) use vocabulary;

pub mod clock;
pub mod commands;
pub mod engine;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::CaseId;

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
    pub(crate) fn needs_verification(self) -> bool {
        matches!(self, Kind::Know | Kind::Delete | Kind::Correct)
    }

    /// Whether the 45-day response clock (§7021(b)) with its one extension
    /// applies. Opt-out and limit requests are due within 15 business days
    /// (§7026(f), §7027(g)) and cannot be extended.
    pub(crate) fn has_45_day_clock(self) -> bool {
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
    pub(crate) fn is_final(self) -> bool {
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
    pub id: CaseId,
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
    /// A reminder was held back by the per-sender loop guard: not sent, and
    /// not tried again before this time.
    pub reminder_held_until: Option<DateTime<Utc>>,
    /// For agent cases: a declaration was accepted or a power of attorney recorded.
    pub authorization_ok: bool,
    /// How the final state was reached, for records.
    pub resolution: Option<Resolution>,
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
    pub(crate) fn is_agent(&self) -> bool {
        self.agent.is_some()
    }

    /// The requester, the agent or the consumer: whoever may write in the
    /// case's thread by its subject tag alone.
    pub(crate) fn is_party(&self, addr: &str) -> bool {
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

vocabulary! {
    /// How the request was submitted, for the §7101 record (`cases.manner`).
    pub enum Manner {
        /// By the consumer, by mail.
        Email = "email",
        /// Through an authorized agent.
        Agent = "agent",
    }
}

impl Default for Manner {
    /// The column's default.
    fn default() -> Self {
        Manner::Email
    }
}

/// Lets rows read a `manner` column straight into the enum
/// (`#[sqlx(try_from = "String")]`).
impl TryFrom<String> for Manner {
    type Error = ParseEnumError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

vocabulary! {
    /// How a case reached its final state, for the §7101 record and the
    /// §7102 metrics (`cases.resolution`).
    pub enum Resolution {
        Complied = "complied",
        /// `#complete partial`: carried out in part; `denial_reason` says
        /// what was not done and why.
        PartiallyComplied = "partially_complied",
        /// Denied, or closed because identity could not be verified.
        Denied = "denied",
        Withdrawn = "withdrawn",
        /// Closed without a substantive response (a duplicate, spam).
        Closed = "closed",
    }
}

vocabulary! {
    /// What an event row records (`events.action`). The team's commands
    /// record their own name (see [`commands::TABLE`]).
    pub enum Action {
        // The engine.
        Opened = "opened",
        State = "state",
        DeclarationReceived = "declaration_received",
        OptOutAnswered = "opt_out_answered",
        AcknowledgementHeld = "acknowledgement_held",
        AcknowledgementSent = "acknowledgement_sent",
        /// A reminder the loop guard held back (not recorded as sent).
        ReminderHeld = "reminder_held",
        VerificationSubmitted = "verification_submitted",
        Withdrawn = "withdrawn",
        WithdrawalUnclear = "withdrawal_unclear",
        Confirmed = "confirmed",
        ConsumerWrote = "consumer_wrote",
        DueDate = "due_date",
        Reminder = "reminder",
        Overdue = "overdue",
        DeadlineApproaching = "deadline_approaching",
        // Team commands (`Command::action`).
        Verify = "verify",
        Deny = "deny",
        Extend = "extend",
        Complete = "complete",
        Close = "close",
        Note = "note",
        DeclarationAccept = "declaration_accept",
        DeclarationReject = "declaration_reject",
        Poa = "poa",
        /// `#open KIND` on a message in review.
        Open = "open",
        // Casework, intake, the team's mail, delivery, attachments, purge.
        Refused = "refused",
        ReplySuppressed = "reply_suppressed",
        ReplyLimitOverridden = "reply_limit_overridden",
        CommandRefused = "command_refused",
        TeamMail = "team_mail",
        TeamCorrespondence = "team_correspondence",
        AutomaticMail = "automatic_mail",
        ForeignMessage = "foreign_message",
        Review = "review",
        OpenedTogether = "opened_together",
        Oversize = "oversize",
        /// A message over the MIME limits, moved to review unread.
        MimeLimit = "mime_limit",
        /// A copy of a team notice came back as new mail.
        NoticeReturned = "notice_returned",
        /// A notice held back by its per-sender or per-case limit.
        NoticeThrottled = "notice_throttled",
        DeliveryFailed = "delivery_failed",
        ProcessingFailed = "processing_failed",
        DocumentStored = "document_stored",
        DocumentsReviewed = "documents_reviewed",
        VerificationDataDeleted = "verification_data_deleted",
        Purged = "purged",
    }
}

impl Action {
    /// Whether purge keeps the event's detail (it holds no personal data:
    /// a count, a state change, a template name); the detail of every other
    /// action is replaced. A team command's answer is its row in
    /// [`commands::TABLE`].
    pub(crate) fn purge_keeps_detail(self) -> bool {
        if let Some(verb) = commands::TABLE.iter().find(|v| v.action == self) {
            return verb.purge_keeps_detail;
        }
        matches!(
            self,
            Action::Opened
                | Action::State
                | Action::DueDate
                | Action::Reminder
                | Action::OptOutAnswered
                | Action::DeclarationReceived
                | Action::VerificationSubmitted
                | Action::Withdrawn
                | Action::ConsumerWrote
                | Action::WithdrawalUnclear
                | Action::OpenedTogether
                | Action::ReplySuppressed
                | Action::ForeignMessage
                | Action::Refused
                | Action::Purged
                | Action::VerificationDataDeleted
        )
    }
}
