//! A team member's reply to a notification: authenticate, run its command
//! lines through the same code path as `cases act`, and answer with a short
//! result mail (SPEC §6). Anyone else gets nothing back (no backscatter); every
//! attempt is an event.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use tracing::{info, warn};

use super::auth::{self, Denied};
use super::commands::{self, CommandLine, TeamCommand};
use crate::cases::Input;
use crate::cases::engine::Actor;
use crate::casework::{self, CaseworkError, Queued};
use crate::ids::{CaseId, Purpose, Verified};
use crate::mailroom::Mailroom;
use crate::message::{Inbound, reply_text};
use crate::outbox::compose::AutoSubmitted;
use crate::store;
use crate::templates::CommandResult;

/// What a notification's Message-ID lets a reply command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A case notice: that case.
    Case(CaseId),
    /// A burst summary: the cases it lists.
    Summary(String),
    /// A review notice: `#open` for that message row.
    Review(i64),
}

impl Scope {
    /// The scope of the first notification the message references.
    pub(crate) fn from_references(referenced: &[Verified]) -> Option<Scope> {
        referenced.iter().find_map(|v| match v.purpose {
            // We signed these IDs ourselves.
            Purpose::Notice => Some(Scope::Case(CaseId::from_stored(v.subject_id.clone()))),
            Purpose::Summary => Some(Scope::Summary(v.subject_id.clone())),
            Purpose::Review => v.subject_id.parse().ok().map(Scope::Review),
            Purpose::Result => Some(if crate::ids::parse_case_id(&v.subject_id).is_some() {
                Scope::Case(CaseId::from_stored(v.subject_id.clone()))
            } else {
                Scope::Summary(v.subject_id.clone())
            }),
            Purpose::Reply | Purpose::Digest => None,
        })
    }

    fn case_id(&self) -> Option<&CaseId> {
        match self {
            Scope::Case(id) => Some(id),
            _ => None,
        }
    }

    fn subject_id(&self) -> String {
        match self {
            Scope::Case(id) => id.to_string(),
            Scope::Summary(id) => id.clone(),
            Scope::Review(row) => row.to_string(),
        }
    }
}

/// What became of a team mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Commands ran (or were refused one by one); a result mail went to the member.
    Commands { executed: usize, refused: usize },
    /// A member's reply without command lines: recorded on the case.
    Discussion,
    /// Not accepted: not executed, recorded.
    Denied(Denied),
}

/// Handles a reply to a notification. The caller has written the message row.
/// A `#open` numbers its case from `carry`, the transaction's own (see
/// [`casework::Carry`]).
pub(crate) async fn handle(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    inbound: &Inbound,
    scope: &Scope,
    carry: &mut casework::Carry,
    now: DateTime<Utc>,
) -> Result<Handled, CaseworkError> {
    // Who commands is the From address, never a Reply-To: membership and
    // DKIM (`team.require_dkim`) vouch for the From. (Intake's `sender_of`
    // takes the Reply-To of mail sent *as* the mailbox, to answer a web
    // form; commands in such mail are refused here, the mailbox being no
    // member.)
    let sender = inbound
        .from
        .as_ref()
        .map(|a| a.addr.clone())
        .unwrap_or_default();
    let lines = commands::parse(
        &reply_text::new_text(inbound.head()),
        &room.config.policy.case_prefix,
    );
    if let Err(denied) = auth::authorize(&room.team(), &sender, &inbound.authentication_results) {
        let detail = format!("{} command line(s) not executed: {denied}", lines.len());
        store::events::append(
            conn,
            scope.case_id().map(CaseId::as_str),
            now,
            &sender,
            crate::cases::Action::CommandRefused,
            &detail,
        )
        .await?;
        info!(reason = %denied, "Team mail not accepted.");
        // A member whose DKIM failed learns why; a non-member gets nothing.
        if denied == Denied::NoDkimPass && !lines.is_empty() {
            let results = lines
                .iter()
                .map(|l| CommandResult {
                    line: l.line.clone(),
                    case_id: l
                        .case_id
                        .clone()
                        .or_else(|| scope.case_id().cloned())
                        .map(String::from),
                    ok: false,
                    message: denied.to_string(),
                })
                .collect();
            send_result(conn, room, &sender, scope, inbound, results, now).await?;
        }
        return Ok(Handled::Denied(denied));
    }
    if lines.is_empty() {
        store::events::append(
            conn,
            scope.case_id().map(CaseId::as_str),
            now,
            &sender,
            crate::cases::Action::TeamMail,
            "reply to a notification without commands",
        )
        .await?;
        return Ok(Handled::Discussion);
    }
    let mut results = Vec::with_capacity(lines.len());
    for line in &lines {
        results.push(run_line(conn, room, &sender, scope, line, carry, now).await?);
    }
    let executed = results.iter().filter(|r| r.ok).count();
    let refused = results.len() - executed;
    info!(executed, refused, "Team commands handled.");
    send_result(conn, room, &sender, scope, inbound, results, now).await?;
    Ok(Handled::Commands { executed, refused })
}

