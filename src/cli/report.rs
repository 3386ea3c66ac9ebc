//! `report records|metrics` (SPEC §9): the figures come from [`crate::report`];
//! this file checks the arguments, picks the format and prints.

use super::{Failure, RecordFormat, ReportCommand};
use crate::report;

/// `report records|metrics`: prints to stdout.
pub async fn run(
    config: &crate::config::Config,
    cmd: ReportCommand,
) -> Result<std::process::ExitCode, Failure> {
    let tz = config.timezone().map_err(|e| Failure::Usage(e.into()))?;
    let store = crate::store::Store::open(&config.storage.database).await?;
    let mut conn = store.conn().await?;
    let text = match cmd {
        ReportCommand::Records {
            since,
            until,
            format,
        } => {
            if let (Some(s), Some(u)) = (since, until)
                && s > u
            {
                return Err(Failure::Usage(anyhow::anyhow!(
                    "--since {s} is after --until {u}; swap them"
                )));
            }
            let rows = report::records(&mut conn, tz, since, until).await?;
            match format {
                RecordFormat::Csv => report::records_csv(&rows),
                RecordFormat::Json => format!("{}\n", serde_json::to_string_pretty(&rows)?),
            }
        }
        ReportCommand::Metrics { year, json } => {
            let m = report::metrics(&mut conn, tz, year).await?;
            if json {
                format!("{}\n", serde_json::to_string_pretty(&m)?)
            } else {
                report::metrics_text(&m)
            }
        }
    };
    drop(conn);
    store.close().await;
    print!("{text}");
    Ok(std::process::ExitCode::SUCCESS)
}
