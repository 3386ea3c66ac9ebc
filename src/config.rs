//! The TOML configuration (SPEC §9). Unknown keys and bad values are errors
//! that name the key and say how to fix it.

mod explain;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::classify::Rule;

mod oauth;
pub use explain::is_secret_key;

/// Where the config is looked for when `--config` is not given.
pub(crate) const DEFAULT_PATH: &str = "/etc/privacy-mailroom/config.toml";
pub(crate) const ENV_PATH: &str = "PRIVACY_MAILROOM_CONFIG";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Implicit TLS (IMAPS 993, SMTPS 465).
    Tls,
    Starttls,
    /// Plain text; refused unless the host is a loopback address.
    None,
}

/// How the daemon logs in to a server (`imap.auth`, `smtp.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// The password keys (`password_file`, `password_env`, `password`).
    #[default]
    Password,
    /// An OAuth 2.0 access token from `[oauth2]`, over SASL XOAUTH2 or OAUTHBEARER.
    Oauth2,
}

/// Whether the daemon stores its own copy of each reply in the Sent folder
/// (`smtp.sent_copy`). Gmail and Exchange Online save mail sent through their
/// SMTP themselves; a second copy would show every reply twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SentCopy {
    /// Always APPEND a copy (self-hosted servers).
    Append,
    /// Never: the server keeps one.
    Server,
    /// Look for the Message-ID in the Sent folder first, APPEND only when absent.
    #[default]
    Auto,
}

/// A secret given inline, in a file, or in an environment variable.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    pub host: String,
    #[serde(default = "d_imap_port")]
    pub port: u16,
    #[serde(default = "d_tls")]
    pub security: Security,
    pub ca_file: Option<PathBuf>,
    pub username: String,
    #[serde(flatten)]
    pub secret: Secret,
    #[serde(default = "d_inbox")]
    pub mailbox: String,
    #[serde(default = "d_processed")]
    pub processed_mailbox: String,
    #[serde(default = "d_review")]
    pub review_mailbox: String,
    #[serde(default = "d_sent")]
    pub sent_mailbox: String,
    #[serde(default = "d_true")]
    pub idle: bool,
    #[serde(default = "d_poll")]
    pub poll_interval_secs: u64,
    #[serde(default = "d_backlog")]
    pub initial_backlog_days: u32,
    #[serde(default = "d_max_message")]
    pub max_message_bytes: u64,
    /// Caps on one message's MIME structure: over them the message goes to
    /// review and no part of it is stored as a document.
    #[serde(default = "d_max_mime_parts")]
    pub max_mime_parts: usize,
    #[serde(default = "d_max_mime_depth")]
    pub max_mime_depth: usize,
    /// `"password"` (default) or `"oauth2"` (token from `[oauth2]`).
    #[serde(default)]
    pub auth: AuthMethod,
    /// The most connections the daemon holds to this mailbox's servers at
    /// once, IMAP and SMTP together: providers cap them per mailbox
    /// (Exchange Online, Gmail) and throttle clients that open more. See
    /// [`Config::smtp_connection_cap`].
    #[serde(default = "d_max_connections")]
    pub max_connections: u32,
}

/// IMAP connections the daemon holds at most: the mailbox session and the
/// outbox sender's Sent-folder copy.
pub(crate) const IMAP_CONNECTIONS: u32 = 2;

/// Exchange Online accepts at most three concurrent SMTP submissions from
/// one mailbox and answers a fourth `432 4.3.2 STOREDRV.ClientSubmit; sender
/// thread limit exceeded`.
pub(crate) const EXCHANGE_SMTP_CONNECTIONS: u32 = 3;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "d_smtp_port")]
    pub port: u16,
    #[serde(default = "d_starttls")]
    pub security: Security,
    pub ca_file: Option<PathBuf>,
    /// Optional: no AUTH when absent (e.g. a local relay on loopback).
    pub username: Option<String>,
    #[serde(flatten)]
    pub secret: Secret,
    /// `Name <address>`; also the Reply-To (the mailbox).
    pub from: String,
    #[serde(default = "d_per_conn")]
    pub max_messages_per_connection: u32,
    /// How many SMTP connections deliver at once during a burst (each still
    /// bounded by `max_messages_per_connection`).
    #[serde(default = "d_connections")]
    pub connections: u32,
    /// `"password"` (default) or `"oauth2"`; the SASL user is `smtp.username`,
    /// else `imap.username`.
    #[serde(default)]
    pub auth: AuthMethod,
    #[serde(default)]
    pub sent_copy: SentCopy,
}

pub use crate::oauth::settings::{OAuthConfig, OAuthFlow, OAuthProvider, SaslMechanism};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub notify: Vec<String>,
    #[serde(default = "d_digest")]
    pub digest_time: String,
    #[serde(default)]
    pub require_dkim: bool,
    #[serde(default)]
    pub trusted_authserv_ids: Vec<String>,
    #[serde(default = "d_burst")]
    pub burst_threshold: u32,
}

