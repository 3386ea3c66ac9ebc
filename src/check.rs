//! `check`: tells an admin exactly what is wrong and how to fix it, one line
//! per finding, in the order a connection is built (config, files, database,
//! templates, then per server DNS → TCP → TLS → login → folders/capabilities).
//! A step that fails skips the steps that depend on it, so one problem gives
//! one line. Nothing is created or changed: the database is opened read-only
//! and folders are only looked at.
//!
//! Exit status: 0 when every line is ok, 1 otherwise (a config file that does
//! not load exits 2 before any check runs, naming the key).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::config::{Config, Security};
use crate::errors::Failure;

/// A certificate expiring within this many days fails the check.
pub(crate) const EXPIRY_WARNING_DAYS: u64 = 14;

/// How long one network step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// One line of the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckLine {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// Works, but an admin should know (ok stays true: exit 0).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
}

/// The collected lines.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<CheckLine>,
}

impl Report {
    fn ok(&mut self, name: &str, detail: impl Into<String>) {
        self.push(name, true, detail.into());
    }

    fn fail(&mut self, name: &str, detail: impl Into<String>) {
        self.push(name, false, detail.into());
    }

    fn warn(&mut self, name: &str, detail: impl Into<String>) {
        self.push(name, true, detail.into());
        if let Some(last) = self.lines.last_mut() {
            last.warning = true;
        }
    }

    fn push(&mut self, name: &str, ok: bool, detail: String) {
        self.lines.push(CheckLine {
            name: name.to_string(),
            ok,
            detail,
            warning: false,
        });
    }

    pub fn failed(&self) -> usize {
        self.lines.iter().filter(|l| !l.ok).count()
    }
}

