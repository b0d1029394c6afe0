//! Currency exchange with an untrusted agent (paper, section 4.1).
//!
//! Negotiation: [`QuoteRequest`] -> [`Offer`] -> [`OfferAcceptance`] ->
//! [`SignedOffer`] (fixes the rate and the receiving card). First payment:
//! [`FirstPayment`] to the agent's card with the offer's challenge, before
//! D1. Second payment: [`SecondPaymentRequest`] signed by the receiving
//! card's authentication key, before D2 -> [`SecondPayment`]. A first
//! payment the agent cannot take is returned with a [`Refund`].

use serde::{Deserialize, Serialize};

use crate::crypto::{Challenge, Digest, Id, PublicKey};
use crate::envelope::{check_len, Body, Signed};
use crate::license::{CardKeys, License};
use crate::limits::MAX_RATES;
use crate::messages::bank::check_notes;
use crate::messages::error::ErrorCode;
use crate::money::{Amount, Currency, Rate, Timestamp};
use crate::note::Note;

/// One line of a rate sheet: `rate` units of `to` per unit of `from` (major
/// units), for amounts of `from` between `min` and `max` (minor units).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RateQuote {
    pub from: Currency,
    pub to: Currency,
    pub rate: Rate,
    pub min: Amount,
    pub max: Amount,
}

/// The agent's published rates. Indicative: only a signed offer binds.
/// Signed by the agent's key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RateSheet {
    pub issued_at: Timestamp,
    pub valid_until: Timestamp,
    pub rates: Vec<RateQuote>,
}

impl Body for RateSheet {
    const KIND: &'static str = "rate-sheet";
    fn check_limits(&self) -> Result<(), String> {
        check_len("rates", self.rates.len(), MAX_RATES)?;
        self.rates.iter().try_for_each(|r| check_rate(&r.rate))
    }
}

/// How much the user wants to exchange: an amount to pay, or to receive.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuoteAmount {
    /// Pay this much of `from`.
    Pay(Amount),
    /// Receive this much of `to`.
    Receive(Amount),
}

/// Asks the agent for an offer. Signed by any key of the user's (its paying
/// card's authentication key).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct QuoteRequest {
    pub request_id: Id,
    pub from: Currency,
    pub to: Currency,
    pub amount: QuoteAmount,
}

impl Body for QuoteRequest {
    const KIND: &'static str = "quote-request";
}

/// The conditions of an exchange, as in the paper's offer. Offer and signed
/// offer carry the same terms, so the wallet compares them field by field.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OfferTerms {
    /// Transaction id.
    pub tr_id: Id,
    /// A1 of `pay_currency`, to be paid by D1.
    pub pay_currency: Currency,
    pub a1: Amount,
    pub d1: Timestamp,
    /// A2 of `receive_currency`, to be requested by D2.
    pub receive_currency: Currency,
    pub a2: Amount,
    pub d2: Timestamp,
    /// The rate the amounts were computed at (informational: A1 and A2 bind).
    pub rate: Rate,
    /// The agent's key, which signs offers and signed offers.
    pub agent: PublicKey,
    /// The agent's card of `pay_currency` that the first payment must pay,
    /// with its license (the agent's certificate from that issuer).
    pub pay_to: CardKeys,
    pub pay_to_license: Signed<License>,
    /// The challenge the first payment must answer.
    pub challenge: Challenge,
    /// The agent's card of `receive_currency` that will make the second
    /// payment, with its license.
    pub payer_license: Signed<License>,
}

/// The agent's offer. Signed by the agent's key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Offer {
    /// The id of the quote request envelope.
    pub quote: Digest,
    pub terms: OfferTerms,
}

impl Body for Offer {
    const KIND: &'static str = "offer";
    fn check_limits(&self) -> Result<(), String> {
        check_rate(&self.terms.rate)
    }
}

fn check_rate(rate: &Rate) -> Result<(), String> {
    if rate.is_valid() {
        Ok(())
    } else {
        Err(format!(
            "rate {rate} is zero or has more than {} decimals",
            Rate::MAX_SCALE
        ))
    }
}

/// The user accepts an offer and names the card that must receive the
/// second payment. Signed by that card's authentication key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OfferAcceptance {
    pub tr_id: Id,
    /// The id of the offer envelope.
    pub offer: Digest,
    pub receiver: CardKeys,
}

impl Body for OfferAcceptance {
    const KIND: &'static str = "offer-acceptance";
}

/// The agent's commitment: the terms plus the receiving card. Signed by the
/// agent's key. With it, the user can prove what the agent promised.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SignedOffer {
    pub terms: OfferTerms,
    pub receiver: CardKeys,
    /// The id of the acceptance envelope.
    pub acceptance: Digest,
}

impl Body for SignedOffer {
    const KIND: &'static str = "signed-offer";
    fn check_limits(&self) -> Result<(), String> {
        check_rate(&self.terms.rate)
    }
}

/// The first payment: A1 paid to the agent's card against the offer's
/// challenge. `refund_to` and `refund_challenge` say where the agent must
/// return the value if it cannot take the payment. Signed by the paying
/// card's authentication key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct FirstPayment {
    pub tr_id: Id,
    /// The id of the signed offer envelope.
    pub signed_offer: Digest,
    pub notes: Vec<Note>,
    pub licenses: Vec<Signed<License>>,
    pub refund_to: PublicKey,
    pub refund_challenge: Challenge,
}

impl Body for FirstPayment {
    const KIND: &'static str = "first-payment";
    fn check_limits(&self) -> Result<(), String> {
        check_notes(&self.notes, &self.licenses)
    }
}

/// The request for the second payment: TrID and a fresh challenge of the
/// receiving card. Signed by the receiving card's authentication key, the
/// one fixed in the signed offer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SecondPaymentRequest {
    pub tr_id: Id,
    /// The id of the signed offer envelope.
    pub signed_offer: Digest,
    pub challenge: Challenge,
}

impl Body for SecondPaymentRequest {
    const KIND: &'static str = "second-payment-request";
}

/// The second payment: notes whose last links pay A2 to the receiving card
/// against the request's challenge. Signed by the agent's key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SecondPayment {
    pub tr_id: Id,
    /// The id of the second-payment request envelope it answers.
    pub request: Digest,
    pub notes: Vec<Note>,
    pub licenses: Vec<Signed<License>>,
}

impl Body for SecondPayment {
    const KIND: &'static str = "second-payment";
    fn check_limits(&self) -> Result<(), String> {
        check_notes(&self.notes, &self.licenses)
    }
}

/// Value returned by the agent: a first payment it could not take (late,
/// short, wrong challenge...) paid back to the payer's refund card. Signed by
/// the agent's key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Refund {
    pub tr_id: Id,
    /// The id of the first-payment envelope refunded.
    pub payment: Digest,
    pub reason: ErrorCode,
    pub notes: Vec<Note>,
    pub licenses: Vec<Signed<License>>,
}

impl Body for Refund {
    const KIND: &'static str = "refund";
    fn check_limits(&self) -> Result<(), String> {
        check_notes(&self.notes, &self.licenses)
    }
}