impl TeamConfig {
    /// Is `addr` in `members` (stored as bare, lower-cased addresses)?
    pub(crate) fn is_member(&self, addr: &str) -> bool {
        self.members
            .iter()
            .any(|m| m.trim().eq_ignore_ascii_case(addr.trim()))
    }

    /// When the daily digest goes out (local time), or `None` when it is `"off"`.
    pub(crate) fn digest_at(&self) -> Result<Option<chrono::NaiveTime>, chrono::ParseError> {
        if self.digest_time.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        chrono::NaiveTime::parse_from_str(self.digest_time.trim(), "%H:%M").map(Some)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    #[serde(default)]
    pub known_domains: Vec<String>,
    #[serde(default = "d_max_attachment")]
    pub max_attachment_bytes: u64,
    /// More attachments than this in one message: review, nothing stored.
    #[serde(default = "d_max_attachments")]
    pub max_attachments: usize,
    #[serde(default = "d_true")]
    pub require_notarized: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default = "d_database")]
    pub database: PathBuf,
    #[serde(default = "d_attachments")]
    pub attachments_dir: PathBuf,
    /// Optional file holding the Message-ID HMAC key; when absent the key is
    /// generated once and kept in the database.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default = "d_prefix")]
    pub case_prefix: String,
    #[serde(default = "d_tz")]
    pub timezone: String,
    #[serde(default)]
    pub holidays: Vec<String>,
    #[serde(default = "d_ack_days")]
    pub acknowledge_business_days: u32,
    #[serde(default = "d_45")]
    pub respond_days: u32,
    #[serde(default = "d_45")]
    pub extension_days: u32,
    #[serde(default = "d_reminder")]
    pub reminder_after_days: u32,
    #[serde(default = "d_retention")]
    pub retention_months: u32,
    /// At most this many automatic replies per sender per 24 hours.
    #[serde(default = "d_auto_replies")]
    pub max_auto_replies_per_day: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatesConfig {
    /// The shipped templates (the package's, replaced on upgrade).
    #[serde(default = "d_templates")]
    pub dir: PathBuf,
    /// Local edits: a file here replaces the file of the same name in `dir`,
    /// so upgrades never overwrite them. A missing directory means none.
    #[serde(default = "d_template_overrides")]
    pub override_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompanyConfig {
    pub name: String,
    /// Shown in mail: where consumers can read the privacy policy.
    pub privacy_policy_url: Option<String>,
    /// Shown in mail: a phone number for requests (the seed policy has a
    /// toll-free number, Civ. Code §1798.130(a)(1)).
    pub phone: Option<String>,
    /// Shown in mail: where consumers can write by post.
    pub postal_address: Option<String>,
    /// Whether the company sells personal information (Civ. Code
    /// §1798.140(ad)). The opt-out reply says what this says; default false,
    /// as the seed policy states.
    #[serde(default)]
    pub sells: bool,
    /// Whether the company shares personal information for cross-context
    /// behavioural advertising (§1798.140(ah)). Default false.
    #[serde(default)]
    pub shares: bool,
    /// Add a line to denials and completions on how to contact the
    /// California Privacy Protection Agency (cppa.ca.gov). Default false.
    #[serde(default)]
    pub mention_cppa: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    #[serde(default = "d_log_format")]
    pub format: LogFormat,
    #[serde(default)]
    pub log_personal_data: bool,
}

/// The whole configuration file. A section left out means all its defaults
/// (SPEC §9); `[imap]`, `[smtp]` and `[company]` have required keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub imap: ImapConfig,
    pub smtp: SmtpConfig,
    /// Only with `auth = "oauth2"` in `[imap]` or `[smtp]`.
    pub oauth2: Option<OAuthConfig>,
    #[serde(default)]
    pub team: TeamConfig,
    #[serde(default)]
    pub agents: AgentsConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub templates: TemplatesConfig,
    pub company: CompanyConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Ordered subject rules; the SPEC §3 defaults when absent.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// `[policy]` as typed values (time zone, holiday dates), parsed once by
    /// [`Config::parse`]; see [`Config::policy`].
    #[serde(skip)]
    deadlines: Option<crate::cases::Policy>,
}