/// `privacy-mailroom check [--json]`.
pub async fn run(config: &Config, config_path: &Path, json: bool) -> Result<ExitCode, Failure> {
    let report = collect(config, config_path).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.lines)?);
    } else {
        for l in &report.lines {
            println!(
                "{} {:<18} {}",
                match (l.ok, l.warning) {
                    (true, false) => "ok  ",
                    (true, true) => "WARN",
                    (false, _) => "FAIL",
                },
                l.name,
                l.detail
            );
        }
    }
    match report.failed() {
        0 => Ok(ExitCode::SUCCESS),
        n => {
            if !json {
                eprintln!("{n} checks failed.");
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// Runs every check.
pub async fn collect(config: &Config, config_path: &Path) -> Report {
    let mut r = Report::default();
    r.ok("config", format!("{} is valid", config_path.display()));
    check_files(&mut r, config, config_path);
    check_database(&mut r, config).await;
    check_commands(&mut r, config);
    check_team_mail(&mut r, config).await;
    check_templates(&mut r, config);
    let oauth = check_oauth(&mut r, config).await;
    // Without a token an OAuth login fails with the same error again: those
    // steps are skipped (one problem, one line); password edges still run.
    let provider = match &oauth {
        Some(OAuthCheck::Ready(p)) => Some(p),
        _ => None,
    };
    check_imap(&mut r, config, provider).await;
    check_smtp(&mut r, config, provider).await;
    r
}

/// The OAuth steps' outcome.
enum OAuthCheck {
    Ready(crate::oauth::TokenProvider),
    NoToken,
}

/// `auth = "oauth2"`: the token endpoint (DNS, TCP), then a token (its expiry
/// and scopes, or the refusal with its fix). TLS to the endpoint is verified
/// by the token request itself.
async fn check_oauth(r: &mut Report, config: &Config) -> Option<OAuthCheck> {
    let provider = match config.token_provider() {
        Ok(Some(p)) => p,
        Ok(None) => return None,
        Err(e) => {
            r.fail("oauth2 token", e.to_string());
            return Some(OAuthCheck::NoToken);
        }
    };
    let url = provider.token_url();
    let parsed = oauth2::url::Url::parse(&url).ok();
    let host = parsed
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let port = parsed
        .as_ref()
        .and_then(oauth2::url::Url::port_or_known_default)
        .unwrap_or(443);
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let reached =
        tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect((bare.as_str(), port))).await;
    match reached {
        Ok(Ok(_)) => r.ok(
            "oauth2 endpoint",
            format!("{host}:{port} reachable ({url})"),
        ),
        Ok(Err(e)) => {
            r.fail(
                "oauth2 endpoint",
                format!("cannot reach {host}:{port} ({e}); check DNS, the network, and any proxy or firewall between this host and the identity provider"),
            );
            return Some(OAuthCheck::NoToken);
        }
        Err(_) => {
            r.fail(
                "oauth2 endpoint",
                format!(
                    "{host}:{port} did not answer within {} s; check the network and firewall",
                    STEP_TIMEOUT.as_secs()
                ),
            );
            return Some(OAuthCheck::NoToken);
        }
    }
    if let Some((at, soon)) = provider.certificate_expiry() {
        let date = at.format("%Y-%m-%d");
        if soon {
            r.fail("oauth2 certificate", format!(
                "oauth2.client_certificate_file expires on {date}, within {} days; fix: create a new certificate, upload it to the app registration (Certificates & secrets) and point client_certificate_file and client_key_file at it",
                crate::oauth::CREDENTIAL_WARNING_DAYS));
        } else {
            r.ok("oauth2 certificate", format!("valid until {date}"));
        }
    }
    if let Some((day, soon)) = provider.client_secret_expiry() {
        if soon {
            r.fail("oauth2 client secret", format!(
                "the client secret expires on {day} (oauth2.client_secret_expires), within {} days; fix: create a new client secret in the app registration (Certificates & secrets), put its value in the secret file and set client_secret_expires to its expiry",
                crate::oauth::CREDENTIAL_WARNING_DAYS));
        } else {
            r.ok("oauth2 client secret", format!("valid until {day}"));
        }
    }
    match provider.token().await {
        Ok(token) => {
            let expiry = match token.expires {
                Some(at) => format!(
                    "expires {} (in {} s)",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    (at - chrono::Utc::now()).num_seconds()
                ),
                None => "no expiry given (assumed 1 hour)".to_string(),
            };
            r.ok(
                "oauth2 token",
                format!(
                    "obtained ({} flow); {expiry}; scopes: {}",
                    flow_label(provider.settings().flow),
                    token.scopes.join(" ")
                ),
            );
            Some(OAuthCheck::Ready(provider))
        }
        Err(e) => {
            r.fail("oauth2 token", e.to_string());
            Some(OAuthCheck::NoToken)
        }
    }
}

fn flow_label(flow: crate::config::OAuthFlow) -> &'static str {
    match flow {
        crate::config::OAuthFlow::ClientCredentials => "client credentials",
        crate::config::OAuthFlow::ServiceAccount => "service account",
        crate::config::OAuthFlow::RefreshToken => "refresh token",
    }
}

fn group_or_other(mode: u32) -> bool {
    mode & 0o077 != 0
}

fn check_files(r: &mut Report, config: &Config, config_path: &Path) {
    let inline = config.imap.secret.password.is_some()
        || config.smtp.secret.password.is_some()
        || config
            .oauth2
            .as_ref()
            .is_some_and(|o| o.client_secret.is_some());
    match std::fs::metadata(config_path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o002 != 0 {
                r.fail(
                    "config permissions",
                    format!(
                        "{} is writable by everyone (mode {mode:04o}); fix: chmod go-w {}",
                        config_path.display(),
                        config_path.display()
                    ),
                );
            } else if inline && group_or_other(mode) {
                r.fail("config permissions", format!(
                    "{} holds a password and is readable by group or others (mode {mode:04o}); fix: chmod 600 {} or move the password to password_file",
                    config_path.display(), config_path.display()));
            } else if inline {
                r.ok(
                    "config permissions",
                    format!("mode {mode:04o}, holds a password readable only by its owner"),
                );
            } else {
                r.ok(
                    "config permissions",
                    format!("mode {mode:04o}, holds no password"),
                );
            }
        }
        Err(e) => r.fail(
            "config permissions",
            format!("cannot stat {}: {e}", config_path.display()),
        ),
    }
    let secrets = [
        (
            "imap.password_file",
            config.imap.secret.password_file.as_deref(),
        ),
        (
            "smtp.password_file",
            config.smtp.secret.password_file.as_deref(),
        ),
        ("storage.key_file", config.storage.key_file.as_deref()),
    ];
    for (key, path) in secrets {
        let Some(path) = path else { continue };
        let name = format!("{key} permissions");
        match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o7777;
                if group_or_other(mode) {
                    r.fail(&name, format!(
                        "{} is readable by group or others (mode {mode:04o}); fix: chmod 600 {}",
                        path.display(), path.display()));
                } else if std::fs::File::open(path).is_err() {
                    r.fail(&name, format!(
                        "{} cannot be read by this user; run check as the service user, or while the service runs for /run/credentials paths",
                        path.display()));
                } else if key == "storage.key_file"
                    && let Ok(bytes) = std::fs::read(path)
                    && let Err(e) = crate::config::check_key_file(path, &bytes)
                {
                    r.fail(&name, e.to_string());
                } else {
                    r.ok(&name, format!("{} mode {mode:04o}", path.display()));
                }
            }
            Err(e) => {
                let hint = if path.starts_with("/run/credentials") {
                    "; systemd credentials exist only while the service runs: start it, or run check with a config that points at the source files"
                } else {
                    "; fix the path in the config"
                };
                r.fail(&name, format!("cannot read {}: {e}{hint}", path.display()));
            }
        }
    }
}

