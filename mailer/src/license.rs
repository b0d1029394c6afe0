//! Cards, licenses and revocation lists.
//!
//! A card is known only by its two public keys: the *payment* key signs
//! payment links, the *authentication* key signs requests (paper, section 4).
//! An issuer's license says "these keys are a licensed card of currency X
//! until T", and names nobody. A revocation list, signed by the issuer, says
//! from when a card's payment key is no longer to be trusted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crypto::{Digest, PublicKey};
use crate::envelope::{check_len, check_text, Body, EnvelopeError, Signed};
use crate::limits::{MAX_LICENSES, MAX_REVOCATIONS, MAX_TEXT};
use crate::money::{Currency, Timestamp};

/// The public half of a card.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct CardKeys {
    /// Signs payment links; notes are issued and paid to this key.
    pub payment: PublicKey,
    /// Signs requests (license request, second-payment request...).
    pub auth: PublicKey,
}

/// The secret half of a card. Debug output never shows the secrets.
#[derive(Clone, Debug)]
pub struct CardSecret {
    pub payment: crate::crypto::SecretKey,
    pub auth: crate::crypto::SecretKey,
}

impl CardSecret {
    /// A new card with fresh random keys.
    pub fn generate() -> CardSecret {
        CardSecret {
            payment: crate::crypto::SecretKey::generate(),
            auth: crate::crypto::SecretKey::generate(),
        }
    }
    pub fn keys(&self) -> CardKeys {
        CardKeys {
            payment: self.payment.public(),
            auth: self.auth.public(),
        }
    }
}

/// An issuer's statement that a card is licensed. Signed by the issuer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct License {
    pub currency: Currency,
    pub card: CardKeys,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Body for License {
    const KIND: &'static str = "license";
}

impl License {
    /// Whether the license covers `at`.
    pub fn covers(&self, at: Timestamp) -> bool {
        self.issued_at <= at && at <= self.expires_at
    }
}

/// Why a license was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LicenseError {
    #[error("license is not valid: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error("license is for {found}, expected {expected}")]
    WrongCurrency { expected: Currency, found: Currency },
    #[error("too many licenses: {0} (limit {MAX_LICENSES})")]
    TooMany(usize),
}

/// Verified licenses of one issuer and currency, by payment key. A card may
/// hold several (a renewal does not void the license its older links were
/// signed under).
#[derive(Clone, Debug, Default)]
pub struct LicenseBook {
    by_payment_key: BTreeMap<PublicKey, Vec<License>>,
    count: usize,
}

impl LicenseBook {
    pub fn new() -> LicenseBook {
        LicenseBook::default()
    }

    /// Verifies each license (signed by `issuer`, for `currency`) and adds it.
    pub fn from_signed(
        licenses: &[Signed<License>],
        issuer: &PublicKey,
        currency: Currency,
    ) -> Result<LicenseBook, LicenseError> {
        if licenses.len() > MAX_LICENSES {
            return Err(LicenseError::TooMany(licenses.len()));
        }
        let mut book = LicenseBook::new();
        for l in licenses {
            book.add_signed(l, issuer, currency)?;
        }
        Ok(book)
    }

    /// Verifies one license and adds it.
    pub fn add_signed(
        &mut self,
        license: &Signed<License>,
        issuer: &PublicKey,
        currency: Currency,
    ) -> Result<(), LicenseError> {
        let body = license.verify_signer(issuer)?;
        if body.currency != currency {
            return Err(LicenseError::WrongCurrency {
                expected: currency,
                found: body.currency,
            });
        }
        self.add_trusted(body.clone());
        Ok(())
    }

    /// Adds a license the caller already trusts (one it issued or stored
    /// after verification). The same license twice is kept once.
    pub fn add_trusted(&mut self, license: License) {
        let list = self.by_payment_key.entry(license.card.payment).or_default();
        if !list.contains(&license) {
            list.push(license);
            self.count += 1;
        }
    }

    /// Whether the card with this payment key holds any license here.
    pub fn knows(&self, payment_key: &PublicKey) -> bool {
        self.by_payment_key.contains_key(payment_key)
    }

    /// A license of this card that covers `at`, if any.
    pub fn covering(&self, payment_key: &PublicKey, at: Timestamp) -> Option<&License> {
        self.by_payment_key
            .get(payment_key)?
            .iter()
            .find(|l| l.covers(at))
    }

    /// The license of this card that runs longest.
    pub fn latest(&self, payment_key: &PublicKey) -> Option<&License> {
        self.by_payment_key
            .get(payment_key)?
            .iter()
            .max_by_key(|l| l.expires_at)
    }

    /// Number of licenses held.
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Why a card was revoked.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RevocationReason {
    /// The card overspent; `proof` is the id of the stored overspend proof
    /// (see [`crate::overspend::OverspendProof::id`]).
    Overspend { proof: Digest },
    /// Revoked by the issuer's operator (lost card, owner's request...).
    Operator { note: String },
}

/// One revoked card.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Revocation {
    pub payment_key: PublicKey,
    /// Links signed by this key at or after this instant are refused.
    pub revoked_at: Timestamp,
    pub reason: RevocationReason,
}

/// The issuer's signed list of revoked cards. Versions only grow; a newer
/// version replaces an older one whole.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RevocationList {
    pub currency: Currency,
    pub version: u64,
    pub issued_at: Timestamp,
    pub entries: Vec<Revocation>,
}

