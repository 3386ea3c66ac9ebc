//! The pure state machine (SPEC §4). `open` starts a case; `apply` advances it.
//! Neither touches the database, the network or the system clock.

use chrono::{DateTime, TimeDelta, Utc};

use super::{Action, Case, Kind, Policy, Resolution, State};
use crate::ids::CaseId;

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
    Deny {
        reason: String,
    },
    Extend {
        reason: String,
    },
    /// The request was carried out. `sent_by_team`: for every kind but
    /// delete, the team sent the substantive response itself, so no
    /// completion mail goes out (only `#complete sent` or
    /// `--sent-by-team` say so; the team's other mail is correspondence).
    /// `partial`: what was not done and why (§1798.105(d), §7022(f), §7024);
    /// the completion mail carries it and the case resolves
    /// `partially_complied`.
    Complete {
        sent_by_team: bool,
        partial: Option<String>,
    },
    /// Close without carrying out the request. A reason that starts with
    /// `unverified` (see [`unverified_close`]) closes it because identity
    /// could not be verified: the requester is told (§7022, §7024) and the
    /// case counts as denied.
    Close {
        reason: String,
    },
    Note {
        text: String,
    },
    DeclarationAccept,
    DeclarationReject {
        reason: String,
    },
    Poa,
}

impl Command {
    /// The event it records; its row in [`super::commands::TABLE`].
    pub fn action(&self) -> Action {
        match self {
            Command::Verify => Action::Verify,
            Command::Deny { .. } => Action::Deny,
            Command::Extend { .. } => Action::Extend,
            Command::Complete { .. } => Action::Complete,
            Command::Close { .. } => Action::Close,
            Command::Note { .. } => Action::Note,
            Command::DeclarationAccept => Action::DeclarationAccept,
            Command::DeclarationReject { .. } => Action::DeclarationReject,
            Command::Poa => Action::Poa,
        }
    }

    /// `verify`, `declaration_accept`: the action's name.
    pub fn name(&self) -> &'static str {
        self.action().as_str()
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
    Team {
        actor: Actor,
        command: Command,
    },
    /// The scheduler's periodic look at the case (reminders, deadlines,
    /// a held acknowledgement whose time has come).
    Tick,
    /// The first reply (acknowledgement or opt-out reply) was held back by
    /// the per-sender loop guard. `until`: when the guard's window allows it
    /// (the scheduler then sends it); `None` when it can never go out (the
    /// recipient is the mailbox itself) and the team must act.
    AcknowledgementHeld {
        until: Option<DateTime<Utc>>,
        why: String,
    },
    /// A reminder (`template`) was held back by the per-sender loop guard.
    /// `until`: when the guard's window allows it; the reminder is then not
    /// recorded as sent and the scheduler tries it again from that time.
    /// `None`: it can never go out, and it is recorded as held.
    ReminderHeld {
        template: Template,
        until: Option<DateTime<Utc>>,
        why: String,
    },
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
    /// A reply seemed to cancel or withdraw without the explicit WITHDRAW;
    /// the requester was asked to answer WITHDRAW and the case stays open.
    WithdrawalUnclear,
    DeadlineApproaching,
    Overdue,
    /// Mail to the requester bounced or was refused (not an engine decision:
    /// the outbox and delivery reports raise it).
    DeliveryFailed,
}

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::NewCase => "new_case",
            Notice::VerificationSubmitted => "verification_submitted",
            Notice::DeletionConfirmed => "deletion_confirmed",
            Notice::Withdrawn => "withdrawn",
            Notice::ConsumerWrote => "consumer_wrote",
            Notice::WithdrawalUnclear => "withdrawal_unclear",
            Notice::DeadlineApproaching => "deadline_approaching",
            Notice::Overdue => "overdue",
            Notice::DeliveryFailed => "delivery_failed",
        }
    }
}

/// Something the caller must do, in the same transaction as the case update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send the named template (see `templates/`) to the audience.
    /// `reason` fills `{{reason}}` for deny/extend/reject templates.
    Send {
        template: Template,
        to: Audience,
        reason: Option<String>,
    },
    /// Tell the privacy team.
    Notify(Notice),
    /// Append an event row.
    Event {
        actor: Actor,
        action: Action,
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
    #[error(
        "an agent request needs an accepted declaration or a recorded power of attorney before it can be verified"
    )]
    NeedsAuthorization,
    #[error("{0} needs a reason")]
    MissingReason(&'static str),
    #[error("`{command}` applies only to requests made by an authorized agent")]
    NotAgent { command: &'static str },
    #[error("a note needs a text: `#note TEXT`")]
    EmptyNote,
}

/// Every mail template the daemon renders (`templates/NAME.{subject,text}.hbs`):
/// the consumer mail the engine sends and the team's notices. `templates
/// check` and start-up insist on each (`templates::REQUIRED` is this list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Template {
    Acknowledgement,
    AgentDeclarationNeeded,
    AgentConsumerConfirm,
    OptOutReply,
    DeleteConfirmationRequest,
    WithdrawalConfirmation,
    CaseClosedReply,
    Denial,
    ExtensionNotice,
    KnowCompleted,
    DeleteCompleted,
    DeclarationRejected,
    VerificationReminder,
    ConfirmationReminder,
    WithdrawalPrompt,
    CorrectCompleted,
    IdentityNotVerified,
    // Team-facing (names start with `team_`).
    TeamNotice,
    TeamReviewNotice,
    TeamCommandResult,
    TeamDigest,
    TeamBurstSummary,
}

impl Template {
    pub const ALL: [Template; 22] = [
        Template::Acknowledgement,
        Template::AgentDeclarationNeeded,
        Template::AgentConsumerConfirm,
        Template::OptOutReply,
        Template::DeleteConfirmationRequest,
        Template::WithdrawalConfirmation,
        Template::CaseClosedReply,
        Template::Denial,
        Template::ExtensionNotice,
        Template::KnowCompleted,
        Template::DeleteCompleted,
        Template::DeclarationRejected,
        Template::VerificationReminder,
        Template::ConfirmationReminder,
        Template::WithdrawalPrompt,
        Template::CorrectCompleted,
        Template::IdentityNotVerified,
        Template::TeamNotice,
        Template::TeamReviewNotice,
        Template::TeamCommandResult,
        Template::TeamDigest,
        Template::TeamBurstSummary,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Template::Acknowledgement => "acknowledgement",
            Template::AgentDeclarationNeeded => "agent_declaration_needed",
            Template::AgentConsumerConfirm => "agent_consumer_confirm",
            Template::OptOutReply => "opt_out_reply",
            Template::DeleteConfirmationRequest => "delete_confirmation_request",
            Template::WithdrawalConfirmation => "withdrawal_confirmation",
            Template::CaseClosedReply => "case_closed_reply",
            Template::Denial => "denial",
            Template::ExtensionNotice => "extension_notice",
            Template::KnowCompleted => "know_completed",
            Template::DeleteCompleted => "delete_completed",
            Template::DeclarationRejected => "declaration_rejected",
            Template::VerificationReminder => "verification_reminder",
            Template::ConfirmationReminder => "confirmation_reminder",
            Template::WithdrawalPrompt => "withdrawal_prompt",
            Template::CorrectCompleted => "correct_completed",
            Template::IdentityNotVerified => "identity_not_verified",
            Template::TeamNotice => "team_notice",
            Template::TeamReviewNotice => "team_review_notice",
            Template::TeamCommandResult => "team_command_result",
            Template::TeamDigest => "team_digest",
            Template::TeamBurstSummary => "team_burst_summary",
        }
    }

    /// Whether its mail carries the verification code (the template renders
    /// `case.verification_code`): purge deletes the stored bodies of these
    /// with the code (CCPA regs §7060(d)). A new template must say.
    pub const fn carries_verification_code(self) -> bool {
        match self {
            Template::Acknowledgement
            | Template::VerificationReminder
            | Template::AgentConsumerConfirm
            | Template::AgentDeclarationNeeded
            | Template::DeclarationRejected => true,
            Template::OptOutReply
            | Template::DeleteConfirmationRequest
            | Template::WithdrawalConfirmation
            | Template::CaseClosedReply
            | Template::Denial
            | Template::ExtensionNotice
            | Template::KnowCompleted
            | Template::DeleteCompleted
            | Template::ConfirmationReminder
            | Template::WithdrawalPrompt
            | Template::CorrectCompleted
            | Template::IdentityNotVerified
            | Template::TeamNotice
            | Template::TeamReviewNotice
            | Template::TeamCommandResult
            | Template::TeamDigest
            | Template::TeamBurstSummary => false,
        }
    }

    /// Mail to the privacy team rather than to a consumer.
    #[cfg(test)]
    pub(crate) fn is_team(self) -> bool {
        self.as_str().starts_with("team_")
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Template {
    type Err = super::ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Template::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| super::ParseEnumError(s.to_string()))
    }
}

/// The team hears of a deadline this many days ahead (once per due date).
pub(crate) const DUE_SOON_DAYS: i64 = 7;

