//! The issuer's decisions, one file per message family. Each takes a
//! decoded request and the transaction, checks it in the order the
//! protocol lists (docs/protocol.md, sections 4.1 and 4.2), changes the
//! state, and returns the signed reply or a [`Refusal`].
//!
//! - [`license`]: `license-request` -> `license-granted`.
//! - [`revocation`]: `revocation-list-request` -> `revocation-list`.
//! - [`enroll`]: `enroll-request` -> `enrolled`.
//! - [`withdraw`]: `withdraw-request` -> `notes-issued`.
//! - [`deposit`]: `deposit` -> `deposit-receipt` (clearing in
//!   [`crate::clearing`]).
//!
//! Mail, replays and error replies are [`crate::handler`]'s business.

/// Returns the refusal (decided, recorded) from the handler when a check
/// fails.
macro_rules! check {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(refusal) => return Ok($crate::handlers::Answer::Decided(Err(refusal))),
        }
    };
}

/// Returns the refusal (not recorded) when the signature does not check.
macro_rules! check_signed {
    ($e:expr) => {
        if let Err(refusal) = $e {
            return Ok($crate::handlers::Answer::Unverified(refusal));
        }
    };
}

pub mod deposit;
pub mod enroll;
pub mod license;
pub mod revocation;
pub mod withdraw;

use mailer::crypto::PublicKey;
use mailer::envelope::{Body, Envelope, EnvelopeError, Signed};
use mailer::messages::ErrorCode;
use mailer::money::{Currency, Timestamp};
use rusqlite::Connection;

use crate::error::{IssuerError, Refusal};
use crate::Issuer;

/// What a handler works with.
#[derive(Clone, Copy, Debug)]
pub struct Cx<'a> {
    pub conn: &'a Connection,
    pub issuer: &'a Issuer,
    pub now: Timestamp,
}

/// A handler's answer.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Refused before the signature was found good (or with nobody's
    /// signature to check): answered, but not recorded, so that a forged
    /// copy of a request cannot make the issuer refuse the real one later.
    Unverified(Refusal),
    /// Decided: the reply, or the refusal, is recorded with the request id
    /// and sent again, unchanged, when the same request comes again.
    Decided(Result<Envelope, Refusal>),
}

impl Answer {
    pub(crate) fn reply<T: Body>(signed: Signed<T>) -> Answer {
        Answer::Decided(Ok(signed.into_envelope()))
    }
    pub(crate) fn refuse(code: ErrorCode, reason: impl Into<String>) -> Answer {
        Answer::Decided(Err(Refusal::new(code, reason)))
    }
}

/// Checks the request's signature (by `expected`, or by whoever signed it
/// when `expected` is None). A failure is answered [`Answer::Unverified`].
pub(crate) fn check_signature<T: Body>(
    request: &Signed<T>,
    expected: Option<&PublicKey>,
) -> Result<(), Refusal> {
    let result = match expected {
        Some(k) => request.verify_signer(k).map(|_| ()),
        None => request.verify().map(|_| ()),
    };
    result.map_err(|e| signature_refusal(&e))
}

fn signature_refusal(e: &EnvelopeError) -> Refusal {
    let hint = match e {
        EnvelopeError::WrongSigner { .. } => "sign the request with the key the protocol requires",
        _ => "the envelope was changed after it was signed, or signed with another key; send the request again from your wallet",
    };
    Refusal::new(ErrorCode::for_envelope(e), format!("{e}; {hint}"))
}

/// Refuses a request in another currency.
pub(crate) fn check_currency(cx: &Cx<'_>, found: Currency) -> Result<(), Refusal> {
    if found == cx.issuer.currency() {
        Ok(())
    } else {
        Err(Refusal::new(
            ErrorCode::WrongCurrency,
            format!(
                "this is the {} issuer; send {found} requests to the {found} issuer",
                cx.issuer.currency()
            ),
        ))
    }
}

/// The account an account key is enrolled for, or the refusal.
pub(crate) fn account_of(
    cx: &Cx<'_>,
    key: &PublicKey,
) -> Result<Result<String, Refusal>, IssuerError> {
    Ok(match crate::store::account_of_key(cx.conn, key)? {
        Some(a) => Ok(a),
        None => Err(Refusal::new(
            ErrorCode::UnknownAccount,
            format!(
                "key {} is not enrolled for any account here; enroll it first with the one-time code from the issuer's operator",
                key.fingerprint()
            ),
        )),
    })
}
