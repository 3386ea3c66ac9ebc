//! Regulatory reports: the §7101 record of each request and the §7102
//! metrics per calendar year (SPEC §9 `report`).
//!
//! Both read only fields a purge keeps (kind, manner, dates, state,
//! resolution, denial reason), so they work the same on purged cases.
//! Dates are local dates in `policy.timezone`, the zone the clocks use.
//!
//! Definitions (also in docs/operations.md):
//! - *response date*: when the case reached its final state (`closed_at`):
//!   the completion notice, the denial, the team's `#complete` after it sent
//!   the response itself, the withdrawal, or the immediate opt-out answer.
//! - *complied in whole or in part*: resolution `complied` or
//!   `partially_complied` (`#complete partial`). *Denied*: resolution
//!   `denied`, which includes a case closed because identity could not be
//!   verified (`#close unverified`).
//! - *days to a substantive response*: local calendar days from receipt to the
//!   response date, over complied and denied requests; withdrawn and closed
//!   cases had no substantive response and open cases none yet.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use sqlx::SqliteConnection;

use crate::cases::{Kind, Manner, State};
use crate::store::reports::CaseRecordRow;
use crate::store::{Result, parse_col};

/// One request as §7101 wants it recorded: a case, or a message that read
/// like a request and was left in review (no case opened from it).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Record {
    /// Empty for a message no case was opened from.
    pub case_id: String,
    /// The stored message of a request no case was opened from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_row: Option<i64>,
    /// Local date the request was received.
    pub request_date: NaiveDate,
    pub received_at: DateTime<Utc>,
    pub kind: Kind,
    /// `email` (from the consumer) or `agent` (through an authorized agent).
    pub manner: Manner,
    pub response_date: Option<NaiveDate>,
    pub responded_at: Option<DateTime<Utc>>,
    /// `complied`, `partially_complied`, `denied`, `withdrawn`, `closed`,
    /// `open`, or `not_opened` (a message in review that read like a request).
    pub response: String,
    /// The same in words, for people reading the CSV.
    pub nature_of_response: String,
    pub basis_for_denial: Option<String>,
    /// The case's state; none for a message no case was opened from.
    pub state: Option<State>,
    pub purged: bool,
}

/// Every request received between `since` and `until` (local dates,
/// inclusive), oldest first: each case, and each message that read like a
/// request (the review notice offered `#open`) and opened no case. Once
/// `#open` opens a case from such a message, the case's row is its record.
pub async fn records(
    conn: &mut SqliteConnection,
    tz: Tz,
    since: Option<NaiveDate>,
    until: Option<NaiveDate>,
) -> Result<Vec<Record>> {
    let mut out = case_records(conn, tz).await?;
    for (row, received_at, kind, purged) in crate::store::reports::unopened_requests(conn).await? {
        out.push(unopened_record(
            row,
            received_at,
            parse_col("messages", &kind)?,
            purged,
            tz,
        ));
    }
    out.sort_by(|a, b| (a.received_at, &a.case_id).cmp(&(b.received_at, &b.case_id)));
    out.retain(|r| {
        !(since.is_some_and(|d| r.request_date < d) || until.is_some_and(|d| r.request_date > d))
    });
    Ok(out)
}

/// The record of every case, oldest first (what the §7102 metrics count: a
/// message the team never opened as a case is not counted as received).
async fn case_records(conn: &mut SqliteConnection, tz: Tz) -> Result<Vec<Record>> {
    let rows = crate::store::reports::case_records(conn).await?;
    rows.into_iter().map(|row| to_record(row, tz)).collect()
}

/// What `nature_of_response` says of a message that read like a request and
/// is still in review, no case opened from it (docs/decisions.md).
pub(crate) const NOT_OPENED: &str = "not opened: in review";

fn unopened_record(
    row: i64,
    received_at: DateTime<Utc>,
    kind: Kind,
    purged: bool,
    tz: Tz,
) -> Record {
    Record {
        case_id: String::new(),
        message_row: Some(row),
        request_date: received_at.with_timezone(&tz).date_naive(),
        received_at,
        kind,
        manner: Manner::Email,
        response_date: None,
        responded_at: None,
        response: "not_opened".into(),
        nature_of_response: NOT_OPENED.into(),
        basis_for_denial: None,
        state: None,
        purged,
    }
}

