//! `attachments export SHA256 --out FILE` (SPEC §9): hands a stored
//! declaration document to the team, byte for byte.

use std::process::ExitCode;

use super::{AttachmentsCommand, Failure};
use crate::attachments::{AttachmentError, Blobs};
use crate::config::Config;

pub async fn run(config: &Config, cmd: AttachmentsCommand) -> Result<ExitCode, Failure> {
    match cmd {
        AttachmentsCommand::Export { sha256, out } => {
            let store = crate::store::Store::open(&config.storage.database).await?;
            let found = {
                let mut conn = store.conn().await?;
                crate::attachments::find(&mut conn, &sha256).await
            };
            store.close().await;
            let doc = found.map_err(failure)?;
            let blobs = Blobs::new(&config.storage.attachments_dir);
            let size = blobs.export(&doc.sha256, &out).map_err(failure)?;
            println!(
                "Wrote {size} bytes to {} ({}, {}, case {}, {}).",
                out.display(),
                doc.filename,
                doc.sniffed_type,
                doc.case_id.as_deref().unwrap_or("-"),
                doc.status
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A wrong or unknown hash is the user's to fix (exit 2); a file that cannot
/// be read or written is a runtime failure (exit 1).
fn failure(e: AttachmentError) -> Failure {
    match e {
        AttachmentError::InvalidHash(_)
        | AttachmentError::NotFound(_)
        | AttachmentError::Ambiguous(_) => Failure::Usage(e.into()),
        _ => Failure::Runtime(e.into()),
    }
}
