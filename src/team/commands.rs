//! Parsing the team's one-line commands (SPEC §6). Pure.
//!
//! Command lines stand at the top of the new text of a reply, one per line:
//! `#verify`, `#deny REASON`, `#extend REASON`, `#complete`, `#close REASON`,
//! `#note TEXT`, `#declaration accept`, `#declaration reject REASON`, `#poa`,
//! `#complete sent`, `#complete partial REASON`,
//! `#open know|delete|correct|limit|opt_out [from|reply-to]`. A case ID right after the
//! command word (`#verify CCPA-2026-00042`) names the case, as replies to
//! burst summaries must. The reason of `#deny`, `#complete partial` and
//! `#close` may go on over the following lines, up to a blank line, the next
//! command, a quote (`>`) or a signature (`-- `). Parsing stops at the first
//! other line that is not a command.

use crate::cases::Command;
use crate::cases::commands::{self, split_word};
use crate::ids::CaseId;

pub use crate::cases::commands::{OpenAs, TeamCommand};

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The line as written (trimmed).
    pub line: String,
    /// The case the line names, its prefix upper-cased, if any.
    pub case_id: Option<CaseId>,
    /// The command, or why the line could not be understood.
    pub command: Result<TeamCommand, String>,
}

/// The command lines at the top of `new_text`. Blank lines before and between
/// commands are skipped; the first other line ends the list.
pub fn parse(new_text: &str, case_prefix: &str) -> Vec<CommandLine> {
    let mut out: Vec<CommandLine> = Vec::new();
    let mut lines = new_text.lines().peekable();
    while let Some(raw) = lines.next() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            break;
        }
        let mut parsed = parse_line(line, case_prefix);
        if let Ok(TeamCommand::Case(command)) = &mut parsed.command
            && let Some(reason) = multi_line_reason(command)
        {
            while let Some(next) = lines.peek() {
                let more = next.trim();
                if more.is_empty()
                    || more.starts_with('#')
                    || more.starts_with('>')
                    || next.starts_with("-- ")
                    || more == "--"
                {
                    break;
                }
                if !reason.is_empty() {
                    reason.push('\n');
                }
                reason.push_str(more);
                lines.next();
            }
        }
        out.push(parsed);
    }
    out
}

/// The reason a command may continue on the following lines (its row in
/// the command table says whether it may).
fn multi_line_reason(command: &mut Command) -> Option<&mut String> {
    let multi_line = commands::TABLE
        .iter()
        .any(|v| v.action == command.action() && v.multi_line);
    if !multi_line {
        return None;
    }
    match command {
        Command::Deny { reason } | Command::Close { reason } => Some(reason),
        Command::Complete {
            partial: Some(reason),
            ..
        } => Some(reason),
        _ => None,
    }
}

fn parse_line(line: &str, case_prefix: &str) -> CommandLine {
    let body = line.trim_start_matches('#');
    let (word, rest) = split_word(body);
    let word = word.to_ascii_lowercase();
    // `#declaration accept` / `#declaration reject REASON` are two words.
    let (word, rest) = if word == "declaration" {
        let (second, rest2) = split_word(rest);
        (
            format!("declaration {}", second.to_ascii_lowercase()),
            rest2,
        )
    } else {
        (word, rest)
    };
    let (case_id, rest) = take_case_id(rest, case_prefix);
    let arg = rest.trim();
    let command = match commands::verb(&word) {
        Some(verb) => (verb.build)(arg),
        None if word.is_empty() => Err("an empty command".to_string()),
        None => Err(format!(
            "unknown command `#{word}`; known: {}",
            commands::known_forms()
        )),
    };
    CommandLine {
        line: line.to_string(),
        case_id,
        command,
    }
}

