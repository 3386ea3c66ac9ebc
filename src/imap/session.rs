//! Commands on a logged-in session: mailboxes, listing by UID, fetching
//! bodies, filing (MOVE or its COPY fallback), appending Sent copies.

use std::collections::HashSet;

use async_imap::types::UnsolicitedResponse;
use chrono::{NaiveDate, Utc};
use futures::TryStreamExt;

use super::connect::Session;
use super::{
    FETCH_BATCH, Imap, ImapError, Listed, SelectInfo, decode_mailbox_name, encode_mailbox_name,
    uid_set,
};

/// UIDs per MOVE/COPY/STORE command: keeps command lines short even for
/// scattered UIDs.
const MOVE_BATCH: usize = 500;

impl Imap {
    /// The live session, or `Disconnected` after a failed IDLE lost it.
    pub(crate) fn session(&mut self) -> Result<&mut Session, ImapError> {
        match self.session {
            Some(ref mut session) => Ok(session),
            None => Err(ImapError::Disconnected {
                host: self.host.clone(),
                port: self.port,
            }),
        }
    }

    /// Empties the unsolicited-response channel (it silently drops responses
    /// once 100 are queued) and remembers whether new mail was announced.
    pub(crate) fn drain_unsolicited(&mut self) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        while let Ok(response) = session.unsolicited_responses.try_recv() {
            if matches!(
                response,
                UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
            ) {
                self.new_data_pending = true;
            }
        }
    }

    /// Creates each mailbox that does not exist yet. A concurrent creation
    /// (ALREADYEXISTS) is not an error.
    pub async fn ensure_mailboxes(&mut self, names: &[&str]) -> Result<(), ImapError> {
        let session = self.session()?;
        let listed: Result<Vec<String>, async_imap::error::Error> = async {
            session
                .list(Some(""), Some("*"))
                .await?
                .map_ok(|name| name.name().to_owned())
                .try_collect()
                .await
        }
        .await;
        let existing = listed.map_err(|e| self.err_command("LIST", e))?;
        for name in names {
            let encoded = encode_mailbox_name(name);
            let exists = existing.iter().any(|e| {
                *e == encoded
                    || (e.eq_ignore_ascii_case("INBOX") && encoded.eq_ignore_ascii_case("INBOX"))
            });
            if exists {
                continue;
            }
            let result = self.session()?.create(&encoded).await;
            match result {
                Ok(()) => tracing::info!(mailbox = %name, "Created IMAP mailbox."),
                Err(async_imap::error::Error::No(text))
                    if text.to_ascii_uppercase().contains("ALREADYEXISTS")
                        || text.to_ascii_lowercase().contains("already exists") => {}
                Err(e) => return Err(self.err_command(format!("CREATE {name:?}"), e)),
            }
        }
        self.drain_unsolicited();
        Ok(())
    }

    /// Settles the Sent folder (`imap.sent_mailbox`): the configured folder
    /// when it exists; else (or with `"auto"`) the one the server marks
    /// `\Sent` (RFC 6154: "Sent Items", "\[Gmail\]/Sent Mail"); else the
    /// configured name (or "Sent" for `"auto"`), created by the caller.
    /// Remembered for [`Imap::sent_folder`].
    pub(crate) async fn resolve_sent(&mut self, configured: &str) -> Result<String, ImapError> {
        let session = self.session()?;
        let listed: Result<Vec<(String, bool)>, async_imap::error::Error> = async {
            session
                .list(Some(""), Some("*"))
                .await?
                .map_ok(|name| {
                    let sent = name
                        .attributes()
                        .iter()
                        .any(|a| matches!(a, async_imap::types::NameAttribute::Sent));
                    (decode_mailbox_name(name.name()), sent)
                })
                .try_collect()
                .await
        }
        .await;
        let listed = listed.map_err(|e| self.err_command("LIST", e))?;
        self.drain_unsolicited();
        let auto = configured.trim().eq_ignore_ascii_case("auto");
        let chosen = if !auto && listed.iter().any(|(n, _)| n == configured) {
            configured.to_string()
        } else if let Some((special, _)) = listed.iter().find(|(_, sent)| *sent) {
            tracing::info!(folder = %special, "Using the server's Sent folder (special-use \\Sent).");
            special.clone()
        } else if auto {
            "Sent".to_string()
        } else {
            configured.to_string()
        };
        self.sent_folder = Some(chosen.clone());
        Ok(chosen)
    }

    /// The Sent folder settled by [`Imap::resolve_sent`], else the configured one.
    pub fn sent_folder<'a>(&'a self, configured: &'a str) -> &'a str {
        self.sent_folder.as_deref().unwrap_or(configured)
    }

    /// Selects a mailbox read-write (needed to move messages out of it).
    pub async fn select(&mut self, mailbox: &str) -> Result<SelectInfo, ImapError> {
        let encoded = encode_mailbox_name(mailbox);
        let result = self.session()?.select(&encoded).await;
        // The IMAP verb as a separate argument: the SQL-outside-store check
        // reads a string starting with `SELECT ` as a query.
        let info = result.map_err(|e| self.err_command(format!("{} {mailbox:?}", "SELECT"), e))?;
        self.drain_unsolicited();
        // Whatever was pending belonged to the previous mailbox.
        self.new_data_pending = false;
        let uid_validity = info.uid_validity.ok_or_else(|| ImapError::NoUidValidity {
            host: self.host.clone(),
            port: self.port,
            mailbox: mailbox.to_owned(),
        })?;
        Ok(SelectInfo {
            uid_validity,
            uid_next: info.uid_next,
            exists: info.exists,
        })
    }

    /// Messages of the selected mailbox with a UID above `after_uid`, in UID
    /// order. With `since`, only those whose INTERNALDATE is on or after that
    /// day (the first-start backlog window).
    pub async fn list_new(
        &mut self,
        after_uid: u32,
        since: Option<NaiveDate>,
    ) -> Result<Vec<Listed>, ImapError> {
        let Some(first) = after_uid.checked_add(1) else {
            return Ok(Vec::new());
        };
        const QUERY: &str = "(UID RFC822.SIZE INTERNALDATE)";
        let mut listed = match since {
            None => self.fetch_meta(&format!("{first}:*"), QUERY).await?,
            Some(day) => {
                let query = format!("UID {first}:* SINCE {}", day.format("%-d-%b-%Y"));
                let result = self.session()?.uid_search(&query).await;
                let found = result.map_err(|e| self.err_command("UID SEARCH", e))?;
                let mut uids: Vec<u32> = found.into_iter().filter(|&u| u > after_uid).collect();
                uids.sort_unstable();
                let mut all = Vec::with_capacity(uids.len());
                for chunk in uids.chunks(MOVE_BATCH) {
                    all.extend(self.fetch_meta(&uid_set(chunk), QUERY).await?);
                }
                all
            }
        };
        // `N:*` always includes the highest UID, even when it is below N.
        listed.retain(|l| l.uid > after_uid);
        listed.sort_unstable_by_key(|l| l.uid);
        listed.dedup_by_key(|l| l.uid);
        self.drain_unsolicited();
        Ok(listed)
    }

    async fn fetch_meta(&mut self, set: &str, query: &str) -> Result<Vec<Listed>, ImapError> {
        let session = self.session()?;
        let fetched: Result<Vec<Listed>, async_imap::error::Error> = async {
            let mut stream = session.uid_fetch(set, query).await?;
            let mut out = Vec::new();
            while let Some(fetch) = stream.try_next().await? {
                // Unsolicited FETCH (e.g. flag changes) carries no UID: skip.
                if let Some(uid) = fetch.uid {
                    out.push(Listed {
                        uid,
                        size: fetch.size,
                        internal_date: fetch.internal_date().map(|d| d.with_timezone(&Utc)),
                    });
                }
            }
            Ok(out)
        }
        .await;
        fetched.map_err(|e| self.err_command("UID FETCH (metadata)", e))
    }

    /// The raw bytes of each message, fetched with `BODY.PEEK[]` (never sets
    /// `\Seen`) in batches of [`FETCH_BATCH`]. UIDs that vanished meanwhile are
    /// simply absent from the result, which is in UID order.
    pub async fn fetch_bodies(&mut self, uids: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, ImapError> {
        self.fetch_parts(uids, "(UID BODY.PEEK[])", "UID FETCH (bodies)", |f| {
            f.body()
        })
        .await
    }

    /// Up to `len` bytes of one message from `offset` on (`BODY.PEEK[]<offset.len>`,
    /// RFC 3501 partial fetch): a large message is read in pieces, so it is
    /// never in memory whole (`sync::spool`). Empty past the end; `None` when
    /// the UID is gone or the server answers without the body.
    pub(crate) async fn fetch_range(
        &mut self,
        uid: u32,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, ImapError> {
        let item = format!("(UID BODY.PEEK[]<{offset}.{len}>)");
        let session = self.session()?;
        let fetched: Result<Option<Vec<u8>>, async_imap::error::Error> = async {
            let mut stream = session.uid_fetch(uid.to_string(), &item).await?;
            let mut got = None;
            while let Some(fetch) = stream.try_next().await? {
                if fetch.uid == Some(uid) {
                    // NIL past the end is an empty piece, like `""`.
                    got = Some(fetch.body().map(<[u8]>::to_vec).unwrap_or_default());
                }
            }
            Ok(got)
        }
        .await;
        let out = fetched.map_err(|e| self.err_command("UID FETCH (partial)", e))?;
        self.drain_unsolicited();
        Ok(out)
    }

    /// One part of each message (`item` names it in the FETCH, `pick` takes it
    /// from the answer) in batches of [`FETCH_BATCH`], in UID order; UIDs gone
    /// meanwhile, or answered without that part, are absent.
    pub(crate) async fn fetch_parts(
        &mut self,
        uids: &[u32],
        item: &str,
        command: &'static str,
        pick: fn(&async_imap::types::Fetch) -> Option<&[u8]>,
    ) -> Result<Vec<(u32, Vec<u8>)>, ImapError> {
        let mut wanted: Vec<u32> = uids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut out = Vec::with_capacity(wanted.len());
        for chunk in wanted.chunks(FETCH_BATCH) {
            let asked: HashSet<u32> = chunk.iter().copied().collect();
            let set = uid_set(chunk);
            let session = self.session()?;
            let fetched: Result<Vec<(u32, Vec<u8>)>, async_imap::error::Error> = async {
                let mut stream = session.uid_fetch(&set, item).await?;
                let mut got = Vec::new();
                while let Some(fetch) = stream.try_next().await? {
                    if let (Some(uid), Some(part)) = (fetch.uid, pick(&fetch))
                        && asked.contains(&uid)
                    {
                        got.push((uid, part.to_vec()));
                    }
                }
                Ok(got)
            }
            .await;
            out.extend(fetched.map_err(|e| self.err_command(command, e))?);
            self.drain_unsolicited();
        }
        out.sort_unstable_by_key(|(uid, _)| *uid);
        out.dedup_by_key(|(uid, _)| *uid);
        Ok(out)
    }

    /// Moves messages of the selected mailbox to `dest`: UID MOVE when the
    /// server has it, else UID COPY + `\Deleted` + UID EXPUNGE (UIDPLUS), which
    /// only expunges these UIDs. Without either the move is refused: a plain
    /// EXPUNGE could remove messages someone else marked deleted.
    pub async fn move_uids(&mut self, uids: &[u32], dest: &str) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        let use_move = self.caps.mv && self.use_move;
        if !use_move && !self.caps.uidplus {
            return Err(ImapError::CannotMove {
                host: self.host.clone(),
                port: self.port,
            });
        }
        let dest_encoded = encode_mailbox_name(dest);
        let mut sorted = uids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        for chunk in sorted.chunks(MOVE_BATCH) {
            let set = uid_set(chunk);
            if use_move {
                let result = self.session()?.uid_mv(&set, &dest_encoded).await;
                result.map_err(|e| self.err_command(format!("UID MOVE to {dest:?}"), e))?;
            } else {
                self.copy_delete_expunge(&set, dest, &dest_encoded).await?;
            }
            self.drain_unsolicited();
        }
        tracing::debug!(count = sorted.len(), mailbox = %dest, "Moved messages.");
        Ok(())
    }

    async fn copy_delete_expunge(
        &mut self,
        set: &str,
        dest: &str,
        dest_encoded: &str,
    ) -> Result<(), ImapError> {
        let result = self.session()?.uid_copy(set, dest_encoded).await;
        result.map_err(|e| self.err_command(format!("UID COPY to {dest:?}"), e))?;

        let session = self.session()?;
        let stored: Result<(), async_imap::error::Error> = async {
            let mut stream = session.uid_store(set, "+FLAGS.SILENT (\\Deleted)").await?;
            while stream.try_next().await?.is_some() {}
            Ok(())
        }
        .await;
        stored.map_err(|e| self.err_command("UID STORE \\Deleted", e))?;

        let session = self.session()?;
        let expunged: Result<(), async_imap::error::Error> = async {
            let stream = session.uid_expunge(set).await?;
            let mut stream = std::pin::pin!(stream);
            while stream.try_next().await?.is_some() {}
            Ok(())
        }
        .await;
        expunged.map_err(|e| self.err_command("UID EXPUNGE", e))
    }

    /// Appends a message (e.g. a Sent copy, with `flags = &["\\Seen"]`).
    pub async fn append(
        &mut self,
        mailbox: &str,
        raw: &[u8],
        flags: &[&str],
    ) -> Result<(), ImapError> {
        let encoded = encode_mailbox_name(mailbox);
        let flag_list = (!flags.is_empty()).then(|| format!("({})", flags.join(" ")));
        let result = self
            .session()?
            .append(&encoded, flag_list.as_deref(), None, raw)
            .await;
        result.map_err(|e| self.err_command(format!("APPEND to {mailbox:?}"), e))?;
        self.drain_unsolicited();
        Ok(())
    }

    /// Which of `message_ids` (without angle brackets) `mailbox` already
    /// holds: one `UID SEARCH` with OR'd `HEADER Message-ID` keys per
    /// `MESSAGE_ID_SEARCH_CHUNK` (32) ids instead of one search each (a burst's
    /// Sent copies otherwise cost a search of the whole folder per mail), then
    /// the headers of the few hits, since `HEADER` matches substrings. Opens
    /// the folder read-only (EXAMINE): the caller selects its working folder
    /// again afterwards.
    pub(crate) async fn message_ids_present(
        &mut self,
        mailbox: &str,
        message_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, ImapError> {
        let mut present = std::collections::HashSet::new();
        if message_ids.is_empty() {
            return Ok(present);
        }
        let encoded = encode_mailbox_name(mailbox);
        let result = self.session()?.examine(&encoded).await;
        result.map_err(|e| self.err_command(format!("EXAMINE {mailbox:?}"), e))?;
        let mut hits: Vec<u32> = Vec::new();
        for chunk in message_ids.chunks(MESSAGE_ID_SEARCH_CHUNK) {
            let result = self.session()?.uid_search(message_id_search(chunk)).await;
            let found = result.map_err(|e| self.err_command("UID SEARCH HEADER Message-ID", e))?;
            hits.extend(found);
        }
        self.drain_unsolicited();
        self.new_data_pending = false;
        if hits.is_empty() {
            return Ok(present);
        }
        hits.sort_unstable();
        hits.dedup();
        let wanted: std::collections::HashSet<&str> =
            message_ids.iter().map(String::as_str).collect();
        for (_, header) in self.fetch_headers(&hits).await? {
            if let Some(id) = mail_parser::MessageParser::default()
                .parse_headers(&header)
                .and_then(|m| m.message_id().map(str::to_string))
                && wanted.contains(id.as_str())
            {
                present.insert(id);
            }
        }
        Ok(present)
    }

    /// NOOP, for polling when the server has no IDLE. Returns whether the
    /// server announced new messages (since the last IDLE/NOOP).
    pub async fn noop(&mut self) -> Result<bool, ImapError> {
        let result = self.session()?.noop().await;
        result.map_err(|e| self.err_command("NOOP", e))?;
        self.drain_unsolicited();
        Ok(std::mem::take(&mut self.new_data_pending))
    }

    /// Says goodbye. Errors are ignored by most callers: the connection is
    /// being dropped anyway.
    pub async fn logout(mut self) -> Result<(), ImapError> {
        let result = self.session()?.logout().await;
        result.map_err(|e| self.err_command("LOGOUT", e))
    }
}

/// How many Message-IDs one `UID SEARCH` asks for: about 80 bytes each, so a
/// command stays far below servers' line limits (Dovecot: 64 KiB).
pub(crate) const MESSAGE_ID_SEARCH_CHUNK: usize = 32;

/// `HEADER Message-ID "<a>"`, or for several ids the prefix-`OR` form
/// `OR HEADER Message-ID "<a>" OR HEADER Message-ID "<b>" HEADER Message-ID "<c>"`.
fn message_id_search(ids: &[String]) -> String {
    let keys: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                "HEADER Message-ID \"<{}>\"",
                id.replace('\\', "\\\\").replace('"', "\\\"")
            )
        })
        .collect();
    let mut query = String::new();
    for (i, key) in keys.iter().enumerate() {
        if i + 1 < keys.len() {
            query.push_str("OR ");
        }
        query.push_str(key);
        if i + 1 < keys.len() {
            query.push(' ');
        }
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_searches_are_ored_in_prefix_form() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            message_id_search(&ids(&["a@x"])),
            "HEADER Message-ID \"<a@x>\""
        );
        assert_eq!(
            message_id_search(&ids(&["a@x", "b@x", "c\"@x"])),
            "OR HEADER Message-ID \"<a@x>\" OR HEADER Message-ID \"<b@x>\" HEADER Message-ID \"<c\\\"@x>\""
        );
    }
}
