//! The token requests, one per flow, and the device-code login.

use chrono::Utc;
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicTokenResponse};
use oauth2::{
    AsyncHttpClient, AuthType, ClientId, ClientSecret, DeviceAuthorizationUrl, EndpointNotSet,
    EndpointSet, ErrorResponseType, RefreshToken, RequestTokenError, Scope, StandardErrorResponse,
    TokenResponse, TokenUrl,
};

use super::jwt::{self, ServiceAccount, Signer};
use super::settings::{OAuthConfig, OAuthFlow};
use super::{AccessToken, Inner, OAuthError, advice, token_file};

type Client =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// One token request for the configured flow.
pub(super) async fn fetch(inner: &Inner) -> Result<AccessToken, OAuthError> {
    let s = &inner.settings;
    match s.flow {
        OAuthFlow::ClientCredentials => client_credentials(inner).await,
        OAuthFlow::ServiceAccount => service_account(inner).await,
        OAuthFlow::RefreshToken => refresh(inner).await,
    }
}

fn config_err(e: String) -> OAuthError {
    OAuthError::Config(e)
}

/// The client for the token URL, with the secret when one is configured.
/// Credentials go in the form body: Microsoft wants them there, Google and
/// RFC 6749 servers accept it.
fn client(s: &OAuthConfig, token_url: &str) -> Result<Client, OAuthError> {
    let url = TokenUrl::new(token_url.to_string()).map_err(|e| {
        OAuthError::Config(format!(
            "config key `oauth2.token_url`: {e}; fix: write a full https:// URL"
        ))
    })?;
    let mut client = BasicClient::new(ClientId::new(s.client_id.clone().unwrap_or_default()))
        .set_token_uri(url)
        .set_auth_type(AuthType::RequestBody);
    if let Some(secret) = s.resolve_client_secret().map_err(config_err)? {
        client = client.set_client_secret(ClientSecret::new(secret));
    }
    Ok(client)
}

fn scopes(s: &OAuthConfig) -> Vec<Scope> {
    s.scopes().into_iter().map(Scope::new).collect()
}

async fn client_credentials(inner: &Inner) -> Result<AccessToken, OAuthError> {
    let s = &inner.settings;
    let url = s.token_url();
    let client = client(s, &url)?;
    let mut request = client.exchange_client_credentials().add_scopes(scopes(s));
    let assertion;
    if let (Some(cert), Some(key)) = (&s.client_certificate_file, &s.client_key_file) {
        let read = |p: &std::path::Path, key: &str| {
            std::fs::read(p).map_err(|e| {
                OAuthError::Config(format!(
                    "config key `oauth2.{key}`: cannot read {}: {e}; fix: check the path and that the service user may read it",
                    p.display()
                ))
            })
        };
        let thumbprints = jwt::thumbprints(&read(cert, "client_certificate_file")?, &cert.display().to_string())
            .map_err(|e| OAuthError::Config(format!("config key `oauth2.client_certificate_file`: {e}; fix: name the PEM certificate uploaded to the app registration")))?;
        let signer = Signer::from_pem(&read(key, "client_key_file")?, &key.display().to_string())
            .map_err(|e| OAuthError::Config(format!("config key `oauth2.client_key_file`: {e}; fix: name the certificate's private key in PEM")))?;
        assertion = jwt::microsoft_assertion(
            s.client_id.as_deref().unwrap_or_default(),
            &signer,
            &thumbprints,
            &url,
            Utc::now(),
        )
        .map_err(|e| OAuthError::Config(e.to_string()))?;
        request = request
            .add_extra_param(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            )
            .add_extra_param("client_assertion", assertion.clone());
    }
    let response = request
        .request_async(&inner.http)
        .await
        .map_err(|e| map_error(s, &url, e))?;
    Ok(access_token(&response, s))
}

