//! Who the issuer is: its key, its currency, its address, and the policy it
//! applies (lifetimes, denominations).

use mailer::crypto::{PublicKey, SecretKey};
use mailer::envelope::{Body, Signed};
use mailer::limits::MAX_NOTES;
use mailer::money::{Amount, Currency, Money};

use crate::error::IssuerError;

/// The issuer's policy. Stored in its database when the issuer is created,
/// so the daemon and the operator's commands always agree on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerConfig {
    pub currency: Currency,
    /// The mailbox the issuer reads and replies from.
    pub address: String,
    /// How long an issued note circulates (it can be deposited after).
    pub note_lifetime_secs: u64,
    /// How long a license is valid.
    pub license_lifetime_secs: u64,
    /// How long a one-time enrollment code can be used.
    pub code_lifetime_secs: u64,
    /// Note values a withdrawal is split into, largest first.
    pub denominations: Vec<Amount>,
}

const DAY: u64 = 86_400;

impl IssuerConfig {
    /// Defaults for everything but the currency and the address: notes for
    /// a year, licenses for two, codes for a week, and a 1-5 series of
    /// denominations (for JPY: 10000, 5000, 1000, 500, 100, 50, 10, 5, 1).
    pub fn new(currency: Currency, address: &str) -> IssuerConfig {
        IssuerConfig {
            currency,
            address: address.trim().to_string(),
            note_lifetime_secs: 365 * DAY,
            license_lifetime_secs: 2 * 365 * DAY,
            code_lifetime_secs: 7 * DAY,
            denominations: default_denominations(currency),
        }
    }

    /// Checks the configuration is usable.
    pub fn validate(&self) -> Result<(), IssuerError> {
        let bad = |m: String| Err(IssuerError::Config(m));
        if mailer::mime::parse_address(&self.address).is_err()
            || mailer::mime::domain_of(&self.address).is_none()
        {
            return bad(format!(
                "{:?} is not an email address (the issuer's mailbox, e.g. issuer@bank.example)",
                self.address
            ));
        }
        if self.note_lifetime_secs == 0
            || self.license_lifetime_secs == 0
            || self.code_lifetime_secs == 0
        {
            return bad("lifetimes must be at least one second".into());
        }
        if self.denominations.is_empty() {
            return bad("give at least one denomination".into());
        }
        if self.denominations.iter().any(|d| d.is_zero()) {
            return bad("a denomination of zero makes no note".into());
        }
        if self
            .denominations
            .iter()
            .any(|d| i64::try_from(d.minor_units()).is_err())
        {
            return bad("a denomination is larger than the database can hold".into());
        }
        if self.denominations.windows(2).any(|w| w[0] <= w[1]) {
            return bad("list the denominations from the largest down, each once".into());
        }
        Ok(())
    }
}

/// A 1-5 series from one minor unit up to 10000 units of a zero-decimal
/// currency, 100.00 of a two-decimal one, 100.000 of a three-decimal one.
pub fn default_denominations(currency: Currency) -> Vec<Amount> {
    let top_exp = 4 + u32::from(currency.minor_digits().saturating_sub(2));
    let mut out = Vec::new();
    for exp in (0..=top_exp).rev() {
        let unit = 10u64.pow(exp);
        if exp < top_exp {
            out.push(Amount::new(5 * unit));
        }
        out.push(Amount::new(unit));
    }
    out
}

/// Why an amount cannot be issued as notes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    #[error("nothing to withdraw: ask for an amount above zero")]
    Zero,
    #[error(
        "{amount} cannot be made of the notes this issuer issues (the smallest is {smallest})"
    )]
    NoChange { amount: Money, smallest: Money },
    #[error("{amount} needs {needed} notes, more than the {max} one withdrawal may carry; withdraw at most {largest} at a time")]
    TooManyNotes {
        amount: Money,
        needed: u64,
        max: usize,
        largest: Money,
    },
}

/// The issuer: its secret key and its policy.
#[derive(Clone, Debug)]
pub struct Issuer {
    key: SecretKey,
    config: IssuerConfig,
}