/// Starts a case. `id` and `verification_code` are made by the caller (they
/// need the database sequence and randomness).
///
/// Know, delete and correct requests open awaiting verification and are
/// acknowledged at once. Opt-out and limit requests need no verification
/// (§7026(d), §7027(e)): they open `verified`, ready for the team to carry
/// out within 15 business days; an opt-out gets its reply at once. The team
/// hears of every new case.
pub fn open(
    id: CaseId,
    verification_code: String,
    req: NewRequest,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Transition {
    let kind = req.kind;
    let verifiable = kind.needs_verification();
    let is_agent = req.agent.is_some();
    let case = Case {
        id,
        kind,
        state: if verifiable {
            State::AwaitingVerification
        } else {
            State::Verified
        },
        requester: req.requester,
        agent: req.agent,
        consumer: req.consumer,
        consumer_name: req.consumer_name,
        received_at: req.received_at,
        acknowledged_at: Some(now),
        ack_held_until: None,
        ack_due_at: policy.ack_due(req.received_at),
        due_at: policy.due_for(kind, req.received_at),
        extended: false,
        verified_at: None,
        closed_at: None,
        verification_code,
        reminder_sent_at: None,
        reminder_held_until: None,
        authorization_ok: false,
        resolution: None,
        denial_reason: None,
        closed_reply_sent: false,
        due_soon_notified: false,
        overdue_notified: false,
    };

    let mut fx = Effects::default();
    fx.event(
        &Actor::Daemon,
        Action::Opened,
        format!(
            "{} request{}, {}",
            case.kind,
            if is_agent {
                " by an authorized agent"
            } else {
                ""
            },
            case.state
        ),
    );
    if req.declarations > 0 {
        fx.event(
            &Actor::Daemon,
            Action::DeclarationReceived,
            req.declarations.to_string(),
        );
    }
    if kind == Kind::OptOut {
        fx.send(Template::OptOutReply, Audience::Requester, None);
        fx.event(
            &Actor::Daemon,
            Action::OptOutAnswered,
            "opt_out_reply: the company's sale and sharing practice".into(),
        );
    } else {
        fx.send(Template::Acknowledgement, Audience::Requester, None);
    }
    // An agent's proof of authority matters only where identity is verified;
    // an opt-out or limit request is honoured as sent (decisions.md).
    if verifiable && is_agent && req.declarations == 0 {
        fx.send(Template::AgentDeclarationNeeded, Audience::Requester, None);
    }
    if verifiable && is_agent && case.consumer.is_some() {
        fx.send(Template::AgentConsumerConfirm, Audience::Consumer, None);
    }
    fx.notify(Notice::NewCase);
    Transition {
        case,
        effects: fx.0,
    }
}

/// Applies one input to a case. A refusal leaves the case untouched; the
/// caller records it and tells a team member why.
pub fn apply(
    case: &Case,
    input: Input,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<Transition, Refusal> {
    match input {
        Input::ConsumerReply {
            from,
            new_text,
            proves_mailbox,
            declarations,
        } => Ok(consumer_reply(
            case,
            &Actor::Consumer(from),
            &new_text,
            proves_mailbox,
            declarations,
            now,
        )),
        Input::Team { actor, command } => team(case, &actor, command, policy, now),
        Input::Tick => Ok(tick(case, policy, now)),
        Input::ReminderHeld {
            template,
            until,
            why,
        } => {
            let mut next = case.clone();
            let mut fx = Effects::default();
            let when = match until {
                Some(at) => {
                    // Not sent, so not recorded as sent: tried again then.
                    next.reminder_sent_at = None;
                    next.reminder_held_until = Some(at);
                    format!("; tried again from {}", at.to_rfc3339())
                }
                None => "; it cannot be sent and is not tried again".to_string(),
            };
            // `why` names the template (the guard's wording).
            let why = if why.starts_with(template.as_str()) {
                why
            } else {
                format!("{template}: {why}")
            };
            fx.event(&Actor::Daemon, Action::ReminderHeld, format!("{why}{when}"));
            Ok(Transition {
                case: next,
                effects: fx.0,
            })
        }
        Input::AcknowledgementHeld { until, why } => {
            let mut next = case.clone();
            let mut fx = Effects::default();
            next.acknowledged_at = None;
            next.ack_held_until = until;
            let when = match until {
                Some(at) => format!("; to be sent at {}", at.to_rfc3339()),
                None => "; it cannot be sent, the team must answer".to_string(),
            };
            fx.event(
                &Actor::Daemon,
                Action::AcknowledgementHeld,
                format!("{why}{when}"),
            );
            Ok(Transition {
                case: next,
                effects: fx.0,
            })
        }
    }
}

/// The first reply a new case of `kind` gets: the opt-out reply, or the
/// acknowledgement (§7021(a)).
pub(crate) fn first_reply(kind: Kind) -> Template {
    if kind == Kind::OptOut {
        Template::OptOutReply
    } else {
        Template::Acknowledgement
    }
}

/// Effects being collected for one transition.
#[derive(Default)]
struct Effects(Vec<Effect>);

impl Effects {
    fn event(&mut self, actor: &Actor, action: Action, detail: String) {
        self.0.push(Effect::Event {
            actor: actor.clone(),
            action,
            detail,
        });
    }

    fn send(&mut self, template: Template, to: Audience, reason: Option<String>) {
        self.0.push(Effect::Send {
            template,
            to,
            reason,
        });
    }

    fn notify(&mut self, notice: Notice) {
        self.0.push(Effect::Notify(notice));
    }

    /// Moves the case to `to` and records the change as a `state` event
    /// ("from -> to"). Every state change goes through here.
    fn change_state(&mut self, case: &mut Case, actor: &Actor, to: State, now: DateTime<Utc>) {
        let from = case.state;
        case.state = to;
        if to.is_final() {
            case.closed_at = Some(now);
        }
        self.event(actor, Action::State, format!("{from} -> {to}"));
    }
}

/// What a consumer's reply says about a pending decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyIntent {
    Confirm,
    /// The explicit answer we ask for: `WITHDRAW` in capitals, or a reply
    /// whose new text is just the word.
    Withdraw,
    /// Words that seem to cancel or withdraw ("please cancel my account and
    /// delete everything"): never enough to end a request on their own.
    SeemsToWithdraw,
    /// Both or neither: a person must read it.
    Unclear,
}

/// Reads the new (unquoted) text of a reply: "CONFIRM" as a whole word, not
/// negated ("do not confirm") within its clause, means confirm; an explicit
/// WITHDRAW means withdraw; other unnegated "cancel"/"withdraw" words only
/// seem to withdraw; confirming and withdrawing at once is unclear.
pub(crate) fn reply_intent(new_text: &str) -> ReplyIntent {
    let clauses: Vec<Vec<String>> = new_text
        .split(['.', ',', ';', ':', '!', '?', '\n', '(', ')'])
        .map(|clause| {
            clause
                .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’'))
                .map(|w| w.replace('’', "'").trim_matches('\'').to_string())
                .filter(|w| !w.is_empty())
                .collect()
        })
        .collect();
    let said = |hit: &dyn Fn(&str) -> bool| {
        clauses.iter().any(|words| {
            words.iter().enumerate().any(|(i, w)| {
                hit(w)
                    && !words[i.saturating_sub(3)..i]
                        .iter()
                        .any(|p| is_negation(&p.to_lowercase()))
            })
        })
    };
    let lower_in = |targets: &'static [&'static str]| {
        move |w: &str| targets.contains(&w.to_lowercase().as_str())
    };
    let confirm = said(&lower_in(&["confirm", "confirmed", "confirming"]));
    let cancel = said(&lower_in(&[
        "cancel",
        "cancelled",
        "canceled",
        "withdraw",
        "withdrawn",
        "withdrawing",
        "withdrew",
    ]));
    // The first line of the new text is just the word (a signature may follow).
    let only_word = new_text
        .lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| {
            l.trim_matches(|c: char| !c.is_alphanumeric())
                .eq_ignore_ascii_case("withdraw")
        });
    let explicit = only_word || said(&|w: &str| w == "WITHDRAW");
    match (confirm, explicit, cancel) {
        (true, _, false) => ReplyIntent::Confirm,
        (false, true, _) => ReplyIntent::Withdraw,
        (false, false, true) => ReplyIntent::SeemsToWithdraw,
        _ => ReplyIntent::Unclear,
    }
}

fn is_negation(word: &str) -> bool {
    const NEGATIONS: [&str; 16] = [
        "not", "no", "never", "cannot", "dont", "cant", "wont", "didnt", "doesnt", "shouldnt",
        "wouldnt", "nor", "neither", "without", "nicht", "pas",
    ];
    NEGATIONS.contains(&word) || word.ends_with("n't")
}