async fn refresh(inner: &Inner) -> Result<AccessToken, OAuthError> {
    let s = &inner.settings;
    let url = s.token_url();
    let path = inner
        .refresh_path
        .clone()
        .unwrap_or_else(|| "oauth2-refresh-token".into());
    let stored = token_file::read(&path)
        .map_err(|e| OAuthError::Config(format!(
            "config key `oauth2.refresh_token_file`: cannot read {}: {e}; fix: check the path and that the service user may read it",
            path.display()
        )))?
        .ok_or_else(|| OAuthError::NoRefreshToken { path: path.clone() })?;
    let client = client(s, &url)?;
    let stored = RefreshToken::new(stored);
    let response = client
        .exchange_refresh_token(&stored)
        .add_scopes(scopes(s))
        .request_async(&inner.http)
        .await
        .map_err(|e| map_error(s, &url, e))?;
    // A rotated refresh token is saved before the access token is used: the
    // old one may already be dead at the provider.
    crate::faults::hit("oauth_after_refresh");
    if let Some(new) = response.refresh_token()
        && new.secret() != stored.secret()
    {
        token_file::save(&path, new.secret()).map_err(|e| OAuthError::SaveRefreshToken {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        tracing::info!("Saved the rotated OAuth refresh token.");
    }
    Ok(access_token(&response, s))
}

async fn service_account(inner: &Inner) -> Result<AccessToken, OAuthError> {
    let s = &inner.settings;
    let path = s.service_account_file.clone().unwrap_or_default();
    let text = std::fs::read(&path).map_err(|e| {
        OAuthError::Config(format!(
            "config key `oauth2.service_account_file`: cannot read {}: {e}; fix: check the path and that the service user may read it",
            path.display()
        ))
    })?;
    let sa: ServiceAccount = serde_json::from_slice(&text).map_err(|e| {
        OAuthError::Config(format!(
            "config key `oauth2.service_account_file`: {} is not a service account JSON key ({}); fix: download a JSON key for the service account",
            path.display(),
            e.classify_name()
        ))
    })?;
    let url = sa.token_uri.clone().unwrap_or_else(|| s.token_url());
    let signer = Signer::from_pem(
        sa.private_key.as_bytes(),
        &format!("private_key in {}", path.display()),
    )
    .map_err(|e| OAuthError::Config(format!("config key `oauth2.service_account_file`: {e}")))?;
    let assertion =
        jwt::google_assertion(&sa, &signer, &inner.subject, &s.scopes(), &url, Utc::now())
            .map_err(|e| OAuthError::Config(e.to_string()))?;
    let body = oauth2::url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
        .append_pair("assertion", &assertion)
        .finish();
    let request = oauth2::http::Request::builder()
        .method(oauth2::http::Method::POST)
        .uri(&url)
        .header(
            oauth2::http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(oauth2::http::header::ACCEPT, "application/json")
        .body(body.into_bytes())
        .map_err(|e| {
            OAuthError::Config(format!(
                "the service account's token_uri {url:?} is not usable: {e}"
            ))
        })?;
    let response = inner
        .http
        .call(request)
        .await
        .map_err(|e| OAuthError::Unreachable {
            url: url.clone(),
            detail: error_chain(&e),
        })?;
    if response.status().is_success() {
        let token: BasicTokenResponse =
            serde_json::from_slice(response.body()).map_err(|e| OAuthError::Malformed {
                url: url.clone(),
                detail: format!("not a token response ({})", e.classify_name()),
            })?;
        return Ok(access_token(&token, s));
    }
    match serde_json::from_slice::<BasicErrorResponse>(response.body()) {
        Ok(e) => Err(refused(s, &url, e.error().as_ref(), e.error_description())),
        Err(_) => Err(OAuthError::Malformed {
            url,
            detail: format!("HTTP {} without an OAuth error", response.status()),
        }),
    }
}

/// `auth login` for `flow = "refresh_token"`: RFC 8628 device authorization.
pub(super) async fn device_login(
    inner: &Inner,
    mut show: impl FnMut(&str),
) -> Result<AccessToken, OAuthError> {
    let s = &inner.settings;
    if s.flow != OAuthFlow::RefreshToken {
        return Err(OAuthError::Config(
            "config key `oauth2.flow`: `auth login` is only for flow = \"refresh_token\"; fix: set that flow, or nothing to do (client credentials and service accounts need no login)".into(),
        ));
    }
    let device_url = s.device_authorization_url().ok_or_else(|| {
        OAuthError::Config("config key `oauth2.device_authorization_url`: not set; fix: set the provider's RFC 8628 device authorization endpoint".into())
    })?;
    let url = s.token_url();
    let client = client(s, &url)?.set_device_authorization_url(
        DeviceAuthorizationUrl::new(device_url.clone()).map_err(|e| {
            OAuthError::Config(format!(
                "config key `oauth2.device_authorization_url`: {e}; fix: write a full URL"
            ))
        })?,
    );
    let details: oauth2::StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(scopes(s))
        .request_async(&inner.http)
        .await
        .map_err(|e| map_error(s, &device_url, e))?;
    show(&format!(
        "To authorize privacy-mailroom, open {} and enter the code {}",
        details.verification_uri().as_str(),
        details.user_code().secret()
    ));
    let response = client
        .exchange_device_access_token(&details)
        .request_async(&inner.http, tokio::time::sleep, None)
        .await
        .map_err(|e| map_error(s, &url, e))?;
    let path = inner
        .refresh_path
        .clone()
        .unwrap_or_else(|| "oauth2-refresh-token".into());
    let refresh = response.refresh_token().ok_or_else(|| OAuthError::Malformed {
        url: url.clone(),
        detail: "the login succeeded but no refresh token was issued; ask for offline access (Microsoft: the offline_access scope)".into(),
    })?;
    token_file::save(&path, refresh.secret()).map_err(|e| OAuthError::SaveRefreshToken {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    Ok(access_token(&response, s))
}

fn access_token(r: &BasicTokenResponse, s: &OAuthConfig) -> AccessToken {
    let obtained = Utc::now();
    AccessToken {
        secret: r.access_token().secret().clone(),
        obtained,
        expires: r
            .expires_in()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| obtained + d),
        scopes: r
            .scopes()
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .unwrap_or_else(|| s.scopes()),
    }
}

fn refused(s: &OAuthConfig, url: &str, code: &str, description: Option<&String>) -> OAuthError {
    let description = description
        .map(|d| d.lines().next().unwrap_or_default().trim().to_string())
        .unwrap_or_default();
    let needs_reauthorization = code == "invalid_grant" && s.flow == OAuthFlow::RefreshToken
        || advice::aadsts_code(&description).is_some_and(|c| [700082, 70008, 50173].contains(&c));
    OAuthError::Refused {
        url: url.to_string(),
        code: code.to_string(),
        fix: advice::token_error(s.provider, s.flow, code, &description),
        description: if description.is_empty() {
            String::new()
        } else {
            format!(": {description}")
        },
        needs_reauthorization,
    }
}

fn map_error<RE, T>(
    s: &OAuthConfig,
    url: &str,
    e: RequestTokenError<RE, StandardErrorResponse<T>>,
) -> OAuthError
where
    RE: std::error::Error + 'static,
    T: ErrorResponseType + AsRef<str> + std::fmt::Display + 'static,
{
    match e {
        RequestTokenError::ServerResponse(r) => {
            refused(s, url, r.error().as_ref(), r.error_description())
        }
        RequestTokenError::Request(e) => OAuthError::Unreachable {
            url: url.to_string(),
            detail: error_chain(&e),
        },
        // The body is not echoed: it could hold a token.
        RequestTokenError::Parse(e, _) => OAuthError::Malformed {
            url: url.to_string(),
            detail: format!("not a token response ({})", e.inner().classify_name()),
        },
        RequestTokenError::Other(detail) => OAuthError::Malformed {
            url: url.to_string(),
            detail,
        },
    }
}

/// An error and its sources on one line ("connection refused" is at the bottom).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "missing or wrong fields",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}
