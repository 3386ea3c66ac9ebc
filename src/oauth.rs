//! OAuth 2.0 access tokens for IMAP and SMTP (`auth = "oauth2"`).
//!
//! One [`TokenProvider`] per process, shared by the mailbox loop, the sender
//! and `check`. It keeps the current token in memory and fetches a new one a
//! margin before the old one expires ([`cache`]), so a login never uses a
//! token about to lapse. Token requests go through the `oauth2` crate
//! (client credentials, refresh token, device code) or, for Google's JWT
//! bearer grant that crate does not model, through the same HTTP client.
//!
//! Failures: the endpoint being down backs off with jitter and is logged once
//! per outage (and once when it recovers); `invalid_grant` for a refresh token
//! puts the provider in "needs re-authorization": one error line, then a retry
//! only every 15 minutes or as soon as `auth login` writes a new refresh token.
//!
//! Tokens, secrets and assertions never reach a log line or an error message;
//! [`AccessToken`]'s `Debug` hides the token.
//!
//! Parts: `sasl` (the wire encodings), `cache` (expiry arithmetic), `jwt`
//! (signed assertions, reading claims), `advice` (errors → fixes), `flows`
//! (the token requests), `token_file` (the refresh token on disk).

pub mod advice;
pub mod cache;
mod flows;
pub mod jwt;
pub mod sasl;
pub mod settings;
pub mod token_file;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio::time::Instant;

use settings::{OAuthConfig, OAuthFlow, OAuthProvider, SaslMechanism};

/// A bearer token and what the endpoint said about it.
#[derive(Clone)]
pub struct AccessToken {
    secret: String,
    pub obtained: DateTime<Utc>,
    pub expires: Option<DateTime<Utc>>,
    /// The scopes granted, when the endpoint said (else the ones asked for).
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires", &self.expires)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl AccessToken {
    /// The token itself: only for the SASL response.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// When a session logged in with this token should be renewed.
    pub(crate) fn renew_at(&self) -> DateTime<Utc> {
        cache::renew_at(self.obtained, self.expires)
    }

    pub(crate) fn usable(&self, now: DateTime<Utc>) -> bool {
        cache::usable(self.obtained, self.expires, now)
    }

    /// The payload's claims (audience, roles), for diagnostics.
    pub fn claims(&self) -> Option<jwt::Claims> {
        jwt::peek_claims(&self.secret)
    }
}

/// Why no token could be had. Clone: the last error is answered again while
/// the provider waits out its backoff. Never carries a token or a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    Config(String),
    #[error(
        "cannot reach the OAuth token endpoint {url}: {detail}; check DNS, the network and any proxy or firewall (retrying with backoff)"
    )]
    Unreachable { url: String, detail: String },
    #[error("the OAuth token endpoint {url} refused the request ({code}{description}): {fix}")]
    Refused {
        url: String,
        code: String,
        /// `: <error_description>`, or empty.
        description: String,
        fix: String,
        /// `invalid_grant` for a refresh token: only a person can fix it.
        needs_reauthorization: bool,
    },
    #[error(
        "OAuth needs re-authorization: no refresh token in {path}; fix: run `privacy-mailroom auth login`"
    )]
    NoRefreshToken { path: PathBuf },
    #[error("the OAuth token endpoint {url} gave an unusable answer: {detail}")]
    Malformed { url: String, detail: String },
    #[error(
        "cannot save the rotated refresh token to {path}: {detail}; fix: let the service user write that directory"
    )]
    SaveRefreshToken { path: PathBuf, detail: String },
}

impl OAuthError {
    /// Only a person can fix this (`auth login`): retry rarely, alert once.
    pub(crate) fn needs_reauthorization(&self) -> bool {
        matches!(
            self,
            OAuthError::Refused {
                needs_reauthorization: true,
                ..
            } | OAuthError::NoRefreshToken { .. }
        )
    }
}

/// Shares one token cache between every connection (see the module docs).
#[derive(Clone)]
pub struct TokenProvider {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("provider", &self.inner.settings.provider)
            .field("flow", &self.inner.settings.flow)
            .finish_non_exhaustive()
    }
}

