//! Header-only fetch, for messages over `imap.max_message_bytes`: they are
//! recorded from their headers and sent to review without reading the body.

use futures::TryStreamExt;

use super::{Imap, ImapError};

impl Imap {
    /// The header block of one message (`BODY.PEEK[HEADER]`), or `None` when
    /// the UID is gone.
    pub(crate) async fn fetch_header(&mut self, uid: u32) -> Result<Option<Vec<u8>>, ImapError> {
        let session = self.session()?;
        let fetched: Result<Option<Vec<u8>>, async_imap::error::Error> = async {
            let mut stream = session
                .uid_fetch(uid.to_string(), "(UID BODY.PEEK[HEADER])")
                .await?;
            let mut got = None;
            while let Some(fetch) = stream.try_next().await? {
                if fetch.uid == Some(uid) {
                    got = fetch.header().map(<[u8]>::to_vec);
                }
            }
            Ok(got)
        }
        .await;
        let out = fetched.map_err(|e| self.err_command("UID FETCH (header)", e))?;
        self.drain_unsolicited();
        Ok(out)
    }

    /// The header blocks of several messages (`BODY.PEEK[HEADER]`) in
    /// batches of [`super::FETCH_BATCH`], in UID order; UIDs gone meanwhile are
    /// absent. The Sent-folder scan decides from these which bodies it needs.
    pub(crate) async fn fetch_headers(
        &mut self,
        uids: &[u32],
    ) -> Result<Vec<(u32, Vec<u8>)>, ImapError> {
        self.fetch_parts(
            uids,
            "(UID BODY.PEEK[HEADER])",
            "UID FETCH (headers)",
            |f| f.header(),
        )
        .await
    }
}
