//! The one table of the privacy team's commands (SPEC §6). Each [`Verb`]
//! says how it is written by mail, which engine [`Command`] it builds, its
//! `cases act` form, the hint lines the notices show, the consumer mail it
//! may cause and whether purge keeps the detail of its event. The mail
//! parser (`team::commands`), the hints (`templates::commands_for`), the
//! purge allow-list ([`Action::purge_keeps_detail`]) and the tests of the CLI
//! read it, so a command is added here once (docs/architecture.md).

use super::engine::{Command, Template};
use super::{Action, Kind};

/// What a command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamCommand {
    /// A decision on a case.
    Case(Command),
    /// Open a case of this kind from a message in review, with the
    /// requester taken from the address the team chose.
    Open(Kind, OpenAs),
}

/// Whose request a case opened from review is: the message's From address
/// unless the team names the Reply-To (`#open know reply-to`), as for a web
/// form that sends from a no-reply address. The review notice shows both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenAs {
    #[default]
    From,
    ReplyTo,
}

/// `#open KIND [from|reply-to]`.
fn parse_open(arg: &str) -> Result<TeamCommand, String> {
    let lower = arg.to_ascii_lowercase();
    let (kind, rest) = split_word(&lower);
    let kind = match kind {
        "know" => Kind::Know,
        "delete" => Kind::Delete,
        "correct" => Kind::Correct,
        "limit" => Kind::Limit,
        "opt_out" | "opt-out" => Kind::OptOut,
        other => {
            return Err(format!(
                "`#open` takes know, delete, correct, limit or opt_out, not {other:?}"
            ));
        }
    };
    let open_as = match rest.trim() {
        "" | "from" => OpenAs::From,
        "reply-to" | "replyto" | "reply_to" => OpenAs::ReplyTo,
        other => {
            return Err(format!(
                "`#open {kind}` takes `from` (the default) or `reply-to` after the kind, not {other:?}"
            ));
        }
    };
    Ok(TeamCommand::Open(kind, open_as))
}

/// One way to write a command: a line of the hints in notices.
#[derive(Debug, Clone, Copy)]
pub struct Form {
    /// What to type in a reply: `#complete partial REASON`.
    pub usage: &'static str,
    /// The same as `privacy-mailroom cases act ID …` arguments, with the
    /// placeholders of `usage` (`REASON`, `TEXT`); `None` only where the
    /// command needs a message (`#open`).
    pub cli: Option<&'static str>,
    /// What it does, for a case of this kind.
    pub help: fn(Kind) -> &'static str,
}

/// A command word and everything that follows from it.
#[derive(Debug, Clone, Copy)]
pub struct Verb {
    /// The word(s) after `#`, lower case: `verify`, `declaration accept`.
    pub word: &'static str,
    /// Builds the command from the rest of the line (after an optional case
    /// ID), or says why it cannot.
    pub build: fn(&str) -> Result<TeamCommand, String>,
    /// Its forms, in the order the hints list them.
    pub forms: &'static [Form],
    /// The event it records ([`Command::action`]).
    pub action: Action,
    /// The consumer mail it may cause; empty when it only changes the record.
    pub sends: &'static [Template],
    /// The event's detail holds no personal data (a denial's reason is the
    /// §7101 record); purge keeps it. Free text (notes, reasons sent to
    /// the requester) is redacted.
    pub purge_keeps_detail: bool,
    /// The reason may go on over the following lines, up to a blank line.
    pub multi_line: bool,
}

impl Verb {}

