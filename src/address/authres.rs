//! Which sender the mail system vouches for: the `Authentication-Results`
//! rules shared by team commands (`team::auth`) and the privileges of known
//! agents (`casework`). Pure; the trusted authserv-ids come from
//! `team.trusted_authserv_ids`.

/// Whether `sender` is a known agent our own MX vouches for: its domain is
/// in `agents.known_domains` and [`authenticated`] holds for it. The one
/// rule for an agent's new request (`casework::open_request`) and for a
/// reply in an agent's case (`intake`): such an agent keeps an agent's
/// exemption from the per-sender limit.
pub(crate) fn vouched_known_agent<D: AsRef<str>, S: AsRef<str>>(
    sender: &str,
    known_domains: &[D],
    trusted_ids: &[S],
    headers: &[String],
) -> bool {
    crate::address::in_domains(sender, known_domains) && authenticated(trusted_ids, sender, headers)
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
pub fn authenticated<S: AsRef<str>>(trusted_ids: &[S], sender: &str, headers: &[String]) -> bool {
    let Some(header) = trusted_header(trusted_ids, headers) else {
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
fn trusted_header<'a, S: AsRef<str>>(trusted_ids: &[S], headers: &'a [String]) -> Option<&'a str> {
    headers.iter().map(String::as_str).find(|h| {
        let id = authserv_id(h);
        !id.is_empty()
            && trusted_ids
                .iter()
                .any(|t| t.as_ref().trim().eq_ignore_ascii_case(id))
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