fn d_imap_port() -> u16 {
    993
}
fn d_smtp_port() -> u16 {
    587
}
fn d_tls() -> Security {
    Security::Tls
}
fn d_starttls() -> Security {
    Security::Starttls
}
fn d_inbox() -> String {
    "INBOX".into()
}
fn d_processed() -> String {
    "Processed".into()
}
fn d_review() -> String {
    "Review".into()
}
fn d_sent() -> String {
    "Sent".into()
}
fn d_true() -> bool {
    true
}
fn d_poll() -> u64 {
    60
}
fn d_backlog() -> u32 {
    45
}
fn d_max_message() -> u64 {
    52_428_800
}
fn d_max_connections() -> u32 {
    6
}
fn d_per_conn() -> u32 {
    50
}
fn d_connections() -> u32 {
    4
}
fn d_digest() -> String {
    "09:00".into()
}
fn d_burst() -> u32 {
    20
}
fn d_max_attachment() -> u64 {
    26_214_400
}
fn d_max_attachments() -> usize {
    crate::message::MimeLimits::default().max_attachments
}
fn d_max_mime_parts() -> usize {
    crate::message::MimeLimits::default().max_parts
}
fn d_max_mime_depth() -> usize {
    crate::message::MimeLimits::default().max_depth
}
fn d_database() -> PathBuf {
    "/var/lib/privacy-mailroom/mailroom.db".into()
}
fn d_attachments() -> PathBuf {
    "/var/lib/privacy-mailroom/attachments".into()
}
fn d_prefix() -> String {
    "CCPA".into()
}
fn d_tz() -> String {
    "America/Los_Angeles".into()
}
fn d_ack_days() -> u32 {
    10
}
fn d_45() -> u32 {
    45
}
fn d_reminder() -> u32 {
    7
}
fn d_retention() -> u32 {
    24
}
fn d_auto_replies() -> u32 {
    5
}
fn d_templates() -> PathBuf {
    "/usr/share/privacy-mailroom/templates".into()
}
fn d_template_overrides() -> Option<PathBuf> {
    Some("/etc/privacy-mailroom/templates".into())
}
fn d_log_format() -> LogFormat {
    LogFormat::Auto
}

/// A section left out of the file means what an empty section means.
macro_rules! default_from_empty_table {
    ($($t:ty),*) => {$(
        impl Default for $t {
            fn default() -> Self {
                // Every field of these sections has a serde default, so an
                // empty table always deserialises; the test
                // `left_out_sections_mean_their_defaults` proves it.
                match toml::from_str("") {
                    Ok(v) => v,
                    Err(e) => unreachable!("{} has a required key: {e}", stringify!($t)),
                }
            }
        }
    )*};
}
default_from_empty_table!(
    TeamConfig,
    AgentsConfig,
    StorageConfig,
    PolicyConfig,
    TemplatesConfig,
    LoggingConfig
);

/// A configuration problem: which key, what is wrong, how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read the config file {path}: {source}; fix: pass --config PATH or set {ENV_PATH}"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file does not parse into the config: a TOML syntax error, an
    /// unknown or missing key, a value of the wrong type. Never quotes a secret.
    #[error("config key `{key}`{}: {problem}; fix: {fix}", location(path, *line))]
    Syntax {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        problem: String,
        fix: String,
    },
    #[error("config key `{key}`: {problem}; fix: {fix}")]
    Invalid {
        key: String,
        problem: String,
        fix: String,
    },
}

/// ` (line 3 of /etc/…/config.toml)`, or less when unknown.
fn location(path: &Path, line: Option<usize>) -> String {
    let file = path.display().to_string();
    match (line, file.is_empty()) {
        (Some(l), false) => format!(" (line {l} of {file})"),
        (Some(l), true) => format!(" (line {l})"),
        (None, false) => format!(" (in {file})"),
        (None, true) => String::new(),
    }
}

/// The shortest Message-ID key accepted: 256 bits, the HMAC-SHA256 output.
/// A shorter key makes the notices' Message-IDs, and so mailed commands,
/// guessable.
pub(crate) const MIN_KEY_BYTES: usize = 32;

/// Refuses a `storage.key_file` whose content is too short to be a key.
pub(crate) fn check_key_file(path: &Path, key: &[u8]) -> Result<(), ConfigError> {
    if key.len() >= MIN_KEY_BYTES {
        return Ok(());
    }
    Err(invalid(
        "storage.key_file",
        format!(
            "{} holds {} bytes, fewer than the {MIN_KEY_BYTES} a Message-ID key needs",
            path.display(),
            key.len()
        ),
        format!(
            "write a random key: head -c {MIN_KEY_BYTES} /dev/urandom > {} && chmod 600 {} (or remove storage.key_file to keep the key in the database)",
            path.display(),
            path.display()
        ),
    ))
}