impl Issuer {
    pub fn new(key: SecretKey, config: IssuerConfig) -> Result<Issuer, IssuerError> {
        config.validate()?;
        Ok(Issuer { key, config })
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }
    pub fn currency(&self) -> Currency {
        self.config.currency
    }
    pub fn address(&self) -> &str {
        &self.config.address
    }
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }
    /// The domain Message-IDs of the issuer's mail are made under.
    pub fn domain(&self) -> &str {
        mailer::mime::domain_of(&self.config.address).unwrap_or("issuer.invalid")
    }
    /// The secret key, for writing it to the issuer's home. Handle with care.
    pub(crate) fn secret(&self) -> &SecretKey {
        &self.key
    }

    pub(crate) fn sign<T: Body>(&self, body: T) -> Result<Signed<T>, IssuerError> {
        Ok(Signed::sign(body, &self.key)?)
    }

    pub(crate) fn money(&self, amount: Amount) -> Money {
        Money::new(amount, self.config.currency)
    }

    /// Splits `amount` into note values, greedily from the largest
    /// denomination, refusing more than [`MAX_NOTES`] notes.
    pub fn split(&self, amount: Amount) -> Result<Vec<Amount>, SplitError> {
        if amount.is_zero() {
            return Err(SplitError::Zero);
        }
        let mut left = amount.minor_units();
        let mut counts = Vec::new();
        let mut needed: u64 = 0;
        for d in &self.config.denominations {
            let n = left / d.minor_units();
            left %= d.minor_units();
            needed = needed.saturating_add(n);
            counts.push((*d, n));
        }
        let smallest = self
            .config
            .denominations
            .last()
            .copied()
            .unwrap_or(Amount::new(1));
        if left != 0 {
            return Err(SplitError::NoChange {
                amount: self.money(amount),
                smallest: self.money(smallest),
            });
        }
        if needed > MAX_NOTES as u64 {
            let largest = self
                .config
                .denominations
                .first()
                .map_or(0, |d| d.minor_units())
                .saturating_mul(MAX_NOTES as u64);
            return Err(SplitError::TooManyNotes {
                amount: self.money(amount),
                needed,
                max: MAX_NOTES,
                largest: self.money(Amount::new(largest)),
            });
        }
        let mut out = Vec::new();
        for (d, n) in counts {
            for _ in 0..n {
                out.push(d);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn jpy() -> Issuer {
        Issuer::new(
            SecretKey::from_seed([1; 32]),
            IssuerConfig::new(Currency::JPY, "issuer@bank.example"),
        )
        .unwrap()
    }

    #[test]
    fn default_series() {
        let v: Vec<u64> = default_denominations(Currency::JPY)
            .iter()
            .map(|a| a.minor_units())
            .collect();
        assert_eq!(v, [10000, 5000, 1000, 500, 100, 50, 10, 5, 1]);
        assert_eq!(default_denominations(Currency::USD)[0], Amount::new(10_000));
        assert_eq!(
            default_denominations("KWD".parse().unwrap())[0],
            Amount::new(100_000)
        );
    }

    #[test]
    fn greedy_split_and_limits() {
        let i = jpy();
        let v: Vec<u64> = i
            .split(Amount::new(16_788))
            .unwrap()
            .iter()
            .map(|a| a.minor_units())
            .collect();
        assert_eq!(
            v,
            [10000, 5000, 1000, 500, 100, 100, 50, 10, 10, 10, 5, 1, 1, 1]
        );
        assert_eq!(i.split(Amount::ZERO), Err(SplitError::Zero));
        assert_eq!(i.split(Amount::new(640_000)).unwrap().len(), 64);
        assert!(matches!(
            i.split(Amount::new(640_001)),
            Err(SplitError::TooManyNotes { needed: 65, .. })
        ));
        let mut cfg = i.config().clone();
        cfg.denominations = vec![Amount::new(10), Amount::new(5)];
        let coarse = Issuer::new(SecretKey::from_seed([1; 32]), cfg).unwrap();
        assert!(matches!(
            coarse.split(Amount::new(12)),
            Err(SplitError::NoChange { .. })
        ));
    }

    #[test]
    fn config_is_checked() {
        let mut cfg = IssuerConfig::new(Currency::JPY, "not an address");
        assert!(cfg.validate().is_err());
        cfg.address = "issuer@bank.example".into();
        cfg.validate().unwrap();
        cfg.denominations = vec![Amount::new(1), Amount::new(5)];
        assert!(cfg.validate().is_err());
        cfg.denominations = vec![Amount::new(5), Amount::ZERO];
        assert!(cfg.validate().is_err());
    }
}