/// Runs one command line. Every refusal is an event: on the case the line
/// or the notice names when that case exists, else on no case (the engine
/// records its own refusals as `refused`).
async fn run_line(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    sender: &str,
    scope: &Scope,
    line: &CommandLine,
    carry: &mut casework::Carry,
    now: DateTime<Utc>,
) -> Result<CommandResult, CaseworkError> {
    let outcome = line_outcome(conn, room, sender, scope, line, carry, now).await?;
    match outcome {
        LineOutcome::Done(result) => Ok(result),
        LineOutcome::Refused {
            case_id,
            record_on,
            message,
        } => {
            let record_on = match record_on {
                Some(id) => store::cases::get(conn, &id).await?.map(|c| c.id),
                None => None,
            };
            store::events::append(
                conn,
                record_on.as_deref(),
                now,
                sender,
                crate::cases::Action::CommandRefused,
                &format!("{}: {message}", line.line),
            )
            .await?;
            Ok(CommandResult {
                line: line.line.clone(),
                case_id: case_id.map(String::from),
                ok: false,
                message,
            })
        }
    }
}

/// What became of one command line.
enum LineOutcome {
    /// Ran, or refused and already recorded.
    Done(CommandResult),
    /// Refused before reaching a case: `case_id` is what the result mail
    /// names, `record_on` the case the refusal is recorded on.
    Refused {
        case_id: Option<CaseId>,
        record_on: Option<CaseId>,
        message: String,
    },
}

async fn line_outcome(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    sender: &str,
    scope: &Scope,
    line: &CommandLine,
    carry: &mut casework::Carry,
    now: DateTime<Utc>,
) -> Result<LineOutcome, CaseworkError> {
    // A refusal is recorded on the case the line names, else the notice's.
    let known = line.case_id.clone().or_else(|| scope.case_id().cloned());
    let refuse = |case_id: Option<CaseId>, message: String| LineOutcome::Refused {
        case_id,
        record_on: known.clone(),
        message,
    };
    let command = match &line.command {
        Ok(c) => c.clone(),
        Err(why) => return Ok(refuse(line.case_id.clone(), why.clone())),
    };
    if let TeamCommand::Open(kind, open_as) = command {
        let Scope::Review(row) = scope else {
            return Ok(refuse(
                None,
                "`#open` works only in a reply to a review notice".into(),
            ));
        };
        return match open_from_review(conn, room, *row, kind, open_as, carry, now).await? {
            Ok(id) => {
                store::events::append(
                    conn,
                    Some(&id),
                    now,
                    sender,
                    crate::cases::Action::Open,
                    &format!("opened as {kind} from a message in review"),
                )
                .await?;
                Ok(LineOutcome::Done(CommandResult {
                    line: line.line.clone(),
                    case_id: Some(id.into()),
                    ok: true,
                    message: format!("opened a {kind} case and acknowledged it"),
                }))
            }
            Err(why) => Ok(refuse(None, why)),
        };
    }
    let TeamCommand::Case(command) = command else {
        return Ok(refuse(None, "not a case command".into()));
    };
    let named_id = line.case_id.clone();
    let target = match (scope, &named_id) {
        (Scope::Case(id), None) => id.clone(),
        (Scope::Case(id), Some(named)) if named == id => id.clone(),
        (Scope::Case(id), Some(named)) => {
            // Recorded on the notice's case: the named one was not authenticated.
            store::events::append(
                conn,
                Some(id),
                now,
                sender,
                crate::cases::Action::CommandRefused,
                &format!(
                    "{}: names {named}, but the notification is for {id}",
                    line.line
                ),
            )
            .await?;
            return Ok(LineOutcome::Done(CommandResult {
                line: line.line.clone(),
                case_id: Some(named.to_string()),
                ok: false,
                message: format!("this notification authenticates commands for {id} only"),
            }));
        }
        (Scope::Summary(_), None) => {
            return Ok(refuse(
                None,
                "name the case on the line, e.g. `#verify CCPA-2026-00042`".into(),
            ));
        }
        (Scope::Summary(summary), Some(named)) => {
            if !crate::casework::burst::lists(conn, summary, named).await? {
                return Ok(refuse(
                    Some(named.clone()),
                    "this summary does not list that case".into(),
                ));
            }
            named.clone()
        }
        (Scope::Review(_), _) => {
            return Ok(refuse(
                line.case_id.clone(),
                "a review notice takes only `#open KIND` (know, delete, correct, limit or opt_out)"
                    .into(),
            ));
        }
    };
    let input = Input::Team {
        actor: Actor::Team(sender.to_string()),
        command,
    };
    Ok(
        match casework::apply_input(conn, room, &target, input, now).await {
            Ok(t) => LineOutcome::Done(CommandResult {
                line: line.line.clone(),
                case_id: Some(target.to_string()),
                ok: true,
                message: format!(
                    "done: the case is now {}",
                    t.case.state.as_str().replace('_', " ")
                ),
            }),
            Err(CaseworkError::Refused(r)) => LineOutcome::Done(CommandResult {
                line: line.line.clone(),
                case_id: Some(target.to_string()),
                ok: false,
                message: r.to_string(),
            }),
            Err(CaseworkError::NoSuchCase(_)) => {
                refuse(Some(target.clone()), format!("there is no case {target}"))
            }
            Err(e) => return Err(e),
        },
    )
}

