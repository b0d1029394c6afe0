//! Currencies, amounts, instants and exchange rates.
//!
//! Amounts are integers in a currency's minor unit (yen, cents); there are no
//! floats anywhere in the money path. Every arithmetic operation is checked, so
//! a hostile amount cannot wrap around.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors of the money types: parsing what a person or a peer wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    #[error(
        "{0:?} is not a currency code: use three capital letters as in ISO 4217 (JPY, USD, EUR)"
    )]
    BadCurrency(String),
    #[error(
        "{0:?} is not an amount: write digits, with at most {1} decimal place(s) for this currency"
    )]
    BadAmount(String, u8),
    #[error("amount overflows")]
    Overflow,
    #[error("{0:?} is not a rate: write a positive decimal such as 0.0067 or 149.25")]
    BadRate(String),
}

/// An ISO 4217 currency code: three ASCII capital letters. Any such code is
/// accepted; [`Currency::minor_digits`] knows the minor unit of the common ones.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const JPY: Currency = Currency(*b"JPY");
    pub const USD: Currency = Currency(*b"USD");
    pub const EUR: Currency = Currency(*b"EUR");

    pub fn as_str(&self) -> &str {
        // The constructor admits ASCII capitals only, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Number of decimal digits of the minor unit (ISO 4217 "E" column).
    /// Codes not in the table are taken to have two, the common case.
    pub fn minor_digits(&self) -> u8 {
        match &self.0 {
            b"JPY" | b"KRW" | b"VND" | b"CLP" | b"ISK" | b"PYG" | b"UGX" | b"XAF" | b"XOF"
            | b"XPF" | b"RWF" | b"KMF" | b"GNF" | b"DJF" | b"VUV" | b"BIF" => 0,
            b"BHD" | b"IQD" | b"JOD" | b"KWD" | b"LYD" | b"OMR" | b"TND" => 3,
            _ => 2,
        }
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, MoneyError> {
        let b = s.as_bytes();
        if b.len() == 3 && b.iter().all(u8::is_ascii_uppercase) {
            Ok(Currency([b[0], b[1], b[2]]))
        } else {
            Err(MoneyError::BadCurrency(s.chars().take(16).collect()))
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: std::borrow::Cow<'de, str> = Deserialize::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A non-negative amount in a currency's minor unit. The currency travels
/// beside it (in the note, the offer...), never inside it, so that one wire
/// field means one thing.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Amount(u64);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub const fn new(minor_units: u64) -> Amount {
        Amount(minor_units)
    }
    pub const fn minor_units(self) -> u64 {
        self.0
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
    /// Sum of amounts; `None` on overflow.
    pub fn checked_sum<I: IntoIterator<Item = Amount>>(items: I) -> Option<Amount> {
        items
            .into_iter()
            .try_fold(Amount::ZERO, |acc, a| acc.checked_add(a))
    }

    /// Parses "1234" or "12.34" in `currency`'s major unit ("12.34 USD" is
    /// 1234 cents; "10000" JPY is 10000 yen).
    pub fn parse_major(text: &str, currency: Currency) -> Result<Amount, MoneyError> {
        let digits = currency.minor_digits();
        let bad = || MoneyError::BadAmount(text.chars().take(32).collect(), digits);
        let text = text.trim();
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, f),
            None => (text, ""),
        };
        if int.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || frac.len() > usize::from(digits)
            || (text.contains('.') && frac.is_empty())
        {
            return Err(bad());
        }
        let scale = 10u64.pow(u32::from(digits));
        let int: u64 = int.parse().map_err(|_| MoneyError::Overflow)?;
        let mut frac_units: u64 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| bad())?
        };
        for _ in frac.len()..usize::from(digits) {
            frac_units *= 10;
        }
        int.checked_mul(scale)
            .and_then(|v| v.checked_add(frac_units))
            .map(Amount)
            .ok_or(MoneyError::Overflow)
    }

    /// Formats in the major unit of `currency` ("12.34" for 1234 cents).
    pub fn display_major(self, currency: Currency) -> String {
        let digits = u32::from(currency.minor_digits());
        if digits == 0 {
            return self.0.to_string();
        }
        let scale = 10u64.pow(digits);
        format!(
            "{}.{:0width$}",
            self.0 / scale,
            self.0 % scale,
            width = digits as usize
        )
    }
}

/// An amount together with its currency, for people and logs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Money {
    pub currency: Currency,
    pub amount: Amount,
}

