//! What an offer costs: the agent's rate for a pair (the mid rate less its
//! spread), the amounts A1 and A2 of an offer rounded in the agent's
//! favour, and the inverse rate for the other direction. Pure.

use mailer::messages::QuoteAmount;
use mailer::money::{Amount, Currency, Rate, Rounding};

/// The largest spread: 50% (in basis points).
pub const MAX_SPREAD_BP: u32 = 5_000;

/// The agent's price for exchanging `pay` into `receive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pricing {
    pub pay: Currency,
    pub receive: Currency,
    /// Units of `receive` per unit of `pay` (major units), before spread.
    pub mid: Rate,
    /// What the agent keeps, in basis points of `mid` (50 = 0.5%).
    pub spread_bp: u32,
    /// The smallest and largest amount of `pay` exchanged (minor units).
    pub min: Amount,
    pub max: Amount,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("the amount is zero")]
    Zero,
    #[error("{paid} is outside what is exchanged at this rate ({min} to {max})")]
    OutOfRange {
        paid: String,
        min: String,
        max: String,
    },
    #[error("the amount is too large to convert")]
    Overflow,
    #[error("at this rate the other side of the exchange would be zero")]
    NothingInReturn,
}

impl Pricing {
    /// The rate the user gets: `mid * (1 - spread)`, truncated (in the
    /// agent's favour) to at most [`Rate::MAX_SCALE`] decimals.
    pub fn user_rate(&self) -> Option<Rate> {
        let keep = u128::from(10_000u32.checked_sub(self.spread_bp)?);
        let mut mantissa = u128::from(self.mid.mantissa) * keep;
        let mut scale = self.mid.scale + 4;
        while scale > Rate::MAX_SCALE || mantissa > u128::from(u64::MAX) {
            mantissa /= 10;
            scale = scale.checked_sub(1)?;
        }
        while scale > 0 && mantissa % 10 == 0 {
            mantissa /= 10;
            scale -= 1;
        }
        let r = Rate {
            mantissa: u64::try_from(mantissa).ok()?,
            scale,
        };
        r.is_valid().then_some(r)
    }

    /// A1 (of `pay`) and A2 (of `receive`) for a quote, rounded in the
    /// agent's favour: paying a fixed A1 gets A2 rounded down; receiving a
    /// fixed A2 costs A1 rounded up. A1 must lie within `min..=max`.
    pub fn amounts(&self, amount: QuoteAmount) -> Result<(Amount, Amount, Rate), PriceError> {
        let rate = self.user_rate().ok_or(PriceError::Overflow)?;
        let (a1, a2) = match amount {
            QuoteAmount::Pay(a1) => {
                if a1.is_zero() {
                    return Err(PriceError::Zero);
                }
                let a2 = rate
                    .convert(a1, self.pay, self.receive, Rounding::Down)
                    .ok_or(PriceError::Overflow)?;
                (a1, a2)
            }
            QuoteAmount::Receive(a2) => {
                if a2.is_zero() {
                    return Err(PriceError::Zero);
                }
                let a1 = rate
                    .convert_inverse(a2, self.pay, self.receive, Rounding::Up)
                    .ok_or(PriceError::Overflow)?;
                (a1, a2)
            }
        };
        if a2.is_zero() || a1.is_zero() {
            return Err(PriceError::NothingInReturn);
        }
        if a1 < self.min || a1 > self.max {
            return Err(PriceError::OutOfRange {
                paid: a1.display_major(self.pay),
                min: self.min.display_major(self.pay),
                max: self.max.display_major(self.pay),
            });
        }
        Ok((a1, a2, rate))
    }
}

