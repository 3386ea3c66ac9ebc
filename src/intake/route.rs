//! What one inbound message is, decided without I/O (issue 9 item 4).
//!
//! [`route`] takes the parsed message and the [`Facts`] intake looked up for
//! it beforehand (was it seen before, which of the cases it names exist, who
//! the sender is to us) and returns the [`Route`]: what kind of mail it is,
//! which case it belongs to, and which party wrote it. Intake then only
//! carries the route out. The order of the checks is the order of the
//! branches in the table test below; each row there is one route.

use crate::cases::{Case, Kind};
use crate::ids::{CaseId, Purpose, Verified};
use crate::message::{AutoKind, Inbound, MimeExcess};
use crate::team::mail::Scope;

use super::Target;

/// What intake looked up about a message before deciding: the store, the
/// keys, the config. Plain data, so a table test can write it out.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The same message (bytes, or Message-ID with sender and subject) was
    /// taken in before and filed there.
    pub seen_before: Option<Target>,
    /// Only the header block was fetched (over `imap.max_message_bytes`).
    pub headers_only: bool,
    /// The server listed the message but never returned its body.
    pub body_missing: bool,
    /// Size of the whole message as the server reported it.
    pub size: u64,
    /// `agents.max_attachment_bytes`.
    pub max_attachment_bytes: u64,
    /// The server's BODYSTRUCTURE showed an attachment over that limit, so
    /// only the headers were fetched (`headers_only` is set too).
    pub refused_part: Option<super::RefusedPart>,
    /// Who wrote it (intake's `sender_of`): the From address, or the
    /// Reply-To of mail sent as the mailbox by someone else; "" when missing.
    pub sender: String,
    /// The sender is the mailbox's own address.
    pub sender_is_own: bool,
    /// The message's own Message-ID is one of ours (HMAC verified).
    pub written_by_us: bool,
    /// The sender is in `[team] members`.
    pub sender_is_member: bool,
    /// The sender may give team commands (member, and DKIM when required).
    pub member_authorized: bool,
    /// The sender is in `agents.known_domains` and our MX authenticated it.
    pub sender_known_agent: bool,
    /// The sender's address can be answered (parses as a mailbox).
    pub sender_answerable: bool,
    /// Our Message-IDs (HMAC verified) in In-Reply-To and References.
    pub referenced: Vec<Verified>,
    /// Our references written anywhere in the raw message (a forwarded copy
    /// of a team notice quotes its reference line).
    pub in_text: Vec<Verified>,
    /// The case the message threads to
    /// ([`crate::classify::thread_case_id`]), whether or not it exists.
    pub thread: Option<CaseId>,
    /// How many team command lines the new text holds.
    pub command_lines: usize,
    /// The cases the message names (thread, notice, reference) that exist.
    pub cases: Vec<Case>,
    /// The outbox row a delivery report is about, if it is ours.
    pub reported: Option<Reported>,
    /// The kind the subject rules give (`[[rules]]`).
    pub subject_kind: Option<Kind>,
    /// The kind the body reads like, when no rule matched.
    pub reads_like: Option<Kind>,
}

/// The outbox row a delivery report names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub outbox: i64,
    pub case: Option<CaseId>,
    /// It was mail to the consumer (not team mail).
    pub to_consumer: bool,
}

impl Facts {
    /// The case `id`, if it exists.
    pub fn case(&self, id: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.id == id)
    }

    /// The case the message threads to, if it exists.
    fn thread_case(&self) -> Option<&Case> {
        self.case(self.thread.as_deref()?)
    }

    /// One of our Message-IDs it answers names this case.
    fn answers(&self, case: &Case) -> bool {
        self.referenced
            .iter()
            .any(|v| v.subject_id == case.id.as_str())
    }

    /// The thread case, when the message may touch it: it answers one of
    /// ours on that case, or comes from a party of the case.
    fn own_case(&self) -> Option<CaseId> {
        self.thread_case()
            .filter(|c| self.answers(c) || c.is_party(&self.sender))
            .map(|c| c.id.clone())
    }
}

/// Who wrote a message, as far as intake is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// A consumer: a party of the case, or anyone writing in without one.
    Consumer,
    /// The case's agent, in `agents.known_domains` and authenticated by our
    /// MX: keeps an agent's exemption from the per-sender limit.
    KnownAgent,
    /// A member of the privacy team.
    TeamMember,
    /// Automatic mail or a delivery report: never answered.
    Automatic,
    /// The mailbox's own address.
    Mailbox,
    /// Someone who is not a party of the case the message names.
    Stranger,
}

