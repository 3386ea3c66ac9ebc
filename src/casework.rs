//! Carries out the engine's decisions inside the caller's transaction: writes
//! the case and its events, renders and queues the mail (SPEC §2: one
//! transaction for the case change, its events and its outbox rows).
//!
//! Every path that changes a case goes through here — intake, the team's
//! commands by mail, `cases act` and the scheduler — so they cannot drift apart.

pub mod burst;
mod carry;

pub(crate) use carry::Carry;

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use tracing::{debug, info};

use crate::cases::engine::{Actor, Audience, NewRequest, Notice};
use crate::cases::{Action, Case, Command, Effect, Input, Kind, Refusal, Template, Transition};
use crate::classify;
use crate::ids::{CaseId, Purpose};
use crate::mailroom::Mailroom;
use crate::message::Inbound;
use crate::outbox::compose::{AutoSubmitted, Outgoing, compose};
use crate::store::{self, NewMessage, NewOutbox, StoreError};
use crate::templates::{CaseContext, Rendered, TemplateContext, commands_for};

#[derive(Debug, thiserror::Error)]
pub enum CaseworkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot render template {template}: {source}")]
    Template {
        template: String,
        source: crate::templates::TemplateError,
    },
    #[error("cannot build the message from template {template}: {source}")]
    Compose {
        template: String,
        source: crate::outbox::compose::ComposeError,
    },
    #[error("no case {0}")]
    NoSuchCase(String),
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Attachment(#[from] crate::attachments::AttachmentError),
}

impl From<sqlx::Error> for CaseworkError {
    fn from(e: sqlx::Error) -> Self {
        CaseworkError::Store(StoreError::Sql(e))
    }
}

pub type Result<T, E = CaseworkError> = std::result::Result<T, E>;

/// Threading facts of a new case.
#[derive(Debug, Clone, Default)]
pub(crate) struct NewThread<'a> {
    pub subject: &'a str,
    /// Message-ID of the request.
    pub root: Option<&'a str>,
    pub manner: crate::cases::Manner,
    /// What opened it (see [`Trigger`]): the guards on the first mail.
    pub trigger: Trigger,
}

/// Writes a freshly opened case and carries out its effects, storing the
/// mail that opened the case with it (when given): the
/// message row is inserted already linked to the case (one statement
/// instead of an insert and an update; issue 13), before the effects, so
/// the acknowledgement answers it. Returns the message row.
///
/// A mail `carry` holds from an earlier case is written first, at the head
/// of the case's statement batch. With `keep_reply`, a first reply that
/// nothing else follows is left in `carry` for the next command instead of
/// written (see [`Carry`]).
#[allow(clippy::too_many_arguments)]
async fn commit_new_with(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    t: &Transition,
    thread: &NewThread<'_>,
    message: Option<&store::messages::NewMessage<'_>>,
    carry: &mut Carry,
    keep_reply: bool,
    now: DateTime<Utc>,
) -> Result<Option<i64>> {
    let row = store::cases::CaseThread {
        subject: thread.subject.to_string(),
        thread_root: thread.root.map(str::to_string),
        notice_root: None,
        manner: thread.manner,
    };
    let requester_key = crate::address::rate_key(&t.case.requester);
    // A new case's replies answer its request: what
    // `messages::reply_thread` would read back, known without the round
    // trip. Without a Message-ID the first reply is the thread, and a second
    // one in the same transition answers it (read from the store).
    let known = thread.root.map(|root| store::messages::ReplyThread {
        thread_root: Some(root.to_string()),
        last_applied: Some(root.to_string()),
    });
    // The events the transition opens with go in the case's statement
    // batch; the effects after them are carried out below.
    let leading: Vec<store::events::NewEvent<'_>> = t.effects.iter().map_while(event_row).collect();
    let compose_first = || match &known {
        Some(known) => first_reply(
            room,
            t,
            leading.len(),
            thread.trigger,
            known,
            &requester_key,
            now,
        ),
        None => Ok(None),
    };
    let (opened, written, notice_queued, first) = match message {
        Some(m) => {
            let linked = store::messages::NewMessage {
                case_id: Some(t.case.id.as_str()),
                ..m.clone()
            };
            // Its new-case notice waits for the end of the batch in any
            // case (`notify_team`): queued here, in the same batch, and
            // left out of the effects carried out below.
            let notice_queued = !room.team().notify.is_empty()
                && t.effects.contains(&Effect::Notify(Notice::NewCase));
            let before = carry.take();
            let before_rows = before.as_ref().map(|(m, _)| (m.outbox(), m.record()));
            let before_events = before
                .as_ref()
                .and_then(|(_, events)| events.as_ref())
                .map(|events| (events, events.rows()));
            let opening = store::cases::Opening {
                events: &leading,
                notice_queued,
                // The first reply goes to the requester: its per-sender
                // count is read in the same batch.
                recent_to: Some((&requester_key, recent_since(now))),
                before: before_rows.as_ref().map(|(o, r)| (o, r)),
                before_events: before_events
                    .as_ref()
                    .map(|(events, rows)| events.batch(rows)),
            };
            // The case's rows go to the SQLite worker first, and its first
            // reply is composed while the worker writes them: composing is
            // most of intake's own work per request (docs/benchmark.md).
            // `join!` polls in order, so the insert is sent before the
            // composing starts.
            let (opened, first) = futures::join!(
                store::cases::insert_with_message(conn, &t.case, &row, &opening, &linked, now),
                async { compose_first() },
            );
            (Some(opened?), leading.len(), notice_queued, first?)
        }
        None => {
            carry.flush(conn).await?;
            store::cases::insert(conn, &t.case, &row, now).await?;
            (None, 0, false, None)
        }
    };
    let mut recent_to = opened.and_then(|o| o.recent_to);
    // The count was read before the reply is written. Over the limit, the
    // reply goes through the guard below like any other mail (held, or sent
    // anyway).
    let first = first
        .filter(|first| !first.limited || recent_to.is_some_and(|count| under_limit(room, count)));
    let first_sent = first.is_some();
    if first_sent {
        // Read again for a later mail: the count has grown.
        recent_to = None;
    }
    let mut rest: Vec<Effect> = t
        .effects
        .iter()
        .skip(written + usize::from(first_sent))
        .filter(|e| !(notice_queued && **e == Effect::Notify(Notice::NewCase)))
        .cloned()
        .collect();
    if let Some(first) = first {
        // A reply that nothing but events follows (an opt-out's
        // `opt_out_answered`, or nothing) waits with them for the next case.
        if keep_reply && only_events(&rest) {
            let events = carry::Events::new(&t.case.id, now, std::mem::take(&mut rest));
            carry.keep(conn, first.mail, events).await?;
        } else {
            first.mail.write(conn).await?;
        }
    }
    let known = Known {
        thread: known.as_ref(),
        recent_to: recent_to.map(|count| (requester_key.as_str(), count)),
    };
    carry_out(conn, room, &t.case, &rest, thread.trigger, known, now).await?;
    Ok(opened.map(|o| o.message_row))
}

