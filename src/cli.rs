//! The command line (SPEC §9): parsing (clap) and dispatch. `run`, `check`,
//! `migrate`, `purge` and `templates` call their modules directly; the
//! command groups with output of their own have a file under `cli/`
//! (`cases`, `attachments`, `report`). Every command ends in a
//! [`Failure`] (shared from `errors`), which `main` maps to the exit code.

pub mod attachments;
pub mod auth;
pub mod cases;
pub mod report;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cases::{Kind, State};
pub use crate::errors::Failure;

/// Runs a company's privacy mailbox: CCPA requests by e-mail, cases, clocks and records.
#[derive(Debug, Parser)]
#[command(name = "privacy-mailroom", version, about)]
pub struct Cli {
    /// Config file [default: $PRIVACY_MAILROOM_CONFIG, else /etc/privacy-mailroom/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format, overriding `logging.format`.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// Drain the mailbox, deliver the outbox, run due scheduled work, exit.
        #[arg(long)]
        once: bool,
    },
    /// Validate config and templates, log in to IMAP and SMTP.
    Check {
        /// Print a JSON array of {"name", "ok", "detail"} for monitoring.
        #[arg(long)]
        json: bool,
    },
    /// Apply database migrations.
    Migrate,
    /// List, show and act on cases.
    #[command(subcommand)]
    Cases(CasesCommand),
    /// Regulatory reports.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Check or render the mail templates.
    #[command(subcommand)]
    Templates(TemplatesCommand),
    /// Stored declaration documents.
    #[command(subcommand)]
    Attachments(AttachmentsCommand),
    /// OAuth 2.0 for `auth = "oauth2"`: log in once (device code), show the token's state.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Remove personal data of cases closed more than `retention_months` ago.
    Purge {
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Device-code login for `flow = "refresh_token"`: prints a URL and a code,
    /// waits for the approval, stores the refresh token (mode 0600).
    Login,
    /// Flow, scopes and when the current token expires (never the token).
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CasesCommand {
    /// List cases.
    List(ListArgs),
    /// Show one case with its events, messages and attachments.
    Show {
        /// Case ID, e.g. CCPA-2026-00042.
        id: String,
        /// Print JSON (SPEC §9: the case plus events, messages, attachments; RFC 3339 times).
        #[arg(long)]
        json: bool,
    },
    /// Take a team decision on a case (the same code path as commands by mail).
    Act {
        /// Case ID, e.g. CCPA-2026-00042.
        id: String,
        #[command(subcommand)]
        action: Action,
        /// Who acts, for the case history [default: cli:NAME, NAME from SUDO_USER, else the
        /// login UID's user, else USER; refused when none is set]
        #[arg(long, global = true)]
        by: Option<String>,
    },
}

impl Cli {
    /// The command line as clap describes it, with the `cases act` help
    /// generated from the command table ([`crate::cases::commands::TABLE`]):
    /// each decision's one-line help is its table help, and `cases act
    /// --help` lists every form next to the same command by mail. `main`
    /// parses with this, so the help cannot drift from the table.
    pub(crate) fn command_with_table_help() -> clap::Command {
        use clap::CommandFactory;
        Cli::command().mut_subcommand("cases", |cases| cases.mut_subcommand("act", act_help))
    }

    /// Parses the process's arguments with [`Cli::command_with_table_help`].
    pub fn parse_with_table_help() -> Result<Cli, clap::Error> {
        use clap::FromArgMatches;
        let matches = Cli::command_with_table_help().try_get_matches()?;
        Cli::from_arg_matches(&matches)
    }
}

/// What a form does, per kind of request where that differs:
/// "the deletion is done…" for a delete, "send the completion notice…" for a
/// know.
fn form_help(form: &crate::cases::commands::Form) -> String {
    let mut texts: Vec<(&'static str, Vec<Kind>)> = Vec::new();
    for kind in Kind::ALL {
        let text = (form.help)(kind);
        match texts.iter_mut().find(|(t, _)| *t == text) {
            Some((_, kinds)) => kinds.push(kind),
            None => texts.push((text, vec![kind])),
        }
    }
    if let [(text, _)] = texts.as_slice() {
        return (*text).to_string();
    }
    texts
        .iter()
        .map(|(text, kinds)| {
            let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            format!("{}: {text}", kinds.join("/"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn act_help(mut act: clap::Command) -> clap::Command {
    let mut listing =
        String::from("Forms (each is also a command by mail, in a reply to a team notice):\n");
    for verb in crate::cases::commands::TABLE {
        for form in verb.forms {
            let Some(cli) = form.cli else { continue };
            let help = form_help(form);
            listing.push_str(&format!(
                "  {cli}\n      by mail: {}\n      {help}\n",
                form.usage
            ));
            // The subcommand's one-line help: its first (plain) form's, short
            // when it differs by kind.
            let name = cli.split_whitespace().next().unwrap_or(cli);
            let about =
                if help.contains(": ") && (form.help)(Kind::Know) != (form.help)(Kind::Delete) {
                    format!(
                        "`{}`: what it does depends on the kind (see `cases act --help`)",
                        form.usage
                    )
                } else {
                    help.clone()
                };
            if act
                .find_subcommand(name)
                .is_some_and(|sub| sub.get_about().is_none())
            {
                act = act.mut_subcommand(name, |sub| sub.about(about));
            }
        }
    }
    act.after_help(listing)
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only cases in STATE: `open` (every state that still needs work), or one of
    /// awaiting_verification, verification_submitted, verified, awaiting_confirmation,
    /// confirmed, completed, denied, closed, withdrawn.
    #[arg(long, value_name = "STATE", value_parser = parse_state_filter)]
    pub state: Option<StateFilter>,
    /// Only cases of KIND: know, delete, opt_out, correct or limit.
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<Kind>,
    /// Only open cases past their due date.
    #[arg(long)]
    pub overdue: bool,
    /// Only open cases due within DAYS.
    #[arg(long, value_name = "DAYS")]
    pub due_within: Option<u32>,
    /// Print a JSON array (SPEC §9 fields, times in RFC 3339) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `cases list --state`: one state, or every open one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    /// Every state that is not final.
    Open,
    Is(State),
}

/// The decisions of `cases act`. Their help comes from the command table
/// (`Cli::command_with_table_help`); the doc comments here are only on the
/// flags.
#[derive(Debug, Subcommand)]
pub enum Action {
    Verify,
    Deny {
        #[arg(long)]
        reason: String,
    },
    Extend {
        #[arg(long)]
        reason: String,
    },
    Complete {
        /// (All but delete) the team sent the substantive response itself;
        /// no completion mail goes out.
        #[arg(long)]
        sent_by_team: bool,
        /// Carried out in part; `--reason` says what was not done and why
        /// (for a deletion: what was kept, under which exception).
        #[arg(long, requires = "reason")]
        partial: bool,
        #[arg(long, requires = "partial")]
        reason: Option<String>,
    },
    Close {
        #[arg(long)]
        reason: String,
    },
    Note {
        text: String,
    },
    DeclarationAccept,
    DeclarationReject {
        #[arg(long)]
        reason: String,
    },
    Poa,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// CCPA regs §7102 metrics per kind for a calendar year.
    Metrics {
        /// Calendar year of the requests received, e.g. 2026.
        #[arg(long)]
        year: i32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// CCPA regs §7101 record of each request.
    Records {
        #[arg(long, value_name = "DATE")]
        since: Option<chrono::NaiveDate>,
        #[arg(long, value_name = "DATE")]
        until: Option<chrono::NaiveDate>,
        #[arg(long, value_enum, default_value = "csv")]
        format: RecordFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RecordFormat {
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Render every template against a sample case in strict mode.
    Check,
    /// Render one template (against a stored case, or the sample).
    Render {
        /// Template name, e.g. acknowledgement (`templates check` lists them).
        name: String,
        /// Render for this stored case (e.g. CCPA-2026-00042) instead of the sample case.
        #[arg(long, value_name = "ID")]
        case: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AttachmentsCommand {
    /// Write a stored document to a file.
    Export {
        sha256: String,
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_state_filter(s: &str) -> Result<StateFilter, String> {
    if s == "open" {
        return Ok(StateFilter::Open);
    }
    s.parse().map(StateFilter::Is).map_err(|_| {
        let all: Vec<_> = State::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown state {s:?}; one of: open, {}", all.join(", "))
    })
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    s.parse().map_err(|_| {
        let all: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        format!("unknown kind {s:?}; one of: {}", all.join(", "))
    })
}

impl Action {
    /// The engine command this action stands for.
    pub(crate) fn to_command(&self) -> crate::cases::Command {
        use crate::cases::Command as C;
        match self {
            Action::Verify => C::Verify,
            Action::Deny { reason } => C::Deny {
                reason: reason.clone(),
            },
            Action::Extend { reason } => C::Extend {
                reason: reason.clone(),
            },
            Action::Complete {
                sent_by_team,
                partial,
                reason,
            } => C::Complete {
                sent_by_team: *sent_by_team,
                partial: partial.then(|| reason.clone().unwrap_or_default()),
            },
            Action::Close { reason } => C::Close {
                reason: reason.clone(),
            },
            Action::Note { text } => C::Note { text: text.clone() },
            Action::DeclarationAccept => C::DeclarationAccept,
            Action::DeclarationReject { reason } => C::DeclarationReject {
                reason: reason.clone(),
            },
            Action::Poa => C::Poa,
        }
    }
}

/// Loads the config named on the command line; a problem is a usage error.
pub(crate) fn load_config(cli: &Cli) -> Result<crate::config::Config, Failure> {
    let path = crate::config::resolve_path(cli.config.as_deref());
    crate::config::Config::load(&path).map_err(|e| Failure::Usage(e.into()))
}

/// Opens the database and templates; a broken template set is a usage error.
pub(crate) async fn open_mailroom(
    config: crate::config::Config,
) -> Result<crate::mailroom::Mailroom, Failure> {
    use crate::mailroom::SetupError;
    crate::mailroom::Mailroom::open(config)
        .await
        .map_err(|e| match e {
            SetupError::Templates(_)
            | SetupError::TemplateCheck { .. }
            | SetupError::KeyFile { .. }
            | SetupError::Config(_)
            | SetupError::OAuth(_) => Failure::Usage(e.into()),
            SetupError::Store(_) => Failure::Runtime(e.into()),
        })
}

/// Runs the parsed command.
pub async fn dispatch(cli: Cli) -> Result<std::process::ExitCode, Failure> {
    use std::process::ExitCode;
    let config = load_config(&cli)?;
    let format = match cli.log_format {
        Some(LogFormatArg::Auto) => crate::config::LogFormat::Auto,
        Some(LogFormatArg::Text) => crate::config::LogFormat::Text,
        Some(LogFormatArg::Json) => crate::config::LogFormat::Json,
        None => config.logging.format,
    };
    crate::logging::init(format, config.logging.log_personal_data);
    match cli.command {
        Command::Run { once } => {
            // One daemon per database: a second `run` (or `run --once` next
            // to the service) would send every pending mail twice.
            if let Some(dir) = config
                .storage
                .database
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                crate::store::create_private_dir(dir)?;
            }
            let _lease = crate::lease::Lease::acquire(&config.storage.database)
                .map_err(|e| Failure::Usage(e.into()))?;
            let room = open_mailroom(config)
                .await?
                .with_config_path(crate::config::resolve_path(cli.config.as_deref()));
            room.require_sound_templates()
                .map_err(|e| Failure::Usage(e.into()))?;
            // Secrets, CA files and TLS settings are configuration: a problem
            // there is exit 2 at start, not a retry loop.
            room.config
                .imap
                .secret
                .resolve("imap")
                .map_err(|e| Failure::Usage(e.into()))?;
            let sender = crate::daemon::smtp_sender(&room).map_err(|e| Failure::Usage(e.into()))?;
            if once {
                crate::daemon::run_once(&room, sender)
                    .await
                    .map_err(anyhow::Error::from)?;
            } else {
                let shutdown = tokio_util::sync::CancellationToken::new();
                crate::signals::spawn(room.clone(), shutdown.clone());
                crate::daemon::run(room.clone(), sender, shutdown)
                    .await
                    .map_err(anyhow::Error::from)?;
            }
            room.store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let store = crate::store::Store::open(&config.storage.database).await?;
            store.close().await;
            println!(
                "Database {} is up to date.",
                config.storage.database.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { json } => {
            let path = crate::config::resolve_path(cli.config.as_deref());
            crate::check::run(&config, &path, json).await
        }
        Command::Cases(CasesCommand::Act { id, action, by }) => {
            let room = open_mailroom(config).await?;
            cases::act(&room, &id, &action, by).await
        }
        Command::Cases(CasesCommand::List(args)) => cases::list(&config, args).await,
        Command::Cases(CasesCommand::Show { id, json }) => cases::show(&config, &id, json).await,
        Command::Templates(cmd) => {
            let templates = crate::templates::Templates::from_config(&config.templates)
                .map_err(|e| Failure::Usage(e.into()))?;
            templates_cmd(&config, &templates, cmd).await
        }
        Command::Report(cmd) => report::run(&config, cmd).await,
        Command::Purge { dry_run } => crate::purge::cli(&config, dry_run).await,
        Command::Attachments(cmd) => attachments::run(&config, cmd).await,
        Command::Auth(cmd) => auth::run(&config, cmd).await,
    }
}

async fn templates_cmd(
    config: &crate::config::Config,
    templates: &crate::templates::Templates,
    cmd: TemplatesCommand,
) -> Result<std::process::ExitCode, Failure> {
    use std::process::ExitCode;
    match cmd {
        TemplatesCommand::Check => {
            let problems = templates.check();
            if problems.is_empty() {
                println!(
                    "{} templates OK in {}",
                    templates.names().len(),
                    templates.describe_dirs()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &problems {
                    eprintln!("error: {p}");
                }
                Err(Failure::Usage(anyhow::anyhow!(
                    "{} template problems",
                    problems.len()
                )))
            }
        }
        TemplatesCommand::Render { name, case } => {
            let ctx = match case {
                None => crate::templates::sample_context_for(config),
                Some(id) => {
                    let store = crate::store::Store::open(&config.storage.database).await?;
                    let mut conn = store.conn().await?;
                    let found = match crate::ids::CaseId::parse_any(&id) {
                        Some(case_id) => crate::store::cases::get(&mut conn, &case_id).await?,
                        None => None,
                    };
                    let Some(case) = found else {
                        return Err(cases::no_case(config, &id));
                    };
                    let tz = config.timezone().map_err(|e| Failure::Usage(e.into()))?;
                    crate::templates::TemplateContext::from_config(config).with_case(
                        crate::templates::CaseContext::from_case(&case, tz, chrono::Utc::now()),
                    )
                }
            };
            let r = templates
                .render(&name, &ctx)
                .map_err(|e| Failure::Usage(e.into()))?;
            println!("Subject: {}\n\n{}", r.subject, r.text);
            if let Some(html) = r.html {
                println!("--- HTML ---\n{html}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{CasesCommand, Cli, Command};
    use crate::cases::commands::{TABLE, TeamCommand};

    /// Every `cases act` form of the command table parses, and builds the
    /// command its mail form builds: the table, the mail parser and the CLI
    /// cannot drift apart.
    #[test]
    fn cases_act_help_is_the_command_table() {
        let mut cli = Cli::command_with_table_help();
        let act = cli
            .find_subcommand_mut("cases")
            .and_then(|c| c.find_subcommand_mut("act"))
            .expect("cases act");
        let help = act.render_long_help().to_string();
        for verb in TABLE {
            for form in verb.forms {
                let Some(cli) = form.cli else { continue };
                assert!(help.contains(cli), "`cases act --help` lacks {cli}");
                assert!(
                    help.contains(form.usage),
                    "`cases act --help` lacks {}",
                    form.usage
                );
            }
        }
        for sub in act.get_subcommands().filter(|s| s.get_name() != "help") {
            assert!(
                sub.get_about().is_some(),
                "`cases act {}` has no help: give it a form in the command table",
                sub.get_name()
            );
        }
    }

    #[test]
    fn every_cli_form_of_the_command_table_builds_the_mail_forms_command() {
        let fill = |s: &str| {
            s.replace(" [DETAIL]", "")
                .replace("REASON", "why")
                .replace("TEXT", "why")
        };
        let mut forms = 0;
        for verb in TABLE {
            for form in verb.forms {
                let Some(cli) = form.cli else { continue };
                forms += 1;
                let mut argv = vec!["privacy-mailroom", "cases", "act", "CCPA-2026-00001"];
                let filled = fill(cli);
                argv.extend(filled.split_whitespace());
                let parsed = Cli::try_parse_from(&argv)
                    .unwrap_or_else(|e| panic!("`cases act ID {cli}`: {e}"));
                let Command::Cases(CasesCommand::Act { action, .. }) = parsed.command else {
                    panic!("`{cli}` is not `cases act`");
                };
                let by_mail = crate::team::commands::parse(&fill(form.usage), "CCPA");
                assert_eq!(
                    by_mail.first().map(|l| l.command.clone()),
                    Some(Ok(TeamCommand::Case(action.to_command()))),
                    "{} vs {cli}",
                    form.usage
                );
            }
        }
        assert!(forms >= 12, "{forms}");
    }
}