async fn check_database(r: &mut Report, config: &Config) {
    let path = &config.storage.database;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if !path.exists() {
        match dir {
            Some(d) if !d.exists() => r.ok(
                "database",
                format!(
                    "{} does not exist yet; `run` or `migrate` creates it and {} (0700)",
                    path.display(),
                    d.display()
                ),
            ),
            _ => r.ok(
                "database",
                format!(
                    "{} does not exist yet; `run` or `migrate` creates it (0600)",
                    path.display()
                ),
            ),
        }
        return;
    }
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o7777;
        if group_or_other(mode) {
            r.fail(
                "database permissions",
                format!(
                    "{} is readable by group or others (mode {mode:04o}); fix: chmod 600 {}",
                    path.display(),
                    path.display()
                ),
            );
        }
    }
    let attachments = &config.storage.attachments_dir;
    if let Ok(meta) = std::fs::metadata(attachments) {
        let mode = meta.permissions().mode() & 0o7777;
        if group_or_other(mode) {
            r.fail(
                "attachments permissions",
                format!(
                    "{} is open to group or others (mode {mode:04o}); fix: chmod 700 {}",
                    attachments.display(),
                    attachments.display()
                ),
            );
        }
    }
    match crate::store::migration_status(path).await {
        Ok((_, _, unknown)) if unknown > 0 => r.fail("database", format!(
            "{}: {unknown} migrations applied that this binary does not know (a newer version ran here); install that version or newer", path.display())),
        Ok((applied, 0, _)) => r.ok("database", format!("{}: schema up to date ({applied} migrations)", path.display())),
        Ok((applied, pending, _)) => r.ok("database", format!(
            "{}: {applied} migrations applied, {pending} pending; `run` applies them at start (or run `privacy-mailroom migrate`)", path.display())),
        Err(e) => r.fail("database", format!("cannot read {}: {e}; check storage.database and that this user may read it", path.display())),
    }
}

/// What protects mailed commands in this configuration (docs/privacy-team.md).
fn check_commands(r: &mut Report, config: &Config) {
    let team = &config.team;
    if team.members.is_empty() {
        r.ok("team commands", "no team.members: mailed commands are off");
    } else if team.require_dkim {
        r.ok(
            "team commands",
            format!(
                "need our MX's authentication (aligned dkim=pass or auth=pass in the topmost Authentication-Results of {})",
                team.trusted_authserv_ids.join(", ")
            ),
        );
    } else {
        r.warn(
            "team commands",
            "run without authentication (team.require_dkim = false): anyone who writes a member's address in From and quotes a notice's Message-ID can close, verify or complete a case; fix: set team.require_dkim = true and team.trusted_authserv_ids to your MX's authserv-id (docs/privacy-team.md)",
        );
    }
}

