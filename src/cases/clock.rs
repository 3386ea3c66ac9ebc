//! The legal clocks (SPEC §4, CCPA regs §7021): business days in the
//! configured zone, skipping weekends and holidays.
//!
//! Every deadline is the *end* of a local calendar day (23:59:59 in
//! `Policy::timezone`): the regulations count days, and a consumer in
//! California who writes late on a Friday wrote on Friday, whatever the UTC
//! date says.

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

use super::Kind;

/// Opt-out and limit requests are carried out within this many business
/// days (§7026(f), §7027(g)); not configurable, the law fixes it.
pub(crate) const OPT_OUT_BUSINESS_DAYS: u32 = 15;

/// The legal maxima of the `[policy]` clocks (§7021(a), §7021(b),
/// Civ. Code §1798.130(a)(2)(A)); a configuration above them is refused.
pub(crate) const MAX_ACKNOWLEDGE_BUSINESS_DAYS: u32 = 10;
pub(crate) const MAX_RESPOND_DAYS: u32 = 45;
pub(crate) const MAX_EXTENSION_DAYS: u32 = 45;

/// Deadline rules, built from `[policy]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub timezone: Tz,
    pub holidays: Vec<NaiveDate>,
    pub acknowledge_business_days: u32,
    pub respond_days: u32,
    pub extension_days: u32,
    /// Days without an answer before the one verification reminder.
    pub reminder_after_days: u32,
    pub retention_months: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            timezone: chrono_tz::America::Los_Angeles,
            holidays: Vec::new(),
            acknowledge_business_days: 10,
            respond_days: 45,
            extension_days: 45,
            reminder_after_days: 7,
            retention_months: 24,
        }
    }
}

impl Policy {
    /// End (23:59:59 local) of the `acknowledge_business_days`-th business day after receipt.
    pub(crate) fn ack_due(&self, received: DateTime<Utc>) -> DateTime<Utc> {
        let day = self.add_business_days(self.local_date(received), self.acknowledge_business_days);
        self.end_of_local_day(day)
    }

    /// End (23:59:59 local) of the `respond_days`-th calendar day, counting
    /// the local day of receipt as day 1 (§7021(b): the period "shall begin on
    /// the day that the business receives the request"): receipt + 44 days.
    pub(crate) fn respond_due(&self, received: DateTime<Utc>) -> DateTime<Utc> {
        let day = add_days(
            self.local_date(received),
            self.respond_days.saturating_sub(1),
        );
        self.end_of_local_day(day)
    }

    /// End (23:59:59 local) of the `n`-th business day, counting the day of
    /// receipt as day 1 when it is a business day (the earlier, safe reading
    /// of "within 15 business days from the date the business receives the
    /// request", §7026(f), §7027(g)).
    pub(crate) fn business_days_due(&self, received: DateTime<Utc>, n: u32) -> DateTime<Utc> {
        let date = self.local_date(received);
        let n = if self.is_business_day(date) {
            n.saturating_sub(1)
        } else {
            n
        };
        self.end_of_local_day(self.add_business_days(date, n))
    }

    /// The response deadline of a new request of `kind`.
    pub(crate) fn due_for(&self, kind: Kind, received: DateTime<Utc>) -> DateTime<Utc> {
        if kind.has_45_day_clock() {
            self.respond_due(received)
        } else {
            self.business_days_due(received, OPT_OUT_BUSINESS_DAYS)
        }
    }

    /// The due date after the one extension: end of the local day
    /// `extension_days` after the local day of `due`.
    pub fn extend(&self, due: DateTime<Utc>) -> DateTime<Utc> {
        let day = add_days(self.local_date(due), self.extension_days);
        self.end_of_local_day(day)
    }