pub(crate) const VERIFY_FORM: Form = Form {
    usage: "#verify",
    cli: Some("verify"),
    help: |_| "identity and California residency are confirmed",
};
pub(crate) const DENY_FORM: Form = Form {
    usage: "#deny REASON",
    cli: Some("deny --reason REASON"),
    help: |_| "deny the request; the reason (lines up to a blank line) is sent to the requester",
};
pub(crate) const EXTEND_FORM: Form = Form {
    usage: "#extend REASON",
    cli: Some("extend --reason REASON"),
    help: |_| "take the one extension; the requester is told the reason and the new date",
};
pub(crate) const COMPLETE_FORM: Form = Form {
    usage: "#complete",
    cli: Some("complete"),
    help: |kind| match kind {
        Kind::Delete => "the deletion is done; the consumer is told",
        Kind::Know => "send the completion notice (it does not say how the response reached them)",
        Kind::Correct => "the information was corrected; the consumer is told",
        Kind::Limit | Kind::OptOut => "carried out; the consumer is told",
    },
};
pub(crate) const COMPLETE_SENT_FORM: Form = Form {
    usage: "#complete sent",
    cli: Some("complete --sent-by-team"),
    help: |_| "you sent the response yourself; record it, no further mail",
};
pub(crate) const COMPLETE_PARTIAL_FORM: Form = Form {
    usage: "#complete partial REASON",
    cli: Some("complete --partial --reason REASON"),
    help: |kind| match kind {
        Kind::Delete => {
            "deleted except what REASON names, with the exception that allows keeping it (lines up to a blank line)"
        }
        Kind::Know => {
            "part withheld: REASON says what and why, and which categories were given instead"
        }
        Kind::Correct => "corrected in part: REASON says what was not corrected and why",
        Kind::Limit | Kind::OptOut => "carried out in part: REASON says what was not done and why",
    },
};
pub(crate) const CLOSE_UNVERIFIED_FORM: Form = Form {
    usage: "#close unverified [DETAIL]",
    cli: Some("close --reason unverified"),
    help: |_| "identity could not be verified: the requester is told, counted as denied",
};
pub(crate) const CLOSE_FORM: Form = Form {
    usage: "#close REASON",
    cli: Some("close --reason REASON"),
    help: |_| "close without a further reply (e.g. a duplicate)",
};
pub(crate) const NOTE_FORM: Form = Form {
    usage: "#note TEXT",
    cli: Some("note TEXT"),
    help: |_| "add a note to the case record",
};
pub(crate) const DECLARATION_ACCEPT_FORM: Form = Form {
    usage: "#declaration accept",
    cli: Some("declaration-accept"),
    help: |_| "the agent's signed declaration is in order",
};
pub(crate) const DECLARATION_REJECT_FORM: Form = Form {
    usage: "#declaration reject REASON",
    cli: Some("declaration-reject --reason REASON"),
    help: |_| "the declaration is not sufficient; the agent is told why",
};
pub(crate) const POA_FORM: Form = Form {
    usage: "#poa",
    cli: Some("poa"),
    help: |_| "the agent holds a power of attorney (Probate Code sections 4121-4130)",
};
pub(crate) const OPEN_FORM: Form = Form {
    usage: "#open know|delete|correct|limit|opt_out",
    cli: None,
    help: |_| "open a case of this kind from the message in review (`reply-to` after the kind: the requester is the Reply-To address)",
};

/// Every team command, in the order an unknown command's answer lists them.
pub(crate) const TABLE: &[Verb] = &[
    Verb {
        word: "verify",
        build: |_| Ok(TeamCommand::Case(Command::Verify)),
        forms: &[VERIFY_FORM],
        action: Action::Verify,
        sends: &[Template::DeleteConfirmationRequest],
        purge_keeps_detail: true,
        multi_line: false,
    },
    Verb {
        word: "deny",
        build: |arg| {
            Ok(TeamCommand::Case(Command::Deny {
                reason: arg.to_string(),
            }))
        },
        forms: &[DENY_FORM],
        action: Action::Deny,
        sends: &[Template::Denial],
        purge_keeps_detail: true,
        multi_line: true,
    },
    Verb {
        word: "extend",
        build: |arg| {
            Ok(TeamCommand::Case(Command::Extend {
                reason: arg.to_string(),
            }))
        },
        forms: &[EXTEND_FORM],
        action: Action::Extend,
        sends: &[Template::ExtensionNotice],
        purge_keeps_detail: false,
        multi_line: false,
    },
    Verb {
        word: "complete",
        build: |arg| {
            let (first, more) = split_word(arg);
            let partial = first
                .eq_ignore_ascii_case("partial")
                .then(|| more.trim().to_string());
            Ok(TeamCommand::Case(Command::Complete {
                sent_by_team: partial.is_none() && arg.eq_ignore_ascii_case("sent"),
                partial,
            }))
        },
        forms: &[COMPLETE_FORM, COMPLETE_SENT_FORM, COMPLETE_PARTIAL_FORM],
        action: Action::Complete,
        sends: &[
            Template::KnowCompleted,
            Template::DeleteCompleted,
            Template::CorrectCompleted,
        ],
        purge_keeps_detail: true,
        multi_line: true,
    },
    Verb {
        word: "close",
        build: |arg| {
            Ok(TeamCommand::Case(Command::Close {
                reason: arg.to_string(),
            }))
        },
        forms: &[CLOSE_FORM, CLOSE_UNVERIFIED_FORM],
        action: Action::Close,
        sends: &[Template::IdentityNotVerified],
        purge_keeps_detail: false,
        multi_line: true,
    },
    Verb {
        word: "note",
        build: |arg| {
            Ok(TeamCommand::Case(Command::Note {
                text: arg.to_string(),
            }))
        },
        forms: &[NOTE_FORM],
        action: Action::Note,
        sends: &[],
        purge_keeps_detail: false,
        multi_line: false,
    },
    Verb {
        word: "declaration accept",
        build: |_| Ok(TeamCommand::Case(Command::DeclarationAccept)),
        forms: &[DECLARATION_ACCEPT_FORM],
        action: Action::DeclarationAccept,
        sends: &[],
        purge_keeps_detail: true,
        multi_line: false,
    },
    Verb {
        word: "declaration reject",
        build: |arg| {
            Ok(TeamCommand::Case(Command::DeclarationReject {
                reason: arg.to_string(),
            }))
        },
        forms: &[DECLARATION_REJECT_FORM],
        action: Action::DeclarationReject,
        sends: &[Template::DeclarationRejected],
        purge_keeps_detail: false,
        multi_line: false,
    },
    Verb {
        word: "poa",
        build: |_| Ok(TeamCommand::Case(Command::Poa)),
        forms: &[POA_FORM],
        action: Action::Poa,
        sends: &[],
        purge_keeps_detail: true,
        multi_line: false,
    },
    Verb {
        word: "open",
        build: parse_open,
        forms: &[OPEN_FORM],
        action: Action::Open,
        sends: &[],
        purge_keeps_detail: false,
        multi_line: false,
    },
];