/// Team mail a server refused for good in the last days: failing while the
/// address is still configured, a warning once it is gone from the lists.
async fn check_team_mail(r: &mut Report, config: &Config) {
    let path = &config.storage.database;
    if !path.exists() {
        return;
    }
    let since =
        chrono::Utc::now() - chrono::Duration::days(crate::store::outbox::FAILED_TEAM_MAIL_DAYS);
    let failed = async {
        let mut conn = crate::store::read_only(path).await?;
        crate::store::outbox::failed_team_mail(&mut conn, since, 100).await
    }
    .await;
    let failed = match failed {
        Ok(f) => f,
        // An older schema (migrations pending) has no record of it yet.
        Err(_) => return,
    };
    if failed.is_empty() {
        r.ok(
            "team mail",
            format!(
                "no team mail refused in the last {} days",
                crate::store::outbox::FAILED_TEAM_MAIL_DAYS
            ),
        );
        return;
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in &failed {
        if !seen.insert(f.recipient.clone()) {
            continue;
        }
        let count = failed.iter().filter(|g| g.recipient == f.recipient).count();
        let error = f.error.as_deref().unwrap_or("refused");
        let configured = config
            .team
            .notify
            .iter()
            .chain(config.team.members.iter())
            .filter_map(|a| crate::address::parse_mailbox(a).map(|m| m.addr))
            .any(|a| a.eq_ignore_ascii_case(&f.recipient));
        let detail = format!(
            "{count} team mail(s) to {} refused for good, last {} ({error})",
            f.recipient,
            f.at.format("%Y-%m-%d %H:%M UTC")
        );
        if configured {
            r.fail(
                "team mail",
                format!("{detail}; the others got them; fix: correct or remove the address in team.notify (then SIGHUP)"),
            );
        } else {
            r.warn("team mail", format!("{detail}; no longer configured"));
        }
    }
}

fn check_templates(r: &mut Report, config: &Config) {
    match crate::templates::Templates::from_config(&config.templates) {
        Ok(t) => {
            let problems = t.check();
            if problems.is_empty() {
                r.ok(
                    "templates",
                    format!(
                        "{} templates in {} render in strict mode",
                        t.names().len(),
                        t.describe_dirs()
                    ),
                );
            } else {
                for p in problems {
                    r.fail("templates", p.to_string());
                }
            }
        }
        Err(e) => r.fail("templates", e.to_string()),
    }
}

/// DNS and TCP; returns the connected socket.
async fn reach(r: &mut Report, section: &str, host: &str, port: u16) -> Option<TcpStream> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(STEP_TIMEOUT, tokio::net::lookup_host((bare, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(e)) => {
                r.fail(
                    &format!("{section} dns"),
                    format!(
                        "cannot resolve {host}: {e}; check {section}.host and this machine's DNS"
                    ),
                );
                return None;
            }
            Err(_) => {
                r.fail(
                    &format!("{section} dns"),
                    format!(
                        "resolving {host} took over {} s; check this machine's DNS",
                        STEP_TIMEOUT.as_secs()
                    ),
                );
                return None;
            }
        };
    let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    if addrs.is_empty() {
        r.fail(
            &format!("{section} dns"),
            format!("{host} has no address; check {section}.host"),
        );
        return None;
    }
    r.ok(
        &format!("{section} dns"),
        format!("{host} resolves to {}", shown.join(", ")),
    );
    let mut last = String::new();
    for addr in &addrs {
        match tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                r.ok(&format!("{section} tcp"), format!("connected to {addr}"));
                return Some(s);
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => last = format!("{addr}: no answer within {} s", STEP_TIMEOUT.as_secs()),
        }
    }
    r.fail(&format!("{section} tcp"), format!(
        "cannot connect to {host}:{port} ({last}); check {section}.port, firewalls, and that the server runs"));
    None
}