/// The `events` row an effect asks for, or `None` when it is not an event.
fn event_row(effect: &Effect) -> Option<store::events::NewEvent<'_>> {
    match effect {
        Effect::Event {
            actor,
            action,
            detail,
        } => Some(store::events::NewEvent {
            actor: actor.label(),
            action: *action,
            detail,
        }),
        _ => None,
    }
}

/// Whether `effects` are events and nothing else, so they can wait in
/// [`Carry`] with the reply before them. Not reminders: [`carry_out`] drops
/// the event of a reminder a guard held (none is due when a case opens).
fn only_events(effects: &[Effect]) -> bool {
    effects
        .iter()
        .all(|effect| matches!(effect, Effect::Event { action, .. } if *action != Action::Reminder))
}

/// A new case's first reply, composed while the case is written.
struct FirstReply {
    mail: Composed,
    /// Whether the per-sender limit applies ([`Guard::Limited`]).
    limited: bool,
}

/// The reply a new case's transition asks for right after its opening
/// events (at `index`), composed, when it can be composed while the case is
/// written: it goes to the requester (whose count the case's batch reads),
/// threads under the request (`thread`), and no guard that needs no count
/// holds it back. It is written after the case, once the count says the
/// per-sender limit lets it go.
fn first_reply(
    room: &Mailroom,
    t: &Transition,
    index: usize,
    trigger: Trigger,
    thread: &store::messages::ReplyThread,
    requester_key: &str,
    now: DateTime<Utc>,
) -> Result<Option<FirstReply>> {
    let Some(Effect::Send {
        template,
        to,
        reason,
    }) = t.effects.get(index)
    else {
        return Ok(None);
    };
    let mail = ConsumerMail {
        template: *template,
        to: *to,
        reason: reason.as_deref(),
        trigger,
        thread: Some(thread),
        recent_to: None,
    };
    let Some(recipient) = recipient_of(&t.case, *to) else {
        return Ok(None);
    };
    if is_reminder(*template) || crate::address::rate_key(&recipient) != requester_key {
        return Ok(None);
    }
    let limited = match guard(room, &t.case, &mail, requester_key) {
        Guard::Never(_) => return Ok(None),
        Guard::Unlimited => false,
        Guard::Limited => true,
    };
    let last_in = thread.last_applied.clone();
    let mail = consumer_mail(
        room,
        &t.case,
        &mail,
        recipient,
        requester_key,
        thread,
        last_in,
        now,
    )?;
    Ok(Some(FirstReply { mail, limited }))
}

/// What the caller of [`carry_out`] already knows about a case opened in
/// this transaction, so its replies need not read it back.
#[derive(Debug, Clone, Copy, Default)]
struct Known<'a> {
    /// The case's reply thread.
    thread: Option<&'a store::messages::ReplyThread>,
    /// A rate key's per-sender count, read right after the case's rows went
    /// in: it holds for the first consumer mail only.
    recent_to: Option<(&'a str, i64)>,
}

/// Whether `recent` automatic replies to one sender in 24 hours leave room
/// for another under the per-sender limit.
fn under_limit(room: &Mailroom, recent: i64) -> bool {
    recent < i64::from(room.config.policy.max_auto_replies_per_day)
}

/// Where the per-sender limit's 24 hours start.
fn recent_since(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::hours(24)
}

/// The mail a request came in, for [`open_request`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum RequestMail<'a> {
    /// Already stored (a message `#open`ed from review): linked to the case.
    Stored(i64),
    /// Not stored yet: stored with the case, linked to it.
    New(&'a store::messages::NewMessage<'a>),
    /// A further case opened from the same message (stored with the first).
    Sibling,
}

