//! BODYSTRUCTURE, read before a large message's body: an attachment over
//! `agents.max_attachment_bytes` is refused anyway (SPEC §7), so such a
//! message is recorded from its headers without ever holding its body in
//! memory (issue 13: a 40 MB request within a 20,000-request burst stays
//! inside the 64 MiB budget).

use async_imap::imap_proto::{BodyStructure, ContentEncoding};
use futures::TryStreamExt;

use super::{Imap, ImapError, uid_set};

/// The largest attachment-like part of a message, as the server describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LargestPart {
    /// Its file name (`Content-Disposition` `filename`, else `Content-Type`
    /// `name`), when it has one.
    pub filename: Option<String>,
    /// A lower bound of its decoded size: base64 and quoted-printable are
    /// counted at their smallest possible expansion, so a part is only ever
    /// judged too large when it certainly is.
    pub min_decoded: u64,
}

impl Imap {
    /// The largest non-text part of each message (`UID FETCH (BODYSTRUCTURE)`),
    /// in UID order; UIDs gone meanwhile, or messages without such a part,
    /// are absent.
    pub(crate) async fn largest_parts(
        &mut self,
        uids: &[u32],
    ) -> Result<Vec<(u32, LargestPart)>, ImapError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let set = uid_set(uids);
        let session = self.session()?;
        let fetched: Result<Vec<(u32, LargestPart)>, async_imap::error::Error> = async {
            let mut stream = session.uid_fetch(&set, "(UID BODYSTRUCTURE)").await?;
            let mut out = Vec::new();
            while let Some(fetch) = stream.try_next().await? {
                if let (Some(uid), Some(structure)) = (fetch.uid, fetch.bodystructure())
                    && uids.contains(&uid)
                    && let Some(part) = largest_part(structure)
                {
                    out.push((uid, part));
                }
            }
            Ok(out)
        }
        .await;
        let mut out = fetched.map_err(|e| self.err_command("UID FETCH (structure)", e))?;
        self.drain_unsolicited();
        out.sort_unstable_by_key(|(uid, _)| *uid);
        out.dedup_by_key(|(uid, _)| *uid);
        Ok(out)
    }
}

/// The largest part that would be an attachment: any leaf that is not text,
/// or text sent as an attachment; an attached message counts whole.
pub(crate) fn largest_part(structure: &BodyStructure<'_>) -> Option<LargestPart> {
    match structure {
        BodyStructure::Multipart { bodies, .. } => bodies
            .iter()
            .filter_map(largest_part)
            .max_by_key(|p| p.min_decoded),
        BodyStructure::Basic { common, other, .. }
        | BodyStructure::Message { common, other, .. } => Some(part(common, other)),
        BodyStructure::Text { common, other, .. } => {
            let attached = common
                .disposition
                .as_ref()
                .is_some_and(|d| d.ty.eq_ignore_ascii_case("attachment"));
            attached.then(|| part(common, other))
        }
    }
}

fn part(
    common: &async_imap::imap_proto::BodyContentCommon<'_>,
    other: &async_imap::imap_proto::BodyContentSinglePart<'_>,
) -> LargestPart {
    let param = |params: &Option<Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)>>,
                 key: &str| {
        params
            .iter()
            .flatten()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.to_string())
    };
    let filename = common
        .disposition
        .as_ref()
        .and_then(|d| param(&d.params, "filename"))
        .or_else(|| param(&common.ty.params, "name"));
    LargestPart {
        filename,
        min_decoded: min_decoded(&other.transfer_encoding, u64::from(other.octets)),
    }
}

/// The smallest size `octets` of encoded text can decode to. Base64 gives 3
/// bytes per 4 characters, less its line breaks: lines of 76 (the RFC 2045
/// maximum, what mail clients write) make it 57 of 78; counted as 7 of 10 so
/// that lines down to 48 characters are still never over-counted.
/// Quoted-printable at worst encodes every byte as `=XX`.
pub(crate) fn min_decoded(encoding: &ContentEncoding<'_>, octets: u64) -> u64 {
    match encoding {
        ContentEncoding::Base64 => octets / 10 * 7,
        ContentEncoding::QuotedPrintable => octets / 3,
        ContentEncoding::SevenBit | ContentEncoding::EightBit | ContentEncoding::Binary => octets,
        ContentEncoding::Other(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_sizes_are_never_over_counted() {
        // 30 MiB encoded in base64 with 76-character lines.
        let raw = 30 * 1024 * 1024u64;
        let encoded = raw.div_ceil(57) * 78;
        let bound = min_decoded(&ContentEncoding::Base64, encoded);
        assert!(bound <= raw && bound > raw * 95 / 100, "{bound} vs {raw}");
        // Lines of 48 characters (+ CRLF): still not over-counted.
        let encoded = raw.div_ceil(36) * 50;
        assert!(min_decoded(&ContentEncoding::Base64, encoded) <= raw);
        assert_eq!(min_decoded(&ContentEncoding::QuotedPrintable, 300), 100);
        assert_eq!(min_decoded(&ContentEncoding::Binary, 300), 300);
        assert_eq!(
            min_decoded(&ContentEncoding::Other("x-uuencode".into()), 300),
            0
        );
    }
}