/// Records the chain the server presented, then verifies it as usual.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Option<(CertificateDer<'static>, Vec<CertificateDer<'static>>)>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some((
                end_entity.clone().into_owned(),
                intermediates
                    .iter()
                    .map(|c| c.clone().into_owned())
                    .collect(),
            ));
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// The TLS handshake with certificate chain, name and expiry checks.
async fn tls_check(
    r: &mut Report,
    section: &str,
    host: &str,
    ca_file: Option<&Path>,
    tcp: TcpStream,
) -> Option<Tls> {
    let name = format!("{section} tls");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        match crate::tls::read_ca(path) {
            Ok(certs) => {
                for c in certs {
                    if let Err(e) = roots.add(c) {
                        r.fail(&name, format!("{section}.ca_file {}: {e}", path.display()));
                        return None;
                    }
                }
            }
            Err(e) => {
                r.fail(&name, e.to_string());
                return None;
            }
        }
    }
    let inner = match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
    {
        Ok(v) => v,
        Err(e) => {
            r.fail(
                &name,
                format!("cannot set up certificate verification: {e}"),
            );
            return None;
        }
    };
    let recorder = Arc::new(Recorder {
        inner: inner.clone(),
        seen: Mutex::new(None),
    });
    let config = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_no_client_auth(),
        Err(e) => {
            r.fail(&name, format!("cannot set up TLS: {e}"));
            return None;
        }
    };
    let server_name = match crate::tls::server_name(host) {
        Ok(n) => n,
        Err(e) => {
            r.fail(&name, e.to_string());
            return None;
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = match tokio::time::timeout(
        STEP_TIMEOUT,
        connector.connect(server_name.clone(), tcp),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            r.fail(&name, tls_advice(section, host, &e));
            return None;
        }
        Err(_) => {
            r.fail(&name, format!("TLS handshake with {host} took over {} s; check {section}.port and {section}.security", STEP_TIMEOUT.as_secs()));
            return None;
        }
    };
    let seen = recorder.seen.lock().ok().and_then(|s| s.clone());
    let Some((leaf, intermediates)) = seen else {
        r.ok(&name, "handshake done");
        return Some(stream);
    };
    let soon = UnixTime::since_unix_epoch(
        UnixTime::now()
            .as_secs()
            .checked_add(EXPIRY_WARNING_DAYS * 86_400)
            .map(Duration::from_secs)
            .unwrap_or(Duration::MAX),
    );
    match inner.verify_server_cert(&leaf, &intermediates, &server_name, &[], soon) {
        Err(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { not_after, .. })) => {
            let date = chrono::DateTime::from_timestamp(not_after.as_secs() as i64, 0).map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default();
            r.fail(&name, format!("the certificate of {host} (or its chain) expires on {date}, within {EXPIRY_WARNING_DAYS} days; renew it on the server"));
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Expired)) => {
            r.fail(&name, format!("the certificate of {host} (or its chain) expires within {EXPIRY_WARNING_DAYS} days; renew it on the server"));
        }
        _ => r.ok(&name, format!(
            "certificate chain trusted{}, name {host} matches, valid for more than {EXPIRY_WARNING_DAYS} days",
            if ca_file.is_some() { " (web PKI roots + ca_file)" } else { " (web PKI roots)" })),
    }
    Some(stream)
}

/// Says what a failed handshake means and what to do.
fn tls_advice(section: &str, host: &str, e: &std::io::Error) -> String {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer => format!(
                "the certificate of {host} is signed by an unknown CA; if the server uses a private CA, set {section}.ca_file to that CA's certificate (PEM)"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the certificate does not name {host}; set {section}.host to a name the certificate lists"
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the certificate of {host} has expired; renew it on the server")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
                "the certificate of {host} is not valid yet; check the clock of this machine and of the server"
            ),
            other => format!("the certificate of {host} is not acceptable: {other:?}"),
        },
        Some(other) => format!(
            "TLS handshake with {host} failed: {other}; check {section}.port and {section}.security"
        ),
        None => format!(
            "TLS handshake with {host} failed: {e}; check {section}.port and {section}.security (993/465 are \"tls\", 143/587 \"starttls\")"
        ),
    }
}

async fn read_line<S: AsyncRead + Unpin>(reader: &mut BufReader<S>) -> std::io::Result<String> {
    let mut line = String::new();
    let n = tokio::time::timeout(STEP_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(line.trim_end().to_string())
}

/// Plain IMAP up to the point where TLS starts.
async fn imap_starttls(tcp: TcpStream) -> Result<TcpStream, String> {
    let mut reader = BufReader::new(tcp);
    let greeting = read_line(&mut reader)
        .await
        .map_err(|e| format!("no greeting: {e}"))?;
    if !greeting.starts_with("* OK") {
        return Err(format!("unexpected greeting {greeting:?}"));
    }
    reader
        .get_mut()
        .write_all(b"c1 STARTTLS\r\n")
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let line = read_line(&mut reader).await.map_err(|e| e.to_string())?;
        if let Some(rest) = line.strip_prefix("c1 ") {
            return if rest.starts_with("OK") {
                Ok(reader.into_inner())
            } else {
                Err(format!("server answered {line:?}"))
            };
        }
    }
}