/// Why a message is refused by size (SPEC §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The server never returned the body; `size` as it listed it.
    BodyMissing { size: u64 },
    /// An attachment over `agents.max_attachment_bytes`.
    Attachment {
        filename: String,
        bytes: u64,
        max: u64,
    },
    /// An attachment over `agents.max_attachment_bytes`, known from the
    /// message's BODYSTRUCTURE: the body was never fetched. `at_least` is
    /// the smallest size it can decode to; `size` the whole message's.
    AttachmentByStructure {
        filename: Option<String>,
        at_least: u64,
        max: u64,
        size: u64,
    },
    /// The message is over `imap.max_message_bytes`.
    Message { size: u64 },
}

/// What kind of mail a message is, with the case it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mail {
    /// Seen before: filed where the first copy went, no effects.
    Duplicate { target: Target },
    /// Refused by size: recorded from its headers, review, team told.
    Oversize {
        case: Option<CaseId>,
        refusal: Refusal,
    },
    /// Over a MIME cap: kept whole, nothing acted on, review, team told.
    OverMimeCaps {
        case: Option<CaseId>,
        excess: MimeExcess,
    },
    /// A delivery report; `reported` is our outbox row, `None` when it is
    /// about mail we did not send (kept for review).
    DeliveryReport {
        reported: Option<Reported>,
        permanent: bool,
    },
    /// Our own mail come back (a Bcc or a loop): no answer.
    OwnMail,
    /// A reply to a team notice: its commands, if the sender may give them.
    /// Kept for review when the sender is not a member.
    TeamReply {
        scope: Scope,
        case: Option<CaseId>,
        member: bool,
    },
    /// A member's commands that answer no notice: not run, review.
    UnreferencedCommands { case: Option<CaseId>, lines: usize },
    /// A member's own mail to a party of the case: correspondence.
    Correspondence { case: CaseId },
    /// A copy of a team notice come back as new mail: recorded, no notice;
    /// review unless a member or the mailbox sent it.
    ReturnedNotice { case: Option<CaseId>, trusted: bool },
    /// Automatic mail: on the case it answers, else review (and the team is
    /// told when its subject reads like a `request`).
    Automatic {
        kind: AutoKind,
        case: Option<CaseId>,
        request: Option<Kind>,
    },
    /// The case tag from someone who is not a party: review, team told.
    ForeignTag { case: CaseId },
    /// A reply in a case thread from a party of the case (or answering our
    /// Message-ID on it, `by_reference`).
    Reply { case: CaseId, by_reference: bool },
    /// A new request of this kind.
    Request { kind: Kind },
    /// For a person: review, with the kind it reads like.
    Review {
        why: &'static str,
        suggestion: Option<Kind>,
    },
}

/// The decision for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub mail: Mail,
    pub party: Party,
}

/// Review reason: mail from the mailbox's address not written by the daemon.
pub(crate) const NOT_OURS: &str = "it is sent from the mailbox's own address but not by the daemon";
/// Review reason: a request nobody can answer.
pub(crate) const UNANSWERABLE: &str = "a request whose sender address cannot be answered";
/// Review reason: nothing matched.
pub(crate) const UNMATCHED: &str = "no subject rule matched and it is not a reply in a case thread";

/// Decides what one message is, in order: a duplicate, too big, over a MIME
/// cap, a delivery report, from our own address, a reply to a team notice, a
/// team member's own mail, a returned team notice, automatic mail, a reply in
/// a case thread, a new request — or, failing all, a message for review.
/// Never drops anything.
pub fn route(inbound: &Inbound, facts: &Facts) -> Route {
    let mail = mail(inbound, facts);
    let party = party(inbound, facts, &mail);
    Route { mail, party }
}