fn invalid(key: &str, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Which file to read: `--config`, else `$PRIVACY_MAILROOM_CONFIG`, else the default.
pub(crate) fn resolve_path(cli: Option<&Path>) -> PathBuf {
    if let Some(p) = cli {
        return p.to_owned();
    }
    match std::env::var_os(ENV_PATH) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

impl Config {
    /// Reads and validates the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Syntax {
                line,
                key,
                problem,
                fix,
                ..
            } => ConfigError::Syntax {
                path: path.to_owned(),
                line,
                key,
                problem,
                fix,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let x = explain::explain(text, &e);
            ConfigError::Syntax {
                path: PathBuf::new(),
                line: x.line,
                key: x.key,
                problem: x.problem,
                fix: x.fix,
            }
        })?;
        if config.rules.is_empty() {
            config.rules = crate::classify::default_rules();
        }
        config.validate()?;
        config.smtp.sent_copy = config.resolved_sent_copy();
        // The sender opens no more SMTP connections than the mailbox's
        // provider allows beside the IMAP ones (`imap.max_connections`).
        config.smtp.connections = config.smtp_connection_cap(config.smtp.connections);
        config.deadlines = Some(config.build_policy()?);
        // Members are compared as bare, lower-cased addresses: "Alice
        // <Alice@Example.com>" in the file must still let Alice act.
        config.team.members = config
            .team
            .members
            .iter()
            .filter_map(|m| crate::address::parse_mailbox(m).map(|a| a.addr))
            .collect();
        Ok(config)
    }

    /// `smtp.sent_copy` as the daemon applies it: `"auto"` with SMTP through
    /// Google's or Microsoft's servers (`smtp.auth = "oauth2"`, provider
    /// `"google"` or `"microsoft"`) is `"server"`: Gmail and Exchange Online
    /// always save mail sent through their SMTP in Sent, Exchange a moment
    /// after accepting it, which a search right after sending can miss. No
    /// search, and never an APPEND beside the server's copy.
    fn resolved_sent_copy(&self) -> SentCopy {
        let provider_keeps_copy = self.smtp.auth == AuthMethod::Oauth2
            && self.oauth2.as_ref().is_some_and(|o| {
                matches!(o.provider, OAuthProvider::Google | OAuthProvider::Microsoft)
            });
        match self.smtp.sent_copy {
            SentCopy::Auto if provider_keeps_copy => SentCopy::Server,
            chosen => chosen,
        }
    }

    /// How many SMTP connections the sender may open at once when it wants
    /// `wanted` (e.g. `smtp.connections`): no more than `imap.max_connections`
    /// leaves beside the daemon's [`IMAP_CONNECTIONS`], no more than
    /// [`EXCHANGE_SMTP_CONNECTIONS`] through Exchange Online, and at least one.
    pub(crate) fn smtp_connection_cap(&self, wanted: u32) -> u32 {
        let through_exchange = self.smtp.auth == AuthMethod::Oauth2
            && self
                .oauth2
                .as_ref()
                .is_some_and(|o| o.provider == OAuthProvider::Microsoft);
        let provider_cap = if through_exchange {
            EXCHANGE_SMTP_CONNECTIONS
        } else {
            u32::MAX
        };
        wanted
            .min(self.imap.max_connections.saturating_sub(IMAP_CONNECTIONS))
            .min(provider_cap)
            .max(1)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_endpoint("imap", &self.imap.host, self.imap.security)?;
        check_endpoint("smtp", &self.smtp.host, self.smtp.security)?;
        if self.imap.username.trim().is_empty() {
            return Err(invalid(
                "imap.username",
                "is empty",
                "set the mailbox login, e.g. \"privacy@example.com\"",
            ));
        }
        self.imap
            .secret
            .check("imap", self.imap.auth == AuthMethod::Password)?;
        self.smtp.secret.check(
            "smtp",
            self.smtp.username.is_some() && self.smtp.auth == AuthMethod::Password,
        )?;
        self.validate_oauth()?;
        for (key, name) in [
            ("imap.mailbox", &self.imap.mailbox),
            ("imap.processed_mailbox", &self.imap.processed_mailbox),
            ("imap.review_mailbox", &self.imap.review_mailbox),
            ("imap.sent_mailbox", &self.imap.sent_mailbox),
        ] {
            if name.trim().is_empty() {
                return Err(invalid(
                    key,
                    "is empty",
                    "name an IMAP folder, e.g. \"Processed\"",
                ));
            }
        }
        if self.imap.processed_mailbox == self.imap.mailbox
            || self.imap.review_mailbox == self.imap.mailbox
        {
            return Err(invalid(
                "imap.processed_mailbox",
                "the processed and review folders must differ from imap.mailbox",
                "use separate folders, e.g. \"Processed\" and \"Review\"",
            ));
        }
        for (key, value, example) in [
            ("imap.max_mime_parts", self.imap.max_mime_parts, "1000"),
            ("imap.max_mime_depth", self.imap.max_mime_depth, "20"),
            ("agents.max_attachments", self.agents.max_attachments, "20"),
        ] {
            if value == 0 {
                return Err(invalid(
                    key,
                    "must be at least 1",
                    format!("e.g. {example}"),
                ));
            }
        }
        if self.imap.poll_interval_secs == 0 {
            return Err(invalid(
                "imap.poll_interval_secs",
                "must be at least 1",
                "e.g. 60",
            ));
        }
        if self.imap.max_connections <= IMAP_CONNECTIONS {
            return Err(invalid(
                "imap.max_connections",
                format!(
                    "{} leaves no SMTP connection beside the daemon's {IMAP_CONNECTIONS} IMAP connections (the mailbox session and the Sent-folder copy)",
                    self.imap.max_connections
                ),
                format!("set at least {}, e.g. 6", IMAP_CONNECTIONS + 1),
            ));
        }
        if self.smtp.max_messages_per_connection == 0 {
            return Err(invalid(
                "smtp.max_messages_per_connection",
                "must be at least 1",
                "e.g. 50",
            ));
        }
        if self.smtp.connections == 0 {
            return Err(invalid(
                "smtp.connections",
                "must be at least 1",
                "e.g. 4 (1 sends one mail at a time)",
            ));
        }
        crate::address::parse_mailbox(&self.smtp.from).ok_or_else(|| {
            invalid(
                "smtp.from",
                format!("{:?} is not an address", self.smtp.from),
                "write \"Privacy Team <privacy@example.com>\"",
            )
        })?;
        for (key, list) in [
            ("team.members", &self.team.members),
            ("team.notify", &self.team.notify),
        ] {
            for a in list {
                if crate::address::parse_mailbox(a).is_none() {
                    return Err(invalid(
                        key,
                        format!("{a:?} is not an e-mail address"),
                        "list plain addresses, e.g. [\"alice@example.com\"]",
                    ));
                }
            }
        }
        if self.team.require_dkim
            && self
                .team
                .trusted_authserv_ids
                .iter()
                .all(|id| id.trim().is_empty())
        {
            return Err(invalid(
                "team.trusted_authserv_ids",
                "is empty while team.require_dkim = true, so every mailed command would be refused",
                "list the authserv-id your MX writes in Authentication-Results, e.g. [\"mx.example.com\"], or set team.require_dkim = false",
            ));
        }
        self.digest_time()?;
        self.timezone()?;
        self.holidays()?;
        let prefix = &self.policy.case_prefix;
        if prefix.is_empty()
            || prefix.len() > 16
            || !prefix
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Err(invalid(
                "policy.case_prefix",
                format!("{prefix:?} is not 1-16 capital letters or digits"),
                "e.g. \"CCPA\"",
            ));
        }
        use crate::cases::clock::{
            MAX_ACKNOWLEDGE_BUSINESS_DAYS, MAX_EXTENSION_DAYS, MAX_RESPOND_DAYS,
        };
        // The law sets the longest periods; a shorter one is a company's choice.
        let clocks = [
            (
                "policy.acknowledge_business_days",
                self.policy.acknowledge_business_days,
                1,
                MAX_ACKNOWLEDGE_BUSINESS_DAYS,
                "CCPA regs §7021(a)",
            ),
            (
                "policy.respond_days",
                self.policy.respond_days,
                1,
                MAX_RESPOND_DAYS,
                "Civ. Code §1798.130(a)(2)(A), CCPA regs §7021(b)",
            ),
            (
                "policy.extension_days",
                self.policy.extension_days,
                0,
                MAX_EXTENSION_DAYS,
                "Civ. Code §1798.130(a)(2)(A)",
            ),
        ];
        for (key, value, min, max, cite) in clocks {
            if value > max {
                return Err(invalid(
                    key,
                    format!("{value} is above the legal maximum of {max} ({cite})"),
                    format!("set {max} or less"),
                ));
            }
            if value < min {
                return Err(invalid(
                    key,
                    "deadlines must be at least one day",
                    format!("set a value from {min} to {max}"),
                ));
            }
        }
        if self.policy.retention_months < 24 {
            return Err(invalid(
                "policy.retention_months",
                "CCPA regs §7101 require records for at least 24 months",
                "set 24 or more",
            ));
        }
        if self.company.name.trim().is_empty() {
            return Err(invalid(
                "company.name",
                "is empty",
                "set the company's name as consumers know it",
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.subjects.iter().all(|s| s.trim().is_empty()) {
                return Err(invalid(
                    &format!("rules[{i}].subjects"),
                    "has no phrase",
                    "list at least one subject phrase",
                ));
            }
        }
        Ok(())
    }

    pub fn timezone(&self) -> Result<chrono_tz::Tz, ConfigError> {
        self.policy.timezone.parse().map_err(|_| {
            invalid(
                "policy.timezone",
                format!("{:?} is not an IANA time zone", self.policy.timezone),
                "e.g. \"America/Los_Angeles\"",
            )
        })
    }

    pub fn holidays(&self) -> Result<Vec<chrono::NaiveDate>, ConfigError> {
        self.policy
            .holidays
            .iter()
            .map(|d| {
                chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                    invalid(
                        "policy.holidays",
                        format!("{d:?} is not a date"),
                        "write dates as \"2026-12-25\"",
                    )
                })
            })
            .collect()
    }

    /// `team.digest_time` as a local time of day; `None` for `"off"`.
    pub fn digest_time(&self) -> Result<Option<chrono::NaiveTime>, ConfigError> {
        self.team.digest_at().map_err(|_| {
            invalid(
                "team.digest_time",
                format!("{:?} is not HH:MM or \"off\"", self.team.digest_time),
                "e.g. \"09:00\"",
            )
        })
    }

    /// The deadline rules of `[policy]`, parsed at load. A bad time zone or
    /// holiday is the config-key error, never a silent default zone.
    /// The caps on one message's MIME structure, for [`crate::message::parse_with`].
    pub(crate) fn mime_limits(&self) -> crate::message::MimeLimits {
        crate::message::MimeLimits {
            max_parts: self.imap.max_mime_parts,
            max_depth: self.imap.max_mime_depth,
            max_attachments: self.agents.max_attachments,
        }
    }

    pub fn policy(&self) -> Result<crate::cases::Policy, ConfigError> {
        match &self.deadlines {
            Some(policy) => Ok(policy.clone()),
            None => self.build_policy(),
        }
    }

    fn build_policy(&self) -> Result<crate::cases::Policy, ConfigError> {
        Ok(crate::cases::Policy {
            timezone: self.timezone()?,
            holidays: self.holidays()?,
            acknowledge_business_days: self.policy.acknowledge_business_days,
            respond_days: self.policy.respond_days,
            extension_days: self.policy.extension_days,
            reminder_after_days: self.policy.reminder_after_days,
            retention_months: self.policy.retention_months,
        })
    }

    /// The mailbox's own address (from `smtp.from`), lower-cased.
    pub(crate) fn mailbox_address(&self) -> String {
        crate::address::parse_mailbox(&self.smtp.from)
            .map(|m| m.addr)
            .unwrap_or_default()
    }

    /// The domain our Message-IDs carry.
    pub(crate) fn message_id_domain(&self) -> String {
        let addr = self.mailbox_address();
        addr.rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_else(|| "privacy-mailroom.invalid".into())
    }
}

