//! The TOML configuration (SPEC §9). Unknown keys and bad values are errors
//! that name the key and say how to fix it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::classify::Rule;

/// Where the config is looked for when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/privacy-mailroom/config.toml";
pub const ENV_PATH: &str = "PRIVACY_MAILROOM_CONFIG";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Implicit TLS (IMAPS 993, SMTPS 465).
    Tls,
    Starttls,
    /// Plain text; refused unless the host is a loopback address.
    None,
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
}

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
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    #[serde(default)]
    pub known_domains: Vec<String>,
    #[serde(default = "d_max_attachment")]
    pub max_attachment_bytes: u64,
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
    #[serde(default = "d_templates")]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompanyConfig {
    pub name: String,
    /// Shown in mail: where consumers can read the privacy policy.
    pub privacy_policy_url: Option<String>,
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

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub imap: ImapConfig,
    pub smtp: SmtpConfig,
    pub team: TeamConfig,
    pub agents: AgentsConfig,
    pub storage: StorageConfig,
    pub policy: PolicyConfig,
    pub templates: TemplatesConfig,
    pub company: CompanyConfig,
    pub logging: LoggingConfig,
    /// Ordered subject rules; the SPEC §3 defaults when absent.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

fn d_imap_port() -> u16 { 993 }
fn d_smtp_port() -> u16 { 587 }
fn d_tls() -> Security { Security::Tls }
fn d_starttls() -> Security { Security::Starttls }
fn d_inbox() -> String { "INBOX".into() }
fn d_processed() -> String { "Processed".into() }
fn d_review() -> String { "Review".into() }
fn d_sent() -> String { "Sent".into() }
fn d_true() -> bool { true }
fn d_poll() -> u64 { 60 }
fn d_backlog() -> u32 { 45 }
fn d_max_message() -> u64 { 52_428_800 }
fn d_per_conn() -> u32 { 50 }
fn d_digest() -> String { "09:00".into() }
fn d_burst() -> u32 { 20 }
fn d_max_attachment() -> u64 { 26_214_400 }
fn d_database() -> PathBuf { "/var/lib/privacy-mailroom/mailroom.db".into() }
fn d_attachments() -> PathBuf { "/var/lib/privacy-mailroom/attachments".into() }
fn d_prefix() -> String { "CCPA".into() }
fn d_tz() -> String { "America/Los_Angeles".into() }
fn d_ack_days() -> u32 { 10 }
fn d_45() -> u32 { 45 }
fn d_reminder() -> u32 { 7 }
fn d_retention() -> u32 { 24 }
fn d_auto_replies() -> u32 { 5 }
fn d_templates() -> PathBuf { "/usr/share/privacy-mailroom/templates".into() }
fn d_log_format() -> LogFormat { LogFormat::Auto }

#[allow(dead_code)]
fn _unused(_: &Path) {}