fn mail(inbound: &Inbound, facts: &Facts) -> Mail {
    if let Some(target) = facts.seen_before {
        return Mail::Duplicate { target };
    }
    let too_big = inbound
        .attachments
        .iter()
        .find(|a| a.size() > facts.max_attachment_bytes);
    if facts.headers_only || too_big.is_some() {
        let refusal = match too_big {
            _ if facts.body_missing => Refusal::BodyMissing { size: facts.size },
            Some(a) => Refusal::Attachment {
                filename: a.filename.clone(),
                bytes: a.size(),
                max: facts.max_attachment_bytes,
            },
            None => match &facts.refused_part {
                Some(part) => Refusal::AttachmentByStructure {
                    filename: part.filename.clone(),
                    at_least: part.at_least,
                    max: facts.max_attachment_bytes,
                    size: facts.size,
                },
                None => Refusal::Message { size: facts.size },
            },
        };
        return Mail::Oversize {
            case: facts.own_case(),
            refusal,
        };
    }
    if let Some(excess) = inbound.over_limit {
        return Mail::OverMimeCaps {
            case: facts.own_case(),
            excess,
        };
    }
    if let Some(dsn) = &inbound.dsn {
        return Mail::DeliveryReport {
            reported: facts.reported.clone(),
            permanent: dsn.permanent,
        };
    }
    if facts.sender_is_own {
        if facts.written_by_us {
            return Mail::OwnMail;
        }
        // A web form that sends as the mailbox, without Reply-To.
        return Mail::Review {
            why: NOT_OURS,
            suggestion: facts.subject_kind,
        };
    }
    if let Some(scope) = Scope::from_references(&facts.referenced) {
        let case = match &scope {
            Scope::Case(id) => facts.case(id).map(|c| c.id.clone()),
            _ => None,
        };
        return Mail::TeamReply {
            scope,
            case,
            member: facts.sender_is_member,
        };
    }
    if facts.sender_is_member {
        let case = facts.thread_case();
        if facts.command_lines > 0 {
            return Mail::UnreferencedCommands {
                case: case.map(|c| c.id.clone()),
                lines: facts.command_lines,
            };
        }
        // The member's own mail to a party of the case, when the sender
        // passes the same checks as a command (DKIM if required).
        if let Some(case) = case
            && facts.member_authorized
            && inbound
                .to
                .iter()
                .chain(&inbound.cc)
                .any(|a| case.is_party(&a.addr))
        {
            return Mail::Correspondence {
                case: case.id.clone(),
            };
        }
    }
    if let Some(returned) = facts.in_text.iter().find(|v| v.purpose != Purpose::Reply) {
        let case = match returned.purpose {
            Purpose::Notice | Purpose::Result => facts.case(&returned.subject_id),
            _ => None,
        };
        return Mail::ReturnedNotice {
            case: case.map(|c| c.id.clone()),
            trusted: facts.sender_is_member || facts.sender_is_own,
        };
    }
    if let Some(kind) = inbound.auto {
        let case = facts
            .referenced
            .first()
            .and_then(|v| facts.case(&v.subject_id))
            .map(|c| c.id.clone());
        // A request sent through a no-reply web form still reaches a person.
        let request = if case.is_none() {
            facts.subject_kind
        } else {
            None
        };
        return Mail::Automatic {
            kind,
            case,
            request,
        };
    }
    if let Some(case) = facts.thread_case() {
        let id = case.id.clone();
        let by_reference = facts.answers(case);
        if !by_reference && !case.is_party(&facts.sender) {
            return Mail::ForeignTag { case: id };
        }
        return Mail::Reply {
            case: id,
            by_reference,
        };
    }
    if let Some(kind) = facts.subject_kind {
        if !facts.sender_answerable {
            return Mail::Review {
                why: UNANSWERABLE,
                suggestion: Some(kind),
            };
        }
        return Mail::Request { kind };
    }
    Mail::Review {
        why: UNMATCHED,
        suggestion: facts.reads_like,
    }
}

/// Who wrote it: the mailbox, automatic mail, a team member, the case's
/// known agent, a stranger to the case it names, else a consumer.
fn party(inbound: &Inbound, facts: &Facts, mail: &Mail) -> Party {
    if facts.sender_is_own {
        return Party::Mailbox;
    }
    if inbound.auto.is_some() || inbound.dsn.is_some() {
        return Party::Automatic;
    }
    if facts.sender_is_member {
        return Party::TeamMember;
    }
    match mail {
        Mail::ForeignTag { .. } => Party::Stranger,
        Mail::Reply { case, .. } => {
            let agent = facts.case(case).and_then(|c| c.agent.as_deref());
            if agent == Some(facts.sender.as_str()) && facts.sender_known_agent {
                Party::KnownAgent
            } else {
                Party::Consumer
            }
        }
        _ => Party::Consumer,
    }
}

#[cfg(test)]
mod tests;