/// `1 / rate` with twelve significant digits at most, truncated: the mid
/// rate of the opposite direction.
pub fn inverse(rate: Rate) -> Option<Rate> {
    if !rate.is_valid() {
        return None;
    }
    // 1 / (m / 10^s) = 10^s / m; scaled by 10^k: 10^(s+k) / m.
    let mut best = None;
    for k in 0..=Rate::MAX_SCALE {
        let num = 10u128.checked_pow(u32::from(rate.scale) + u32::from(k))?;
        let q = num / u128::from(rate.mantissa);
        if q > u128::from(u64::MAX) {
            break;
        }
        if q > 0 {
            best = Some(Rate {
                mantissa: u64::try_from(q).ok()?,
                scale: k,
            });
            if q >= 100_000_000_000 {
                break;
            }
        }
    }
    let mut r = best?;
    while r.scale > 0 && r.mantissa % 10 == 0 {
        r.mantissa /= 10;
        r.scale -= 1;
    }
    Some(r)
}

/// Parses a spread: `0.5%` or `50bp`.
pub fn parse_spread(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a spread: write it like 0.5% or 50bp");
    let bp = if let Some(p) = t.strip_suffix('%') {
        let r: Rate = p.trim().parse().map_err(|_| bad())?;
        // percent -> basis points: * 100, exactly.
        if r.scale > 2 {
            return Err(format!(
                "{text:?}: a spread has at most two decimals of a percent"
            ));
        }
        let bp = u128::from(r.mantissa) * 10u128.pow(u32::from(2 - r.scale));
        u32::try_from(bp).map_err(|_| bad())?
    } else if let Some(b) = t.strip_suffix("bp") {
        b.trim().parse().map_err(|_| bad())?
    } else if t == "0" {
        0
    } else {
        return Err(bad());
    };
    if bp > MAX_SPREAD_BP {
        return Err(format!("{text:?}: a spread above 50% is refused"));
    }
    Ok(bp)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    fn jpy_usd(spread_bp: u32) -> Pricing {
        Pricing {
            pay: Currency::JPY,
            receive: Currency::USD,
            mid: "0.0067".parse().unwrap(),
            spread_bp,
            min: Amount::new(1),
            max: Amount::new(10_000_000),
        }
    }

    #[test]
    fn spread_and_rounding_favour_the_agent() {
        let p = jpy_usd(50);
        assert_eq!(p.user_rate().unwrap().to_string(), "0.0066665");
        // 10000 JPY * 0.0066665 = 66.665 USD -> 66.66 (down).
        let (a1, a2, _) = p.amounts(QuoteAmount::Pay(Amount::new(10_000))).unwrap();
        assert_eq!((a1.minor_units(), a2.minor_units()), (10_000, 6_666));
        // 50.00 USD at 0.0066665 = 7500.19 JPY -> 7501 (up).
        let (a1, a2, _) = p.amounts(QuoteAmount::Receive(Amount::new(5_000))).unwrap();
        assert_eq!((a1.minor_units(), a2.minor_units()), (7_501, 5_000));
    }

    #[test]
    fn limits_and_zero() {
        let p = jpy_usd(0);
        assert_eq!(
            p.amounts(QuoteAmount::Pay(Amount::ZERO)),
            Err(PriceError::Zero)
        );
        assert!(matches!(
            p.amounts(QuoteAmount::Pay(Amount::new(20_000_000))),
            Err(PriceError::OutOfRange { .. })
        ));
        // 1 JPY is 0.0067 USD: nothing in return.
        assert_eq!(
            p.amounts(QuoteAmount::Pay(Amount::new(1))),
            Err(PriceError::NothingInReturn)
        );
    }

    #[test]
    fn inverse_rates() {
        let r = inverse("0.0067".parse().unwrap()).unwrap();
        assert_eq!(r.to_string(), "149.253731343");
        assert_eq!(inverse("2".parse().unwrap()).unwrap().to_string(), "0.5");
        assert_eq!(inverse("0.5".parse().unwrap()).unwrap().to_string(), "2");
    }

    #[test]
    fn spreads() {
        assert_eq!(parse_spread("0.5%"), Ok(50));
        assert_eq!(parse_spread("1%"), Ok(100));
        assert_eq!(parse_spread("25bp"), Ok(25));
        assert_eq!(parse_spread("0"), Ok(0));
        assert!(parse_spread("0.125%").is_err());
        assert!(parse_spread("60%").is_err());
        assert!(parse_spread("abc").is_err());
    }
}
