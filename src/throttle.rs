//! Servers asking the daemon to slow down. Exchange Online, Gmail and others
//! throttle a mailbox that opens too many connections or sends too fast, and
//! say so in their answers; coming back sooner only prolongs the throttling.
//! These pure functions read the hint out of a server's text; the reconnect
//! delay (`daemon`) and the SMTP outage pause (`delivery`) wait at least that
//! long, and back off with jitter as before when there is no hint.

use std::time::Duration;

/// A server that says it throttles but names no time: wait at least this.
pub(crate) const THROTTLED_WAIT: Duration = Duration::from_secs(60);

/// No hint is honoured beyond this: a garbled figure must not stop the
/// mailbox for a day.
pub(crate) const MAX_HINT: Duration = Duration::from_secs(3600);

/// The wait an IMAP server asks for in a NO, BAD or BYE text (or an error
/// message quoting one): Exchange Online's `Suggested Backoff Time: N
/// milliseconds` (a bare number there is milliseconds), or the `[THROTTLED]`
/// response code (Gmail, Exchange; a time in the text if any, else
/// [`THROTTLED_WAIT`]). `None` when the text asks for nothing.
pub(crate) fn imap_hint(text: &str) -> Option<Duration> {
    let lower = text.to_ascii_lowercase();
    if let Some(at) = lower.find("suggested backoff time") {
        let rest = &text[at + "suggested backoff time".len()..];
        if let Some(wait) = first_number(rest).map(|(n, unit)| {
            // Exchange gives milliseconds; a unit in the text wins.
            unit.unwrap_or(Duration::from_millis(1)).saturating_mul(n)
        }) {
            return Some(wait.min(MAX_HINT));
        }
    }
    if lower.contains("[throttled]") || lower.contains("throttl") {
        return Some(time_in(text).map_or(THROTTLED_WAIT, |d| d.min(MAX_HINT)));
    }
    None
}

/// The wait an SMTP server asks for in a reply (or an error message quoting
/// one): `432 4.3.2` (Exchange Online: too many connections or messages from
/// this mailbox) and `421 4.7.x` (Gmail, Outlook: rate limited, "try again in
/// N seconds"); the time in the text if any, else [`THROTTLED_WAIT`]. `None`
/// for every other reply, which keeps the usual backoff.
pub(crate) fn smtp_hint(text: &str) -> Option<Duration> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | ',' | ';' | ':'))
        .filter(|w| !w.is_empty())
        .collect();
    let has = |w: &str| words.contains(&w);
    let enhanced_47 = words.iter().any(|w| {
        w.strip_prefix("4.7.")
            .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
    });
    let throttled = has("432") || has("4.3.2") || (has("421") && enhanced_47);
    throttled.then(|| time_in(text).map_or(THROTTLED_WAIT, |d| d.min(MAX_HINT)))
}

/// `base` (the usual backoff), or the server's `hint` when it asks for
/// longer, plus up to 10 % so that many clients told the same time do not
/// all come back at once.
pub(crate) fn at_least(base: Duration, hint: Option<Duration>) -> Duration {
    match hint {
        Some(hint) if hint > base => {
            let spread = u64::try_from(hint.as_millis() / 10).unwrap_or(u64::MAX);
            hint + Duration::from_millis(rand::random_range(0..=spread))
        }
        _ => base,
    }
}

/// The first `<number> <unit>` in `text` ("60 seconds", "299802 ms",
/// "2 minutes"), as a duration. Numbers glued to letters or dots (host
/// names, `4.7.0`) do not count.
fn time_in(text: &str) -> Option<Duration> {
    let mut rest = text;
    while let Some((n, unit, after)) = next_number(rest) {
        if let Some(unit) = unit {
            return Some(unit.saturating_mul(n));
        }
        rest = after;
    }
    None
}

/// The first free-standing number of `text` and its unit, if one follows.
fn first_number(text: &str) -> Option<(u32, Option<Duration>)> {
    next_number(text).map(|(n, unit, _)| (n, unit))
}

