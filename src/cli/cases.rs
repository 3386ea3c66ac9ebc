//! `cases list|show|act` (SPEC §9). The JSON shapes are a contract: tests and
//! operators' scripts read them.

use std::process::ExitCode;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::{Action, Failure, ListArgs, StateFilter};
use crate::cases::Case;
use crate::cases::engine::Actor;
use crate::config::Config;
use crate::ids::CaseId;
use crate::mailroom::Mailroom;
use crate::store::{self, CaseFilter, EventRow, MessageRow, Store};

/// One entry of `cases list --json`.
#[derive(Debug, Serialize)]
pub(crate) struct CaseJson {
    pub id: crate::ids::CaseId,
    pub kind: String,
    pub state: String,
    pub requester: String,
    pub agent: Option<String>,
    pub consumer: Option<String>,
    pub consumer_name: Option<String>,
    pub received_at: String,
    pub acknowledged_at: Option<String>,
    pub ack_due_at: String,
    pub due_at: String,
    pub extended: bool,
    pub verified_at: Option<String>,
    pub closed_at: Option<String>,
    pub resolution: Option<String>,
    pub denial_reason: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl From<&Case> for CaseJson {
    fn from(c: &Case) -> Self {
        CaseJson {
            id: c.id.clone(),
            kind: c.kind.as_str().into(),
            state: c.state.as_str().into(),
            requester: c.requester.clone(),
            agent: c.agent.clone(),
            consumer: c.consumer.clone(),
            consumer_name: c.consumer_name.clone(),
            received_at: rfc3339(c.received_at),
            acknowledged_at: c.acknowledged_at.map(rfc3339),
            ack_due_at: rfc3339(c.ack_due_at),
            due_at: rfc3339(c.due_at),
            extended: c.extended,
            verified_at: c.verified_at.map(rfc3339),
            closed_at: c.closed_at.map(rfc3339),
            resolution: c.resolution.map(|r| r.as_str().to_string()),
            denial_reason: c.denial_reason.clone(),
        }
    }
}

/// `cases show --json`: the case plus its history.
#[derive(Debug, Serialize)]
pub(crate) struct CaseDetailJson {
    #[serde(flatten)]
    pub case: CaseJson,
    pub events: Vec<EventJson>,
    pub messages: Vec<MessageJson>,
    pub attachments: Vec<AttachmentJson>,
}

#[derive(Debug, Serialize)]
pub(crate) struct EventJson {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct MessageJson {
    pub direction: String,
    pub message_id: Option<String>,
    pub subject: String,
    pub at: String,
    pub template: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AttachmentJson {
    pub filename: String,
    pub sha256: String,
    pub size: i64,
    pub content_type: String,
    pub status: String,
}

impl From<store::attachments::Document> for AttachmentJson {
    fn from(d: store::attachments::Document) -> Self {
        AttachmentJson {
            filename: d.filename,
            sha256: d.sha256,
            size: d.size,
            content_type: d.sniffed_type,
            status: d.status,
        }
    }
}

impl From<EventRow> for EventJson {
    fn from(e: EventRow) -> Self {
        EventJson {
            at: rfc3339(e.at),
            actor: e.actor,
            action: e.action,
            detail: e.detail,
        }
    }
}

impl From<MessageRow> for MessageJson {
    fn from(m: MessageRow) -> Self {
        MessageJson {
            direction: m.direction,
            message_id: m.message_id,
            subject: m.subject,
            at: rfc3339(m.at),
            template: m.template,
        }
    }
}

/// `cases act`: takes a decision through the case engine (needs the templates
/// for the mail it sends).
pub async fn act(
    room: &Mailroom,
    id: &str,
    action: &Action,
    by: Option<String>,
) -> Result<ExitCode, Failure> {
    let who = match by {
        Some(by) => by,
        None => match invoking_person() {
            Some(name) => format!("cli:{name}"),
            None => {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "cannot tell who takes this decision: SUDO_USER, the login UID \
                     (/proc/self/loginuid) and USER are all unset, and the case history must \
                     name a person; fix: pass --by NAME, e.g. --by alice@example.com"
                )));
            }
        },
    };
    let Some(case_id) = CaseId::parse_any(id) else {
        return Err(no_case(&room.config, id));
    };
    let command = action.to_command();
    match crate::casework::act(room, &case_id, Actor::Cli(who), command, Utc::now()).await {
        Ok(t) => {
            println!("{}: {}", t.case.id, t.case.state);
            Ok(ExitCode::SUCCESS)
        }
        Err(crate::casework::CaseworkError::Refused(r)) => {
            Err(Failure::Usage(anyhow::anyhow!("{id}: refused: {r}")))
        }
        Err(crate::casework::CaseworkError::NoSuchCase(id)) => Err(no_case(&room.config, &id)),
        Err(e) => Err(e.into()),
    }
}