impl Money {
    pub fn new(amount: Amount, currency: Currency) -> Money {
        Money { currency, amount }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.amount.display_major(self.currency),
            self.currency
        )
    }
}

/// Seconds since the Unix epoch (UTC). The protocol core never reads the
/// clock: callers pass `now` in, so every decision can be replayed in a test.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const fn from_unix(secs: u64) -> Timestamp {
        Timestamp(secs)
    }
    pub const fn unix(self) -> u64 {
        self.0
    }
    pub fn saturating_add_secs(self, secs: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs))
    }
    pub fn saturating_sub_secs(self, secs: u64) -> Timestamp {
        Timestamp(self.0.saturating_sub(secs))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, computed without a date library (civil-from-days).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

/// A positive decimal exchange rate: `mantissa / 10^scale` units of the quote
/// currency per unit of the base currency, both in MAJOR units (0.0067 USD
/// per JPY). Kept as an exact decimal so that a rate written in a config file
/// or a rate sheet means exactly what it says.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Rate {
    pub mantissa: u64,
    pub scale: u8,
}

/// Which way a conversion rounds. The agent always rounds in its own favour,
/// and says so in the offer, which fixes both amounts exactly anyway.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rounding {
    Down,
    Up,
}

impl Rate {
    /// The most decimal places a rate may have (keeps conversions in u128).
    pub const MAX_SCALE: u8 = 12;

    /// Converts `amount` of `from` (minor units) into `to` (minor units).
    /// `None` on overflow or a zero rate.
    pub fn convert(
        &self,
        amount: Amount,
        from: Currency,
        to: Currency,
        rounding: Rounding,
    ) -> Option<Amount> {
        if self.mantissa == 0 || self.scale > Self::MAX_SCALE {
            return None;
        }
        // to_minor = amount / 10^from_d * rate * 10^to_d
        //          = amount * mantissa * 10^to_d / (10^scale * 10^from_d)
        let num = u128::from(amount.0)
            .checked_mul(u128::from(self.mantissa))?
            .checked_mul(10u128.pow(u32::from(to.minor_digits())))?;
        let den = 10u128
            .pow(u32::from(self.scale))
            .checked_mul(10u128.pow(u32::from(from.minor_digits())))?;
        let q = match rounding {
            Rounding::Down => num / den,
            Rounding::Up => num.div_ceil(den),
        };
        u64::try_from(q).ok().map(Amount)
    }

    /// Converts an amount of the quote currency back into the base currency:
    /// how much base is needed to obtain `amount` of quote at this rate.
    pub fn convert_inverse(
        &self,
        amount: Amount,
        base: Currency,
        quote: Currency,
        rounding: Rounding,
    ) -> Option<Amount> {
        if self.mantissa == 0 || self.scale > Self::MAX_SCALE {
            return None;
        }
        // base_minor = amount / 10^quote_d / rate * 10^base_d
        //            = amount * 10^scale * 10^base_d / (mantissa * 10^quote_d)
        let num = u128::from(amount.0)
            .checked_mul(10u128.pow(u32::from(self.scale)))?
            .checked_mul(10u128.pow(u32::from(base.minor_digits())))?;
        let den =
            u128::from(self.mantissa).checked_mul(10u128.pow(u32::from(quote.minor_digits())))?;
        let q = match rounding {
            Rounding::Down => num / den,
            Rounding::Up => num.div_ceil(den),
        };
        u64::try_from(q).ok().map(Amount)
    }
}

impl Rate {
    /// Whether this rate can be used: positive, at most [`Rate::MAX_SCALE`]
    /// decimals. A rate decoded from outside is checked with this.
    pub fn is_valid(&self) -> bool {
        self.mantissa > 0 && self.scale <= Self::MAX_SCALE
    }
}

