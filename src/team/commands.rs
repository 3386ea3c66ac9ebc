//! Parsing the team's one-line commands (SPEC §6). Pure.
//!
//! Command lines stand at the top of the new text of a reply, one per line:
//! `#verify`, `#deny REASON`, `#extend REASON`, `#complete`, `#close REASON`,
//! `#note TEXT`, `#declaration accept`, `#declaration reject REASON`, `#poa`,
//! `#open know|delete [from|reply-to]`. A case ID right after the command word
//! (`#verify CCPA-2026-00042`) names the case, as replies to burst summaries
//! must. Parsing stops at the first line that is not a command.

use crate::cases::{Command, Kind};

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

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The line as written (trimmed).
    pub line: String,
    /// The case the line names, upper-cased, if any.
    pub case_id: Option<String>,
    /// The command, or why the line could not be understood.
    pub command: Result<TeamCommand, String>,
}

/// The command lines at the top of `new_text`. Blank lines before and between
/// commands are skipped; the first other line ends the list.
pub fn parse(new_text: &str, case_prefix: &str) -> Vec<CommandLine> {
    let mut out = Vec::new();
    for raw in new_text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            break;
        }
        out.push(parse_line(line, case_prefix));
    }
    out
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
    let arg = rest.trim().to_string();
    let command = match word.as_str() {
        "verify" => Ok(TeamCommand::Case(Command::Verify)),
        "deny" => Ok(TeamCommand::Case(Command::Deny { reason: arg })),
        "extend" => Ok(TeamCommand::Case(Command::Extend { reason: arg })),
        "complete" => Ok(TeamCommand::Case(Command::Complete {
            sent_by_team: arg.eq_ignore_ascii_case("sent"),
        })),
        "close" => Ok(TeamCommand::Case(Command::Close { reason: arg })),
        "note" => Ok(TeamCommand::Case(Command::Note { text: arg })),
        "declaration accept" => Ok(TeamCommand::Case(Command::DeclarationAccept)),
        "declaration reject" => Ok(TeamCommand::Case(Command::DeclarationReject {
            reason: arg,
        })),
        "poa" => Ok(TeamCommand::Case(Command::Poa)),
        "open" => parse_open(&arg),
        "" => Err("an empty command".to_string()),
        other => Err(format!(
            "unknown command `#{other}`; known: #verify, #deny REASON, #extend REASON, #complete, #close REASON, #note TEXT, #declaration accept, #declaration reject REASON, #poa, #open know|delete"
        )),
    };
    CommandLine {
        line: line.to_string(),
        case_id,
        command,
    }
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
        other => return Err(format!("`#open` takes know or delete, not {other:?}")),
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

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// A case ID (`CCPA-2026-00042`, optionally in brackets) as the next word.
fn take_case_id<'a>(rest: &'a str, prefix: &str) -> (Option<String>, &'a str) {
    let (word, after) = split_word(rest);
    let candidate = word.trim_matches(|c| c == '[' || c == ']' || c == ':' || c == ',');
    let upper = candidate.to_ascii_uppercase();
    let looks_like = upper
        .strip_prefix(&format!("{}-", prefix.to_ascii_uppercase()))
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(y, n)| {
            y.len() == 4
                && y.bytes().all(|b| b.is_ascii_digit())
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
        });
    if looks_like {
        (Some(upper), after)
    } else {
        (None, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> CommandLine {
        let mut v = parse(text, "CCPA");
        assert_eq!(v.len(), 1, "{text:?} → {v:?}");
        v.remove(0)
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
                }),
            ),
            (
                "#complete sent",
                TeamCommand::Case(Command::Complete { sent_by_team: true }),
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
    fn unknown_and_bad_lines_are_reported_not_dropped() {
        assert!(one("#frobnicate").command.is_err());
        assert!(one("#open everything").command.is_err());
        assert!(one("#").command.is_err());
    }
}
