//! Licensing messages: a card asks its issuer for a license; anyone asks for
//! the newest revocation list (the list itself is
//! [`crate::license::RevocationList`]).

use serde::{Deserialize, Serialize};

use crate::crypto::{Digest, PublicKey, Signature};
use crate::envelope::{signing_input, Body, Signed};
use crate::license::{CardKeys, CardSecret, License};
use crate::money::{Currency, Timestamp};

/// A card asks to be licensed. Signed by the card's authentication key; the
/// payment key proves possession with `payment_pop`, so nobody can have a
/// license made for a payment key that is not theirs.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LicenseRequest {
    pub currency: Currency,
    pub card: CardKeys,
    pub requested_at: Timestamp,
    /// The payment key's signature over [`LicenseRequest::pop_input`].
    pub payment_pop: Signature,
}

impl Body for LicenseRequest {
    const KIND: &'static str = "license-request";
}

impl LicenseRequest {
    /// What the payment key signs: the card's authentication key, the
    /// currency and the time, under their own domain.
    pub fn pop_input(currency: Currency, auth: &PublicKey, at: Timestamp) -> Vec<u8> {
        let mut body = Vec::with_capacity(48);
        body.extend_from_slice(currency.as_str().as_bytes());
        body.extend_from_slice(auth.as_bytes());
        body.extend_from_slice(&at.unix().to_be_bytes());
        signing_input("license-pop", &body)
    }

    /// A request for `card`, signed as the protocol requires.
    pub fn new(
        card: &CardSecret,
        currency: Currency,
        now: Timestamp,
    ) -> Result<Signed<LicenseRequest>, crate::envelope::EnvelopeError> {
        let keys = card.keys();
        let payment_pop = card
            .payment
            .sign(&Self::pop_input(currency, &keys.auth, now));
        Signed::sign(
            LicenseRequest {
                currency,
                card: keys,
                requested_at: now,
                payment_pop,
            },
            &card.auth,
        )
    }

    /// Checks the payment key's proof of possession.
    pub fn verify_pop(&self) -> Result<(), crate::crypto::SignatureError> {
        self.card.payment.verify(
            &Self::pop_input(self.currency, &self.card.auth, self.requested_at),
            &self.payment_pop,
        )
    }
}

/// The issuer grants a license. Signed by the issuer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LicenseGranted {
    /// The id of the license request envelope.
    pub request: Digest,
    pub license: Signed<License>,
}

impl Body for LicenseGranted {
    const KIND: &'static str = "license-granted";
}

/// Asks the issuer for its current revocation list. The issuer always
/// answers with its current list (so "nothing newer" is a list whose version
/// equals `known_version`); `known_version` is informational. Signed by any
/// key the asker likes (a card's authentication key).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RevocationListRequest {
    pub currency: Currency,
    pub known_version: u64,
}

impl Body for RevocationListRequest {
    const KIND: &'static str = "revocation-list-request";
}