/// The row of a command word (`declaration accept`), lower case.
pub fn verb(word: &str) -> Option<&'static Verb> {
    TABLE.iter().find(|v| v.word == word)
}

/// The answer to an unknown command: every form, in table order.
pub(crate) fn known_forms() -> String {
    TABLE
        .iter()
        .flat_map(|v| v.forms.iter().map(|f| f.usage))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first word of `s` and the rest (leading white space skipped).
pub(crate) fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each engine command. The match makes a new `Command` variant
    /// a compile error here until it has a sample (and so a row).
    fn samples() -> Vec<Command> {
        let all = vec![
            Command::Verify,
            Command::Deny { reason: "r".into() },
            Command::Extend { reason: "r".into() },
            Command::Complete {
                sent_by_team: false,
                partial: None,
            },
            Command::Close { reason: "r".into() },
            Command::Note { text: "t".into() },
            Command::DeclarationAccept,
            Command::DeclarationReject { reason: "r".into() },
            Command::Poa,
        ];
        for c in &all {
            match c {
                Command::Verify
                | Command::Deny { .. }
                | Command::Extend { .. }
                | Command::Complete { .. }
                | Command::Close { .. }
                | Command::Note { .. }
                | Command::DeclarationAccept
                | Command::DeclarationReject { .. }
                | Command::Poa => {}
            }
        }
        all
    }

    #[test]
    fn every_engine_command_has_a_row_a_cli_form_and_a_hint() {
        for command in samples() {
            let action = command.action();
            let rows: Vec<&Verb> = TABLE.iter().filter(|v| v.action == action).collect();
            assert_eq!(rows.len(), 1, "{action}: one row");
            let verb = rows[0];
            assert!(!verb.forms.is_empty(), "{action}: no hint");
            for form in verb.forms {
                assert!(form.cli.is_some(), "{}: no `cases act` form", form.usage);
                for kind in Kind::ALL {
                    assert!(!(form.help)(kind).is_empty(), "{}: no hint", form.usage);
                }
            }
            // The word builds this very command.
            let built = (verb.build)("r");
            assert!(
                matches!(&built, Ok(TeamCommand::Case(c)) if c.action() == action),
                "{}: builds {built:?}",
                verb.word
            );
        }
    }

    #[test]
    fn every_row_is_reachable_and_described() {
        for verb in TABLE {
            assert_eq!(verb.word, verb.word.to_ascii_lowercase());
            assert_eq!(super::verb(verb.word).map(|v| v.action), Some(verb.action));
            for form in verb.forms {
                assert!(
                    form.usage.starts_with(&format!("#{}", verb.word)),
                    "{}",
                    form.usage
                );
            }
            // A command's consumer mail is consumer mail.
            assert!(verb.sends.iter().all(|t| !t.is_team()), "{}", verb.word);
        }
        let mut words: Vec<&str> = TABLE.iter().map(|v| v.word).collect();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), TABLE.len());
    }
}