impl FromStr for Rate {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Rate, MoneyError> {
        let bad = || MoneyError::BadRate(s.chars().take(32).collect());
        let t = s.trim();
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || frac.len() > usize::from(Rate::MAX_SCALE)
        {
            return Err(bad());
        }
        let joined = format!("{int}{frac}");
        let mantissa: u64 = joined.parse().map_err(|_| bad())?;
        if mantissa == 0 {
            return Err(bad());
        }
        Ok(Rate {
            mantissa,
            scale: frac.len() as u8,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scale = usize::from(self.scale);
        let digits = format!("{:0>width$}", self.mantissa, width = scale + 1);
        let (int, frac) = digits.split_at(digits.len() - scale);
        if frac.is_empty() {
            f.write_str(int)
        } else {
            write!(f, "{int}.{frac}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes() {
        assert_eq!("JPY".parse::<Currency>().unwrap(), Currency::JPY);
        assert!("jpy".parse::<Currency>().is_err());
        assert!("JPYY".parse::<Currency>().is_err());
        assert!("J1Y".parse::<Currency>().is_err());
        assert_eq!(Currency::JPY.minor_digits(), 0);
        assert_eq!(Currency::USD.minor_digits(), 2);
        assert_eq!("KWD".parse::<Currency>().unwrap().minor_digits(), 3);
        assert_eq!("XYZ".parse::<Currency>().unwrap().minor_digits(), 2);
    }

    #[test]
    fn parse_and_display_amounts() {
        let usd = Currency::USD;
        assert_eq!(Amount::parse_major("12.34", usd).unwrap(), Amount(1234));
        assert_eq!(Amount::parse_major("12.3", usd).unwrap(), Amount(1230));
        assert_eq!(Amount::parse_major("12", usd).unwrap(), Amount(1200));
        assert!(Amount::parse_major("12.345", usd).is_err());
        assert!(Amount::parse_major("12.", usd).is_err());
        assert!(Amount::parse_major("-1", usd).is_err());
        assert!(Amount::parse_major("1e5", usd).is_err());
        assert!(Amount::parse_major("", usd).is_err());
        assert_eq!(
            Amount::parse_major("18446744073709551615", usd),
            Err(MoneyError::Overflow)
        );
        assert!(Amount::parse_major("1.5", Currency::JPY).is_err());
        assert_eq!(Amount(1234).display_major(usd), "12.34");
        assert_eq!(Amount(5).display_major(usd), "0.05");
        assert_eq!(Amount(10_000).display_major(Currency::JPY), "10000");
        assert_eq!(
            Money::new(Amount(70_005), usd).to_string(),
            "700.05 USD".to_string()
        );
    }

    #[test]
    fn checked_arithmetic() {
        assert_eq!(Amount(u64::MAX).checked_add(Amount(1)), None);
        assert_eq!(Amount(1).checked_sub(Amount(2)), None);
        assert_eq!(
            Amount::checked_sum([Amount(1), Amount(2), Amount(3)]),
            Some(Amount(6))
        );
        assert_eq!(Amount::checked_sum([Amount(u64::MAX), Amount(1)]), None);
    }

    #[test]
    fn timestamps_render_as_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(951_782_400).to_string(), "2000-02-29T00:00:00Z");
        assert_eq!(
            Timestamp(1_795_478_400 + 3_661).to_string(),
            "2026-11-24T01:01:01Z"
        );
    }

    #[test]
    fn rates_convert_exactly() {
        let r: Rate = "0.0067".parse().unwrap();
        assert_eq!(r.to_string(), "0.0067");
        // 10,000 JPY at 0.0067 USD/JPY = 67.00 USD = 6700 cents.
        let usd = r
            .convert(Amount(10_000), Currency::JPY, Currency::USD, Rounding::Down)
            .unwrap();
        assert_eq!(usd, Amount(6_700));
        // 1 JPY = 0.67 cents: rounds down to 0, up to 1.
        assert_eq!(
            r.convert(Amount(1), Currency::JPY, Currency::USD, Rounding::Down),
            Some(Amount(0))
        );
        assert_eq!(
            r.convert(Amount(1), Currency::JPY, Currency::USD, Rounding::Up),
            Some(Amount(1))
        );
        // To receive 67.00 USD you pay 10,000 JPY.
        assert_eq!(
            r.convert_inverse(Amount(6_700), Currency::JPY, Currency::USD, Rounding::Up),
            Some(Amount(10_000))
        );
        let big: Rate = "149.25".parse().unwrap();
        assert_eq!(
            big,
            Rate {
                mantissa: 14925,
                scale: 2
            }
        );
        assert_eq!(
            big.convert(Amount(100), Currency::USD, Currency::JPY, Rounding::Down),
            Some(Amount(149))
        );
        assert!("0".parse::<Rate>().is_err());
        assert!("abc".parse::<Rate>().is_err());
        assert!("-1".parse::<Rate>().is_err());
        assert_eq!(
            Rate {
                mantissa: 5,
                scale: 3
            }
            .to_string(),
            "0.005".to_string()
        );
        assert_eq!(
            Rate {
                mantissa: u64::MAX,
                scale: 0
            }
            .convert(
                Amount(u64::MAX),
                Currency::USD,
                Currency::USD,
                Rounding::Down
            ),
            None
        );
    }
}
