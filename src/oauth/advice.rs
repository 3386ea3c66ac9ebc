//! What an identity provider's refusal means and how to fix it: one sentence
//! for `check`, the daemon's log and the team's alert. Pure.

use super::settings::{OAuthFlow, OAuthProvider};

use super::jwt::Claims;

/// The fix for a token endpoint error (`error` code, `error_description`).
pub(crate) fn token_error(
    provider: OAuthProvider,
    flow: OAuthFlow,
    code: &str,
    description: &str,
) -> String {
    // Microsoft puts the precise reason in an AADSTS code.
    if let Some(aadsts) = aadsts_code(description)
        && let Some(fix) = aadsts_fix(aadsts)
    {
        return format!("AADSTS{aadsts}: {fix}");
    }
    match code {
        "invalid_client" => match provider {
            OAuthProvider::Microsoft => "the client ID, secret or certificate is wrong or expired; fix: check oauth2.client_id and oauth2.tenant, and create a new client secret (or upload the certificate) under App registrations → Certificates & secrets".into(),
            OAuthProvider::Google => "the client ID or secret is wrong, or the service account key was deleted; fix: check oauth2.client_id / the key file, or create a new key in the Google Cloud console".into(),
            OAuthProvider::Generic => "the identity provider does not accept this client; fix: check oauth2.client_id and the client secret".into(),
        },
        "invalid_grant" => match flow {
            OAuthFlow::RefreshToken => "the refresh token was revoked or has expired (consent withdrawn, password changed, or unused for too long); fix: run `privacy-mailroom auth login` again".into(),
            OAuthFlow::ServiceAccount => "the assertion was refused: the mailbox (imap.username) may not exist in the Workspace domain, or the clock is off; fix: check imap.username and the system time".into(),
            OAuthFlow::ClientCredentials => "the grant was refused; fix: check oauth2.client_id, the tenant and the client credentials".into(),
        },
        "unauthorized_client" => match provider {
            OAuthProvider::Google => "the service account may not act for the mailbox: domain-wide delegation is missing; fix: in the Google Admin console → Security → API controls → Domain-wide delegation, add the service account's client ID with the scope https://mail.google.com/".into(),
            _ => "this client may not use this flow; fix: allow the grant type for the app at the identity provider (Microsoft: \"Allow public client flows\" for auth login)".into(),
        },
        "invalid_scope" => "the scope is not valid for this client; fix: check oauth2.scopes (Microsoft: \"https://outlook.office365.com/.default\"; Google: \"https://mail.google.com/\")".into(),
        "temporarily_unavailable" | "server_error" => "the identity provider has a problem of its own; the daemon retries with backoff, nothing to change here".into(),
        "access_denied" => "the request was denied; fix: grant admin consent for the app's permissions".into(),
        "" => "the token endpoint gave no reason".into(),
        other => format!("the identity provider refused with {other:?}; see its documentation"),
    }
}