/// What caused a transition: the per-sender reply limit (SPEC §8) is a guard
/// against mail loops, so it applies to what inbound mail and the clocks
/// trigger, never to a team decision the law requires the consumer to hear
/// of (a denial, an extension, a completion).
///
/// `VouchedAgent`: a request from an agent at `agents.known_domains` whose
/// mail our MX authenticated (the topmost trusted `Authentication-Results`
/// shows an aligned `dkim=pass` or `auth=pass`, as for team commands). Only
/// that earns an agent's privileges: no per-sender limit, and the mail to
/// the consumer the agent names. A From line alone earns nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Trigger {
    /// Inbound mail (a request, a reply).
    #[default]
    Automatic,
    /// The scheduler's clock (reminders).
    Clock,
    Team,
    VouchedAgent,
}

impl Trigger {
    /// RFC 3834: answers to mail are `auto-replied`, the clock's mail
    /// `auto-generated`, and a team decision is a person's mail (`no`).
    fn auto_submitted(self) -> AutoSubmitted {
        match self {
            Trigger::Automatic | Trigger::VouchedAgent => AutoSubmitted::Replied,
            Trigger::Clock => AutoSubmitted::Generated,
            Trigger::Team => AutoSubmitted::No,
        }
    }
}

/// Writes an updated case and carries out its effects.
pub(crate) async fn commit_update(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    t: &Transition,
    trigger: Trigger,
    now: DateTime<Utc>,
) -> Result<()> {
    store::cases::update(conn, &t.case, now).await?;
    carry_out(
        conn,
        room,
        &t.case,
        &t.effects,
        trigger,
        Known::default(),
        now,
    )
    .await
}

/// Applies one input to a stored case; a refusal is recorded as an event and
/// returned. The caller commits the transaction.
pub(crate) async fn apply_input(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    case_id: &CaseId,
    input: Input,
    now: DateTime<Utc>,
) -> Result<Transition> {
    apply_input_as(conn, room, case_id, input, false, now).await
}

/// [`apply_input`], with the trigger of a consumer reply raised to
/// [`Trigger::VouchedAgent`] when intake found the reply to come from the
/// case's known agent, authenticated by our MX.
pub(crate) async fn apply_input_as(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    case_id: &CaseId,
    input: Input,
    vouched_agent: bool,
    now: DateTime<Utc>,
) -> Result<Transition> {
    let case = store::cases::get(conn, case_id)
        .await?
        .ok_or_else(|| CaseworkError::NoSuchCase(case_id.to_string()))?;
    let actor = match &input {
        Input::Team { actor, .. } => actor.label(),
        Input::ConsumerReply { from, .. } => from.clone(),
        Input::Tick | Input::AcknowledgementHeld { .. } | Input::ReminderHeld { .. } => {
            "daemon".into()
        }
    };
    let name = match &input {
        Input::Team { command, .. } => command.name(),
        Input::ConsumerReply { .. } => "consumer_reply",
        Input::Tick => "tick",
        Input::AcknowledgementHeld { .. } => "acknowledgement_held",
        Input::ReminderHeld { .. } => "reminder_held",
    };
    let command = match &input {
        Input::Team { command, .. } => Some(command.action()),
        _ => None,
    };
    let trigger = match &input {
        Input::Team { .. } => Trigger::Team,
        Input::ConsumerReply { .. } | Input::AcknowledgementHeld { .. } => Trigger::Automatic,
        Input::Tick | Input::ReminderHeld { .. } => Trigger::Clock,
    };
    let trigger = match trigger {
        Trigger::Automatic if vouched_agent => Trigger::VouchedAgent,
        t => t,
    };
    match crate::cases::apply(&case, input, &room.policy, now) {
        Ok(t) => {
            if t.case != case || !t.effects.is_empty() {
                commit_update(conn, room, &t, trigger, now).await?;
            }
            // `#declaration accept|reject` settle the pending documents too.
            if let Some(command) = command {
                crate::attachments::after_command(conn, case_id, command, &actor, now).await?;
            }
            Ok(t)
        }
        Err(refusal) => {
            store::events::append(
                conn,
                Some(case_id),
                now,
                &actor,
                crate::cases::Action::Refused,
                &format!("{name}: {refusal}"),
            )
            .await?;
            Err(refusal.into())
        }
    }
}

/// A team decision from the CLI or by mail: one transaction, committed here.
/// A refusal is recorded (committed) and returned.
pub async fn act(
    room: &Mailroom,
    case_id: &CaseId,
    actor: Actor,
    command: Command,
    now: DateTime<Utc>,
) -> Result<Transition> {
    let mut tx = room.store.begin().await?;
    let result = apply_input(&mut tx, room, case_id, Input::Team { actor, command }, now).await;
    burst::flush(&mut tx, room, now).await?;
    tx.commit().await?;
    room.outbox_wake.notify_one();
    result
}

