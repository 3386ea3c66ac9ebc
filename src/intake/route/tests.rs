//! The routing table: each row is a message and the facts intake found for
//! it, and the route it must take. Every kind of mail has a row (the last
//! test checks), and the rows follow the order in which `route` decides.

use chrono::{TimeZone, Utc};

use super::*;
use crate::cases::State;
use crate::message::{Dsn, MimeExcess};

const C1: &str = "CCPA-2026-00001";
const ALICE: &str = "alice@example.com";
const AGENT: &str = "agent@agency.example";

fn id(s: &str) -> CaseId {
    CaseId::from_stored(s.to_string())
}

fn reference(purpose: Purpose, subject: &str) -> Verified {
    Verified {
        purpose,
        subject_id: subject.to_string(),
    }
}

/// Case C1: requested by Alice, or by her agent for her.
fn case(agent: bool) -> Case {
    let at = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
    Case {
        id: C1.into(),
        kind: Kind::Know,
        state: State::AwaitingVerification,
        requester: if agent { AGENT.into() } else { ALICE.into() },
        agent: agent.then(|| AGENT.into()),
        consumer: Some(ALICE.into()),
        consumer_name: None,
        received_at: at,
        acknowledged_at: Some(at),
        ack_held_until: None,
        ack_due_at: at,
        due_at: at,
        extended: false,
        verified_at: None,
        closed_at: None,
        verification_code: "K7Q2-9XPM".into(),
        reminder_sent_at: None,
        reminder_held_until: None,
        authorization_ok: false,
        resolution: None,
        denial_reason: None,
        closed_reply_sent: false,
        due_soon_notified: false,
        overdue_notified: false,
    }
}

/// C1 exists and the message threads to it (its subject tag).
fn in_thread(f: &mut Facts) {
    f.thread = Some(id(C1));
    f.cases = vec![case(false)];
}

struct Row {
    name: &'static str,
    /// The message as it arrives (headers, blank line, body).
    raw: &'static str,
    /// What intake found out, on top of the defaults of [`facts_for`].
    setup: fn(&mut Inbound, &mut Facts),
    mail: Mail,
    party: Party,
}

/// The facts of an ordinary message from its From address: not seen
/// before, fetched whole, from an answerable stranger.
fn facts_for(inbound: &Inbound, raw: &str) -> Facts {
    Facts {
        size: raw.len() as u64,
        max_attachment_bytes: 10_000_000,
        sender: inbound
            .from
            .as_ref()
            .map(|a| a.addr.clone())
            .unwrap_or_default(),
        sender_answerable: true,
        ..Facts::default()
    }
}

const REQUEST: &str = "From: Alice <alice@example.com>\r\nTo: privacy@company.example\r\nSubject: Request to Know\r\nMessage-ID: <r1@example.com>\r\n\r\nWhat do you hold about me?\r\n";
const TAGGED: &str = "From: Alice <alice@example.com>\r\nTo: privacy@company.example\r\nSubject: Re: [CCPA-2026-00001] Your request\r\nMessage-ID: <r2@example.com>\r\n\r\nHere is my code.\r\n";
const QUESTION: &str = "From: Bob <bob@example.net>\r\nTo: privacy@company.example\r\nSubject: hello\r\nMessage-ID: <q1@example.net>\r\n\r\nPlease erase everything you have on me.\r\n";
const FROM_MEMBER: &str = "From: Tess <tess@company.example>\r\nTo: alice@example.com\r\nBcc: privacy@company.example\r\nSubject: Re: [CCPA-2026-00001] Your request\r\nMessage-ID: <t1@company.example>\r\n\r\nWe are on it.\r\n";
const FROM_MAILBOX: &str = "From: privacy@company.example\r\nTo: privacy@company.example\r\nSubject: Request to Delete\r\nMessage-ID: <f1@company.example>\r\n\r\nForm submission.\r\n";
const AUTO: &str = "From: Alice <alice@example.com>\r\nTo: privacy@company.example\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\nMessage-ID: <a1@example.com>\r\n\r\nAway.\r\n";
const WITH_ATTACHMENT: &str = "From: Agent <agent@agency.example>\r\nTo: privacy@company.example\r\nSubject: Request to Delete\r\nMessage-ID: <d1@agency.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nOn behalf of Alice.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"declaration.pdf\"\r\n\r\n%PDF-1.4 signed\r\n--b--\r\n";