struct Inner {
    settings: OAuthConfig,
    /// The mailbox: Google's service account acts for it.
    subject: String,
    refresh_path: Option<PathBuf>,
    http: oauth2::reqwest::Client,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    token: Option<AccessToken>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<OAuthError>,
    /// Since when the endpoint fails (for the one line per outage).
    outage_since: Option<DateTime<Utc>>,
    /// The refresh token file's mtime when `invalid_grant` came: a newer file
    /// (from `auth login`) ends the wait at once.
    reauth_stamp: Option<Option<SystemTime>>,
}

/// `check` and the daemon warn this many days before the client certificate
/// expires.
pub(crate) const CREDENTIAL_WARNING_DAYS: i64 = 30;

/// Whether a secret that expires at the end of `day` is within the warning
/// window on `today` (or already expired).
pub(crate) fn secret_expires_soon(day: chrono::NaiveDate, today: chrono::NaiveDate) -> bool {
    (day - today).num_days() < CREDENTIAL_WARNING_DAYS
}

/// Requests to the token endpoint may not take longer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

impl TokenProvider {
    /// Tokens for `settings`; `subject` is the mailbox (a Google service
    /// account acts for it), `database` places the default refresh token
    /// file. Reads no file yet: secrets and keys are read for each token
    /// request, so a rotated secret is picked up. (`Config::token_provider`
    /// builds it from the config.)
    pub fn new(
        settings: OAuthConfig,
        subject: String,
        database: &std::path::Path,
    ) -> Result<TokenProvider, OAuthError> {
        let http = oauth2::reqwest::ClientBuilder::new()
            // Following redirects from a token endpoint invites SSRF (the
            // oauth2 crate's advice) and is never needed.
            .redirect(oauth2::reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(15))
            .user_agent(concat!("privacy-mailroom/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                OAuthError::Config(format!("cannot set up the HTTP client for OAuth: {e}"))
            })?;
        let refresh_path = (settings.flow == OAuthFlow::RefreshToken)
            .then(|| settings.refresh_token_path(database));
        Ok(TokenProvider {
            inner: Arc::new(Inner {
                settings,
                subject,
                refresh_path,
                http,
                state: Mutex::new(State::default()),
            }),
        })
    }

    pub fn settings(&self) -> &OAuthConfig {
        &self.inner.settings
    }

    pub fn mechanism(&self) -> SaslMechanism {
        self.inner.settings.mechanism
    }

    /// The token endpoint the flow asks: for a service account, the key
    /// file's `token_uri` when it names one (as the flow does).
    pub fn token_url(&self) -> String {
        let s = &self.inner.settings;
        if s.flow == OAuthFlow::ServiceAccount
            && let Some(uri) = s
                .service_account_file
                .as_ref()
                .and_then(|p| std::fs::read(p).ok())
                .and_then(|text| serde_json::from_slice::<jwt::ServiceAccount>(&text).ok())
                .and_then(|sa| sa.token_uri)
        {
            return uri;
        }
        s.token_url()
    }

    /// Where the refresh token is kept (`flow = "refresh_token"`).
    pub(crate) fn refresh_token_path(&self) -> Option<&std::path::Path> {
        self.inner.refresh_path.as_deref()
    }