/// The person running the command: `SUDO_USER` (an admin using sudo), else
/// the login UID's user (survives `su`), else `USER`. `None` when none is
/// known, e.g. from a service unit without a login session.
pub(crate) fn invoking_person() -> Option<String> {
    let non_empty = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    non_empty(std::env::var("SUDO_USER").ok())
        .or_else(|| non_empty(login_uid().and_then(user_name)))
        .or_else(|| non_empty(std::env::var("USER").ok()))
}

/// `/proc/self/loginuid`, unless unset (4294967295: no login session).
fn login_uid() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/self/loginuid").ok()?;
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|uid| *uid != u32::MAX)
}

/// The user name of `uid` through the system's user database (NSS, so LDAP
/// and sssd users too), via `getent passwd UID`.
fn user_name(uid: u32) -> Option<String> {
    let out = std::process::Command::new("getent")
        .args(["passwd", &uid.to_string()])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    line.split(':')
        .next()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// A case ID that names no case: say what one looks like.
pub(crate) fn no_case(config: &Config, id: &str) -> Failure {
    let year = Utc::now()
        .with_timezone(&config.timezone().unwrap_or(chrono_tz::UTC))
        .year();
    let example = crate::ids::format_case_id(&config.policy.case_prefix, year, 1);
    let problem = if crate::ids::parse_case_id(id).is_some() {
        format!("no case {id}")
    } else {
        format!("{id:?} is not a case ID")
    };
    Failure::Usage(anyhow::anyhow!(
        "{problem}; a case ID looks like {example} (policy.case_prefix, the year it was \
         received, a number); `privacy-mailroom cases list` shows them"
    ))
}

/// A time as people on the team read it: local to `policy.timezone`.
fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
}

/// `cases list`. It and `cases show` open the database only (no templates,
/// no keys), so they work while a template folder is broken or missing.
pub async fn list(config: &Config, args: ListArgs) -> Result<ExitCode, Failure> {
    let store = Store::open(&config.storage.database).await?;
    let result = list_in(config, &store, args).await;
    store.close().await;
    result
}

/// `cases show`.
pub async fn show(config: &Config, id: &str, json: bool) -> Result<ExitCode, Failure> {
    let store = Store::open(&config.storage.database).await?;
    let result = show_in(config, &store, id, json).await;
    store.close().await;
    result
}