fn check_endpoint(section: &str, host: &str, security: Security) -> Result<(), ConfigError> {
    if host.trim().is_empty() {
        return Err(invalid(
            &format!("{section}.host"),
            "is empty",
            "set the server's host name",
        ));
    }
    if security == Security::None && !crate::tls::is_loopback_host(host) {
        return Err(invalid(
            &format!("{section}.security"),
            format!("\"none\" (plain text) is only allowed for a loopback host, not {host:?}"),
            "use \"tls\" or \"starttls\"",
        ));
    }
    Ok(())
}

impl Secret {
    fn check(&self, section: &str, required: bool) -> Result<(), ConfigError> {
        let given = [
            self.password.is_some(),
            self.password_file.is_some(),
            self.password_env.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count();
        if given > 1 {
            return Err(invalid(
                &format!("{section}.password"),
                "more than one of password, password_file and password_env is set",
                "keep exactly one",
            ));
        }
        if given == 0 && required {
            return Err(invalid(
                &format!("{section}.password_file"),
                "no password is configured",
                "set password_file (recommended, e.g. a systemd credential), password_env or password",
            ));
        }
        Ok(())
    }

    /// Reads the secret (file contents without the trailing newline).
    pub(crate) fn resolve(&self, section: &str) -> Result<Option<String>, ConfigError> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    &format!("{section}.password_file"),
                    format!("cannot read {}: {e}", path.display()),
                    "check the path and that the service user may read it",
                )
            })?;
            return Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()));
        }
        if let Some(var) = &self.password_env {
            return std::env::var(var).map(Some).map_err(|_| {
                invalid(
                    &format!("{section}.password_env"),
                    format!("environment variable {var} is not set"),
                    "export it in the service environment",
                )
            });
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const MINIMAL: &str = r#"
[imap]
host = "127.0.0.1"
security = "none"
username = "privacy@example.com"
password = "secret"
[smtp]
host = "127.0.0.1"
security = "none"
from = "Privacy Team <privacy@example.com>"
[team]
[agents]
[storage]
[policy]
[templates]
[company]
name = "Example Inc."
[logging]
"#;

    #[test]
    fn max_connections_leaves_the_smtp_side_what_imap_does_not_use() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.imap.max_connections, 6);
        // The default leaves four SMTP connections.
        assert_eq!(config.smtp_connection_cap(4), 4);
        assert_eq!(config.smtp_connection_cap(10), 4);
        assert_eq!(config.smtp_connection_cap(1), 1);
        assert_eq!(config.smtp_connection_cap(0), 1);
        let three =
            Config::parse(&MINIMAL.replace("[smtp]", "max_connections = 3\n[smtp]")).unwrap();
        assert_eq!(three.smtp_connection_cap(4), 1);
        for low in [0, 1, 2] {
            let err = Config::parse(
                &MINIMAL.replace("[smtp]", &format!("max_connections = {low}\n[smtp]")),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("config key `imap.max_connections`"),
                "{err}"
            );
            assert!(err.contains("fix: set at least 3"), "{err}");
        }
    }

    #[test]
    fn require_dkim_needs_trusted_authserv_ids() {
        let on = MINIMAL.replace("[team]", "[team]\nrequire_dkim = true");
        let err = Config::parse(&on).unwrap_err().to_string();
        assert!(err.contains("team.trusted_authserv_ids"), "{err}");
        assert!(err.contains("fix:"), "{err}");
        let blank = MINIMAL.replace(
            "[team]",
            "[team]\nrequire_dkim = true\ntrusted_authserv_ids = [\" \"]",
        );
        assert!(Config::parse(&blank).is_err());
        let named = MINIMAL.replace(
            "[team]",
            "[team]\nrequire_dkim = true\ntrusted_authserv_ids = [\"mx.example.com\"]",
        );
        assert!(Config::parse(&named).is_ok());
    }

    #[test]
    fn smtp_connections_are_at_least_one() {
        let parsed = Config::parse(MINIMAL).expect("minimal config");
        assert_eq!(parsed.smtp.connections, 4);
        let zero = MINIMAL.replace("[smtp]", "[smtp]\nconnections = 0");
        let err = Config::parse(&zero).unwrap_err().to_string();
        assert!(err.contains("smtp.connections"), "{err}");
        assert!(err.contains("fix:"), "{err}");
        let one = MINIMAL.replace("[smtp]", "[smtp]\nconnections = 1");
        assert_eq!(
            Config::parse(&one)
                .expect("one connection")
                .smtp
                .connections,
            1
        );
        // Capped by what imap.max_connections leaves beside the two IMAP ones.
        let capped = MINIMAL
            .replace("[smtp]", "[smtp]\nconnections = 8")
            .replace("[imap]", "[imap]\nmax_connections = 5");
        assert_eq!(Config::parse(&capped).expect("capped").smtp.connections, 3);
    }

    #[test]
    fn key_file_needs_32_bytes() {
        let path = Path::new("/etc/privacy-mailroom/key");
        let err = check_key_file(path, b"short").unwrap_err().to_string();
        assert!(err.starts_with("config key `storage.key_file`"), "{err}");
        assert!(
            err.contains("5 bytes") && err.contains("head -c 32"),
            "{err}"
        );
        assert!(check_key_file(path, b"").is_err());
        assert!(check_key_file(path, &[7u8; 32]).is_ok());
    }

    #[test]
    fn the_policy_is_parsed_once_into_typed_values() {
        let text = MINIMAL.replace(
            "[policy]",
            "[policy]\ntimezone = \"America/New_York\"\nholidays = [\"2026-12-25\"]",
        );
        let c = Config::parse(&text).unwrap();
        let p = c.policy().unwrap();
        assert_eq!(p.timezone, chrono_tz::America::New_York);
        assert_eq!(
            p.holidays,
            [chrono::NaiveDate::from_ymd_opt(2026, 12, 25).unwrap()]
        );
        // A value broken after load is the key's error, not Los Angeles.
        let mut broken = c.clone();
        broken.deadlines = None;
        broken.policy.timezone = "Mars/Base".into();
        let e = broken.policy().unwrap_err().to_string();
        assert!(e.contains("policy.timezone"), "{e}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.imap.port, 993);
        assert_eq!(c.policy.respond_days, 45);
        assert_eq!(c.mailbox_address(), "privacy@example.com");
        assert_eq!(c.message_id_domain(), "example.com");
        assert!(!c.rules.is_empty());
        let named = MINIMAL.replace(
            "[team]",
            "[team]\nmembers = [\"Alice <Alice@Example.com>\"]",
        );
        assert_eq!(
            Config::parse(&named).unwrap().team.members,
            ["alice@example.com"]
        );
    }

    #[test]
    fn the_example_lists_the_default_rules() {
        let example = Config::parse(include_str!("../config/example.toml")).unwrap();
        assert_eq!(example.rules, crate::classify::default_rules());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (MINIMAL.replace("[team]", "[team]\nbogus = 1"), "bogus"),
            (
                MINIMAL.replace(
                    "host = \"127.0.0.1\"\nsecurity = \"none\"\nusername",
                    "host = \"imap.example.com\"\nsecurity = \"none\"\nusername",
                ),
                "imap.security",
            ),
            (
                MINIMAL.replace("[policy]", "[policy]\ntimezone = \"Mars/Base\""),
                "policy.timezone",
            ),
            (
                MINIMAL.replace("[policy]", "[policy]\nholidays = [\"25.12.2026\"]"),
                "policy.holidays",
            ),
            (
                MINIMAL.replace("[team]", "[team]\ndigest_time = \"9am\""),
                "team.digest_time",
            ),
            (
                MINIMAL.replace("password = \"secret\"", ""),
                "imap.password_file",
            ),
            (
                MINIMAL.replace("[team]", "[team]\nmembers = [\"not an address\"]"),
                "team.members",
            ),
            (
                MINIMAL.replace("[imap]", "[imap]\nsecurity = \"ssl\""),
                "security",
            ),
            (
                MINIMAL.replace("[policy]", "[policy]\nrespond_days = 46"),
                "config key `policy.respond_days`: 46 is above the legal maximum of 45",
            ),
            (
                MINIMAL.replace("[policy]", "[policy]\nextension_days = 60"),
                "config key `policy.extension_days`: 60 is above the legal maximum of 45",
            ),
            (
                MINIMAL.replace("[policy]", "[policy]\nacknowledge_business_days = 11"),
                "config key `policy.acknowledge_business_days`: 11 is above the legal maximum of 10",
            ),
            (
                MINIMAL.replace("[policy]", "[policy]\nrespond_days = 0"),
                "policy.respond_days",
            ),
        ];
        for (text, key) in cases {
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn left_out_sections_mean_their_defaults() {
        let mut text = MINIMAL.to_string();
        for section in [
            "[team]\n",
            "[agents]\n",
            "[storage]\n",
            "[policy]\n",
            "[templates]\n",
            "[logging]\n",
        ] {
            text = text.replace(section, "");
        }
        let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.policy.respond_days, 45);
        assert_eq!(c.policy.case_prefix, "CCPA");
        assert!(c.agents.require_notarized);
        assert_eq!(c.team.digest_time, "09:00");
        assert_eq!(
            c.templates.dir,
            Path::new("/usr/share/privacy-mailroom/templates")
        );
        assert_eq!(
            c.templates.override_dir.as_deref(),
            Some(Path::new("/etc/privacy-mailroom/templates"))
        );
        assert_eq!(c.logging.format, LogFormat::Auto);
    }

    fn syntax(text: &str) -> String {
        let e = Config::parse(text).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        e.to_string()
    }

    #[test]
    fn a_mistyped_key_names_its_line_and_the_nearest_key() {
        let text = MINIMAL.replace("password = \"secret\"", "pasword_file = \"/run/x\"");
        let e = syntax(&text);
        assert!(
            e.starts_with("config key `imap.pasword_file` (line 6)"),
            "{e}"
        );
        assert!(e.contains("fix: did you mean `password_file`?"), "{e}");
        let e = syntax(&MINIMAL.replace("[policy]", "[policy]\ntimezon = \"UTC\""));
        assert!(e.contains("`policy.timezon`"), "{e}");
        assert!(e.contains("did you mean `timezone`?"), "{e}");
        let e = syntax(&MINIMAL.replace("[agents]", "[agent]"));
        assert!(e.starts_with("config key `agent` (line 12)"), "{e}");
        assert!(
            e.contains("there is no section [agent]; fix: did you mean [agents]?"),
            "{e}"
        );
        // A mistyped required key: serde calls it missing; the typo is named.
        let e = syntax(&MINIMAL.replacen("host = ", "hots = ", 1));
        assert!(e.starts_with("config key `imap.hots` (line 3)"), "{e}");
        assert!(e.contains("did you mean `host`?"), "{e}");
    }

    #[test]
    fn a_wrong_type_says_what_to_write() {
        let e = syntax(&MINIMAL.replace("[imap]", "[imap]\nport = \"993\""));
        assert!(e.contains("imap.port must be a number, e.g. 993"), "{e}");
        assert!(e.contains("; fix: write `port = 993`"), "{e}");
        let e = syntax(&MINIMAL.replace("[imap]", "[imap]\nidle = \"yes\""));
        assert!(e.contains("imap.idle must be true or false"), "{e}");
        let e = syntax(&MINIMAL.replace(
            "security = \"none\"\nusername",
            "security = \"ssl\"\nusername",
        ));
        assert!(e.starts_with("config key `imap.security`"), "{e}");
        assert!(e.contains("\"tls\""), "{e}");
    }

    #[test]
    fn a_syntax_error_never_prints_an_inline_secret() {
        let text = MINIMAL.replace("password = \"secret\"", "password = \"hunter2");
        let e = syntax(&text);
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.starts_with("config key `imap.password` (line 6)"), "{e}");
        assert!(e.contains("; fix: "), "{e}");
        let text = MINIMAL.replace("password = \"secret\"", "password = hunter2");
        let e = syntax(&text);
        assert!(!e.contains("hunter2"), "{e}");
        // Other lines are quoted, to find the mistake.
        let e = syntax(&MINIMAL.replace("[policy]", "[policy]\ntimezone = UTC"));
        assert!(e.contains("timezone = UTC"), "{e}");
    }

    #[test]
    fn every_error_has_the_key_and_fix_form() {
        let cases = [
            MINIMAL.replace("[imap]\n", "[imapx]\n"),
            MINIMAL.replace(
                "host = \"127.0.0.1\"\nsecurity = \"none\"\nusername",
                "security = \"none\"\nusername",
            ),
            MINIMAL.replace("[company]\nname = \"Example Inc.\"", ""),
            MINIMAL.replace("[team]", "[team\n"),
            MINIMAL.replace("[policy]", "[policy]\nretention_months = 3"),
        ];
        for text in cases {
            let e = Config::parse(&text).unwrap_err().to_string();
            assert!(e.starts_with("config key `"), "{e}");
            assert!(e.contains("; fix: "), "{e}");
        }
    }
}