/// Carries out a transition's effects on `case` (its new state, already
/// written), with what the caller already `known`s of the case.
async fn carry_out(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    case: &Case,
    effects: &[Effect],
    trigger: Trigger,
    known: Known<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut recent_to = known.recent_to;
    // Reminders a guard held back: their `reminder` event would claim a
    // mail that never went out (the engine records them as held instead).
    let mut held_reminders: Vec<&str> = Vec::new();
    // Consecutive events go in one statement (one round trip to the SQLite
    // worker instead of one each; issue 13), written before the next
    // effect so the log keeps the engine's order.
    let mut events: Vec<store::events::NewEvent<'_>> = Vec::new();
    for effect in effects {
        if !matches!(effect, Effect::Event { .. }) && !events.is_empty() {
            store::events::append_many(conn, &case.id, now, &events).await?;
            events.clear();
        }
        match effect {
            Effect::Event {
                actor,
                action,
                detail,
            } => {
                if *action == Action::Reminder && held_reminders.contains(&detail.as_str()) {
                    continue;
                }
                events.push(store::events::NewEvent {
                    actor: actor.label(),
                    action: *action,
                    detail,
                });
            }
            Effect::Send {
                template,
                to,
                reason,
            } => {
                let mail = ConsumerMail {
                    template: *template,
                    to: *to,
                    reason: reason.as_deref(),
                    trigger,
                    thread: known.thread,
                    // After the first mail the count may have grown.
                    recent_to: recent_to.take(),
                };
                if !send_to_consumer(conn, room, case, &mail, now).await? && is_reminder(*template)
                {
                    held_reminders.push(template.as_str());
                }
            }
            Effect::Notify(notice) => {
                notify_team(conn, room, case, *notice, now).await?;
            }
        }
    }
    if !events.is_empty() {
        store::events::append_many(conn, &case.id, now, &events).await?;
    }
    Ok(())
}

/// A consumer-facing mail the engine asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConsumerMail<'a> {
    pub template: Template,
    pub to: Audience,
    pub reason: Option<&'a str>,
    pub trigger: Trigger,
    /// What the reply threads to, when known; read from the store if not.
    pub thread: Option<&'a store::messages::ReplyThread>,
    /// A rate key's per-sender count, when known; read from the store for
    /// any other key.
    pub recent_to: Option<(&'a str, i64)>,
}

fn is_reminder(template: Template) -> bool {
    matches!(
        template,
        Template::VerificationReminder | Template::ConfirmationReminder
    )
}

/// Queues a consumer-facing mail, unless a guard says no; a mail held back is
/// an event on the case. Returns whether the mail was queued.
pub(crate) async fn send_to_consumer(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    case: &Case,
    mail: &ConsumerMail<'_>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let ConsumerMail {
        template, thread, ..
    } = *mail;
    let Some(recipient) = recipient_of(case, mail.to) else {
        return Ok(false);
    };
    // `+tags` do not make another sender for the per-sender limit.
    let rate_key = crate::address::rate_key(&recipient);
    if let Some(hold) = held_back(conn, room, case, mail, &rate_key, now).await? {
        info!(case = %case.id, template = template.as_str(), "Reply held back by a guard.");
        store::events::append(
            conn,
            Some(&case.id),
            now,
            "daemon",
            crate::cases::Action::ReplySuppressed,
            &hold.why,
        )
        .await?;
        // The record must not claim a mail that never went out; the engine
        // keeps an acknowledgement or a reminder for the scheduler to send.
        let input = if template == crate::cases::engine::first_reply(case.kind) {
            Some(Input::AcknowledgementHeld {
                until: hold.until,
                why: hold.why,
            })
        } else if is_reminder(template) {
            Some(Input::ReminderHeld {
                template,
                until: hold.until,
                why: hold.why,
            })
        } else {
            None
        };
        if let Some(input) = input {
            let held = crate::cases::apply(case, input, &room.policy, now)?;
            store::cases::update(conn, &held.case, now).await?;
            for effect in &held.effects {
                if let Effect::Event {
                    actor,
                    action,
                    detail,
                } = effect
                {
                    store::events::append(
                        conn,
                        Some(&case.id),
                        now,
                        &actor.label(),
                        *action,
                        detail,
                    )
                    .await?;
                }
            }
        }
        return Ok(false);
    }
    let thread = match thread {
        Some(known) => known.clone(),
        None => store::messages::reply_thread(conn, &case.id).await?,
    };
    // The consumer's thread: their last message applied to the case, else
    // the request, else our own last mail to them (never team mail).
    let last_in = match thread.last_applied.clone() {
        Some(id) => Some(id),
        None => match thread.thread_root.clone() {
            Some(root) => Some(root),
            None => store::messages::last_consumer_mail_id(conn, &case.id).await?,
        },
    };
    let composed = consumer_mail(
        room, case, mail, recipient, &rate_key, &thread, last_in, now,
    )?;
    composed.write(conn).await?;
    Ok(true)
}

/// The address a consumer-facing mail goes to, if the case has one.
fn recipient_of(case: &Case, to: Audience) -> Option<String> {
    match to {
        Audience::Requester => Some(case.requester.clone()),
        Audience::Consumer => case.consumer.clone(),
    }
}