/// `#open KIND [from|reply-to]` on a review notice: opens a case from the
/// stored message. The requester is the From address unless the team names
/// the Reply-To, or From is the mailbox itself (a web form sending as us).
async fn open_from_review(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    row: i64,
    kind: crate::cases::Kind,
    open_as: crate::team::commands::OpenAs,
    carry: &mut casework::Carry,
    now: DateTime<Utc>,
) -> Result<Result<crate::ids::CaseId, String>, CaseworkError> {
    let stored = store::messages::stored_inbound(conn, row).await?;
    let Some(stored) = stored else {
        return Ok(Err("the message is no longer stored".into()));
    };
    if let Some(id) = stored.case_id {
        return Ok(Err(format!("the message already belongs to {id}")));
    }
    let at = stored.at;
    let raw = match stored.raw {
        Some(raw) => raw,
        // A large message taken in part by part: its bytes are a file.
        None if stored.raw_file => {
            let blobs = crate::attachments::Blobs::new(&room.config.storage.attachments_dir);
            match blobs.get(&stored.sha256) {
                Ok(raw) => raw,
                Err(e) => {
                    warn!(row, error = %e, "The stored message file cannot be read.");
                    return Ok(Err("the stored copy of that message cannot be read".into()));
                }
            }
        }
        None => return Ok(Err("only the headers of that message were kept".into())),
    };
    let inbound = crate::message::parse(&raw);
    let from = inbound
        .from
        .as_ref()
        .map(|a| a.addr.clone())
        .filter(|a| !room.is_own_address(a));
    let reply_to = inbound.reply_to.as_ref().map(|a| a.addr.clone());
    let sender = match open_as {
        crate::team::commands::OpenAs::ReplyTo => match reply_to {
            Some(r) => r,
            None => return Ok(Err("the message has no Reply-To address".into())),
        },
        crate::team::commands::OpenAs::From => match from.or(reply_to) {
            Some(f) => f,
            None => return Ok(Err("the message has no sender to answer".into())),
        },
    };
    let agent = crate::classify::agent_of(&sender, &inbound, &room.config.agents.known_domains);
    let id = casework::open_request(
        conn,
        room,
        &inbound,
        kind,
        &sender,
        &agent,
        at,
        casework::RequestMail::Stored(row),
        carry,
        now,
    )
    .await?;
    Ok(Ok(id))
}

async fn send_result(
    conn: &mut SqliteConnection,
    room: &Mailroom,
    member: &str,
    scope: &Scope,
    inbound: &Inbound,
    results: Vec<CommandResult>,
    now: DateTime<Utc>,
) -> Result<(), CaseworkError> {
    let mut ctx = room.template_context();
    if let Some(id) = scope.case_id()
        && let Some(case) = store::cases::get(conn, id).await?
    {
        ctx = ctx.with_case(crate::templates::CaseContext::from_case(
            &case,
            room.policy.timezone,
            now,
        ));
    }
    ctx.results = results;
    let rendered = casework::render_context(
        room,
        crate::cases::Template::TeamCommandResult.as_str(),
        &ctx,
    )?;
    let message_id = room.keys.generate(
        Purpose::Result,
        &scope.subject_id(),
        room.message_id_domain(),
    );
    let mut references = inbound.references.clone();
    references.extend(inbound.message_id.iter().cloned());
    let rate_key = member.to_lowercase();
    casework::queue(
        conn,
        room,
        Queued {
            case_id: scope.case_id().map(CaseId::to_string),
            audience: crate::store::outbox::Audience::Team,
            template: crate::cases::Template::TeamCommandResult
                .as_str()
                .to_string(),
            recipients: vec![member.to_string()],
            rate_key,
            rendered,
            message_id,
            in_reply_to: inbound.message_id.clone(),
            references,
            auto_submitted: AutoSubmitted::Replied,
        },
        now,
    )
    .await
}
