//! Fixed keys and ready-made objects for tests (this crate's and others',
//! through the `testkit` feature). Keys come from fixed seeds, so that
//! signatures, ids and golden vectors are the same on every run.

#![allow(clippy::expect_used)] // test fixtures: a failure here is a broken test, not input

use crate::crypto::{Challenge, Id, SecretKey};
use crate::envelope::Signed;
use crate::license::{CardKeys, CardSecret, License, LicenseBook, Revocations};
use crate::money::{Amount, Currency, Timestamp};
use crate::note::{Expect, Issuance, Note, NotePolicy};

/// The instant tests call "now": 2026-11-23T00:00:00Z.
pub const NOW: Timestamp = Timestamp::from_unix(1_795_392_000);
/// Notes issued in tests live this long.
pub const NOTE_LIFETIME_SECS: u64 = 365 * 86_400;

/// A key from a one-byte seed.
pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed([seed; 32])
}

/// A card whose keys come from `seed` (payment) and `seed + 128` (auth).
pub fn card(seed: u8) -> CardSecret {
    CardSecret {
        payment: key(seed),
        auth: key(seed.wrapping_add(128)),
    }
}

/// A fixed challenge.
pub fn challenge(seed: u8) -> Challenge {
    Challenge([seed; 32])
}

/// A fixed id.
pub fn id(seed: u8) -> Id {
    Id([seed; 16])
}

/// An issuer of one currency with fixed keys, and the cards it licensed.
#[derive(Debug)]
pub struct TestIssuer {
    pub key: SecretKey,
    pub currency: Currency,
    pub licenses: Vec<Signed<License>>,
    serial: u8,
}

impl TestIssuer {
    pub fn new(seed: u8, currency: Currency) -> TestIssuer {
        TestIssuer {
            key: key(seed),
            currency,
            licenses: Vec::new(),
            serial: 0,
        }
    }

    /// Licenses `card` for a year from a day before [`NOW`].
    pub fn license(&mut self, card: &CardKeys) -> Signed<License> {
        let l = Signed::sign(
            License {
                currency: self.currency,
                card: *card,
                issued_at: NOW.saturating_sub_secs(86_400),
                expires_at: NOW.saturating_add_secs(365 * 86_400),
            },
            &self.key,
        )
        .expect("sign license");
        self.licenses.push(l.clone());
        l
    }

    /// Issues a note of `value` to `card`'s payment key.
    pub fn issue(&mut self, value: u64, card: &CardKeys) -> Note {
        self.serial = self.serial.wrapping_add(1);
        let iss = Signed::sign(
            Issuance {
                serial: id(self.serial),
                currency: self.currency,
                value: Amount::new(value),
                holder: card.payment,
                issued_at: NOW.saturating_sub_secs(3_600),
                expires_at: NOW.saturating_add_secs(NOTE_LIFETIME_SECS),
            },
            &self.key,
        )
        .expect("sign issuance");
        Note::issued(iss)
    }

    /// A book of every license this issuer gave.
    pub fn book(&self) -> LicenseBook {
        LicenseBook::from_signed(&self.licenses, &self.key.public(), self.currency)
            .expect("valid licenses")
    }
}

/// Pays `amount` from `note` (held by `from`) to `to` at [`NOW`].
pub fn pay(note: &Note, from: &CardSecret, to: &CardKeys, amount: u64, chall: Challenge) -> Note {
    note.pay(&from.payment, to.payment, Amount::new(amount), chall, NOW)
        .expect("pay")
}

/// Verifies `note` as paid to `to` against `chall`, at [`NOW`], with no
/// revocations.
pub fn verify_paid(
    issuer: &TestIssuer,
    note: &Note,
    to: &CardKeys,
    chall: Challenge,
) -> Result<crate::note::NoteView, crate::note::NoteError> {
    let book = issuer.book();
    let none = Revocations::none();
    let pk = issuer.key.public();
    note.verify(&NotePolicy {
        issuer: &pk,
        currency: issuer.currency,
        now: NOW,
        licenses: &book,
        revocations: &none,
        expect: Expect::Paid {
            payee: to.payment,
            challenge: chall,
        },
    })
}
