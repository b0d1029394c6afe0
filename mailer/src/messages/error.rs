//! Error replies: every refused request is answered with one, signed by the
//! party that refuses it, carrying a stable machine-readable code.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cbor::CborError;
use crate::crypto::Digest;
use crate::envelope::{check_len, check_text, Body, Envelope, EnvelopeError};
use crate::limits::{MAX_EVIDENCE, MAX_KIND_LEN, MAX_TEXT};
use crate::note::{BundleError, NoteError};

macro_rules! error_codes {
    ($($name:ident = $num:expr, $text:expr;)*) => {
        /// Stable error codes. The numbers never change meaning; new codes
        /// may be added, and a code this software does not know decodes as
        /// [`ErrorCode::Unknown`].
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($name,)*
            Unknown(u16),
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            pub fn number(self) -> u16 {
                match self {
                    $(ErrorCode::$name => $num,)*
                    ErrorCode::Unknown(n) => n,
                }
            }

            pub fn from_number(n: u16) -> ErrorCode {
                match n {
                    $($num => ErrorCode::$name,)*
                    other => ErrorCode::Unknown(other),
                }
            }

            /// A short description for people.
            pub fn text(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $text,)*
                    ErrorCode::Unknown(_) => "unknown error code",
                }
            }
        }
    };
}

error_codes! {
    // 1xx: the mail or the envelope.
    MalformedMail = 100, "the mail could not be read as MIME";
    NoEnvelope = 101, "the mail carries no application/cbor attachment";
    BadEnvelope = 102, "the attachment is not a valid envelope";
    BadSignature = 103, "the envelope's signature does not verify";
    UnknownKind = 104, "this message kind is not understood here";
    TooLarge = 105, "the mail or a part of it is larger than the limit";
    UnsupportedVersion = 106, "the envelope version is not supported";
    LimitExceeded = 107, "a list or text in the message is longer than the limit";
    NotForUs = 108, "this message kind is not handled by this party";
    // 2xx: who signed it.
    UnknownSigner = 200, "the signing key is not known here";
    Revoked = 201, "the card is revoked";
    NotLicensed = 202, "the card has no valid license";
    WrongKey = 203, "the message is signed by another key than the one required";
    // 3xx: the request itself.
    WrongCurrency = 300, "this currency is not served here";
    BadAmount = 301, "the amount is zero, too large, or does not add up";
    UnknownAccount = 302, "no such account";
    InsufficientFunds = 303, "the account or float does not hold enough";
    BadEnrollmentCode = 304, "the enrollment code is wrong, used or expired";
    Expired = 305, "a deadline has passed";
    Replay = 306, "this request was already answered differently";
    BadRequest = 307, "the request is inconsistent";
    // 4xx: notes.
    BadNote = 400, "a note failed verification";
    Overspent = 401, "a note was overspent";
    AlreadyDeposited = 402, "the note was already deposited";
    WrongPayee = 403, "the payment is not made to the expected card";
    WrongChallenge = 404, "the payment does not answer the expected challenge";
    // 5xx: exchange.
    UnknownTransaction = 500, "no such exchange transaction";
    OfferExpired = 501, "the offer has expired";
    OutOfStock = 502, "the agent's float cannot cover this exchange now";
    NoRate = 503, "no rate is offered for this pair";
    FirstPaymentMissing = 504, "the first payment has not arrived";
    FirstPaymentLate = 505, "the first payment arrived after its deadline";
    FirstPaymentShort = 506, "the first payment is less than agreed";
    DoubleDemand = 507, "the second payment was already made against another request";
    OfferMismatch = 508, "the acceptance or request does not match the offer";
    // 9xx: our side.
    Internal = 900, "an internal error; the request may be sent again later";
}

impl ErrorCode {
    /// The code for an envelope that could not be read or verified.
    pub fn for_envelope(e: &EnvelopeError) -> ErrorCode {
        match e {
            EnvelopeError::Cbor(CborError::TooLarge { .. }) => ErrorCode::TooLarge,
            EnvelopeError::Cbor(_) | EnvelopeError::BadKind(_) | EnvelopeError::Body { .. } => {
                ErrorCode::BadEnvelope
            }
            EnvelopeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            EnvelopeError::WrongKind { .. } => ErrorCode::UnknownKind,
            EnvelopeError::Signature { .. } => ErrorCode::BadSignature,
            EnvelopeError::WrongSigner { .. } => ErrorCode::WrongKey,
            EnvelopeError::Limit { .. } => ErrorCode::LimitExceeded,
        }
    }

    /// The code for a note that failed verification.
    pub fn for_note(e: &NoteError) -> ErrorCode {
        match e {
            NoteError::ChainTooLong { .. } => ErrorCode::LimitExceeded,
            NoteError::WrongCurrency { .. } => ErrorCode::WrongCurrency,
            NoteError::Expired { .. } => ErrorCode::Expired,
            NoteError::NotLicensed { .. } | NoteError::LicenseNotValid { .. } => {
                ErrorCode::NotLicensed
            }
            NoteError::Revoked { .. } => ErrorCode::Revoked,
            NoteError::WrongPayee { .. } | NoteError::WrongHolder { .. } => ErrorCode::WrongPayee,
            NoteError::WrongChallenge => ErrorCode::WrongChallenge,
            _ => ErrorCode::BadNote,
        }
    }

    /// The code for the notes of a message that failed verification.
    pub fn for_bundle(e: &BundleError) -> ErrorCode {
        match e {
            BundleError::Note { error, .. } => ErrorCode::for_note(error),
            BundleError::Overspent { .. } => ErrorCode::Overspent,
            BundleError::WrongTotal { .. } | BundleError::Overflow | BundleError::Empty => {
                ErrorCode::BadAmount
            }
            _ => ErrorCode::BadNote,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E{} ({})", self.number(), self.text())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.number())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(ErrorCode::from_number)
    }
}

/// A signed refusal. `request` names the refused envelope by id when there
/// was one to name (a mail with no readable envelope has none).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ErrorReply {
    pub request: Option<Digest>,
    pub request_kind: Option<String>,
    pub code: ErrorCode,
    /// What was wrong and what to do, for people.
    pub reason: String,
    /// Signed envelopes that support the refusal (a double demand carries
    /// the stored request that was already paid).
    pub evidence: Vec<Envelope>,
}

impl Body for ErrorReply {
    const KIND: &'static str = "error";
    fn check_limits(&self) -> Result<(), String> {
        check_text("reason", &self.reason, MAX_TEXT)?;
        if let Some(k) = &self.request_kind {
            check_text("request kind", k, MAX_KIND_LEN)?;
        }
        check_len("evidence", self.evidence.len(), MAX_EVIDENCE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_round_trip() {
        let mut seen = std::collections::BTreeSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.number()), "duplicate number {}", c.number());
            assert_eq!(ErrorCode::from_number(c.number()), *c);
        }
        assert_eq!(ErrorCode::DoubleDemand.number(), 507);
        assert_eq!(ErrorCode::from_number(4242), ErrorCode::Unknown(4242));
        let bytes = crate::cbor::to_vec(&ErrorCode::Overspent).unwrap();
        assert_eq!(bytes, vec![0x19, 0x01, 0x91]);
    }
}