    /// The calendar date of `at` in the policy's time zone.
    pub(crate) fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.timezone).date_naive()
    }

    /// Monday to Friday and not a configured holiday.
    pub(crate) fn is_business_day(&self, date: NaiveDate) -> bool {
        !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) && !self.holidays.contains(&date)
    }

    /// The `n`-th business day strictly after `date` (`n = 0` gives `date`
    /// itself). The day of receipt never counts, even when it is a business day.
    pub(crate) fn add_business_days(&self, date: NaiveDate, n: u32) -> NaiveDate {
        let mut day = date;
        let mut left = n;
        while left > 0 {
            let Some(next) = day.succ_opt() else {
                return day;
            };
            day = next;
            if self.is_business_day(day) {
                left -= 1;
            }
        }
        day
    }

    /// The last second of `date` in the policy's zone, as UTC.
    ///
    /// Defined as one second before the first instant of the next local day,
    /// which picks the sensible answer around DST changes: when 23:59:59 occurs
    /// twice (a fall-back at midnight) the later one, and when the end of the
    /// day falls in a gap (a spring-forward at midnight, or a skipped day) the
    /// last instant before the gap.
    pub(crate) fn end_of_local_day(&self, date: NaiveDate) -> DateTime<Utc> {
        let next = date.succ_opt().unwrap_or(date);
        let start = start_of_local_day(&self.timezone, next);
        start
            .checked_sub_signed(TimeDelta::seconds(1))
            .unwrap_or(start)
    }
}

/// `date + days`, saturating at the end of chrono's calendar.
fn add_days(date: NaiveDate, days: u32) -> NaiveDate {
    date.checked_add_days(Days::new(u64::from(days)))
        .unwrap_or(NaiveDate::MAX)
}

