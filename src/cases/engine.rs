//! The pure state machine (SPEC §4). `open` starts a case; `apply` advances it.
//! Neither touches the database, the network or the system clock.

use chrono::{DateTime, Utc};

use super::{Case, Kind, Policy, State};

/// Who acted; written into the event row's `actor` column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Daemon,
    Consumer(String),
    /// A team member's address (commands by mail).
    Team(String),
    /// `cases act ... --by WHO` (defaults to `cli:$USER`).
    Cli(String),
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Actor::Daemon => "daemon".into(),
            Actor::Consumer(a) => a.clone(),
            Actor::Team(a) => a.clone(),
            Actor::Cli(a) => a.clone(),
        }
    }
}

/// A team decision, by mail (`#verify`) or CLI (`cases act ID verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Verify,
    Deny { reason: String },
    Extend { reason: String },
    /// `sent_by_team`: for know/correct/limit, the team sent the substantive
    /// response itself, so no `know_completed` mail goes out.
    Complete { sent_by_team: bool },
    Close { reason: String },
    Note { text: String },
    DeclarationAccept,
    DeclarationReject { reason: String },
    Poa,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Verify => "verify",
            Command::Deny { .. } => "deny",
            Command::Extend { .. } => "extend",
            Command::Complete { .. } => "complete",
            Command::Close { .. } => "close",
            Command::Note { .. } => "note",
            Command::DeclarationAccept => "declaration_accept",
            Command::DeclarationReject { .. } => "declaration_reject",
            Command::Poa => "poa",
        }
    }
}

/// What happened to a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A message from the requester (or consumer) attached to the case.
    ConsumerReply {
        from: String,
        /// The new (unquoted) text of the reply.
        new_text: String,
        /// The verification code appears anywhere in the message, or the
        /// message references a daemon Message-ID of the case.
        proves_mailbox: bool,
        /// The message carried declaration-like attachments.
        declarations: usize,
    },
    Team { actor: Actor, command: Command },
    /// The scheduler's periodic look at the case (reminders, deadlines).
    Tick,
}

/// Details of a new request, from classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    pub kind: Kind,
    pub requester: String,
    pub agent: Option<String>,
    pub consumer: Option<String>,
    pub consumer_name: Option<String>,
    pub received_at: DateTime<Utc>,
    /// Declaration-like attachments on the opening message.
    pub declarations: usize,
}

/// Who a consumer-facing mail goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The address the request came from (consumer or agent).
    Requester,
    /// The consumer directly (agent cases with a known consumer address).
    Consumer,
}

/// Why the team is told (SPEC §6). Rendered by the `team_notice` template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    NewCase,
    VerificationSubmitted,
    DeletionConfirmed,
    Withdrawn,
    ConsumerWrote,
    DeadlineApproaching,
    Overdue,
}

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::NewCase => "new_case",
            Notice::VerificationSubmitted => "verification_submitted",
            Notice::DeletionConfirmed => "deletion_confirmed",
            Notice::Withdrawn => "withdrawn",
            Notice::ConsumerWrote => "consumer_wrote",
            Notice::DeadlineApproaching => "deadline_approaching",
            Notice::Overdue => "overdue",
        }
    }
}

/// Something the caller must do, in the same transaction as the case update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send the named template (see `templates/`) to the audience.
    /// `reason` fills `{{reason}}` for deny/extend/reject templates.
    Send {
        template: &'static str,
        to: Audience,
        reason: Option<String>,
    },
    /// Tell the privacy team.
    Notify(Notice),
    /// Append an event row.
    Event {
        actor: Actor,
        action: String,
        detail: String,
    },
}

/// The new case and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub case: Case,
    pub effects: Vec<Effect>,
}

/// Why an input was not applied. The caller records it as an event and, for a
/// team member, reports it back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("`{command}` is not allowed while the case is {state}")]
    NotAllowed { command: &'static str, state: State },
    #[error("`{command}` does not apply to a {kind} request")]
    WrongKind { command: &'static str, kind: Kind },
    #[error("the case was already extended once")]
    AlreadyExtended,
    #[error("the response was due {due}; an extension must be sent before the first due date")]
    PastDue { due: DateTime<Utc> },
    #[error("an agent request needs an accepted declaration or a recorded power of attorney before it can be verified")]
    NeedsAuthorization,
    #[error("{0} needs a reason")]
    MissingReason(&'static str),
}

/// Starts a case. `id` and `verification_code` are made by the caller (they
/// need the database sequence and randomness).
pub fn open(
    id: String,
    verification_code: String,
    req: NewRequest,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Transition {
    let _ = (id, verification_code, req, policy, now);
    unimplemented!("engine::open")
}

/// Applies one input to a case.
pub fn apply(
    case: &Case,
    input: Input,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<Transition, Refusal> {
    let _ = (case, input, policy, now);
    unimplemented!("engine::apply")
}