fn table() -> Vec<Row> {
    vec![
        Row {
            name: "the same message again, first filed as processed",
            raw: REQUEST,
            setup: |_, f| {
                f.seen_before = Some(Target::Processed);
                f.subject_kind = Some(Kind::Know);
            },
            mail: Mail::Duplicate {
                target: Target::Processed,
            },
            party: Party::Consumer,
        },
        Row {
            name: "a duplicate follows its first copy to review",
            raw: QUESTION,
            setup: |_, f| f.seen_before = Some(Target::Review),
            mail: Mail::Duplicate {
                target: Target::Review,
            },
            party: Party::Consumer,
        },
        Row {
            name: "over imap.max_message_bytes: headers only",
            raw: REQUEST,
            setup: |_, f| {
                f.headers_only = true;
                f.size = 40_000_000;
                f.subject_kind = Some(Kind::Know);
            },
            mail: Mail::Oversize {
                case: None,
                refusal: Refusal::Message { size: 40_000_000 },
            },
            party: Party::Consumer,
        },
        Row {
            name: "body never returned by the server",
            raw: REQUEST,
            setup: |_, f| {
                f.headers_only = true;
                f.body_missing = true;
                f.size = 2_000;
            },
            mail: Mail::Oversize {
                case: None,
                refusal: Refusal::BodyMissing { size: 2_000 },
            },
            party: Party::Consumer,
        },
        Row {
            name: "an attachment over agents.max_attachment_bytes",
            raw: WITH_ATTACHMENT,
            setup: |_, f| f.max_attachment_bytes = 4,
            mail: Mail::Oversize {
                case: None,
                refusal: Refusal::Attachment {
                    filename: "declaration.pdf".into(),
                    bytes: 15,
                    max: 4,
                },
            },
            party: Party::Consumer,
        },
        Row {
            name: "too big, in the thread of a case it may touch",
            raw: TAGGED,
            setup: |_, f| {
                in_thread(f);
                f.headers_only = true;
                f.size = 40_000_000;
            },
            mail: Mail::Oversize {
                case: Some(id(C1)),
                refusal: Refusal::Message { size: 40_000_000 },
            },
            party: Party::Consumer,
        },
        Row {
            name: "too big, with the tag of a case from a stranger: no case",
            raw: QUESTION,
            setup: |_, f| {
                in_thread(f);
                f.headers_only = true;
                f.size = 40_000_000;
            },
            mail: Mail::Oversize {
                case: None,
                refusal: Refusal::Message { size: 40_000_000 },
            },
            party: Party::Consumer,
        },
        Row {
            name: "over a MIME cap, in a case thread",
            raw: TAGGED,
            setup: |i, f| {
                in_thread(f);
                i.over_limit = Some(MimeExcess::Parts {
                    found: 900,
                    max: 100,
                });
            },
            mail: Mail::OverMimeCaps {
                case: Some(id(C1)),
                excess: MimeExcess::Parts {
                    found: 900,
                    max: 100,
                },
            },
            party: Party::Consumer,
        },
        Row {
            name: "a delivery report about our consumer mail, failed for good",
            raw: AUTO,
            setup: |i, f| {
                i.dsn = Some(Dsn {
                    original_message_id: Some("<ours@company.example>".into()),
                    permanent: true,
                    ..Dsn::default()
                });
                f.reported = Some(Reported {
                    outbox: 7,
                    case: Some(id(C1)),
                    to_consumer: true,
                });
            },
            mail: Mail::DeliveryReport {
                reported: Some(Reported {
                    outbox: 7,
                    case: Some(id(C1)),
                    to_consumer: true,
                }),
                permanent: true,
            },
            party: Party::Automatic,
        },
        Row {
            name: "a delivery report about mail we did not send",
            raw: AUTO,
            setup: |i, _| i.dsn = Some(Dsn::default()),
            mail: Mail::DeliveryReport {
                reported: None,
                permanent: false,
            },
            party: Party::Automatic,
        },
        Row {
            name: "our own mail come back",
            raw: FROM_MAILBOX,
            setup: |_, f| {
                f.sender_is_own = true;
                f.written_by_us = true;
            },
            mail: Mail::OwnMail,
            party: Party::Mailbox,
        },
        Row {
            name: "sent as the mailbox by someone else, no Reply-To",
            raw: FROM_MAILBOX,
            setup: |_, f| {
                f.sender_is_own = true;
                f.subject_kind = Some(Kind::Delete);
            },
            mail: Mail::Review {
                why: NOT_OURS,
                suggestion: Some(Kind::Delete),
            },
            party: Party::Mailbox,
        },
        Row {
            name: "a member's reply to a case notice",
            raw: FROM_MEMBER,
            setup: |_, f| {
                f.referenced = vec![reference(Purpose::Notice, C1)];
                f.cases = vec![case(false)];
                f.sender_is_member = true;
                f.member_authorized = true;
            },
            mail: Mail::TeamReply {
                scope: Scope::Case(C1.into()),
                case: Some(id(C1)),
                member: true,
            },
            party: Party::TeamMember,
        },
        Row {
            name: "a stranger's reply to a review notice",
            raw: QUESTION,
            setup: |_, f| f.referenced = vec![reference(Purpose::Review, "17")],
            mail: Mail::TeamReply {
                scope: Scope::Review(17),
                case: None,
                member: false,
            },
            party: Party::Consumer,
        },
        Row {
            name: "a member's commands that answer no notice",
            raw: FROM_MEMBER,
            setup: |_, f| {
                in_thread(f);
                f.sender_is_member = true;
                f.member_authorized = true;
                f.command_lines = 2;
            },
            mail: Mail::UnreferencedCommands {
                case: Some(id(C1)),
                lines: 2,
            },
            party: Party::TeamMember,
        },
        Row {
            name: "a member's own mail to the requester, the mailbox in Bcc",
            raw: FROM_MEMBER,
            setup: |_, f| {
                in_thread(f);
                f.sender_is_member = true;
                f.member_authorized = true;
            },
            mail: Mail::Correspondence { case: id(C1) },
            party: Party::TeamMember,
        },
        Row {
            name: "a member without DKIM: not correspondence, and not a party",
            raw: FROM_MEMBER,
            setup: |_, f| {
                in_thread(f);
                f.sender_is_member = true;
            },
            mail: Mail::ForeignTag { case: id(C1) },
            party: Party::TeamMember,
        },
        Row {
            name: "a team notice forwarded back by a member's rule",
            raw: FROM_MEMBER,
            setup: |_, f| {
                f.in_text = vec![reference(Purpose::Notice, C1)];
                f.cases = vec![case(false)];
                f.sender_is_member = true;
            },
            mail: Mail::ReturnedNotice {
                case: Some(id(C1)),
                trusted: true,
            },
            party: Party::TeamMember,
        },
        Row {
            name: "a team digest quoted back by a stranger",
            raw: QUESTION,
            setup: |_, f| {
                f.in_text = vec![
                    reference(Purpose::Reply, C1),
                    reference(Purpose::Digest, "2026-03-02"),
                ];
            },
            mail: Mail::ReturnedNotice {
                case: None,
                trusted: false,
            },
            party: Party::Consumer,
        },
        Row {
            name: "an auto-reply to our mail on a case",
            raw: AUTO,
            setup: |i, f| {
                i.auto = Some(AutoKind::AutoSubmitted);
                f.referenced = vec![reference(Purpose::Reply, C1)];
                f.thread = Some(id(C1));
                f.cases = vec![case(false)];
            },
            mail: Mail::Automatic {
                kind: AutoKind::AutoSubmitted,
                case: Some(id(C1)),
                request: None,
            },
            party: Party::Automatic,
        },
        Row {
            name: "a request from a no-reply web form",
            raw: REQUEST,
            setup: |i, f| {
                i.auto = Some(AutoKind::DaemonSender);
                f.subject_kind = Some(Kind::Know);
            },
            mail: Mail::Automatic {
                kind: AutoKind::DaemonSender,
                case: None,
                request: Some(Kind::Know),
            },
            party: Party::Automatic,
        },
        Row {
            name: "the requester answers in the thread (tag)",
            raw: TAGGED,
            setup: |_, f| in_thread(f),
            mail: Mail::Reply {
                case: id(C1),
                by_reference: false,
            },
            party: Party::Consumer,
        },
        Row {
            name: "another address answers our Message-ID",
            raw: QUESTION,
            setup: |_, f| {
                f.referenced = vec![reference(Purpose::Reply, C1)];
                f.thread = Some(id(C1));
                f.cases = vec![case(false)];
            },
            mail: Mail::Reply {
                case: id(C1),
                by_reference: true,
            },
            party: Party::Consumer,
        },
        Row {
            name: "the case's known agent, authenticated by our MX",
            raw: WITH_ATTACHMENT,
            setup: |_, f| {
                f.thread = Some(id(C1));
                f.cases = vec![case(true)];
                f.sender_known_agent = true;
            },
            mail: Mail::Reply {
                case: id(C1),
                by_reference: false,
            },
            party: Party::KnownAgent,
        },
        Row {
            name: "the case's agent, not authenticated: no exemption",
            raw: WITH_ATTACHMENT,
            setup: |_, f| {
                f.thread = Some(id(C1));
                f.cases = vec![case(true)];
            },
            mail: Mail::Reply {
                case: id(C1),
                by_reference: false,
            },
            party: Party::Consumer,
        },
        Row {
            name: "the case tag from a stranger",
            raw: QUESTION,
            setup: |_, f| in_thread(f),
            mail: Mail::ForeignTag { case: id(C1) },
            party: Party::Stranger,
        },
        Row {
            name: "the tag of a case that does not exist, with a request subject",
            raw: REQUEST,
            setup: |_, f| {
                f.thread = Some(id("CCPA-2026-99999"));
                f.subject_kind = Some(Kind::Know);
            },
            mail: Mail::Request { kind: Kind::Know },
            party: Party::Consumer,
        },
        Row {
            name: "a new request",
            raw: REQUEST,
            setup: |_, f| f.subject_kind = Some(Kind::Know),
            mail: Mail::Request { kind: Kind::Know },
            party: Party::Consumer,
        },
        Row {
            name: "a request nobody can answer",
            raw: REQUEST,
            setup: |_, f| {
                f.subject_kind = Some(Kind::Know);
                f.sender_answerable = false;
            },
            mail: Mail::Review {
                why: UNANSWERABLE,
                suggestion: Some(Kind::Know),
            },
            party: Party::Consumer,
        },
        Row {
            name: "no rule matched; the body reads like a deletion request",
            raw: QUESTION,
            setup: |_, f| f.reads_like = Some(Kind::Delete),
            mail: Mail::Review {
                why: UNMATCHED,
                suggestion: Some(Kind::Delete),
            },
            party: Party::Consumer,
        },
    ]
}