/// The next free-standing number, the unit after it (if any), and the text
/// after both.
fn next_number(text: &str) -> Option<(u32, Option<Duration>, &str)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let glued_before =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'.');
        let glued_after =
            i < bytes.len() && bytes[i] == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
        if glued_before || glued_after {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
            continue;
        }
        let n: u32 = text[start..i].parse().unwrap_or(u32::MAX);
        let after = &text[i..];
        let word: String = after
            .trim_start()
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect::<String>()
            .to_ascii_lowercase();
        let unit = match word.as_str() {
            "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => {
                Some(Duration::from_millis(1))
            }
            "s" | "sec" | "secs" | "second" | "seconds" => Some(Duration::from_secs(1)),
            "m" | "min" | "mins" | "minute" | "minutes" => Some(Duration::from_secs(60)),
            _ => None,
        };
        return Some((n, unit, after));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Option<Duration> = None;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    fn ms(m: u64) -> Option<Duration> {
        Some(Duration::from_millis(m))
    }

    #[test]
    fn imap_hints() {
        for (text, want) in [
            // Exchange Online.
            (
                "NO Request is throttled. Suggested Backoff Time: 299802 milliseconds",
                ms(299_802),
            ),
            (
                "BAD Request is throttled. Suggested Backoff Time: 12000",
                ms(12_000),
            ),
            ("* BYE Suggested Backoff Time: 5 seconds", secs(5)),
            (
                "IMAP server outlook.office365.com:993: LOGIN failed: No Response: \
                 User is authenticated but not connected. Suggested Backoff Time: 1500 ms",
                ms(1500),
            ),
            // Far too long: capped.
            (
                "NO Suggested Backoff Time: 86400000 milliseconds",
                Some(MAX_HINT),
            ),
            // The response code with and without a time.
            (
                "NO [THROTTLED] Too many simultaneous connections",
                Some(THROTTLED_WAIT),
            ),
            ("NO [THROTTLED] Try again in 2 minutes", secs(120)),
            (
                "* BYE [THROTTLED] Account exceeded command or bandwidth limits",
                Some(THROTTLED_WAIT),
            ),
            // Nothing asked.
            (
                "NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)",
                NONE,
            ),
            ("* BYE Session invalidated - AccessTokenExpired", NONE),
            ("BAD Command Argument Error. 12", NONE),
            ("", NONE),
        ] {
            assert_eq!(imap_hint(text), want, "{text}");
        }
    }

    #[test]
    fn smtp_hints() {
        for (text, want) in [
            // Exchange Online's per-mailbox limits.
            (
                "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded \
                 [Hostname=BN8PR12MB3345.namprd12.prod.outlook.com]",
                Some(THROTTLED_WAIT),
            ),
            (
                "SMTP server smtp.office365.com:587: transient error (432): 4.3.2 \
                 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information.",
                Some(THROTTLED_WAIT),
            ),
            // Rate limiting with a time.
            (
                "421 4.7.0 Temporary System Problem. Try again in 30 seconds",
                secs(30),
            ),
            ("421 4.7.28 Rate limited; please retry in 10 min", secs(600)),
            (
                "transient error (421): 4.7.0 Try again later, closing connection.",
                Some(THROTTLED_WAIT),
            ),
            // Other temporary answers keep the usual backoff.
            ("421 4.4.2 mx.example.com Error: timeout exceeded", NONE),
            ("451 4.3.0 Error: queue file write error", NONE),
            ("452 4.5.3 Too many recipients", NONE),
            (
                "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
                NONE,
            ),
            ("connection refused", NONE),
        ] {
            assert_eq!(smtp_hint(text), want, "{text}");
        }
    }

    #[test]
    fn numbers_inside_names_and_codes_are_not_times() {
        assert_eq!(time_in("4.7.0 host BN8PR12MB3345 1s"), secs(1));
        assert_eq!(time_in("code 4.3.2 and 10.0.0.1 2 s"), secs(2));
        assert_eq!(time_in("no time here 42"), NONE);
    }

    #[test]
    fn the_hint_wins_only_when_longer_and_gets_some_jitter() {
        let base = Duration::from_secs(2);
        assert_eq!(at_least(base, None), base);
        assert_eq!(at_least(base, ms(500)), base);
        for _ in 0..50 {
            let wait = at_least(base, secs(60));
            assert!(
                wait >= Duration::from_secs(60) && wait <= Duration::from_secs(66),
                "{wait:?}"
            );
        }
    }
}
