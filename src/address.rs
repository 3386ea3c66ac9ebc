//! E-mail addresses as the daemon compares them: lower-cased, without names.

pub mod authres;

use crate::message::Address;

/// Parses `Name <addr@domain>` or `addr@domain`.
pub fn parse_mailbox(s: &str) -> Option<Address> {
    let mailbox: lettre::message::Mailbox = s.trim().parse().ok()?;
    Some(Address {
        addr: mailbox.email.to_string().to_lowercase(),
        name: mailbox.name.filter(|n| !n.is_empty()),
    })
}

/// The domain part of an address, lower-cased.
pub fn domain(addr: &str) -> Option<&str> {
    addr.rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}

/// Is the address at one of `domains`, or a subdomain of one? (`@` before a
/// listed domain is allowed; case is ignored.)
pub(crate) fn in_domains<D: AsRef<str>>(addr: &str, domains: &[D]) -> bool {
    let Some(domain) = domain(addr.trim()) else {
        return false;
    };
    let domain = domain.to_lowercase();
    domains.iter().any(|k| {
        let k = k.as_ref().trim().trim_start_matches('@').to_lowercase();
        !k.is_empty()
            && (domain == k
                || domain
                    .strip_suffix(&k)
                    .is_some_and(|rest| rest.ends_with('.')))
    })
}

/// The key the per-sender limit counts by: the address lower-cased, with a
/// `+tag` on the local part removed, so `a+1@x` and `a+2@x` are one sender.
pub fn rate_key(addr: &str) -> String {
    let addr = addr.trim().to_lowercase();
    match addr.rsplit_once('@') {
        Some((local, domain)) => {
            let base = local.split_once('+').map_or(local, |(b, _)| b);
            if base.is_empty() {
                return addr.clone();
            }
            format!("{base}@{domain}")
        }
        None => addr,
    }
}

/// Same mailbox, ignoring case.
pub fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_keys_ignore_tags_and_case() {
        assert_eq!(rate_key("Bob+Shop@X.example"), "bob@x.example");
        assert_eq!(rate_key("bob@x.example"), "bob@x.example");
        assert_eq!(rate_key("bob+a+b@x.example"), "bob@x.example");
        assert_eq!(rate_key("+only@x.example"), "+only@x.example");
        assert_eq!(rate_key("no-domain"), "no-domain");
    }

    #[test]
    fn parses_named_and_bare() {
        let a = parse_mailbox("Privacy Team <Privacy@Example.COM>").unwrap();
        assert_eq!(a.addr, "privacy@example.com");
        assert_eq!(a.name.as_deref(), Some("Privacy Team"));
        assert_eq!(parse_mailbox("a@b.example").unwrap().addr, "a@b.example");
        assert!(parse_mailbox("not an address").is_none());
        assert_eq!(domain("x@Y.example"), Some("Y.example"));
        let agents = ["rights-agent.example", "@other.example"];
        assert!(in_domains("a@Rights-Agent.example", &agents));
        assert!(in_domains("a@eu.rights-agent.example", &agents));
        assert!(in_domains("a@other.example", &agents));
        assert!(!in_domains("a@evilrights-agent.example", &agents));
        assert!(!in_domains("no-domain", &agents));
    }
}
