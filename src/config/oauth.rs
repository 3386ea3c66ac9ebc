//! `[oauth2]`: validation (the types and the values derived from them, such
//! as the token URL and default scopes, are `oauth::settings`). Kept apart
//! from the password keys so that those keep working unchanged.

use super::{AuthMethod, Config, ConfigError, OAuthFlow, OAuthProvider, invalid};

use crate::oauth::settings::MICROSOFT_APP_SCOPE;

/// Tenants that name no organisation: refused by client credentials (AADSTS50194).
const MULTI_TENANT: [&str; 3] = ["common", "organizations", "consumers"];

/// Is `url` an `https://` URL, or `http://` to a loopback host?
fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let host = host_of(rest);
        if !crate::tls::is_loopback_host(host) {
            return Err(invalid(
                key,
                format!(
                    "http:// sends the client secret in clear and is only allowed for a loopback host, not {host:?}"
                ),
                "use the provider's https:// URL",
            ));
        }
        rest
    } else {
        return Err(invalid(
            key,
            format!("{url:?} is not an https:// URL"),
            "write the full URL, e.g. \"https://idp.example.com/oauth2/token\"",
        ));
    };
    if host_of(rest).is_empty() {
        return Err(invalid(
            key,
            format!("{url:?} names no host"),
            "write the full URL",
        ));
    }
    Ok(())
}

