//! The bank side of an issuer: enrollment of an account key, withdrawals
//! (account debited, notes issued to a card) and deposits (notes returned,
//! cleared, account credited).

use serde::{Deserialize, Serialize};

use crate::crypto::{digest, Challenge, Digest, Id, PublicKey};
use crate::envelope::{check_len, check_text, Body, Signed, PROTOCOL_TAG};
use crate::license::{CardKeys, License};
use crate::limits::{MAX_LICENSES, MAX_NOTES, MAX_TEXT};
use crate::messages::error::ErrorCode;
use crate::money::{Amount, Currency};
use crate::note::Note;
use crate::overspend::OverspendProof;

/// Checks the limits of a list of notes and the licenses beside them.
pub fn check_notes(notes: &[Note], licenses: &[Signed<License>]) -> Result<(), String> {
    check_len("notes", notes.len(), MAX_NOTES)?;
    check_len("licenses", licenses.len(), MAX_LICENSES)?;
    for n in notes {
        check_len("a note's links", n.links.len(), crate::limits::MAX_CHAIN)?;
    }
    Ok(())
}

/// Binds an account key to an account with the one-time code the issuer's
/// operator gave the account holder. Signed by the new account key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub currency: Currency,
    pub code: String,
}

impl Body for EnrollRequest {
    const KIND: &'static str = "enroll-request";
    fn check_limits(&self) -> Result<(), String> {
        check_text("code", &self.code, 128)
    }
}

/// The issuer confirms an enrollment. Signed by the issuer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Enrolled {
    pub request: Digest,
    pub currency: Currency,
    pub account: String,
    pub balance: Amount,
}

impl Body for Enrolled {
    const KIND: &'static str = "enrolled";
    fn check_limits(&self) -> Result<(), String> {
        check_text("account", &self.account, MAX_TEXT)
    }
}

/// Withdraws `amount` from the account into notes issued to `card`.
/// Signed by the account key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WithdrawRequest {
    pub request_id: Id,
    pub currency: Currency,
    pub amount: Amount,
    pub card: CardKeys,
}

impl Body for WithdrawRequest {
    const KIND: &'static str = "withdraw-request";
}

/// Notes issued for a withdrawal. Signed by the issuer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NotesIssued {
    pub request: Digest,
    pub currency: Currency,
    pub notes: Vec<Note>,
    /// The account's balance after the withdrawal.
    pub balance: Amount,
}

impl Body for NotesIssued {
    const KIND: &'static str = "notes-issued";
    fn check_limits(&self) -> Result<(), String> {
        check_notes(&self.notes, &[])
    }
}

/// Returns notes to the issuer. Each note's last link pays the issuer's key
/// against [`Deposit::challenge_for`] of the depositing account key, so an
/// intercepted deposit cannot be credited to anyone else. Signed by the
/// account key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Deposit {
    pub request_id: Id,
    pub currency: Currency,
    pub notes: Vec<Note>,
    /// Licenses of the cards that signed links in `notes`.
    pub licenses: Vec<Signed<License>>,
}

impl Body for Deposit {
    const KIND: &'static str = "deposit";
    fn check_limits(&self) -> Result<(), String> {
        check_notes(&self.notes, &self.licenses)
    }
}

impl Deposit {
    /// The challenge a deposit link must answer: bound to the account key.
    pub fn challenge_for(account_key: &PublicKey) -> Challenge {
        let d = digest(&[PROTOCOL_TAG, b"deposit-challenge", account_key.as_bytes()]);
        Challenge(d.0)
    }
}

/// What became of one deposited note.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum DepositOutcome {
    Credited,
    /// This very link was credited before (same deposit sent twice).
    AlreadyCredited,
    Refused {
        code: ErrorCode,
        reason: String,
    },
    /// Crediting it would exceed what a state held; the proof names the
    /// card that overspent (which is now revoked).
    Overspent {
        proof: Box<OverspendProof>,
    },
}

/// One line of a deposit receipt.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DepositResult {
    /// The id of the note (its issuance).
    pub note: Digest,
    /// The id of the deposit link (the state deposited).
    pub state: Digest,
    pub amount: Amount,
    pub result: DepositOutcome,
}

/// The issuer's answer to a deposit. Signed by the issuer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DepositReceipt {
    pub request: Digest,
    pub currency: Currency,
    pub credited: Amount,
    pub balance: Amount,
    pub results: Vec<DepositResult>,
}

impl Body for DepositReceipt {
    const KIND: &'static str = "deposit-receipt";
    fn check_limits(&self) -> Result<(), String> {
        check_len("results", self.results.len(), MAX_NOTES)?;
        for r in &self.results {
            match &r.result {
                DepositOutcome::Refused { reason, .. } => check_text("reason", reason, MAX_TEXT)?,
                DepositOutcome::Overspent { proof } => proof.check_limits()?,
                _ => {}
            }
        }
        Ok(())
    }
}