/// The number after `AADSTS` in a Microsoft error description.
pub(crate) fn aadsts_code(description: &str) -> Option<u32> {
    let at = description.find("AADSTS")?;
    let digits: String = description[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn aadsts_fix(code: u32) -> Option<&'static str> {
    Some(match code {
        50194 | 90002 | 900023 => {
            "the tenant is wrong or multi-tenant endpoints were used with client credentials; fix: set oauth2.tenant to your tenant's domain or ID (e.g. \"contoso.onmicrosoft.com\")"
        }
        70011 | 1002012 => {
            "the scope is not valid; fix: oauth2.scopes = [\"https://outlook.office365.com/.default\"] for app-only access (not a Graph scope)"
        }
        700016 => {
            "the application is not found in this tenant; fix: check oauth2.client_id and oauth2.tenant"
        }
        7000215 => {
            "the client secret is wrong; fix: copy the secret's Value (not its ID) into the client_secret file"
        }
        7000222 => {
            "the client secret has expired; fix: create a new one under App registrations → Certificates & secrets"
        }
        700027 | 700023 => {
            "the certificate assertion was refused; fix: upload client_certificate_file's certificate to the app registration"
        }
        65001 => {
            "admin consent is missing; fix: grant admin consent for IMAP.AccessAsApp / SMTP.SendAsApp in App registrations → API permissions"
        }
        700082 | 70008 | 50173 | 50076 | 50079 | 50078 => {
            "the refresh token has expired or was revoked (unused for 90 days, a password change, or new sign-in rules); fix: run `privacy-mailroom auth login` again"
        }
        7000112 => "the application is disabled; fix: enable it in Enterprise applications",
        _ => return None,
    })
}

/// Exchange refused a token it accepted as genuine (`NO AUTHENTICATE failed`,
/// `User is authenticated but not connected`): says which piece is missing,
/// from the token's audience and roles, and prints the cmdlets.
pub(crate) fn exchange_refusal(
    claims: Option<&Claims>,
    client_id: &str,
    mailbox: &str,
    protocol: &str,
) -> String {
    let role = if protocol == "SMTP" {
        "SMTP.SendAsApp"
    } else {
        "IMAP.AccessAsApp"
    };
    let Some(c) = claims else {
        return format!(
            "Exchange refused the token; fix: grant {role} and register the app in Exchange (see docs/providers.md)"
        );
    };
    if !c.aud.iter().any(|a| {
        a.trim_end_matches('/') == "https://outlook.office365.com"
            || a == "00000002-0000-0ff1-ce00-000000000000"
    }) {
        return format!(
            "the token is for {:?}, not Exchange Online; fix: oauth2.scopes = [\"https://outlook.office365.com/.default\"]",
            c.aud.join(" ")
        );
    }
    if let Some(scp) = &c.scp {
        // Delegated (a user's consent): no service principal involved.
        return format!(
            "the user's token (scopes: {scp}) was refused; fix: the consenting user needs FullAccess to the mailbox (Add-MailboxPermission -Identity \"{mailbox}\" -User <user> -AccessRights FullAccess), and {protocol} must be enabled for it (Set-CASMailbox -Identity \"{mailbox}\" -ImapEnabled $true / -SmtpClientAuthenticationDisabled $false)"
        );
    }
    if !c.roles.iter().any(|r| r == role) {
        return format!(
            "the token has no {role} role (roles: {}); fix: App registrations → API permissions → Add → APIs my organization uses → Office 365 Exchange Online → Application permissions → {role}, then grant admin consent",
            if c.roles.is_empty() {
                "none".to_string()
            } else {
                c.roles.join(", ")
            }
        );
    }
    let object_id = c
        .oid
        .as_deref()
        .unwrap_or("<Enterprise application Object ID>");
    format!(
        "the token is valid but Exchange does not let the app into the mailbox: the service principal or the mailbox permission is missing; fix (Exchange Online PowerShell): New-ServicePrincipal -AppId {client_id} -ObjectId {object_id}; Add-MailboxPermission -Identity \"{mailbox}\" -User {object_id} -AccessRights FullAccess"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aadsts_codes_name_the_fix() {
        let d = "AADSTS7000215: Invalid client secret provided. Trace ID: …";
        assert_eq!(aadsts_code(d), Some(7000215));
        let fix = token_error(
            OAuthProvider::Microsoft,
            OAuthFlow::ClientCredentials,
            "invalid_client",
            d,
        );
        assert!(
            fix.starts_with("AADSTS7000215") && fix.contains("fix:"),
            "{fix}"
        );
        let fix = token_error(
            OAuthProvider::Microsoft,
            OAuthFlow::RefreshToken,
            "invalid_grant",
            "AADSTS700082: The refresh token has expired due to inactivity.",
        );
        assert!(fix.contains("auth login"), "{fix}");
        assert!(
            token_error(
                OAuthProvider::Microsoft,
                OAuthFlow::ClientCredentials,
                "invalid_request",
                "AADSTS50194: Application is not configured as a multi-tenant application."
            )
            .contains("oauth2.tenant")
        );
        assert!(
            token_error(
                OAuthProvider::Microsoft,
                OAuthFlow::ClientCredentials,
                "invalid_scope",
                "AADSTS70011: The provided value for scope is not valid."
            )
            .contains("outlook.office365.com/.default")
        );
        assert_eq!(aadsts_code("no code"), None);
    }

    #[test]
    fn oauth_errors_name_the_fix() {
        let g = token_error(
            OAuthProvider::Google,
            OAuthFlow::ServiceAccount,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method",
        );
        assert!(g.contains("Domain-wide delegation"), "{g}");
        let r = token_error(
            OAuthProvider::Generic,
            OAuthFlow::RefreshToken,
            "invalid_grant",
            "revoked",
        );
        assert!(r.contains("auth login"), "{r}");
        let c = token_error(
            OAuthProvider::Generic,
            OAuthFlow::ClientCredentials,
            "invalid_client",
            "",
        );
        assert!(c.contains("client_id"), "{c}");
    }

    #[test]
    fn exchange_refusals_say_which_piece_is_missing() {
        let graph = Claims {
            aud: vec!["https://graph.microsoft.com".into()],
            ..Claims::default()
        };
        assert!(
            exchange_refusal(Some(&graph), "app", "privacy@example.com", "IMAP")
                .contains("outlook.office365.com/.default")
        );
        let no_role = Claims {
            aud: vec!["https://outlook.office365.com".into()],
            ..Claims::default()
        };
        assert!(
            exchange_refusal(Some(&no_role), "app", "privacy@example.com", "IMAP")
                .contains("IMAP.AccessAsApp")
        );
        let ok = Claims {
            aud: vec!["https://outlook.office365.com".into()],
            roles: vec!["IMAP.AccessAsApp".into()],
            oid: Some("oid-1".into()),
            ..Claims::default()
        };
        let text = exchange_refusal(Some(&ok), "app-1", "privacy@example.com", "IMAP");
        assert!(
            text.contains("New-ServicePrincipal -AppId app-1 -ObjectId oid-1"),
            "{text}"
        );
        assert!(
            text.contains("Add-MailboxPermission -Identity \"privacy@example.com\" -User oid-1"),
            "{text}"
        );
    }
}
