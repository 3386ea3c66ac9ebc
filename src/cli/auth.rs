//! `auth login` and `auth status` (SPEC §9). Neither prints a token: login
//! prints the verification URL and the user code, status the flow, the scopes
//! and the expiry.

use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;

use chrono::Utc;
use serde::Serialize;

use super::{AuthCommand, Failure};
use crate::config::{Config, OAuthFlow};
use crate::oauth::{OAuthError, TokenProvider};

pub async fn run(config: &Config, cmd: AuthCommand) -> Result<ExitCode, Failure> {
    let provider = config
        .token_provider()
        .map_err(|e| Failure::Usage(e.into()))?
        .ok_or_else(|| {
            Failure::Usage(anyhow::anyhow!(
                "neither imap.auth nor smtp.auth is \"oauth2\"; fix: set auth = \"oauth2\" and an [oauth2] section (see docs/providers.md)"
            ))
        })?;
    match cmd {
        AuthCommand::Login => login(&provider).await,
        AuthCommand::Status { json } => status(&provider, json).await,
    }
}

fn failure(e: OAuthError) -> Failure {
    if matches!(e, OAuthError::Config(_)) {
        Failure::Usage(e.into())
    } else {
        Failure::Runtime(e.into())
    }
}

async fn login(provider: &TokenProvider) -> Result<ExitCode, Failure> {
    if provider.settings().flow != OAuthFlow::RefreshToken {
        println!(
            "flow = {:?} needs no login: the daemon obtains tokens itself. `privacy-mailroom check` tests it.",
            flow_name(provider.settings().flow)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let token = provider
        .device_login(|text| {
            println!("{text}");
            println!("Waiting for the approval…");
        })
        .await
        .map_err(failure)?;
    let path = provider
        .refresh_token_path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!("Authorized. The refresh token is stored in {path} (mode 0600).");
    if let Some(expires) = token.expires {
        println!(
            "Access token expires {} (scopes: {}).",
            expires.to_rfc3339(),
            token.scopes.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What `auth status --json` prints.
#[derive(Debug, Serialize)]
struct Status {
    provider: String,
    flow: String,
    mechanism: String,
    token_url: String,
    scopes: Vec<String>,
    refresh_token_file: Option<String>,
    refresh_token_stored: Option<bool>,
    token_ok: bool,
    expires_at: Option<String>,
    expires_in_secs: Option<i64>,
    granted_scopes: Vec<String>,
    error: Option<String>,
}

async fn status(provider: &TokenProvider, json: bool) -> Result<ExitCode, Failure> {
    let s = provider.settings();
    let stored = provider.refresh_token_path().map(|p| {
        let mode = std::fs::metadata(p)
            .ok()
            .map(|m| m.permissions().mode() & 0o777);
        (p.display().to_string(), mode)
    });
    // The daemon's token lives in its memory; this asks for one the same way.
    let token = provider.token().await;
    let now = Utc::now();
    let status = Status {
        provider: format!("{:?}", s.provider).to_lowercase(),
        flow: flow_name(s.flow).into(),
        mechanism: crate::oauth::sasl::mechanism_name(s.mechanism).into(),
        token_url: s.token_url(),
        scopes: s.scopes(),
        refresh_token_file: stored.as_ref().map(|(p, _)| p.clone()),
        refresh_token_stored: stored.as_ref().map(|(_, m)| m.is_some()),
        token_ok: token.is_ok(),
        expires_at: token
            .as_ref()
            .ok()
            .and_then(|t| t.expires)
            .map(|e| e.to_rfc3339()),
        expires_in_secs: token
            .as_ref()
            .ok()
            .and_then(|t| t.expires)
            .map(|e| (e - now).num_seconds()),
        granted_scopes: token.as_ref().map(|t| t.scopes.clone()).unwrap_or_default(),
        error: token.as_ref().err().map(ToString::to_string),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&status).map_err(|e| Failure::Runtime(e.into()))?
        );
    } else {
        println!("provider:   {}", status.provider);
        println!("flow:       {}", status.flow);
        println!("mechanism:  {}", status.mechanism);
        println!("token URL:  {}", status.token_url);
        println!("scopes:     {}", status.scopes.join(" "));
        if let Some((path, mode)) = &stored {
            match mode {
                Some(mode) => println!("refresh token: stored in {path} (mode {mode:04o})"),
                None => {
                    println!("refresh token: none in {path}; run `privacy-mailroom auth login`")
                }
            }
        }
        match &token {
            Ok(t) => println!(
                "token:      ok, expires {} (in {} s), granted scopes: {}",
                t.expires
                    .map_or("(not said)".to_string(), |e| e.to_rfc3339()),
                status.expires_in_secs.unwrap_or_default(),
                t.scopes.join(" ")
            ),
            Err(e) => println!("token:      FAIL {e}"),
        }
    }
    Ok(if token.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn flow_name(flow: OAuthFlow) -> &'static str {
    match flow {
        OAuthFlow::ClientCredentials => "client_credentials",
        OAuthFlow::ServiceAccount => "service_account",
        OAuthFlow::RefreshToken => "refresh_token",
    }
}