/// Renders and composes a consumer-facing `mail` to `recipient`, threaded
/// under `thread` and answering `last_in`.
#[allow(clippy::too_many_arguments)]
fn consumer_mail(
    room: &Mailroom,
    case: &Case,
    mail: &ConsumerMail<'_>,
    recipient: String,
    rate_key: &str,
    thread: &store::messages::ReplyThread,
    last_in: Option<String>,
    now: DateTime<Utc>,
) -> Result<Composed> {
    let template = mail.template;
    let rendered = render(room, template.as_str(), case, mail.reason, None, now)?;
    let mut references: Vec<String> = Vec::new();
    for id in [thread.thread_root.clone(), last_in.clone()]
        .into_iter()
        .flatten()
    {
        if !references.contains(&id) {
            references.push(id);
        }
    }
    let message_id = room
        .keys
        .generate(Purpose::Reply, &case.id, room.message_id_domain());
    Composed::new(
        room,
        Queued {
            case_id: Some(case.id.to_string()),
            audience: store::outbox::Audience::Consumer,
            template: template.as_str().to_string(),
            recipients: vec![recipient],
            rate_key: rate_key.to_string(),
            rendered,
            message_id,
            in_reply_to: last_in,
            references,
            auto_submitted: mail.trigger.auto_submitted(),
        },
        now,
    )
}

/// Why a consumer-facing mail is held back, and until when it may go.
struct Hold {
    why: String,
    /// When the per-sender window allows it; `None`: never.
    until: Option<DateTime<Utc>>,
}

/// What the guards that need no count say of a consumer-facing mail.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Guard {
    /// Never to go out, and why.
    Never(String),
    /// Not subject to the per-sender limit.
    Unlimited,
    /// Goes out while the per-sender count is under the limit.
    Limited,
}

/// The guards on a consumer-facing `mail` to `recipient` (its rate key)
/// that need nothing from the store.
fn guard(room: &Mailroom, case: &Case, mail: &ConsumerMail<'_>, recipient: &str) -> Guard {
    let ConsumerMail {
        template, trigger, ..
    } = *mail;
    if room.is_own_address(recipient) {
        return Guard::Never(format!("{template}: the recipient is the mailbox itself"));
    }
    let known_agent =
        |addr: &str| crate::address::in_domains(addr, &room.config.agents.known_domains);
    // Anyone can claim to be an agent and name a "consumer": the daemon
    // writes to that third party only for agents the company knows, and only
    // when our MX authenticated the agent's mail.
    if template == Template::AgentConsumerConfirm {
        if !case.agent.as_deref().is_some_and(known_agent) {
            return Guard::Never(format!(
                "{template}: the agent's domain is not in agents.known_domains; the team decides whether to contact the consumer"
            ));
        }
        if trigger != Trigger::VouchedAgent {
            return Guard::Never(format!(
                "{template}: the agent's mail was not authenticated by our mail server (no aligned dkim=pass or auth=pass from team.trusted_authserv_ids); the team decides whether to contact the consumer"
            ));
        }
    }
    // The per-sender limit is a loop guard for automatic mail. Known agent
    // services file many requests at once, each to be acknowledged, when
    // their mail is authenticated.
    if trigger == Trigger::Team || (trigger == Trigger::VouchedAgent && known_agent(recipient)) {
        return Guard::Unlimited;
    }
    Guard::Limited
}

/// Why a consumer-facing `mail` to `recipient` (its rate key) must not go
/// out, if it must not.
async fn held_back(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    case: &Case,
    mail: &ConsumerMail<'_>,
    recipient: &str,
    now: DateTime<Utc>,
) -> Result<Option<Hold>> {
    let template = mail.template;
    match guard(room, case, mail, recipient) {
        Guard::Never(why) => return Ok(Some(Hold { why, until: None })),
        Guard::Unlimited => return Ok(None),
        Guard::Limited => {}
    }
    let max = room.config.policy.max_auto_replies_per_day;
    let limit = i64::from(max);
    let since = recent_since(now);
    let recent = match mail.recent_to {
        Some((key, count)) if key == recipient => count,
        _ => store::outbox::recent_to(conn, recipient, since).await?,
    };
    if under_limit(room, recent) {
        return Ok(None);
    }
    let why = format!(
        "{template}: {recent} automatic replies to this sender in 24 hours (limit {limit})"
    );
    let until = store::outbox::window_opens(conn, recipient, since, max).await?;
    // The loop guard must not cost the consumer the acknowledgement the law
    // requires (§7021(a)): it waits only while the window opens at least a
    // day before the deadline.
    if template == crate::cases::engine::first_reply(case.kind) {
        let latest = case.ack_due_at - chrono::Duration::days(1);
        if until.is_none_or(|at| at > latest) {
            store::events::append(
                conn,
                Some(&case.id),
                now,
                "daemon",
                crate::cases::Action::ReplyLimitOverridden,
                &format!(
                    "{why}; sent anyway, the acknowledgement is due {}",
                    case.ack_due_at.to_rfc3339()
                ),
            )
            .await?;
            return Ok(None);
        }
    }
    Ok(Some(Hold { why, until }))
}

/// Tells the team. New-case notices wait for the end of the batch, where a
/// burst collapses them into one summary (see [`burst`]).
pub(crate) async fn notify_team(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    case: &Case,
    notice: Notice,
    now: DateTime<Utc>,
) -> Result<()> {
    if room.team().notify.is_empty() {
        debug!(case = %case.id, "No team.notify addresses; notice not sent.");
        return Ok(());
    }
    if notice == Notice::NewCase {
        return burst::queue(conn, &case.id, now).await;
    }
    send_notice(conn, room, case, notice, now).await
}

