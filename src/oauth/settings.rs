//! `[oauth2]` as the config file gives it, and what follows from it (token
//! URL, device authorization URL, scopes per provider). Validation lives with
//! the rest of the config (`config::oauth`); this module needs nothing else of
//! the crate, so the IMAP and SMTP edges can use it.

use std::path::PathBuf;

use serde::Deserialize;

/// Exchange Online's resource: app-only tokens for IMAP and SMTP.
pub(crate) const MICROSOFT_APP_SCOPE: &str = "https://outlook.office365.com/.default";
/// Delegated scopes (a user's consent through `auth login`).
pub(crate) const MICROSOFT_USER_SCOPES: [&str; 3] = [
    "https://outlook.office365.com/IMAP.AccessAsUser.All",
    "https://outlook.office365.com/SMTP.Send",
    "offline_access",
];
/// Gmail over IMAP and SMTP needs the full mail scope.
pub(crate) const GOOGLE_SCOPE: &str = "https://mail.google.com/";
pub(crate) const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
pub(crate) const GOOGLE_DEVICE_URL: &str = "https://oauth2.googleapis.com/device/code";

/// The identity provider (`oauth2.provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OAuthProvider {
    Microsoft,
    Google,
    Generic,
}

/// How the daemon obtains tokens (`oauth2.flow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthFlow {
    /// App-only: a client secret or certificate (Microsoft, generic).
    ClientCredentials,
    /// Google: a service account with domain-wide delegation.
    ServiceAccount,
    /// A user's consent, obtained once with `auth login` (device code).
    RefreshToken,
}

/// The SASL mechanism that carries the token (`oauth2.mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaslMechanism {
    /// Google's and Microsoft's mechanism; what every provider accepts.
    #[default]
    Xoauth2,
    /// RFC 7628.
    Oauthbearer,
}

/// `[oauth2]`: where tokens for `auth = "oauth2"` come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    pub provider: OAuthProvider,
    pub flow: OAuthFlow,
    /// Microsoft: the tenant's domain or ID; the token URL is derived from it.
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    /// When the client secret expires (`"2027-06-30"`): a secret does not
    /// say so itself, the app registration does. `check` and the daemon
    /// warn 30 days before.
    #[serde(default, deserialize_with = "date")]
    pub client_secret_expires: Option<chrono::NaiveDate>,
    /// Microsoft app-only with a certificate instead of a secret (PEM files).
    pub client_certificate_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Google: the service account's JSON key.
    pub service_account_file: Option<PathBuf>,
    /// `flow = "refresh_token"`: where the refresh token is kept (default:
    /// `oauth2-refresh-token` beside the database).
    pub refresh_token_file: Option<PathBuf>,
    /// Generic providers only.
    pub token_url: Option<String>,
    /// Generic providers only, for `auth login` (RFC 8628). An addition to SPEC §9.
    pub device_authorization_url: Option<String>,
    /// Defaults per provider.
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub mechanism: SaslMechanism,
}

/// A day, written `"2027-06-30"` or as a TOML date `2027-06-30`.
fn date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<chrono::NaiveDate>, D::Error> {
    use serde::de::Error as _;
    let text = match toml::Value::deserialize(d)? {
        toml::Value::String(s) => s,
        toml::Value::Datetime(dt) => dt.to_string(),
        other => {
            return Err(D::Error::custom(format!(
                "expected a date like \"2027-06-30\", found {}",
                other.type_str()
            )));
        }
    };
    chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map(Some)
        .map_err(|_| D::Error::custom(format!("{text:?} is not a date like \"2027-06-30\"")))
}

impl OAuthConfig {
    /// The token endpoint: derived for Microsoft (from the tenant) and Google
    /// (or the service account file's `token_uri`), given for generic.
    pub fn token_url(&self) -> String {
        match self.provider {
            OAuthProvider::Microsoft => format!(
                "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
                self.tenant.as_deref().unwrap_or("common").trim()
            ),
            OAuthProvider::Google => GOOGLE_TOKEN_URL.to_string(),
            OAuthProvider::Generic => self.token_url.clone().unwrap_or_default(),
        }
    }

    /// The RFC 8628 device authorization endpoint for `auth login`, if known.
    pub fn device_authorization_url(&self) -> Option<String> {
        match self.provider {
            OAuthProvider::Microsoft => Some(format!(
                "https://login.microsoftonline.com/{}/oauth2/v2.0/devicecode",
                self.tenant.as_deref().unwrap_or("organizations").trim()
            )),
            OAuthProvider::Google => Some(GOOGLE_DEVICE_URL.to_string()),
            OAuthProvider::Generic => self.device_authorization_url.clone(),
        }
    }

    /// The scopes asked for: the configured ones, else the provider's default
    /// for the flow.
    pub fn scopes(&self) -> Vec<String> {
        if !self.scopes.is_empty() {
            return self.scopes.clone();
        }
        match (self.provider, self.flow) {
            (OAuthProvider::Microsoft, OAuthFlow::RefreshToken) => MICROSOFT_USER_SCOPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            (OAuthProvider::Microsoft, _) => vec![MICROSOFT_APP_SCOPE.to_string()],
            (OAuthProvider::Google, _) => vec![GOOGLE_SCOPE.to_string()],
            (OAuthProvider::Generic, _) => Vec::new(),
        }
    }

    /// Where the refresh token lives: `refresh_token_file`, else beside the
    /// database (the state directory).
    pub(crate) fn refresh_token_path(&self, database: &std::path::Path) -> PathBuf {
        match &self.refresh_token_file {
            Some(p) => p.clone(),
            None => database
                .parent()
                .unwrap_or_else(|| std::path::Path::new("."))
                .join("oauth2-refresh-token"),
        }
    }

    /// Reads the client secret (file contents without the trailing newline).
    /// Errors name the key and the fix, like the config's own.
    pub(crate) fn resolve_client_secret(&self) -> Result<Option<String>, String> {
        if let Some(s) = &self.client_secret {
            return Ok(Some(s.clone()));
        }
        if let Some(path) = &self.client_secret_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "config key `oauth2.client_secret_file`: cannot read {}: {e}; fix: check the path and that the service user may read it",
                    path.display()
                )
            })?;
            return Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()));
        }
        if let Some(var) = &self.client_secret_env {
            return std::env::var(var).map(Some).map_err(|_| {
                format!(
                    "config key `oauth2.client_secret_env`: environment variable {var} is not set; fix: export it in the service environment"
                )
            });
        }
        Ok(None)
    }
}