async fn check_imap(r: &mut Report, config: &Config, oauth: Option<&crate::oauth::TokenProvider>) {
    let cfg = &config.imap;
    if cfg.auth == crate::config::AuthMethod::Oauth2 && oauth.is_none() {
        return;
    }
    let Some(tcp) = reach(r, "imap", &cfg.host, cfg.port).await else {
        return;
    };
    match cfg.security {
        Security::None => {
            drop(tcp);
            r.ok(
                "imap tls",
                "not used: plain text to a loopback host (imap.security = \"none\")",
            );
        }
        Security::Tls => {
            if tls_check(r, "imap", &cfg.host, cfg.ca_file.as_deref(), tcp)
                .await
                .is_none()
            {
                return;
            }
        }
        Security::Starttls => match imap_starttls(tcp).await {
            Ok(tcp) => {
                r.ok("imap starttls", "STARTTLS accepted");
                if tls_check(r, "imap", &cfg.host, cfg.ca_file.as_deref(), tcp)
                    .await
                    .is_none()
                {
                    return;
                }
            }
            Err(e) => {
                r.fail("imap starttls", format!("{e}; use imap.security = \"tls\" (usually port 993) if the server offers implicit TLS"));
                return;
            }
        },
    }
    let connected = match oauth.filter(|_| cfg.auth == crate::config::AuthMethod::Oauth2) {
        Some(provider) => {
            crate::imap::Imap::connect_as(cfg, crate::imap::Login::OAuth(provider)).await
        }
        None => {
            let password = match cfg.secret.resolve("imap") {
                Ok(p) => p.unwrap_or_default(),
                Err(e) => {
                    r.fail("imap login", e.to_string());
                    return;
                }
            };
            crate::imap::Imap::connect(cfg, &password).await
        }
    };
    let how = match cfg.auth {
        crate::config::AuthMethod::Oauth2 => format!(
            " (AUTHENTICATE {})",
            crate::oauth::sasl::mechanism_name(
                config
                    .oauth2
                    .as_ref()
                    .map(|o| o.mechanism)
                    .unwrap_or_default()
            )
        ),
        crate::config::AuthMethod::Password => String::new(),
    };
    let mut imap = match connected {
        Ok(i) => {
            r.ok(
                "imap login",
                format!(
                    "logged in to {}:{} as the configured user{how}",
                    cfg.host, cfg.port
                ),
            );
            i
        }
        Err(e) => {
            r.fail("imap login", e.to_string());
            return;
        }
    };
    let caps = [
        ("IDLE", imap.has_idle()),
        ("MOVE", imap.has_move()),
        ("UIDPLUS", imap.has_uidplus()),
    ];
    let missing: Vec<&str> = caps
        .iter()
        .filter(|(_, has)| !has)
        .map(|(n, _)| *n)
        .collect();
    if !imap.has_move() && !imap.has_uidplus() {
        r.fail("imap capabilities", "the server offers neither MOVE nor UIDPLUS, so mail cannot be filed safely; use a server with one of them (Dovecot, Cyrus, Exchange, Gmail all do)");
    } else if missing.is_empty() {
        r.ok("imap capabilities", "IDLE, MOVE and UIDPLUS offered");
    } else {
        let note = if missing.contains(&"IDLE") {
            format!(
                "; the daemon polls every {} s instead of IDLE",
                cfg.poll_interval_secs
            )
        } else {
            "; filing uses COPY + EXPUNGE instead of MOVE".to_string()
        };
        r.ok(
            "imap capabilities",
            format!("not offered: {}{note}", missing.join(", ")),
        );
    }
    match imap.select(&cfg.mailbox).await {
        Ok(info) => r.ok(
            "imap mailbox",
            format!("{:?} exists ({} messages)", cfg.mailbox, info.exists),
        ),
        Err(e) => r.fail(
            "imap mailbox",
            format!(
                "cannot select imap.mailbox {:?}: {e}; create the folder or fix imap.mailbox",
                cfg.mailbox
            ),
        ),
    }
    // "auto", or a configured Sent folder that is missing: the server's
    // special-use \Sent folder, as the daemon will choose it.
    let sent = imap
        .resolve_sent(&cfg.sent_mailbox)
        .await
        .unwrap_or_else(|_| cfg.sent_mailbox.clone());
    for (key, folder) in [
        ("imap.processed_mailbox", &cfg.processed_mailbox),
        ("imap.review_mailbox", &cfg.review_mailbox),
        ("imap.sent_mailbox", &sent),
    ] {
        let name = format!(
            "imap folder {}",
            key.trim_start_matches("imap.").trim_end_matches("_mailbox")
        );
        match imap.select(folder).await {
            Ok(_) => r.ok(&name, format!("{folder:?} exists")),
            Err(_) => r.ok(
                &name,
                format!("{folder:?} ({key}) does not exist yet; the daemon creates it at start"),
            ),
        }
    }
    let _ = imap.logout().await;
}

