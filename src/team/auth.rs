//! Who may command a case by mail (SPEC §6): a team member, replying to a
//! notification whose HMAC Message-ID verifies, and — with
//! `team.require_dkim` — a `dkim=pass` for the sender's domain from a trusted
//! receiving server. Pure.

use crate::config::TeamConfig;

/// Why a member's mail was not accepted as commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    NotMember,
    NoDkimPass,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denied::NotMember => f.write_str("the sender is not in team.members"),
            Denied::NoDkimPass => f.write_str(
                "team.require_dkim is on and no trusted Authentication-Results header shows dkim=pass for the sender's domain",
            ),
        }
    }
}

/// Checks membership and, when required, DKIM.
pub fn authorize(
    team: &TeamConfig,
    sender: &str,
    authentication_results: &[String],
) -> Result<(), Denied> {
    if !team.is_member(sender) {
        return Err(Denied::NotMember);
    }
    if team.require_dkim && !dkim_pass(team, sender, authentication_results) {
        return Err(Denied::NoDkimPass);
    }
    Ok(())
}

/// An `Authentication-Results` header (RFC 8601) from a trusted authserv-id
/// with `dkim=pass` whose `header.d` (or `header.i`) is the sender's domain.
pub fn dkim_pass(team: &TeamConfig, sender: &str, headers: &[String]) -> bool {
    let Some(domain) = crate::address::domain(sender) else {
        return false;
    };
    headers.iter().any(|h| {
        let mut parts = h.split(';');
        let authserv = parts
            .next()
            .and_then(|p| p.split_whitespace().next())
            .unwrap_or_default();
        if !team
            .trusted_authserv_ids
            .iter()
            .any(|t| t.eq_ignore_ascii_case(authserv))
        {
            return false;
        }
        parts.any(|result| {
            let lower = result.to_ascii_lowercase();
            let mut words = lower.split_whitespace();
            if words.next() != Some("dkim=pass") {
                return false;
            }
            lower.split_whitespace().any(|w| {
                let value = w.strip_prefix("header.d=").or_else(|| {
                    w.strip_prefix("header.i=")
                        .map(|i| i.rsplit('@').next().unwrap_or(i))
                });
                value.is_some_and(|d| d.trim_matches('"').eq_ignore_ascii_case(domain))
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team(require_dkim: bool) -> TeamConfig {
        TeamConfig {
            members: vec!["Alice@Example.com".into()],
            notify: vec![],
            digest_time: "09:00".into(),
            require_dkim,
            trusted_authserv_ids: vec!["mx.example.com".into()],
            burst_threshold: 20,
        }
    }

    #[test]
    fn members_only() {
        assert_eq!(authorize(&team(false), "alice@example.com", &[]), Ok(()));
        assert_eq!(
            authorize(&team(false), "mallory@example.com", &[]),
            Err(Denied::NotMember)
        );
    }

    #[test]
    fn dkim_from_a_trusted_server_for_the_senders_domain() {
        let t = team(true);
        let table = [
            (
                "mx.example.com; dkim=pass header.d=example.com header.s=sel; spf=pass",
                true,
            ),
            (
                "mx.example.com;\r\n dkim=pass (2048-bit key) header.i=@example.com",
                true,
            ),
            ("mx.example.com; dkim=fail header.d=example.com", false),
            ("mx.example.com; dkim=pass header.d=evil.example", false),
            ("mx.evil.example; dkim=pass header.d=example.com", false),
            ("mx.example.com; spf=pass smtp.mailfrom=example.com", false),
        ];
        for (header, ok) in table {
            assert_eq!(
                dkim_pass(&t, "alice@example.com", &[header.to_string()]),
                ok,
                "{header}"
            );
        }
        assert_eq!(
            authorize(&t, "alice@example.com", &[]),
            Err(Denied::NoDkimPass)
        );
    }
}
