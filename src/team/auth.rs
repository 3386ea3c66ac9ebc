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

/// Whether our own MX vouches for `sender`, by the rules of RFC 8601:
///
/// - Only the topmost `Authentication-Results` header whose authserv-id is
///   in `trusted_authserv_ids` counts. Headers are prepended on the way in,
///   so that one was written by our MX; anything below it came with the
///   message (a forgery), and headers above it from other ids were added
///   by servers we do not trust. (The MX must also remove incoming headers
///   that carry its own id, as RFC 8601 §5 asks; docs/privacy-team.md.)
/// - It must show `dkim=pass` with a signing domain (`header.d`, or the
///   domain of `header.i`) aligned with the sender's domain: the same
///   domain, or a parent of it with at least one dot (relaxed alignment
///   without a public-suffix list), or
/// - `auth=pass` whose `smtp.auth` is the sender's address (or its local
///   part, when the MX logs bare logins): the MX authenticated the
///   submitter as this member.
pub fn authenticated(team: &TeamConfig, sender: &str, headers: &[String]) -> bool {
    let Some(header) = trusted_header(team, headers) else {
        return false;
    };
    let Some(domain) = crate::address::domain(sender) else {
        return false;
    };
    results(header).any(|r| match r.method.as_str() {
        "dkim" => r.result == "pass" && r.signing_domain().is_some_and(|d| aligned(&d, domain)),
        "auth" => {
            r.result == "pass"
                && r.prop("smtp.auth")
                    .is_some_and(|a| same_submitter(a, sender))
        }
        _ => false,
    })
}

/// The topmost header whose authserv-id is trusted; `headers` are in
/// message order (topmost first).
fn trusted_header<'a>(team: &TeamConfig, headers: &'a [String]) -> Option<&'a str> {
    headers.iter().map(String::as_str).find(|h| {
        let id = authserv_id(h);
        !id.is_empty()
            && team
                .trusted_authserv_ids
                .iter()
                .any(|t| t.trim().eq_ignore_ascii_case(id))
    })
}

/// The authserv-id: the first word before the first `;` (a version number
/// may follow it), comments removed.
fn authserv_id(header: &str) -> &str {
    header
        .split(';')
        .next()
        .and_then(|p| p.split_whitespace().next())
        .unwrap_or_default()
}

/// One `method=result prop=value …` clause of a header.
#[derive(Debug)]
struct Clause {
    method: String,
    result: String,
    props: Vec<(String, String)>,
}

impl Clause {
    fn prop(&self, name: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn signing_domain(&self) -> Option<String> {
        self.prop("header.d")
            .map(str::to_string)
            .or_else(|| {
                self.prop("header.i")
                    .map(|i| i.rsplit('@').next().unwrap_or(i).to_string())
            })
            .filter(|d| !d.is_empty())
    }
}

/// The result clauses after the authserv-id, lower-cased, with comments
/// (`(…)`) and quotes removed.
fn results(header: &str) -> impl Iterator<Item = Clause> + '_ {
    let clean = strip_comments(header);
    clean
        .split(';')
        .skip(1)
        .filter_map(|part| {
            let mut words = part.split_whitespace();
            let (method, result) = words.next()?.split_once('=')?;
            let props = words
                .filter_map(|w| {
                    let (n, v) = w.split_once('=')?;
                    Some((n.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some(Clause {
                method: method.to_string(),
                result: result.to_string(),
                props,
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
}

fn strip_comments(header: &str) -> String {
    let mut out = String::with_capacity(header.len());
    let mut depth = 0usize;
    for c in header.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.extend(c.to_lowercase()),
            _ => {}
        }
    }
    out
}

/// Relaxed alignment: the signing domain is the sender's domain or a parent
/// of it that has at least one dot (never a bare top-level domain).
fn aligned(signing: &str, sender_domain: &str) -> bool {
    let signing = signing.trim_end_matches('.');
    let sender = sender_domain.to_ascii_lowercase();
    signing == sender || (signing.contains('.') && sender.ends_with(&format!(".{signing}")))
}

/// `smtp.auth` names the sender: the whole address, or its local part.
fn same_submitter(login: &str, sender: &str) -> bool {
    let sender = sender.trim().to_ascii_lowercase();
    if login.contains('@') {
        login == sender
    } else {
        sender
            .rsplit_once('@')
            .is_some_and(|(local, _)| local == login)
    }
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