/// The host part of `host[:port][/path]` (brackets kept for IPv6).
fn host_of(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

impl Config {
    /// Whether IMAP or SMTP logs in with a token.
    pub(crate) fn uses_oauth(&self) -> bool {
        self.imap.auth == AuthMethod::Oauth2 || self.smtp.auth == AuthMethod::Oauth2
    }

    /// The token provider for `auth = "oauth2"`; `None` when neither edge
    /// uses OAuth. The service account acts for the mailbox (`imap.username`);
    /// the refresh token lives beside the database unless configured.
    pub(crate) fn token_provider(
        &self,
    ) -> Result<Option<crate::oauth::TokenProvider>, crate::oauth::OAuthError> {
        match &self.oauth2 {
            Some(o) if self.uses_oauth() => crate::oauth::TokenProvider::new(
                o.clone(),
                self.imap.username.clone(),
                &self.storage.database,
            )
            .map(Some),
            _ => Ok(None),
        }
    }

    /// The SMTP SASL user: `smtp.username`, else the mailbox (`imap.username`).
    pub(crate) fn smtp_login(&self) -> String {
        self.smtp
            .username
            .clone()
            .unwrap_or_else(|| self.imap.username.clone())
    }

    pub(super) fn validate_oauth(&self) -> Result<(), ConfigError> {
        let Some(o) = &self.oauth2 else {
            if self.uses_oauth() {
                let key = if self.imap.auth == AuthMethod::Oauth2 {
                    "imap.auth"
                } else {
                    "smtp.auth"
                };
                return Err(invalid(
                    key,
                    "\"oauth2\" needs an [oauth2] section",
                    "add [oauth2] with provider, flow and client_id (see docs/providers.md), or set auth = \"password\"",
                ));
            }
            return Ok(());
        };
        if !self.uses_oauth() {
            return Err(invalid(
                "oauth2",
                "[oauth2] is set but neither imap.auth nor smtp.auth is \"oauth2\"",
                "set auth = \"oauth2\" in [imap] and/or [smtp], or remove [oauth2]",
            ));
        }
        let secrets = [
            o.client_secret.is_some(),
            o.client_secret_file.is_some(),
            o.client_secret_env.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count();
        if secrets > 1 {
            return Err(invalid(
                "oauth2.client_secret",
                "more than one of client_secret, client_secret_file and client_secret_env is set",
                "keep exactly one",
            ));
        }
        if o.client_secret_expires.is_some() && secrets == 0 {
            return Err(invalid(
                "oauth2.client_secret_expires",
                "is set but no client secret is configured",
                "remove it, or set client_secret_file (the certificate's expiry is read from the certificate itself)",
            ));
        }
        let certificate = o.client_certificate_file.is_some() || o.client_key_file.is_some();
        if certificate && (o.client_certificate_file.is_none() || o.client_key_file.is_none()) {
            return Err(invalid(
                "oauth2.client_key_file",
                "a client certificate needs both client_certificate_file and client_key_file",
                "set both (PEM files), or use client_secret_file instead",
            ));
        }
        if certificate && secrets > 0 {
            return Err(invalid(
                "oauth2.client_certificate_file",
                "both a client certificate and a client secret are set",
                "keep one: the certificate (recommended) or the secret",
            ));
        }
        // Microsoft's certificate credential is RFC 7523's `private_key_jwt`
        // client authentication, which Keycloak, Okta and others accept too.
        if certificate
            && (o.provider == OAuthProvider::Google || o.flow != OAuthFlow::ClientCredentials)
        {
            return Err(invalid(
                "oauth2.client_certificate_file",
                "a client certificate is only used with flow = \"client_credentials\" (provider \"microsoft\" or \"generic\")",
                "remove client_certificate_file and client_key_file, or use that flow",
            ));
        }
        let client_id = o.client_id.as_deref().map(str::trim).unwrap_or_default();
        if client_id.is_empty() && o.flow != OAuthFlow::ServiceAccount {
            return Err(invalid(
                "oauth2.client_id",
                "is not set",
                "set the application (client) ID of the app registration",
            ));
        }
        if o.service_account_file.is_some() && o.flow != OAuthFlow::ServiceAccount {
            return Err(invalid(
                "oauth2.service_account_file",
                "is only used with flow = \"service_account\"",
                "set flow = \"service_account\" or remove the key",
            ));
        }
        if o.refresh_token_file.is_some() && o.flow != OAuthFlow::RefreshToken {
            return Err(invalid(
                "oauth2.refresh_token_file",
                "is only used with flow = \"refresh_token\"",
                "set flow = \"refresh_token\" or remove the key",
            ));
        }
        match o.flow {
            OAuthFlow::ClientCredentials => {
                if o.provider == OAuthProvider::Google {
                    return Err(invalid(
                        "oauth2.flow",
                        "Google does not issue mail tokens for client credentials",
                        "use flow = \"service_account\" (domain-wide delegation) or \"refresh_token\"",
                    ));
                }
                if secrets == 0 && !certificate {
                    return Err(invalid(
                        "oauth2.client_secret_file",
                        "client credentials need a client secret or certificate",
                        "set client_secret_file (recommended, e.g. a systemd credential), client_secret_env or client_secret, or client_certificate_file + client_key_file",
                    ));
                }
            }
            OAuthFlow::ServiceAccount => {
                if o.provider != OAuthProvider::Google {
                    return Err(invalid(
                        "oauth2.flow",
                        "\"service_account\" is Google's flow",
                        "set provider = \"google\", or use \"client_credentials\"",
                    ));
                }
                if o.service_account_file.is_none() {
                    return Err(invalid(
                        "oauth2.service_account_file",
                        "is not set",
                        "download the service account's JSON key and name it here",
                    ));
                }
            }
            OAuthFlow::RefreshToken => {}
        }
        match o.provider {
            OAuthProvider::Microsoft => {
                let tenant = o.tenant.as_deref().map(str::trim).unwrap_or_default();
                if tenant.is_empty() {
                    return Err(invalid(
                        "oauth2.tenant",
                        "is not set",
                        "set the tenant's domain or ID, e.g. \"contoso.onmicrosoft.com\"",
                    ));
                }
                if o.flow == OAuthFlow::ClientCredentials
                    && MULTI_TENANT.iter().any(|t| t.eq_ignore_ascii_case(tenant))
                {
                    return Err(invalid(
                        "oauth2.tenant",
                        format!(
                            "{tenant:?} names no organisation; client credentials need a tenant (AADSTS50194)"
                        ),
                        "set the tenant's domain or ID, e.g. \"contoso.onmicrosoft.com\"",
                    ));
                }
                if tenant.contains(['/', '?', '#', ' ']) {
                    return Err(invalid(
                        "oauth2.tenant",
                        format!("{tenant:?} is not a tenant domain or ID"),
                        "e.g. \"contoso.onmicrosoft.com\"",
                    ));
                }
                if let Some(s) = o.scopes.iter().find(|s| s.contains("graph.microsoft.com")) {
                    return Err(invalid(
                        "oauth2.scopes",
                        format!(
                            "{s:?} is a Microsoft Graph scope; Graph tokens do not open IMAP or SMTP"
                        ),
                        format!("use {MICROSOFT_APP_SCOPE:?} (app-only) or leave scopes out"),
                    ));
                }
            }
            OAuthProvider::Google => {}
            OAuthProvider::Generic => {
                let Some(url) = o.token_url.as_deref() else {
                    return Err(invalid(
                        "oauth2.token_url",
                        "a generic provider needs its token endpoint",
                        "set token_url = \"https://idp.example.com/oauth2/token\"",
                    ));
                };
                check_url("oauth2.token_url", url)?;
                if let Some(url) = o.device_authorization_url.as_deref() {
                    check_url("oauth2.device_authorization_url", url)?;
                }
                if o.scopes.is_empty() {
                    return Err(invalid(
                        "oauth2.scopes",
                        "a generic provider has no default scopes",
                        "list the scopes the mail server expects, e.g. [\"mail\"]",
                    ));
                }
            }
        }
        if o.provider != OAuthProvider::Generic {
            for (key, set) in [
                ("oauth2.token_url", o.token_url.is_some()),
                (
                    "oauth2.device_authorization_url",
                    o.device_authorization_url.is_some(),
                ),
            ] {
                if set {
                    return Err(invalid(
                        key,
                        "is only used with provider = \"generic\"; Microsoft's and Google's endpoints are derived",
                        "remove the key (Microsoft: set tenant instead)",
                    ));
                }
            }
        }
        if o.provider != OAuthProvider::Microsoft && o.tenant.is_some() {
            return Err(invalid(
                "oauth2.tenant",
                "is only used with provider = \"microsoft\"",
                "remove the key",
            ));
        }
        if o.scopes
            .iter()
            .any(|s| s.trim().is_empty() || s.contains(' '))
        {
            return Err(invalid(
                "oauth2.scopes",
                "a scope is empty or contains a space",
                "list one scope per string, e.g. [\"https://mail.google.com/\"]",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = r#"
[imap]
host = "127.0.0.1"
security = "none"
username = "privacy@example.com"
auth = "oauth2"
[smtp]
host = "127.0.0.1"
security = "none"
from = "Privacy Team <privacy@example.com>"
auth = "oauth2"
[storage]
database = "/var/lib/privacy-mailroom/mailroom.db"
[company]
name = "Example Inc."
"#;

    fn with(oauth: &str) -> String {
        format!("{BASE}[oauth2]\n{oauth}\n")
    }

    #[test]
    fn sections_left_out_take_their_defaults() {
        let text = BASE.replace("auth = \"oauth2\"", "password = \"pw\"");
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.policy.respond_days, 45);
        assert!(c.agents.require_notarized);
        assert!(c.oauth2.is_none());
    }

    #[test]
    fn microsoft_client_credentials() {
        let c = Config::parse(&with(
            "provider = \"microsoft\"\nflow = \"client_credentials\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"abc\"\nclient_secret_env = \"SECRET\"",
        ))
        .unwrap();
        let o = c.oauth2.as_ref().unwrap();
        assert_eq!(
            o.token_url(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(o.scopes(), ["https://outlook.office365.com/.default"]);
        assert_eq!(c.smtp_login(), "privacy@example.com");
    }

    #[test]
    fn sent_copy_auto_is_server_through_google_or_microsoft_smtp() {
        use crate::config::SentCopy;
        let microsoft = "provider = \"microsoft\"\nflow = \"client_credentials\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"abc\"\nclient_secret_env = \"SECRET\"";
        let google = "provider = \"google\"\nflow = \"service_account\"\nclient_id = \"abc\"\nservice_account_file = \"/etc/sa.json\"";
        let generic = "provider = \"generic\"\nflow = \"refresh_token\"\nclient_id = \"abc\"\ntoken_url = \"http://127.0.0.1:8080/token\"\nscopes = [\"mail\"]";
        for (oauth, sent_copy, want) in [
            // Gmail and Exchange Online keep the copy: no search, no APPEND.
            (google, None, SentCopy::Server),
            (microsoft, None, SentCopy::Server),
            (google, Some("auto"), SentCopy::Server),
            // What the admin chose explicitly stands.
            (microsoft, Some("append"), SentCopy::Append),
            (google, Some("server"), SentCopy::Server),
            // Any other server: look first.
            (generic, None, SentCopy::Auto),
        ] {
            let mut text = with(oauth);
            if let Some(v) = sent_copy {
                text = text.replace(
                    "auth = \"oauth2\"\n[storage]",
                    &format!("auth = \"oauth2\"\nsent_copy = \"{v}\"\n[storage]"),
                );
            }
            let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(c.smtp.sent_copy, want, "{oauth} / {sent_copy:?}");
        }
        // SMTP through another relay (a password): the provider's habit does
        // not apply.
        let relay = with(microsoft).replace(
            "auth = \"oauth2\"\n[storage]",
            "username = \"relay\"\npassword = \"pw\"\n[storage]",
        );
        assert_eq!(
            Config::parse(&relay).unwrap().smtp.sent_copy,
            SentCopy::Auto
        );
    }

    #[test]
    fn client_secret_expires_is_a_day_and_needs_a_secret() {
        let base = "provider = \"microsoft\"\nflow = \"client_credentials\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"abc\"\nclient_secret_env = \"SECRET\"";
        for written in ["\"2027-06-30\"", "2027-06-30"] {
            let c = Config::parse(&with(&format!("{base}\nclient_secret_expires = {written}")))
                .unwrap_or_else(|e| panic!("{written}: {e}"));
            assert_eq!(
                c.oauth2.unwrap().client_secret_expires,
                chrono::NaiveDate::from_ymd_opt(2027, 6, 30)
            );
        }
        let e = Config::parse(&with(&format!(
            "{base}\nclient_secret_expires = \"30/06/2027\""
        )))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("config key `oauth2.client_secret_expires`"),
            "{e}"
        );
        let no_secret = with(
            "provider = \"generic\"\nflow = \"refresh_token\"\nclient_id = \"abc\"\ntoken_url = \"http://127.0.0.1:8080/token\"\nscopes = [\"mail\"]\nclient_secret_expires = \"2027-06-30\"",
        );
        let e = Config::parse(&no_secret).unwrap_err().to_string();
        assert!(
            e.starts_with("config key `oauth2.client_secret_expires`"),
            "{e}"
        );
        assert!(e.contains("fix:"), "{e}");
    }

    #[test]
    fn secrets_warn_thirty_days_ahead() {
        let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2027, 6, d).unwrap();
        let expires = day(30);
        assert!(!crate::oauth::secret_expires_soon(
            expires,
            day(1) - chrono::Duration::days(1)
        ));
        assert!(crate::oauth::secret_expires_soon(expires, day(1)));
        assert!(crate::oauth::secret_expires_soon(expires, day(30)));
        assert!(crate::oauth::secret_expires_soon(
            expires,
            day(30) + chrono::Duration::days(3)
        ));
    }

    #[test]
    fn a_generic_provider_takes_a_client_certificate() {
        let c = Config::parse(&with(
            "provider = \"generic\"\nflow = \"client_credentials\"\nclient_id = \"abc\"\ntoken_url = \"https://idp.example.com/token\"\nscopes = [\"mail\"]\nclient_certificate_file = \"/c.pem\"\nclient_key_file = \"/k.pem\"",
        ))
        .unwrap();
        assert!(c.oauth2.unwrap().client_certificate_file.is_some());
    }

    #[test]
    fn exchange_gets_at_most_three_smtp_connections() {
        let microsoft = "provider = \"microsoft\"\nflow = \"client_credentials\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"abc\"\nclient_secret_env = \"SECRET\"";
        let c = Config::parse(&with(microsoft)).unwrap();
        assert_eq!(c.smtp_connection_cap(4), 3);
        assert_eq!(c.smtp_connection_cap(2), 2);
        let generic = "provider = \"generic\"\nflow = \"refresh_token\"\nclient_id = \"abc\"\ntoken_url = \"http://127.0.0.1:8080/token\"\nscopes = [\"mail\"]";
        assert_eq!(
            Config::parse(&with(generic))
                .unwrap()
                .smtp_connection_cap(4),
            4
        );
    }

    #[test]
    fn generic_refresh_token_with_defaults() {
        let c = Config::parse(&with(
            "provider = \"generic\"\nflow = \"refresh_token\"\nclient_id = \"abc\"\ntoken_url = \"http://127.0.0.1:8080/token\"\nscopes = [\"mail\"]\nmechanism = \"oauthbearer\"",
        ))
        .unwrap();
        let o = c.oauth2.as_ref().unwrap();
        assert_eq!(
            o.refresh_token_path(&c.storage.database),
            std::path::Path::new("/var/lib/privacy-mailroom/oauth2-refresh-token")
        );
        assert!(c.imap.secret.password.is_none());
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let cases = [
            (BASE.to_string(), "imap.auth"),
            (
                with(
                    "provider = \"microsoft\"\nflow = \"client_credentials\"\nclient_id = \"a\"\nclient_secret = \"s\"",
                ),
                "oauth2.tenant",
            ),
            (
                with(
                    "provider = \"microsoft\"\nflow = \"client_credentials\"\ntenant = \"common\"\nclient_id = \"a\"\nclient_secret = \"s\"",
                ),
                "AADSTS50194",
            ),
            (
                with(
                    "provider = \"microsoft\"\nflow = \"client_credentials\"\ntenant = \"t.example\"\nclient_id = \"a\"",
                ),
                "oauth2.client_secret_file",
            ),
            (
                with(
                    "provider = \"microsoft\"\nflow = \"client_credentials\"\ntenant = \"t.example\"\nclient_id = \"a\"\nclient_secret = \"s\"\nscopes = [\"https://graph.microsoft.com/.default\"]",
                ),
                "Graph",
            ),
            (
                with(
                    "provider = \"google\"\nflow = \"client_credentials\"\nclient_id = \"a\"\nclient_secret = \"s\"",
                ),
                "service_account",
            ),
            (
                with("provider = \"google\"\nflow = \"service_account\""),
                "oauth2.service_account_file",
            ),
            (
                with(
                    "provider = \"generic\"\nflow = \"client_credentials\"\nclient_id = \"a\"\nclient_secret = \"s\"\nscopes = [\"mail\"]",
                ),
                "oauth2.token_url",
            ),
            (
                with(
                    "provider = \"generic\"\nflow = \"client_credentials\"\nclient_id = \"a\"\nclient_secret = \"s\"\nscopes = [\"mail\"]\ntoken_url = \"http://idp.example.com/token\"",
                ),
                "loopback",
            ),
            (
                with(
                    "provider = \"generic\"\nflow = \"client_credentials\"\nclient_id = \"a\"\nclient_secret = \"s\"\ntoken_url = \"https://idp.example.com/token\"",
                ),
                "oauth2.scopes",
            ),
            (
                with(
                    "provider = \"google\"\nflow = \"refresh_token\"\nclient_id = \"a\"\ntoken_url = \"https://idp.example.com/token\"",
                ),
                "generic",
            ),
            (
                with(
                    "provider = \"generic\"\nflow = \"refresh_token\"\nclient_id = \"a\"\nclient_secret = \"s\"\nclient_secret_env = \"X\"\nscopes = [\"m\"]\ntoken_url = \"https://i.example/t\"",
                ),
                "exactly one",
            ),
            (
                with(
                    "provider = \"microsoft\"\nflow = \"client_credentials\"\ntenant = \"t.example\"\nclient_id = \"a\"\nclient_certificate_file = \"/c.pem\"",
                ),
                "client_key_file",
            ),
            (
                with(
                    "provider = \"google\"\nflow = \"service_account\"\nservice_account_file = \"/sa.json\"\nclient_certificate_file = \"/c.pem\"\nclient_key_file = \"/k.pem\"",
                ),
                "client_certificate_file",
            ),
            (
                with("provider = \"yahoo\"\nflow = \"refresh_token\""),
                "provider",
            ),
        ];
        for (text, needle) in cases {
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
            if err.starts_with("config key") {
                assert!(err.contains("fix:"), "{err}");
            }
        }
    }

    #[test]
    fn loopback_urls() {
        for (url, ok) in [
            ("http://127.0.0.1:8080/token", true),
            ("http://localhost/token", true),
            ("http://[::1]:80/token", true),
            ("https://idp.example.com/token", true),
            ("http://idp.example.com/token", false),
            ("ftp://x/token", false),
            ("https:///token", false),
        ] {
            assert_eq!(super::check_url("k", url).is_ok(), ok, "{url}");
        }
    }
}