/// A case ID (`CCPA-2026-00042`, optionally in brackets) as the next word.
fn take_case_id<'a>(rest: &'a str, prefix: &str) -> (Option<CaseId>, &'a str) {
    let (word, after) = split_word(rest);
    let candidate = word.trim_matches(|c| c == '[' || c == ']' || c == ':' || c == ',');
    match CaseId::parse(candidate, prefix) {
        Some(id) => (Some(id), after),
        None => (None, rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::Kind;

    fn one(text: &str) -> CommandLine {
        let mut v = parse(text, "CCPA");
        assert_eq!(v.len(), 1, "{text:?} → {v:?}");
        v.remove(0)
    }

    /// A command's case argument has the case-ID syntax of `ids`: a short
    /// sequence is no case ID, so it stays part of the argument.
    #[test]
    fn a_case_argument_is_a_whole_case_id() {
        let line = one("#verify CCPA-2026-00042");
        assert_eq!(
            line.case_id.map(String::from).as_deref(),
            Some("CCPA-2026-00042")
        );
        let line = one("#note CCPA-2026-42 called back");
        assert_eq!(line.case_id, None);
        assert_eq!(
            line.command,
            Ok(TeamCommand::Case(Command::Note {
                text: "CCPA-2026-42 called back".into()
            }))
        );
    }

    #[test]
    fn parses_each_command() {
        let table: &[(&str, TeamCommand)] = &[
            ("#verify", TeamCommand::Case(Command::Verify)),
            ("#VERIFY", TeamCommand::Case(Command::Verify)),
            (
                "#deny Not a California resident.",
                TeamCommand::Case(Command::Deny {
                    reason: "Not a California resident.".into(),
                }),
            ),
            (
                "#extend Archive search",
                TeamCommand::Case(Command::Extend {
                    reason: "Archive search".into(),
                }),
            ),
            (
                "#complete",
                TeamCommand::Case(Command::Complete {
                    sent_by_team: false,
                    partial: None,
                }),
            ),
            (
                "#complete sent",
                TeamCommand::Case(Command::Complete {
                    sent_by_team: true,
                    partial: None,
                }),
            ),
            (
                "#complete partial order history kept: tax law",
                TeamCommand::Case(Command::Complete {
                    sent_by_team: false,
                    partial: Some("order history kept: tax law".into()),
                }),
            ),
            (
                "#open correct",
                TeamCommand::Open(Kind::Correct, OpenAs::From),
            ),
            ("#open limit", TeamCommand::Open(Kind::Limit, OpenAs::From)),
            (
                "#open opt_out",
                TeamCommand::Open(Kind::OptOut, OpenAs::From),
            ),
            (
                "#open Opt-Out",
                TeamCommand::Open(Kind::OptOut, OpenAs::From),
            ),
            (
                "#close duplicate of CCPA-2026-00001",
                TeamCommand::Case(Command::Close {
                    reason: "duplicate of CCPA-2026-00001".into(),
                }),
            ),
            (
                "#note called back",
                TeamCommand::Case(Command::Note {
                    text: "called back".into(),
                }),
            ),
            (
                "#declaration accept",
                TeamCommand::Case(Command::DeclarationAccept),
            ),
            (
                "#Declaration Reject unsigned",
                TeamCommand::Case(Command::DeclarationReject {
                    reason: "unsigned".into(),
                }),
            ),
            ("#poa", TeamCommand::Case(Command::Poa)),
            (
                "#open delete",
                TeamCommand::Open(Kind::Delete, OpenAs::From),
            ),
            ("#open know", TeamCommand::Open(Kind::Know, OpenAs::From)),
            (
                "#open know from",
                TeamCommand::Open(Kind::Know, OpenAs::From),
            ),
            (
                "#open know Reply-To",
                TeamCommand::Open(Kind::Know, OpenAs::ReplyTo),
            ),
        ];
        for (text, want) in table {
            let got = one(text);
            assert_eq!(got.command.as_ref(), Ok(want), "{text}");
            assert_eq!(got.case_id, None, "{text}");
        }
    }

    #[test]
    fn case_id_after_the_command_word() {
        let got = one("#deny [ccpa-2026-00042] No residency proof");
        assert_eq!(got.case_id.as_deref(), Some("CCPA-2026-00042"));
        assert_eq!(
            got.command,
            Ok(TeamCommand::Case(Command::Deny {
                reason: "No residency proof".into()
            }))
        );
        let got = one("#verify CCPA-2026-00007");
        assert_eq!(got.case_id.as_deref(), Some("CCPA-2026-00007"));
        let got = one("#declaration accept CCPA-2026-00003");
        assert_eq!(got.case_id.as_deref(), Some("CCPA-2026-00003"));
        assert_eq!(
            got.command,
            Ok(TeamCommand::Case(Command::DeclarationAccept))
        );
    }

    #[test]
    fn stops_at_the_first_other_line_and_skips_blanks() {
        let v = parse(
            "\n#verify\n\n#extend more time\nThanks!\n#deny never\n> #complete",
            "CCPA",
        );
        assert_eq!(v.len(), 2);
        assert!(parse("Hello\n#verify", "CCPA").is_empty());
        assert!(parse("", "CCPA").is_empty());
    }

    #[test]
    fn reasons_span_lines_up_to_a_blank_line_or_the_next_command() {
        let v = parse(
            "#complete partial We kept your order history\nfor 7 years (Rev. & Tax. Code §19530).\n#note done\nby Alice\n",
            "CCPA",
        );
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].command,
            Ok(TeamCommand::Case(Command::Complete {
                sent_by_team: false,
                partial: Some(
                    "We kept your order history\nfor 7 years (Rev. & Tax. Code §19530).".into()
                ),
            }))
        );
        // A note is one line: the next line ends the commands.
        assert_eq!(
            v[1].command,
            Ok(TeamCommand::Case(Command::Note {
                text: "done".into()
            }))
        );
        let v = parse(
            "#deny We could not verify\nyour residency.\n\nThanks, Alice\n> quoted",
            "CCPA",
        );
        assert_eq!(
            v[0].command,
            Ok(TeamCommand::Case(Command::Deny {
                reason: "We could not verify\nyour residency.".into()
            }))
        );
        let v = parse(
            "#close unverified\nno answer in 30 days\n-- \nAlice",
            "CCPA",
        );
        assert_eq!(
            v[0].command,
            Ok(TeamCommand::Case(Command::Close {
                reason: "unverified\nno answer in 30 days".into()
            }))
        );
    }

    #[test]
    fn unknown_and_bad_lines_are_reported_not_dropped() {
        assert!(one("#frobnicate").command.is_err());
        let open = one("#open everything").command.unwrap_err();
        for kind in ["know", "delete", "correct", "limit", "opt_out"] {
            assert!(open.contains(kind), "{open}");
        }
        assert!(one("#").command.is_err());
    }
}
