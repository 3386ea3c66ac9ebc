//! When a cached token may still be used, and when a failed refresh may be
//! tried again. Pure: times are passed in.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A token is never used for a login this close to its expiry: the server may
/// end the session right after (Exchange: `BYE … AccessTokenExpired`).
pub(crate) const MAX_MARGIN: Duration = Duration::from_secs(60);

/// The safety margin for a token that lives `lifetime`: 60 s, or a quarter of
/// a shorter lifetime (a 20 s token is still usable for 15 s).
pub(crate) fn margin(lifetime: Duration) -> Duration {
    MAX_MARGIN.min(lifetime / 4)
}

/// When a token obtained at `obtained` and expiring at `expires` should be
/// replaced: `margin` before `expires`. A token without an expiry is assumed
/// to live an hour (RFC 6749 lets a server leave `expires_in` out).
pub(crate) fn renew_at(obtained: DateTime<Utc>, expires: Option<DateTime<Utc>>) -> DateTime<Utc> {
    let expires = expires.unwrap_or(obtained + chrono::Duration::hours(1));
    let lifetime = (expires - obtained).to_std().unwrap_or(Duration::ZERO);
    let margin = chrono::Duration::from_std(margin(lifetime)).unwrap_or_default();
    expires - margin
}

/// Whether a token may still be used at `now` (for a login, or to keep a
/// session open).
pub(crate) fn usable(
    obtained: DateTime<Utc>,
    expires: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    now < renew_at(obtained, expires)
}

/// How long to wait before asking the token endpoint again after `failures`
/// failures in a row: 2 s doubling up to 5 minutes, with ±25 % jitter so a
/// fleet does not hammer the provider in step.
pub(crate) fn retry_after(failures: u32, jitter: f64) -> Duration {
    let base = 2u64.saturating_pow(failures.clamp(1, 9)).min(300) as f64;
    let factor = 0.75 + 0.5 * jitter.clamp(0.0, 1.0);
    Duration::from_millis((base * factor * 1000.0) as u64)
}

/// After `invalid_grant` nothing changes until someone runs `auth login`: try
/// again only this rarely (or at once when the refresh token file changes).
pub(crate) const REAUTH_RETRY: Duration = Duration::from_secs(15 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn an_hour_token_is_renewed_a_minute_early() {
        assert!(usable(at(0), Some(at(3600)), at(3539)));
        assert!(!usable(at(0), Some(at(3600)), at(3540)));
        assert!(!usable(at(0), Some(at(3600)), at(4000)));
    }

    #[test]
    fn short_tokens_keep_three_quarters() {
        assert_eq!(margin(Duration::from_secs(20)), Duration::from_secs(5));
        assert!(usable(at(0), Some(at(20)), at(14)));
        assert!(!usable(at(0), Some(at(20)), at(15)));
    }

    #[test]
    fn expired_or_odd_tokens_are_not_usable() {
        assert!(!usable(at(0), Some(at(0)), at(0)));
        assert!(!usable(at(10), Some(at(0)), at(5)));
        // No expires_in: an hour.
        assert!(usable(at(0), None, at(3000)));
        assert!(!usable(at(0), None, at(3600)));
    }

    #[test]
    fn retries_back_off_with_jitter_and_a_cap() {
        assert_eq!(retry_after(1, 0.5), Duration::from_secs(2));
        assert_eq!(retry_after(1, 0.0), Duration::from_millis(1500));
        assert_eq!(retry_after(3, 1.0), Duration::from_secs(10));
        assert_eq!(retry_after(100, 0.5), Duration::from_secs(300));
        assert!(retry_after(100, 1.0) <= Duration::from_secs(375));
        assert_eq!(retry_after(0, 0.5), retry_after(1, 0.5));
    }
}