impl Body for RevocationList {
    const KIND: &'static str = "revocation-list";
    fn check_limits(&self) -> Result<(), String> {
        check_len("entries", self.entries.len(), MAX_REVOCATIONS)?;
        for e in &self.entries {
            if let RevocationReason::Operator { note } = &e.reason {
                check_text("revocation note", note, MAX_TEXT)?;
            }
        }
        Ok(())
    }
}

/// A revocation list indexed for lookups during verification.
#[derive(Clone, Debug, Default)]
pub struct Revocations {
    version: u64,
    revoked_at: BTreeMap<PublicKey, Timestamp>,
}

impl Revocations {
    /// No card revoked (a wallet that has not fetched a list yet).
    pub fn none() -> Revocations {
        Revocations::default()
    }

    /// Indexes a list the caller has verified (see [`Revocations::from_signed`]).
    pub fn from_list(list: &RevocationList) -> Revocations {
        let mut revoked_at = BTreeMap::new();
        for e in &list.entries {
            // If a key is listed twice, the earliest time counts.
            let t = revoked_at.entry(e.payment_key).or_insert(e.revoked_at);
            if e.revoked_at < *t {
                *t = e.revoked_at;
            }
        }
        Revocations {
            version: list.version,
            revoked_at,
        }
    }

    /// Verifies a signed list from `issuer` for `currency` and indexes it.
    pub fn from_signed(
        list: &Signed<RevocationList>,
        issuer: &PublicKey,
        currency: Currency,
    ) -> Result<Revocations, LicenseError> {
        let body = list.verify_signer(issuer)?;
        if body.currency != currency {
            return Err(LicenseError::WrongCurrency {
                expected: currency,
                found: body.currency,
            });
        }
        Ok(Revocations::from_list(body))
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// When `payment_key` was revoked, if it was.
    pub fn revoked_at(&self, payment_key: &PublicKey) -> Option<Timestamp> {
        self.revoked_at.get(payment_key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn card(seed: u8) -> CardKeys {
        CardKeys {
            payment: SecretKey::from_seed([seed; 32]).public(),
            auth: SecretKey::from_seed([seed + 100; 32]).public(),
        }
    }

    #[test]
    fn license_book_checks_issuer_and_currency() {
        let issuer = SecretKey::from_seed([1; 32]);
        let l = License {
            currency: Currency::JPY,
            card: card(5),
            issued_at: Timestamp::from_unix(10),
            expires_at: Timestamp::from_unix(20),
        };
        let signed = Signed::sign(l.clone(), &issuer).unwrap();
        let book = LicenseBook::from_signed(
            std::slice::from_ref(&signed),
            &issuer.public(),
            Currency::JPY,
        )
        .unwrap();
        assert_eq!(
            book.covering(&card(5).payment, Timestamp::from_unix(15)),
            Some(&l)
        );
        assert_eq!(
            book.covering(&card(5).payment, Timestamp::from_unix(25)),
            None
        );
        assert!(book.knows(&card(5).payment));
        assert!(l.covers(Timestamp::from_unix(10)) && !l.covers(Timestamp::from_unix(21)));
        let other = SecretKey::from_seed([2; 32]).public();
        assert!(
            LicenseBook::from_signed(std::slice::from_ref(&signed), &other, Currency::JPY).is_err()
        );
        assert!(matches!(
            LicenseBook::from_signed(&[signed], &issuer.public(), Currency::USD),
            Err(LicenseError::WrongCurrency { .. })
        ));
    }

    #[test]
    fn a_renewal_keeps_the_old_license_valid_for_old_links() {
        let mut book = LicenseBook::new();
        let old = License {
            currency: Currency::JPY,
            card: card(5),
            issued_at: Timestamp::from_unix(10),
            expires_at: Timestamp::from_unix(20),
        };
        let renewed = License {
            issued_at: Timestamp::from_unix(19),
            expires_at: Timestamp::from_unix(40),
            ..old.clone()
        };
        book.add_trusted(old.clone());
        book.add_trusted(renewed.clone());
        book.add_trusted(renewed.clone());
        assert_eq!(book.len(), 2);
        assert_eq!(
            book.covering(&card(5).payment, Timestamp::from_unix(12)),
            Some(&old)
        );
        assert_eq!(
            book.covering(&card(5).payment, Timestamp::from_unix(30)),
            Some(&renewed)
        );
        assert_eq!(book.latest(&card(5).payment), Some(&renewed));
    }

    #[test]
    fn revocations_take_earliest_time() {
        let k = card(7).payment;
        let list = RevocationList {
            currency: Currency::JPY,
            version: 3,
            issued_at: Timestamp::from_unix(100),
            entries: vec![
                Revocation {
                    payment_key: k,
                    revoked_at: Timestamp::from_unix(50),
                    reason: RevocationReason::Operator {
                        note: "lost".into(),
                    },
                },
                Revocation {
                    payment_key: k,
                    revoked_at: Timestamp::from_unix(40),
                    reason: RevocationReason::Operator {
                        note: "again".into(),
                    },
                },
            ],
        };
        let r = Revocations::from_list(&list);
        assert_eq!(r.revoked_at(&k), Some(Timestamp::from_unix(40)));
        assert_eq!(r.revoked_at(&card(8).payment), None);
        assert_eq!(r.version(), 3);
    }
}
