//! Personal transfers by email.
//!
//! The payer cannot make a payment link before it knows the payee's card key
//! and a fresh challenge of the payee, and both people may only run their
//! wallets now and then. So a transfer is three mails, each answered
//! automatically: the payer's [`PaymentInvite`], the payee's
//! [`PaymentAddress`] (card keys, license and challenge), the payer's
//! [`Payment`]; then the payee's [`Receipt`] (or an error reply).

use serde::{Deserialize, Serialize};

use crate::crypto::{Challenge, Digest, Id};
use crate::envelope::{check_text, Body, Signed};
use crate::license::{CardKeys, License};
use crate::limits::MAX_TEXT;
use crate::messages::bank::check_notes;
use crate::money::{Amount, Currency};
use crate::note::Note;

/// "I want to pay you `amount`": asks the payee's wallet for a card and a
/// challenge. Signed by the payer's card authentication key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PaymentInvite {
    pub transfer: Id,
    pub currency: Currency,
    pub amount: Amount,
    pub memo: String,
}

impl Body for PaymentInvite {
    const KIND: &'static str = "payment-invite";
    fn check_limits(&self) -> Result<(), String> {
        check_text("memo", &self.memo, MAX_TEXT)
    }
}

/// The payee's answer: pay this card, against this challenge. Signed by the
/// payee card's authentication key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PaymentAddress {
    pub transfer: Id,
    /// The id of the invite envelope.
    pub invite: Digest,
    pub card: CardKeys,
    pub license: Signed<License>,
    pub challenge: Challenge,
}

impl Body for PaymentAddress {
    const KIND: &'static str = "payment-address";
}

/// The payment: notes whose last links pay the payee's card against its
/// challenge. Signed by the payer card's authentication key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Payment {
    pub transfer: Id,
    pub currency: Currency,
    /// The total of the last links' amounts.
    pub amount: Amount,
    pub notes: Vec<Note>,
    /// Licenses of the cards that signed links in `notes`.
    pub licenses: Vec<Signed<License>>,
    pub memo: String,
}

impl Body for Payment {
    const KIND: &'static str = "payment";
    fn check_limits(&self) -> Result<(), String> {
        check_text("memo", &self.memo, MAX_TEXT)?;
        check_notes(&self.notes, &self.licenses)
    }
}

/// The payee's signed acknowledgement of a payment it accepted. Signed by the
/// payee card's authentication key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Receipt {
    pub transfer: Id,
    /// The id of the payment envelope.
    pub payment: Digest,
    pub currency: Currency,
    pub amount: Amount,
}

impl Body for Receipt {
    const KIND: &'static str = "receipt";
}
