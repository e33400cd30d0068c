//! Didit (didit.me), identity verification API v3: the adapter's wire format, built a slice at a
//! time (issue 28). This first slice holds what needs no HTTP: Didit's session statuses and their
//! mapping to the normalized [`Status`], and the check of a webhook's signature. The client (create,
//! read, identity, decision) and the registration line come next, with the Didit simulator.
//!
//! Facts are from Didit's public documentation (docs.didit.me, v3), each with its source, in
//! `SOURCES.md` beside this crate; the webhook signature test vectors are Didit's WordPress
//! plugin's published fixtures (`tests/fixtures/webhook-signatures.json`, from
//! didit-protocol/plugin-wordpress).
//!
//! # Status
//!
//! Didit's `status` strings are exact and case-sensitive; the match is exhaustive, so a status
//! Didit adds later is refused ([`SessionStatus::parse`] answers `None`) instead of guessed.
//!
//! | Didit `status`  | [`Status`]    | why                                                          |
//! |-----------------|---------------|--------------------------------------------------------------|
//! | `Not Started`   | `pending`     | the link was not opened yet                                  |
//! | `In Progress`   | `in_progress` |                                                              |
//! | `Awaiting User` | `in_progress` | Didit waits for the person (a step to redo, a second device) |
//! | `Resubmitted`   | `in_progress` | a reviewer sent the person back to redo steps                |
//! | `In Review`     | `in_review`   |                                                              |
//! | `Approved`      | `approved`    |                                                              |
//! | `Declined`      | `rejected`    |                                                              |
//! | `Expired`       | `expired`     | the link was never opened in time                            |
//! | `Kyc Expired`   | `expired`     | an approval Didit's own expiry policy ended                  |
//! | `Abandoned`     | `abandoned`   | started, not finished in time                                |
//!
//! `cancelled` is never Didit's: Didit has no cancel call, so it is the gateway's own word for a
//! session it stopped following. A session approved and later `Kyc Expired` at Didit stays
//! `approved` in the gateway (a final status never changes); the gateway's re-verification
//! notices count from the approval.

mod webhook;

pub use webhook::{SIGNATURE_WINDOW_SECONDS, WebhookEnvelope, verify_webhook_signature};

use kyc_core::Status;

/// A Didit session status, as Didit writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// `Not Started`.
    NotStarted,
    /// `In Progress`.
    InProgress,
    /// `Awaiting User`.
    AwaitingUser,
    /// `Resubmitted`.
    Resubmitted,
    /// `In Review`.
    InReview,
    /// `Approved`.
    Approved,
    /// `Declined`.
    Declined,
    /// `Expired`.
    Expired,
    /// `Kyc Expired`.
    KycExpired,
    /// `Abandoned`.
    Abandoned,
}

impl SessionStatus {
    /// Every status, with the string Didit writes for it.
    pub const ALL: [(SessionStatus, &'static str); 10] = [
        (SessionStatus::NotStarted, "Not Started"),
        (SessionStatus::InProgress, "In Progress"),
        (SessionStatus::AwaitingUser, "Awaiting User"),
        (SessionStatus::Resubmitted, "Resubmitted"),
        (SessionStatus::InReview, "In Review"),
        (SessionStatus::Approved, "Approved"),
        (SessionStatus::Declined, "Declined"),
        (SessionStatus::Expired, "Expired"),
        (SessionStatus::KycExpired, "Kyc Expired"),
        (SessionStatus::Abandoned, "Abandoned"),
    ];

    /// The status Didit wrote, exactly (case and spacing count); `None` for one it does not
    /// document.
    pub fn parse(text: &str) -> Option<SessionStatus> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(status, _)| *status)
    }

    /// The normalized status (see the table in the crate docs).
    pub fn normalized(self) -> Status {
        match self {
            SessionStatus::NotStarted => Status::Pending,
            SessionStatus::InProgress
            | SessionStatus::AwaitingUser
            | SessionStatus::Resubmitted => Status::InProgress,
            SessionStatus::InReview => Status::InReview,
            SessionStatus::Approved => Status::Approved,
            SessionStatus::Declined => Status::Rejected,
            SessionStatus::Expired | SessionStatus::KycExpired => Status::Expired,
            SessionStatus::Abandoned => Status::Abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_documented_status_maps_as_the_table_says() {
        let expected = [
            ("Not Started", Status::Pending),
            ("In Progress", Status::InProgress),
            ("Awaiting User", Status::InProgress),
            ("Resubmitted", Status::InProgress),
            ("In Review", Status::InReview),
            ("Approved", Status::Approved),
            ("Declined", Status::Rejected),
            ("Expired", Status::Expired),
            ("Kyc Expired", Status::Expired),
            ("Abandoned", Status::Abandoned),
        ];
        for (text, status) in expected {
            let parsed = SessionStatus::parse(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(parsed.normalized(), status, "{text}");
        }
        assert_eq!(expected.len(), SessionStatus::ALL.len());
    }

    #[test]
    fn an_undocumented_or_miswritten_status_is_refused() {
        for text in ["approved", "KYC Expired", "Cancelled", "", "Not started"] {
            assert_eq!(SessionStatus::parse(text), None, "{text}");
        }
    }
}
