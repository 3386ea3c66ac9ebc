//! Who may command a case by mail (SPEC §6): a team member, replying to a
//! notification whose HMAC Message-ID verifies, and — with
//! `team.require_dkim` — authenticated by our own MX: the topmost
//! `Authentication-Results` header of a trusted server shows an aligned
//! `dkim=pass` or `auth=pass` for the sender. Pure.

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
                "team.require_dkim is on and the topmost Authentication-Results header of a trusted server shows neither dkim=pass for the sender's domain nor auth=pass for the sender",
            ),
        }
    }
}

/// Checks membership and, when required, that the MX authenticated the sender.
pub fn authorize(
    team: &TeamConfig,
    sender: &str,
    authentication_results: &[String],
) -> Result<(), Denied> {
    if !team.is_member(sender) {
        return Err(Denied::NotMember);
    }
    if team.require_dkim && !authenticated(team, sender, authentication_results) {
        return Err(Denied::NoDkimPass);
    }
    Ok(())
}

/// Whether our own MX vouches for `sender`: the rules are
/// [`crate::address::authres::authenticated`], with `team.trusted_authserv_ids`.
pub fn authenticated(team: &TeamConfig, sender: &str, headers: &[String]) -> bool {
    crate::address::authres::authenticated(&team.trusted_authserv_ids, sender, headers)
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
            ("MX.Example.COM 1; DKIM=Pass header.d=Example.com", true),
            ("mx.example.com; dkim=pass header.d=\"example.com\"", true),
            ("mx.example.com; dkim=fail header.d=example.com", false),
            ("mx.example.com; dkim=pass header.d=evil.example", false),
            ("mx.example.com; dkim=pass header.d=notexample.com", false),
            ("mx.example.com; dkim=pass header.d=com", false),
            ("mx.evil.example; dkim=pass header.d=example.com", false),
            ("mx.example.com; spf=pass smtp.mailfrom=example.com", false),
            // The result hides in a comment: not a result.
            (
                "mx.example.com; spf=none (dkim=pass header.d=example.com)",
                false,
            ),
            ("mx.example.com; none", false),
            ("", false),
        ];
        for (header, ok) in table {
            assert_eq!(
                authenticated(&t, "alice@example.com", &[header.to_string()]),
                ok,
                "{header}"
            );
        }
        assert_eq!(
            authorize(&t, "alice@example.com", &[]),
            Err(Denied::NoDkimPass)
        );
    }

    #[test]
    fn relaxed_alignment_for_subdomains() {
        let t = team(true);
        let h = |d: &str| vec![format!("mx.example.com; dkim=pass header.d={d}")];
        assert!(authenticated(&t, "alice@eu.example.com", &h("example.com")));
        assert!(!authenticated(
            &t,
            "alice@example.com",
            &h("eu.example.com")
        ));
        assert!(!authenticated(&t, "alice@example.com", &h("xexample.com")));
    }

    #[test]
    fn smtp_auth_must_name_the_member() {
        let t = team(true);
        let h = |login: &str| vec![format!("mx.example.com; auth=pass smtp.auth={login}")];
        assert!(authenticated(
            &t,
            "alice@example.com",
            &h("alice@example.com")
        ));
        assert!(authenticated(
            &t,
            "Alice@Example.com",
            &h("ALICE@example.com")
        ));
        assert!(authenticated(&t, "alice@example.com", &h("alice")));
        // Another account of the company's domain cannot speak for Alice.
        assert!(!authenticated(
            &t,
            "alice@example.com",
            &h("bob@example.com")
        ));
        assert!(!authenticated(&t, "alice@example.com", &h("bob")));
        let failed = vec!["mx.example.com; auth=fail smtp.auth=alice".to_string()];
        assert!(!authenticated(&t, "alice@example.com", &failed));
    }

    #[test]
    fn only_the_topmost_trusted_header_counts() {
        let t = team(true);
        let ours_fail = "mx.example.com; dkim=none; spf=softfail".to_string();
        let ours_pass = "mx.example.com; dkim=pass header.d=example.com".to_string();
        let forged = "mx.example.com; dkim=pass header.d=example.com".to_string();
        let other = "relay.elsewhere.example; dkim=pass header.d=example.com".to_string();
        // A forged "pass" below our MX's own verdict is ignored.
        assert!(!authenticated(
            &t,
            "alice@example.com",
            &[ours_fail.clone(), forged]
        ));
        // Headers from servers we do not trust, above ours, are ignored.
        assert!(!authenticated(
            &t,
            "alice@example.com",
            &[other.clone(), ours_fail.clone()]
        ));
        assert!(authenticated(
            &t,
            "alice@example.com",
            &[other, ours_pass.clone()]
        ));
        // Our verdict on top, anything below it does not take it away.
        assert!(authenticated(
            &t,
            "alice@example.com",
            &[ours_pass, ours_fail]
        ));
    }
}
