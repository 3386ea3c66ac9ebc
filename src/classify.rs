//! Sorting inbound mail by subject (SPEC §3). Pure.

use serde::Deserialize;

use crate::cases::Kind;

/// One `[[rules]]` entry: a subject phrase list for a kind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub kind: Kind,
    /// Phrases matched case-insensitively anywhere in the normalised subject.
    pub subjects: Vec<String>,
}