async fn smtp_reply<S: AsyncRead + Unpin>(
    reader: &mut BufReader<S>,
) -> Result<(u16, Vec<String>), String> {
    let mut lines = Vec::new();
    loop {
        let line = read_line(reader).await.map_err(|e| e.to_string())?;
        let code = line
            .get(0..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("not an SMTP reply: {line:?}"))?;
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line.get(4..).unwrap_or_default().to_string());
        if last {
            return Ok((code, lines));
        }
    }
}

async fn smtp_ehlo<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut BufReader<S>,
) -> Result<Vec<String>, String> {
    reader
        .get_mut()
        .write_all(b"EHLO privacy-mailroom.check\r\n")
        .await
        .map_err(|e| e.to_string())?;
    reader.get_mut().flush().await.map_err(|e| e.to_string())?;
    match smtp_reply(reader).await? {
        (250, lines) => Ok(lines
            .into_iter()
            .skip(1)
            .map(|l| l.to_ascii_uppercase())
            .collect()),
        (code, lines) => Err(format!("EHLO answered {code} {}", lines.join(" "))),
    }
}

async fn check_smtp(r: &mut Report, config: &Config, oauth: Option<&crate::oauth::TokenProvider>) {
    let cfg = &config.smtp;
    if cfg.auth == crate::config::AuthMethod::Oauth2 && oauth.is_none() {
        return;
    }
    let Some(tcp) = reach(r, "smtp", &cfg.host, cfg.port).await else {
        return;
    };
    let extensions = match cfg.security {
        Security::Tls => {
            let Some(tls) = tls_check(r, "smtp", &cfg.host, cfg.ca_file.as_deref(), tcp).await
            else {
                return;
            };
            let mut reader = BufReader::new(tls);
            match smtp_greeting_and_ehlo(&mut reader).await {
                Ok(ext) => ext,
                Err(e) => {
                    r.fail(
                        "smtp ehlo",
                        format!("{e}; check smtp.port and smtp.security"),
                    );
                    return;
                }
            }
        }
        Security::None | Security::Starttls => {
            let mut reader = BufReader::new(tcp);
            let ext = match smtp_greeting_and_ehlo(&mut reader).await {
                Ok(ext) => ext,
                Err(e) => {
                    r.fail("smtp ehlo", format!("{e}; check smtp.port and smtp.security (465 is \"tls\", 587 \"starttls\")"));
                    return;
                }
            };
            if cfg.security == Security::None {
                r.ok("smtp ehlo", format!("EHLO accepted ({})", ext.join(", ")));
                r.ok(
                    "smtp tls",
                    "not used: plain text to a loopback host (smtp.security = \"none\")",
                );
                ext
            } else {
                r.ok("smtp ehlo", "EHLO accepted");
                if !ext.iter().any(|e| e == "STARTTLS") {
                    r.fail("smtp starttls", "the server does not offer STARTTLS; use smtp.security = \"tls\" (usually port 465) or enable STARTTLS on the server");
                    return;
                }
                let _ = reader.get_mut().write_all(b"STARTTLS\r\n").await;
                match smtp_reply(&mut reader).await {
                    Ok((220, _)) => r.ok("smtp starttls", "STARTTLS accepted"),
                    Ok((code, lines)) => {
                        r.fail(
                            "smtp starttls",
                            format!("STARTTLS answered {code} {}", lines.join(" ")),
                        );
                        return;
                    }
                    Err(e) => {
                        r.fail("smtp starttls", format!("STARTTLS failed: {e}"));
                        return;
                    }
                }
                let Some(tls) = tls_check(
                    r,
                    "smtp",
                    &cfg.host,
                    cfg.ca_file.as_deref(),
                    reader.into_inner(),
                )
                .await
                else {
                    return;
                };
                let mut reader = BufReader::new(tls);
                match smtp_ehlo(&mut reader).await {
                    Ok(ext) => ext,
                    Err(e) => {
                        r.fail("smtp ehlo", format!("after STARTTLS: {e}"));
                        return;
                    }
                }
            }
        }
    };
    if cfg.security == Security::Tls {
        r.ok("smtp ehlo", "EHLO accepted");
    }
    if cfg.auth == crate::config::AuthMethod::Oauth2
        && let Some(provider) = oauth
    {
        check_smtp_oauth(r, config, provider, &extensions).await;
        return;
    }
    let Some(_) = &cfg.username else {
        r.ok(
            "smtp auth",
            "no smtp.username: mail is sent without AUTH (fine for a relay that trusts this host)",
        );
        return;
    };
    let mechanisms: Vec<&str> = extensions
        .iter()
        .filter_map(|e| e.strip_prefix("AUTH").map(str::trim))
        .flat_map(|m| m.trim_start_matches('=').split_whitespace())
        .collect();
    if !mechanisms.iter().any(|m| *m == "PLAIN" || *m == "LOGIN") {
        r.fail("smtp auth", format!(
            "the server offers no AUTH PLAIN or LOGIN (offered: {}); enable SASL authentication on the server or remove smtp.username",
            if mechanisms.is_empty() { "none".to_string() } else { mechanisms.join(" ") }));
        return;
    }
    let password = match cfg.secret.resolve("smtp") {
        Ok(p) => p,
        Err(e) => {
            r.fail("smtp auth", e.to_string());
            return;
        }
    };
    match crate::outbox::smtp::SmtpSender::new(cfg, password.as_deref()) {
        Ok(s) => {
            match s.test_connection().await {
                Ok(()) => r.ok(
                    "smtp auth",
                    format!(
                        "logged in to {}:{} as the configured user",
                        cfg.host, cfg.port
                    ),
                ),
                Err(e) => r.fail("smtp auth", e.to_string()),
            }
            s.close().await;
        }
        Err(e) => r.fail("smtp auth", e.to_string()),
    }
}