fn consumer_reply(
    case: &Case,
    actor: &Actor,
    new_text: &str,
    proves_mailbox: bool,
    declarations: usize,
    now: DateTime<Utc>,
) -> Transition {
    let mut next = case.clone();
    let mut fx = Effects::default();
    if declarations > 0 {
        fx.event(actor, Action::DeclarationReceived, declarations.to_string());
    }
    if case.state.is_final() {
        fx.event(
            actor,
            Action::ConsumerWrote,
            format!("the case is {}", case.state),
        );
        fx.notify(Notice::ConsumerWrote);
        if !case.closed_reply_sent {
            fx.send(Template::CaseClosedReply, Audience::Requester, None);
            next.closed_reply_sent = true;
        }
        return Transition {
            case: next,
            effects: fx.0,
        };
    }

    let intent = reply_intent(new_text);
    // A request may be withdrawn until the team starts carrying out a
    // confirmed deletion; after that the team reads the message.
    let withdrawable = matches!(
        case.state,
        State::AwaitingVerification
            | State::VerificationSubmitted
            | State::Verified
            | State::AwaitingConfirmation
    );
    match (case.state, intent) {
        // Withdrawing changes the case for good: the explicit answer, in a
        // reply that answers our mail (our Message-ID or the code).
        (_, ReplyIntent::Withdraw) if withdrawable && proves_mailbox => {
            fx.event(
                actor,
                Action::Withdrawn,
                "the consumer withdrew the request".into(),
            );
            fx.change_state(&mut next, actor, State::Withdrawn, now);
            next.resolution = Some(Resolution::Withdrawn);
            fx.send(Template::WithdrawalConfirmation, Audience::Requester, None);
            fx.notify(Notice::Withdrawn);
        }
        (state, ReplyIntent::SeemsToWithdraw) if withdrawable && proves_mailbox => {
            // The request stays open: "cancel my account and delete
            // everything" must not lose the deletion. A reply that also
            // proves the mailbox still counts as the verification answer.
            if state == State::AwaitingVerification {
                fx.event(
                    actor,
                    Action::VerificationSubmitted,
                    "the reply proves the mailbox".into(),
                );
                fx.change_state(&mut next, actor, State::VerificationSubmitted, now);
                fx.notify(Notice::VerificationSubmitted);
            }
            fx.event(
                actor,
                Action::WithdrawalUnclear,
                "the reply seems to cancel or withdraw; asked to reply WITHDRAW".into(),
            );
            fx.send(Template::WithdrawalPrompt, Audience::Requester, None);
            fx.notify(Notice::WithdrawalUnclear);
        }
        (State::AwaitingVerification, _) if proves_mailbox => {
            fx.event(
                actor,
                Action::VerificationSubmitted,
                "the reply proves the mailbox".into(),
            );
            fx.change_state(&mut next, actor, State::VerificationSubmitted, now);
            fx.notify(Notice::VerificationSubmitted);
        }
        // Confirming changes the case for good: the reply must
        // answer our mail (our Message-ID or the code), not just carry the
        // guessable tag from a forgeable From.
        (State::AwaitingConfirmation, ReplyIntent::Confirm) if proves_mailbox => {
            fx.event(
                actor,
                Action::Confirmed,
                "the consumer confirmed the deletion".into(),
            );
            fx.change_state(&mut next, actor, State::Confirmed, now);
            fx.notify(Notice::DeletionConfirmed);
        }
        _ => {
            fx.event(actor, Action::ConsumerWrote, String::new());
            fx.notify(Notice::ConsumerWrote);
        }
    }
    Transition {
        case: next,
        effects: fx.0,
    }
}

/// For `#close unverified [DETAIL]` (or a reason starting "unverifiable"):
/// the detail after the keyword, trimmed; `None` for any other reason.
pub(crate) fn unverified_close(reason: &str) -> Option<&str> {
    let reason = reason.trim();
    let end = reason
        .find(|c: char| !c.is_alphabetic())
        .unwrap_or(reason.len());
    let word = &reason[..end];
    ["unverified", "unverifiable"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
        .then(|| {
            reason[end..]
                .trim_start_matches([':', '-', ' ', '\t', '\n'])
                .trim()
        })
}

fn required(reason: &str, command: &'static str) -> Result<String, Refusal> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Refusal::MissingReason(command));
    }
    Ok(reason.to_string())
}

