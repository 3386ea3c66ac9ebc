//! Raw bytes → [`Inbound`]. Never fails: broken MIME yields what could be read.

use super::Inbound;

/// Parses a raw RFC 5322 message.
pub fn parse(raw: &[u8]) -> Inbound {
    Inbound {
        size: raw.len(),
        ..Inbound::default()
    }
}