/// SMTP AUTH with a token, over the configured mechanism only: a server that
/// offers only PLAIN is a FAIL, never a fallback.
async fn check_smtp_oauth(
    r: &mut Report,
    config: &Config,
    provider: &crate::oauth::TokenProvider,
    extensions: &[String],
) {
    let cfg = &config.smtp;
    let name = crate::oauth::sasl::mechanism_name(provider.mechanism());
    let mechanisms: Vec<&str> = extensions
        .iter()
        .filter_map(|e| e.strip_prefix("AUTH").map(str::trim))
        .flat_map(|m| m.trim_start_matches('=').split_whitespace())
        .collect();
    if !mechanisms.contains(&name) {
        r.fail("smtp auth", format!(
            "the server does not offer AUTH {name} (offered: {}); fix: enable OAuth for SMTP AUTH on the server (Microsoft 365: Set-CASMailbox -SmtpClientAuthenticationDisabled $false for the mailbox), or set oauth2.mechanism; the daemon never falls back to a password",
            if mechanisms.is_empty() { "none".to_string() } else { mechanisms.join(" ") }));
        return;
    }
    match crate::outbox::smtp::SmtpSender::with_oauth(cfg, provider.clone(), config.smtp_login()) {
        Ok(s) => {
            match s.test_connection().await {
                Ok(()) => r.ok(
                    "smtp auth",
                    format!(
                        "logged in to {}:{} as the configured user (AUTH {name})",
                        cfg.host, cfg.port
                    ),
                ),
                Err(e) => r.fail("smtp auth", format!("{e}; receiving is not affected: mail is taken in and replies wait in the outbox")),
            }
            s.close().await;
        }
        Err(e) => r.fail("smtp auth", e.to_string()),
    }
}

async fn smtp_greeting_and_ehlo<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut BufReader<S>,
) -> Result<Vec<String>, String> {
    match smtp_reply(reader).await {
        Ok((220, _)) => {}
        Ok((code, lines)) => {
            return Err(format!(
                "the server greeted with {code} {}",
                lines.join(" ")
            ));
        }
        Err(e) => return Err(format!("no SMTP greeting: {e}")),
    }
    smtp_ehlo(reader).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_or_other_modes() {
        let cases = [
            (0o600, false),
            (0o400, false),
            (0o640, true),
            (0o644, true),
            (0o604, true),
            (0o700, false),
        ];
        for (mode, want) in cases {
            assert_eq!(group_or_other(mode), want, "{mode:o}");
        }
    }

    #[tokio::test]
    async fn smtp_multiline_replies() {
        let input: &[u8] = b"250-mail.example.com\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n";
        let mut reader = BufReader::new(input);
        let (code, lines) = smtp_reply(&mut reader).await.unwrap();
        assert_eq!(code, 250);
        assert_eq!(lines, ["mail.example.com", "STARTTLS", "AUTH PLAIN LOGIN"]);
    }

    #[test]
    fn unknown_issuer_advice_names_ca_file() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let advice = tls_advice("imap", "mail.example.com", &e);
        assert!(advice.contains("imap.ca_file"), "{advice}");
    }
}
