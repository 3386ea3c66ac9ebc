//! `cases list|show|act` (SPEC §9). The JSON shapes are a contract: tests and
//! operators' scripts read them.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{CasesCommand, Failure, ListArgs};
use crate::cases::Case;
use crate::cases::engine::Actor;
use crate::mailroom::Mailroom;
use crate::store::{self, CaseFilter, EventRow, MessageRow};

/// One entry of `cases list --json`.
#[derive(Debug, Serialize)]
pub struct CaseJson {
    pub id: String,
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
pub struct CaseDetailJson {
    #[serde(flatten)]
    pub case: CaseJson,
    pub events: Vec<EventJson>,
    pub messages: Vec<MessageJson>,
    pub attachments: Vec<AttachmentJson>,
}

#[derive(Debug, Serialize)]
pub struct EventJson {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct MessageJson {
    pub direction: String,
    pub message_id: Option<String>,
    pub subject: String,
    pub at: String,
    pub template: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AttachmentJson {
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

pub async fn run(room: &Mailroom, cmd: CasesCommand) -> Result<ExitCode, Failure> {
    match cmd {
        CasesCommand::List(args) => list(room, args).await,
        CasesCommand::Show { id, json } => show(room, &id, json).await,
        CasesCommand::Act { id, action, by } => {
            let who = by.unwrap_or_else(|| {
                format!(
                    "cli:{}",
                    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
                )
            });
            let command = action.to_command();
            match crate::casework::act(room, &id, Actor::Cli(who), command, Utc::now()).await {
                Ok(t) => {
                    println!("{}: {}", t.case.id, t.case.state);
                    Ok(ExitCode::SUCCESS)
                }
                Err(crate::casework::CaseworkError::Refused(r)) => {
                    Err(Failure::Usage(anyhow::anyhow!("{id}: refused: {r}")))
                }
                Err(crate::casework::CaseworkError::NoSuchCase(id)) => {
                    Err(Failure::Usage(anyhow::anyhow!("no case {id}")))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

async fn list(room: &Mailroom, args: ListArgs) -> Result<ExitCode, Failure> {
    let filter = CaseFilter {
        state: args.state,
        kind: args.kind,
        overdue: args.overdue,
        due_within_days: args.due_within,
        open_only: false,
    };
    let mut conn = room.store.conn().await?;
    let cases = store::cases::list(&mut conn, &filter, Utc::now()).await?;
    if args.json {
        let rows: Vec<CaseJson> = cases.iter().map(CaseJson::from).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<18} {:<8} {:<24} {:<12} {:<12} requester",
            "ID", "KIND", "STATE", "RECEIVED", "DUE"
        );
        let tz = room.policy.timezone;
        for c in &cases {
            println!(
                "{:<18} {:<8} {:<24} {:<12} {:<12} {}",
                c.id,
                c.kind.as_str(),
                c.state.as_str(),
                c.received_at.with_timezone(&tz).format("%Y-%m-%d"),
                c.due_at.with_timezone(&tz).format("%Y-%m-%d"),
                c.requester
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(room: &Mailroom, id: &str, json: bool) -> Result<ExitCode, Failure> {
    let mut conn = room.store.conn().await?;
    let case = store::cases::get(&mut conn, id)
        .await?
        .ok_or_else(|| Failure::Usage(anyhow::anyhow!("no case {id}")))?;
    let events = store::events::for_case(&mut conn, id).await?;
    let messages = store::messages::for_case(&mut conn, id).await?;
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
    let c = &detail.case;
    println!("{}  {}  {}", c.id, c.kind, c.state);
    println!("requester: {}", c.requester);
    if let Some(a) = &c.agent {
        println!("agent:     {a}");
    }
    if let Some(a) = &c.consumer {
        println!("consumer:  {a}");
    }
    // Dates as the mail states them (local, end of day), then the instant.
    let tz = room.policy.timezone;
    let local = |at| crate::templates::format_date(at, tz);
    println!("received:  {} ({})", local(case.received_at), c.received_at);
    println!(
        "due:       end of {} {} ({}){}",
        local(case.due_at),
        tz.name(),
        c.due_at,
        if c.extended { ", extended" } else { "" }
    );
    if let Some(resolution) = &case.resolution {
        println!("resolution: {resolution}");
    }
    if let Some(basis) = &case.denial_reason {
        println!("basis:     {basis}");
    }
    println!("\nEvents:");
    for e in &detail.events {
        println!("  {}  {:<24} {:<22} {}", e.at, e.actor, e.action, e.detail);
    }
    println!("\nMessages:");
    for m in &detail.messages {
        println!(
            "  {}  {:<3} {}{}",
            m.at,
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
