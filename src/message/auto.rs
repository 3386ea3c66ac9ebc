//! Automatic mail detection (SPEC §8).

/// Why a message is automatic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoKind {
    AutoSubmitted,
    Precedence,
    MailingList,
    AutoReplyHeader,
    EmptyReturnPath,
    DaemonSender,
    DeliveryReport,
}
