//! The legal clocks (SPEC §4, CCPA regs §7021): business days in the
//! configured zone, skipping weekends and holidays.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

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
    pub fn ack_due(&self, received: DateTime<Utc>) -> DateTime<Utc> {
        let _ = received;
        unimplemented!()
    }

    /// End (23:59:59 local) of the calendar day `respond_days` after the local day of receipt.
    pub fn respond_due(&self, received: DateTime<Utc>) -> DateTime<Utc> {
        let _ = received;
        unimplemented!()
    }
}