fn to_record(row: CaseRecordRow, tz: Tz) -> Result<Record> {
    let kind: Kind = parse_col("cases", &row.kind)?;
    let state: State = parse_col("cases", &row.state)?;
    let response = response_of(state, row.resolution.as_deref());
    let responded_at = if state.is_final() {
        row.closed_at
    } else {
        None
    };
    Ok(Record {
        case_id: row.id,
        message_row: None,
        request_date: row.received_at.with_timezone(&tz).date_naive(),
        received_at: row.received_at,
        kind,
        manner: row.manner,
        response_date: responded_at.map(|t| t.with_timezone(&tz).date_naive()),
        responded_at,
        nature_of_response: nature_words(response).to_string(),
        response: response.to_string(),
        basis_for_denial: if response == "denied" || response == "partially_complied" {
            row.denial_reason
        } else {
            None
        },
        state: Some(state),
        purged: row.purged_at.is_some(),
    })
}

/// The nature of the response from the final state and resolution.
pub(crate) fn response_of(state: State, resolution: Option<&str>) -> &'static str {
    match state {
        s if !s.is_final() => "open",
        State::Completed if resolution == Some("partially_complied") => "partially_complied",
        State::Completed => "complied",
        State::Denied => "denied",
        State::Withdrawn => "withdrawn",
        _ => match resolution {
            Some("complied") => "complied",
            Some("denied") => "denied",
            Some("withdrawn") => "withdrawn",
            _ => "closed",
        },
    }
}

fn nature_words(response: &str) -> &'static str {
    match response {
        "complied" => "complied in whole or in part",
        "partially_complied" => "complied in part",
        "denied" => "denied",
        "withdrawn" => "withdrawn by the requester",
        "closed" => "closed without a substantive response",
        _ => "open",
    }
}

/// The records as CSV (RFC 4180, CRLF line ends, a header row).
pub(crate) fn records_csv(records: &[Record]) -> String {
    let mut out = String::from(
        "case_id,request_date,kind,manner,response_date,nature_of_response,basis_for_denial,state,purged,message_row\r\n",
    );
    for r in records {
        let fields = [
            r.case_id.clone(),
            r.request_date.to_string(),
            r.kind.to_string(),
            r.manner.to_string(),
            r.response_date.map(|d| d.to_string()).unwrap_or_default(),
            r.nature_of_response.clone(),
            r.basis_for_denial.clone().unwrap_or_default(),
            r.state.map(|s| s.to_string()).unwrap_or_default(),
            r.purged.to_string(),
            r.message_row.map(|n| n.to_string()).unwrap_or_default(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// Quotes a CSV field when needed. A leading `=`, `+`, `-` or `@` is
/// prefixed with `'` so a spreadsheet does not run a denial reason as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// §7102 figures for one kind of request in one year.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KindMetrics {
    pub kind: Kind,
    pub received: u64,
    /// Complied with in whole or in part (§7102(a)(1)(B)).
    pub complied: u64,
    /// Of `complied`, those complied with only in part.
    pub complied_in_part: u64,
    pub denied: u64,
    pub withdrawn: u64,
    pub closed: u64,
    /// Still open: not counted as complied or denied, nor in the days.
    pub open: u64,
    pub median_days: Option<f64>,
    pub mean_days: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    pub year: i32,
    pub timezone: String,
    pub kinds: Vec<KindMetrics>,
}

/// Metrics of the requests received in local calendar year `year`. Know,
/// delete and opt-out are always listed; correct and limit when any arrived.
pub async fn metrics(conn: &mut SqliteConnection, tz: Tz, year: i32) -> Result<Metrics> {
    let all = case_records(conn, tz).await?;
    let in_year: Vec<&Record> = all
        .iter()
        .filter(|r| r.request_date.year() == year)
        .collect();
    let mut kinds = Vec::new();
    for kind in Kind::ALL {
        let of_kind: Vec<&&Record> = in_year.iter().filter(|r| r.kind == kind).collect();
        if of_kind.is_empty() && matches!(kind, Kind::Correct | Kind::Limit) {
            continue;
        }
        let count = |what: &str| of_kind.iter().filter(|r| r.response == what).count() as u64;
        let mut days: Vec<i64> = of_kind
            .iter()
            .filter(|r| {
                matches!(
                    r.response.as_str(),
                    "complied" | "partially_complied" | "denied"
                )
            })
            .filter_map(|r| {
                r.response_date
                    .map(|d| (d - r.request_date).num_days().max(0))
            })
            .collect();
        days.sort_unstable();
        kinds.push(KindMetrics {
            kind,
            received: of_kind.len() as u64,
            complied: count("complied") + count("partially_complied"),
            complied_in_part: count("partially_complied"),
            denied: count("denied"),
            withdrawn: count("withdrawn"),
            closed: count("closed"),
            open: count("open"),
            median_days: median(&days),
            mean_days: mean(&days),
        });
    }
    Ok(Metrics {
        year,
        timezone: tz.name().to_string(),
        kinds,
    })
}

/// The median of sorted values (the mean of the middle two for an even count).
pub(crate) fn median(sorted: &[i64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2] as f64),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0),
    }
}