/// At most this many team notices about one case within an hour (command
/// results do not count); the rest are recorded (`notice_throttled`) and
/// counted in the next notice.
pub(crate) const NOTICES_PER_CASE_PER_HOUR: i64 = 5;

/// Queues a team notice now, threaded per case, unless the case had
/// [`NOTICES_PER_CASE_PER_HOUR`] team mails in the last hour (a loop, or a
/// stranger writing with the tag again and again): then the notice is held
/// back as an event, and the next notice says how many were.
pub(crate) async fn send_notice(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    case: &Case,
    notice: Notice,
    now: DateTime<Utc>,
) -> Result<()> {
    let hour_ago = now - chrono::Duration::hours(1);
    let (recent, _) = store::outbox::team_mail_for_case_since(conn, &case.id, hour_ago).await?;
    if recent >= NOTICES_PER_CASE_PER_HOUR {
        info!(case = %case.id, ?notice, "Team notice held back: too many about this case in the last hour.");
        let detail = format!(
            "{notice:?} notice held back: {recent} team notices about this case in the last hour (limit {NOTICES_PER_CASE_PER_HOUR}); the next notice counts it"
        );
        store::events::append(
            conn,
            Some(&case.id),
            now,
            "daemon",
            crate::cases::Action::NoticeThrottled,
            &detail,
        )
        .await?;
        return Ok(());
    }
    let mut ctx = case_context(room, case, None, Some(notice), now);
    let (_, last) =
        store::outbox::team_mail_for_case_since(conn, &case.id, DateTime::<Utc>::MIN_UTC).await?;
    if let Some(last) = last {
        let held =
            store::events::count_since(conn, Some(&case.id), "notice_throttled", last).await?;
        if held > 0 {
            let text = ctx.notice_text.take().unwrap_or_default();
            ctx.notice_text = Some(format!(
                "{text}\n\n{held} more notice(s) about this case were held back since the last one (too many within an hour); `cases show {}` lists them.",
                case.id
            ));
        }
    }
    queue_for_team(
        conn,
        room,
        TeamMail::case_notice(crate::cases::Template::TeamNotice.as_str(), &ctx, &case.id),
        now,
    )
    .await
}

/// A mail to `[team] notify`: a notice, a summary, the digest.
pub struct TeamMail<'a> {
    pub template: &'a str,
    pub ctx: &'a TemplateContext,
    /// What the Message-ID authenticates, and for which case, summary or row.
    pub purpose: Purpose,
    pub subject_id: &'a str,
    pub case_id: Option<&'a CaseId>,
    /// Ignored for case notices, which thread under the case's first notice.
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
}

impl<'a> TeamMail<'a> {
    /// A notice about one case, threaded with the case's other notices.
    pub(crate) fn case_notice(
        template: &'a str,
        ctx: &'a TemplateContext,
        case_id: &'a CaseId,
    ) -> Self {
        TeamMail {
            template,
            ctx,
            purpose: Purpose::Notice,
            subject_id: case_id,
            case_id: Some(case_id),
            in_reply_to: None,
            references: Vec::new(),
        }
    }
}

/// Renders and queues a team mail; nothing when `[team] notify` is empty.
pub(crate) async fn queue_for_team(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    mail: TeamMail<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    let notify = room.team().notify.clone();
    if notify.is_empty() {
        return Ok(());
    }
    let mut rendered = render_context(room, mail.template, mail.ctx)?;
    let message_id = room
        .keys
        .generate(mail.purpose, mail.subject_id, room.message_id_domain());
    // The reference in the body too: a notice forwarded back to the mailbox
    // as new mail (a member's forwarding rule) loses its headers but keeps
    // this line, and intake records it instead of noticing it again.
    rendered
        .text
        .push_str(&format!("\n--\nMailroom reference: <{message_id}>\n"));
    let (in_reply_to, references) = match mail.case_id {
        Some(case_id) if mail.purpose == Purpose::Notice => {
            let root = store::cases::thread(conn, case_id).await?.notice_root;
            if root.is_none() {
                store::cases::set_notice_root(conn, case_id, &message_id).await?;
            }
            (root.clone(), root.into_iter().collect())
        }
        _ => (mail.in_reply_to, mail.references),
    };
    let rate_key = notify.join(",").to_lowercase();
    queue(
        conn,
        room,
        Queued {
            case_id: mail.case_id.map(CaseId::to_string),
            audience: store::outbox::Audience::Team,
            template: mail.template.to_string(),
            recipients: notify,
            rate_key,
            rendered,
            message_id,
            in_reply_to,
            references,
            auto_submitted: AutoSubmitted::Generated,
        },
        now,
    )
    .await
}

/// A rendered mail ready for the outbox.
///
/// It owns what it holds, so that a composed mail can wait to be written
/// (see [`Carry`]).
pub struct Queued {
    pub case_id: Option<String>,
    pub audience: store::outbox::Audience,
    pub template: String,
    pub recipients: Vec<String>,
    pub rate_key: String,
    pub rendered: Rendered,
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub auto_submitted: AutoSubmitted,
}

/// Composes the message and writes the outbox row and the outgoing message row.
pub async fn queue(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    q: Queued,
    now: DateTime<Utc>,
) -> Result<()> {
    Composed::new(room, q, now)?.write(conn).await
}