async fn list_in(config: &Config, store: &Store, args: ListArgs) -> Result<ExitCode, Failure> {
    let (state, open_only) = match args.state {
        Some(StateFilter::Open) => (None, true),
        Some(StateFilter::Is(s)) => (Some(s), false),
        None => (None, false),
    };
    let filter = CaseFilter {
        state,
        kind: args.kind,
        overdue: args.overdue,
        due_within_days: args.due_within,
        open_only,
    };
    let mut conn = store.conn().await?;
    let cases = store::cases::list(&mut conn, &filter, Utc::now()).await?;
    if args.json {
        let rows: Vec<CaseJson> = cases.iter().map(CaseJson::from).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<18} {:<8} {:<24} {:<12} {:<12} requester",
            "ID", "KIND", "STATE", "RECEIVED", "DUE"
        );
        let tz = config.timezone().map_err(|e| Failure::Usage(e.into()))?;
        for c in &cases {
            // A closed case has no deadline left to show.
            let due = if c.state.is_final() {
                "-".to_string()
            } else {
                c.due_at.with_timezone(&tz).format("%Y-%m-%d").to_string()
            };
            println!(
                "{:<18} {:<8} {:<24} {:<12} {:<12} {}",
                c.id,
                c.kind.as_str(),
                c.state.as_str(),
                c.received_at.with_timezone(&tz).format("%Y-%m-%d"),
                due,
                c.requester
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn show_in(
    config: &Config,
    store: &Store,
    id: &str,
    json: bool,
) -> Result<ExitCode, Failure> {
    let Some(case_id) = CaseId::parse_any(id) else {
        return Err(no_case(config, id));
    };
    let id = &case_id;
    let mut conn = store.conn().await?;
    let Some(case) = store::cases::get(&mut conn, id).await? else {
        return Err(no_case(config, id));
    };
    let events = store::events::for_case(&mut conn, id).await?;
    let messages = store::messages::for_case(&mut conn, id).await?;
    let event_times: Vec<DateTime<Utc>> = events.iter().map(|e| e.at).collect();
    let message_times: Vec<DateTime<Utc>> = messages.iter().map(|m| m.at).collect();
    let attachments: Vec<AttachmentJson> = store::attachments::for_case(&mut conn, id)
        .await?
        .into_iter()
        .map(AttachmentJson::from)
        .collect();
    let detail = CaseDetailJson {
        case: CaseJson::from(&case),
        events: events.into_iter().map(EventJson::from).collect(),
        messages: messages.into_iter().map(MessageJson::from).collect(),
        attachments,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&detail)?);
        return Ok(ExitCode::SUCCESS);
    }
    let tz = config.timezone().map_err(|e| Failure::Usage(e.into()))?;
    let c = &detail.case;
    println!("{}  {}  {}", c.id, c.kind, c.state);
    println!("requester: {}", c.requester);
    if let Some(a) = &c.agent {
        println!("agent:     {a}");
    }
    if let Some(a) = &c.consumer {
        println!("consumer:  {a}");
    }
    // Dates as the mail states them (the local day in policy.timezone), with
    // the local time; JSON keeps the RFC 3339 instants.
    let day = |at| crate::templates::format_date(at, tz);
    println!(
        "received:  {} ({})",
        day(case.received_at),
        local(case.received_at, tz)
    );
    match case.closed_at {
        // A closed case (an opt-out is answered on arrival) has no due date.
        Some(closed) if case.state.is_final() => {
            println!("closed:    {} ({})", day(closed), local(closed, tz))
        }
        _ if case.state.is_final() => println!("closed:    yes"),
        _ => println!(
            "due:       end of {} ({}){}",
            day(case.due_at),
            local(case.due_at, tz),
            if c.extended { ", extended" } else { "" }
        ),
    }
    if let Some(resolution) = &case.resolution {
        println!("resolution: {resolution}");
    }
    if let Some(basis) = &case.denial_reason {
        println!("basis:     {basis}");
    }
    println!("\nEvents:");
    for (e, row) in detail.events.iter().zip(&event_times) {
        println!(
            "  {}  {:<24} {:<22} {}",
            local(*row, tz),
            e.actor,
            e.action,
            e.detail
        );
    }
    println!("\nMessages:");
    for (m, at) in detail.messages.iter().zip(&message_times) {
        println!(
            "  {}  {:<3} {}{}",
            local(*at, tz),
            m.direction,
            m.subject,
            m.template
                .as_deref()
                .map(|t| format!("  [{t}]"))
                .unwrap_or_default()
        );
    }
    if !detail.attachments.is_empty() {
        println!("\nAttachments:");
        for a in &detail.attachments {
            println!(
                "  {}  {}  {} bytes  {}  {}",
                a.sha256, a.filename, a.size, a.content_type, a.status
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