/// The first instant whose local date is `date` (or, if the whole day is
/// skipped, the first instant after it).
fn start_of_local_day(tz: &Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_time(NaiveTime::MIN);
    // Gaps are at most a day long (Samoa skipped 2011-12-30); walk forward in
    // quarter hours until a local time exists.
    for step in 0..=(4 * 48) {
        let Some(local) = midnight.checked_add_signed(TimeDelta::minutes(15 * step)) else {
            break;
        };
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(earliest, _) => return earliest.with_timezone(&Utc),
            LocalResult::None => continue,
        }
    }
    // Unreachable for real zones; fall back to reading the wall time as UTC.
    midnight.and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn policy_with(holidays: &[&str]) -> Policy {
        Policy {
            holidays: holidays.iter().map(|h| d(h)).collect(),
            ..Policy::default()
        }
    }

    #[test]
    fn business_days_skip_weekends_and_holidays() {
        let p = policy_with(&["2026-12-25", "2027-01-01"]);
        let cases = [
            // (start, n, expected)
            ("2026-11-02", 0, "2026-11-02"), // Monday, n = 0
            ("2026-11-02", 1, "2026-11-03"),
            ("2026-11-02", 4, "2026-11-06"), // Friday
            ("2026-11-02", 5, "2026-11-09"), // over the weekend
            ("2026-11-02", 10, "2026-11-16"),
            ("2026-11-06", 1, "2026-11-09"), // Friday → Monday
            ("2026-11-07", 1, "2026-11-09"), // Saturday → Monday
            ("2026-11-08", 1, "2026-11-09"), // Sunday → Monday
            ("2026-11-07", 10, "2026-11-20"),
            ("2026-12-24", 1, "2026-12-28"), // Christmas Friday, weekend
            ("2026-12-18", 10, "2027-01-05"), // Christmas and New Year skipped
            ("2026-12-31", 1, "2027-01-04"), // New Year holiday Friday
        ];
        for (start, n, want) in cases {
            assert_eq!(p.add_business_days(d(start), n), d(want), "{start} + {n}");
        }
    }

    #[test]
    fn business_day_predicate() {
        let p = policy_with(&["2026-12-25"]);
        assert!(p.is_business_day(d("2026-12-24")));
        assert!(!p.is_business_day(d("2026-12-25")));
        assert!(!p.is_business_day(d("2026-12-26")));
        assert!(!p.is_business_day(d("2026-12-27")));
        assert!(p.is_business_day(d("2026-12-28")));
    }

    #[test]
    fn ack_due_is_end_of_tenth_business_day_local() {
        let p = Policy::default();
        // Monday 2026-11-02 09:00 PST (17:00 UTC) → Monday 2026-11-16 23:59:59 PST.
        assert_eq!(
            p.ack_due(t("2026-11-02T17:00:00Z")),
            t("2026-11-17T07:59:59Z")
        );
    }

    #[test]
    fn friday_evening_in_california_is_a_friday_request() {
        let p = Policy::default();
        // Friday 2026-11-06 23:30 PST is Saturday 07:30 UTC.
        let received = t("2026-11-07T07:30:00Z");
        assert_eq!(p.local_date(received), d("2026-11-06"));
        // Ten business days after Friday: Friday 2026-11-20.
        assert_eq!(p.ack_due(received), t("2026-11-21T07:59:59Z"));
        // Friday is day 1; day 45 is Sunday 2026-12-20.
        assert_eq!(p.respond_due(received), t("2026-12-21T07:59:59Z"));
        // The same instant in UTC policy is a Saturday request.
        let utc = Policy {
            timezone: chrono_tz::UTC,
            ..Policy::default()
        };
        assert_eq!(utc.local_date(received), d("2026-11-07"));
        assert_eq!(utc.ack_due(received), t("2026-11-20T23:59:59Z"));
    }

    #[test]
    fn respond_due_counts_calendar_days() {
        let p = Policy::default();
        let cases = [
            // received (UTC), due (UTC)
            // The day of receipt is day 1 (§7021(b)): due = receipt + 44.
            // 2026-01-31 10:00 PST + 44 = 2026-03-16, after DST began (PDT, -7).
            ("2026-01-31T18:00:00Z", "2026-03-17T06:59:59Z"),
            // Month end: 2026-06-30 + 44 = 2026-08-13 (PDT).
            ("2026-06-30T20:00:00Z", "2026-08-14T06:59:59Z"),
            // Across the fall-back: 2026-10-01 (PDT) + 44 = 2026-11-14 (PST).
            ("2026-10-01T20:00:00Z", "2026-11-15T07:59:59Z"),
            // Leap year: 2028-01-15 + 44 = 2028-02-28.
            ("2028-01-15T20:00:00Z", "2028-02-29T07:59:59Z"),
            // Year end: 2026-12-20 + 44 = 2027-02-02.
            ("2026-12-20T20:00:00Z", "2027-02-03T07:59:59Z"),
        ];
        for (received, due) in cases {
            assert_eq!(p.respond_due(t(received)), t(due), "received {received}");
        }
    }

    #[test]
    fn leap_day_receipt() {
        let p = Policy::default();
        // Tuesday 2028-02-29 10:00 PST.
        let received = t("2028-02-29T18:00:00Z");
        assert_eq!(p.local_date(received), d("2028-02-29"));
        // Ten business days: Tuesday 2028-03-14 (PDT from 2028-03-12).
        assert_eq!(p.ack_due(received), t("2028-03-15T06:59:59Z"));
        // 2028-02-29 + 44 = 2028-04-13.
        assert_eq!(p.respond_due(received), t("2028-04-14T06:59:59Z"));
    }

    #[test]
    fn year_end_with_christmas_holiday() {
        let p = policy_with(&["2026-12-25"]);
        // Friday 2026-12-18 noon PST. Business days: 21,22,23,24,(25 holiday),28,29,30,31,
        // 2027-01-01 (not configured, so a business day), 04 → 10th is 2027-01-04.
        let received = t("2026-12-18T20:00:00Z");
        assert_eq!(p.ack_due(received), t("2027-01-05T07:59:59Z"));
        let without = Policy::default();
        assert_eq!(without.ack_due(received), t("2027-01-02T07:59:59Z"));
    }

    #[test]
    fn extension_adds_calendar_days_to_the_due_day() {
        let p = Policy::default();
        let due = p.respond_due(t("2026-11-02T17:00:00Z")); // 2026-12-16 end of day PST
        assert_eq!(due, t("2026-12-17T07:59:59Z"));
        // 2026-12-16 + 45 = 2027-01-30 = receipt + 89: day 90 counting receipt as day 1.
        assert_eq!(p.extend(due), t("2027-01-31T07:59:59Z"));
    }

    #[test]
    fn end_of_day_around_dst_changes() {
        // Los Angeles changes at 02:00, so 23:59:59 always exists once.
        let la = Policy::default();
        assert_eq!(
            la.end_of_local_day(d("2026-03-08")),
            t("2026-03-09T06:59:59Z")
        );
        assert_eq!(
            la.end_of_local_day(d("2026-11-01")),
            t("2026-11-02T07:59:59Z")
        );
        assert_eq!(
            la.end_of_local_day(d("2026-03-07")),
            t("2026-03-08T07:59:59Z")
        );

        // Santiago springs forward at 24:00 → 01:00 (2026-09-06): the day before
        // still ends at 23:59:59 standard time (-04).
        let santiago = Policy {
            timezone: chrono_tz::America::Santiago,
            ..Policy::default()
        };
        assert_eq!(
            santiago.end_of_local_day(d("2026-09-05")),
            t("2026-09-06T03:59:59Z")
        );
        // Santiago falls back at 24:00 → 23:00 (2026-04-04 → 05): 23:59:59 of
        // 2026-04-04 occurs twice; the later one (-04) counts.
        assert_eq!(
            santiago.end_of_local_day(d("2026-04-04")),
            t("2026-04-05T03:59:59Z")
        );

        // Samoa skipped 2011-12-30 entirely: the 29th ends at the jump, and the
        // skipped day "ends" at the same instant.
        let apia = Policy {
            timezone: chrono_tz::Pacific::Apia,
            ..Policy::default()
        };
        assert_eq!(
            apia.end_of_local_day(d("2011-12-29")),
            t("2011-12-30T09:59:59Z")
        );
        assert_eq!(
            apia.end_of_local_day(d("2011-12-30")),
            t("2011-12-30T09:59:59Z")
        );
    }

    #[test]
    fn received_just_after_local_midnight() {
        let p = Policy::default();
        // 2026-11-03 00:00:30 PST is a Tuesday request.
        let received = t("2026-11-03T08:00:30Z");
        assert_eq!(p.local_date(received), d("2026-11-03"));
        assert_eq!(p.respond_due(received), t("2026-12-18T07:59:59Z"));
    }

    #[test]
    fn fifteen_business_days_count_the_day_of_receipt() {
        let p = policy_with(&["2026-11-26"]);
        // Monday 2026-11-02 is day 1; day 15 is Friday 2026-11-20.
        assert_eq!(
            p.due_for(Kind::OptOut, t("2026-11-02T17:00:00Z")),
            t("2026-11-21T07:59:59Z")
        );
        // Received on a Saturday: Monday is day 1; Thanksgiving skipped; day 15 is Monday 2026-12-07.
        assert_eq!(
            p.due_for(Kind::Limit, t("2026-11-14T17:00:00Z")),
            t("2026-12-08T07:59:59Z")
        );
        // The 45-day kinds.
        for kind in [Kind::Know, Kind::Delete, Kind::Correct] {
            assert_eq!(
                p.due_for(kind, t("2026-11-02T17:00:00Z")),
                t("2026-12-17T07:59:59Z")
            );
        }
    }

    #[test]
    fn deadlines_never_panic_at_calendar_edges() {
        let p = Policy::default();
        let far = NaiveDate::MAX.and_time(NaiveTime::MIN).and_utc();
        let _ = p.respond_due(far);
        let _ = p.ack_due(far);
        let _ = p.extend(far);
    }
}