/// A mail composed for the outbox: the bytes to send and what its two rows
/// (the outbox row and its record in `messages`) hold.
pub(crate) struct Composed {
    q: Queued,
    raw: Vec<u8>,
    sha256: String,
    envelope_from: String,
    now: DateTime<Utc>,
}

impl Composed {
    fn new(room: &Mailroom, q: Queued, now: DateTime<Utc>) -> Result<Composed> {
        let from = room.config.smtp.from.clone();
        let outgoing = Outgoing {
            from: from.clone(),
            reply_to: from,
            to: q.recipients.clone(),
            subject: q.rendered.subject.clone(),
            message_id: q.message_id.clone(),
            in_reply_to: q.in_reply_to.clone(),
            references: q.references.clone(),
            auto_submitted: q.auto_submitted,
            text: q.rendered.text.clone(),
            html: q.rendered.html.clone(),
            date: now,
        };
        let raw = compose(&outgoing).map_err(|source| CaseworkError::Compose {
            template: q.template.clone(),
            source,
        })?;
        Ok(Composed {
            sha256: crate::hash::sha256_hex(&raw),
            raw,
            envelope_from: room.mailbox_address().to_string(),
            q,
            now,
        })
    }

    /// Writes the outbox row and its record.
    async fn write(&self, conn: &mut SqliteConnection) -> Result<()> {
        store::outbox::insert_with_record(conn, &self.outbox(), &self.record()).await?;
        Ok(())
    }

    fn outbox(&self) -> NewOutbox<'_> {
        let q = &self.q;
        NewOutbox {
            case_id: q.case_id.as_deref(),
            message_id: &q.message_id,
            audience: q.audience,
            template: &q.template,
            envelope_from: &self.envelope_from,
            recipients: &q.recipients,
            rate_key: &q.rate_key,
            subject: &q.rendered.subject,
            raw: &self.raw,
            now: self.now,
        }
    }

    fn record(&self) -> NewMessage<'_> {
        let q = &self.q;
        NewMessage {
            case_id: q.case_id.as_deref(),
            direction: "out",
            message_id: Some(&q.message_id),
            subject: &q.rendered.subject,
            from_addr: Some(&self.envelope_from),
            at: self.now,
            template: Some(&q.template),
            sha256: &self.sha256,
            size: self.raw.len() as i64,
            original: store::messages::Original::None,
            body_text: Some(&q.rendered.text),
            disposition: match q.audience {
                store::outbox::Audience::Consumer => store::messages::Disposition::Consumer,
                store::outbox::Audience::Team => store::messages::Disposition::Team,
            },
            ..NewMessage::default()
        }
    }
}

/// Renders a template for a case.
pub fn render(
    room: &Mailroom,
    template: &str,
    case: &Case,
    reason: Option<&str>,
    notice: Option<Notice>,
    now: DateTime<Utc>,
) -> Result<Rendered> {
    render_context(
        room,
        template,
        &case_context(room, case, reason, notice, now),
    )
}

/// What templates see of a case (and, for a notice, its wording and commands).
pub(crate) fn case_context(
    room: &Mailroom,
    case: &Case,
    reason: Option<&str>,
    notice: Option<Notice>,
    now: DateTime<Utc>,
) -> TemplateContext {
    let mut ctx =
        room.template_context()
            .with_case(CaseContext::from_case(case, room.policy.timezone, now));
    ctx.reason = reason.map(str::to_string);
    if let Some(notice) = notice {
        let (title, mut text) = notice_wording(notice, case);
        if case.acknowledged_at.is_none() && !case.state.is_final() {
            text.push_str(&match case.ack_held_until {
                Some(at) => format!(
                    " The acknowledgement has NOT been sent yet: the per-sender reply limit holds it until {} (it goes out then, before its deadline of {}).",
                    at.with_timezone(&room.policy.timezone).format("%B %-d, %Y %H:%M %Z"),
                    crate::templates::format_date(case.ack_due_at, room.policy.timezone),
                ),
                None => format!(
                    " The acknowledgement has NOT been sent and will not be sent automatically; answer the requester yourself by {}.",
                    crate::templates::format_date(case.ack_due_at, room.policy.timezone),
                ),
            });
        }
        ctx.notice_title = Some(title);
        ctx.notice_text = Some(text);
        ctx.commands = commands_for(case);
    }
    ctx
}

/// Renders any template with the running template set.
pub(crate) fn render_context(
    room: &Mailroom,
    template: &str,
    ctx: &TemplateContext,
) -> Result<Rendered> {
    room.templates()
        .render(template, ctx)
        .map_err(|source| CaseworkError::Template {
            template: template.to_string(),
            source,
        })
}