#[test]
fn every_row_routes_as_written() {
    let mut failures = Vec::new();
    for row in table() {
        let mut inbound = crate::message::parse(row.raw.as_bytes());
        let mut facts = facts_for(&inbound, row.raw);
        (row.setup)(&mut inbound, &mut facts);
        let got = route(&inbound, &facts);
        let want = Route {
            mail: row.mail,
            party: row.party,
        };
        if got != want {
            failures.push(format!(
                "{}\n  expected {want:?}\n  got      {got:?}",
                row.name
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The name of a kind of mail; a new variant fails to compile here until it
/// is named, and then the test below until the table has a row for it.
fn kind_of(mail: &Mail) -> &'static str {
    match mail {
        Mail::Duplicate { .. } => "duplicate",
        Mail::Oversize { .. } => "oversize",
        Mail::OverMimeCaps { .. } => "over_mime_caps",
        Mail::DeliveryReport { .. } => "delivery_report",
        Mail::OwnMail => "own_mail",
        Mail::TeamReply { .. } => "team_reply",
        Mail::UnreferencedCommands { .. } => "unreferenced_commands",
        Mail::Correspondence { .. } => "correspondence",
        Mail::ReturnedNotice { .. } => "returned_notice",
        Mail::Automatic { .. } => "automatic",
        Mail::ForeignTag { .. } => "foreign_tag",
        Mail::Reply { .. } => "reply",
        Mail::Request { .. } => "request",
        Mail::Review { .. } => "review",
    }
}

#[test]
fn the_table_covers_every_route_and_party() {
    const KINDS: [&str; 14] = [
        "duplicate",
        "oversize",
        "over_mime_caps",
        "delivery_report",
        "own_mail",
        "team_reply",
        "unreferenced_commands",
        "correspondence",
        "returned_notice",
        "automatic",
        "foreign_tag",
        "reply",
        "request",
        "review",
    ];
    let rows = table();
    for kind in KINDS {
        assert!(
            rows.iter().any(|r| kind_of(&r.mail) == kind),
            "no row routes to {kind}"
        );
    }
    for party in [
        Party::Consumer,
        Party::KnownAgent,
        Party::TeamMember,
        Party::Automatic,
        Party::Mailbox,
        Party::Stranger,
    ] {
        assert!(
            rows.iter().any(|r| r.party == party),
            "no row for party {party:?}"
        );
    }
    // Review reasons are constants of the route, each with a row.
    for why in [NOT_OURS, UNANSWERABLE, UNMATCHED] {
        assert!(
            rows.iter()
                .any(|r| matches!(r.mail, Mail::Review { why: w, .. } if w == why)),
            "no row for review reason {why:?}"
        );
    }
}