/// The mean, rounded to one decimal.
pub fn mean(values: &[i64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let m = values.iter().sum::<i64>() as f64 / values.len() as f64;
    Some((m * 10.0).round() / 10.0)
}

/// A table for people.
pub(crate) fn metrics_text(m: &Metrics) -> String {
    let mut out = format!(
        "CCPA regs §7102 metrics for requests received in {} ({})\n\n",
        m.year, m.timezone
    );
    out.push_str(&format!(
        "{:<10} {:>8} {:>8} {:>7} {:>9} {:>7} {:>5} {:>11} {:>9}\n",
        "kind",
        "received",
        "complied",
        "denied",
        "withdrawn",
        "closed",
        "open",
        "median_days",
        "mean_days"
    ));
    let days = |d: Option<f64>| d.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into());
    for k in &m.kinds {
        out.push_str(&format!(
            "{:<10} {:>8} {:>8} {:>7} {:>9} {:>7} {:>5} {:>11} {:>9}\n",
            k.kind.as_str(),
            k.received,
            k.complied,
            k.denied,
            k.withdrawn,
            k.closed,
            k.open,
            days(k.median_days),
            days(k.mean_days)
        ));
    }
    out.push_str("\ncomplied = complied with in whole or in part; days = local calendar days from receipt\nto the substantive response (complied or denied requests); open requests are counted apart.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_means() {
        let cases: [(&[i64], Option<f64>, Option<f64>); 4] = [
            (&[], None, None),
            (&[5], Some(5.0), Some(5.0)),
            (&[10, 20, 31], Some(20.0), Some(20.3)),
            (&[1, 2, 3, 10], Some(2.5), Some(4.0)),
        ];
        for (values, med, avg) in cases {
            assert_eq!(median(values), med, "{values:?}");
            assert_eq!(mean(values), avg, "{values:?}");
        }
    }

    #[test]
    fn responses_from_states() {
        let cases = [
            (State::AwaitingVerification, None, "open"),
            (State::Confirmed, None, "open"),
            (State::Completed, Some("complied"), "complied"),
            (State::Denied, Some("denied"), "denied"),
            (State::Withdrawn, Some("withdrawn"), "withdrawn"),
            (State::Closed, Some("complied"), "complied"),
            (State::Closed, Some("closed"), "closed"),
            (State::Closed, None, "closed"),
            (
                State::Completed,
                Some("partially_complied"),
                "partially_complied",
            ),
            // `#close unverified`: closed, counted as denied (§7102).
            (State::Closed, Some("denied"), "denied"),
        ];
        for (state, resolution, want) in cases {
            assert_eq!(
                response_of(state, resolution),
                want,
                "{state} {resolution:?}"
            );
        }
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        let cases = [
            ("plain", "plain"),
            ("a,b", "\"a,b\""),
            ("say \"no\"", "\"say \"\"no\"\"\""),
            ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
            ("line\nbreak", "\"line\nbreak\""),
        ];
        for (input, want) in cases {
            assert_eq!(csv_field(input), want, "{input}");
        }
    }
}