/// The title and first paragraph of a team notice.
fn notice_wording(notice: Notice, case: &Case) -> (String, String) {
    let kind = case.kind.title();
    match notice {
        // The rest of the text says the acknowledgement is held (case_context).
        Notice::NewCase if case.acknowledged_at.is_none() => {
            (format!("New {kind}"), format!("A new {kind} was received."))
        }
        Notice::NewCase => (
            "New request".into(),
            match case.kind {
                Kind::OptOut => "A new Request to Opt-Out of Sale/Sharing. No identity verification applies (CCPA regs §7026(d)); the requester was answered at once with what the company's configuration says about selling and sharing. Carry it out (stop any sale or sharing, tell third parties) within 15 business days, then reply #complete.".to_string(),
                Kind::Limit => "A new Request to Limit the use of sensitive personal information. No identity verification applies (CCPA regs §7027); the requester was acknowledged. Carry it out within 15 business days, then reply #complete.".to_string(),
                Kind::Correct => format!("A new {kind} was received and acknowledged; the requester was asked to verify their identity and to send documentation supporting the correction."),
                Kind::Know | Kind::Delete => format!("A new {kind} was received and acknowledged; the requester was asked to verify their identity."),
            },
        ),
        Notice::VerificationSubmitted => (
            "Verification submitted".into(),
            "The requester answered the verification request with the code. Check the data points they sent, then reply #verify or #deny REASON.".into(),
        ),
        Notice::DeletionConfirmed => (
            "Deletion confirmed".into(),
            "The consumer confirmed the deletion. Carry it out, then reply #complete.".into(),
        ),
        Notice::Withdrawn => (
            "Request withdrawn".into(),
            "The consumer withdrew the request; the case is closed.".into(),
        ),
        Notice::WithdrawalUnclear => (
            "Reply seems to withdraw".into(),
            "The requester's reply seems to cancel or withdraw, without the explicit WITHDRAW. The request stays open; the requester was asked to reply WITHDRAW if they want to withdraw it. Read the reply and carry on with the request unless they do.".into(),
        ),
        Notice::ConsumerWrote => (
            "New message in the case".into(),
            "A message arrived in this case that needs a person to read it. It is stored on the case; the original is in the mailbox.".into(),
        ),
        Notice::DeadlineApproaching => (
            "Due within 7 days".into(),
            "The response to this request is due soon.".into(),
        ),
        Notice::Overdue => (
            "Overdue".into(),
            "The response to this request is overdue.".into(),
        ),
        Notice::DeliveryFailed => (
            "Delivery failure".into(),
            "A message to the requester could not be delivered. Check the address on the case and contact the requester another way if needed.".into(),
        ),
    }
}

/// Opens a case for a request whose message row (`message_row`) is already
/// written, and links the row (and its attachments) to it. Intake and the
/// team's `#open` share it. `None`: a further case opened from a message that
/// already belongs to another (an opt-out that also asks to delete); the row
/// stays with the first. `agent` is [`classify::agent_of`] of the message,
/// worked out by the caller: intake does it on its parse thread.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn open_request(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    inbound: &Inbound,
    kind: Kind,
    sender: &str,
    agent: &classify::AgentInfo,
    received_at: DateTime<Utc>,
    mail: RequestMail<'_>,
    carry: &mut Carry,
    now: DateTime<Utc>,
) -> Result<CaseId, CaseworkError> {
    let year = store::cases::id_year(received_at, room.policy.timezone);
    let seq = carry
        .next_number(conn, &room.config.policy.case_prefix, year)
        .await?;
    let id = CaseId::new(&room.config.policy.case_prefix, year, seq);
    let declarations = crate::attachments::declaration_count(agent.is_agent, &inbound.attachments);
    let vouched = agent.is_agent
        && crate::address::authres::vouched_known_agent(
            sender,
            &room.config.agents.known_domains,
            &room.team().trusted_authserv_ids,
            &inbound.authentication_results,
        );
    let req = NewRequest {
        kind,
        requester: sender.to_string(),
        agent: agent.is_agent.then(|| sender.to_string()),
        consumer: if agent.is_agent {
            agent.consumer_email.clone()
        } else {
            Some(sender.to_string())
        },
        consumer_name: if agent.is_agent {
            agent.consumer_name.clone()
        } else {
            inbound.from.as_ref().and_then(|a| a.name.clone())
        },
        received_at,
        declarations,
    };
    let t = crate::cases::open(
        id.clone(),
        crate::ids::verification_code(),
        req,
        &room.policy,
        now,
    );
    let stored = commit_new_with(
        conn,
        room,
        &t,
        &NewThread {
            subject: &inbound.subject,
            root: inbound.message_id.as_deref(),
            manner: if agent.is_agent {
                crate::cases::Manner::Agent
            } else {
                crate::cases::Manner::Email
            },
            trigger: if vouched {
                Trigger::VouchedAgent
            } else {
                Trigger::Automatic
            },
        },
        match mail {
            RequestMail::New(m) => Some(m),
            RequestMail::Stored(_) | RequestMail::Sibling => None,
        },
        carry,
        // Only a request's own first reply waits in `carry`: a team's
        // `#open` goes on with more statements, and an agent's attachments
        // are recorded right after the case.
        matches!(mail, RequestMail::New(_)) && inbound.attachments.is_empty(),
        now,
    )
    .await?;
    let message_row = match mail {
        RequestMail::Stored(row) => {
            carry.flush(conn).await?;
            store::messages::set_case(conn, row, &id).await?;
            Some(row)
        }
        RequestMail::New(_) => stored,
        RequestMail::Sibling => None,
    };
    if let Some(message_row) = message_row
        && !inbound.attachments.is_empty()
    {
        carry.flush(conn).await?;
        crate::attachments::record(conn, room, &t.case, message_row, &inbound.attachments, now)
            .await?;
    }
    info!(case = %id, kind = %kind, agent = agent.is_agent, "Opened case.");
    Ok(id)
}