    /// A token usable for a login now: the cached one, or a fresh one.
    pub async fn token(&self) -> Result<AccessToken, OAuthError> {
        let mut state = self.inner.state.lock().await;
        let now = Utc::now();
        if let Some(t) = &state.token
            && t.usable(now)
        {
            return Ok(t.clone());
        }
        if let (Some(at), Some(last)) = (state.retry_at, &state.last_error)
            && Instant::now() < at
            && !self.refresh_token_replaced(&state)
        {
            return Err(last.clone());
        }
        match flows::fetch(&self.inner).await {
            Ok(token) => {
                if let Some(since) = state.outage_since.take() {
                    let secs = (now - since).num_seconds().max(0);
                    tracing::info!(
                        down_secs = secs,
                        "OAuth token endpoint works again; tokens are being issued."
                    );
                }
                state.failures = 0;
                state.retry_at = None;
                state.last_error = None;
                state.reauth_stamp = None;
                tracing::debug!(expires = ?token.expires, "Obtained an OAuth access token.");
                state.token = Some(token.clone());
                Ok(token)
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                let wait = if e.needs_reauthorization() {
                    cache::REAUTH_RETRY
                } else {
                    cache::retry_after(state.failures, rand::random::<f64>())
                };
                state.retry_at = Some(Instant::now() + wait);
                let first = state.outage_since.is_none()
                    || state.last_error.as_ref().map(|l| l.needs_reauthorization())
                        != Some(e.needs_reauthorization());
                if state.outage_since.is_none() {
                    state.outage_since = Some(now);
                }
                if e.needs_reauthorization() {
                    state.reauth_stamp = Some(self.refresh_token_stamp());
                }
                // The endpoint's answer names no person: logged as it is.
                let error = e.to_string();
                if first && e.needs_reauthorization() {
                    tracing::error!(error = %error, "OAuth needs re-authorization: mail cannot be read or sent until someone runs `privacy-mailroom auth login`. Retrying every 15 minutes.");
                } else if first {
                    tracing::warn!(error = %error, "Cannot obtain an OAuth token; retrying with backoff (logged once per outage).");
                } else {
                    tracing::debug!(error = %error, retry_in_ms = wait.as_millis() as u64, "Token request failed again.");
                }
                state.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The server refused `used`: drop it, so the next [`TokenProvider::token`]
    /// fetches a new one (the "refresh once and retry" after a refusal).
    pub(crate) async fn invalidate(&self, used: &AccessToken) {
        let mut state = self.inner.state.lock().await;
        if state
            .token
            .as_ref()
            .is_some_and(|t| t.secret == used.secret)
        {
            state.token = None;
        }
    }

    /// `auth login`: the device-code flow. `show` gets the text for the person
    /// (URL and code); the refresh token is saved 0600 before this returns.
    pub(crate) async fn device_login(
        &self,
        show: impl FnMut(&str),
    ) -> Result<AccessToken, OAuthError> {
        let token = flows::device_login(&self.inner, show).await?;
        let mut state = self.inner.state.lock().await;
        *state = State {
            token: Some(token.clone()),
            ..State::default()
        };
        Ok(token)
    }

    /// The client certificate's expiry, when one is configured and readable:
    /// `(expiry, within the 30-day warning window)`.
    pub(crate) fn certificate_expiry(&self) -> Option<(DateTime<Utc>, bool)> {
        let path = self.inner.settings.client_certificate_file.as_ref()?;
        let pem = std::fs::read(path).ok()?;
        let at = jwt::certificate_not_after(&pem)?;
        Some((
            at,
            at - Utc::now() < chrono::Duration::days(CREDENTIAL_WARNING_DAYS),
        ))
    }

    /// `oauth2.client_secret_expires`, when set: `(that day, within the
    /// 30-day warning window)`.
    pub(crate) fn client_secret_expiry(&self) -> Option<(chrono::NaiveDate, bool)> {
        let day = self.inner.settings.client_secret_expires?;
        Some((day, secret_expires_soon(day, Utc::now().date_naive())))
    }

    /// The fix for a token the mail server refused, by provider (Microsoft:
    /// from the token's audience and roles).
    pub(crate) fn refusal_advice(&self, token: &AccessToken, user: &str, protocol: &str) -> String {
        let settings = &self.inner.settings;
        match settings.provider {
            OAuthProvider::Microsoft => format!(
                "; {}",
                advice::exchange_refusal(
                    token.claims().as_ref(),
                    settings.client_id.as_deref().unwrap_or_default(),
                    user,
                    protocol,
                )
            ),
            OAuthProvider::Google => "; fix: check that the mailbox exists and that the token carries the scope https://mail.google.com/ (service accounts: domain-wide delegation for it)".into(),
            OAuthProvider::Generic => format!(
                "; fix: check that the mail server trusts tokens from {} and that the token names this mailbox",
                settings.token_url()
            ),
        }
    }

    fn refresh_token_stamp(&self) -> Option<SystemTime> {
        self.inner
            .refresh_path
            .as_deref()
            .and_then(|p| std::fs::metadata(p).ok())
            .and_then(|m| m.modified().ok())
    }

    /// After `invalid_grant`: has `auth login` written a new refresh token?
    fn refresh_token_replaced(&self, state: &State) -> bool {
        match &state.reauth_stamp {
            Some(stamp) => *stamp != self.refresh_token_stamp(),
            None => false,
        }
    }
}