fn team(
    case: &Case,
    actor: &Actor,
    command: Command,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<Transition, Refusal> {
    let name = command.name();
    let action = command.action();
    let state = case.state;
    let not_allowed = Refusal::NotAllowed {
        command: name,
        state,
    };
    let wrong_kind = Refusal::WrongKind {
        command: name,
        kind: case.kind,
    };
    // Everything but a note needs an open case.
    if state.is_final() && !matches!(command, Command::Note { .. }) {
        return Err(not_allowed);
    }
    let mut next = case.clone();
    let mut fx = Effects::default();
    match command {
        Command::Verify => {
            if !case.kind.needs_verification() {
                return Err(wrong_kind);
            }
            if !matches!(
                state,
                State::AwaitingVerification | State::VerificationSubmitted
            ) {
                return Err(not_allowed);
            }
            if case.is_agent() && !case.authorization_ok {
                return Err(Refusal::NeedsAuthorization);
            }
            fx.event(actor, action, String::new());
            next.verified_at = Some(now);
            if case.kind == Kind::Delete {
                fx.change_state(&mut next, actor, State::AwaitingConfirmation, now);
                fx.send(
                    Template::DeleteConfirmationRequest,
                    Audience::Requester,
                    None,
                );
            } else {
                fx.change_state(&mut next, actor, State::Verified, now);
            }
        }
        Command::Deny { reason } => {
            let reason = required(&reason, name)?;
            fx.event(actor, action, reason.clone());
            fx.change_state(&mut next, actor, State::Denied, now);
            next.resolution = Some(Resolution::Denied);
            next.denial_reason = Some(reason.clone());
            fx.send(Template::Denial, Audience::Requester, Some(reason));
        }
        Command::Extend { reason } => {
            // Opt-out and limit have a fixed 15-business-day clock.
            if !case.kind.has_45_day_clock() {
                return Err(wrong_kind);
            }
            let reason = required(&reason, name)?;
            if case.extended {
                return Err(Refusal::AlreadyExtended);
            }
            if now > case.due_at {
                return Err(Refusal::PastDue { due: case.due_at });
            }
            fx.event(actor, action, reason.clone());
            next.due_at = policy.extend(case.due_at);
            next.extended = true;
            // The new due date gets its own "approaching" notice.
            next.due_soon_notified = false;
            fx.event(
                actor,
                Action::DueDate,
                format!(
                    "{} -> {}",
                    case.due_at.to_rfc3339(),
                    next.due_at.to_rfc3339()
                ),
            );
            fx.send(Template::ExtensionNotice, Audience::Requester, Some(reason));
        }
        Command::Complete {
            sent_by_team,
            partial,
        } => {
            let partial = match partial {
                Some(r) => Some(required(&r, "complete partial")?),
                None => None,
            };
            let template = match (case.kind, state) {
                // The consumer always hears what was deleted and what kept.
                (Kind::Delete, State::Confirmed) => Some(Template::DeleteCompleted),
                (Kind::Correct, State::Verified) => {
                    (!sent_by_team).then_some(Template::CorrectCompleted)
                }
                (Kind::Know | Kind::Limit | Kind::OptOut, State::Verified) => {
                    (!sent_by_team).then_some(Template::KnowCompleted)
                }
                _ => return Err(not_allowed),
            };
            let mut detail = match template {
                Some(t) => format!("{t} sent"),
                None => "the team sent the response itself".to_string(),
            };
            if let Some(reason) = &partial {
                detail = format!("in part ({detail}); not done: {reason}");
            }
            fx.event(actor, action, detail);
            fx.change_state(&mut next, actor, State::Completed, now);
            next.resolution = Some(if partial.is_some() {
                Resolution::PartiallyComplied
            } else {
                Resolution::Complied
            });
            next.denial_reason = partial.clone();
            if let Some(t) = template {
                fx.send(t, Audience::Requester, partial);
            }
        }
        Command::Close { reason } => {
            let reason = required(&reason, name)?;
            if let Some(detail) = unverified_close(&reason) {
                if !case.kind.needs_verification() {
                    return Err(wrong_kind);
                }
                fx.event(actor, action, reason.clone());
                fx.change_state(&mut next, actor, State::Closed, now);
                // §7102 counts a request refused for want of verification as denied.
                next.resolution = Some(Resolution::Denied);
                next.denial_reason = Some(if detail.is_empty() {
                    "identity could not be verified".to_string()
                } else {
                    format!("identity could not be verified: {detail}")
                });
                fx.send(
                    Template::IdentityNotVerified,
                    Audience::Requester,
                    (!detail.is_empty()).then(|| detail.to_string()),
                );
            } else {
                fx.event(actor, action, reason);
                fx.change_state(&mut next, actor, State::Closed, now);
                next.resolution = Some(Resolution::Closed);
            }
        }
        Command::Note { text } => {
            let text = text.trim();
            if text.is_empty() {
                return Err(Refusal::EmptyNote);
            }
            fx.event(actor, action, text.to_string());
        }
        Command::DeclarationAccept | Command::Poa => {
            if !case.is_agent() {
                return Err(Refusal::NotAgent { command: name });
            }
            fx.event(actor, action, String::new());
            next.authorization_ok = true;
        }
        Command::DeclarationReject { reason } => {
            if !case.is_agent() {
                return Err(Refusal::NotAgent { command: name });
            }
            let reason = required(&reason, name)?;
            fx.event(actor, action, reason.clone());
            // A rejected declaration withdraws an earlier acceptance: the
            // case must not be verified on the strength of it.
            next.authorization_ok = false;
            fx.send(
                Template::DeclarationRejected,
                Audience::Requester,
                Some(reason),
            );
        }
    }
    Ok(Transition {
        case: next,
        effects: fx.0,
    })
}

fn tick(case: &Case, policy: &Policy, now: DateTime<Utc>) -> Transition {
    let mut next = case.clone();
    let mut fx = Effects::default();
    if case.state.is_final() {
        return Transition {
            case: next,
            effects: fx.0,
        };
    }
    let actor = Actor::Daemon;
    // A held acknowledgement goes out once the loop guard's window allows
    // (casework holds it only while that is before the deadline, §7021(a)).
    if case.acknowledged_at.is_none() && case.ack_held_until.is_some_and(|at| now >= at) {
        let first = first_reply(case.kind);
        fx.send(first, Audience::Requester, None);
        fx.event(
            &actor,
            Action::AcknowledgementSent,
            format!("{first}, held until now"),
        );
        next.acknowledged_at = Some(now);
        next.ack_held_until = None;
    }
    let wait = TimeDelta::days(i64::from(policy.reminder_after_days));
    // A reminder the loop guard held back waits for the guard's window.
    let reminder_held = case.reminder_held_until.is_some_and(|at| now < at);
    if policy.reminder_after_days > 0 {
        match case.state {
            State::AwaitingVerification
                // From when the verification request went out: mail taken in
                // from a backlog is not reminded the minute it is acknowledged,
                // and a held acknowledgement is no request to be reminded of.
                if case.reminder_sent_at.is_none()
                    && !reminder_held
                    && case.acknowledged_at.is_some_and(|at| reached(now, at, wait)) =>
            {
                fx.send(Template::VerificationReminder, Audience::Requester, None);
                fx.event(&actor, Action::Reminder, Template::VerificationReminder.to_string());
                next.reminder_sent_at = Some(now);
                next.reminder_held_until = None;
            }
            State::AwaitingConfirmation => {
                // The confirmation request went out at verification; a
                // verification reminder sent before that does not count.
                let asked = case.verified_at.unwrap_or(case.received_at);
                let reminded = case.reminder_sent_at.is_some_and(|r| r >= asked);
                if !reminded && !reminder_held && reached(now, asked, wait) {
                    fx.send(Template::ConfirmationReminder, Audience::Requester, None);
                    fx.event(&actor, Action::Reminder, Template::ConfirmationReminder.to_string());
                    next.reminder_sent_at = Some(now);
                    next.reminder_held_until = None;
                }
            }
            _ => {}
        }
    }
    if now > case.due_at {
        if !case.overdue_notified {
            fx.notify(Notice::Overdue);
            fx.event(
                &actor,
                Action::Overdue,
                format!("due {}", case.due_at.to_rfc3339()),
            );
            next.overdue_notified = true;
            next.due_soon_notified = true;
        }
    } else if case.due_at - now <= TimeDelta::days(DUE_SOON_DAYS) && !case.due_soon_notified {
        fx.notify(Notice::DeadlineApproaching);
        fx.event(
            &actor,
            Action::DeadlineApproaching,
            format!("due {}", case.due_at.to_rfc3339()),
        );
        next.due_soon_notified = true;
    }
    Transition {
        case: next,
        effects: fx.0,
    }
}

/// `now >= since + wait`, false when the sum leaves chrono's range.
fn reached(now: DateTime<Utc>, since: DateTime<Utc>, wait: TimeDelta) -> bool {
    since.checked_add_signed(wait).is_some_and(|at| now >= at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Monday 2026-11-02 09:00 PST.
    fn received() -> DateTime<Utc> {
        t("2026-11-02T17:00:00Z")
    }

    fn now() -> DateTime<Utc> {
        t("2026-11-05T18:00:00Z")
    }

    fn request(kind: Kind) -> NewRequest {
        NewRequest {
            kind,
            requester: "jane@example.net".into(),
            agent: None,
            consumer: Some("jane@example.net".into()),
            consumer_name: None,
            received_at: received(),
            declarations: 0,
        }
    }

    fn agent_request(kind: Kind, declarations: usize, consumer: Option<&str>) -> NewRequest {
        NewRequest {
            kind,
            requester: "ops@agent.example".into(),
            agent: Some("ops@agent.example".into()),
            consumer: consumer.map(str::to_string),
            consumer_name: Some("Jane Doe".into()),
            received_at: received(),
            declarations,
        }
    }

    fn opened(req: NewRequest) -> Case {
        open(
            "CCPA-2026-00042".into(),
            "K7Q2-9XPM".into(),
            req,
            &Policy::default(),
            received(),
        )
        .case
    }

    /// A case of `kind` put straight into `state`.
    fn case_in(kind: Kind, state: State, agent: bool) -> Case {
        let req = if agent {
            agent_request(kind, 1, None)
        } else {
            request(kind)
        };
        let mut case = opened(req);
        case.state = state;
        if state.is_final() {
            case.closed_at = Some(received());
            case.resolution = Some(Resolution::Closed);
        }
        case
    }

    fn team_member() -> Actor {
        Actor::Team("alice@example.com".into())
    }

    fn run(case: &Case, command: Command) -> Result<Transition, Refusal> {
        apply(
            case,
            Input::Team {
                actor: team_member(),
                command,
            },
            &Policy::default(),
            now(),
        )
    }

    fn reply(case: &Case, text: &str, proves_mailbox: bool) -> Transition {
        apply(
            case,
            Input::ConsumerReply {
                from: case.requester.clone(),
                new_text: text.into(),
                proves_mailbox,
                declarations: 0,
            },
            &Policy::default(),
            now(),
        )
        .unwrap()
    }

    fn tick_at(case: &Case, at: DateTime<Utc>) -> Transition {
        apply(case, Input::Tick, &Policy::default(), at).unwrap()
    }

    fn sends(tr: &Transition) -> Vec<(Template, Audience)> {
        tr.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { template, to, .. } => Some((*template, *to)),
                _ => None,
            })
            .collect()
    }

    fn notices(tr: &Transition) -> Vec<Notice> {
        tr.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Notify(n) => Some(*n),
                _ => None,
            })
            .collect()
    }

    fn events(tr: &Transition) -> Vec<(String, String)> {
        tr.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Event { action, detail, .. } => Some((action.to_string(), detail.clone())),
                _ => None,
            })
            .collect()
    }

    fn all_commands() -> Vec<Command> {
        vec![
            Command::Verify,
            Command::Deny {
                reason: "not a California resident".into(),
            },
            Command::Extend {
                reason: "the request is complex".into(),
            },
            Command::Complete {
                sent_by_team: false,
                partial: None,
            },
            Command::Complete {
                sent_by_team: true,
                partial: None,
            },
            Command::Complete {
                sent_by_team: false,
                partial: Some("invoices kept for 7 years under tax law".into()),
            },
            Command::Close {
                reason: "duplicate".into(),
            },
            Command::Close {
                reason: "unverified: no answer to the verification request".into(),
            },
            Command::Note {
                text: "called the consumer".into(),
            },
            Command::DeclarationAccept,
            Command::DeclarationReject {
                reason: "unsigned".into(),
            },
            Command::Poa,
        ]
    }

    use State::{
        AwaitingConfirmation as AC, AwaitingVerification as AV, Closed, Completed, Confirmed,
        Denied, VerificationSubmitted as VS, Verified as V, Withdrawn,
    };

    const OPEN: [State; 5] = [AV, VS, V, AC, Confirmed];

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Agent {
        No,
        Unauthorized,
        Authorized,
    }

    /// The table key of a command: `close_unverified` is its own row.
    fn key(command: &Command) -> &'static str {
        match command {
            Command::Close { reason } if unverified_close(reason).is_some() => "close_unverified",
            other => other.name(),
        }
    }

    /// The allowed transitions, written out: (command, kinds, from, to);
    /// `to = None` leaves the state as it was. Every pair not listed is refused.
    fn allowed(command: &str, kind: Kind, agent: Agent, from: State) -> Option<Option<State>> {
        let verified_kind = kind.needs_verification();
        let rows: Vec<(&str, bool, &[State], Option<State>)> = vec![
            (
                "verify",
                matches!(kind, Kind::Know | Kind::Correct) && agent != Agent::Unauthorized,
                &[AV, VS],
                Some(V),
            ),
            (
                "verify",
                kind == Kind::Delete && agent != Agent::Unauthorized,
                &[AV, VS],
                Some(AC),
            ),
            ("deny", true, &OPEN, Some(Denied)),
            ("extend", kind.has_45_day_clock(), &OPEN, None),
            ("complete", kind != Kind::Delete, &[V], Some(Completed)),
            (
                "complete",
                kind == Kind::Delete,
                &[Confirmed],
                Some(Completed),
            ),
            ("close", true, &OPEN, Some(Closed)),
            ("close_unverified", verified_kind, &OPEN, Some(Closed)),
            ("note", true, &State::ALL, None),
            ("declaration_accept", agent != Agent::No, &OPEN, None),
            ("poa", agent != Agent::No, &OPEN, None),
            ("declaration_reject", agent != Agent::No, &OPEN, None),
        ];
        rows.into_iter()
            .find(|(c, applies, states, _)| *c == command && *applies && states.contains(&from))
            .map(|(_, _, _, to)| to)
    }

    fn expected_refusal(
        key: &str,
        command: &'static str,
        kind: Kind,
        agent: Agent,
        from: State,
    ) -> Refusal {
        let declaration = matches!(command, "declaration_accept" | "poa" | "declaration_reject");
        let wrong_kind = match key {
            "verify" | "close_unverified" => !kind.needs_verification(),
            "extend" => !kind.has_45_day_clock(),
            _ => false,
        };
        if from.is_final() {
            Refusal::NotAllowed {
                command,
                state: from,
            }
        } else if declaration && agent == Agent::No {
            Refusal::NotAgent { command }
        } else if wrong_kind {
            Refusal::WrongKind { command, kind }
        } else if command == "verify" && agent == Agent::Unauthorized && matches!(from, AV | VS) {
            Refusal::NeedsAuthorization
        } else {
            Refusal::NotAllowed {
                command,
                state: from,
            }
        }
    }

    #[test]
    fn transition_table_every_state_every_command() {
        let mut applied = 0;
        let mut refused = 0;
        for kind in Kind::ALL {
            for agent in [Agent::No, Agent::Unauthorized, Agent::Authorized] {
                for from in State::ALL {
                    for command in all_commands() {
                        let mut case = case_in(kind, from, agent != Agent::No);
                        case.authorization_ok = agent == Agent::Authorized;
                        let name = command.name();
                        let key = key(&command);
                        let label = format!("{kind} {agent:?} {from} {key} {command:?}");
                        match (allowed(key, kind, agent, from), run(&case, command.clone())) {
                            (Some(to), Ok(tr)) => {
                                applied += 1;
                                let to = to.unwrap_or(from);
                                assert_eq!(tr.case.state, to, "{label}");
                                let evs = events(&tr);
                                // One event for the command, by the team member.
                                assert_eq!(
                                    evs.iter().filter(|(a, _)| a == name).count(),
                                    1,
                                    "{label}"
                                );
                                assert!(
                                    tr.effects.iter().all(|e| match e {
                                        Effect::Event { actor, .. } => *actor == team_member(),
                                        _ => true,
                                    }),
                                    "{label}"
                                );
                                // One state event exactly when the state changed.
                                let state_events: Vec<_> =
                                    evs.iter().filter(|(a, _)| a == "state").collect();
                                if to == from {
                                    assert!(state_events.is_empty(), "{label}");
                                } else {
                                    assert_eq!(state_events.len(), 1, "{label}");
                                    assert_eq!(
                                        state_events[0].1,
                                        format!("{from} -> {to}"),
                                        "{label}"
                                    );
                                }
                                assert_eq!(tr.case.closed_at.is_some(), to.is_final(), "{label}");
                                assert!(tr.case.resolution.is_some() == to.is_final(), "{label}");
                                // Nothing but these fields ever changes the due date.
                                if name != "extend" {
                                    assert_eq!(tr.case.due_at, case.due_at, "{label}");
                                }
                                // What the consumer hears, and how §7102 counts it.
                                let sent: Vec<Template> =
                                    sends(&tr).into_iter().map(|(t, _)| t).collect();
                                let resolution = tr.case.resolution.map(Resolution::as_str);
                                match (key, &command) {
                                    (
                                        "complete",
                                        Command::Complete {
                                            sent_by_team,
                                            partial,
                                        },
                                    ) => {
                                        let want = match kind {
                                            Kind::Delete => Some(Template::DeleteCompleted),
                                            _ if *sent_by_team => None,
                                            Kind::Correct => Some(Template::CorrectCompleted),
                                            _ => Some(Template::KnowCompleted),
                                        };
                                        assert_eq!(
                                            sent,
                                            want.into_iter().collect::<Vec<_>>(),
                                            "{label}"
                                        );
                                        let (res, basis) = match partial {
                                            Some(p) => ("partially_complied", Some(p.as_str())),
                                            None => ("complied", None),
                                        };
                                        assert_eq!(resolution, Some(res), "{label}");
                                        assert_eq!(
                                            tr.case.denial_reason.as_deref(),
                                            basis,
                                            "{label}"
                                        );
                                    }
                                    ("close_unverified", _) => {
                                        assert_eq!(
                                            sent,
                                            [Template::IdentityNotVerified],
                                            "{label}"
                                        );
                                        assert_eq!(resolution, Some("denied"), "{label}");
                                    }
                                    ("close", _) => {
                                        assert!(sent.is_empty(), "{label}");
                                        assert_eq!(resolution, Some("closed"), "{label}");
                                    }
                                    ("deny", _) => {
                                        assert_eq!(sent, [Template::Denial], "{label}");
                                        assert_eq!(resolution, Some("denied"), "{label}");
                                    }
                                    _ => {}
                                }
                            }
                            (None, Err(refusal)) => {
                                refused += 1;
                                assert_eq!(
                                    refusal,
                                    expected_refusal(key, name, kind, agent, from),
                                    "{label}"
                                );
                            }
                            (want, got) => panic!("{label}: wanted {want:?}, got {got:?}"),
                        }
                    }
                }
            }
        }
        assert!(
            applied > 100 && refused > 100,
            "{applied} applied, {refused} refused"
        );
    }

    #[test]
    fn opt_out_and_limit_need_no_verification_and_have_no_extension() {
        for kind in [Kind::OptOut, Kind::Limit] {
            let case = opened(request(kind));
            assert_eq!(case.state, V, "{kind}");
            assert_eq!(case.verified_at, None, "nobody verified it");
            for command in [
                Command::Verify,
                Command::Extend {
                    reason: "complex".into(),
                },
                Command::Close {
                    reason: "unverified".into(),
                },
            ] {
                let name = command.name();
                assert_eq!(
                    run(&case, command),
                    Err(Refusal::WrongKind {
                        command: name,
                        kind
                    }),
                    "{kind}"
                );
            }
            let done = run(
                &case,
                Command::Complete {
                    sent_by_team: false,
                    partial: None,
                },
            )
            .unwrap();
            assert_eq!(done.case.state, Completed);
            assert_eq!(
                sends(&done),
                [(Template::KnowCompleted, Audience::Requester)]
            );
        }
    }

    #[test]
    fn open_know_acknowledges_at_once() {
        let policy = Policy::default();
        let tr = open(
            "CCPA-2026-00042".into(),
            "CODE".into(),
            request(Kind::Know),
            &policy,
            now(),
        );
        let c = &tr.case;
        assert_eq!(c.state, AV);
        assert_eq!(c.acknowledged_at, Some(now()));
        assert_eq!(c.ack_due_at, policy.ack_due(received()));
        assert_eq!(c.due_at, policy.respond_due(received()));
        // Receipt (Monday 2026-11-02) is day 1: due on day 45, 2026-12-16.
        assert_eq!(c.due_at, t("2026-12-17T07:59:59Z"));
        assert_eq!(c.verification_code, "CODE");
        assert!(!c.extended && !c.authorization_ok && !c.closed_reply_sent);
        assert_eq!(c.closed_at, None);
        assert_eq!(
            sends(&tr),
            [(Template::Acknowledgement, Audience::Requester)]
        );
        assert_eq!(notices(&tr), [Notice::NewCase]);
        assert_eq!(events(&tr)[0].0, "opened");
        assert!(
            tr.effects
                .iter()
                .all(|e| !matches!(e, Effect::Event { actor, .. } if *actor != Actor::Daemon))
        );
    }

    #[test]
    fn open_agent_cases() {
        let policy = Policy::default();
        let open_it = |req| open("X".into(), "C".into(), req, &policy, now());

        let tr = open_it(agent_request(Kind::Delete, 0, Some("jane@example.net")));
        assert_eq!(
            sends(&tr),
            [
                (Template::Acknowledgement, Audience::Requester),
                (Template::AgentDeclarationNeeded, Audience::Requester),
                (Template::AgentConsumerConfirm, Audience::Consumer),
            ]
        );
        assert_eq!(notices(&tr), [Notice::NewCase]);

        let tr = open_it(agent_request(Kind::Know, 2, None));
        assert_eq!(
            sends(&tr),
            [(Template::Acknowledgement, Audience::Requester)]
        );
        assert!(events(&tr).contains(&("declaration_received".into(), "2".into())));
        assert!(!tr.case.authorization_ok);
    }

    #[test]
    fn open_opt_out_replies_at_once_and_tells_the_team() {
        let tr = open(
            "X".into(),
            "C".into(),
            request(Kind::OptOut),
            &Policy::default(),
            now(),
        );
        assert_eq!(tr.case.state, V);
        assert_eq!(tr.case.closed_at, None);
        assert_eq!(tr.case.resolution, None);
        assert_eq!(tr.case.acknowledged_at, Some(now()));
        // 15 business days, the Monday of receipt being day 1: Friday 2026-11-20.
        assert_eq!(tr.case.due_at, t("2026-11-21T07:59:59Z"));
        assert_eq!(sends(&tr), [(Template::OptOutReply, Audience::Requester)]);
        assert_eq!(notices(&tr), [Notice::NewCase]);
        let actions: Vec<String> = events(&tr).into_iter().map(|(a, _)| a).collect();
        assert_eq!(actions, ["opened", "opt_out_answered"]);

        // Limit: acknowledged, no verification, no agent paperwork.
        let tr = open(
            "X".into(),
            "C".into(),
            agent_request(Kind::Limit, 0, Some("jane@example.net")),
            &Policy::default(),
            now(),
        );
        assert_eq!(tr.case.state, V);
        assert_eq!(
            sends(&tr),
            [(Template::Acknowledgement, Audience::Requester)]
        );
        assert_eq!(notices(&tr), [Notice::NewCase]);

        // Correct: verified like a know request.
        let tr = open(
            "X".into(),
            "C".into(),
            request(Kind::Correct),
            &Policy::default(),
            now(),
        );
        assert_eq!(tr.case.state, AV);
        assert_eq!(tr.case.due_at, t("2026-12-17T07:59:59Z"));
    }

    #[test]
    fn reply_intent_wording() {
        use ReplyIntent::*;
        let cases = [
            ("CONFIRM", Confirm),
            ("confirm", Confirm),
            ("Confirm.", Confirm),
            ("Yes, I confirm!", Confirm),
            ("Confirmed", Confirm),
            ("CONFIRM\n\nJane", Confirm),
            ("I do not confirm", Unclear),
            ("don't confirm", Unclear),
            ("Don’t confirm yet", Unclear),
            ("dont confirm", Unclear),
            ("I can't confirm this", Unclear),
            ("not confirm", Unclear),
            ("I do not wish to confirm", Unclear),
            ("confirmation", Unclear),
            ("unconfirmed", Unclear),
            ("reconfirm", Unclear),
            ("cancel", SeemsToWithdraw),
            ("Please CANCEL my request", SeemsToWithdraw),
            ("I withdraw my request.", SeemsToWithdraw),
            ("I want to withdraw", SeemsToWithdraw),
            ("Cancelled.", SeemsToWithdraw),
            (
                "Please cancel my account and delete everything",
                SeemsToWithdraw,
            ),
            ("WITHDRAW", Withdraw),
            ("withdraw", Withdraw),
            (" Withdraw.\n\nJane", Withdraw),
            ("withdraw.", Withdraw),
            ("I WITHDRAW my request", Withdraw),
            ("Do not WITHDRAW", Unclear),
            ("WITHDRAW, I confirm", Unclear),
            ("please don't cancel", Unclear),
            ("cancellation", Unclear),
            ("confirm, no wait, cancel", Unclear),
            ("Don't cancel, I confirm", Confirm),
            ("Not sure yet", Unclear),
            ("", Unclear),
            ("No. Confirm.", Confirm), // negation does not cross a clause
            ("No, I do not confirm.", Unclear),
            ("I'm not withdrawing, I confirm", Confirm),
        ];
        for (text, want) in cases {
            assert_eq!(reply_intent(text), want, "{text:?}");
        }
    }

    #[test]
    fn consumer_replies_in_open_states() {
        // (state, text, proves_mailbox, new state, notices, sends)
        type Row = (State, &'static str, bool, State, Vec<Notice>, Vec<Template>);
        let rows: Vec<Row> = vec![
            (
                AV,
                "here is my code",
                true,
                VS,
                vec![Notice::VerificationSubmitted],
                vec![],
            ),
            (
                AV,
                "what is this?",
                false,
                AV,
                vec![Notice::ConsumerWrote],
                vec![],
            ),
            (
                AV,
                "I confirm",
                true,
                VS,
                vec![Notice::VerificationSubmitted],
                vec![],
            ),
            (
                AV,
                "WITHDRAW",
                true,
                Withdrawn,
                vec![Notice::Withdrawn],
                vec![Template::WithdrawalConfirmation],
            ),
            // Words that only seem to withdraw: asked to answer WITHDRAW,
            // and the code in the reply still submits the verification.
            (
                AV,
                "Please cancel my account and delete everything",
                true,
                VS,
                vec![Notice::VerificationSubmitted, Notice::WithdrawalUnclear],
                vec![Template::WithdrawalPrompt],
            ),
            // Withdrawing or confirming needs proof the reply answers our mail.
            (VS, "cancel", false, VS, vec![Notice::ConsumerWrote], vec![]),
            (
                VS,
                "WITHDRAW",
                false,
                VS,
                vec![Notice::ConsumerWrote],
                vec![],
            ),
            (
                VS,
                "cancel",
                true,
                VS,
                vec![Notice::WithdrawalUnclear],
                vec![Template::WithdrawalPrompt],
            ),
            (
                VS,
                "withdraw",
                true,
                Withdrawn,
                vec![Notice::Withdrawn],
                vec![Template::WithdrawalConfirmation],
            ),
            (
                VS,
                "more documents",
                true,
                VS,
                vec![Notice::ConsumerWrote],
                vec![],
            ),
            (
                V,
                "cancel",
                true,
                V,
                vec![Notice::WithdrawalUnclear],
                vec![Template::WithdrawalPrompt],
            ),
            (
                V,
                "I WITHDRAW my request",
                true,
                Withdrawn,
                vec![Notice::Withdrawn],
                vec![Template::WithdrawalConfirmation],
            ),
            (V, "CONFIRM", true, V, vec![Notice::ConsumerWrote], vec![]),
            (
                AC,
                "CONFIRM",
                false,
                AC,
                vec![Notice::ConsumerWrote],
                vec![],
            ),
            (
                AC,
                "CONFIRM",
                true,
                Confirmed,
                vec![Notice::DeletionConfirmed],
                vec![],
            ),
            (
                AC,
                "Confirm",
                true,
                Confirmed,
                vec![Notice::DeletionConfirmed],
                vec![],
            ),
            (
                AC,
                "do not confirm",
                true,
                AC,
                vec![Notice::ConsumerWrote],
                vec![],
            ),
            (
                AC,
                "confirm or cancel?",
                true,
                AC,
                vec![Notice::ConsumerWrote],
                vec![],
            ),
            (AC, "thanks", true, AC, vec![Notice::ConsumerWrote], vec![]),
            (
                AC,
                "I withdraw",
                true,
                AC,
                vec![Notice::WithdrawalUnclear],
                vec![Template::WithdrawalPrompt],
            ),
            (
                AC,
                "WITHDRAW",
                true,
                Withdrawn,
                vec![Notice::Withdrawn],
                vec![Template::WithdrawalConfirmation],
            ),
            // Once the deletion is confirmed, the team reads everything.
            (
                Confirmed,
                "cancel",
                true,
                Confirmed,
                vec![Notice::ConsumerWrote],
                vec![],
            ),
            (
                Confirmed,
                "WITHDRAW",
                true,
                Confirmed,
                vec![Notice::ConsumerWrote],
                vec![],
            ),
        ];
        for (from, text, proves, to, want_notices, want_sends) in rows {
            let case = case_in(Kind::Delete, from, false);
            let tr = reply(&case, text, proves);
            let label = format!("{from} {text:?}");
            assert_eq!(tr.case.state, to, "{label}");
            assert_eq!(notices(&tr), want_notices, "{label}");
            let sent: Vec<Template> = sends(&tr).into_iter().map(|(t, _)| t).collect();
            assert_eq!(sent, want_sends, "{label}");
            assert_eq!(tr.case.due_at, case.due_at, "{label}");
            if to == Withdrawn {
                assert_eq!(tr.case.closed_at, Some(now()), "{label}");
                assert_eq!(
                    tr.case.resolution.map(Resolution::as_str),
                    Some("withdrawn"),
                    "{label}"
                );
            }
            let consumer = Actor::Consumer(case.requester.clone());
            assert!(
                tr.effects.iter().all(|e| match e {
                    Effect::Event { actor, .. } => *actor == consumer,
                    _ => true,
                }),
                "{label}"
            );
            let state_events = events(&tr)
                .into_iter()
                .filter(|(a, _)| a == "state")
                .count();
            assert_eq!(state_events, usize::from(to != from), "{label}");
        }
    }

    #[test]
    fn final_cases_answer_once_over_their_life() {
        for state in [Completed, Denied, Closed, Withdrawn] {
            let case = case_in(Kind::Know, state, false);
            let first = reply(&case, "hello?", false);
            assert_eq!(first.case.state, state);
            assert_eq!(notices(&first), [Notice::ConsumerWrote]);
            assert_eq!(
                sends(&first),
                [(Template::CaseClosedReply, Audience::Requester)]
            );
            assert!(first.case.closed_reply_sent);
            let second = reply(&first.case, "CONFIRM", true);
            assert_eq!(second.case.state, state);
            assert_eq!(notices(&second), [Notice::ConsumerWrote]);
            assert!(sends(&second).is_empty(), "{state}");
        }
    }

    #[test]
    fn declarations_in_replies_are_recorded() {
        let case = case_in(Kind::Know, AV, true);
        let tr = apply(
            &case,
            Input::ConsumerReply {
                from: "ops@agent.example".into(),
                new_text: "Attached the signed declaration.".into(),
                proves_mailbox: false,
                declarations: 2,
            },
            &Policy::default(),
            now(),
        )
        .unwrap();
        assert!(events(&tr).contains(&("declaration_received".into(), "2".into())));
        assert_eq!(tr.case.state, AV);
        assert!(
            !tr.case.authorization_ok,
            "only the team accepts a declaration"
        );
    }

    #[test]
    fn agent_authorization_gate() {
        let case = case_in(Kind::Delete, VS, true);
        assert_eq!(
            run(&case, Command::Verify),
            Err(Refusal::NeedsAuthorization)
        );

        let accepted = run(&case, Command::DeclarationAccept).unwrap().case;
        assert!(accepted.authorization_ok);
        let verified = run(&accepted, Command::Verify).unwrap();
        assert_eq!(verified.case.state, AC);
        assert_eq!(verified.case.verified_at, Some(now()));
        assert_eq!(
            sends(&verified),
            [(Template::DeleteConfirmationRequest, Audience::Requester)]
        );

        let rejected = run(
            &accepted,
            Command::DeclarationReject {
                reason: "not notarized".into(),
            },
        )
        .unwrap();
        assert!(!rejected.case.authorization_ok);
        assert!(matches!(
            &rejected.effects[..],
            [Effect::Event { .. }, Effect::Send { template: Template::DeclarationRejected, reason: Some(r), .. }]
                if r == "not notarized"
        ));
        assert_eq!(
            run(&rejected.case, Command::Verify),
            Err(Refusal::NeedsAuthorization)
        );

        let poa = run(&rejected.case, Command::Poa).unwrap().case;
        assert_eq!(run(&poa, Command::Verify).unwrap().case.state, AC);
    }

    #[test]
    fn reasons_and_texts_are_required() {
        let case = case_in(Kind::Know, AV, true);
        let blank = "  \n ".to_string();
        let cases = [
            (
                Command::Deny {
                    reason: blank.clone(),
                },
                Refusal::MissingReason("deny"),
            ),
            (
                Command::Extend {
                    reason: blank.clone(),
                },
                Refusal::MissingReason("extend"),
            ),
            (
                Command::Close {
                    reason: blank.clone(),
                },
                Refusal::MissingReason("close"),
            ),
            (
                Command::DeclarationReject {
                    reason: blank.clone(),
                },
                Refusal::MissingReason("declaration_reject"),
            ),
            (Command::Note { text: blank }, Refusal::EmptyNote),
        ];
        for (command, want) in cases {
            assert_eq!(run(&case, command.clone()), Err(want), "{command:?}");
        }
    }

    #[test]
    fn deny_sends_the_reason() {
        let case = case_in(Kind::Know, VS, false);
        let tr = run(
            &case,
            Command::Deny {
                reason: " could not verify ".into(),
            },
        )
        .unwrap();
        assert_eq!(tr.case.denial_reason.as_deref(), Some("could not verify"));
        assert_eq!(tr.case.resolution.map(Resolution::as_str), Some("denied"));
        assert!(tr.effects.contains(&Effect::Send {
            template: Template::Denial,
            to: Audience::Requester,
            reason: Some("could not verify".into()),
        }));
        assert!(events(&tr).contains(&("deny".into(), "could not verify".into())));
    }

    #[test]
    fn complete_templates() {
        let complete = |sent_by_team, partial: Option<&str>| Command::Complete {
            sent_by_team,
            partial: partial.map(str::to_string),
        };
        let know = case_in(Kind::Know, V, false);
        let tr = run(&know, complete(false, None)).unwrap();
        assert_eq!(sends(&tr), [(Template::KnowCompleted, Audience::Requester)]);
        assert_eq!(tr.case.resolution.map(Resolution::as_str), Some("complied"));
        let tr = run(&know, complete(true, None)).unwrap();
        assert!(sends(&tr).is_empty());
        assert!(events(&tr).contains(&(
            "complete".into(),
            "the team sent the response itself".into()
        )));

        let delete = case_in(Kind::Delete, Confirmed, false);
        for sent_by_team in [false, true] {
            let tr = run(&delete, complete(sent_by_team, None)).unwrap();
            assert_eq!(
                sends(&tr),
                [(Template::DeleteCompleted, Audience::Requester)]
            );
        }
        // A partial deletion names what was kept and why, in the mail and the record.
        let kept = "order records kept 7 years (tax law, Civ. Code §1798.105(d)(8))";
        let tr = run(&delete, complete(false, Some(kept))).unwrap();
        assert!(tr.effects.contains(&Effect::Send {
            template: Template::DeleteCompleted,
            to: Audience::Requester,
            reason: Some(kept.into()),
        }));
        assert_eq!(
            tr.case.resolution.map(Resolution::as_str),
            Some("partially_complied")
        );
        assert_eq!(tr.case.denial_reason.as_deref(), Some(kept));
        assert_eq!(
            run(&delete, complete(false, Some("  "))),
            Err(Refusal::MissingReason("complete partial"))
        );

        let correct = case_in(Kind::Correct, V, false);
        let tr = run(&correct, complete(false, None)).unwrap();
        assert_eq!(
            sends(&tr),
            [(Template::CorrectCompleted, Audience::Requester)]
        );

        let close = run(
            &know,
            Command::Close {
                reason: "duplicate".into(),
            },
        )
        .unwrap();
        assert!(sends(&close).is_empty(), "closing mails no consumer");
        assert_eq!(
            close.case.resolution.map(Resolution::as_str),
            Some("closed")
        );
    }

    #[test]
    fn closing_for_want_of_verification_tells_the_requester_and_counts_as_denied() {
        let case = case_in(Kind::Delete, AV, false);
        let tr = run(
            &case,
            Command::Close {
                reason: "Unverified: no answer in 30 days".into(),
            },
        )
        .unwrap();
        assert_eq!(tr.case.state, Closed);
        assert_eq!(tr.case.resolution.map(Resolution::as_str), Some("denied"));
        assert_eq!(
            tr.case.denial_reason.as_deref(),
            Some("identity could not be verified: no answer in 30 days")
        );
        assert!(tr.effects.contains(&Effect::Send {
            template: Template::IdentityNotVerified,
            to: Audience::Requester,
            reason: Some("no answer in 30 days".into()),
        }));
        assert_eq!(unverified_close("unverifiable"), Some(""));
        assert_eq!(unverified_close("unverifiedness"), None);
        assert_eq!(unverified_close("duplicate"), None);
    }

    #[test]
    fn notes_work_in_every_state_and_change_nothing_else() {
        for state in State::ALL {
            let case = case_in(Kind::Delete, state, false);
            let tr = run(
                &case,
                Command::Note {
                    text: "called her".into(),
                },
            )
            .unwrap();
            assert_eq!(tr.case, case);
            assert_eq!(
                events(&tr),
                [("note".to_string(), "called her".to_string())]
            );
        }
    }

    #[test]
    fn extension_once_and_only_before_the_due_date() {
        let policy = Policy::default();
        let case = case_in(Kind::Know, VS, false);
        let extend = |c: &Case, at| {
            apply(
                c,
                Input::Team {
                    actor: Actor::Cli("cli:root".into()),
                    command: Command::Extend {
                        reason: "complex".into(),
                    },
                },
                &policy,
                at,
            )
        };
        let tr = extend(&case, now()).unwrap();
        assert!(tr.case.extended);
        assert_eq!(tr.case.due_at, policy.extend(case.due_at));
        // Receipt + 89 days: 2026-11-02 + 89 = 2027-01-30.
        assert_eq!(tr.case.due_at, t("2027-01-31T07:59:59Z"));
        assert!(tr.effects.contains(&Effect::Send {
            template: Template::ExtensionNotice,
            to: Audience::Requester,
            reason: Some("complex".into()),
        }));
        assert!(events(&tr).iter().any(|(a, _)| a == "due_date"));
        assert_eq!(extend(&tr.case, now()), Err(Refusal::AlreadyExtended));

        // Exactly at the due date is still in time; a second later is not.
        assert!(extend(&case, case.due_at).is_ok());
        let late = case.due_at + TimeDelta::seconds(1);
        assert_eq!(
            extend(&case, late),
            Err(Refusal::PastDue { due: case.due_at })
        );
    }

    #[test]
    fn due_date_never_pauses() {
        let policy = Policy::default();
        let due = t("2026-12-17T07:59:59Z");
        let mut case = opened(request(Kind::Delete));
        assert_eq!(case.due_at, due);
        let steps = [
            Input::ConsumerReply {
                from: "jane@example.net".into(),
                new_text: "K7Q2-9XPM".into(),
                proves_mailbox: true,
                declarations: 0,
            },
            Input::Tick,
            Input::Team {
                actor: team_member(),
                command: Command::Verify,
            },
            Input::Tick,
            Input::ConsumerReply {
                from: "jane@example.net".into(),
                new_text: "CONFIRM".into(),
                proves_mailbox: true,
                declarations: 0,
            },
            Input::Team {
                actor: team_member(),
                command: Command::Complete {
                    sent_by_team: false,
                    partial: None,
                },
            },
        ];
        let mut at = received();
        for input in steps {
            at += TimeDelta::days(9);
            case = apply(&case, input, &policy, at).unwrap().case;
            assert_eq!(case.due_at, due);
        }
        assert_eq!(case.state, Completed);
        assert_eq!(case.closed_at, Some(at));
    }

    #[test]
    fn a_held_reminder_is_not_sent_and_waits_for_the_guard() {
        let case = case_in(Kind::Know, AV, false);
        let day = |n: i64| received() + TimeDelta::days(n);
        let tr = tick_at(&case, day(7));
        let held = apply(
            &tr.case,
            Input::ReminderHeld {
                template: Template::VerificationReminder,
                until: Some(day(8)),
                why: "verification_reminder: limit".into(),
            },
            &Policy::default(),
            day(7),
        )
        .unwrap();
        assert_eq!(held.case.reminder_sent_at, None);
        assert_eq!(events(&held)[0].0, "reminder_held");
        // Not before the guard's window, then sent.
        assert!(sends(&tick_at(&held.case, day(7) + TimeDelta::hours(12))).is_empty());
        let sent = tick_at(&held.case, day(8));
        assert_eq!(
            sends(&sent),
            [(Template::VerificationReminder, Audience::Requester)]
        );
        assert_eq!(sent.case.reminder_held_until, None);
        // Never sendable: recorded as held, not tried again.
        let never = apply(
            &tr.case,
            Input::ReminderHeld {
                template: Template::VerificationReminder,
                until: None,
                why: "verification_reminder: the recipient is the mailbox itself".into(),
            },
            &Policy::default(),
            day(7),
        )
        .unwrap();
        assert!(sends(&tick_at(&never.case, day(9))).is_empty());
    }

    #[test]
    fn verification_reminder_once() {
        let case = case_in(Kind::Know, AV, false);
        let day = |n: i64| received() + TimeDelta::days(n);
        assert!(tick_at(&case, day(6)).effects.is_empty());
        let tr = tick_at(&case, day(7));
        assert_eq!(
            sends(&tr),
            [(Template::VerificationReminder, Audience::Requester)]
        );
        assert_eq!(tr.case.reminder_sent_at, Some(day(7)));
        let again = tick_at(&tr.case, day(8));
        assert!(again.effects.is_empty());
        assert_eq!(again.case, tr.case);
        // Not in other open states.
        let submitted = case_in(Kind::Know, VS, false);
        assert!(sends(&tick_at(&submitted, day(8))).is_empty());
        // Zero turns reminders off.
        let policy = Policy {
            reminder_after_days: 0,
            ..Policy::default()
        };
        assert!(
            apply(&case, Input::Tick, &policy, day(8))
                .unwrap()
                .effects
                .is_empty()
        );
    }

    #[test]
    fn confirmation_reminder_once_even_after_a_verification_reminder() {
        let mut case = case_in(Kind::Delete, AC, false);
        case.reminder_sent_at = Some(received() + TimeDelta::days(7));
        case.verified_at = Some(received() + TimeDelta::days(10));
        assert!(
            tick_at(&case, received() + TimeDelta::days(16))
                .effects
                .is_empty()
        );
        let tr = tick_at(&case, received() + TimeDelta::days(17));
        assert_eq!(
            sends(&tr),
            [(Template::ConfirmationReminder, Audience::Requester)]
        );
        assert!(
            tick_at(&tr.case, received() + TimeDelta::days(20))
                .effects
                .is_empty()
        );
    }

    #[test]
    fn deadline_notices_once_each() {
        let case = case_in(Kind::Know, V, false);
        let due = case.due_at;
        assert!(tick_at(&case, due - TimeDelta::days(8)).effects.is_empty());
        let soon = tick_at(&case, due - TimeDelta::days(7));
        assert_eq!(notices(&soon), [Notice::DeadlineApproaching]);
        assert!(soon.case.due_soon_notified);
        assert!(
            tick_at(&soon.case, due - TimeDelta::days(1))
                .effects
                .is_empty()
        );
        assert!(tick_at(&soon.case, due).effects.is_empty());
        let over = tick_at(&soon.case, due + TimeDelta::seconds(1));
        assert_eq!(notices(&over), [Notice::Overdue]);
        assert!(over.case.overdue_notified);
        assert!(
            tick_at(&over.case, due + TimeDelta::days(30))
                .effects
                .is_empty()
        );

        // Jumping straight past the due date gives only the overdue notice.
        let late = tick_at(&case, due + TimeDelta::days(2));
        assert_eq!(notices(&late), [Notice::Overdue]);
        assert!(
            tick_at(&late.case, due + TimeDelta::days(3))
                .effects
                .is_empty()
        );

        // An extension re-arms the "approaching" notice for the new date.
        let extended = run(
            &soon.case,
            Command::Extend {
                reason: "complex".into(),
            },
        )
        .unwrap()
        .case;
        assert!(!extended.due_soon_notified);
        let again = tick_at(&extended, extended.due_at - TimeDelta::days(3));
        assert_eq!(notices(&again), [Notice::DeadlineApproaching]);

        // Final cases: nothing.
        for state in [Completed, Denied, Closed, Withdrawn] {
            let done = case_in(Kind::Know, state, false);
            let tr = tick_at(&done, due + TimeDelta::days(100));
            assert!(tr.effects.is_empty());
            assert_eq!(tr.case, done);
        }
    }

    #[test]
    fn tick_with_nothing_to_do_changes_nothing() {
        let case = case_in(Kind::Know, VS, false);
        let tr = tick_at(&case, now());
        assert!(tr.effects.is_empty());
        assert_eq!(tr.case, case);
    }

    /// The command table's `sends` is all the consumer mail each command can
    /// cause, in every state, kind and authorization.
    #[test]
    fn the_command_table_names_every_mail_a_command_sends() {
        use crate::cases::commands::{TABLE, TeamCommand};
        for verb in TABLE {
            for form in verb.forms {
                let arg = form
                    .usage
                    .trim_start_matches(&format!("#{}", verb.word))
                    .replace("[DETAIL]", "")
                    .replace("REASON", "why")
                    .replace("TEXT", "why");
                let Ok(TeamCommand::Case(command)) = (verb.build)(arg.trim()) else {
                    continue;
                };
                for kind in Kind::ALL {
                    for state in State::ALL {
                        for (agent, authorized) in [(false, false), (true, false), (true, true)] {
                            let mut case = case_in(kind, state, agent);
                            case.authorization_ok = authorized;
                            let input = Input::Team {
                                actor: Actor::Team("lead@example.com".into()),
                                command: command.clone(),
                            };
                            let Ok(tr) = apply(&case, input, &Policy::default(), now()) else {
                                continue;
                            };
                            for (template, _) in sends(&tr) {
                                assert!(
                                    verb.sends.contains(&template),
                                    "{} on {kind} {state}: {template} is not in its row",
                                    form.usage
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_template_name_is_listed() {
        for t in Template::ALL {
            assert_eq!(t.as_str().parse::<Template>().ok(), Some(t));
            assert_eq!(t.is_team(), t.as_str().starts_with("team_"));
        }
        let mut names: Vec<&str> = Template::ALL.iter().map(|t| t.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Template::ALL.len());
        assert!("no_such_template".parse::<Template>().is_err());
    }

    #[test]
    fn a_held_acknowledgement_goes_out_when_its_time_comes() {
        let case = case_in(Kind::Know, AV, false);
        let until = now() + TimeDelta::hours(20);
        let held = apply(
            &case,
            Input::AcknowledgementHeld {
                until: Some(until),
                why: "5 automatic replies in 24 hours".into(),
            },
            &Policy::default(),
            now(),
        )
        .unwrap();
        assert_eq!(held.case.acknowledged_at, None);
        assert_eq!(held.case.ack_held_until, Some(until));
        assert_eq!(events(&held)[0].0, "acknowledgement_held");
        assert!(sends(&held).is_empty() && notices(&held).is_empty());
        // Not before its time; no verification reminder for an unsent request.
        let early = tick_at(&held.case, until - TimeDelta::seconds(1));
        assert!(early.effects.is_empty(), "{:?}", early.effects);
        let late_reminder = tick_at(&held.case, now() + TimeDelta::days(8));
        assert_eq!(
            sends(&late_reminder),
            [(Template::Acknowledgement, Audience::Requester)],
            "the acknowledgement, not a reminder"
        );
        let sent = tick_at(&held.case, until);
        assert_eq!(
            sends(&sent),
            [(Template::Acknowledgement, Audience::Requester)]
        );
        assert_eq!(sent.case.acknowledged_at, Some(until));
        assert_eq!(sent.case.ack_held_until, None);
        assert!(
            tick_at(&sent.case, until + TimeDelta::hours(1))
                .effects
                .is_empty()
        );
        // An opt-out's first reply is the opt-out reply.
        let mut opt = case_in(Kind::OptOut, V, false);
        opt.acknowledged_at = None;
        opt.ack_held_until = Some(until);
        assert_eq!(
            sends(&tick_at(&opt, until)),
            [(Template::OptOutReply, Audience::Requester)]
        );
        // Held for good (our own address): the scheduler never sends it.
        let stuck = apply(
            &case,
            Input::AcknowledgementHeld {
                until: None,
                why: "the recipient is the mailbox itself".into(),
            },
            &Policy::default(),
            now(),
        )
        .unwrap()
        .case;
        assert!(sends(&tick_at(&stuck, now() + TimeDelta::days(3))).is_empty());
    }

    #[test]
    fn the_reminder_counts_from_the_acknowledgement_not_from_receipt() {
        // Taken in from a backlog: received ten days ago, acknowledged now.
        let mut case = case_in(Kind::Know, State::AwaitingVerification, false);
        case.received_at = now() - TimeDelta::days(10);
        case.acknowledged_at = Some(now());
        assert!(sends(&tick_at(&case, now() + TimeDelta::days(1))).is_empty());
        let later = tick_at(&case, now() + TimeDelta::days(7));
        assert_eq!(
            sends(&later),
            vec![(Template::VerificationReminder, Audience::Requester)]
        );
    }
}
